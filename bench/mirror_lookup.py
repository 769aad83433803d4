"""The middleware's real query in process: ``Mirror.rank`` against a numpy linear scan, no Redis.

The query is what the middleware asks of the worker-local mirror with the default policy: flag
radius 12 over the 8 flips/rotations of one upload, confirm radius 12, the best match only
(``limit=1``). The Redis round trip that follows (version check and the best entry's record) is
left out: bench/lookup.py --cluster times the whole lookup. Each query runs on both in turn (the
order alternating), so a busy moment of the shared machine falls on both alike; every answer of
the index (its candidate positions) is compared with the scan's.

The numpy scan is the named baseline: the list's aHashes in one array, XOR + popcount against
each of the 8 variants, OR'd (what ``Mirror`` falls back to when probing would cost more).

``rank`` is timed on both of its paths in turn: the compiled loops of guard.rank_compiled (what a
worker runs when numba, the ``fast`` extra, is installed; the table names it) and numpy (without
it). "exact" means that for every query the candidate search found what the scan found and both
paths returned the same best match.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from guard import mirror as mirror_module
from guard import rank_compiled
from guard.bands import default_layout
from guard.hashing import TRANSFORMS, permute
from guard.mirror import Mirror, Ranked, popcount

#: The default policy's query (guard.config.ListPolicy: flag radius 12, confirm radius 12).
RADIUS, CONFIRM_RADIUS = 12, 12


@dataclass
class InProcessRow:
    size: int
    queries: int
    build_s: float
    index_bytes_per_entry: float
    rss_mb: float
    ranked_by: str  # the path a worker takes here: compiled (numba) or numpy
    rank_p50_ms: float
    rank_p99_ms: float
    numpy_rank_p50_ms: float
    numpy_rank_p99_ms: float
    near_p50_ms: float
    near_p99_ms: float
    scan_p50_ms: float
    scan_p99_ms: float
    candidates_median: float
    matches_median: float
    matches_max: int
    exact: bool


def variants(ahash: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The 8 dihedral variants of a query's aHash (exact bit permutations), each with a random
    pHash (the pHash only ranks the candidates found; it does not change which are found)."""
    phashes = rng.integers(0, 2**64, len(TRANSFORMS), dtype=np.uint64)
    return [(permute(ahash, t), int(p)) for t, p in zip(TRANSFORMS, phashes, strict=True)]


def scan(ahashes: np.ndarray, queries: list[int], radius: int) -> np.ndarray:
    """Positions within ``radius`` of any query: the linear scan, one pass per variant."""
    keep = np.zeros(len(ahashes), dtype=bool)
    for query in queries:
        keep |= popcount(ahashes ^ np.uint64(query)) <= radius
    return np.flatnonzero(keep)


