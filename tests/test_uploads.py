"""guard.uploads.find_images on its own: request bodies given as bytes, the exact images found
and the exact errors raised, for every body kind guard reads (multipart, raw, urlencoded, JSON,
MessagePack). No Redis, no ASGI, no decoding: only which bytes are images and where they are."""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import msgspec
import pytest
from asgi_driver import BOUNDARY, MULTIPART
from conftest import encode
from PIL import Image

from guard.errors import BodyTooLarge, MalformedBody, NotAnImage
from guard.uploads import MIN_IMAGE_BYTES, JsonScan, find_images

PNG = encode(Image.new("RGB", (16, 16), (200, 30, 30)), "PNG")
JPEG = encode(Image.new("RGB", (16, 16), (30, 200, 30)), "JPEG")
GIF = encode(Image.new("P", (16, 16), 3), "GIF")
#: An image that is valid UTF-8 text (an ASCII PPM): the only kind a text field may carry.
PPM = b"P3 2 2 255\n" + b"0 0 0 255 255 255\n" * 2
NOT_IMAGE = b"just some plain text bytes, no picture in them"
#: A format guard names by its signature but never opens: found, to be refused by format later.
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"


def find(body: bytes, content_type: str, **options: Any) -> list[bytes]:
    options.setdefault("max_parts", 100)
    options.setdefault("max_images", 10)
    return find_images(body, content_type, **options)


def raises(kind: type[Exception], message: str, body: bytes, content_type: str, **options: Any):
    with pytest.raises(kind) as raised:
        find(body, content_type, **options)
    assert str(raised.value) == message
    return raised.value


