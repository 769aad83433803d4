"""A worker-local copy of one list's aHashes, band-indexed in numpy: pure, no Redis.

Redis stays the source of truth. The store fills a :class:`Mirror` from the list's packed snapshot
(``guard:{<list>}:snap``, 8 big-endian bytes per distinct aHash) together with the version counter
it belongs to, and trusts it only while ``ver`` still has that value. A query then costs one round
trip (the version check, with the matched entries) instead of a SUNION over hundreds of buckets.

The index is the same multi-index hashing as in Redis (DESIGN.md section 3): per band, the
positions of the hashes sorted by band value, so a probe is a binary search instead of a set key.
Exactness is the same pigeonhole argument; the exact popcount filter removes false positives.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from guard.bands import HASH_BITS, BandLayout

Hashes = npt.NDArray[np.uint64]

# Above this many probes per stored hash a linear scan is cheaper than the band index.
_SCAN_RATIO = 0.25


def popcount(values: Hashes) -> npt.NDArray[np.uint8]:
    """Set bits per element (numpy >= 2 has it built in; older numpy counts bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)  # type: ignore[no-any-return]


_BYTE_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


class Mirror:
    """The distinct aHashes of one list at one version, with a sorted index per band."""

    def __init__(self, hashes: Hashes, layout: BandLayout, version: int) -> None:
        self.hashes = np.unique(hashes.astype(np.uint64, copy=False))
        self.layout = layout
        self.version = version
        # Per band: positions sorted by band value, and the sorted values, in the narrowest
        # types (m = 4: 4 + 2 bytes per hash and band).
        self._value_type = np.dtype(np.uint16 if layout.width <= 16 else np.uint64)
        position_type = np.int32 if len(self.hashes) < 2**31 else np.int64
        self._order: list[npt.NDArray[Any]] = []
        self._sorted: list[npt.NDArray[Any]] = []
        for band_values in band_values_of(self.hashes, layout):
            narrow = band_values.astype(self._value_type)
            order = np.argsort(narrow, kind="stable").astype(position_type)
            self._order.append(order)
            self._sorted.append(narrow[order])

    @classmethod
    def from_snapshot(cls, snapshot: bytes, layout: BandLayout, version: int) -> Mirror:
        """A mirror of a packed snapshot (8 big-endian bytes per aHash)."""
        if len(snapshot) % 8:
            raise ValueError(f"a snapshot holds whole 8-byte hashes, got {len(snapshot)} bytes")
        return cls(np.frombuffer(snapshot, dtype=">u8").astype(np.uint64), layout, version)

    def __len__(self) -> int:
        return len(self.hashes)

    def near(self, queries: list[int], radius: int) -> list[int]:
        """Every stored aHash within ``radius`` bits of at least one query (exact)."""
        if not len(self.hashes) or not queries:
            return []
        wanted = np.array(queries, dtype=np.uint64)
        probe_count = len(queries) * sum(
            _ball_size(self.layout.width, rho) for rho in self.layout.radii(radius)
        )
        if probe_count > _SCAN_RATIO * len(self.hashes):
            keep = np.zeros(len(self.hashes), dtype=bool)
            for query in wanted:
                keep |= popcount(self.hashes ^ query) <= radius
            return [int(h) for h in self.hashes[keep]]
        positions, asked_by = self._candidates(queries, radius)
        candidates = self.hashes[positions]
        close = popcount(candidates ^ wanted[asked_by]) <= radius
        return [int(h) for h in np.unique(candidates[close])]

    def _candidates(
        self, queries: list[int], radius: int
    ) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
        """Positions of the hashes in every probed bucket, and which query probed each.

        A superset of the answer, with repeats: deduplicating the few matches afterwards is
        cheaper than deduplicating every candidate.
        """
        own = np.array([self.layout.values(q) for q in queries], dtype=np.uint64)
        positions: list[npt.NDArray[Any]] = []
        asked_by: list[npt.NDArray[np.intp]] = []
        for band, rho in enumerate(self.layout.radii(radius)):
            if rho < 0:
                continue
            masks = _masks(self.layout.width, rho)
            probes = (own[:, band, None] ^ masks[None, :]).ravel().astype(self._value_type)
            low = np.searchsorted(self._sorted[band], probes, side="left")
            sizes = np.searchsorted(self._sorted[band], probes, side="right") - low
            hit = sizes > 0
            if not hit.any():
                continue
            low, sizes = low[hit], sizes[hit]
            # Every index in [low, low + size) of every hit bucket, without a Python loop.
            starts = np.repeat(low - np.cumsum(sizes) + sizes, sizes)
            positions.append(self._order[band][starts + np.arange(int(sizes.sum()))])
            query_of_probe = np.repeat(np.arange(len(queries)), len(masks))
            asked_by.append(np.repeat(query_of_probe[hit], sizes))
        if not positions:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.intp)
        return np.concatenate(positions), np.concatenate(asked_by)


def band_values_of(hashes: Hashes, layout: BandLayout) -> list[Hashes]:
    """:meth:`BandLayout.values` for an array of hashes: one array of band values per band."""
    tables = _byte_tables(layout)
    values = []
    for band_tables in tables:
        total = np.zeros(len(hashes), dtype=np.uint64)
        for byte_index, table in enumerate(band_tables):
            shift = np.uint64(HASH_BITS - 8 * (byte_index + 1))
            total |= table[((hashes >> shift) & np.uint64(0xFF)).astype(np.intp)]
        values.append(total)
    return values


@lru_cache(maxsize=8)
def _byte_tables(layout: BandLayout) -> list[list[Hashes]]:
    """Per band and per hash byte: what each byte value contributes to the band value."""
    tables = []
    for band in layout.bands:
        per_byte = []
        for byte_index in range(8):
            table = np.zeros(256, dtype=np.uint64)
            for k, bit in enumerate(band):
                if bit // 8 != byte_index:
                    continue
                bit_in_byte = 7 - bit % 8  # bit 0 of the hash is the byte's most significant
                for byte in range(256):
                    if (byte >> bit_in_byte) & 1:
                        table[byte] |= np.uint64(1 << (len(band) - 1 - k))
            per_byte.append(table)
        tables.append(per_byte)
    return tables


def _ball_size(width: int, rho: int) -> int:
    """How many band values lie within ``rho`` bits of one (the probes of one band)."""
    return sum(math.comb(width, k) for k in range(min(rho, width) + 1))


@lru_cache(maxsize=64)
def _masks(width: int, rho: int) -> Hashes:
    """Every ``width``-bit mask with at most ``rho`` bits set (the XORs a band probe tries)."""
    masks = [
        sum(1 << p for p in positions)
        for flipped in range(min(max(rho, -1), width) + 1)
        for positions in itertools.combinations(range(width), flipped)
    ]
    return np.array(masks, dtype=np.uint64)
