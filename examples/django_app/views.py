"""``POST /upload`` (multipart: ``request.FILES`` and ``request.POST``), ``POST /raw`` (the raw
body) and ``POST /json`` (``{"image": "<base64>"}``) answer 200 JSON with the SHA-256 of each item
the view received, and guard's verdict."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import JsonResponse
from django.views.decorators.http import require_POST


def item(name: str | None, data: bytes, filename: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "filename": filename,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def answer(request: ASGIRequest, items: list[dict[str, Any]]) -> JsonResponse:
    # Django has no request.state: guard's Decision is in the ASGI scope's state.
    decision = request.scope.get("state", {}).get("guard")
    return JsonResponse({"items": items, "guard": decision.action if decision else None})


@require_POST
def upload(request: ASGIRequest) -> JsonResponse:
    items = [
        item(name, file.read(), file.name)
        for name, files in request.FILES.lists()
        for file in files
    ]
    items += [
        item(name, value.encode()) for name, values in request.POST.lists() for value in values
    ]
    return answer(request, items)


@require_POST
def raw(request: ASGIRequest) -> JsonResponse:
    return answer(request, [item(None, request.body)])


@require_POST
def json_image(request: ASGIRequest) -> JsonResponse:
    payload = json.loads(request.body)
    return answer(request, [item("image", base64.b64decode(payload["image"]))])
