"""Hostile bodies and the ASGI receive/send contract: hostile cases H01-H09.

Each test drives GuardMiddleware directly with a scripted server (hostile.conftest.Server) and
asserts the status, that nothing internal leaks, whether the app was called (with the exact
bytes), that temporary files are gone, and a bound on reads, memory or time where the case is
about one. Cases refused before any lookup use a store that cannot be reached: they must never
need it.
"""

from __future__ import annotations

import gzip
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import anyio
import pytest
from asgi_driver import Recorder, multipart
from conftest import LOCAL_PHOTOS, data_file, encode, photo, run
from starlette.requests import Request
from starlette.responses import StreamingResponse
from test_middleware import BLOCKED, UNRELATED, guarded, jpeg, make_config

from guard.middleware import Decision, GuardMiddleware
from guard.store import Store
from hostile.conftest import (
    Message,
    Server,
    SpoolDir,
    assert_clean,
    messages,
    scope_for,
    serve,
    serve_traced,
    unreachable,
)
from hostile.conftest import stream as stream_of

MiB = 1024 * 1024


def refuses_reads() -> Server:
    """A server whose receive() must never be awaited (the test fails if it is)."""
    return Server(script=[])


# --- H01: Content-Length over the limit ---------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        pytest.param(
            [("content-length", "10737418240"), ("expect", "100-continue")],
            413,
            "request body is over max_body_bytes=1000000",
            id="H01-10GiB-expect-100-continue",
        ),
        pytest.param(
            [("content-length", "9" * 5000)],
            413,
            "request body is over max_body_bytes=1000000",
            id="H01-5000-digit-length",
        ),
        pytest.param(
            [("content-length", "0" * 5000 + "12")],
            400,
            "request body is shorter than its Content-Length (12)",
            id="H01-zero-padded-length-is-read",
        ),
        pytest.param(
            [("content-length", "\u00b2")],
            400,
            "invalid Content-Length: '\u00b2'",
            id="H01-non-ascii-digit",
        ),
        pytest.param(
            [("content-length", "-1")], 400, "invalid Content-Length: '-1'", id="H01-negative"
        ),
        pytest.param(
            [("content-length", "10"), ("content-length", "10")],
            400,
            "more than one content-length header",
            id="H01-two-lengths",
        ),
    ],
)
def test_H01_content_length_over_limit(
    headers: list[tuple[str, str]], status: int, error: str
) -> None:
    """Refused from the headers alone: receive() is never awaited, so a client waiting on
    `Expect: 100-continue` never uploads (uvicorn sends 100 Continue on the first receive)."""
    guard, app = unreachable(max_body_bytes=1_000_000)
    zero_padded = headers[0][1].startswith("0")
    server = Server(script=messages(b"x")) if zero_padded else refuses_reads()
    result = run(serve(guard, server, scope_for(headers)))
    assert (result.status, result.json()) == (status, {"error": error})
    assert_clean(result)
    assert app.calls == 0
    assert server.receives == (1 if zero_padded else 0)


# --- H02: no Content-Length, body over the limit ------------------------------------------------


def test_H02_chunked_body_over_limit_stops_reading(no_temp_files: SpoolDir) -> None:
    """64 MiB offered in 64 KiB chunks against max_body_bytes=2 MiB: 413 as soon as the count
    passes the limit, memory within the limit plus a chunk (the spool rolls to a file at 1 MiB)."""
    limit, offered, chunk = 2 * MiB, 64 * MiB, 64 * 1024
    guard, app = unreachable(max_body_bytes=limit)
    server = Server(script=stream_of(offered, chunk))
    scope = scope_for(content_type="application/octet-stream")
    result, peak = run(serve_traced(guard, server, scope))
    assert (result.status, result.json()) == (
        413,
        {"error": f"request body is over max_body_bytes={limit}"},
    )
    assert_clean(result)
    assert app.calls == 0
    assert server.receives == limit // chunk + 1  # the first chunk past the limit, no more
    assert peak < limit + 4 * chunk, f"peak {peak} bytes"  # was 3.36 MB with a joined copy


