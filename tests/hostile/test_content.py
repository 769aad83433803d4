"""Hostile content types (hostile case H18-H21): the bytes decide, never the declared type.

Every case drives the middleware with a scripted ``receive`` against the real Redis server holding
the list ``spam`` (fixture ``loaded``) and checks the status, the exact refusal body, that the app
was called once with the original bytes or not at all, and that no temporary file is left.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import pytest
from asgi_driver import BOUNDARY, MULTIPART, Recorder, Result, call
from conftest import data_file, encode, photo, run
from test_middleware import ALSO_BLOCKED, BLOCKED, UNRELATED

from guard.config import Config, HttpSettings, ListPolicy, Route
from guard.middleware import GuardMiddleware
from guard.store import Store
from hostile.conftest import assert_clean

REJECTED = {"error": "upload rejected", "list": "spam"}


def guard_for(redis_url: str, *routes: Route, **http: Any) -> tuple[GuardMiddleware, Recorder]:
    """A middleware on the real Redis, with ``/upload`` checking ``spam`` plus ``routes``."""
    recorder = Recorder()
    config = Config(
        lists={"spam": ListPolicy()},
        routes=(*routes, Route(path="/upload", lists=("spam",), methods=frozenset({"POST"}))),
        http=HttpSettings(**http),
    )
    return GuardMiddleware(recorder, config=config, store=Store.from_url(redis_url)), recorder


def expect(result: Result, recorder: Recorder, body: bytes, status: int, error: Any = None) -> None:
    """The status; the app called once with the exact bytes (200) or never; a clean refusal."""
    assert result.status == status, result.body
    if status == 200:
        assert recorder.calls == 1
        assert recorder.bodies == [body]
        return
    assert recorder.calls == 0
    assert_clean(result)
    if isinstance(error, dict):
        assert result.json() == error
    elif error is not None:
        assert result.json() == {"error": error}


def part(data: bytes, content_type: str | None, filename: str | None = "upload.bin") -> bytes:
    """A one-part multipart body with the given declared type (None: no Content-Type)."""
    disposition = 'form-data; name="file"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def blocked_jpeg() -> bytes:
    return data_file(BLOCKED).read_bytes()


def send(
    redis_url: str,
    body: bytes,
    content_type: str,
    *routes: Route,
    path: str = "/upload",
    **http: Any,
) -> tuple[Result, Recorder]:
    guard, recorder = guard_for(redis_url, *routes, **http)
    return run(call(guard, body, content_type=content_type, path=path)), recorder


# --- H18: the declared type disagrees with the bytes -------------------------------------------


@pytest.mark.parametrize(
    ("declared", "filename"),
    [
        pytest.param("image/png", "a.png", id="H18-part-jpeg-as-image-png"),
        pytest.param("application/octet-stream", "a.bin", id="H18-part-jpeg-as-octet-stream"),
        pytest.param("text/plain", "a.txt", id="H18-part-jpeg-as-text-plain"),
        pytest.param(None, "a.jpg", id="H18-part-jpeg-without-content-type"),
    ],
)
def test_blocked_jpeg_in_a_part_is_rejected_whatever_it_is_declared(
    declared: str | None, filename: str | None, loaded: str, no_temp_files: object
) -> None:
    body = part(blocked_jpeg(), declared, filename)
    result, recorder = send(loaded, body, MULTIPART)
    expect(result, recorder, body, 403, REJECTED)


@pytest.mark.parametrize("declared", [None, "text/plain", "image/jpeg"])
def test_H18_binary_image_in_a_text_field_is_refused(
    declared: str | None, loaded: str, no_temp_files: object
) -> None:
    """A part without a filename reaches the app as a str, decoded from the bytes one of several
    ways (replacement characters, latin-1): guard cannot know which image the app would then
    open, so binary image bytes there are 400, blocked or not."""
    error = "an image in a text field must be sent as a file (a part with a filename)"
    for image in (blocked_jpeg(), small(UNRELATED)):
        body = part(image, declared, None)
        result, recorder = send(loaded, body, MULTIPART)
        expect(result, recorder, body, 400, error)


@pytest.mark.parametrize(
    "declared",
    [
        pytest.param("image/png", id="H18-raw-jpeg-as-image-png"),
        pytest.param("application/octet-stream", id="H18-raw-jpeg-as-octet-stream"),
        pytest.param("text/plain", id="H18-raw-jpeg-as-text-plain"),
        pytest.param("application/x-www-form-urlencoded", id="H18-raw-jpeg-as-form"),
    ],
)
def test_blocked_raw_jpeg_is_rejected_whatever_it_is_declared(
    declared: str, loaded: str, no_temp_files: object
) -> None:
    body = blocked_jpeg()
    result, recorder = send(loaded, body, declared)
    expect(result, recorder, body, 403, REJECTED)


def test_H18_benign_jpeg_as_text_plain_reaches_the_app_byte_for_byte(
    loaded: str, no_temp_files: object
) -> None:
    body = data_file(UNRELATED).read_bytes()
    result, recorder = send(loaded, body, "text/plain")
    expect(result, recorder, body, 200)


def test_H18_text_starting_like_a_bitmap_is_text(loaded: str, no_temp_files: object) -> None:
    """ "BM" alone was a BMP signature: "BMW ..." in a form field or text body was refused (422)."""
    text = b"BMW 320d, 2019, 80,000 km, one owner, full service history"
    for body, content_type in (
        (text, "text/plain"),
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="ad"\r\n\r\n'.encode()
            + text
            + f"\r\n--{BOUNDARY}--\r\n".encode(),
            MULTIPART,
        ),
    ):
        result, recorder = send(loaded, body, content_type)
        expect(result, recorder, body, 200)


# --- H19: polyglots -----------------------------------------------------------------------------

ZIP_TAIL = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"payload.html" + b"\x00" * 40 + b"PK\x05\x06"
HTML_TAIL = b"<html><body><script>alert(document.cookie)</script></body></html>"


@pytest.mark.parametrize(
    ("image_format", "tail"),
    [
        pytest.param("PNG", ZIP_TAIL, id="H19-png-plus-zip"),
        pytest.param("PNG", HTML_TAIL, id="H19-png-plus-html"),
        pytest.param("JPEG", ZIP_TAIL + HTML_TAIL, id="H19-jpeg-plus-zip-and-html"),
        pytest.param("GIF", HTML_TAIL, id="H19-gif-plus-html"),
    ],
)
def test_blocked_image_with_a_payload_appended_is_hashed_as_the_image(
    image_format: str, tail: bytes, loaded: str, no_temp_files: object
) -> None:
    body = encode(photo(BLOCKED), image_format) + tail
    result, recorder = send(loaded, body, "image/png")
    expect(result, recorder, body, 403, REJECTED)


def test_H19_trailing_data_is_not_refused_by_itself(loaded: str, no_temp_files: object) -> None:
    """Documented, not done: guard does not reject bytes after the image's end marker. A benign
    image with a payload appended reaches the app as sent; serving uploads back is the app's
    risk."""
    body = encode(photo(UNRELATED), "PNG") + ZIP_TAIL + HTML_TAIL
    result, recorder = send(loaded, body, "image/png")
    expect(result, recorder, body, 200)


# --- H20: images inside JSON --------------------------------------------------------------------

JSON_ROUTE = Route(
    path="/profile",
    lists=("spam",),
    methods=frozenset({"POST"}),
    json_fields=("avatar", "user.photo", "gallery[]", "posts[].image"),
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def small(name: str, image_format: str = "JPEG") -> bytes:
    picture = photo(name)
    return encode(picture.resize((picture.width // 2, picture.height // 2)), image_format)


def send_json(
    redis_url: str, body: bytes, content_type: str = "application/json", **http: Any
) -> tuple[Result, Recorder]:
    return send(redis_url, body, content_type, JSON_ROUTE, path="/profile", **http)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(lambda b, o: {"avatar": "data:image/png;base64," + b}, id="H20-data-url"),
        pytest.param(
            lambda b, o: {"avatar": "data:text/plain;base64," + b}, id="H20-data-url-lies"
        ),
        pytest.param(lambda b, o: {"avatar": b}, id="H20-plain-base64"),
        pytest.param(lambda b, o: {"user": {"photo": b, "name": "x"}}, id="H20-nested-object"),
        pytest.param(lambda b, o: {"gallery": [o, o, b]}, id="H20-third-item-of-array"),
        pytest.param(
            lambda b, o: {"posts": [{"image": o}, {"text": "hi"}, {"image": b}]},
            id="H20-array-of-objects",
        ),
    ],
)
def test_blocked_image_in_a_configured_json_field_is_rejected(
    document: Any, loaded: str, no_temp_files: object
) -> None:
    blocked = b64(small(BLOCKED, "PNG"))
    other = b64(small(UNRELATED))
    body = json.dumps(document(blocked, other)).encode()
    result, recorder = send_json(loaded, body)
    expect(result, recorder, body, 403, REJECTED)


def test_H20_json_declared_as_text_is_still_scanned(loaded: str, no_temp_files: object) -> None:
    """Starlette's request.json() ignores the declared type, so guard does too."""
    body = json.dumps({"avatar": b64(small(BLOCKED))}).encode()
    result, recorder = send_json(loaded, body, "text/plain")
    expect(result, recorder, body, 403, REJECTED)


