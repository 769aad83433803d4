"""Changes to a list: adds and removals through the Lua scripts in scripts/ (an entry is written
with its band members, its ``entries`` record, its snapshot record and the version counter at
once: no reader sees half an entry), and dropping a whole list."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib.resources import files
from typing import Any

import redis.asyncio as aioredis

from guard.bands import BAND_COUNTS, LISTS_KEY, band_key, list_key, validate_list_name
from guard.errors import LowInformationEntry
from guard.hashing import is_low_information
from guard.mirror import RECORD_SIZE, snapshot_record
from guard.spelling import to_hex, to_signed
from guard.store.catalog import Catalog
from guard.store.connection import Recreated, translated
from guard.store.records import ListMeta, entry_json, keys, packed, phash_text, text
from guard.types import AddResult, Entry

#: A registered Lua script: ``await script(keys=[...], args=[...])``.
Script = Callable[..., Awaitable[Any]]

# Entries per Lua call: big enough to amortise round trips, small enough not to block Redis long.
WRITE_BATCH = 500


def _script(name: str) -> str:
    return (files("guard.store") / "scripts" / name).read_text(encoding="utf-8")


ADD_SCRIPT = _script("add.lua")
REMOVE_SCRIPT = _script("remove.lua").replace("RECORD_SIZE", str(RECORD_SIZE))


async def add(
    client: aioredis.Redis,
    script: Script,
    catalog: Catalog,
    list_name: str,
    entries: Iterable[Entry],
    bands: int,
) -> AddResult:
    """:meth:`guard.store.Store.add`: ``script`` is the registered add script."""
    batch = list(entries)
    for entry in batch:
        if is_low_information(entry.ahash):
            raise LowInformationEntry(
                f"{entry.source or to_hex(entry.ahash)}: low-information hash "
                f"{to_hex(entry.ahash)} (a flat or near-flat image) cannot be listed"
            )
    if bands not in BAND_COUNTS:
        raise ValueError(f"bands must be one of {BAND_COUNTS}, got {bands}")
    validate_list_name(list_name)
    meta = catalog.cached.get(list_name) or await catalog.read(list_name) or ListMeta.new(bands)
    added = present = 0
    now = time.time()
    batches = [batch[i : i + WRITE_BATCH] for i in range(0, len(batch), WRITE_BATCH)] or [[]]
    for number, chunk in enumerate(batches):
        try:
            done, already, meta = await _add_batch(script, catalog, list_name, meta, chunk, now)
        except Recreated:
            if number > 0:
                raise
            # Our cached metadata is stale (the list was dropped and re-created with other
            # settings, or changed by hand): read it again, once.
            catalog.forget(list_name)
            fresh = await catalog.read(list_name)
            if fresh is None:
                raise
            done, already, meta = await _add_batch(script, catalog, list_name, fresh, chunk, now)
        added += done
        present += already
    async with translated():
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
) -> tuple[int, int, ListMeta]:
    """One call of the add script: (added, present, the metadata with the list's incarnation as
    the script found or made it)."""
    names = keys(list_name)
    script_keys = [names.entries, names.ver, names.meta, names.snap]
    args: list[str | int | bytes] = [
        len(meta.layout.bands),
        meta.layout_text,
        meta.hash_version,
        repr(now),  # `created`, if this call creates the list
        secrets.token_hex(8),
    ]
    for entry in batch:
        if entry.added_at is None:
            entry = Entry(entry.ahash, entry.phash, entry.source, entry.label, now)
        script_keys += [
            band_key(list_name, i, v) for i, v in enumerate(meta.layout.values(entry.ahash))
        ]
        args += [
            to_signed(entry.ahash),
            phash_text(entry.phash),
            entry_json(entry),
            snapshot_record(entry.ahash, entry.phash),
        ]
    async with translated():
        done, already, incarnation = await script(keys=script_keys, args=args)
    incarnation = text(incarnation or b"")
    if incarnation != meta.incarnation:
        meta = dataclasses.replace(meta, incarnation=incarnation)
    catalog.cached[list_name] = meta
    return int(done), int(already), meta


async def remove(
    script: Script, list_name: str, meta: ListMeta, ahash: int, phash: int | None
) -> int:
    """One call of the remove script (``script``) against the list as ``meta`` describes it."""
    names = keys(list_name)
    bands = [band_key(list_name, i, v) for i, v in enumerate(meta.layout.values(ahash))]
    async with translated():
        removed = await script(
            keys=[names.entries, names.ver, names.meta, names.snap, *bands],
            args=[
                to_signed(ahash),
                "" if phash is None else to_hex(phash),
                packed(ahash),
                meta.layout_text,
            ],
        )
    return int(removed)


async def drop(client: aioredis.Redis, catalog: Catalog, list_name: str) -> int:
    """:meth:`guard.store.Store.drop`: delete every key under the list's hash tag."""
    validate_list_name(list_name)
    deleted = 0
    async with translated():
        await client.srem(LISTS_KEY, list_name)
        batch: list[bytes] = []
        async for key in client.scan_iter(match=list_key(list_name, "*"), count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
    catalog.forget(list_name)
    catalog.seen.discard(list_name)  # gone on purpose
    return deleted
