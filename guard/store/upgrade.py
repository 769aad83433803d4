"""Upgrading a list an older guard wrote (its entries as JSON per aHash) to compact entry
records, in place (the layout: guard.store.records).

Only where entries keep their source, label and time changes: band sets, snapshot and version
stay, so lookups and workers' mirrors go on undisturbed, and readers read both layouts meanwhile
(guard.store.entry_reads). The write scripts refuse a list until it is upgraded, and the
operator runs ``guard upgrade`` (:meth:`guard.store.Store.upgrade`) once every worker runs this
guard: an older worker finds no record for a match in an upgraded list, so it would let listed
images through. Each batch moves whole aHashes in one Lua step, and only if their JSON is still
what was read: an upgrade interrupted anywhere is finished by running it again.
"""

from __future__ import annotations

from importlib.resources import files

import redis.asyncio as aioredis

from guard.spelling import from_signed
from guard.store.connection import translated
from guard.store.records import (
    COMPACT,
    bucket_key,
    disabled_key,
    entries_from_json,
    entry_field,
    keys,
    labels_key,
    off_key,
    record_tail,
)

#: aHashes moved per Lua step.
UPGRADE_BATCH = 200

_LUA = files("guard.store") / "scripts"
UPGRADE_SCRIPT = (
    (_LUA / "labels.lua").read_text(encoding="utf-8")
    + (_LUA / "upgrade.lua").read_text(encoding="utf-8")
).replace("'COMPACT'", repr(COMPACT))


async def upgrade(client: aioredis.Redis, list_name: str) -> int:
    """Move every JSON entry of the list to compact records, then mark the list upgraded.
    Returns the aHashes moved (0: nothing to move)."""
    script = client.register_script(UPGRADE_SCRIPT)
    names = keys(list_name)
    meta = names.meta
    moved = 0
    async with translated():
        for old, disabled in ((names.entries, False), (disabled_key(list_name), True)):
            while await client.exists(old):
                batch: list[tuple[bytes, bytes]] = []
                async for field, value in client.hscan_iter(old, count=UPGRADE_BATCH):
                    batch.append((field, value))
                    if len(batch) >= UPGRADE_BATCH:
                        moved += await _move(script, list_name, old, meta, batch, disabled)
                        batch = []
                if batch:
                    moved += await _move(script, list_name, old, meta, batch, disabled)
        await script(keys=[names.entries, disabled_key(list_name), meta], args=["finish"])
    return moved


async def _move(
    script: object,
    list_name: str,
    old: str,
    meta: str,
    batch: list[tuple[bytes, bytes]],
    disabled: bool,
) -> int:
    """One Lua step: these JSON fields of ``old`` as compact records."""
    script_keys = [old, meta, labels_key(list_name)]
    args: list[str | int | bytes] = ["move"]
    for field, value in batch:
        ahash = from_signed(int(field))
        entries = entries_from_json(ahash, value)
        script_keys.append(off_key(list_name) if disabled else bucket_key(list_name, ahash))
        args += [field, value, len(entries)]
        for entry in entries:
            args += [entry_field(entry.ahash, entry.phash), entry.label or "", record_tail(entry)]
    return int(await script(keys=script_keys, args=args))  # type: ignore[operator]
