"""A worker-local copy of one list's entries, band-indexed in numpy: pure, no Redis.

Redis stays the source of truth. The store fills a :class:`Mirror` from the list's packed snapshot
(``guard:{<list>}:snap``: per entry, its aHash and pHash as 8 big-endian bytes each and a byte
saying whether it has a pHash) together with the list's incarnation (a random id written when the
list is created) and the version counter it belongs to, and trusts it only while both still have
those values: a list dropped or flushed and loaded again restarts its version at 1, but not its
incarnation. A query then costs one round trip (the version check, with the
records of the best matches) instead of a SUNION over hundreds of buckets, and the pHash
confirmation of every candidate happens here, vectorised, however many near-duplicates a list
holds.

The search is multi-index hashing (guard.mih), the pigeonhole argument of the Redis index
(guard.bands), but with bands of its own: built from the snapshot, it need not follow the list's
Redis layout, so its bands are as wide as the list is large (a direct-address table per band
instead of a set key per bucket), every query variant's probes go in one vectorised gather, and
it scans instead when the probed runs would hold more than a scan reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from guard import rank_compiled
from guard.bands import DEFAULT_PERMUTATIONS, HASH_BITS, BandLayout
from guard.mih import HammingIndex, bands_for

Hashes = npt.NDArray[np.uint64]

#: One entry in the snapshot: aHash, pHash (zeros if none), 1 if it has a pHash else 0.
RECORD = np.dtype([("ahash", ">u8"), ("phash", ">u8"), ("has_phash", "u1")])
RECORD_SIZE = RECORD.itemsize  # 17


def snapshot_record(ahash: int, phash: int | None) -> bytes:
    """An entry as the snapshot stores it (the add script appends these)."""
    return (
        ahash.to_bytes(8, "big")
        + (phash or 0).to_bytes(8, "big")
        + (b"\x00" if phash is None else b"\x01")
    )


@dataclass(frozen=True)
class Ranked:
    """Entries within the radius of a query, best first: confirmed, then without a pHash, then
    contradicted by their pHash; within each, nearest in aHash, then in pHash (the order of
    :meth:`guard.store.Store.lookup`). Parallel arrays."""

    positions: npt.NDArray[np.intp]  # entries of the mirror
    query: npt.NDArray[np.intp]  # the query (variant) that matches each best
    distance: npt.NDArray[np.uint8]
    phash_distance: npt.NDArray[np.uint8]  # 0 for entries without a pHash
    confirmed: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.positions)

    def subset(self, which: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Ranked:
        """The rows ``which`` selects, in its order."""
        return Ranked(
            positions=self.positions[which],
            query=self.query[which],
            distance=self.distance[which],
            phash_distance=self.phash_distance[which],
            confirmed=self.confirmed[which],
        )

    def then(self, other: Ranked) -> Ranked:
        """These rows, then ``other``'s."""
        return Ranked(
            positions=np.concatenate([self.positions, other.positions]),
            query=np.concatenate([self.query, other.query]),
            distance=np.concatenate([self.distance, other.distance]),
            phash_distance=np.concatenate([self.phash_distance, other.phash_distance]),
            confirmed=np.concatenate([self.confirmed, other.confirmed]),
        )


#: The bit order the search's bands are cut from (the decorrelating order of guard.bands).
SEARCH_BIT_ORDER = DEFAULT_PERMUTATIONS[4]


#: Confirmation tiers, best first (the order of a lookup's results): the pHash confirms the
#: match, the entry has no pHash (imported from another tool), or its pHash is further.
CONFIRMED, UNCONFIRMABLE, CONTRADICTED = 0, 1, 2
# Mirror.rank's 16-bit score: tier << 14 | aHash distance << 7 | pHash distance.
_DISTANCE_BITS = np.uint16(0x7F << 7)
_UNCONFIRMABLE_BITS = np.uint16(UNCONFIRMABLE << 14)
_FAR = np.uint16(0xFFFF)  # no query within the radius

