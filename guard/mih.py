"""Exact Hamming-radius search over a fixed array of 64-bit hashes, in numpy: pure, no Redis.

Multi-index hashing (the pigeonhole argument of guard.bands): the 64 bits are cut into bands;
for a radius r the bands get radii rho_i >= -1 with sum(rho_i + 1) = r + 1, so a hash within r
of the query is within rho_i of it on at least one band. Per band, the hashes are sorted by band
value and a direct-address table of 2**width + 1 offsets says where each value's run starts: a
probe is two array reads, not a binary search, and every probe of every query variant is one
vectorised gather. The exact popcount of each probed run's hashes removes the false positives.

When the probed runs would hold more hashes than a pass over the whole array costs (clustered
lists: a query in a crowded region), the index counts them first (a cheap sum of run lengths)
and scans instead. Either way the answer is the same set: every position within the radius of
at least one query, each once, ascending.

Everything is a few flat arrays per band (offsets, positions, hashes in band order), so an index
could live in shared memory or a memory-mapped file.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any, overload

import numpy as np
import numpy.typing as npt

Hashes = npt.NDArray[np.uint64]
Positions = npt.NDArray[np.intp]
Int64s = npt.NDArray[np.int64]
#: What a probe reads (HammingIndex.plan): bits, band starts, tables, mask starts, masks.
Plan = tuple[Int64s, Int64s, Int64s, Int64s, Int64s]

HASH_BITS = 64
#: A probed-run hash costs about this share of testing one hash against every query by a scan
#: (bench/lookup.py --in-process: a run's hash is gathered through an index, a scanned one is
#: read in order): the index scans when its runs hold more than this share of N x queries.
SCAN_SHARE = 0.06
#: The widest band: its table has 2**width + 1 offsets.
MAX_WIDTH = 24
#: Hashes per step of a scan: small enough that each step's arrays stay in the CPU's cache.
SCAN_CHUNK = 1 << 15
#: Above one found position per this many hashes, duplicates go by a mark per position.
_MARK_SHARE = 16


def bands_for(size: int, order: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Bands for ``size`` hashes: consecutive chunks of the bit ``order``, 8 bits each below
    4096 hashes, else 16. Bands of about log2(size) bits would keep a run of a uniform list to a
    few hashes, but from a few million entries 3 bands of 21-22 bits cost 11 times the probes of
    4 bands of 16 for a radius of 12 (12,000 a variant), each a read of a 16 MB table that
    misses the cache after other work: at 1e7 that cost more than the longer runs of 16-bit
    bands, which are read in order (bench/lookup.py --in-process; docs/performance.md)."""
    count = 8 if size < 4096 else 4
    widths = [HASH_BITS // count + (i < HASH_BITS % count) for i in range(count)]
    starts = np.cumsum([0, *widths])
    return tuple(tuple(order[starts[i] : starts[i + 1]]) for i in range(count))


def band_radii(count: int, radius: int) -> tuple[int, ...]:
    """Per-band radii, as even as possible, with sum(rho + 1) = radius + 1."""
    base, extra = divmod(radius + 1, count)
    return tuple(base if i < extra else base - 1 for i in range(count))


class HammingIndex:
    """Positions of the hashes within a radius of any of a few queries: exact, each once.

    Three flat arrays hold every band: ``hashes`` and ``order`` (band after band, each band's
    N hashes sorted by band value, with their positions) and ``offsets`` (band after band, the
    start of each band value's run in those arrays, and one end)."""

    def __init__(
        self,
        hashes: Hashes,
        bands: tuple[tuple[int, ...], ...],
        scan_share: float | None = None,
    ) -> None:
        every = sorted(bit for band in bands for bit in band)
        if every != list(range(HASH_BITS)) or max(len(band) for band in bands) > MAX_WIDTH:
            raise ValueError(f"bands must cut the 64 bits into bands of 1 to {MAX_WIDTH} bits")
        self.source = np.ascontiguousarray(hashes, dtype=np.uint64)
        self.bands = bands
        self.scan_share = SCAN_SHARE if scan_share is None else scan_share
        size = len(self.source)
        self._type = np.dtype(np.int32 if len(bands) * size < 2**31 else np.int64)
        self._tables = np.cumsum([0] + [2 ** len(bits) + 1 for bits in bands])
        self.offsets = np.empty(int(self._tables[-1]), dtype=self._type)
        self.order = np.empty(len(bands) * size, dtype=self._type)
        self.hashes = np.empty(len(bands) * size, dtype=np.uint64)
        for i, bits in enumerate(bands):
            values = band_values(self.source, bits)
            order = _stable_order(values, len(bits))
            table = self.offsets[self._tables[i] : self._tables[i + 1]]
            table[0] = i * size
            table[1:] = i * size + np.cumsum(np.bincount(values, minlength=2 ** len(bits)))
            self.order[i * size : (i + 1) * size] = order
            self.hashes[i * size : (i + 1) * size] = self.source[order]

    def __len__(self) -> int:
        return len(self.source)

    def nbytes(self) -> int:
        """Bytes of the index beyond the hashes themselves."""
        return self.offsets.nbytes + self.order.nbytes + self.hashes.nbytes

    @overload
    def near(self, queries: Hashes, radius: int) -> Positions: ...
    @overload
    def near(self, queries: Hashes, radius: int, give_up_above: float) -> Positions | None: ...
    def near(
        self, queries: Hashes, radius: int, give_up_above: float | None = None
    ) -> Positions | None:
        """Every position within ``radius`` of at least one query, each once, ascending; or
        None if ``give_up_above`` is given and the lookup would test more hashes than that, or
        scan (the caller has a cheaper way)."""
        queries = np.asarray(queries, dtype=np.uint64)
        if not len(self.source) or not len(queries):
            return np.empty(0, dtype=np.intp)
        runs = self._runs(queries, radius)
        if give_up_above is not None and (runs is None or runs[2] > give_up_above):
            return None
        if runs is None:
            return self.scan(queries, radius)
        starts, lengths, total = runs
        index_type = self._type if total < 2**31 else np.dtype(np.int64)
        # Query by query (each query's probes are one block of runs), so that each step's
        # arrays stay in the CPU's cache.
        per_query = len(starts) // len(queries)
        found = [
            self._near_one(
                query,
                starts[j * per_query : (j + 1) * per_query].astype(index_type, copy=False),
                lengths[j * per_query : (j + 1) * per_query].astype(index_type, copy=False),
                radius,
            )
            for j, query in enumerate(queries)
        ]
        return _union(np.concatenate(found), len(self.source))

    def _near_one(
        self, query: np.uint64, starts: npt.NDArray[Any], lengths: npt.NDArray[Any], radius: int
    ) -> npt.NDArray[Any]:
        """Positions within ``radius`` of ``query`` in the runs it probed."""
        ends = np.cumsum(lengths, dtype=starts.dtype)
        total = int(ends[-1]) if len(ends) else 0
        if not total:
            return np.empty(0, dtype=self.order.dtype)
        # Every index in [start, start + length) of every run, without a Python loop.
        index = np.repeat(starts - ends + lengths, lengths)
        index += np.arange(total, dtype=index.dtype)
        tested = self.hashes[index]
        tested ^= query
        near: npt.NDArray[Any] = self.order[index[popcount(tested) <= radius]]
        return near

    def expected_candidates(self, queries: int, radius: int) -> float:
        """How many hashes a lookup of ``queries`` queries tests on average if the hashes were
        uniform: the probed band values times the hashes per band value."""
        radii = band_radii(len(self.bands), radius)
        per_query = sum(
            _ball_size(len(bits), rho) * len(self.source) / float(2 ** len(bits))
            for bits, rho in zip(self.bands, radii, strict=True)
        )
        return queries * per_query

    def probes(self, queries: int, radius: int) -> int:
        """How many runs a lookup of ``queries`` queries probes (band values it looks up)."""
        radii = band_radii(len(self.bands), radius)
        return queries * sum(
            _ball_size(len(bits), rho) for bits, rho in zip(self.bands, radii, strict=True)
        )

    def candidates(self, queries: Hashes, radius: int) -> int:
        """How many hashes a lookup tests: the probed runs' hashes (with repeats), or every hash
        once per query when it scans."""
        queries = np.asarray(queries, dtype=np.uint64)
        if not len(self.source) or not len(queries):
            return 0
        runs = self._runs(queries, radius)
        return len(self.source) * len(queries) if runs is None else runs[2]

    def scans(self, queries: Hashes, radius: int) -> bool:
        """Whether :meth:`near` scans every hash for these queries (instead of probing)."""
        queries = np.asarray(queries, dtype=np.uint64)
        if not len(self.source) or not len(queries):
            return False
        return self._runs(queries, radius) is None

    def plan(self, radius: int) -> Plan:
        """What a probe for ``radius`` reads, as flat arrays for a compiled loop
        (guard.rank_compiled): the bands' bit positions and where each band's start in them,
        where each band's table starts in :attr:`offsets`, and the XORs each band probes with
        (band i: ``masks[mask_starts[i]:mask_starts[i + 1]]``, none for a skipped band)."""
        return _plan(self.bands, radius)

    def scan(self, queries: Hashes, radius: int) -> Positions:
        """:meth:`near` by testing every hash against every query, a cache-sized chunk at a
        time (the nearest query's distance per hash, then one comparison)."""
        queries = np.asarray(queries, dtype=np.uint64)
        nearest = np.empty(len(self.source), dtype=np.uint8)
        step = np.empty(min(SCAN_CHUNK, len(self.source)), dtype=np.uint64)
        counts = np.empty(len(step), dtype=np.uint8)
        for begin in range(0, len(self.source), SCAN_CHUNK):
            chunk = self.source[begin : begin + SCAN_CHUNK]
            size = len(chunk)
            xor, count, best = step[:size], counts[:size], nearest[begin : begin + size]
            np.bitwise_xor(chunk, queries[0], out=xor)
            _popcount_into(xor, best)
            for query in queries[1:]:
                np.bitwise_xor(chunk, query, out=xor)
                _popcount_into(xor, count)
                np.minimum(best, count, out=best)
        return np.flatnonzero(nearest <= radius)

    def _runs(
        self, queries: Hashes, radius: int
    ) -> tuple[npt.NDArray[Any], npt.NDArray[Any], int] | None:
        """The probed runs' starts and lengths (query after query, band after band within a
        query) and their total length, or None if a scan costs less."""
        radii = band_radii(len(self.bands), radius)
        budget = self.scan_share * len(self.source) * len(queries)
        sizes = [_ball_size(len(bits), rho) for bits, rho in zip(self.bands, radii, strict=True)]
        if sum(sizes) * len(queries) > budget:
            return None
        probed = np.concatenate(
            [
                (band_values(queries, bits)[:, None] ^ _masks(len(bits), rho)[None, :])
                + self._tables[i]
                for i, (bits, rho) in enumerate(zip(self.bands, radii, strict=True))
                if rho >= 0
            ],
            axis=1,
        ).ravel()
        starts = self.offsets[probed]
        lengths = self.offsets[probed + 1] - starts
        total = int(lengths.sum(dtype=np.int64))
        return None if total > budget else (starts, lengths, total)


@lru_cache(maxsize=64)
def _plan(bands: tuple[tuple[int, ...], ...], radius: int) -> Plan:
    widths = [len(bits) for bits in bands]
    masks = [
        _masks(width, rho) if rho >= 0 else np.empty(0, dtype=np.intp)
        for width, rho in zip(widths, band_radii(len(bands), radius), strict=True)
    ]
    plan: Plan = (
        np.array([bit for bits in bands for bit in bits], dtype=np.int64),
        np.cumsum([0, *widths]).astype(np.int64),
        np.cumsum([0] + [2**width + 1 for width in widths])[:-1].astype(np.int64),
        np.cumsum([0] + [len(m) for m in masks]).astype(np.int64),
        np.concatenate(masks).astype(np.int64),
    )
    for array in plan:  # shared by every caller: never written
        array.flags.writeable = False
    return plan


def _stable_order(values: npt.NDArray[np.uint32], width: int) -> npt.NDArray[np.intp]:
    """Positions sorted by value, equal values in position order: numpy's stable sort of 16-bit
    keys is a radix sort, so wider values go by their low 16 bits, then their high bits."""
    if width <= 16:
        return np.argsort(values.astype(np.uint16), kind="stable")
    order = np.argsort((values & 0xFFFF).astype(np.uint16), kind="stable")
    high = (values[order] >> 16).astype(np.uint16)
    return order[np.argsort(high, kind="stable")]


def popcount(values: Hashes) -> npt.NDArray[np.uint8]:
    """Set bits per element (numpy >= 2 has it built in; older numpy counts bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)  # type: ignore[no-any-return]


def _popcount_into(values: Hashes, out: npt.NDArray[np.uint8]) -> None:
    if hasattr(np, "bitwise_count"):
        np.bitwise_count(values, out=out)
    else:
        out[:] = popcount(values)


_BYTE_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def _union(found: npt.NDArray[Any], size: int) -> Positions:
    """The positions in ``found``, each once, ascending (a hash near several queries, or near
    one on several bands, is found more than once)."""
    if len(found) * _MARK_SHARE > size:
        marked = np.zeros(size, dtype=bool)
        marked[found] = True
        return np.flatnonzero(marked)
    found = np.sort(found)
    first = np.ones(len(found), dtype=bool)
    first[1:] = found[1:] != found[:-1]
    return found[first].astype(np.intp)


def band_values(hashes: Hashes, bits: tuple[int, ...]) -> npt.NDArray[np.uint32]:
    """Each hash's value on a band: its ``bits`` (0 = most significant) in order, first bit
    most significant. By 16-bit word through lookup tables (a gather per word the band uses,
    not a pass per bit)."""
    words = np.ascontiguousarray(hashes, dtype="<u8").view("<u2").reshape(-1, 4)
    values = np.zeros(len(hashes), dtype=np.uint32)
    for word, table in enumerate(_word_tables(bits)):
        if table is not None:
            values |= table[words[:, word]]
    return values


@lru_cache(maxsize=16)
def _word_tables(bits: tuple[int, ...]) -> tuple[npt.NDArray[np.uint32] | None, ...]:
    """Per 16-bit word of the hash (least significant first): what each word value contributes
    to the band value (None where the band has no bit in that word)."""
    tables: list[npt.NDArray[np.uint32] | None] = [None] * (HASH_BITS // 16)
    every = np.arange(1 << 16, dtype=np.uint32)
    for k, bit in enumerate(bits):
        word, at = divmod(HASH_BITS - 1 - bit, 16)  # bit 0 is the hash's most significant
        table = tables[word]
        if table is None:
            table = tables[word] = np.zeros(1 << 16, dtype=np.uint32)
        table |= ((every >> np.uint32(at)) & np.uint32(1)) << np.uint32(len(bits) - 1 - k)
    return tuple(tables)


@lru_cache(maxsize=64)
def _masks(width: int, rho: int) -> npt.NDArray[np.intp]:
    """Every ``width``-bit mask with at most ``rho`` bits set (the XORs a band probe tries)."""
    masks = [
        sum(1 << p for p in positions)
        for flipped in range(min(rho, width) + 1)
        for positions in itertools.combinations(range(width), flipped)
    ]
    return np.array(masks, dtype=np.intp)


@lru_cache(maxsize=256)
def _ball_size(width: int, rho: int) -> int:
    """How many band values are within ``rho`` of one (0 for a skipped band)."""
    from math import comb

    return sum(comb(width, k) for k in range(min(rho, width) + 1)) if rho >= 0 else 0