def _p(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1e3


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ranked_by() -> str:
    """The path ``Mirror.rank`` takes for a lookup with a limit here."""
    if mirror_module.COMPILED:
        import numba

        return f"compiled (numba {numba.__version__})"
    return "numpy"


def _best(ranked: Ranked) -> list[tuple[int, ...]]:
    return [
        (int(p), int(q), int(d), int(pd), bool(c))
        for p, q, d, pd, c in zip(
            ranked.positions,
            ranked.query,
            ranked.distance,
            ranked.phash_distance,
            ranked.confirmed,
            strict=True,
        )
    ]


def measure_in_process(
    stored: np.ndarray, base_queries: list[int], rng: np.random.Generator
) -> InProcessRow:
    """Build a mirror of ``stored`` (random pHashes), then time the real query per base query."""
    phashes = rng.integers(0, 2**64, len(stored), dtype=np.uint64)
    start = time.perf_counter()
    rank_compiled.warm(wait=True)  # once per process (compiled, or from numba's cache): no build
    if rank_compiled.AVAILABLE:
        progress(f"compiled loops ready in {time.perf_counter() - start:.2f} s")
    gc.collect()
    start = time.perf_counter()
    mirror = Mirror(stored, phashes, np.ones(len(stored), bool), default_layout(4), version=1)
    build = time.perf_counter() - start
    queries = [variants(q, rng) for q in base_queries]
    default = mirror_module.COMPILED
    for pairs in queries[:5]:  # warm: caches, lazily built tables
        mirror.rank(pairs, RADIUS, CONFIRM_RADIUS, 1)
    rank_t: list[float] = []
    numpy_t: list[float] = []
    near_t: list[float] = []
    scan_t: list[float] = []
    candidates, matches = [], []
    exact = True
    for turn, pairs in enumerate(queries):
        wanted = [a for a, _ in pairs]
        steps = ("rank", "numpy", "near", "scan")
        for step in steps if turn % 2 == 0 else steps[::-1]:
            start = time.perf_counter()
            if step == "rank":
                best = mirror.rank(pairs, RADIUS, CONFIRM_RADIUS, 1)
                rank_t.append(time.perf_counter() - start)
            elif step == "numpy":
                mirror_module.COMPILED = False
                try:
                    start = time.perf_counter()
                    numpy_best = mirror.rank(pairs, RADIUS, CONFIRM_RADIUS, 1)
                    numpy_t.append(time.perf_counter() - start)
                finally:
                    mirror_module.COMPILED = default
            elif step == "near":
                found = mirror._near_positions(wanted, RADIUS)
                near_t.append(time.perf_counter() - start)
            else:
                truth = scan(mirror.ahashes, wanted, RADIUS)
                scan_t.append(time.perf_counter() - start)
        exact = exact and np.array_equal(np.sort(found), truth)
        exact = exact and _best(best) == _best(numpy_best)
        candidates.append(mirror.candidates(wanted, RADIUS))
        matches.append(len(truth))
    return InProcessRow(
        size=len(stored),
        queries=len(queries),
        build_s=build,
        index_bytes_per_entry=mirror.index_bytes() / max(1, len(stored)),
        rss_mb=_rss_mb(),
        ranked_by=ranked_by(),
        rank_p50_ms=statistics.median(rank_t) * 1e3,
        rank_p99_ms=_p(rank_t, 0.99),
        numpy_rank_p50_ms=statistics.median(numpy_t) * 1e3,
        numpy_rank_p99_ms=_p(numpy_t, 0.99),
        near_p50_ms=statistics.median(near_t) * 1e3,
        near_p99_ms=_p(near_t, 0.99),
        scan_p50_ms=statistics.median(scan_t) * 1e3,
        scan_p99_ms=_p(scan_t, 0.99),
        candidates_median=statistics.median(candidates),
        matches_median=statistics.median(matches),
        matches_max=max(matches),
        exact=exact,
    )


def in_process_table(rows: list[InProcessRow]) -> str:
    lines = [
        "| N | ranked by | guard mirror rank p50 / p99 ms | numpy rank p50 / p99 ms "
        "| numpy candidate search p50 / p99 ms "
        "| numpy scan p50 / p99 ms | scan / mirror p50, p99 | candidates (median) "
        "| matches median / max | exact | index B/entry | build s | max RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} | {r.ranked_by} | {r.rank_p50_ms:.3f} / {r.rank_p99_ms:.3f} "
            f"| {r.numpy_rank_p50_ms:.3f} / {r.numpy_rank_p99_ms:.3f} "
            f"| {r.near_p50_ms:.3f} / {r.near_p99_ms:.3f} "
            f"| {r.scan_p50_ms:.3f} / {r.scan_p99_ms:.3f} "
            f"| {r.scan_p50_ms / r.rank_p50_ms:.1f}x, {r.scan_p99_ms / r.rank_p99_ms:.1f}x "
            f"| {r.candidates_median:,.0f} | {r.matches_median:,.0f} / {r.matches_max:,} "
            f"| {'yes' if r.exact else 'NO'} | {r.index_bytes_per_entry:.1f} "
            f"| {r.build_s:.2f} | {r.rss_mb:,.0f} |"
        )
    return "\n".join(lines)


def in_process_targets(rows: list[InProcessRow]) -> list[str]:
    """The issue's in-process targets, against the rows that have their size."""
    lines = [f"(guard mirror rank: {rows[0].ranked_by})"] if rows else []
    for r in rows:
        if r.size == 1_000_000:
            lines.append(_target("1e6: p50 <= 1 ms", r.rank_p50_ms <= 1.0, r.rank_p50_ms))
            lines.append(_target("1e6: p99 <= 3 ms", r.rank_p99_ms <= 3.0, r.rank_p99_ms))
        if r.size == 10_000_000:
            lines.append(_target("1e7: p99 <= 10 ms", r.rank_p99_ms <= 10.0, r.rank_p99_ms))
            ratio = r.scan_p50_ms / r.rank_p50_ms
            lines.append(
                f"- 1e7: >= 5x the numpy scan (p50): {ratio:.1f}x -> "
                f"{'MET' if ratio >= 5 else 'MISSED'}"
            )
    return lines


def _target(name: str, met: bool, value: float) -> str:
    return f"- {name}: {value:.3f} ms -> {'MET' if met else 'MISSED'}"


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)