#: Rank a lookup with a ``limit`` in guard.rank_compiled's loops (when numba is installed: the
#: ``fast`` extra) instead of numpy; both give the same answers.
COMPILED = rank_compiled.AVAILABLE
#: Mirrors of at least this many entries start compiling the loops (see Mirror._start_compiling).
COMPILE_FROM = 10_000
#: The compiled loops' widest ``limit`` (each better match costs up to ``limit`` steps to
#: place); a wider one ranks in numpy.
COMPILED_LIMIT = 64
#: Mirrors of at least this many entries, every one with a pHash, index their pHashes too (see
#: Mirror.rank); below it, a crowded query costs little anyway.
CONFIRM_INDEX_FROM = 250_000
#: Mirror.rank asks the pHash index when the aHash probes would test more hashes than the pHash
#: probes cost: the hashes they test on average, plus PROBE_COST per probe (a random read of a
#: run's offsets). Fitted on realistic lists of 1e6 and 1e7 entries (bench/lookup.py
#: --in-process): 4-10 gave the same p99 at 1e6, 8-10 the lowest at 1e7.
PROBE_COST = 10.0
#: A scale on that bound (0: every query that probes anything goes by the pHash index).
ROUTE_FACTOR = 1.0
#: The radii at which a crowded query looks for its nearest entries on the aHash index, before
#: its own radius (see Mirror._rank_by_confirmation).
NEAREST_RADII = (1, 3, 6)


