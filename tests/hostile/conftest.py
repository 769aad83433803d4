"""Helpers for the hostile-input tests (hostile cases H01-H40).

``tests/hostile`` is a package (it has an ``__init__.py``) so that this file imports as
``hostile.conftest`` and does not shadow ``tests/conftest.py``, which every test module imports as
``conftest``. Use: ``from hostile.conftest import assert_clean, Server, serve, stream``; the
fixtures below (``no_temp_files``, and ``loaded`` re-exported from test_middleware) need no
import.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from asgi_driver import MULTIPART, Recorder, Result
from test_middleware import (
    loaded,  # noqa: F401  (a fixture: the real Redis with lists loaded)
    make_config,
)

from guard.middleware import GuardMiddleware
from guard.store import Store

#: A refusal body is a one-line JSON object; anything longer is probably leaking something.
MAX_REFUSAL_BYTES = 300
_LEAKS = ("Traceback", 'File "', "guard/", ".py", "site-packages", "python_multipart", "PIL")
#: An exception class name (ValueError, MultipartParseError, DecompressionBombWarning, ...).
_EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b")
_GUARD_ERRORS = ("GuardError", "BodyTooLarge", "MalformedBody", "BodyTimeout", "NotAnImage")


def assert_clean(result: Result) -> None:
    """The response is a short JSON refusal with an "error" key, and leaks nothing internal."""
    assert result.status is not None, "no response was sent"
    text = result.body.decode("utf-8", "replace")
    assert len(result.body) <= MAX_REFUSAL_BYTES, f"refusal body too long: {text[:200]!r}"
    for leak in _LEAKS:
        assert leak not in text, f"response leaks {leak!r}: {text!r}"
    assert not _EXCEPTION_NAME.search(text), f"response names an exception: {text!r}"
    for name in _GUARD_ERRORS:
        assert name not in text, f"response names an exception: {text!r}"
    payload = json.loads(result.body)
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), text
    assert result.headers.get("content-type") == "application/json"


@dataclass(frozen=True)
class SpoolDir:
    """The folder every temporary file of the test goes to (``tempfile.tempdir``)."""

    path: Path

    def open_files(self) -> list[str]:
        """Files of this process open in the folder, deleted or not.

        On Linux ``tempfile.TemporaryFile`` uses O_TMPFILE: the file never has a name in the
        folder, so an empty folder proves nothing; an open descriptor pointing into it does.
        """
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(self.path) + os.sep):
                found.append(target)
        return found


@pytest.fixture
def no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SpoolDir]:
    """Temporary files go to a fresh folder; afterwards it must be empty and none left open."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see open temporary files")
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    spool = SpoolDir(folder)
    yield spool
    assert list(folder.iterdir()) == [], "temporary files left behind"
    assert spool.open_files() == [], "temporary files left open"


Message = dict[str, Any]


def stream(total: int, chunk: int = 64 * 1024, fill: bytes = b"x") -> Iterator[Message]:
    """``total`` bytes as http.request messages, lazily (one chunk object: O(chunk) memory)."""
    piece = fill * chunk
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        sent += size
        yield {
            "type": "http.request",
            "body": piece if size == chunk else piece[:size],
            "more_body": sent < total,
        }


def messages(body: bytes, chunk: int = 64 * 1024) -> list[Message]:
    """``body`` as http.request messages of ``chunk`` bytes (one empty message for b"")."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    return [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]


@dataclass
class Server:
    """The server side of one request: scripted messages, then what a real server does.

    Counts receive() calls. After the script, receive() blocks until the response is complete and
    then says http.disconnect (as uvicorn and httpx's ASGITransport do). With
    ``disconnect_after_body`` the client is gone once the last body message is delivered, and
    receive() says so at once. ``send`` raises OSError once the client is gone, as uvicorn's
    ClientDisconnect does.
    """

    script: Iterable[Message]
    disconnect_after_body: bool = False
    receives: int = 0
    sent: list[Message] = field(default_factory=list)
    _script: Iterator[Message] | None = None
    _done: anyio.Event | None = None
    _gone: bool = False

    async def receive(self) -> Message:
        self.receives += 1
        if self._script is None:
            self._script = iter(self.script)
        message = next(self._script, None)
        if message is not None:
            last = message["type"] == "http.request" and not message.get("more_body", False)
            if message["type"] == "http.disconnect" or (last and self.disconnect_after_body):
                self._gone = True
            return message
        if not self.disconnect_after_body:
            await self.done.wait()
        self._gone = True
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self._gone:
            raise OSError("client disconnected")
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done.set()

    @property
    def done(self) -> anyio.Event:
        if self._done is None:
            self._done = anyio.Event()
        return self._done

    def result(self) -> Result:
        start = next((m for m in self.sent if m["type"] == "http.response.start"), None)
        return Result(
            status=start["status"] if start else None,
            headers={k.decode(): v.decode() for k, v in start["headers"]} if start else {},
            body=b"".join(
                m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"
            ),
            messages=self.sent,
        )


def scope_for(
    headers: list[tuple[str, str]] | None = None,
    *,
    content_type: str | None = MULTIPART,
    path: str = "/upload",
    method: str = "POST",
) -> dict[str, Any]:
    """An HTTP scope; headers are given exactly (no Content-Length is added)."""
    raw = [(b"content-type", content_type.encode())] if content_type else []
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": raw,
        "client": ("203.0.113.7", 5555),
    }


async def serve(guard: Any, server: Server, scope: dict[str, Any]) -> Result:
    """Run one request through ``guard`` against ``server``; the response as a Result."""
    await guard(scope, server.receive, server.send)
    return server.result()


async def serve_traced(guard: Any, server: Server, scope: dict[str, Any]) -> tuple[Result, int]:
    """:func:`serve`, with the peak memory traced while it ran (bytes)."""
    tracemalloc.start()
    try:
        result = await serve(guard, server, scope)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def unreachable(**http: Any) -> tuple[GuardMiddleware, Recorder]:
    """A guard whose store is a closed port: for requests decided before any lookup."""
    app = Recorder()
    store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)
    return GuardMiddleware(app, config=make_config(**http), store=store), app
