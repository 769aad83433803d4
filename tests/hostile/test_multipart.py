"""Hostile multipart bodies: hostile cases H10-H17.

guard reads only canonical multipart (guard.multipart): part headers of at most 8 lines and
8 KiB (H14), boundaries of 1 to 70 characters (H15), no preamble or epilogue (H11), no RFC 2231
parameters (H16). It adds the part count while the body streams (H12), the body limit (H13),
judging bytes rather than names (H16) and the image cap (H17).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgi_driver import BOUNDARY, MULTIPART
from conftest import LOCAL_PHOTOS, encode, photo, run
from test_middleware import BLOCKED, UNRELATED, guarded, jpeg

import guard.middleware
from guard.middleware import Decision, GuardMiddleware
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

MiB = 1024 * 1024
B = BOUNDARY.encode()
END = b"--" + B + b"--\r\n"


def part(headers: bytes, data: bytes, boundary: bytes = B) -> bytes:
    """One part: ``headers`` are the raw header lines (each ending CRLF)."""
    return b"--" + boundary + b"\r\n" + headers + b"\r\n" + data + b"\r\n"


def field(name: str, value: bytes = b"") -> bytes:
    return part(f'Content-Disposition: form-data; name="{name}"\r\n'.encode(), value)


def file(name: str, filename: str, data: bytes, content_type: str = "image/jpeg") -> bytes:
    return part(
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n".encode(),
        data,
    )


def send(
    guard: GuardMiddleware,
    body: bytes,
    content_type: str = MULTIPART,
    chunk: int = 64 * 1024,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[Any, Server, float]:
    """One request with a correct Content-Length: the result, the server and the CPU seconds
    this process spent on it (all threads). CPU time, not wall-clock: the bounds below are on
    guard's work (a parser gone quadratic), which other processes' load cannot inflate."""
    server = Server(script=messages(body, chunk))
    scope = scope_for(
        [("content-length", str(len(body))), *(headers or [])], content_type=content_type
    )
    started = time.process_time()
    result = run(serve(guard, server, scope))
    return result, server, time.process_time() - started


# --- H10: ReDoS in Content-Type parameters ------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "blocked", "status"),
    [
        pytest.param(
            'application/x-www-form-urlencoded; !="' + "\\" * 100_000,
            False,
            200,
            id="H10-urlencoded-100k-backslashes",
        ),
        pytest.param(
            MULTIPART + '; !="' + "\\" * 100_000,
            True,
            400,
            id="H10-multipart-100k-backslashes",
        ),
    ],
)
def test_H10_redos_content_type(content_type: str, blocked: bool, status: int, loaded: str) -> None:
    """guard's parameter parser runs in linear time (CVE-2024-24762 was a regex that did not):
    the answer is as quick as for a plain header. A urlencoded body without images passes (app
    called); the multipart one is refused: an unterminated quoted parameter is not canonical."""
    image = jpeg(BLOCKED) if blocked else b""
    body = file("f", "a.jpg", image) + END if blocked else b"a=b"
    guard, app = guarded(loaded)
    result, _, elapsed = send(guard, body, content_type)
    assert result.status == status
    assert elapsed < 1.0, f"{elapsed:.2f} CPU s"
    if blocked:
        assert_clean(result)
        assert app.calls == 0
    else:
        assert app.calls == 1 and app.bodies == [body]


# --- H11: CR/LF preamble and epilogue -----------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "status"),
    [
        pytest.param(b"\r\n" * 5_000_000, b"", 400, id="H11-5M-CRLF-preamble"),
        pytest.param(b"", b"x" * 20_000_000, 400, id="H11-20MB-epilogue"),
        pytest.param(b"hello\r\n", b"", 400, id="H11-text-preamble"),
        pytest.param(b"", b"\r\n" * 5_000_000, 403, id="H11-5M-CRLF-after-the-end"),
    ],
)
def test_H11_preamble_and_epilogue(
    before: bytes, after: bytes, status: int, loaded: str, no_temp_files: SpoolDir
) -> None:
    """Megabytes around the parts cost linear time within max_body_bytes (raised here to 32 MiB
    so the case is reached). Parsers disagree on a preamble and on parts after the closing
    delimiter (Django keeps parsing), so any preamble and any epilogue but whitespace is refused;
    with whitespace after the end the blocked image inside is found."""
    body = before + file("f", "a.jpg", jpeg(BLOCKED)) + END + after
    guard, app = guarded(loaded, max_body_bytes=32 * MiB)
    result, server, elapsed = send(guard, body)
    assert result.status == status
    assert_clean(result)
    if status == 400:
        rule = "no preamble" if before else "only whitespace may follow the closing boundary"
        assert result.json()["error"].startswith("malformed multipart body: ")
        assert rule in result.json()["error"]
    assert app.calls == 0
    # Every chunk once, then the disconnect watcher that runs while guard decides.
    assert server.receives == -(-len(body) // (64 * 1024)) + 1
    assert elapsed < 2.0, f"{elapsed:.2f} CPU s for {len(body)} bytes"


# --- H12: thousands of tiny parts ---------------------------------------------------------------


def _end_of_delimiter(body: bytes, count: int) -> int:
    """Bytes up to and including the ``count``-th CRLF--boundary delimiter."""
    delimiter, index = b"\r\n--" + B, -1
    for _ in range(count):
        index = body.index(delimiter, index + 1)
    return index + len(delimiter)


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([field(f"f{i}") for i in range(10_000)], id="H12-10000-empty-fields"),
        pytest.param(
            [file(f"f{i}", f"{i}.jpg", b"") for i in range(10_000)], id="H12-10000-empty-files"
        ),
    ],
)
def test_H12_thousands_of_parts_stop_early(parts: list[bytes], no_temp_files: SpoolDir) -> None:
    """max_parts=64: 413 once the streamed delimiters show more than 64 parts, long before the
    body ends (4 KiB chunks: the read stops within a chunk of the 66th delimiter)."""
    body = b"".join(parts) + END
    guard, app = unreachable(max_parts=64)
    chunk = 4096
    result, server, _ = send(guard, body, chunk=chunk)
    assert (result.status, result.json()) == (
        413,
        {"error": "multipart body has more than max_parts=64 parts"},
    )
    assert_clean(result)
    assert app.calls == 0
    total = -(-len(body) // chunk)
    assert server.receives == -(-_end_of_delimiter(body, 66) // chunk)
    assert server.receives < total // 50, (server.receives, total)


@pytest.mark.parametrize(
    ("count", "status"),
    [
        pytest.param(64, 200, id="H12-limit-64-parts-allowed"),
        pytest.param(65, 413, id="H12-limit-plus-1"),
    ],
)
def test_H12_part_limit_is_exact(count: int, status: int) -> None:
    """At the limit the request passes; one more part is refused (by the parser, which counts
    exactly once the body is in: the streaming count only refuses what is surely over)."""
    body = b"".join(field(f"f{i}", b"v") for i in range(count)) + END
    guard, app = unreachable(max_parts=64)
    result, _, _ = send(guard, body)
    assert result.status == status
    if status == 200:
        assert app.bodies == [body] and app.states == [Decision("allow", images=0)]
    else:
        assert_clean(result)
        assert result.json() == {"error": "multipart body has more than max_parts=64 parts"}
        assert app.calls == 0


# --- H13: one enormous non-file field -----------------------------------------------------------


def test_H13_enormous_field_refused_at_the_body_limit(no_temp_files: SpoolDir) -> None:
    """A 64 MiB filename-less field, streamed with no Content-Length, against max_body_bytes=
    2 MiB: 413 at the limit, reading stops there, memory stays under the limit plus 4 chunks.
    (guard has no separate per-part limit: the body limit bounds every part.)"""
    limit, size, chunk = 2 * MiB, 64 * MiB, 64 * 1024
    head = b"--" + B + b'\r\nContent-Disposition: form-data; name="comment"\r\n\r\n'
    piece = b"c" * chunk

    def body() -> Iterator[Message]:
        yield {"type": "http.request", "body": head, "more_body": True}
        for _ in range(size // chunk):
            yield {"type": "http.request", "body": piece, "more_body": True}
        yield {"type": "http.request", "body": b"\r\n" + END, "more_body": False}

    guard, app = unreachable(max_body_bytes=limit)
    server = Server(script=body())
    result, peak = run(serve_traced(guard, server, scope_for()))
    assert (result.status, result.json()) == (
        413,
        {"error": f"request body is over max_body_bytes={limit}"},
    )
    assert_clean(result)
    assert app.calls == 0
    assert server.receives == 1 + (limit - len(head)) // chunk + 1
    assert peak < limit + 4 * chunk, f"peak {peak} bytes"


# --- H14: unbounded part headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        pytest.param(
            b"X-A: b\r\n" * 100_000,
            "a part's headers are over 8192 bytes",
            id="H14-100000-header-lines",
        ),
        pytest.param(b"X-A: b\r\n" * 8, "a part has more than 8 headers", id="H14-9-header-lines"),
        pytest.param(
            b"X-A: " + b"b" * 10_000_000 + b"\r\n",
            "a part's headers are over 8192 bytes",
            id="H14-10MB-header-value",
        ),
    ],
)
def test_H14_unbounded_part_headers(headers: bytes, error: str, no_temp_files: SpoolDir) -> None:
    """A part may have 8 header lines in 8 KiB (clients send 2 or 3; python-multipart allows 8
    of 4,224 bytes since CVE-2026-42561): 400 past either. The parser runs once the body is in,
    so the time is bounded by max_body_bytes (16 MiB here), not by the header cap."""
    body = part(b'Content-Disposition: form-data; name="a"\r\n' + headers, b"x") + END
    guard, app = unreachable(max_body_bytes=16 * MiB)
    result, _, elapsed = send(guard, body)
    assert (result.status, result.json()) == (400, {"error": f"malformed multipart body: {error}"})
    assert_clean(result)
    assert app.calls == 0
    assert elapsed < 2.0, f"{elapsed:.2f} CPU s"


# --- H15: bad boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        pytest.param(
            "multipart/form-data",
            field("a", b"x") + END,
            "malformed multipart body: missing boundary",
            id="H15-missing-boundary",
        ),
        pytest.param(
            "multipart/form-data; boundary=" + "b" * 300,
            part(b'Content-Disposition: form-data; name="a"\r\n', b"x", b"b" * 300)
            + b"--"
            + b"b" * 300
            + b"--\r\n",
            "malformed multipart body: the boundary must be 1 to 70 characters from "
            "A-Z a-z 0-9 ' ( ) + _ , - . / : = ?",
            id="H15-300-byte-boundary",
        ),
        pytest.param(
            "multipart/form-data; boundary=otherboundary",
            field("a", b"x") + END,
            "malformed multipart body: the body must start with its first boundary (no preamble)",
            id="H15-mismatched-delimiter",
        ),
        pytest.param(
            MULTIPART,
            field("a", b"x"),
            "malformed multipart body: it ends before its closing boundary",
            id="H15-no-closing-delimiter",
        ),
    ],
)
def test_H15_bad_boundary(content_type: str, body: bytes, error: str) -> None:
    guard, app = unreachable()
    result, _, _ = send(guard, body, content_type)
    assert (result.status, result.json()) == (400, {"error": error})
    assert_clean(result)
    assert app.calls == 0


# --- H16: parser differentials ------------------------------------------------------------------


def _blocked() -> bytes:
    return jpeg(BLOCKED)


@pytest.mark.parametrize(
    ("disposition", "status"),
    [
        pytest.param(b'form-data; name="upload"; filename="a.txt"', 403, id="H16a-txt-filename"),
        pytest.param(b'form-data; name="notes"', 400, id="H16a-plain-field"),
        pytest.param(b'form-data; name="x"; filename=""', 403, id="H16a-empty-filename"),
        pytest.param(b"form-data; name=notes; filename=a.jpg", 403, id="H16a-unquoted-params"),
        pytest.param(
            b'form-data; name="upload"; filename="a.txt"; filename*=utf-8\'\'cat.png',
            400,
            id="H16a-filename-star",
        ),
        pytest.param(
            b"form-data; name*=utf-8''upload; filename=\"a.txt\"", 400, id="H16a-name-star"
        ),
        pytest.param(b"form-data; name*=utf-8''upload", 400, id="H16a-name-star-no-filename"),
    ],
)
@pytest.mark.parametrize(
    "part_type",
    [
        pytest.param(b"", id="no-type"),
        pytest.param(b"Content-Type: text/plain\r\n", id="text-plain"),
    ],
)
def test_H16a_bytes_not_names(
    disposition: bytes, status: int, part_type: bytes, loaded: str
) -> None:
    """Whatever the part's filename or declared type, a blocked image's bytes are found; binary
    image bytes in a text field (no filename) are refused, since the app gets them as a str
    decoded one of several ways. RFC 2231 parameters (``filename*``, ``name*``) are refused:
    Django and Werkzeug decode them, python-multipart does not, so the parsers would not agree
    on what is a file."""
    body = part(b"Content-Disposition: " + disposition + b"\r\n" + part_type, _blocked()) + END
    guard, app = guarded(loaded)
    result, _, _ = send(guard, body)
    if status == 403:
        expected = {"error": "upload rejected", "list": "spam"}
    elif b"*" in disposition:
        star = "filename*" if b"filename*" in disposition else "name*"
        expected = {
            "error": "malformed multipart body: a Content-Disposition has an RFC 2231 "
            f"parameter {star}: not accepted"
        }
    else:
        # Frameworks hand text fields to the app as str, each decoding binary its own way.
        expected = {
            "error": "an image in a text field must be sent as a file (a part with a filename)"
        }
    assert (result.status, result.json()) == (status, expected)
    assert_clean(result)
    assert app.calls == 0


@pytest.mark.parametrize("encoding", ["base64", "BASE64", "quoted-printable", "binary"])
def test_H16b_content_transfer_encoding_is_refused(encoding: str) -> None:
    """python-multipart's FormParser decodes base64 parts, Starlette's parser does not: guard
    cannot know which bytes the app will see, so any Content-Transfer-Encoding is 400 (RFC 7578
    section 4.7 deprecates it)."""
    body = (
        part(
            b'Content-Disposition: form-data; name="f"; filename="a.jpg"\r\n'
            b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n",
            base64.b64encode(_blocked()),
        )
        + END
    )
    guard, app = unreachable()
    result, _, _ = send(guard, body)
    assert (result.status, result.json()) == (
        400,
        {"error": "malformed multipart body: Content-Transfer-Encoding is not accepted"},
    )
    assert_clean(result)
    assert app.calls == 0


@pytest.mark.parametrize(
    "types",
    [
        pytest.param(["text/plain", MULTIPART], id="H16-second-content-type-multipart"),
        pytest.param([MULTIPART, "text/plain"], id="H16-first-content-type-multipart"),
    ],
)
def test_H16_duplicate_content_type_is_refused(types: list[str]) -> None:
    """Starlette reads the first of two Content-Type headers, guard's dict the last: one of them
    would skip a multipart body the other parses. Two are 400, read or not."""
    body = file("f", "a.jpg", _blocked()) + END
    guard, app = unreachable()
    server = Server(script=[])
    headers = [("content-length", str(len(body)))] + [("content-type", t) for t in types]
    result = run(serve(guard, server, scope_for(headers, content_type=None)))
    assert (result.status, result.json()) == (400, {"error": "more than one content-type header"})
    assert_clean(result)
    assert app.calls == 0 and server.receives == 0


# --- H17: many images, the blocked one last ------------------------------------------------------


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the images guard hashes."""
    calls: list[int] = []
    real = guard.middleware.hash_bytes

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(guard.middleware, "hash_bytes", counting)
    return calls


