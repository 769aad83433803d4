"""Checks that a list can be trusted: proven whole (:func:`verify`), on a Redis that will not
evict it (:func:`check_eviction`). A blocklist that silently loses entries fails open."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from guard.bands import list_key
from guard.errors import EvictionUnsafe, StoreError, StoreUnavailable
from guard.mirror import RECORD_SIZE, band_values_of, snapshot_record
from guard.spelling import from_signed, to_hex, to_signed
from guard.store.connection import is_cluster, translated
from guard.store.entry_reads import every_entry
from guard.store.records import LOADING, ListMeta, keys, text
from guard.store.snapshot import read_snapshot


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`guard.store.Store.verify` found in one list (``ok`` when everything agrees)."""

    list: str
    entries: int  # entry records (an aHash may have several)
    meta_entries: int  # the count kept in `meta`
    hashes: int  # distinct aHashes of the entry records
    bands: int
    missing: int  # (aHash, band) pairs whose band set lacks the aHash
    stray: int  # band-set members with no entry record, or in a set their band value does not name
    snapshot: int | None  # records in the packed `snap` key; None: the list has no snapshot
    snapshot_missing: int  # entry records without their snapshot record
    snapshot_stray: int  # snapshot records that are no entry (and duplicates, a torn tail)
    examples: tuple[str, ...] = ()  # up to 10 mismatches, for the operator
    pending: str = ""  # set while `guard rename` copies into the list (not whole yet)

    @property
    def ok(self) -> bool:
        return (
            self.entries == self.meta_entries
            and self.missing == 0
            and self.stray == 0
            and self.snapshot_missing == 0
            and self.snapshot_stray == 0
            and not self.pending
        )

    @property
    def findings(self) -> tuple[str, ...]:
        """Each mismatch in words ("no snapshot" is a finding, not an error)."""
        found = []
        if self.pending == LOADING:
            found.append(f"incomplete (its first load did not finish: load {self.list} again)")
        elif self.pending:
            found.append(
                f"incomplete ({self.pending}, unfinished: guard drop {self.list} and rename again)"
            )
        if self.entries != self.meta_entries:
            found.append(
                f"meta counts {self.meta_entries} entries, the entry records hold {self.entries}"
            )
        if self.missing:
            found.append(f"{self.missing} band memberships missing")
        if self.stray:
            found.append(f"{self.stray} stray band members")
        if self.snapshot is None:
            found.append("no snapshot")
        elif self.snapshot_missing or self.snapshot_stray:
            found.append(f"snapshot: {self.snapshot_missing} missing, {self.snapshot_stray} stray")
        return tuple(found)


async def check_eviction(client: aioredis.Redis, *, allow_eviction: bool) -> str | None:
    """:meth:`guard.store.Store.check_eviction`."""
    try:
        async with translated():
            if is_cluster(client):  # every primary's: each holds some of the lists
                by_node = await client.config_get("maxmemory-policy", target_nodes="primaries")
                replies: list[Any] = list(by_node.values())
            else:
                replies = [await client.config_get("maxmemory-policy")]
    except StoreUnavailable:
        raise
    except StoreError as error:
        return f"cannot read Redis's maxmemory-policy ({error}): make sure it is noeviction"
    # Keys come back as bytes (decode_responses is off); the typing says str.
    values: list[dict[Any, Any]] = [dict(reply) for reply in replies]
    policies = [
        text(each.get(b"maxmemory-policy") or each.get("maxmemory-policy") or "") for each in values
    ]
    policy = next((p for p in policies if p.startswith("allkeys-")), "")
    if not policy:
        return None
    message = (
        f"Redis's maxmemory-policy is {policy}: it may evict guard's lists when memory runs "
        "short, and uploads would then pass unchecked. Set maxmemory-policy to noeviction "
        "(or a volatile-* policy: guard sets no TTLs)"
    )
    if not allow_eviction:
        raise EvictionUnsafe(message + ", or set redis.allow_eviction: true to run anyway")
    return message


async def verify(client: aioredis.Redis, list_name: str, meta: ListMeta) -> VerifyReport:
    """:meth:`guard.store.Store.verify` on the list as ``meta`` describes it."""
    names = keys(list_name)
    counted = 0
    fields = array("q")
    records = bytearray()  # what the snapshot must hold: one record per entry
    async with translated():
        meta_entries = int(await client.hget(names.meta, "entries") or 0)
        pending = text(await client.hget(names.meta, "pending") or b"")
        async for entry in every_entry(client, list_name, every_bucket=True):
            fields.append(to_signed(entry.ahash))
            records += snapshot_record(entry.ahash, entry.phash)
            counted += 1
    hashes = np.unique(np.frombuffer(fields.tobytes(), dtype=np.int64).view(np.uint64))
    bands = len(meta.layout.bands)
    expected = np.array(band_values_of(hashes, meta.layout))
    found = np.zeros((bands, len(hashes)), dtype=bool)
    stray = 0
    examples: list[str] = []
    band_pattern = re.compile(rb"b(\d+):(\d+)")
    prefix = list_key(list_name, "").encode()
    async with translated():
        async for key in client.scan_iter(match=list_key(list_name, "b*"), count=1000):
            parsed = band_pattern.fullmatch(key[len(prefix) :])
            if parsed is None:
                continue
            band, value = int(parsed[1]), int(parsed[2])
            async for member in client.sscan_iter(key, count=1000):
                ahash = from_signed(int(member))
                at = int(np.searchsorted(hashes, np.uint64(ahash)))
                known = at < len(hashes) and int(hashes[at]) == ahash
                if known and band < bands and int(expected[band, at]) == value:
                    found[band, at] = True
                    continue
                stray += 1
                if len(examples) < 10:
                    examples.append(f"stray {to_hex(ahash)} in {text(key)}")
    missing = int(found.size - found.sum())
    for band, at in zip(*np.nonzero(~found), strict=True):
        if len(examples) >= 10:
            break
        examples.append(f"missing {to_hex(int(hashes[at]))} from band {int(band)}")
    snapshot, snap_missing, snap_stray = await _verify_snapshot(client, list_name, bytes(records))
    return VerifyReport(
        list=list_name,
        entries=counted,
        meta_entries=meta_entries,
        hashes=len(hashes),
        bands=bands,
        missing=missing,
        stray=stray,
        snapshot=snapshot,
        snapshot_missing=snap_missing,
        snapshot_stray=snap_stray,
        examples=tuple(examples),
        pending=pending,
    )


async def _verify_snapshot(
    client: aioredis.Redis, list_name: str, expected: bytes
) -> tuple[int | None, int, int]:
    """(records in the snapshot or None if there is none, missing records, stray records)."""
    read = await read_snapshot(client, list_name)
    if read is None:
        return None, 0, 0
    packed = read.records
    if len(read.tombstones) % RECORD_SIZE == 0 and len(packed) % RECORD_SIZE == 0:
        packed = read.live()  # else compare as is: torn, so stray
    whole = len(packed) - len(packed) % RECORD_SIZE
    record = np.dtype(f"V{RECORD_SIZE}")
    snap = np.frombuffer(packed[:whole], dtype=record)
    want = np.unique(np.frombuffer(expected, dtype=record))
    distinct = np.unique(snap)
    # Duplicates and a torn tail are stray too: the snapshot must be exactly the entries.
    stray = int(np.setdiff1d(distinct, want).size) + len(snap) - len(distinct)
    stray += 1 if whole != len(packed) else 0
    return len(snap), int(np.setdiff1d(want, distinct).size), stray
