"""The middleware's real query in process: ``Mirror.rank`` against a numpy linear scan, no Redis.

The query is what the middleware asks of the worker-local mirror with the default policy: flag
radius 12 over the 8 flips/rotations of one upload, confirm radius 12, the best match only
(``limit=1``). The Redis round trip that follows (version check and the best entry's record) is
left out: bench/lookup.py --cluster times the whole lookup.

guard's lookups are timed as a worker makes them: each right after the decode and hash of an
upload (a photo of the set), on the process's own mirror and on the same mirror mapped from a
shared file (what the workers of a server use: guard.store.shared_mirrors), the two in turn. The
baselines run in a second pass over the same queries, in turn (the order alternating, so that a
busy moment of the shared machine falls on all alike): the numpy scan, the named baseline (the
list's aHashes in one array, XOR + popcount against each of the 8 variants, OR'd: what
``Mirror`` falls back to when probing would cost more), the index's candidate search, and
``rank``'s numpy path (what a worker runs without numba, the ``fast`` extra; the table names the
path guard took). "exact" means that for every query the candidate search found what the scan
found, and both mirrors and the numpy path returned the best match a brute force over the scan's
matches picks.

The pHashes matter: a big mirror answers a crowded query by its pHash index (guard.mirror), so
random pHashes would flatter it. Entries and queries are crops of real photos hashed by guard's
rules from the photo's integral image (:func:`crops`), the pHash from 32x32 cell means.
"""

from __future__ import annotations

import gc
import itertools
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard import mirror as mirror_module
from guard import rank_compiled
from guard.bands import default_layout
from guard.hashing import (
    _DCT,
    TRANSFORMS,
    hash_bytes,
    is_low_information,
    permute,
    phash_of_coefficients,
)
from guard.hashing import transform_coefficients as transformed
from guard.mirror import Mirror, Ranked, popcount
from guard.store.shared_mirrors import SharedMirrors, default_directory

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
    shared_p50_ms: float | None  # the same mirror mapped from a shared file (None: no room)
    shared_p99_ms: float | None
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


#: Bit weights of a row-major 8x8 grid, first cell most significant (guard.hashing's order).
_WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)
#: Crops hashed at once (their 33x33 cell corners stay a few tens of MB).
_CROPS_AT_ONCE = 4096


@dataclass
class Crops:
    """aHashes and pHashes of random crops of one photo, and each crop's low-frequency DCT block
    (for its dihedral variants' pHashes)."""

    ahashes: np.ndarray
    phashes: np.ndarray
    coefficients: np.ndarray | None  # (count, 8, 8), when asked for


def _cell_means(integral: np.ndarray, boxes: tuple[np.ndarray, ...], cells: int) -> np.ndarray:
    """Mean grey level of each crop's ``cells`` x ``cells`` grid, from the integral image."""
    left, top, width, height = boxes
    steps = np.arange(cells + 1) / cells
    xs = left[:, None] + np.round(width[:, None] * steps).astype(int)
    ys = top[:, None] + np.round(height[:, None] * steps).astype(int)
    corner = integral[ys[:, :, None], xs[:, None, :]]
    sums = corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
    area = (ys[:, 1:] - ys[:, :-1])[:, :, None] * (xs[:, 1:] - xs[:, :-1])[:, None, :]
    return sums / area  # type: ignore[no-any-return]


