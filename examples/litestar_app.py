"""Litestar, wrapped whole in guard (outside Litestar, so guard also gets the lifespan events).

    GUARD_CONFIG=config/guard.yaml uvicorn examples.litestar_app:app

``POST /upload`` (multipart: every file and field, read with ``request.form()``), ``POST /raw``
(the raw body) and ``POST /json`` (``{"image": "<base64>"}``, decoded by Litestar) answer 200
JSON with the SHA-256 of each item the app received, and guard's verdict.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, post
from litestar.datastructures import UploadFile

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


def answer(request: Request[Any, Any, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    decision = request.state.get("guard")  # guard's Decision: allow, flag, unchecked
    return {"items": items, "guard": decision.action if decision else None}


@post("/upload", status_code=200)
async def upload(request: Request[Any, Any, Any]) -> dict[str, Any]:
    items = []
    form = await request.form()
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            items.append(item(name, await value.read(), value.filename))
        else:
            items.append(item(name, value.encode()))
    return answer(request, items)


@post("/raw", status_code=200)
async def raw(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return answer(request, [item(None, await request.body())])


@post("/json", status_code=200)
async def json_image(request: Request[Any, Any, Any], data: dict[str, Any]) -> dict[str, Any]:
    return answer(request, [item("image", base64.b64decode(data["image"]))])


litestar_app = Litestar(route_handlers=[upload, raw, json_image])
# Outside Litestar, not in its `middleware=[...]` (which wraps each route handler, after routing,
# and never sees the lifespan): guard sees every request and closes its store at shutdown.
app = GuardMiddleware(litestar_app, config=CONFIG)
