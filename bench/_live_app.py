"""The app bench/live_update.py serves: ``POST /upload`` guarded against the list ``live`` in the
Redis at ``GUARD_REDIS_URL`` (read by guard itself), answering 200 with the body's size; ``GET
/pid`` answers which worker process it is. It imports guard from whatever ``PYTHONPATH`` gives, so
the benchmark can serve two versions of guard with the same app."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as Endpoint

from guard import Config, GuardMiddleware, ListPolicy, Route

LIST_NAME = "live"


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


async def upload(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


config = Config(
    lists={LIST_NAME: ListPolicy()},
    routes=(Route(path="/upload", lists=(LIST_NAME,), methods=frozenset({"POST"})),),
)
app = Starlette(
    routes=[Endpoint("/pid", pid), Endpoint("/upload", upload, methods=["POST"])],
    middleware=[Middleware(GuardMiddleware, config=config)],
)
