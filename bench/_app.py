"""The small app bench/middleware.py serves with uvicorn, bare or wrapped in GuardMiddleware.

    GUARD_BENCH_APP=bare|guarded GUARD_REDIS_URL=redis://... uvicorn --app-dir bench _app:app

Routes: ``GET /ping`` (tiny JSON), ``GET /pid`` (which worker process answered: the load generator
spreads its connections over the workers with it), ``POST /upload`` (reads the whole body and
answers its size, and guard's decision if there is one). The guarded variant adds GuardMiddleware
the documented way, checking ``POST /upload`` against the list ``bench`` in the Redis at
``GUARD_REDIS_URL`` (read by guard itself).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as Endpoint

from guard import Config, GuardMiddleware, Route

LIST_NAME = "bench"


async def ping(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


async def upload(request: Request) -> JSONResponse:
    """The least an upload endpoint does: read the body (guard replays it when it allows)."""
    body = await request.body()
    decision = getattr(request.state, "guard", None)
    return JSONResponse({"bytes": len(body), "guard": decision.action if decision else None})


def make_app(variant: str) -> Starlette:
    middleware = []
    if variant == "guarded":
        if not os.environ.get("GUARD_REDIS_URL"):
            # Without it guard would start an embedded Redis in the working directory.
            raise SystemExit("the guarded app needs GUARD_REDIS_URL")
        config = Config(routes=(Route("/upload", (LIST_NAME,), frozenset({"POST"})),))
        middleware.append(Middleware(GuardMiddleware, config=config))
    elif variant != "bare":
        raise SystemExit(f"GUARD_BENCH_APP must be bare or guarded, got {variant!r}")
    routes = [
        Endpoint("/ping", ping),
        Endpoint("/pid", pid),
        Endpoint("/upload", upload, methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=middleware)


app = make_app(os.environ.get("GUARD_BENCH_APP", "bare"))
