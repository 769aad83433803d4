"""Reading entry records (laid out in guard.store.records): the compact records in buckets, and
the JSON records an older guard writes (a list not upgraded yet, or one an older guard still
writes to during a rolling upgrade), with labels resolved from their ids.

Reads are queued on a pipeline (or a MULTI, or guard.store.connection.read_in_one_step) by
:class:`RecordsOf` and decoded from the replies, so a lookup still reads its records in the
round trip that checks the list's version.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from guard.mirror import RECORD
from guard.spelling import from_signed, to_signed
from guard.store.records import (
    BUCKET_BITS,
    ListMeta,
    bucket_key,
    bucket_key_at,
    disabled_key,
    entries_from_json,
    entry_buckets,
    entry_from_record,
    field_hashes,
    keys,
    labels_key,
    off_key,
    record_label_id,
    text,
)
from guard.store.snapshot import Snapshot, read_snapshot
from guard.types import Entry

#: Buckets read per round trip when a whole list is read (export, verify, rename).
BUCKETS_PER_READ = 1024
BUCKETS = 1 << BUCKET_BITS

#: (field, record) pairs of compact entry records, as Redis returns them.
Records = list[tuple[bytes, bytes]]


class Labels:
    """Label ids to labels, per list incarnation. A list never reuses an id while it lives (its
    labels are only ever added), so a cached id stays right; an id not cached yet costs one
    HMGET. A list re-created under the same name starts a new cache."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, dict[int, str]]] = {}

    async def resolve(
        self, client: aioredis.Redis, list_name: str, incarnation: str, records: Records
    ) -> Mapping[int, str]:
        """The labels of ``records`` (a cached mapping: read it, do not keep it)."""
        held = self._known.get(list_name)
        if held is None or held[0] != incarnation:
            held = self._known[list_name] = (incarnation, {})
        known = held[1]
        ids = {record_label_id(record) for _, record in records}
        missing = sorted(i for i in ids - set(known) if i is not None)
        if missing:
            values = await client.hmget(labels_key(list_name), [str(i) for i in missing])
            known.update(
                (i, text(value)) for i, value in zip(missing, values, strict=True) if value
            )
        return known


class RecordsOf:
    """The entries of some aHashes, read in one step: queue the reads on a pipeline with
    :meth:`queue`, then decode its replies with :meth:`records` and :meth:`entries`."""

    def __init__(self, list_name: str, ahashes: Iterable[int]) -> None:
        self.list_name = list_name
        self.ahashes = list(dict.fromkeys(ahashes))
        self._buckets = list(dict.fromkeys(bucket_key(list_name, a) for a in self.ahashes))

    def queue(self, pipe: Any) -> int:
        """Queue the reads; returns how many replies they take. The JSON records are read for
        every list, upgraded or not: an older guard still writing to a compact list (a rolling
        upgrade) writes them there, and its entries must be enforced as well."""
        for key in self._buckets:
            pipe.hgetall(key)
        if self.ahashes:
            pipe.hmget(keys(self.list_name).entries, [to_signed(a) for a in self.ahashes])
        return self.commands

    @property
    def commands(self) -> int:
        return len(self._buckets) + (1 if self.ahashes else 0)

    def records(self, replies: Sequence[Any]) -> Records:
        """The compact records of the aHashes asked for."""
        wanted = set(self.ahashes)
        return [
            (field, record)
            for found in replies[: len(self._buckets)]
            for field, record in pairs(found)
            if field_hashes(field)[0] in wanted
        ]

    def entries(self, replies: Sequence[Any], labels: Mapping[int, str]) -> dict[int, list[Entry]]:
        """aHash -> its entries (compact records first, then JSON ones)."""
        found: dict[int, list[Entry]] = {}
        for field, record in self.records(replies):
            entry = entry_from_record(field, record, labels)
            found.setdefault(entry.ahash, []).append(entry)
        if self.ahashes:
            old = replies[len(self._buckets)]
            for ahash, value in zip(self.ahashes, old, strict=True):
                if value is not None:
                    found.setdefault(ahash, []).extend(entries_from_json(ahash, value))
        return found


