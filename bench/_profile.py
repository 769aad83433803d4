"""``bench/middleware.py --profile``: one guarded 1080p upload, in process, taken apart.

The same upload as the served runs, through the same Starlette app called directly (no server,
no sockets: the scheduling noise of the served runs would hide tenths of a millisecond), bare and
wrapped in GuardMiddleware on the same Redis, against ``guard.hash_bytes`` alone in the same
thread. Rounds interleave the three; each figure is the median over rounds of the mean per call.
"added beyond decode+hash" is guarded - bare - decode+hash, per round, then the median; the same
in CPU time (time.process_time: every thread of the process, not Redis's) is guard's own work,
which a loaded machine's scheduling does not inflate the way it does the wall clock.

Then the guarded upload under cProfile with a CPU-time clock (time.thread_time), the event loop's
thread only: decoding and hashing run in a worker thread, which cProfile does not see, and time
spent waiting (for the thread, for Redis, for the GIL) is not counted, so what it shows is the
loop's own work around them, by cumulative time. And the event loop's lag while uploads run: a
task that sleeps 1 ms in a loop and records how late it wakes, bare app against guarded, uploads
running 4 at a time (as with 4 in flight on one worker).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from guard import hash_bytes

Upload = Callable[[Any], Awaitable[tuple[int, Any]]]


async def per_call(run: Callable[[], Awaitable[object]], calls: int) -> tuple[float, float]:
    """Milliseconds per call of ``run`` (mean of ``calls``): wall clock, and CPU time of this
    process (every thread: the loop's, the hashing one)."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await run()
    wall = (time.perf_counter() - start) / calls * 1000
    return wall, (time.process_time() - cpu) / calls * 1000


async def hash_alone(jpeg: bytes) -> None:
    hash_bytes(jpeg)


def stages(bare: Any, guarded: Any, upload: Upload, jpeg: bytes, rounds: int, calls: int) -> Any:
    """Interleaved rounds of decode+hash alone, the bare app and the guarded app."""

    async def expect(app: Any, action: str | None) -> None:
        status, answer = await upload(app)
        if (status, answer.get("guard")) != (200, action):
            raise SystemExit(f"profile: the upload got {status} {answer}")

    async def measure() -> dict[str, list[float]]:
        runs: dict[str, Callable[[], Awaitable[object]]] = {
            "decode+hash": lambda: hash_alone(jpeg),
            "bare app": lambda: expect(bare, None),
            "guarded app": lambda: expect(guarded, "allow"),
        }
        for run in runs.values():
            await per_call(run, 3)  # warm up: the store's connection, the list's mirror
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                times[name].append(await per_call(run, calls))
        return times

    times = asyncio.run(measure())

    def added(kind: int) -> float:
        rows = zip(times["guarded app"], times["bare app"], times["decode+hash"], strict=True)
        return statistics.median(g[kind] - b[kind] - h[kind] for g, b, h in rows)

    return {
        "rounds": rounds,
        "calls": calls,
        "ms": {name: statistics.median(v[0] for v in values) for name, values in times.items()},
        "cpu_ms": {name: statistics.median(v[1] for v in values) for name, values in times.items()},
        "added_beyond_hash_ms": added(0),
        "cpu_beyond_hash_ms": added(1),
    }


def profile(guarded: Any, upload: Upload, calls: int, top: int = 30) -> str:
    """The guarded upload under cProfile: the loop thread's CPU, top functions by cumulative
    time."""

    async def run() -> None:
        for _ in range(3):
            await upload(guarded)
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for _ in range(calls):
            await upload(guarded)
        profiler.disable()
        stream = io.StringIO()
        stats = pstats.Stats(profiler, stream=stream)
        stats.strip_dirs().sort_stats("cumulative").print_stats(top)
        holder.append(stream.getvalue())

    holder: list[str] = []
    asyncio.run(run())
    return holder[0]


def loop_lag(app: Any, upload: Upload, in_flight: int, seconds: float) -> dict[str, float]:
    """The loop's lag (ms a 1 ms sleep overshoots) while ``in_flight`` uploads run at once."""

    async def run() -> dict[str, float]:
        lags: list[float] = []
        done = False

        async def sampler() -> None:
            while not done:
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - start) * 1000 - 1.0)

        async def uploader() -> int:
            count = 0
            while time.perf_counter() < deadline:
                await upload(app)
                count += 1
                await asyncio.sleep(0)  # the bare app never waits: let the sampler run
            return count

        await upload(app)
        deadline = time.perf_counter() + seconds
        task = asyncio.create_task(sampler())
        counts = await asyncio.gather(*(uploader() for _ in range(in_flight)))
        done = True
        await task
        return summarise(lags) | {"uploads": float(sum(counts))}

    return asyncio.run(run())


def summarise(lags: list[float]) -> dict[str, float]:
    """p50, p99 and max of lag samples in ms, and how many there were."""
    ordered = sorted(lags)
    if not ordered:
        return {"samples": 0.0}
    return {
        "samples": float(len(ordered)),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[max(0, -(-99 * len(ordered) // 100) - 1)],
        "max_ms": ordered[-1],
    }
