"""Drive an ASGI app directly: a recording app, multipart bodies, a scripted receive.

Shared by the middleware tests, the hostile-input tests (tests/hostile/) and tools/fuzz.py (which
imports it as ``tests.asgi_driver``: keep it free of test-only imports such as conftest).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

BOUNDARY = "guardtestboundary"
#: How :func:`call`'s client ends the body: sends it all, stalls before the end, or disconnects.
Ending = Literal["complete", "stall", "disconnect"]


@dataclass
class Recorder:
    """An ASGI app that reads the whole body, remembers it, and answers 200.

    ``problems`` notes a replay that is not a well-formed body: a message other than
    ``http.request`` before the body ended, or one longer than ``max_message`` bytes.
    """

    calls: int = 0
    bodies: list[bytes] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    receives: list[Any] = field(default_factory=list)
    after_body: list[dict[str, Any]] = field(default_factory=list)
    poll_after_body: bool = False
    max_message: int | None = None
    problems: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Forget every call: one Recorder behind one middleware, for many requests."""
        self.calls = 0
        for record in (self.bodies, self.states, self.receives, self.after_body, self.problems):
            record.clear()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        self.receives.append(receive)
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                self.problems.append(f"replay gave {message['type']} before the body ended")
                break
            chunk = message.get("body", b"")
            if self.max_message is not None and len(chunk) > self.max_message:
                self.problems.append(f"replayed a {len(chunk)}-byte message")
            body += chunk
            if not message.get("more_body", False):
                break
        if self.poll_after_body:
            self.after_body.append(await receive())
        self.bodies.append(bytes(body))
        self.states.append(scope.get("state", {}).get("guard"))
        payload = json.dumps({"sha256": hashlib.sha256(body).hexdigest()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def multipart(
    *files: tuple[str, bytes], fields: dict[str, str] | None = None, part_headers: str = ""
) -> bytes:
    out = io.BytesIO()
    for name, value in (fields or {}).items():
        out.write(
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for i, (filename, data) in enumerate(files):
        out.write(
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file{i}"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n{part_headers}\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class Result:
    status: int | None
    headers: dict[str, str]
    body: bytes
    messages: list[dict[str, Any]]

    def json(self) -> Any:
        """The body as JSON. A refusal's ``request_id`` must be there and match its
        ``x-request-id`` header; it is taken out, as it differs on every request."""
        data = json.loads(self.body)
        if isinstance(data, dict) and "x-request-id" in self.headers:
            assert data.pop("request_id") == self.headers["x-request-id"]
        return data


async def call(
    guard: Any,
    body: bytes,
    *,
    content_type: str = MULTIPART,
    path: str = "/upload",
    method: str = "POST",
    chunk: int = 65536,
    pieces: Sequence[bytes] | None = None,
    headers: list[tuple[str, str]] | None = None,
    content_length: bool | int = True,
    receive: Any = None,
    linger: float = 10.0,
    ending: Ending = "complete",
) -> Result:
    """Drive the middleware with a scripted receive: the body in chunks (or in ``pieces``), then,
    like a real client, nothing until the response is complete (at most ``linger`` seconds), then a
    disconnect.

    ``content_length``: True declares the body's length, an int that value (a lying client), False
    none. ``ending``: "stall" or "disconnect" marks the last piece as not the last (more_body), then
    sends nothing ever again, or a disconnect at once.
    """
    raw_headers = [(b"content-type", content_type.encode())] if content_type else []
    if content_length is not False:
        declared = len(body) if content_length is True else content_length
        raw_headers.append((b"content-length", str(declared).encode()))
    raw_headers += [(k.encode(), v.encode()) for k, v in headers or []]
    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": ("203.0.113.7", 5555),
    }
    if pieces is None:
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    pieces = list(pieces) or [b""]
    last = len(pieces) - 1 if ending == "complete" else len(pieces)
    script = [
        {"type": "http.request", "body": p, "more_body": i < last} for i, p in enumerate(pieces)
    ]

    answered = anyio.Event()

    async def scripted() -> dict[str, Any]:
        if script:
            return script.pop(0)
        if ending == "stall":
            await anyio.sleep_forever()  # the middleware's body timeout must end it
        elif ending == "complete":
            with anyio.move_on_after(linger):
                await answered.wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    await guard(scope, receive or scripted, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    return Result(
        status=start["status"] if start else None,
        headers={k.decode(): v.decode() for k, v in start["headers"]} if start else {},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        messages=sent,
    )