def crops(
    integral: np.ndarray, count: int, rng: np.random.Generator, *, coefficients: bool = False
) -> Crops:
    """Random crops of a photo (scale 0.08-1 of the area, aspect 0.5-2, half mirrored), hashed
    from its integral image by guard's rules without the decode: aHash = 8x8 cell means
    (rounded) above their mean; pHash = the 8x8 lowest DCT-II coefficients of the 32x32 cell
    means above their median."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    area = rng.uniform(0.08, 1.0, count) * width * height
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), count))
    crop_w = np.clip(np.sqrt(area * aspect), 32, width).astype(int)
    crop_h = np.clip(np.sqrt(area / aspect), 32, height).astype(int)
    left = (rng.random(count) * (width - crop_w + 1)).astype(int)
    top = (rng.random(count) * (height - crop_h + 1)).astype(int)
    mirrored = rng.random(count) < 0.5
    ahashes = np.empty(count, dtype=np.uint64)
    phashes = np.empty(count, dtype=np.uint64)
    blocks = np.empty((count, 8, 8)) if coefficients else None
    for begin in range(0, count, _CROPS_AT_ONCE):
        part = slice(begin, begin + _CROPS_AT_ONCE)
        boxes = (left[part], top[part], crop_w[part], crop_h[part])
        coarse, detail = _cell_means(integral, boxes, 8), _cell_means(integral, boxes, 32)
        flip = mirrored[part]
        coarse[flip], detail[flip] = coarse[flip][:, :, ::-1], detail[flip][:, :, ::-1]
        coarse = np.rint(coarse).reshape(len(coarse), 64)
        ahashes[part] = ((coarse > coarse.mean(axis=1, keepdims=True)) * _WEIGHTS).sum(
            axis=1, dtype=np.uint64
        )
        block = (_DCT @ detail @ _DCT.T).reshape(len(detail), 64)
        above = block > np.median(block, axis=1, keepdims=True)
        phashes[part] = (above * _WEIGHTS).sum(axis=1, dtype=np.uint64)
        if blocks is not None:
            blocks[part] = block.reshape(-1, 8, 8)
    return Crops(ahashes, phashes, blocks)


def realistic_pairs(
    size: int, integrals: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``size`` entries (aHash, pHash) of random crops of the photos, distinct aHashes, none
    that guard would refuse to list (low-information)."""
    per_photo = max(1, int(size * 1.6 / len(integrals)))
    ahashes, phashes = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64)
    while len(ahashes) < size:
        drawn = [crops(integral, per_photo, rng) for integral in integrals]
        ahashes = np.concatenate([ahashes, *(c.ahashes for c in drawn)])
        phashes = np.concatenate([phashes, *(c.phashes for c in drawn)])
        usable = np.array([not is_low_information(int(h)) for h in ahashes], dtype=bool)
        _, first = np.unique(np.where(usable, ahashes, np.uint64(0)), return_index=True)
        first = first[usable[first]]
        ahashes, phashes = ahashes[first], phashes[first]
    keep = rng.permutation(len(ahashes))[:size]
    return ahashes[keep], phashes[keep]


def _variants(ahash: int, block: np.ndarray) -> list[tuple[int, int]]:
    """The 8 dihedral variants (aHash, pHash) of a crop, as guard computes an upload's."""
    return [(permute(ahash, t), phash_of_coefficients(transformed(block, t))) for t in TRANSFORMS]


def real_queries(
    ahashes: np.ndarray,
    phashes: np.ndarray,
    count: int,
    listed: list[np.ndarray],
    held_out: list[np.ndarray],
    rng: np.random.Generator,
) -> list[list[tuple[int, int]]]:
    """``count`` uploads' variants, half and half. **Unlisted**: crops of photos left out of the
    list. **Listed**: crops of listed photos whose entry is in the list, as an edit would have
    moved it: 0..12 aHash bits and 0..8 pHash bits flipped (written over a random entry of
    ``ahashes``/``phashes``, in place)."""
    queries = []
    for turn in range(count):
        is_listed = turn % 2 == 1
        photos = listed if is_listed else held_out
        crop = crops(photos[int(rng.integers(len(photos)))], 1, rng, coefficients=True)
        while is_low_information(int(crop.ahashes[0])):  # guard neither lists nor asks these
            crop = crops(photos[int(rng.integers(len(photos)))], 1, rng, coefficients=True)
        ahash, phash = int(crop.ahashes[0]), int(crop.phashes[0])
        assert crop.coefficients is not None
        queries.append(_variants(ahash, crop.coefficients[0]))
        if is_listed:
            at = int(rng.integers(len(ahashes)))
            ahashes[at] = _flipped(ahash, int(rng.integers(0, RADIUS + 1)), rng)
            phashes[at] = _flipped(phash, int(rng.integers(0, 9)), rng)
    return queries