@pytest.mark.parametrize(
    ("count", "status", "error", "hashes"),
    [
        pytest.param(
            50, 413, "request has 50 images, over max_images=16", 0, id="H17-50-images-over-cap"
        ),
        pytest.param(16, 403, "upload rejected", 16, id="H17-16-images-blocked-last"),
    ],
)
def test_H17_many_images_blocked_last(
    count: int, status: int, error: str, hashes: int, loaded: str, hashed: list[int]
) -> None:
    """Past max_images the request is refused before any image is hashed, never "check the
    first 16 and pass the rest"; at the cap every image is hashed and the last one rejects."""
    small = encode(photo(LOCAL_PHOTOS[4]).resize((64, 48)), "JPEG")
    files = [file(f"f{i}", f"{i}.jpg", small) for i in range(count - 1)]
    body = b"".join(files) + file("last", "z.jpg", jpeg(BLOCKED)) + END
    guard, app = guarded(loaded, max_images=16, max_parts=100)
    result, _, _ = send(guard, body)
    assert result.status == status and result.json()["error"] == error
    assert_clean(result)
    assert app.calls == 0
    assert len(hashed) == hashes


def test_H17_unrelated_images_under_the_cap_pass(loaded: str) -> None:
    """The control: 16 images none of which is blocked reach the app byte for byte."""
    small = encode(photo(UNRELATED).resize((64, 48)), "JPEG")
    body = b"".join(file(f"f{i}", f"{i}.jpg", small) for i in range(16)) + END
    guard, app = guarded(loaded, max_images=16)
    result, _, _ = send(guard, body)
    assert result.status == 200 and app.bodies == [body]
    assert app.states == [Decision("allow", images=16)]
