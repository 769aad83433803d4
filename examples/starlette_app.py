"""Starlette, with guard on the whole app and again inside a ``Mount``.

    GUARD_CONFIG=config/guard.yaml uvicorn examples.starlette_app:app

``POST /upload`` (multipart: every file and field), ``POST /raw`` (the raw body) and ``POST /json``
(``{"image": "<base64>"}``) answer 200 JSON with the SHA-256 of each item the app received, and
guard's verdict. ``/api`` mounts a sub-app with the same views, wrapped in its own
``GuardMiddleware``: routes in the config are relative to the app guard wraps, so ``/upload`` in the
config guards ``POST /api/upload`` there. Behind a proxy that strips a prefix, serve with
``uvicorn --root-path /prefix``: the app and guard both see paths relative to it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from guard import GuardMiddleware

CONFIG = os.environ.get(
    "GUARD_CONFIG", str(Path(__file__).resolve().parents[1] / "config" / "guard.yaml")
)


def item(name: str | None, data: bytes, filename: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "filename": filename,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def answer(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    decision = getattr(request.state, "guard", None)  # guard's Decision: allow, flag, unchecked
    return JSONResponse({"items": items, "guard": decision.action if decision else None})


async def upload(request: Request) -> JSONResponse:
    items = []
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                items.append(item(name, await value.read(), value.filename))
            else:
                items.append(item(name, value.encode()))
    return answer(request, items)


async def raw(request: Request) -> JSONResponse:
    return answer(request, [item(None, await request.body())])


async def json_image(request: Request) -> JSONResponse:
    payload = await request.json()
    return answer(request, [item("image", base64.b64decode(payload["image"]))])


ROUTES = [
    Route("/upload", upload, methods=["POST"]),
    Route("/raw", raw, methods=["POST"]),
    Route("/json", json_image, methods=["POST"]),
]

# The mounted sub-app has its own guard: it sees the sub-app's paths (/upload), not /api/upload.
api = GuardMiddleware(Starlette(routes=ROUTES), config=CONFIG)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await api.aclose()  # a mounted app gets no lifespan events: close its guard's store here


app = Starlette(
    routes=[*ROUTES, Mount("/api", app=api)],
    lifespan=lifespan,
    middleware=[Middleware(GuardMiddleware, config=CONFIG)],
)