@pytest.mark.parametrize(
    "encode_text",
    [
        pytest.param(lambda t: b"\xef\xbb\xbf" + t.encode(), id="utf-8-BOM"),
        pytest.param(lambda t: t.encode("utf-16"), id="utf-16-BOM"),
        pytest.param(lambda t: t.encode("utf-16-le"), id="utf-16-le"),
        pytest.param(lambda t: t.encode("utf-16-be"), id="utf-16-be"),
        pytest.param(lambda t: t.encode("utf-32"), id="utf-32-BOM"),
        pytest.param(lambda t: t.encode("utf-32-le"), id="utf-32-le"),
        pytest.param(lambda t: ("\n  " + t).encode(), id="utf-8-leading-space"),
    ],
)
@pytest.mark.parametrize("content_type", ["text/plain", "application/json", ""])
def test_json_in_any_encoding_json_loads_reads_is_scanned(
    encode_text: Any, content_type: str, loaded: str, no_temp_files: object
) -> None:
    """Starlette's request.json() and Django's json.loads(request.body) read UTF-8 with a BOM,
    UTF-16 and UTF-32 (json.loads detects them): guard reads the same JSON, so the blocked
    image inside is found whatever the declared type."""
    text = json.dumps({"avatar": b64(small(BLOCKED))})
    body = encode_text(text)
    assert json.loads(body) == json.loads(text)  # what the app would read
    result, recorder = send_json(loaded, body, content_type)
    expect(result, recorder, body, 403, REJECTED)


