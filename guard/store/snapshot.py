"""A list's packed snapshot (every entry in the index as a 17-byte record, guard.mirror.RECORD)
and its tombstones: removals never rewrite the snapshot in the script that makes them.

Redis cannot cut bytes out of a string, and a removal that splices its record out costs a copy
of the whole snapshot inside the Lua step: about 19 ms at a million entries, 10x that at ten
million, with Redis serving nobody meanwhile. So a removal appends the record to the list's
tombstones (``guard:{<list>}:snapdel``, APPEND: constant time), and the snapshot is the
multiset of its records minus the tombstones' (an entry removed and added again has two records
and one tombstone: it is there once). Readers subtract them (:func:`live_records`); once the
tombstones pass 1/16 of the snapshot the writer compacts it (:func:`compact`), outside Lua: one
read, numpy, and one conditional SET.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import NamedTuple

import numpy as np
import redis.asyncio as aioredis

from guard.bands import list_key
from guard.mirror import RECORD, RECORD_SIZE
from guard.store.connection import read_together, translated
from guard.store.records import keys

#: Compact once the tombstones are more than this share of the snapshot's records.
COMPACT_SHARE = 1 / 16

#: Replace the snapshot if the version is still the one read. KEYS: ver, snap, snapdel.
#: ARGV: the version read, the tombstones' length read, the compacted snapshot.
_COMPACT_LUA = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if redis.call('STRLEN', KEYS[3]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return 1
"""


def tombstones_key(list_name: str) -> str:
    """The records removed from a list's snapshot since its last compaction."""
    return list_key(list_name, "snapdel")


def live_records(snapshot: bytes, tombstones: bytes) -> bytes:
    """The snapshot's records minus the tombstones' (as multisets), in the snapshot's order;
    for each tombstone the record's first occurrence goes. ValueError if either is not whole
    records."""
    if len(snapshot) % RECORD_SIZE or len(tombstones) % RECORD_SIZE:
        raise ValueError(f"a snapshot holds whole {RECORD_SIZE}-byte records")
    if not tombstones:
        return snapshot
    records = np.frombuffer(snapshot, dtype=RECORD)
    removed = np.frombuffer(tombstones, dtype=RECORD)
    # Few records share a tombstone's aHash: find those in numpy, match exactly in Python.
    ahashes, dead = records["ahash"].astype(np.uint64), removed["ahash"].astype(np.uint64)
    suspects = np.flatnonzero(np.isin(ahashes, dead))
    owed = Counter(tombstones[i : i + RECORD_SIZE] for i in range(0, len(tombstones), RECORD_SIZE))
    keep = np.ones(len(records), dtype=bool)
    for at in suspects:
        record = snapshot[at * RECORD_SIZE : (at + 1) * RECORD_SIZE]
        if owed[record] > 0:
            owed[record] -= 1
            keep[at] = False
    return snapshot if keep.all() else records[keep].tobytes()


class Snapshot(NamedTuple):
    """A list's snapshot and tombstones as one version holds them."""

    version: bytes
    records: bytes
    tombstones: bytes

    def live(self) -> bytes:
        """:func:`live_records` of these."""
        return live_records(self.records, self.tombstones)


async def read_snapshot(client: aioredis.Redis, list_name: str) -> Snapshot | None:
    """The list's snapshot and tombstones, with the version they are of, in one step (None: the
    list has no snapshot)."""
    names = keys(list_name)
    async with translated():
        version, snap, dels = await read_together(
            client,
            lambda pipe: (
                pipe.get(names.ver),
                pipe.get(names.snap),
                pipe.get(tombstones_key(list_name)),
            ),
        )
    return None if snap is None else Snapshot(version or b"0", snap, dels or b"")


def needs_compacting(snapshot_length: int, tombstones_length: int) -> bool:
    """Whether the tombstones have grown past :data:`COMPACT_SHARE` of the snapshot."""
    return tombstones_length > 0 and tombstones_length > COMPACT_SHARE * snapshot_length


async def compact(client: aioredis.Redis, list_name: str) -> bool:
    """Rewrite the snapshot without its tombstones, unless the list changed meanwhile (the next
    removal tries again). Returns whether it did. The records are the same, so the version does
    not move and no worker reloads."""
    read = await read_snapshot(client, list_name)
    if read is None or not read.tombstones:
        return False
    try:
        live = await asyncio.to_thread(read.live)  # off the event loop
    except ValueError:
        return False  # a damaged snapshot: guard lists --verify says so; never make it worse
    names = keys(list_name)
    script = client.register_script(_COMPACT_LUA)
    async with translated():
        done = await script(
            keys=[names.ver, names.snap, tombstones_key(list_name)],
            args=[read.version, len(read.tombstones), live],
        )
    return bool(done)
