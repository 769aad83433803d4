"""Changes to a list: adds and removals through the Lua scripts in scripts/ (an entry is written
with its band members, its entry record, its snapshot record and the version counter at
once: no reader sees half an entry), dropping a whole list and renaming one (copy, then drop).

Disabling an entry (:func:`disable`, scripts/remove.lua) takes it out of the index as a removal
does and keeps its record among the list's disabled ones, in the same step; enabling it
(:func:`enable`, scripts/enable.lua) writes it back as an add does. Both bump the version, so a
worker's mirror reloads at its next lookup. An add never re-enables a disabled entry (it is
present), a removal removes disabled entries too, a drop deletes them with the list's other
keys and a rename copies them disabled.

A drop (:func:`drop`) goes in this order:

1. one Lua step (scripts/drop.lua) deletes the list's ``meta`` and ``ver`` and writes its drop
   marker ("dropping <incarnation>"): from then on every lookup finds the list gone (a worker's
   mirror is checked against ``meta`` on every lookup: it answers nothing), ``guard lists``
   skips it, and no add can re-create the list over the keys still to delete;
2. the name leaves ``guard:lists``;
3. the list's other keys (band sets, entry records, ``snap``) are UNLINKed in batches found by
   SCAN over its hash tag: nobody reads them any more (every read starts at ``meta``);
4. the marker becomes "dropped <incarnation>" (kept: a worker that had read the list then
   treats it as never loaded, :class:`guard.errors.UnknownList`, so its ``required`` setting
   decides) or is deleted (``keep_marker=False``: a worker that knew the list reports it
   vanished, as after a flush).

Interrupted after step 1, the list stays gone for readers and cannot be re-created: run the
drop again (``guard drop NAME``), which finishes steps 2 to 4.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from importlib.resources import files
from typing import Any, Final, Literal, NamedTuple

import redis.asyncio as aioredis

from guard.bands import BAND_COUNTS, LISTS_KEY, band_key, list_key
from guard.errors import LowInformationEntry, StoreError
from guard.hashing import is_low_information
from guard.spelling import to_hex, to_signed
from guard.store.allow import owner_of, validate_stored_name
from guard.store.catalog import Catalog
from guard.store.changes import CHANGES_KEPT
from guard.store.connection import (
    ListExists,
    NeedsUpgrade,
    Recreated,
    refusing_old_records,
    replicated,
    translated,
)
from guard.store.entry_reads import every_entry
from guard.store.records import (
    COMPACT,
    LOADING,
    ListMeta,
    bucket_key,
    changes_key,
    drop_marker,
    entry_field,
    keys,
    labels_key,
    off_key,
    packed,
    record_tail,
    text,
)
from guard.store.snapshot import compact, needs_compacting, tombstones_key
from guard.types import AddResult, Entry

#: A registered Lua script: ``await script(keys=[...], args=[...])``.
Script = Callable[..., Awaitable[Any]]

# Entries per Lua call: big enough to amortise round trips, small enough not to block Redis long.
WRITE_BATCH = 500


def _script(name: str) -> str:
    return (files("guard.store") / "scripts" / name).read_text(encoding="utf-8")


def _records_script(name: str) -> str:
    """A script that writes entry records, with the Lua it shares prepended."""
    shared = _script("changes.lua") + _script("snapshot.lua") + _script("labels.lua")
    return (
        (shared + _script(name))
        .replace("CHANGES_KEPT", str(CHANGES_KEPT))
        .replace("'COMPACT'", repr(COMPACT))
    )


ADD_SCRIPT = _records_script("add.lua")
REMOVE_SCRIPT = _records_script("remove.lua")
ENABLE_SCRIPT = _records_script("enable.lua")
DROP_SCRIPT = _script("drop.lua")

#: Which entries of an aHash :func:`disable` and :func:`enable` take: the one with this pHash,
#: the one without a pHash (None), or every one (EVERY).
EVERY: Final = "every"
Selector = int | None | Literal["every"]


class Toggled(NamedTuple):
    """What :func:`disable` or :func:`enable` did to the entries of one aHash."""

    done: int  # entries disabled (enabled) now
    already: int  # matching entries that were disabled (enabled) already


# Keys UNLINKed per call while a drop deletes a list's keys.
DROP_BATCH = 500


class RenameIncomplete(StoreError):
    """``guard rename`` found the copy short (the old list changed meanwhile): the old list is
    kept, the new one is incomplete (drop it and rename again)."""


async def add(
    client: aioredis.Redis,
    script: Script,
    catalog: Catalog,
    list_name: str,
    entries: Iterable[Entry],
    bands: int,
    pending: str = "",
    disabled: bool = False,
) -> AddResult:
    """:meth:`guard.store.Store.add`: ``script`` is the registered add script. ``pending``:
    a note the list is created with (refused if the list exists without the same note).
    ``disabled``: write the entries disabled (a rename copying disabled entries)."""
    batch = list(entries)
    for entry in batch:
        if is_low_information(entry.ahash):
            raise LowInformationEntry(
                f"{entry.source or to_hex(entry.ahash)}: low-information hash "
                f"{to_hex(entry.ahash)} (a flat or near-flat image) cannot be listed"
            )
    if bands not in BAND_COUNTS:
        raise ValueError(f"bands must be one of {BAND_COUNTS}, got {bands}")
    validate_stored_name(list_name)
    found = catalog.cached.get(list_name) or await catalog.read(list_name)
    if found is None and not pending and not batch:
        # Nothing to create the list with: an empty list would match nothing, so a route that
        # requires it would let everything through (a load whose every file was refused).
        return AddResult(added=0, present=0)
    if not pending and (found is None or found.pending == LOADING):
        pending = LOADING  # a first load: lookups treat the list as absent until it ends
    if found is not None and found.records != COMPACT:
        found = await catalog.read(list_name)  # upgraded since it was cached?
        if found is not None and found.records != COMPACT:
            raise NeedsUpgrade(owner_of(list_name) or list_name)
    meta = found or ListMeta.new(bands)
    added = present = 0
    now = time.time()
    batches = [batch[i : i + WRITE_BATCH] for i in range(0, len(batch), WRITE_BATCH)] or [[]]
    for number, chunk in enumerate(batches):
        try:
            done, already, meta = await _add_batch(
                script, catalog, list_name, meta, chunk, now, pending, disabled
            )
        except Recreated:
            if number > 0:
                raise
            # Our cached metadata is stale (the list was dropped and re-created with other
            # settings, or changed by hand): read it again, once.
            catalog.forget(list_name)
            fresh = await catalog.read(list_name)
            if fresh is None:
                raise
            done, already, meta = await _add_batch(
                script, catalog, list_name, fresh, chunk, now, pending, disabled
            )
        added += done
        present += already
        async with translated():
            await replicated(client, keys(list_name).ver)  # on a cluster: on a replica too
    async with translated():
        if pending == LOADING:
            await client.hdel(keys(list_name).meta, "pending")
        await client.sadd(LISTS_KEY, list_name)
    catalog.seen.add(list_name)
    return AddResult(added=added, present=present)


async def _add_batch(
    script: Script,
    catalog: Catalog,
    list_name: str,
    meta: ListMeta,
    batch: Sequence[Entry],
    now: float,
    pending: str = "",
    disabled: bool = False,
) -> tuple[int, int, ListMeta]:
    """One call of the add script: (added, present, the metadata with the list's incarnation as
    the script found or made it)."""
    names = keys(list_name)
    script_keys = [
        labels_key(list_name),
        names.ver,
        names.meta,
        names.snap,
        drop_marker(list_name),
        changes_key(list_name),
    ]
    args: list[str | int | bytes] = [
        len(meta.layout.bands),
        meta.layout_text,
        meta.hash_version,
        repr(now),  # `created`, if this call creates the list
        secrets.token_hex(8),
        pending,
        "disabled" if disabled else "",
    ]
    for entry in batch:
        if entry.added_at is None:
            entry = Entry(entry.ahash, entry.phash, entry.source, entry.label, now)
        script_keys += [
            bucket_key(list_name, entry.ahash),
            off_key(list_name),
            *(band_key(list_name, i, v) for i, v in enumerate(meta.layout.values(entry.ahash))),
        ]
        args += [
            entry_field(entry.ahash, entry.phash),
            to_signed(entry.ahash),
            entry.label or "",
            record_tail(entry),
        ]
    async with refusing_old_records(owner_of(list_name) or list_name):
        done, already, incarnation = await script(keys=script_keys, args=args)
    incarnation = text(incarnation or b"")
    if incarnation != meta.incarnation:
        meta = dataclasses.replace(meta, incarnation=incarnation)
    if pending == LOADING:
        catalog.cached.pop(list_name, None)  # lookups read it (being loaded) until the load ends
    else:
        catalog.cached[list_name] = meta
    return int(done), int(already), meta


async def entries(
    client: aioredis.Redis, list_name: str, *, disabled: bool = False
) -> AsyncIterator[Entry]:
    """Every entry of a list (its disabled ones if ``disabled``), in no particular order (a
    bounded read at a time: Redis is never blocked long)."""
    async with translated():
        async for entry in every_entry(client, list_name, disabled=disabled):
            yield entry


async def remove(
    client: aioredis.Redis,
    script: Script,
    list_name: str,
    meta: ListMeta,
    ahash: int,
    phash: int | None,
) -> int:
    """One call of the remove script (``script``) against the list as ``meta`` describes it:
    the entries with this aHash (only the one with this pHash, if given), disabled ones too."""
    reply = await _one_hash(
        script, list_name, meta, ahash, EVERY if phash is None else phash, "remove"
    )
    await _compact_if_due(client, list_name, reply)
    return reply[0] + reply[1]


async def disable(
    client: aioredis.Redis,
    script: Script,
    list_name: str,
    meta: ListMeta,
    ahash: int,
    phash: Selector,
) -> Toggled:
    """The remove script (``script``) moving entries to ``disabled``: (entries disabled now,
    matching entries disabled already)."""
    reply = await _one_hash(script, list_name, meta, ahash, phash, "disable")
    await _compact_if_due(client, list_name, reply)
    return Toggled(reply[0], reply[1])


async def enable(
    script: Script, list_name: str, meta: ListMeta, ahash: int, phash: Selector
) -> Toggled:
    """The enable script (``script``): (entries enabled now, matching entries enabled
    already)."""
    reply = await _one_hash(script, list_name, meta, ahash, phash, None)
    return Toggled(reply[0], reply[1])


async def _one_hash(
    script: Script,
    list_name: str,
    meta: ListMeta,
    ahash: int,
    phash: Selector,
    mode: str | None,
) -> list[int]:
    """One call of the remove script (``mode``: remove or disable) or of the enable script
    (``mode`` None) on the entries of one aHash: its reply."""
    names = keys(list_name)
    bands = [band_key(list_name, i, v) for i, v in enumerate(meta.layout.values(ahash))]
    which = b"*" if isinstance(phash, str) else entry_field(ahash, phash)
    args: list[str | int | bytes] = [to_signed(ahash), which, packed(ahash), meta.layout_text]
    script_keys = [
        bucket_key(list_name, ahash),
        names.ver,
        names.meta,
        names.snap,
        off_key(list_name),
        changes_key(list_name),
        tombstones_key(list_name),
    ]
    async with refusing_old_records(owner_of(list_name) or list_name):
        reply = await script(
            keys=[*script_keys, *bands], args=args if mode is None else [*args, mode]
        )
    return [int(value) for value in reply]


async def _compact_if_due(client: aioredis.Redis, list_name: str, reply: list[int]) -> None:
    """After a removal: compact the snapshot once its tombstones have grown (reply: the remove
    script's, ending with the snapshot's and the tombstones' lengths)."""
    if needs_compacting(reply[2], reply[3]):
        await compact(client, list_name)


async def drop(
    client: aioredis.Redis,
    script: Script,
    catalog: Catalog,
    list_name: str,
    *,
    keep_marker: bool = False,
) -> int:
    """:meth:`guard.store.Store.drop`, in the order the module's docstring gives. Returns the
    number of keys deleted (0: there was no such list, nor an unfinished drop of one)."""
    validate_stored_name(list_name)
    names = keys(list_name)
    marker = drop_marker(list_name)
    async with translated():
        deleted = int(await script(keys=[names.meta, names.ver, marker]))
        state = text(await client.get(marker) or b"")
        await client.srem(LISTS_KEY, list_name)
        batch: list[bytes] = []
        async for key in client.scan_iter(match=list_key(list_name, "*"), count=1000):
            if text(key) == marker:
                continue
            batch.append(key)
            if len(batch) >= DROP_BATCH:
                deleted += await client.unlink(*batch)
                batch = []
        if batch:
            deleted += await client.unlink(*batch)
        if state.startswith("dropping"):
            if keep_marker:
                await client.set(marker, "dropped" + state[len("dropping") :])
            else:
                await client.delete(marker)
    catalog.forget(list_name)
    catalog.seen.discard(list_name)  # gone on purpose
    return deleted


async def unfinished_drop(client: aioredis.Redis, list_name: str) -> bool:
    """Whether a drop of the list began and did not finish (run it again)."""
    validate_stored_name(list_name)
    async with translated():
        state = await client.get(drop_marker(list_name))
    return text(state or b"").startswith("dropping")


async def rename(
    client: aioredis.Redis,
    add_script: Script,
    drop_script: Script,
    catalog: Catalog,
    old: str,
    new: str,
) -> int:
    """:meth:`guard.store.Store.rename`: copy every entry of ``old`` into a new list ``new``
    (created by the add script with a pending note, in batches of :data:`WRITE_BATCH`; disabled
    entries stay disabled), check that ``new`` holds as many entries (and disabled entries) as
    ``old`` and that ``old`` did not change meanwhile,
    clear the note, then drop ``old`` (keeping its marker). Returns the entries copied.

    Until the note is cleared ``new`` is incomplete: ``guard lists --verify`` says so, and a
    rename interrupted there leaves it so (``guard drop NEW``, then rename again); ``old`` is
    untouched until the copy is proven whole.
    """
    validate_stored_name(old)
    validate_stored_name(new)
    if old == new:
        raise ListExists(f"list {new!r} is the list to rename")
    catalog.cached.pop(old, None)
    meta = await catalog.meta(old)
    async with translated():
        taken = await client.exists(keys(new).meta)
    if taken:
        raise ListExists(f"list {new!r} exists already: pick another name, or drop it first")
    if await unfinished_drop(client, new):
        raise ListExists(f"a drop of list {new!r} did not finish: run guard drop {new} first")
    bands = len(meta.layout.bands)
    note = f"rename from {old} ({secrets.token_hex(4)})"
    names = keys(old)
    async with translated():
        version = int(await client.get(names.ver) or 0)
        expected = int(await client.hget(names.meta, "entries") or 0)
        expected_off = int(await client.hget(names.meta, "disabled") or 0)

    async def copy(chunk: list[Entry], disabled: bool = False) -> int:
        try:
            result = await add(
                client, add_script, catalog, new, chunk, bands, pending=note, disabled=disabled
            )
        except ListExists:
            raise ListExists(f"list {new!r} was created meanwhile: not renamed") from None
        return result.added

    async def copy_all(disabled: bool) -> int:
        done = 0
        chunk: list[Entry] = []
        async for entry in entries(client, old, disabled=disabled):
            chunk.append(entry)
            if len(chunk) >= WRITE_BATCH:
                done += await copy(chunk, disabled)
                chunk = []
        if chunk:
            done += await copy(chunk, disabled)
        return done

    copied = await copy([])  # creates `new`, empty, with its pending note
    copied += await copy_all(disabled=False)
    copied_off = await copy_all(disabled=True)
    new_names = keys(new)
    async with translated():
        now_version = int(await client.get(names.ver) or 0)
        held = int(await client.hget(new_names.meta, "entries") or 0)
        held_off = int(await client.hget(new_names.meta, "disabled") or 0)
    if (
        now_version != version
        or (copied, copied_off) != (expected, expected_off)
        or (held, held_off) != (expected, expected_off)
    ):
        raise RenameIncomplete(
            f"list {old!r} changed while it was copied ({expected} entries expected, "
            f"{copied} copied, {held} in {new!r}): {new!r} is incomplete and {old!r} was kept; "
            f"run guard drop {new} and rename again"
        )
    async with translated():
        await client.hdel(new_names.meta, "pending")
    catalog.forget(new)
    await drop(client, drop_script, catalog, old, keep_marker=True)
    return copied + copied_off