@pytest.mark.parametrize(
    ("image", "status", "error"),
    [
        pytest.param(
            lambda: small(BLOCKED, "PNG"),
            400,
            "an image in a text field must be sent as a file (a part with a filename)",
            id="binary-png",
        ),
        pytest.param(
            lambda: b"P3\n2 2\n255\n" + b"0 0 0 255 255 255 " * 2,
            415,
            "image format PPM is not allowed (allowed: BMP, GIF, JPEG, PNG, WEBP)",
            id="ascii-ppm",
        ),
    ],
)
@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "application/x-url-encoded"]
)
def test_an_image_in_a_urlencoded_value_is_refused(
    image: Any, status: int, error: str, content_type: str, loaded: str, no_temp_files: object
) -> None:
    """A urlencoded form's value whose bytes are an image is one, however the form is split
    (Quart also reads application/x-url-encoded): binary ones are mangled differently by each
    framework's text decoding (400), an ASCII PPM reaches the app intact (415, not allowed)."""
    value = urllib.parse.quote_from_bytes(image()).encode()
    for body in (b"a=1&avatar=" + value, b"a=1;avatar=" + value, b"avatar=" + value + b"&b=2"):
        result, recorder = send(loaded, body, content_type, JSON_ROUTE, path="/profile")
        expect(result, recorder, body, status, error)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/mixed; boundary=abc",
        "multipart/form-data, text/plain; boundary=abc",
        "multipart/related; boundary=abc",
    ],
)
def test_other_multipart_types_are_refused(
    content_type: str, loaded: str, no_temp_files: object
) -> None:
    """Parsers disagree on whether these are forms: none is accepted on a guarded route."""
    body = b'--abc\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--abc--\r\n'
    result, recorder = send_json(loaded, body, content_type)
    assert result.status == 400 and "is not multipart/form-data" in result.json()["error"]
    assert recorder.calls == 0


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"avatar": None}, id="H20-null-field"),
        pytest.param({"name": "no image here"}, id="H20-absent-field"),
        pytest.param({"gallery": []}, id="H20-empty-array"),
    ],
)
def test_json_without_a_blocked_image_reaches_the_app(
    document: Any, loaded: str, no_temp_files: object
) -> None:
    body = json.dumps(document).encode()
    result, recorder = send_json(loaded, body)
    expect(result, recorder, body, 200)


