"""A small Starlette app with an image upload, guarded by guard.

    uvicorn examples.app:app       (from the repository root, after `guard load blocklists/spam/`)

`GET /` serves an upload form; `POST /upload` takes the multipart field `file` and answers 200 JSON
describing what arrived. The review page for moderators is at `/guard/` (docs/review.md): sign in
with a name and password from GUARD_REVIEW_USERS (`name:password`), or as `moderator` with the
password the app logs at start when that is unset.
`config/guard.yaml` guards `POST /upload` with the list `spam`: a blocked image never reaches
`upload()` (guard answers 403), a flagged one arrives with `request.state.guard.action == "flag"`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route

from guard import GuardMiddleware, review_app

CONFIG = os.environ.get(
    "GUARD_CONFIG", str(Path(__file__).resolve().parents[1] / "config" / "guard.yaml")
)

FORM = """<!doctype html>
<title>guard demo</title>
<h1>Upload an image</h1>
<form action="/upload" method="post" enctype="multipart/form-data">
  <input type="file" name="file" accept="image/*"> <button>Upload</button>
</form>
<p><a href="/guard/">Review page</a> (moderators)</p>
"""


async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(FORM)


async def upload(request: Request) -> JSONResponse:
    """What arrived: the file's size and digest (the exact bytes sent), and guard's verdict."""
    form = await request.form()
    file = form.get("file")
    decision = getattr(request.state, "guard", None)
    described = None
    if isinstance(file, UploadFile):
        data = await file.read()
        described = {
            "filename": file.filename,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return JSONResponse(
        {
            "file": described,
            "fields": sorted(
                name for name, value in form.multi_items() if not isinstance(value, UploadFile)
            ),
            "guard": decision.action if decision else None,
        }
    )


def review_users() -> dict[str, str] | None:
    """GUARD_REVIEW_USERS if set (review_app reads it), else a one-off moderator password."""
    if os.environ.get("GUARD_REVIEW_USERS"):
        return None
    password = secrets.token_urlsafe(12)
    logging.getLogger("guard").warning(
        "review page at /guard/: sign in as moderator / %s (set GUARD_REVIEW_USERS to choose)",
        password,
    )
    return {"moderator": password}


app = Starlette(
    routes=[
        Route("/", index),
        Route("/upload", upload, methods=["POST"]),
        Mount("/guard", review_app(CONFIG, users=review_users())),
    ],
    middleware=[Middleware(GuardMiddleware, config=CONFIG)],
)