def popcount(values: Hashes) -> npt.NDArray[np.uint8]:
    """Set bits per element (numpy >= 2 has it built in; older numpy counts bytes)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)  # type: ignore[no-any-return]


_BYTE_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


class Mirror:
    """The entries of one list at one (incarnation, version), with a sorted aHash index per
    band."""

    def __init__(
        self,
        ahashes: Hashes,
        phashes: Hashes,
        has_phash: npt.NDArray[np.bool_],
        layout: BandLayout,
        version: int,
        incarnation: str = "",
    ) -> None:
        self.ahashes = np.ascontiguousarray(ahashes, dtype=np.uint64)
        self.phashes = np.ascontiguousarray(phashes, dtype=np.uint64)
        self.has_phash = np.ascontiguousarray(has_phash, dtype=bool)
        self._all_phash = bool(self.has_phash.all())
        self.layout = layout
        self.version = version
        self.incarnation = incarnation  # "" for a list created before incarnations existed
        # The search's own bands (not the Redis layout's): see guard.mih.
        self._index = HammingIndex(self.ahashes, bands_for(len(self.ahashes), SEARCH_BIT_ORDER))
        # A second index, of the pHashes, for crowded queries: see rank.
        self._confirm_index = (
            HammingIndex(self.phashes, bands_for(len(self.phashes), SEARCH_BIT_ORDER))
            if self._all_phash and len(self.phashes) >= CONFIRM_INDEX_FROM
            else None
        )
        self._start_compiling()

    def __setstate__(self, state: dict[str, object]) -> None:
        # A mirror mapped from a shared file (guard.store.shared_mirrors) is built elsewhere.
        self.__dict__.update(state)
        self._start_compiling()

    def _start_compiling(self) -> None:
        """A big list's mirror starts compiling the ranking loops, in the background (numpy
        ranks until they are ready). A small one does not: numpy ranks it about as fast, and a
        short-lived process (a CLI command on a small list) would spend its CPU compiling."""
        if len(self.ahashes) >= COMPILE_FROM:
            rank_compiled.warm()

    @classmethod
    def of_hashes(cls, ahashes: Hashes, layout: BandLayout, version: int = 0) -> Mirror:
        """A mirror of bare aHashes (entries without pHashes)."""
        ahashes = np.asarray(ahashes, dtype=np.uint64)
        return cls(ahashes, np.zeros_like(ahashes), np.zeros(len(ahashes), bool), layout, version)

    @classmethod
    def from_snapshot(
        cls, snapshot: bytes, layout: BandLayout, version: int, incarnation: str = ""
    ) -> Mirror:
        """A mirror of a packed snapshot (:data:`RECORD` after :data:`RECORD` )."""
        if len(snapshot) % RECORD_SIZE:
            raise ValueError(
                f"a snapshot holds whole {RECORD_SIZE}-byte records, got {len(snapshot)} bytes"
            )
        records = np.frombuffer(snapshot, dtype=RECORD)
        return cls(
            records["ahash"].astype(np.uint64),
            records["phash"].astype(np.uint64),
            records["has_phash"] == 1,
            layout,
            version,
            incarnation,
        )

    def __len__(self) -> int:
        return len(self.ahashes)

    def index_bytes(self) -> int:
        """Bytes the search indexes take beyond the entries' own arrays."""
        confirm = self._confirm_index.nbytes() if self._confirm_index is not None else 0
        return self._index.nbytes() + confirm

    def rank(
        self,
        queries: list[tuple[int, int]],
        radius: int,
        confirm_radius: int,
        limit: int | None = None,
    ) -> Ranked:
        """Every entry within ``radius`` aHash bits of a query's aHash, with its best query,
        best first (only the first ``limit`` if given).

        ``queries`` are (aHash, pHash) pairs (the variants of the uploaded frames). An entry's
        best query confirms it if possible (pHash within ``confirm_radius``), then is nearest in
        aHash, then in pHash. Entries rank by confirmation tier first: confirmed, then
        those without a pHash (nothing can confirm them), then those their pHash contradicts.

        A query in a crowded region of the list (a simple layout: a tenth of a big list can lie
        within 12 aHash bits of it) would test a large share of the entries. With a ``limit``,
        such a query goes by the pHash index instead (:meth:`_rank_by_confirmation`): the
        same answer, from far fewer entries.
        """
        bound = self._route_bound(len(queries), radius, confirm_radius, limit)
        ranked = self._rank_plain(queries, radius, confirm_radius, limit, bound)
        if ranked is None:
            assert limit is not None and bound is not None  # (a bound is only set with a limit)
            return self._rank_by_confirmation(queries, radius, confirm_radius, limit, bound)
        return ranked

    def _route_bound(
        self, queries: int, radius: int, confirm_radius: int, limit: int | None
    ) -> float | None:
        """How many aHashes a query may test before the pHash index answers it instead (None:
        it cannot)."""
        if (
            self._confirm_index is None
            or limit is None
            or limit <= 0
            or min(radius, confirm_radius) < 0
            or not 0 < queries < rank_compiled.MAX_QUERIES
        ):
            return None
        index = self._confirm_index
        cost = index.expected_candidates(queries, confirm_radius)
        return ROUTE_FACTOR * (cost + PROBE_COST * index.probes(queries, confirm_radius))

    def _rank_plain(
        self,
        queries: list[tuple[int, int]],
        radius: int,
        confirm_radius: int,
        limit: int | None,
        give_up_above: float | None = None,
    ) -> Ranked | None:
        """:meth:`rank` by the aHash index alone; None if it would test more than
        ``give_up_above`` aHashes."""
        if (
            COMPILED
            and rank_compiled.ready()
            and radius >= 0
            and limit is not None
            and 0 < limit <= COMPILED_LIMIT
            and 0 < len(queries) < rank_compiled.MAX_QUERIES
        ):
            return self._rank_compiled(queries, radius, confirm_radius, limit, give_up_above)
        wanted_a = np.array([a for a, _ in queries], dtype=np.uint64)
        if give_up_above is None:
            positions = self._index.near(wanted_a, radius)
        else:
            near = self._index.near(wanted_a, radius, give_up_above)
            if near is None:
                return None
            positions = near
        if not len(positions):  # nothing near (or no query: a flat upload has no hash to ask)
            nothing = np.empty(0, dtype=np.intp)
            return Ranked(
                nothing,
                nothing,
                np.empty(0, dtype=np.uint8),
                np.empty(0, dtype=np.uint8),
                np.empty(0, dtype=bool),
            )
        wanted_p = np.array([p for _, p in queries], dtype=np.uint64)
        has_phash = self.has_phash[positions]
        # One 16-bit score per (query, entry), smaller is better: tier (bits 14-15), aHash
        # distance (bits 7-13), pHash distance (bits 0-6); a row per query, so that the best
        # per entry is a reduction over a few contiguous rows. Crowded queries (hundreds of
        # thousands of matches) are bound by memory traffic: no wider arrays than this.
        distance = popcount(wanted_a[:, None] ^ self.ahashes[positions][None, :])
        phash_distance = popcount(wanted_p[:, None] ^ self.phashes[positions][None, :])
        score = distance.astype(np.uint16) << 7
        score |= phash_distance
        score |= (phash_distance > confirm_radius).view(np.uint8).astype(np.uint16) << 15
        if not has_phash.all():  # entries imported without a pHash: tier 1, pHash distance 0
            score[:, ~has_phash] = (score[:, ~has_phash] & _DISTANCE_BITS) | _UNCONFIRMABLE_BITS
        score |= (distance > radius).view(np.uint8).astype(np.uint16) * _FAR
        best_score = score.min(axis=0)
        if limit == 1:
            rows = np.array([np.argmin(best_score)])  # ties: the lowest position, as below
        elif limit is not None and limit < len(best_score):
            # The best few without sorting them all; ties go to the lowest position, as the
            # stable sort below would break them.
            cut = np.partition(best_score, limit - 1)[limit - 1]
            better = np.flatnonzero(best_score < cut)
            tied = np.flatnonzero(best_score == cut)[: limit - len(better)]
            rows = np.concatenate([better, tied])
        else:
            rows = np.arange(len(best_score))
        order = rows[np.argsort(best_score[rows], kind="stable")]
        chosen = best_score[order]
        return Ranked(
            positions=positions[order],
            query=np.argmin(score[:, order], axis=0),  # the first query with the best score
            distance=((chosen >> 7) & 0x7F).astype(np.uint8),
            phash_distance=(chosen & 0x7F).astype(np.uint8),
            confirmed=(chosen >> 14) == CONFIRMED,
        )

    def _rank_by_confirmation(
        self,
        queries: list[tuple[int, int]],
        radius: int,
        confirm_radius: int,
        limit: int,
        bound: float,
    ) -> Ranked:
        """:meth:`rank` for a crowded query, on a list whose entries all have a pHash.

        A crowded query has entries a few bits away: the aHash index finds them cheaply at a
        small radius. If the best ``limit`` there are confirmed, they are the answer (an entry
        further away ranks after them even if confirmed). Otherwise every confirmed entry is
        within ``confirm_radius`` of a query on its pHash, and the pHash index finds them all,
        testing about as many pHashes as an uncrowded query tests aHashes (pHashes of
        unrelated photos spread out where their aHashes crowd). If fewer than ``limit`` are
        confirmed, the rest are the nearest contradicted entries, from the aHash index at the
        smallest of those radii that has enough (the query's own radius only if none has). And
        if even the widest of them has too few entries, the search at the query's own radius
        alone gives the answer, as it would have without the pHash index."""
        radii = [*(r for r in NEAREST_RADII if r < radius), radius]
        answers: dict[tuple[int, int], Ranked] = {}

        def nearest(near_radius: int, size: int, bound: float | None = None) -> Ranked | None:
            if (near_radius, size) not in answers:
                near = self._rank_plain(queries, near_radius, confirm_radius, size, bound)
                if near is None:
                    return None
                answers[near_radius, size] = near
            return answers[near_radius, size]

        # Out to the first radius with ``limit`` entries, while searching it costs less than
        # the pHash index (``bound``: a crowd can be dense even a few bits away).
        for near_radius in radii[:-1]:
            near = nearest(near_radius, limit, bound)
            if near is None:
                break
            if len(near) == limit:
                if near.confirmed.all():
                    return near
                break
        else:
            # Too few entries near: the search at the query's own radius would follow the
            # pHash index anyway, and alone it gives the answer.
            near = nearest(radius, limit)
            assert near is not None  # (no bound)
            return near
        confirmed = self._confirmed(queries, radius, confirm_radius, limit)
        if len(confirmed) == limit:
            return confirmed
        wanted = limit - len(confirmed)
        for near_radius in radii:
            # Asking for len(confirmed) more leaves room for the confirmed ones found again.
            near = nearest(near_radius, limit + len(confirmed))
            assert near is not None  # (no bound)
            rest = near.subset(~np.isin(near.positions, confirmed.positions))
            if len(rest) >= wanted or near_radius == radius:
                # Entries without a confirmed query within ``radius`` rank after all confirmed
                # ones, and each by its nearest query: found within ``near_radius`` if it is.
                return confirmed.then(rest.subset(slice(0, wanted)))
        raise AssertionError("unreachable: the last radius is the query's own")

    def _confirmed(
        self, queries: list[tuple[int, int]], radius: int, confirm_radius: int, limit: int
    ) -> Ranked:
        """The best ``limit`` confirmed entries (a query within ``radius`` on the aHash and
        ``confirm_radius`` on the pHash), from the pHash index."""
        assert self._confirm_index is not None
        index = self._confirm_index
        wanted = np.array(queries, dtype=np.uint64).reshape(-1, 2)
        wanted_a, wanted_p = wanted[:, 0].copy(), wanted[:, 1].copy()
        if COMPILED and rank_compiled.ready():
            positions, which = rank_compiled.pairs_within(
                index.hashes,
                index.order,
                index.offsets,
                index.plan(confirm_radius),
                wanted_p,
                confirm_radius,
                self.ahashes,
                wanted_a,
                radius,
                split=len(self.ahashes) >= rank_compiled.SPLIT_FROM,
            )
        else:
            near = index.near(wanted_p, confirm_radius)
            both = (popcount(wanted_p[:, None] ^ self.phashes[near][None, :]) <= confirm_radius) & (
                popcount(wanted_a[:, None] ^ self.ahashes[near][None, :]) <= radius
            )
            which, at = np.nonzero(both)
            positions = near[at]
        distance = popcount(self.ahashes[positions] ^ wanted_a[which]).astype(np.int64)
        phash_distance = popcount(self.phashes[positions] ^ wanted_p[which]).astype(np.int64)
        # Each entry's best query (nearest in aHash, then pHash, then the first), then the best
        # entries (by the same, then the lowest position).
        key = (((distance << 7) | phash_distance) << 16) | which
        by_entry = np.lexsort((key, positions))
        positions, key = positions[by_entry], key[by_entry]
        first = np.ones(len(positions), dtype=bool)
        first[1:] = positions[1:] != positions[:-1]
        positions, key = positions[first], key[first]
        best = np.lexsort((positions, key >> 16))[:limit]
        score = key[best] >> 16
        return Ranked(
            positions=positions[best].astype(np.intp),
            query=(key[best] & 0xFFFF).astype(np.intp),
            distance=(score >> 7).astype(np.uint8),
            phash_distance=(score & 0x7F).astype(np.uint8),
            confirmed=np.ones(len(best), dtype=bool),
        )

    def _rank_compiled(
        self,
        queries: list[tuple[int, int]],
        radius: int,
        confirm_radius: int,
        limit: int,
        give_up_above: float | None,
    ) -> Ranked | None:
        """:meth:`rank` with a ``limit``, in guard.rank_compiled's loops (None: see
        :meth:`_rank_plain`)."""
        wanted = np.array(queries, dtype=np.uint64).reshape(-1, 2)
        wanted_a, wanted_p = wanted[:, 0].copy(), wanted[:, 1].copy()
        index = self._index
        plan = index.plan(radius)
        if give_up_above is not None and (
            rank_compiled.probed(index.offsets, plan, wanted_a) > give_up_above
        ):
            return None
        keys = np.empty(limit, dtype=np.uint64)
        which = np.empty(limit, dtype=np.int64)
        found, _ = rank_compiled.best(
            index.hashes,
            index.order,
            index.source,
            self.phashes,
            self.has_phash,
            self._all_phash,
            index.offsets,
            *plan,
            wanted_a,
            wanted_p,
            radius,
            confirm_radius,
            rank_compiled.SCAN_SHARE,
            keys,
            which,
            split=len(self.ahashes) >= rank_compiled.SPLIT_FROM,
        )
        chosen = keys[:found]
        score = chosen >> np.uint64(rank_compiled.POSITION_BITS)
        return Ranked(
            positions=(chosen & np.uint64((1 << rank_compiled.POSITION_BITS) - 1)).astype(np.intp),
            query=which[:found].astype(np.intp),
            distance=((score >> np.uint64(7)) & np.uint64(0x7F)).astype(np.uint8),
            phash_distance=(score & np.uint64(0x7F)).astype(np.uint8),
            confirmed=(score >> np.uint64(14)) == CONFIRMED,
        )

    def _near_positions(self, queries: list[int], radius: int) -> npt.NDArray[np.intp]:
        """Positions of the entries within ``radius`` of at least one query, each once,
        ascending (rank's ties go to the lowest position)."""
        return self._index.near(np.array(queries, dtype=np.uint64), radius)

    def candidates(self, queries: list[int], radius: int) -> int:
        """How many entries a lookup tests (probed run members with repeats, or every entry
        once per query when it scans)."""
        return self._index.candidates(np.array(queries, dtype=np.uint64), radius)

    def scans(self, queries: list[int], radius: int) -> bool:
        """Whether a lookup of ``queries`` scans every entry (the probes would cost more)."""
        return self._index.scans(np.array(queries, dtype=np.uint64), radius)


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