def test_H20_benign_image_in_json_reaches_the_app_byte_for_byte(
    loaded: str, no_temp_files: object
) -> None:
    body = json.dumps({"avatar": b64(small(UNRELATED)), "gallery": [b64(small(UNRELATED))]})
    result, recorder = send_json(loaded, body.encode())
    expect(result, recorder, body.encode(), 200)
    assert recorder.states[0].images == 2


def _wrapped(text: str) -> str:
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def _duplicate() -> bytes:
    benign, blocked = b64(small(UNRELATED)), b64(small(ALSO_BLOCKED))
    return f'{{"avatar": "{benign}", "avatar": "{blocked}"}}'.encode()


def _url_safe() -> bytes:
    data = small(BLOCKED)
    text = base64.urlsafe_b64encode(data).decode()
    assert text != b64(data)  # the blocked JPEG's base64 has + or / in it
    return json.dumps({"avatar": text}).encode()


def _unpadded() -> bytes:
    data = small(BLOCKED)
    data += b"\x00" * ((1 - len(data)) % 3)  # len % 3 == 1: the base64 ends in "=="
    text = b64(data)
    assert text.endswith("==")
    return json.dumps({"avatar": text.rstrip("=")}).encode()


def _deep(levels: int) -> bytes:
    return ('{"avatar": null, "x": ' + "[" * levels + "]" * levels + "}").encode()


MALFORMED = "malformed JSON body: "