def pairs(found: dict[bytes, bytes] | list[bytes] | None) -> Records:
    """An HGETALL reply's (field, value) pairs: a dict through a pipeline, a flat list through
    Lua (guard.store.connection.read_in_one_step on a cluster)."""
    if isinstance(found, dict):
        return list(found.items())
    return list(zip(found[::2], found[1::2], strict=True)) if found else []


async def read_entries(
    client: aioredis.Redis, labels: Labels, list_name: str, meta: ListMeta, ahashes: Iterable[int]
) -> dict[int, list[Entry]]:
    """aHash -> its entries, for the aHashes that have any (one round trip, two for a label
    not seen before)."""
    reads = RecordsOf(list_name, ahashes)
    if not reads.ahashes:
        return {}
    pipe = client.pipeline(transaction=False)
    reads.queue(pipe)
    replies = await pipe.execute()
    names = await labels.resolve(client, list_name, meta.incarnation, reads.records(replies))
    return reads.entries(replies, names)


async def all_labels(client: aioredis.Redis, list_name: str) -> dict[int, str]:
    """Every label of a list, by id."""
    found = await client.hgetall(labels_key(list_name))
    return {int(f): text(v) for f, v in found.items() if not text(f).startswith("=")}


async def bucket_records(
    client: aioredis.Redis, list_name: str, first: int, count: int
) -> list[Records]:
    """The compact records of ``count`` buckets from ``first``, bucket by bucket."""
    return await records_in(client, list_name, range(first, min(first + count, BUCKETS)))


async def records_in(
    client: aioredis.Redis, list_name: str, buckets: Iterable[int]
) -> list[Records]:
    """The compact records of these buckets, bucket by bucket (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for bucket in buckets:
        pipe.hgetall(bucket_key_at(list_name, bucket))
    return [pairs(found) for found in await pipe.execute()]


async def every_entry(
    client: aioredis.Redis, list_name: str, *, disabled: bool = False, every_bucket: bool = False
) -> AsyncIterator[Entry]:
    """Every entry of a list (its disabled ones if ``disabled``), then the JSON records an older
    guard wrote. Never blocks Redis long. Only the buckets that can hold records are read
    (:func:`occupied_buckets`), unless ``every_bucket`` (a check that must not trust the
    snapshot: guard lists --verify)."""
    labels = await all_labels(client, list_name)
    if disabled:
        async for field, record in client.hscan_iter(off_key(list_name), count=1000):
            yield entry_from_record(field, record, labels)
    else:
        if every_bucket:
            buckets = list(range(BUCKETS))
        else:
            buckets = await occupied_buckets(client, list_name)
        for start in range(0, len(buckets), BUCKETS_PER_READ):
            chunk = buckets[start : start + BUCKETS_PER_READ]
            for bucket in await records_in(client, list_name, chunk):
                for field, record in bucket:
                    yield entry_from_record(field, record, labels)
    old = disabled_key(list_name) if disabled else keys(list_name).entries
    async for field, value in client.hscan_iter(old, count=1000):
        for entry in entries_from_json(from_signed(int(field)), value):
            yield entry


async def occupied_buckets(client: aioredis.Redis, list_name: str) -> list[int]:
    """The buckets that can hold the list's records: those of the aHashes in its snapshot (each
    entry in the index has its record there), so a small list costs a few reads, not 65,536.
    Every bucket where that cannot be known (no snapshot, a torn one)."""
    read = await read_snapshot(client, list_name)
    if read is None:
        return list(range(BUCKETS))
    return await asyncio.to_thread(_buckets_of, read)  # a big snapshot: off the event loop


def _buckets_of(read: Snapshot) -> list[int]:
    try:
        live = read.live()
    except ValueError:
        return list(range(BUCKETS))
    ahashes = np.frombuffer(live, dtype=RECORD)["ahash"].astype(np.uint64)
    return [int(b) for b in np.unique(entry_buckets(ahashes))]