# --- H03: Content-Length that lies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "body", "chunk", "reads", "error"),
    [
        pytest.param(
            100,
            b"x" * MiB,
            64 * 1024,
            1,
            "request body is longer than its Content-Length (100)",
            id="H03a-100-declared-1MiB-sent",
        ),
        pytest.param(
            100,
            b"x" * MiB,
            10,
            11,
            "request body is longer than its Content-Length (100)",
            id="H03a-100-declared-sent-in-10-byte-chunks",
        ),
        pytest.param(
            1000,
            b"x" * 10,
            64 * 1024,
            1,
            "request body is shorter than its Content-Length (1000)",
            id="H03a-body-ends-short",
        ),
    ],
)
def test_H03a_content_length_lies(
    declared: int, body: bytes, chunk: int, reads: int, error: str, no_temp_files: SpoolDir
) -> None:
    """The server frames the body; one that disagrees with its Content-Length means something
    between the client and guard is broken. guard stops at the first byte over the declared
    length (never reading more than it declared) and answers 400 rather than guess which length
    the app will believe."""
    guard, app = unreachable()
    server = Server(script=messages(body, chunk))
    scope = scope_for([("content-length", str(declared))], content_type="image/jpeg")
    result = run(serve(guard, server, scope))
    assert (result.status, result.json()) == (400, {"error": error})
    assert_clean(result)
    assert app.calls == 0
    assert server.receives == reads


def test_H03b_declared_length_never_arrives(no_temp_files: SpoolDir) -> None:
    """Content-Length: 1000000, 10 bytes, then silence: 408 at body_timeout."""
    guard, app = unreachable(body_timeout=0.3, spool_memory_bytes=0)

    def stalls() -> Iterator[Message]:
        yield {"type": "http.request", "body": b"x" * 10, "more_body": True}

    server = Server(script=stalls())  # then blocks: the response never completes on its own
    scope = scope_for([("content-length", "1000000")], content_type="image/jpeg")
    started = time.monotonic()
    result = run(serve(guard, server, scope))
    elapsed = time.monotonic() - started
    assert (result.status, result.json()) == (
        408,
        {"error": "request body not received within body_timeout=0.3s"},
    )
    assert_clean(result)
    assert app.calls == 0
    assert 0.3 <= elapsed < 0.9


# --- H04: slow drip -----------------------------------------------------------------------------


def test_H04_slow_drip_gets_408_at_the_total_deadline(no_temp_files: SpoolDir) -> None:
    """One byte every 20 ms: no single wait is long, so only a deadline around the whole receive
    loop stops it. The spool (a file: spool_memory_bytes=0) and the limiter are released."""
    guard, app = unreachable(body_timeout=0.3, spool_memory_bytes=0)
    dripped = []

    async def drip() -> Message:
        await anyio.sleep(0.02)
        dripped.append(1)
        return {"type": "http.request", "body": b"x", "more_body": True}

    scope = scope_for([("content-length", str(5 * MiB))], content_type="image/jpeg")
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def request() -> None:
        await guard(scope, drip, send)

    started = time.monotonic()
    run(request())
    elapsed = time.monotonic() - started
    result = Server(script=[], sent=sent).result()
    assert (result.status, result.json()) == (
        408,
        {"error": "request body not received within body_timeout=0.3s"},
    )
    assert_clean(result)
    assert app.calls == 0
    assert 0.3 <= elapsed < 0.9
    assert 3 <= len(dripped) <= 16  # it was reading all along, not stuck on one receive
    assert guard.limiter.borrowed_tokens == 0


# --- H05: the client leaves ----------------------------------------------------------------------