@pytest.mark.parametrize(
    ("make", "status", "error"),
    [
        pytest.param(_duplicate, 400, MALFORMED + "duplicate key 'avatar'", id="H20-duplicate-key"),
        pytest.param(
            lambda: json.dumps({"avatar": _wrapped(b64(small(BLOCKED)))}).encode(),
            400,
            MALFORMED + "avatar is not standard base64 (padded, no whitespace)",
            id="H20-base64-with-line-breaks",
        ),
        pytest.param(
            _url_safe,
            400,
            MALFORMED + "avatar is not standard base64 (padded, no whitespace)",
            id="H20-url-safe-alphabet",
        ),
        pytest.param(
            _unpadded,
            400,
            MALFORMED + "avatar is not standard base64 (padded, no whitespace)",
            id="H20-unpadded",
        ),
        pytest.param(
            lambda: json.dumps({"avatar": "data:image/png," + b64(small(BLOCKED))}).encode(),
            400,
            MALFORMED + "avatar is a data: URL without ;base64,",
            id="H20-data-url-not-base64",
        ),
        pytest.param(
            lambda: b'{"avatar": 42}',
            400,
            MALFORMED + "avatar must be a base64 string",
            id="H20-number-field",
        ),
        pytest.param(
            lambda: b'{"gallery": "not a list"}',
            400,
            MALFORMED + "gallery[] must be an array",
            id="H20-array-path-on-a-string",
        ),
        pytest.param(
            lambda: _deep(33),
            400,
            MALFORMED + "nested deeper than max_json_depth=32",
            id="H20-depth-33",
        ),
        pytest.param(
            lambda: _deep(200_000),
            400,
            MALFORMED + "nested deeper than max_json_depth=32",
            id="H20-depth-200000",
        ),
        pytest.param(
            lambda: b'{"avatar": "' + base64.b64encode(b"GIF89a") + b'"',
            400,
            None,
            id="H20-truncated-json",
        ),
        pytest.param(
            lambda: json.dumps({"avatar": b64(b"just text, not an image")}).encode(),
            415,
            "not an image: the JSON field avatar holds no image",
            id="H20-base64-of-text",
        ),
        pytest.param(
            lambda: json.dumps({"avatar": None, "pad": "x" * 1_000_000}).encode(),
            413,
            "JSON body is over max_json_bytes=1000000",
            id="H20-over-max-json-bytes",
        ),
        pytest.param(
            lambda: json.dumps({"gallery": [b64(small(UNRELATED))] * 17}).encode(),
            413,
            "request has more than max_images=16 images",
            id="H20-over-max-images",
        ),
    ],
)
def test_json_bodies_guard_cannot_read_as_the_app_would_are_refused(
    make: Any, status: int, error: str | None, loaded: str, no_temp_files: object
) -> None:
    body = make()
    result, recorder = send_json(loaded, body, max_json_bytes=1_000_000)
    expect(result, recorder, body, status, error)
    if error is None:
        assert result.json()["error"].startswith(MALFORMED)


def test_H20_unconfigured_json_is_not_scanned(loaded: str, no_temp_files: object) -> None:
    """Documented: a route without json_fields passes JSON bodies unscanned, blocked image or
    not."""
    body = json.dumps({"avatar": b64(blocked_jpeg())}).encode()
    result, recorder = send(loaded, body, "application/json")
    expect(result, recorder, body, 200)
    assert recorder.states[0].images == 0


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (("avatar",), None),
        (("a.b[].c", "x-y", "$ref"), None),
        (("",), "json_fields has an invalid path"),
        (("a..b",), "json_fields has an invalid path"),
        (("a[0]",), "json_fields has an invalid path"),
        ("avatar", "json_fields must be a list of JSON field paths"),
    ],
)
def test_H20_json_field_paths_are_validated(paths: Any, message: str | None) -> None:
    if message is None:
        assert Route("/p", ("spam",), json_fields=paths).json_fields == tuple(paths)
        return
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        Route("/p", ("spam",), json_fields=paths)


# --- H21: raw image bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "image_format"),
    [
        pytest.param("image/webp", "WEBP", id="H21-raw-webp"),
        pytest.param("", "WEBP", id="H21-raw-webp-no-content-type"),
        pytest.param("", "JPEG", id="H21-raw-jpeg-no-content-type"),
        pytest.param("image/webp", "PNG", id="H21-raw-png-declared-webp"),
    ],
)
def test_blocked_raw_body_is_rejected(
    content_type: str, image_format: str, loaded: str, no_temp_files: object
) -> None:
    body = encode(photo(BLOCKED), image_format)
    result, recorder = send(loaded, body, content_type)
    expect(result, recorder, body, 403, REJECTED)


@pytest.mark.parametrize("content_type", ["image/webp", ""], ids=["H21-webp", "H21-untyped"])
def test_benign_raw_body_reaches_the_app_byte_for_byte(
    content_type: str, loaded: str, no_temp_files: object
) -> None:
    body = encode(photo(UNRELATED), "WEBP")
    result, recorder = send(loaded, body, content_type)
    expect(result, recorder, body, 200)
