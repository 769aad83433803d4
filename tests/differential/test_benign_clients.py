"""Benign uploads from real clients are all accepted, and guard finds exactly the images sent.

The corpus in ``benign/`` is what curl, requests, httpx, aiohttp, Go's mime/multipart, node's
fetch (undici) and headless Chromium (a real form submit and a fetch() of a FormData) sent for
the same uploads, captured byte for byte by tools/capture_clients.py. Each ``<client>--<case>``
has the body and a JSON record of the request (Content-Type, headers, client version) and of
what the client was asked to send.

For every capture, guard's ``find_images`` must accept the body and return the fixtures that were
sent, bytes-equal and in order (none for text-only bodies and an empty file input). As a control
that each capture is a valid upload, Starlette's ``Request.form()`` (python-multipart) must read
the same fields: the same names, text values and file bytes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from guard.errors import GuardError
from guard.uploads import find_images

from .parsers import asgi_scope, receive_for

#: Slow (every framework parser over the recorded client bodies): not in the fast path.
pytestmark = pytest.mark.slow

CORPUS = Path(__file__).parent / "benign"
RECORDS = {path.stem: path for path in sorted(CORPUS.glob("*--*.json"))}
CAPTURED = sorted(stem for stem in RECORDS if (CORPUS / f"{stem}.body").exists())
CLIENTS = (
    "curl",
    "requests",
    "httpx",
    "aiohttp",
    "aiohttp-unquoted",
    "go",
    "node",
    "chromium-form",
    "chromium-fetch",
)
CASES = (
    "file",
    "file-fields",
    "two-files",
    "unicode-filename",
    "quote-filename",
    "dquote-filename",
    "backslash-filename",
    "text-crlf",
    "empty-file",
    "field-name",
)


def _record(stem: str) -> dict[str, Any]:
    return json.loads(RECORDS[stem].read_text(encoding="utf-8"))


def _fixture(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def _capture(stem: str) -> tuple[dict[str, Any], bytes]:
    return _record(stem), (CORPUS / f"{stem}.body").read_bytes()


def test_the_corpus_has_every_client_and_case() -> None:
    missing = [f"{c}--{k}" for c in CLIENTS for k in CASES if f"{c}--{k}" not in RECORDS]
    assert not missing, f"re-run tools/capture_clients.py: {missing}"
    for stem in RECORDS:
        record = _record(stem)
        assert record["expressible"] == (stem in CAPTURED), stem
    size = sum(path.stat().st_size for path in CORPUS.iterdir())
    assert size < 300_000


@pytest.mark.parametrize("stem", CAPTURED)
def test_guard_accepts_and_finds_exactly_the_images_sent(stem: str) -> None:
    record, body = _capture(stem)
    expected = [_fixture(part["file"]) for part in record["sent"] if part.get("file")]
    try:
        images = find_images(body, record["content_type"], max_parts=64, max_images=16)
    except GuardError as error:
        pytest.fail(f"guard refused the benign upload {stem}: {type(error).__name__}: {error}")
    assert [len(image) for image in images] == [len(image) for image in expected]
    assert images == expected


async def _form(body: bytes, content_type: str) -> list[tuple[str, Any]]:
    scope = asgi_scope(body, content_type)
    receive = receive_for(body)
    request = Request(scope, receive)
    async with request.form(max_files=64, max_fields=64) as form:
        items = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                value = ("file", value.filename, await value.read())
            items.append((name, value))
        return items


@pytest.mark.parametrize("stem", CAPTURED)
def test_control_starlette_reads_the_fields_sent(stem: str) -> None:
    record, body = _capture(stem)
    items = asyncio.run(_form(body, record["content_type"]))
    assert [name for name, _ in items] == [part["name"] for part in record["sent"]]
    for (_, value), part in zip(items, record["sent"], strict=True):
        if "value" in part:
            assert value == part["value"]
        elif part["file"] is None:
            # An empty file input: an empty upload, or an empty text field when the client left
            # the filename out (httpx, node).
            assert value == "" or value[2] == b""
        else:
            assert isinstance(value, tuple), f"{part['name']} was read as a text field"
            assert value[2] == _fixture(part["file"])
