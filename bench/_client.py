"""The load generator of bench/middleware.py: one run against one server, in its own process.

    python bench/_client.py SPEC.json        (prints one JSON result on stdout)

SPEC names the server (host, port, workers), the request (method, path, the file holding the body
or none, content type), the status every answer must have, the concurrency, the bounds (requests,
seconds: whichever comes first) and the untimed warm-up requests per connection.

A minimal HTTP/1.1 client on asyncio streams, not httpx: with httpx the client spends several
times the server's CPU per small request, and on a 2-core machine it would be the bottleneck and
hide the server's own cost. Here each request is prebuilt bytes (the multipart body once), each
answer is read by its Content-Length, and connections are kept alive. With W uvicorn workers the
connections are spread evenly over them: each new connection asks ``GET /pid`` which worker
accepted it, and surplus connections to a busy worker are closed (the kernel, not uvicorn, picks
the worker, and 4 connections could otherwise all land on one).

Loop lag: after the warm-up each connection asks ``GET /lag`` (starting a new series in its
worker), and after the timed run again; the samples of every worker reached are pooled.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

MAX_HEAD = 65_536
CONNECT_ATTEMPTS = 20  # connections tried per wanted connection when spreading over workers


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int = 0

    def close(self) -> None:
        self.writer.close()


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    samples: list[str] = field(default_factory=list)  # the first few unexpected answers

    def wrong(self, text: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(text[:300])


def request_bytes(spec: dict[str, Any], body: bytes) -> bytes:
    head = [f"{spec['method']} {spec['path']} HTTP/1.1", f"Host: {spec['host']}:{spec['port']}"]
    if spec["method"] != "GET":
        head += [f"Content-Type: {spec['content_type']}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


async def exchange(connection: Connection, request: bytes) -> tuple[int, bytes]:
    """Send one request and read its answer (status, body); the connection stays open."""
    connection.writer.write(request)
    await connection.writer.drain()
    head = await connection.reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ValueError("response head too long")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await connection.reader.readexactly(length)


async def connect(spec: dict[str, Any]) -> Connection:
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    connection = Connection(reader, writer)
    pid_request = f"GET /pid HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n\r\n".encode()
    status, body = await exchange(connection, pid_request)
    if status != 200:
        raise RuntimeError(f"GET /pid answered {status}")
    connection.pid = int(json.loads(body)["pid"])
    return connection


async def spread(spec: dict[str, Any]) -> list[Connection]:
    """``concurrency`` connections, as evenly spread over the workers as the kernel allows."""
    wanted, workers = spec["concurrency"], spec["workers"]
    per_worker = math.ceil(wanted / workers)
    kept: list[Connection] = []
    for _ in range(wanted * CONNECT_ATTEMPTS):
        if len(kept) == wanted:
            break
        connection = await connect(spec)
        if sum(c.pid == connection.pid for c in kept) < per_worker:
            kept.append(connection)
        else:
            connection.close()
    while len(kept) < wanted:  # could not balance: take what comes
        kept.append(await connect(spec))
    return kept


async def drive(spec: dict[str, Any], body: bytes) -> dict[str, Any]:
    request = request_bytes(spec, body)
    connections = await spread(spec)
    tally = Tally()

    async def warm_up(connection: Connection) -> None:
        for _ in range(spec["warmup"]):
            status, answer = await exchange(connection, request)
            if status != spec["expect"]:
                tally.wrong(f"warm-up: {status} {answer[:200]!r}")

    # All at once: a connection left idle past uvicorn's keep-alive timeout would be closed.
    await asyncio.gather(*(warm_up(c) for c in connections))
    lag_request = f"GET /lag HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n\r\n".encode()
    for connection in connections:
        await exchange(connection, lag_request)  # a new series from here
    issued = 0
    start = time.perf_counter()
    deadline = start + spec["seconds"]
    finished = start

    async def worker(connection: Connection) -> None:
        nonlocal issued, finished
        while issued < spec["requests"] and time.perf_counter() < deadline:
            issued += 1
            sent = time.perf_counter()
            try:
                status, answer = await exchange(connection, request)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                tally.wrong(f"{type(error).__name__}: {error}")
                connection.close()
                connection = await connect(spec)
                continue
            done = time.perf_counter()
            finished = max(finished, done)
            tally.latencies.append(done - sent)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status != spec["expect"]:
                tally.wrong(f"{status} {answer[:200]!r}")

    await asyncio.gather(*(worker(c) for c in connections))
    lags: list[int] = []
    for connection in connections:
        status, answer = await exchange(connection, lag_request)
        if status == 200:
            lags += json.loads(answer)["lag_us"]
    pids = sorted({c.pid for c in connections})
    for connection in connections:
        connection.close()
    per_worker = [sum(c.pid == p for c in connections) for p in pids]
    return summary(tally, finished - start, per_worker) | {"lag": lag_summary(lags)}


def lag_summary(lags: list[int]) -> dict[str, Any]:
    """p50, p99 and max of the loop lag samples (microseconds in, milliseconds out)."""
    ordered = sorted(lags)
    if not ordered:
        return {"samples": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "samples": len(ordered),
        "p50_ms": statistics.median(ordered) / 1000,
        "p99_ms": ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] / 1000,
        "max_ms": ordered[-1] / 1000,
    }


def summary(tally: Tally, seconds: float, per_worker: list[int]) -> dict[str, Any]:
    ordered = sorted(tally.latencies)
    count = len(ordered)
    return {
        "requests": count,
        "seconds": seconds,
        "requests_per_s": count / seconds if seconds > 0 else None,
        "p50_ms": statistics.median(ordered) * 1000 if ordered else None,
        # nearest rank
        "p99_ms": ordered[max(0, math.ceil(0.99 * count) - 1)] * 1000 if ordered else None,
        "errors": tally.errors,
        "error_samples": tally.samples,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "connections_per_worker": per_worker,
    }


def main() -> int:
    with open(sys.argv[1]) as stream:
        spec = json.load(stream)
    body = b""
    if spec.get("body_file"):
        with open(spec["body_file"], "rb") as stream:
            body = stream.read()
    print(json.dumps(asyncio.run(drive(spec, body))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
