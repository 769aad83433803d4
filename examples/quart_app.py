"""Quart, with guard around its ASGI app (``app.asgi_app``, Quart's place for ASGI middleware).

    GUARD_CONFIG=config/guard.yaml uvicorn examples.quart_app:app

``POST /upload`` (multipart: ``request.files`` and ``request.form``), ``POST /raw`` (the raw
body) and ``POST /json`` (``{"image": "<base64>"}`` via ``request.get_json()``) answer 200 JSON
with the SHA-256 of each item the app received, and guard's verdict.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from quart import Quart, request

from guard import GuardMiddleware

CONFIG = os.environ.get(
    "GUARD_CONFIG", str(Path(__file__).resolve().parents[1] / "config" / "guard.yaml")
)

app = Quart(__name__)
app.asgi_app = GuardMiddleware(app.asgi_app, config=CONFIG)  # type: ignore[method-assign]


def item(name: str | None, data: bytes, filename: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "filename": filename,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def answer(items: list[dict[str, Any]]) -> dict[str, Any]:
    # Quart has no request.state: guard's Decision is in the ASGI scope's state.
    decision = request.scope.get("state", {}).get("guard")
    return {"items": items, "guard": decision.action if decision else None}


@app.post("/upload")
async def upload() -> dict[str, Any]:
    files = await request.files
    form = await request.form
    items = [item(name, file.read(), file.filename) for name, file in files.items(multi=True)]
    items += [item(name, value.encode()) for name, value in form.items(multi=True)]
    return answer(items)


@app.post("/raw")
async def raw() -> dict[str, Any]:
    return answer([item(None, await request.get_data())])


@app.post("/json")
async def json_image() -> dict[str, Any]:
    payload = await request.get_json()
    return answer([item("image", base64.b64decode(payload["image"]))])
