"""The small app bench/middleware.py serves with uvicorn, bare or wrapped in GuardMiddleware.

    GUARD_BENCH_APP=bare|guarded GUARD_REDIS_URL=redis://... uvicorn --app-dir bench _app:app

Routes: ``GET /ping`` (tiny JSON), ``GET /pid`` (which worker process answered: the load generator
spreads its connections over the workers with it), ``GET /lag`` (the event loop's lag since the
last ``GET /lag``, see below), ``POST /upload`` (reads the whole body and
answers its size, and guard's decision if there is one), ``POST /hash`` (the same, and decodes and
hashes the upload's one file part with ``guard.hash_bytes`` in a worker thread, at most
``HASH_WORKERS`` at once, as guard's own limit: what an app costs that did only that itself).
The guarded variant adds GuardMiddleware the documented way, checking ``POST /upload`` against
the list ``bench`` in the Redis at ``GUARD_REDIS_URL`` (read by guard itself).

Loop lag: from start-up, a task in each worker sleeps 1 ms in a loop and records how late it
wakes (the time the loop was busy or blocked, plus the OS's timer and scheduling slack, the same
for both apps); ``GET /lag`` answers the samples taken since the previous ``GET /lag``, in
microseconds, and starts a new series.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as Endpoint

from guard import Config, GuardMiddleware, Route, hash_bytes
from guard.config import HttpSettings

LIST_NAME = "bench"
# guard's http.hash_workers for the guarded app, and the /hash route's own limit: guard's default
# unless GUARD_BENCH_HASH_WORKERS says otherwise (bench/middleware.py --scaling --hash-workers).
HASH_WORKERS = int(os.environ.get("GUARD_BENCH_HASH_WORKERS") or HttpSettings().hash_threads)
LAG_SLEEP = 0.001  # seconds the lag sampler sleeps each time
_lags: list[int] = []  # microseconds each sleep overshot, since the last GET /lag


async def _sample_lag() -> None:
    while True:
        start = time.perf_counter()
        await asyncio.sleep(LAG_SLEEP)
        _lags.append(round((time.perf_counter() - start - LAG_SLEEP) * 1e6))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(_sample_lag())
    try:
        yield
    finally:
        task.cancel()


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


async def lag(request: Request) -> JSONResponse:
    samples = _lags[:]
    del _lags[:]
    return JSONResponse({"pid": os.getpid(), "lag_us": samples})


async def upload(request: Request) -> JSONResponse:
    """The least an upload endpoint does: read the body (guard replays it when it allows)."""
    body = await request.body()
    decision = getattr(request.state, "guard", None)
    return JSONResponse({"bytes": len(body), "guard": decision.action if decision else None})


_hashing: anyio.CapacityLimiter | None = None


async def hashed(request: Request) -> JSONResponse:
    """Decode and hash the single file part of a multipart upload, off the loop: the served
    decode+hash floor bench/middleware.py compares the guarded upload with."""
    global _hashing
    if _hashing is None:
        _hashing = anyio.CapacityLimiter(HASH_WORKERS)
    body = await request.body()
    image = body[body.index(b"\r\n\r\n") + 4 : body.rindex(b"\r\n--")]
    await anyio.to_thread.run_sync(partial(hash_bytes, image), limiter=_hashing)
    return JSONResponse({"bytes": len(body), "guard": None})


def make_app(variant: str) -> Starlette:
    middleware = []
    if variant == "guarded":
        if not os.environ.get("GUARD_REDIS_URL"):
            # Without it guard would start an embedded Redis in the working directory.
            raise SystemExit("the guarded app needs GUARD_REDIS_URL")
        config = Config(
            routes=(Route("/upload", (LIST_NAME,), frozenset({"POST"})),),
            http=HttpSettings(hash_workers=HASH_WORKERS),
        )
        middleware.append(Middleware(GuardMiddleware, config=config))
    elif variant != "bare":
        raise SystemExit(f"GUARD_BENCH_APP must be bare or guarded, got {variant!r}")
    routes = [
        Endpoint("/ping", ping),
        Endpoint("/pid", pid),
        Endpoint("/lag", lag),
        Endpoint("/upload", upload, methods=["POST"]),
        Endpoint("/hash", hashed, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


app = make_app(os.environ.get("GUARD_BENCH_APP", "bare"))