def _flipped(value: int, bits: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, bits, replace=False):
        value ^= 1 << int(bit)
    return value


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
    ahashes: np.ndarray,
    phashes: np.ndarray,
    queries: list[list[tuple[int, int]]],
    uploads: list[bytes],
) -> InProcessRow:
    """Build a mirror of the entries, then time the real query per upload (its 8 variants):
    first guard's lookups as a worker makes them, each right after decoding and hashing an
    upload (``uploads``, in turn), on the process's own mirror and on the same mirror mapped
    from a shared file (what a server's workers use); then the baselines, in a second pass.

    The passes are apart because the scan's temporaries (8 arrays of 8 bytes per entry a query)
    evict the caches and have the kernel hand out fresh huge pages: a lookup right after them
    took 2-4 times as long (at 1e7, p50 / p99 8.7 / 21 ms against 1.7 / 6.3), and no worker
    does anything of the kind between two lookups."""
    start = time.perf_counter()
    rank_compiled.warm(wait=True)  # once per process (compiled, or from numba's cache): no build
    if rank_compiled.AVAILABLE:
        progress(f"compiled loops ready in {time.perf_counter() - start:.2f} s")
    gc.collect()
    start = time.perf_counter()
    everyone = np.ones(len(ahashes), bool)  # every entry has a pHash
    mirror = Mirror(ahashes, phashes, everyone, default_layout(4), version=1, incarnation="bench")
    build = time.perf_counter() - start
    # where guard puts shared mirrors (shared memory where the machine has it), in a folder of
    # the bench's own
    with tempfile.TemporaryDirectory(dir=default_directory().parent) as folder:
        shared = SharedMirrors(Path(folder) / "mirrors", lambda: "bench")
        shared.publish("bench", mirror)
        mapped = shared.open("bench", "bench", 1)
        if mapped is None:
            progress("no room to share the mirror: the shared column is left out")
        guard_runs = _time_guard(
            {"own": mirror, "shared": mapped} if mapped else {"own": mirror}, queries, uploads
        )
        del mapped
    default = mirror_module.COMPILED
    numpy_t: list[float] = []
    near_t: list[float] = []
    scan_t: list[float] = []
    candidates, matches = [], []
    exact = True
    for turn, pairs in enumerate(queries):
        wanted = [a for a, _ in pairs]
        steps = ("numpy", "near", "scan")
        for step in steps if turn % 2 == 0 else steps[::-1]:
            start = time.perf_counter()
            if step == "numpy":
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
        oracle = oracle_best(mirror, pairs, truth)
        exact = exact and _best(numpy_best) == oracle
        exact = exact and all(answers[turn] == oracle for _, answers in guard_runs.values())
        candidates.append(mirror.candidates(wanted, RADIUS))
        matches.append(len(truth))
    own, _ = guard_runs["own"]
    shared_t = guard_runs["shared"][0] if "shared" in guard_runs else None
    return InProcessRow(
        size=len(ahashes),
        queries=len(queries),
        build_s=build,
        index_bytes_per_entry=mirror.index_bytes() / max(1, len(ahashes)),
        rss_mb=_rss_mb(),
        ranked_by=ranked_by(),
        rank_p50_ms=statistics.median(own) * 1e3,
        rank_p99_ms=_p(own, 0.99),
        shared_p50_ms=statistics.median(shared_t) * 1e3 if shared_t else None,
        shared_p99_ms=_p(shared_t, 0.99) if shared_t else None,
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


def _time_guard(
    mirrors: dict[str, Mirror], queries: list[list[tuple[int, int]]], uploads: list[bytes]
) -> dict[str, tuple[list[float], list[list[tuple[int, ...]]]]]:
    """Each mirror's lookup times and best answers, per query; each lookup right after the
    decode and hash of the next upload (the mirrors in turn, their order alternating)."""
    for mirror in mirrors.values():
        for pairs in queries[:5]:  # warm: caches, lazily built tables
            mirror.rank(pairs, RADIUS, CONFIRM_RADIUS, 1)
    runs: dict[str, tuple[list[float], list[list[tuple[int, ...]]]]] = {
        name: ([], []) for name in mirrors
    }
    names = list(mirrors)
    upload = itertools.cycle(uploads)
    for turn, pairs in enumerate(queries):
        for name in names if turn % 2 == 0 else names[::-1]:
            hash_bytes(next(upload))
            start = time.perf_counter()
            best = mirrors[name].rank(pairs, RADIUS, CONFIRM_RADIUS, 1)
            runs[name][0].append(time.perf_counter() - start)
            runs[name][1].append(_best(best))
    return runs


def oracle_best(
    mirror: Mirror, pairs: list[tuple[int, int]], near: np.ndarray
) -> list[tuple[int, ...]]:
    """The best match by brute force over ``near`` (every entry within the radius, from the
    scan): each entry's best query by (tier, aHash distance, pHash distance), the first such
    query; then the best entry, the lowest position on a tie."""
    if not len(near):
        return []
    wanted = np.array(pairs, dtype=np.uint64)
    distance = popcount(wanted[:, :1] ^ mirror.ahashes[near][None, :]).astype(np.int64)
    phash_distance = popcount(wanted[:, 1:] ^ mirror.phashes[near][None, :]).astype(np.int64)
    tier = np.where(phash_distance <= CONFIRM_RADIUS, 0, 2)
    score = np.where(distance <= RADIUS, (tier << 14) | (distance << 7) | phash_distance, 1 << 20)
    query = score.argmin(axis=0)
    best = score[query, np.arange(len(near))]
    at = int(np.argmin(best))  # the first (lowest position) of the best
    chosen = int(best[at])
    return [(int(near[at]), int(query[at]), chosen >> 7 & 0x7F, chosen & 0x7F, chosen >> 14 == 0)]


def in_process_table(rows: list[InProcessRow]) -> str:
    lines = [
        "| N | ranked by | guard rank, own mirror p50 / p99 ms "
        "| guard rank, shared file p50 / p99 ms | numpy rank p50 / p99 ms "
        "| numpy candidate search p50 / p99 ms "
        "| numpy scan p50 / p99 ms | scan / own mirror p50, p99 | candidates (median) "
        "| matches median / max | exact | index B/entry | build s | max RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shared = (
            f"{r.shared_p50_ms:.3f} / {r.shared_p99_ms:.3f}"
            if r.shared_p50_ms is not None and r.shared_p99_ms is not None
            else "-"
        )
        lines.append(
            f"| {r.size:,} | {r.ranked_by} | {r.rank_p50_ms:.3f} / {r.rank_p99_ms:.3f} "
            f"| {shared} | {r.numpy_rank_p50_ms:.3f} / {r.numpy_rank_p99_ms:.3f} "
            f"| {r.near_p50_ms:.3f} / {r.near_p99_ms:.3f} "
            f"| {r.scan_p50_ms:.3f} / {r.scan_p99_ms:.3f} "
            f"| {r.scan_p50_ms / r.rank_p50_ms:.1f}x, {r.scan_p99_ms / r.rank_p99_ms:.1f}x "
            f"| {r.candidates_median:,.0f} | {r.matches_median:,.0f} / {r.matches_max:,} "
            f"| {'yes' if r.exact else 'NO'} | {r.index_bytes_per_entry:.1f} "
            f"| {r.build_s:.2f} | {r.rss_mb:,.0f} |"
        )
    return "\n".join(lines)


def in_process_targets(rows: list[InProcessRow]) -> list[str]:
    """The issue's in-process targets, against the rows that have their size: the latency
    targets on both mirrors (a server's workers share one; a single process has its own)."""
    lines = [f"(guard mirror rank: {rows[0].ranked_by})"] if rows else []
    for r in rows:
        mirrors = [("own mirror", r.rank_p50_ms, r.rank_p99_ms)]
        if r.shared_p50_ms is not None and r.shared_p99_ms is not None:
            mirrors.append(("shared file", r.shared_p50_ms, r.shared_p99_ms))
        for name, p50, p99 in mirrors:
            if r.size == 1_000_000:
                lines.append(_target(f"1e6, {name}: p50 <= 1 ms", p50 <= 1.0, p50))
                lines.append(_target(f"1e6, {name}: p99 <= 3 ms", p99 <= 3.0, p99))
            if r.size == 10_000_000:
                lines.append(_target(f"1e7, {name}: p99 <= 10 ms", p99 <= 10.0, p99))
        if r.size == 10_000_000:
            ratio = r.scan_p50_ms / r.rank_p50_ms
            lines.append(
                f"- 1e7: >= 5x the numpy scan (p50, own mirror): {ratio:.1f}x -> "
                f"{'MET' if ratio >= 5 else 'MISSED'}"
            )
    return lines


def _target(name: str, met: bool, value: float) -> str:
    return f"- {name}: {value:.3f} ms -> {'MET' if met else 'MISSED'}"


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)