def form(*parts: tuple[str, str | None, bytes], content_type: str | None = None) -> bytes:
    """A canonical multipart body: (name, filename or None, data) per part."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type is not None and filename is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


# --- multipart ---------------------------------------------------------------------------------


def test_multipart_file_parts_are_the_images_in_order() -> None:
    body = form(("a", "a.png", PNG), ("note", None, b"hello"), ("b", "b.jpg", JPEG))
    assert find(body, MULTIPART) == [PNG, JPEG]


def test_multipart_images_are_found_whatever_the_filename_says() -> None:
    body = form(("a", "notes.txt", GIF), ("b", "", PNG), ("c", "c.pdf", PDF))
    assert find(body, MULTIPART) == [GIF, PNG, PDF]


def test_multipart_without_images_and_with_an_empty_file_part_finds_none() -> None:
    assert find(form(("note", None, b"hello"), ("file", "", b"")), MULTIPART) == []
    assert find(form(("file", "empty.png", b""), content_type="image/png"), MULTIPART) == []


def test_a_multipart_text_field_holding_a_utf8_image_is_an_image() -> None:
    assert find(form(("note", None, PPM)), MULTIPART) == [PPM]


def test_a_multipart_text_field_holding_a_binary_image_is_refused() -> None:
    raises(
        MalformedBody,
        "an image in a text field must be sent as a file (a part with a filename)",
        form(("note", None, PNG)),
        MULTIPART,
    )


@pytest.mark.parametrize("declared", [None, "image/png", "application/octet-stream"])
def test_a_file_part_that_is_no_image_is_refused(declared: str | None) -> None:
    raises(
        NotAnImage,
        "not an image: a file part's bytes are no image format guard accepts",
        form(("file", "doc.pdf", NOT_IMAGE), content_type=declared),
        MULTIPART,
    )


@pytest.mark.parametrize(
    "content_type",
    ["multipart/mixed; boundary=x", "multipart/form-data, text/plain", "text/form-data"],
)
def test_other_multipart_types_are_refused(content_type: str) -> None:
    media = content_type.partition(";")[0].strip().lower()
    raises(
        MalformedBody,
        f"malformed multipart body: the content type {media[:40]!r} is not multipart/form-data",
        form(("a", "a.png", PNG)),
        content_type,
    )


def test_a_noncanonical_form_is_refused_with_the_rule_it_breaks() -> None:
    raises(
        MalformedBody,
        "malformed multipart body: missing boundary",
        form(("a", "a.png", PNG)),
        "multipart/form-data",
    )


def test_multipart_counts_parts_and_images() -> None:
    three = form(("a", "a.png", PNG), ("b", "b.png", PNG), ("c", "c.png", PNG))
    assert find(three, MULTIPART, max_parts=3, max_images=3) == [PNG] * 3
    raises(
        BodyTooLarge,
        "request has 3 images, over max_images=2",
        three,
        MULTIPART,
        max_images=2,
    )
    raises(
        BodyTooLarge,
        "multipart body has more than max_parts=2 parts",
        three,
        MULTIPART,
        max_parts=2,
    )


# --- raw bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["image/png", "IMAGE/JPEG; q=1", "application/octet-stream"]
)
@pytest.mark.parametrize("image", [PNG, JPEG, GIF])
def test_a_raw_body_declared_a_file_is_one_image(content_type: str, image: bytes) -> None:
    assert find(image, content_type) == [image]


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream"])
def test_a_raw_body_declared_a_file_must_be_an_image(content_type: str) -> None:
    media = content_type.partition(";")[0]
    raises(
        NotAnImage,
        f"not an image: the body is declared {media} but its bytes are no image",
        NOT_IMAGE,
        content_type,
    )


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/json", "x/y"])
def test_an_image_body_is_an_image_whatever_it_is_declared(content_type: str) -> None:
    assert find(PNG, content_type) == [PNG]


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/xml"])
def test_other_raw_bodies_hold_no_image(content_type: str) -> None:
    assert find(b"hello, world", content_type) == []
    assert find(NOT_IMAGE, content_type) == []


# --- urlencoded forms ----------------------------------------------------------------------------

URLENCODED = "application/x-www-form-urlencoded"


def test_urlencoded_values_that_are_images_are_found() -> None:
    image = urllib.parse.quote_from_bytes(PPM)
    body = f"a=1&img={image};other={image}&b=".encode()
    assert find(body, URLENCODED) == [PPM, PPM]  # ";" splits too (some parsers split there)
    assert find(b"a=1&b=2", URLENCODED) == []
    assert find(f"img={image}".encode(), "application/x-url-encoded") == [PPM]  # Quart's spelling


def test_urlencoded_plus_is_a_space() -> None:
    body = b"img=" + urllib.parse.quote_from_bytes(PPM).replace("%20", "+").encode()
    assert b"+" in body and find(body, URLENCODED) == [PPM]


def test_a_binary_image_in_a_urlencoded_value_is_refused() -> None:
    raises(
        MalformedBody,
        "an image in a text field must be sent as a file (a part with a filename)",
        b"img=" + urllib.parse.quote_from_bytes(PNG).encode(),
        URLENCODED,
    )


def test_urlencoded_field_count_is_capped() -> None:
    assert find(b"a=1&b=2&c=3", URLENCODED, max_parts=3) == []
    raises(
        BodyTooLarge, "form body has more than max_parts=2 fields", b"a=1&b=2&c=3", URLENCODED,
        max_parts=2,
    )  # fmt: skip


# --- JSON --------------------------------------------------------------------------------------

SCAN = JsonScan(fields=("image", "post.photos[]"), max_bytes=1 << 20, max_depth=8)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_json_fields_are_decoded_in_field_order() -> None:
    document = {"post": {"photos": [b64(JPEG), None, b64(GIF)]}, "image": b64(PNG), "x": b64(PNG)}
    body = json.dumps(document).encode()
    assert find(body, "application/json", json_scan=SCAN) == [PNG, JPEG, GIF]
    # No scan configured: JSON is not looked into (the body itself is no image).
    assert find(body, "application/json") == []


def test_json_data_urls_and_any_declared_type_and_encoding() -> None:
    body = json.dumps({"image": "data:image/gif;base64," + b64(PNG)}).encode()
    assert find(body, "text/plain", json_scan=SCAN) == [PNG]  # starts like JSON: read as JSON
    assert find(b" \r\n" + body, "", json_scan=SCAN) == [PNG]
    utf16 = json.dumps({"image": b64(PNG)}).encode("utf-16")
    assert find(utf16, "application/json", json_scan=SCAN) == [PNG]


def test_json_fields_absent_or_null_hold_no_image() -> None:
    for document in ({}, {"image": None}, {"post": {}}, {"post": {"photos": None}}):
        assert find(json.dumps(document).encode(), "application/json", json_scan=SCAN) == []


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b'{"image": "%s", "image": null}', MalformedBody,
         "malformed JSON body: duplicate key 'image'"),
        (b'{"image": 5}', MalformedBody, "malformed JSON body: image must be a base64 string"),
        (b'{"image": "not base64!"}', MalformedBody,
         "malformed JSON body: image is not standard base64 (padded, no whitespace)"),
        (b'{"image": "data:image/png,abc"}', MalformedBody,
         "malformed JSON body: image is a data: URL without ;base64,"),
        (b'{"image": "%s"}' % b64(NOT_IMAGE).encode(), NotAnImage,
         "not an image: the JSON field image holds no image"),
        (b'{"post": {"photos": "x"}}', MalformedBody,
         "malformed JSON body: post.photos[] must be an array"),
        (b'{"post": [1]}', MalformedBody,
         "malformed JSON body: post.photos[] is not inside an object"),
        (b"[[[[[[[[[1]]]]]]]]]", MalformedBody,
         "malformed JSON body: nested deeper than max_json_depth=8"),
    ],
)  # fmt: skip
def test_json_errors(body: bytes, kind: type[Exception], message: str) -> None:
    raises(
        kind, message, body.replace(b"%s", b64(PNG).encode()), "application/json", json_scan=SCAN
    )


def test_json_base64_must_be_canonical() -> None:
    text = b64(PNG)
    for bad in (text[:-1] if text.endswith("=") else text + "=", text[:8] + "\n" + text[8:]):
        with pytest.raises(MalformedBody, match="is not standard base64"):
            find(json.dumps({"image": bad}).encode(), "application/json", json_scan=SCAN)


def test_json_size_and_image_count_are_capped() -> None:
    body = json.dumps({"post": {"photos": [b64(PNG)] * 3}}).encode()
    assert find(body, "application/json", json_scan=SCAN, max_images=3) == [PNG] * 3
    raises(
        BodyTooLarge,
        "request has more than max_images=2 images",
        body,
        "application/json",
        json_scan=SCAN,
        max_images=2,
    )
    small = JsonScan(SCAN.fields, max_bytes=len(body) - 1, max_depth=8)
    raises(
        BodyTooLarge,
        f"JSON body is over max_json_bytes={len(body) - 1}",
        body,
        "application/json",
        json_scan=small,
    )


# --- MessagePack -------------------------------------------------------------------------------


def test_msgpack_bin_values_that_are_images_are_found_anywhere() -> None:
    document = {"a": PNG, "b": [1, "text", {"c": JPEG}], "d": NOT_IMAGE, "e": b"tiny"}
    body = msgspec.msgpack.encode(document)
    found = find(body, "application/msgpack")
    assert sorted(found) == sorted([PNG, JPEG])
    assert find(body, "application/octet-stream-not") == found  # any declared type


def test_msgpack_short_values_are_not_looked_at() -> None:
    tiny = PPM[: MIN_IMAGE_BYTES - 1]
    assert find(msgspec.msgpack.encode([tiny]), "application/msgpack") == []


def test_msgpack_fields_with_a_scan_may_hold_base64() -> None:
    body = msgspec.msgpack.encode({"image": b64(PNG), "other": "text"})
    assert find(body, "application/msgpack", json_scan=SCAN) == [PNG]
    assert find(body, "application/msgpack") == []


def test_a_body_declared_msgpack_must_be_msgpack() -> None:
    with pytest.raises(MalformedBody) as raised:
        find(b"\xc1", "application/msgpack")
    assert str(raised.value).startswith("malformed MessagePack body: ")
    assert find(b"\xc1", "text/plain") == []  # not declared: just no image


def test_msgpack_repeated_keys_and_counts_are_refused() -> None:
    repeated = b"\x82\xa5image\xc0\xa5image\xc0"  # {"image": nil, "image": nil}
    raises(
        MalformedBody,
        "malformed MessagePack body: a map repeats a key",
        repeated,
        "application/msgpack",
        json_scan=SCAN,
    )
    many = msgspec.msgpack.encode([NOT_IMAGE] * 3)
    assert find(many, "application/msgpack", max_parts=3) == []
    raises(
        BodyTooLarge,
        "MessagePack body has more than max_parts=2 values",
        many,
        "application/msgpack",
        max_parts=2,
    )
