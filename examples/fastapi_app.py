"""FastAPI, with guard around the whole app.

    GUARD_CONFIG=config/guard.yaml uvicorn examples.fastapi_app:app

``POST /upload`` takes ``file: UploadFile`` (and an optional ``comment`` field), ``POST
/upload-bytes`` takes ``file: bytes = File()`` (FastAPI fills it from a file part or a plain
field alike), ``POST /raw`` the raw body and ``POST /json`` a model with a base64 ``image``.
Each answers 200 JSON with the SHA-256 of every item the app received, and guard's verdict.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from pydantic import BaseModel

from guard import GuardMiddleware

CONFIG = os.environ.get(
    "GUARD_CONFIG", str(Path(__file__).resolve().parents[1] / "config" / "guard.yaml")
)

app = FastAPI()
app.add_middleware(GuardMiddleware, config=CONFIG)


def item(name: str | None, data: bytes, filename: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "filename": filename,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def answer(request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    decision = getattr(request.state, "guard", None)  # guard's Decision: allow, flag, unchecked
    return {"items": items, "guard": decision.action if decision else None}


@app.post("/upload")
async def upload(
    request: Request, file: UploadFile, comment: Annotated[str | None, Form()] = None
) -> dict[str, Any]:
    items = [item("file", await file.read(), file.filename)]
    if comment is not None:
        items.append(item("comment", comment.encode()))
    return answer(request, items)


@app.post("/upload-bytes")
async def upload_bytes(request: Request, file: Annotated[bytes, File()]) -> dict[str, Any]:
    return answer(request, [item("file", file)])


@app.post("/raw")
async def raw(request: Request) -> dict[str, Any]:
    return answer(request, [item(None, await request.body())])


class ImagePayload(BaseModel):
    image: str


@app.post("/json")
async def json_image(request: Request, payload: ImagePayload) -> dict[str, Any]:
    return answer(request, [item("image", base64.b64decode(payload.image))])
