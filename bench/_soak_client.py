"""The traffic of bench/soak.py, in its own process: one JSON line per request, until told to stop.

    python bench/_soak_client.py PLAN.json

PLAN names the server (port), the items (each a class, a method and path, the file holding its
multipart body or none, a weight), the concurrency, the rate cap, the per-request timeout, the
bounds (seconds, requests: whichever comes first) and the output file. Each of ``concurrency``
asyncio tasks picks an item at random (by weight, seeded), sends it with httpx on a shared pool
of keep-alive connections, and writes ``[item, t0, t1, status, detail]``: ``t0``/``t1`` are
``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process on the machine, so
bench/soak.py can place each request against its own fault timeline), ``status`` is None for a
transport error or a timeout (then ``detail`` is the exception's name); otherwise ``detail`` is
guard's decision for a 200 upload (``allow``/``flag``/``unchecked``/None), the list for a 403.
SIGTERM or SIGINT stops it at once (requests in flight are abandoned, not recorded).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import httpx

BOUNDARY = "guardsoakboundary7f3a"


def _detail(response: httpx.Response) -> str | None:
    if response.status_code not in (200, 403):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if response.status_code == 403:
        return str(body.get("list"))
    decision = body.get("guard")
    return None if decision is None else str(decision)


async def run(plan: dict[str, Any], out: TextIO) -> int:
    items = plan["items"]
    bodies = [Path(item["body"]).read_bytes() if item.get("body") else None for item in items]
    weights = [float(item["weight"]) for item in items]
    indices = list(range(len(items)))
    rng = random.Random(plan.get("seed", 0))
    concurrency = int(plan["concurrency"])
    interval = 1.0 / float(plan["rate"]) if plan.get("rate") else 0.0
    deadline = time.monotonic() + float(plan["seconds"])
    limit = int(plan["max_requests"])
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sent = 0
    next_slot = time.monotonic()
    timeout = httpx.Timeout(float(plan["timeout"]))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    base = f"http://127.0.0.1:{plan['port']}"
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, next_slot
            while not stop.is_set() and sent < limit and time.monotonic() < deadline:
                sent += 1
                if interval:  # the rate cap: one request per slot, shared by the tasks
                    now = time.monotonic()
                    next_slot = max(next_slot + interval, now)
                    if next_slot > now:
                        await asyncio.sleep(next_slot - now)
                index = rng.choices(indices, weights)[0]
                item = items[index]
                t0 = time.monotonic()
                status: int | None = None
                try:
                    if item["method"] == "GET":
                        response = await client.get(item["path"])
                    else:
                        response = await client.post(
                            item["path"], content=bodies[index], headers=headers
                        )
                    status, detail = response.status_code, _detail(response)
                except httpx.HTTPError as error:
                    detail = type(error).__name__
                record = [index, round(t0, 4), round(time.monotonic(), 4), status, detail]
                out.write(json.dumps(record) + "\n")

        tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
    return 0


if __name__ == "__main__":
    PLAN = json.loads(Path(sys.argv[1]).read_text())
    with Path(PLAN["out"]).open("w", buffering=1) as OUT:
        sys.exit(asyncio.run(run(PLAN, OUT)))