def test_H05_disconnect_mid_upload(no_temp_files: SpoolDir) -> None:
    """Half the body, then http.disconnect: no response, app not called, spool file closed."""
    guard, app = unreachable(spool_memory_bytes=0)
    body = multipart(("a.jpg", b"\xff\xd8" + b"x" * 200_000))
    half = messages(body[: len(body) // 2], 64 * 1024)
    half[-1]["more_body"] = True
    server = Server(script=[*half, {"type": "http.disconnect"}])
    scope = scope_for([("content-length", str(len(body)))])
    result = run(serve(guard, server, scope))
    assert result.messages == [] and result.status is None
    assert app.calls == 0
    assert server.receives == len(half) + 1


class _SlowStore(Store):
    """A store whose lookups take longer than any decision deadline."""

    async def lookup_under(self, *args: Any, **kwargs: Any) -> Any:
        await anyio.sleep(10)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/upload", id="H05-disconnect-during-decision-fail-closed"),
        pytest.param("/open", id="H05-disconnect-during-decision-fail-open"),
    ],
)
def test_H05_disconnect_while_awaiting_the_store(
    path: str, loaded: str, no_temp_files: SpoolDir
) -> None:
    """The client leaves while guard awaits a store slower than decision_timeout=2s.

    guard watches the server's receive while it decides: the disconnect ends the decision at
    once, on fail-closed and fail-open routes alike. Nothing is sent, the app is not called.
    """
    app = Recorder(poll_after_body=True)
    store = _SlowStore.from_url(loaded)
    guard = GuardMiddleware(
        app, config=make_config(decision_timeout=2.0, spool_memory_bytes=0), store=store
    )
    body = multipart(("a.jpg", jpeg(UNRELATED)))
    server = Server(script=messages(body), disconnect_after_body=True)
    scope = scope_for([("content-length", str(len(body)))], path=path)
    started = time.monotonic()
    run(serve(guard, server, scope))
    elapsed = time.monotonic() - started
    assert server.sent == []  # nothing reached the gone client
    assert elapsed < 1.0  # the disconnect, not the 2 s deadline, ended it
    assert app.calls == 0


# --- H06: a legitimate large upload -------------------------------------------------------------


class _OffLoopFile:
    """A temporary file that fails the test if it is written, read or sought on the event loop
    (asyncio.run runs the loop in the main thread; anyio's worker threads are others)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def _off_loop(self) -> None:
        assert threading.current_thread() is not threading.main_thread(), "file I/O on the loop"

    def write(self, data: bytes) -> int:
        self._off_loop()
        return self._file.write(data)

    def read(self, size: int = -1) -> bytes:
        self._off_loop()
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._off_loop()
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()


def test_H06_large_upload_replayed_byte_identical_off_the_loop(
    loaded: str, no_temp_files: SpoolDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 MB under a 16 MB limit (a faster analogue of 40 MB under 50 MB): the app gets the same
    bytes in <= 64 KiB messages, more_body False only on the last; the spool rolled to a file in
    tempfile.tempdir, created, written and read only in worker threads."""
    created: list[bool] = []
    make_file = tempfile.TemporaryFile

    def temporary_file() -> _OffLoopFile:
        created.append(threading.current_thread() is not threading.main_thread())
        return _OffLoopFile(make_file())

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    image = jpeg(UNRELATED)
    body = multipart(("u.jpg", image), fields={"notes": "n" * 12_000_000})
    assert 12_000_000 < len(body) < 16 * MiB
    received: list[Message] = []
    open_during_request: list[list[str]] = []
    recorder = Recorder()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        open_during_request.append(no_temp_files.open_files())

        async def recording() -> Message:
            message = await receive()
            received.append(message)
            return message

        await recorder(scope, recording, send)

    guard = GuardMiddleware(
        app, config=make_config(max_body_bytes=16 * MiB), store=Store.from_url(loaded)
    )
    server = Server(script=messages(body, 60_000))
    result = run(serve(guard, server, scope_for([("content-length", str(len(body)))])))
    assert result.status == 200
    assert recorder.calls == 1 and recorder.bodies == [body]
    assert recorder.states == [Decision("allow", images=1)]
    assert all(len(m["body"]) <= 64 * 1024 for m in received)
    assert [m["more_body"] for m in received] == [True] * (len(received) - 1) + [False]
    assert len(received) == -(-len(body) // (64 * 1024))
    assert created == [True]  # one spool file, created off the loop
    assert len(open_during_request[0]) == 1  # it lives in tempfile.tempdir while the app runs


# --- H07: the app polls receive() after the body ------------------------------------------------


def test_H07_receive_after_the_replay_is_the_servers(loaded: str) -> None:
    """A Starlette StreamingResponse listens for http.disconnect while it streams. After the last
    replayed chunk guard hands over to the server's receive, which blocks until the response is
    done: a handful of calls in all, never the body again (a naive replay was polled 26,519
    times in 150 ms, hostile case H07)."""
    polls: list[Message] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def counting() -> Message:
            message = await receive()
            polls.append(message)
            return message

        request = Request(scope, counting)
        assert await request.body() == body

        async def slowly() -> Any:
            for _ in range(5):
                await anyio.sleep(0.03)
                yield b"x"

        await StreamingResponse(slowly())(scope, counting, send)

    guard, _ = guarded(loaded, app=app)
    body = multipart(("u.jpg", jpeg(UNRELATED)))
    chunks = messages(body, 4096)
    server = Server(script=chunks)
    result = run(serve(guard, server, scope_for([("content-length", str(len(body)))])))
    assert (result.status, result.body) == (200, b"xxxxx")
    replayed = -(-len(body) // (64 * 1024))
    assert b"".join(m["body"] for m in polls[:replayed]) == body  # the body, once
    assert [m["more_body"] for m in polls[:replayed]] == [True] * (replayed - 1) + [False]
    assert polls[replayed:] == [{"type": "http.disconnect"}]  # then one blocking poll
    # guard's reads, its disconnect watcher while it decides (cancelled), the app's one poll
    assert server.receives == len(chunks) + 2


# --- H08: what guard does not check -------------------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param({"type": "websocket", "path": "/upload", "headers": []}, id="H08-websocket"),
        pytest.param({"type": "lifespan"}, id="H08-lifespan"),
        pytest.param(
            {"type": "http", "method": "GET", "path": "/upload", "headers": []}, id="H08-GET"
        ),
        pytest.param(
            {"type": "http", "method": "POST", "path": "/elsewhere", "headers": []},
            id="H08-POST-outside-routes",
        ),
    ],
)
def test_H08_passes_through_with_zero_body_reads(scope: dict[str, Any]) -> None:
    """The app gets the server's own receive; guard awaits it zero times, needs no store.

    Lifespan is the one exception to "no wrapper": guard may have to tell an app that started
    to shut down after guard's own start-up checks failed. Its wrapper hands the app the
    server's messages as they are, and guard reads none itself.
    """
    guard, app = unreachable()
    server = Server(script=[{"type": "http.request", "body": b"abc", "more_body": False}])

    async def request() -> None:
        await guard(scope, server.receive, server.send)

    run(request())
    assert app.calls == 1
    [given] = app.receives
    assert server.receives == (1 if scope["type"] == "http" else 0)  # the app's own read only
    if scope["type"] == "lifespan":
        message = run(given())
        assert message == {"type": "http.request", "body": b"abc", "more_body": False}
        assert server.receives == 1  # the app's read reached the server's receive
        return
    assert given == server.receive  # the bound method itself: no wrapper, no copy
    if scope["type"] == "http":
        assert app.bodies == [b"abc"]


