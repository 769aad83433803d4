"""What one removal costs Redis, against a named baseline: a removal holds Redis for its Lua step,
and every worker's lookup waits behind it.

    cd /work/main && PYTHONPATH=. python bench/remove_cost.py [--sizes 1e5,1e6] [--removals 50]
                                                  [--before CHECKOUT] [--json]

For each size N and checkout, a fresh redis-server (bench/servers.py) and a child process with
that checkout's guard on PYTHONPATH: it writes N uniform random aHashes with ``Store.add``, then
removes ``--removals`` of them one at a time with ``Store.remove`` (as ``guard remove`` and the
review page do), resetting Redis's command statistics first. It prints the median and max wall
time of a removal and Redis's own time per EVALSHA (``INFO commandstats``: the time Redis served
nobody else). ``--before CHECKOUT`` runs the same with the guard of another checkout first (for
example ``git worktree add /tmp/before <commit>``), the named baseline, and prints the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from machine import before_and_now  # noqa: E402  (bench/machine.py)
from servers import redis_server  # noqa: E402  (bench/servers.py)

LIST = "removals"


def child(url: str, size: int, removals: int) -> dict[str, Any]:
    """Fill and remove (run with the checkout's guard on PYTHONPATH)."""
    import numpy as np
    import redis

    from guard.store import Store
    from guard.types import Entry

    rng = np.random.default_rng(3)
    hashes = [int(a) for a in rng.integers(0, 2**64, size, dtype=np.uint64)]
    hashes = [a for a in hashes if 8 <= a.bit_count() <= 56]  # guard refuses flat ones
    client = redis.Redis.from_url(url)

    async def run() -> dict[str, Any]:
        async with Store.from_url(url, mirror=None) as store:
            entries = [
                Entry(a, a ^ 0xABCDEF, f"IMG_{i:07d}.jpg", "spam") for i, a in enumerate(hashes)
            ]
            await store.add(LIST, entries)
            client.config_resetstat()
            took = []
            for ahash in hashes[:removals]:
                began = time.perf_counter()
                assert await store.remove(LIST, ahash) == 1
                took.append(time.perf_counter() - began)
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return {
            "median_ms": statistics.median(took) * 1e3,
            "max_ms": max(took) * 1e3,
            "redis_us_per_call": float(stats.get("usec_per_call", 0.0)),
        }

    return asyncio.run(run())


def measure(checkout: Path, size: int, removals: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temporary, redis_server(Path(temporary)) as url:
        env = os.environ | {"PYTHONPATH": f"{checkout}{os.pathsep}{BENCH}"}
        done = subprocess.run(
            [sys.executable, __file__, "--child", url, "--sizes", str(size)]
            + ["--removals", str(removals)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return dict(json.loads(done.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e5,1e6", help="list sizes, comma-separated")
    parser.add_argument("--removals", type=int, default=50)
    parser.add_argument("--before", type=Path, help="a checkout of guard: the baseline")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # fill and remove at this URL
    args = parser.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(child(args.child, sizes[0], args.removals)))
        return 0
    checkouts = ([("before", args.before)] if args.before else []) + [("this", ROOT)]
    rows = [
        (name, size, measure(path, size, args.removals))
        for size in sizes
        for name, path in checkouts
    ]
    if args.json:
        print(json.dumps([{"guard": n, "size": s, **r} for n, s, r in rows], indent=2))
        return 0
    print(f"\n{args.removals} single-aHash removals (Store.remove), uniform aHashes\n")
    print("| guard | N | removal median ms | max ms | Redis us per EVALSHA |")
    print("|---|---|---:|---:|---:|")
    for name, size, r in rows:
        print(
            f"| {name} | {size:.0e} | {r['median_ms']:.2f} | {r['max_ms']:.2f} "
            f"| {r['redis_us_per_call']:,.0f} |"
        )
    if args.before:
        for size, old, new in before_and_now(rows, sizes):
            ratio = old["redis_us_per_call"] / max(new["redis_us_per_call"], 1e-9)
            print(f"\nN={size:.0e}: Redis time per removal {ratio:.0f}x less")
    return 0


if __name__ == "__main__":
    sys.exit(main())
