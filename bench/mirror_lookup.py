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
paths returned the best match a brute force over the scan's matches picks.

The pHashes matter: a big mirror answers a crowded query by its pHash index (guard.mirror), so
random pHashes would flatter it. Entries and queries are crops of real photos hashed by guard's
rules from the photo's integral image (:func:`crops`), the pHash from 32x32 cell means.
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
from guard.hashing import _DCT, TRANSFORMS, is_low_information, permute, phash_of_coefficients
from guard.hashing import transform_coefficients as transformed
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
    ahashes: np.ndarray, phashes: np.ndarray, queries: list[list[tuple[int, int]]]
) -> InProcessRow:
    """Build a mirror of the entries, then time the real query per upload (its 8 variants)."""
    start = time.perf_counter()
    rank_compiled.warm(wait=True)  # once per process (compiled, or from numba's cache): no build
    if rank_compiled.AVAILABLE:
        progress(f"compiled loops ready in {time.perf_counter() - start:.2f} s")
    gc.collect()
    start = time.perf_counter()
    mirror = Mirror(ahashes, phashes, np.ones(len(ahashes), bool), default_layout(4), version=1)
    build = time.perf_counter() - start
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
        exact = exact and _best(best) == _best(numpy_best) == oracle_best(mirror, pairs, truth)
        candidates.append(mirror.candidates(wanted, RADIUS))
        matches.append(len(truth))
    return InProcessRow(
        size=len(ahashes),
        queries=len(queries),
        build_s=build,
        index_bytes_per_entry=mirror.index_bytes() / max(1, len(ahashes)),
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