# --- H09: compressed request bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("encodings", "named"),
    [
        pytest.param(["gzip"], "gzip", id="H09-gzip"),
        pytest.param(["GZip"], "gzip", id="H09-gzip-any-case"),
        pytest.param(["identity, gzip"], "gzip", id="H09-gzip-after-identity-token"),
        pytest.param(["gzip", "identity"], "gzip", id="H09-gzip-then-identity-header"),
        pytest.param(["identity", "br"], "br", id="H09-identity-then-br-header"),
        pytest.param(["deflate"], "deflate", id="H09-deflate"),
    ],
)
def test_H09_content_encoding_is_refused(encodings: list[str], named: str) -> None:
    """guard does not decode request bodies (no setting offers it), so a compressed body would
    reach the app unscanned: 415 from the headers, whichever header line or token says so."""
    blocked = gzip.compress(data_file(BLOCKED).read_bytes())
    guard, app = unreachable()
    headers = [("content-length", str(len(blocked)))]
    headers += [("content-encoding", value) for value in encodings]
    server = refuses_reads()
    result = run(serve(guard, server, scope_for(headers, content_type="image/jpeg")))
    assert (result.status, result.json()) == (
        415,
        {"error": f"Content-Encoding {named} is not accepted on this route"},
    )
    assert_clean(result)
    assert app.calls == 0 and server.receives == 0


def test_H09_identity_is_not_an_encoding(loaded: str) -> None:
    """The control: `Content-Encoding: identity` is read and checked like no header at all."""
    body = encode(photo(LOCAL_PHOTOS[1]), "JPEG")
    guard, app = guarded(loaded)
    headers = [("content-length", str(len(body))), ("content-encoding", "identity")]
    server = Server(script=messages(body))
    result = run(serve(guard, server, scope_for(headers, content_type="image/jpeg")))
    assert result.status == 403 and app.calls == 0
    assert_clean(result)
