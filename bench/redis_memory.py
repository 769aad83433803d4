"""Redis memory per entry of a list, every structure guard keeps, against a named baseline.

    cd /work/main && PYTHONPATH=. python bench/redis_memory.py [--sizes 1e5,1e6]
                                                   [--population realistic|uniform]
                                                   [--before CHECKOUT] [--photos DIR] [--json]

For each size N and checkout, a fresh redis-server (bench/servers.py, persistence off, with
``set-max-intset-entries 4096`` and ``hash-max-ziplist-entries 512`` as guard's embedded server
sets them and docs/operations.md recommends for any other: ``--intset-entries``,
``--hash-entries``; Redis's defaults, 512 and 128, turn the crowded band sets of real photo
hashes, and the entry buckets of lists over about 6 million entries, into hash tables) and a
child process with that checkout's guard on PYTHONPATH writes N entries with ``Store.add`` (the
path ``guard load`` takes, in one call: batches of 500 entries, one version each): aHashes from
bench/lookup.py's populations (realistic: crops of ../shared/data/photos), random pHashes,
sources as a folder load records them (``IMG_0001234.jpg``, relative to the folder) and one of
three labels. Then this process measures:

- ``MEMORY USAGE key SAMPLES 0`` summed per structure: band sets, entry records (the compact
  buckets, or the one JSON hash of older guards), labels, snapshot, change log, and the rest
  (meta, version);
- ``used_memory`` after the fill minus before: everything, including Redis's keyspace tables.

``--before CHECKOUT`` measures the same with the guard of another checkout first (for example
``git worktree add /tmp/before <commit>``), the named baseline, and prints the ratios.
The target: <= 120 bytes per entry at 1e6, all structures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import redis

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from machine import before_and_now  # noqa: E402  (bench/machine.py)
from servers import redis_server  # noqa: E402  (bench/servers.py)

LIST = "mem"
LABELS = ("spam", "scam", "phishing")
TARGET = 120.0


def fill(url: str, size: int, population: str, photos: Path) -> None:
    """Write the list (run with the checkout's guard on PYTHONPATH: its own store writes)."""
    import lookup  # bench/lookup.py: the hash populations

    from guard.store import Store
    from guard.types import Entry

    rng = np.random.default_rng(5)
    if population == "uniform":
        hashes = lookup.uniform_population(size, rng)
    else:
        paths = sorted(photos.glob("*.jpg"))
        integrals = [lookup._integral(p) for i, p in enumerate(paths) if i % 10]
        hashes = lookup.realistic_population(size, integrals, rng)
    phashes = rng.integers(0, 2**64, len(hashes), dtype=np.uint64)
    entries = [
        Entry(int(a), int(p), f"IMG_{i:07d}.jpg", LABELS[i % len(LABELS)])
        for i, (a, p) in enumerate(zip(hashes, phashes, strict=True))
    ]

    async def write() -> None:
        async with Store.from_url(url) as store:
            await store.add(LIST, entries)

    asyncio.run(write())


def structure_of(key: bytes) -> str:
    """Which of a list's structures a key belongs to."""
    part = key.decode().split("}:", 1)[1]
    if part[0] == "b" and part[1:2].isdigit():
        return "band sets"
    if part.startswith("e:") or part in ("off", "entries", "disabled"):
        return "entry records"
    names = {"snap": "snapshot", "snapdel": "snapshot", "changes": "change log"}
    return names.get(part, "labels" if part == "labels" else "other")


def measure(checkout: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    options = ("--set-max-intset-entries", str(args.intset_entries))
    options += ("--hash-max-ziplist-entries", str(args.hash_entries))
    with tempfile.TemporaryDirectory() as temporary, redis_server(Path(temporary), *options) as url:
        client = redis.Redis.from_url(url)
        before = int(client.info("memory")["used_memory"])
        env = os.environ | {"PYTHONPATH": f"{checkout}{os.pathsep}{BENCH}"}
        subprocess.run(
            [sys.executable, __file__, "--fill", url, "--sizes", str(size)]
            + ["--population", args.population, "--photos", str(args.photos)],
            env=env,
            check=True,
        )
        used = int(client.info("memory")["used_memory"]) - before
        per: dict[str, int] = {}
        keys = list(client.scan_iter(match=f"guard:{{{LIST}}}:*", count=10_000))
        for start in range(0, len(keys), 5000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 5000]:
                pipe.memory_usage(key, samples=0)
            for key, usage in zip(keys[start : start + 5000], pipe.execute(), strict=True):
                per[structure_of(key)] = per.get(structure_of(key), 0) + int(usage or 0)
        entries = int(client.hget(f"guard:{{{LIST}}}:meta", "entries") or 0)
        version = client.info("server")["redis_version"]
        client.close()
    return {
        "entries": entries,
        "redis": version,
        "keys": len(keys),
        "per_entry": {name: value / entries for name, value in sorted(per.items())},
        "all_structures": sum(per.values()) / entries,
        "used_memory": used / entries,
    }


COLUMNS = ("band sets", "entry records", "labels", "snapshot", "change log", "other")


def table(rows: list[tuple[str, int, dict[str, Any]]]) -> str:
    head = (
        "| guard | N | "
        + " | ".join(COLUMNS)
        + " | all structures B/entry | used_memory B/entry | keys |"
    )
    lines = [head, "|" + "---|" * (len(COLUMNS) + 5)]
    for name, size, r in rows:
        cells = " | ".join(f"{r['per_entry'].get(c, 0.0):.1f}" for c in COLUMNS)
        lines.append(
            f"| {name} | {size:.0e} | {cells} | {r['all_structures']:.1f} "
            f"| {r['used_memory']:.1f} | {r['keys']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e5,1e6", help="list sizes, comma-separated")
    parser.add_argument("--population", choices=("realistic", "uniform"), default="realistic")
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared/data/photos")
    parser.add_argument("--before", type=Path, help="a checkout of guard: the baseline")
    parser.add_argument("--intset-entries", type=int, default=4096, help="Redis's setting")
    parser.add_argument("--hash-entries", type=int, default=512, help="Redis's setting")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--fill", help=argparse.SUPPRESS)  # child: write the list to this URL
    args = parser.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    if args.fill:
        fill(args.fill, sizes[0], args.population, args.photos)
        return 0
    checkouts = ([("before", args.before)] if args.before else []) + [("this", ROOT)]
    rows = [(name, size, measure(path, size, args)) for size in sizes for name, path in checkouts]
    if args.json:
        print(json.dumps([{"guard": n, "size": s, **r} for n, s, r in rows], indent=2))
        return 0
    print(
        f"\n{args.population} aHashes, random pHashes, sources IMG_0001234.jpg, 3 labels; "
        f"redis-server {rows[0][2]['redis']}, set-max-intset-entries {args.intset_entries}, "
        f"hash-max-ziplist-entries {args.hash_entries}; bytes per entry\n"
    )
    print(table(rows))
    print("\n| target | value | result |\n|---|---|---|")
    for name, size, r in rows:
        if name == "this" and size == 1_000_000:
            met = "MET" if r["all_structures"] <= TARGET else "MISSED"
            print(
                f"| all structures <= {TARGET:.0f} B/entry at 1e6 | "
                f"{r['all_structures']:.1f} | {met} |"
            )
    if args.before:
        for size, old, new in before_and_now(rows, sizes):
            smaller = old["all_structures"] / new["all_structures"]
            used = old["used_memory"] / new["used_memory"]
            print(f"\nN={size:.0e}: all structures {smaller:.2f}x smaller, used_memory {used:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
