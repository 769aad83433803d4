"""The ASGI body: the only module that reads ``receive``.

It spools a request body under a byte limit (in memory, then a temporary file; file I/O off the
event loop), finds the images in it (multipart file parts and raw image bodies, judged by their
bytes), and replays the exact bytes to the app afterwards, handing ``receive`` back to the server
once the body is delivered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import IO, Any

import anyio

from guard import msgpack, multipart
from guard.errors import BodyTooLarge, MalformedBody, NotAnImage
from guard.images import sniff_format
from guard.types import Message, Receive

#: Size of the chunks read from a spooled file, and up to which the small chunks of a body held
#: in memory are joined for the app (as Starlette and uvicorn use).
CHUNK_SIZE = 64 * 1024
# The part of a data: URL before its base64 payload; the media type in it is not trusted.
_DATA_URL = re.compile(r"data:[^,]*;base64,", re.IGNORECASE)


class ClientDisconnected(Exception):
    """The client went away before the body was complete: nothing to answer."""


class Spool:
    """A request body: kept in memory up to ``memory_limit`` bytes, then in a temporary file.

    In memory the body is the server's own chunks, as they came: nothing is copied on the event
    loop, and the app is handed the same chunks back (:class:`Replay`). Writes to and reads from
    the file run in a worker thread, never on the event loop (CVE-2025-54121 was exactly that
    mistake). Call :meth:`close` on every path.
    """

    def __init__(self, memory_limit: int) -> None:
        self._memory_limit = memory_limit
        self._memory: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.size = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is None and self.size <= self._memory_limit:
            # bytes are immutable; anything else the server hands over is copied once
            self._memory.append(data if type(data) is bytes else bytes(data))
            return
        if self._file is None:
            # Written as they are, not joined first: a copy would double the memory held.
            self._file = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
            await anyio.to_thread.run_sync(_write_each, self._file, self._memory)
            self._memory = []
        await anyio.to_thread.run_sync(self._file.write, data)

    def read_all(self) -> bytes:
        """The whole body (blocking when on disk, and a copy of a large one: call from a worker
        thread)."""
        if self._file is None:
            return self._memory[0] if len(self._memory) == 1 else b"".join(self._memory)
        self._file.seek(0)
        return self._file.read()

    def chunks(self) -> _Chunks:
        return _Chunks(self)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []


def _write_each(file: IO[bytes], chunks: list[bytes]) -> None:
    for chunk in chunks:
        file.write(chunk)


class _Chunks:
    """Reads a spool back: in memory the chunks as received (small ones joined up to
    CHUNK_SIZE), from the file CHUNK_SIZE pieces."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._offset = 0
        self._index = 0

    async def next(self) -> tuple[bytes, bool]:
        """The next chunk and whether more follow."""
        spool = self._spool
        if spool._file is None:
            # The server's chunks as they are; runs of small ones joined up to CHUNK_SIZE, so a
            # body that came in dribs is not replayed a dozen bytes a message.
            memory, start = spool._memory, self._index
            stop, size = start, 0
            while stop < len(memory) and (stop == start or size + len(memory[stop]) <= CHUNK_SIZE):
                size += len(memory[stop])
                stop += 1
            chunk = memory[start] if stop == start + 1 else b"".join(memory[start:stop])
            self._index = stop
        else:
            chunk = await anyio.to_thread.run_sync(self._read_file, spool._file, self._offset)
        self._offset += len(chunk)
        return chunk, self._offset < spool.size

    @staticmethod
    def _read_file(file: IO[bytes], offset: int) -> bytes:
        file.seek(offset)
        return file.read(CHUNK_SIZE)


class PartCounter:
    """Counts multipart delimiters as the body streams in.

    A body of thousands of tiny parts is refused once it passes ``max_parts``, not after all of it
    has arrived (hostile case H12). A delimiter is CRLF "--" boundary; part data cannot contain
    one, so N parts have N or N + 1 of them (the first may open the body without its CRLF, the
    closing one counts too). Only a count over ``max_parts + 1`` is refused here; the parser
    applies the exact cap once the body is complete.
    """

    def __init__(self, boundary: bytes, max_parts: int) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._max_parts = max_parts
        self._tail = b""  # the last len(delimiter) - 1 bytes seen: a delimiter may span chunks
        self.count = 0

    def feed(self, data: bytes) -> None:
        # The delimiters inside the chunk, and those that start in the tail and end in the
        # chunk (within its first len - 1 bytes): the chunk itself is not copied. A delimiter
        # cannot overlap itself (a boundary holds no CR or LF), so the two counts are disjoint.
        keep = len(self._delimiter) - 1
        self.count += data.count(self._delimiter) + (self._tail + data[:keep]).count(
            self._delimiter
        )
        if len(data) >= keep:
            self._tail = data[len(data) - keep :]
        else:
            # max(0, ...): a window shorter than the delimiter is kept whole. A negative start
            # would drop its head, and with chunks under half a delimiter long no delimiter was
            # ever seen (tools/fuzz.py: the same body gave 413 whole and 400 split).
            window = self._tail + data
            self._tail = window[max(0, len(window) - keep) :]
        if self.count > self._max_parts + 1:
            raise BodyTooLarge(f"multipart body has more than max_parts={self._max_parts} parts")


def part_counter(content_type: str, max_parts: int) -> PartCounter | None:
    """A PartCounter for a multipart body with a canonical boundary; None for anything else
    (a body that is not canonical multipart is refused once it is in)."""
    if _media_type(content_type) != "multipart/form-data":
        return None
    try:
        return PartCounter(multipart.boundary_of(content_type), max_parts)
    except MalformedBody:
        return None


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


async def read_body(
    receive: Receive,
    spool: Spool,
    max_bytes: int,
    *,
    declared: int | None = None,
    parts: PartCounter | None = None,
) -> None:
    """Read every ``http.request`` message into ``spool``, counting bytes as they arrive.

    The caller puts a deadline around it. Raises BodyTooLarge past ``max_bytes`` or past
    ``parts``' cap (the declared Content-Length is checked earlier; it is never trusted to be
    small), ClientDisconnected, and MalformedBody when the body disagrees with the ``declared``
    Content-Length: the server frames the body, so a longer or shorter one means the server or
    something between it and guard is broken, and guard stops reading at the first byte too many
    rather than guess which length the app will believe (hostile case H03).
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body = message.get("body", b"")
        size = spool.size + len(body)
        if size > max_bytes:
            raise BodyTooLarge(f"request body is over max_body_bytes={max_bytes}")
        if declared is not None and size > declared:
            raise MalformedBody(f"request body is longer than its Content-Length ({declared})")
        if parts is not None:
            parts.feed(body)
        await spool.write(body)
        if not message.get("more_body", False):
            if declared is not None and size < declared:
                raise MalformedBody(f"request body is shorter than its Content-Length ({declared})")
            return


class Replay:
    """An ASGI ``receive`` for the app: the spooled body, byte for byte, then the server's own.

    After the last chunk every call goes to the server's ``receive``, which blocks until
    ``http.disconnect``: the app can still notice a client leaving, and never spins on an
    empty body (a naive replay was polled 26,519 times in 150 ms, hostile case H07). ``pending``
    is a call of the server's ``receive`` still under way (guard's disconnect watcher): the
    app's first call after the body takes its message if it has one, else cancels it and asks
    the server itself, so nothing the server says is lost or read twice.
    """

    def __init__(
        self, spool: Spool, receive: Receive, pending: asyncio.Future[Message] | None = None
    ) -> None:
        self._chunks = spool.chunks()
        self._receive = receive
        self._pending = pending
        self._done = False

    async def __call__(self) -> Message:
        if not self._done:
            chunk, more = await self._chunks.next()
            self._done = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.done() and not pending.cancelled():
                return pending.result()
            pending.cancel()
        return await self._receive()


@dataclass(frozen=True)
class JsonScan:
    """Where a route's JSON bodies hold images (``Route.json_fields``); how much JSON to read."""

    fields: tuple[str, ...]
    max_bytes: int
    max_depth: int


def find_images(
    body: bytes,
    content_type: str,
    *,
    max_parts: int,
    max_images: int,
    json_scan: JsonScan | None = None,
) -> list[bytes]:
    """The images in a request body, judged by their bytes (a CPU job: run it in a worker thread).

    An image is whatever Pillow opens (:func:`~guard.images.sniff_format`), wherever an app may
    find it. Multipart bodies must be canonical (:mod:`guard.multipart`): every part whose bytes
    are an image is one, a file part must be an image (or empty), and a text field may hold
    only a UTF-8 image (:func:`_as_text_field`); a whole form that is also an image is one too.
    Raw bodies declared ``image/*`` or ``application/octet-stream`` must be images; any other
    raw body is an image when its bytes say so, whatever it is declared as. Otherwise the body
    is read as every framework might read it: a urlencoded form's values, with ``json_scan``
    the configured fields of JSON in any encoding (:func:`_json_images`; other JSON is not
    scanned), and the ``bin`` values of a MessagePack document (:func:`_msgpack_images`).
    Raises MalformedBody, BodyTooLarge (parts or images over their caps) and NotAnImage (a file
    part, image body or JSON field that is no image).
    """
    media = _media_type(content_type)
    if media == "multipart/form-data":
        images = _multipart_images(body, content_type, max_parts)
        # The app may read request.body() too: a form that is also an image (a Photo CD's
        # header sits at byte 2048, after any text) is one.
        if sniff_format(body) is not None:
            images.append(body)
    elif "multipart" in media or "form-data" in media:
        # multipart/mixed, "multipart/form-data, text/plain"...: parsers disagree on whether
        # these are forms at all, so none is accepted on a guarded route.
        raise MalformedBody(
            f"malformed multipart body: the content type {media[:40]!r} is not multipart/form-data"
        )
    elif media.startswith("image/") or media == "application/octet-stream":
        # Declared as a file: it must be one guard can identify. A format without magic bytes
        # (TGA) would otherwise reach an app whose decoder guesses (hostile case H26).
        if sniff_format(body) is None:
            raise NotAnImage(
                f"not an image: the body is declared {media} but its bytes are no image"
            )
        images = [body]
    elif sniff_format(body) is not None:
        images = [body]
    else:
        images = []
        # Quart also reads "application/x-url-encoded"; any such type is read as a form.
        if "urlencoded" in media or "url-encoded" in media:
            images += _urlencoded_images(body, max_parts)
        # Independent of the form reading: an app may call request.json() on any body ...
        if json_scan is not None and _is_json(media, body):
            images += _json_images(body, json_scan, max_images)
        # ... and Litestar's request.msgpack() on any body too.
        images += _msgpack_images(body, media, json_scan, max_parts, max_images)
    if len(images) > max_images:
        raise BodyTooLarge(f"request has {len(images)} images, over max_images={max_images}")
    return images


def _as_text_field(data: bytes) -> list[bytes]:
    """``[data]`` if a text field's bytes are an image, else ``[]``.

    Frameworks hand text fields to the app as str, decoded from UTF-8 with replacement
    characters (Django, Werkzeug, each its own way) or as latin-1 (Starlette): an app that
    encodes the str back gets other bytes, and a format whose signature survives (BMP) still
    opens, with other pixels. guard cannot know which reading the app makes, so an image in a
    text field must be valid UTF-8 (ASCII PPM, XBM), where every reading gives the same bytes.
    """
    if sniff_format(data) is None:
        return []
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody(
            "an image in a text field must be sent as a file (a part with a filename)"
        ) from None
    return [data]


def _urlencoded_images(body: bytes, max_parts: int) -> list[bytes]:
    """Values of a urlencoded form whose bytes are an image. Split at "&" and at ";" (parsers
    differ on ";"), so every value any parser reads is looked at."""
    images = []
    for count, pair in enumerate(re.split(rb"[&;]", body)):
        if count >= max_parts:
            raise BodyTooLarge(f"form body has more than max_parts={max_parts} fields")
        value = urllib.parse.unquote_to_bytes(pair.partition(b"=")[2].replace(b"+", b" "))
        images += _as_text_field(value)
    return images


def _is_json(media: str, body: bytes) -> bool:
    # Apps often parse JSON whatever it is declared as (Starlette's request.json() does not look
    # at the type), so a body that starts like JSON is scanned as JSON too. json.loads reads
    # UTF-8 with or without a BOM, UTF-16 and UTF-32 alike, and so must this test.
    # json.loads skips any amount of leading whitespace, so this does too.
    if media == "application/json" or media.endswith("+json"):
        return True
    encoding = json.detect_encoding(body)
    if encoding.startswith("utf-8"):
        start = body.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")[:1]
        return start in (b"{", b"[")
    text = body.decode(encoding, "ignore")  # UTF-16 or UTF-32: rare, decoded whole
    return text.lstrip("\ufeff \t\r\n")[:1] in ("{", "[")


def _json_images(body: bytes, scan: JsonScan, max_images: int) -> list[bytes]:
    """The base64 images at the configured fields of a JSON body.

    Strict on purpose, so guard never decodes other bytes than the app does (hostile case H20):
    duplicate keys anywhere (parsers disagree on which one wins), nesting over ``max_depth``,
    and a field that is not canonical standard base64 (padded, no whitespace, no URL-safe
    alphabet; an optional ``data:...;base64,`` prefix) are malformed. A field that is absent or
    null holds no image; a decoded field must be an image.
    """
    if len(body) > scan.max_bytes:
        raise BodyTooLarge(f"JSON body is over max_json_bytes={scan.max_bytes}")
    try:
        document = json.loads(body, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise MalformedBody(
            f"malformed JSON body: nested deeper than max_json_depth={scan.max_depth}"
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedBody(f"malformed JSON body: {str(error)[:100]}") from None
    _check_depth(document, scan.max_depth)
    images: list[bytes] = []
    for path in scan.fields:
        for value in _values_at(document, path):
            if value is None:
                continue
            images.append(_decode_image(value, path))
            if len(images) > max_images:
                raise BodyTooLarge(f"request has more than max_images={max_images} images")
    return images


#: The smallest file Pillow opens that holds 8x8 pixels (a binary PBM: "P4 8 8 " and 8 bytes).
#: Shorter MessagePack values are not sniffed: they cannot carry a picture guard could match.
MIN_IMAGE_BYTES = 15


def _msgpack_images(
    body: bytes, media: str, scan: JsonScan | None, max_parts: int, max_images: int
) -> list[bytes]:
    """The images an app gets from a body read as MessagePack: every ``bin`` value whose bytes
    are an image (the decoder hands them over as they are) and, with ``scan``, the configured
    fields (raw bytes, or base64 text as in JSON). A body declared MessagePack must be one."""
    try:
        document = msgpack.loads(body)
    except msgpack.NotMessagePack as error:
        if "msgpack" in media:
            raise MalformedBody(f"malformed MessagePack body: {error}") from None
        return []
    images: list[bytes] = []
    stack: list[Any] = [document]
    values = 0
    while stack:
        value = stack.pop()
        if isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, bytes) and len(value) >= MIN_IMAGE_BYTES:
            values += 1
            if values > max_parts:
                raise BodyTooLarge(f"MessagePack body has more than max_parts={max_parts} values")
            if sniff_format(value) is not None:
                images.append(value)
    if scan is not None:
        fields = _from_pairs(document)
        for path in scan.fields:
            for value in _values_at(fields, path):
                if isinstance(value, str):
                    images.append(_decode_image(value, path))
        if len(images) > max_images:
            raise BodyTooLarge(f"request has more than max_images={max_images} images")
    return images


def _from_pairs(document: Any) -> Any:
    """A MessagePack document with its maps as dicts, refusing repeated keys as JSON does."""
    if isinstance(document, msgpack.Pairs):
        keys = [key for key, _ in document]
        if len(set(map(repr, keys))) != len(keys):
            raise MalformedBody("malformed MessagePack body: a map repeats a key")
        return {key: _from_pairs(value) for key, value in document}
    if isinstance(document, list):
        return [_from_pairs(item) for item in document]
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedBody(f"malformed JSON body: duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _check_depth(document: Any, max_depth: int) -> None:
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise MalformedBody(
                    f"malformed JSON body: nested deeper than max_json_depth={max_depth}"
                )
            items = value.values() if isinstance(value, dict) else value
            stack += [(item, depth + 1) for item in items]


def _values_at(document: Any, path: str) -> list[Any]:
    """The values a field path names: "a.b" the key b of the object at a; "a[]" each item of a."""
    values = [document]
    for segment in path.split("."):
        key, each = (segment[:-2], True) if segment.endswith("[]") else (segment, False)
        found: list[Any] = []
        for value in values:
            if not isinstance(value, dict):
                raise MalformedBody(f"malformed JSON body: {path} is not inside an object")
            if value.get(key) is None:
                continue
            item = value[key]
            if each and not isinstance(item, list):
                raise MalformedBody(f"malformed JSON body: {path} must be an array")
            found += item if each else [item]
        values = found
    return values


def _decode_image(value: Any, path: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedBody(f"malformed JSON body: {path} must be a base64 string")
    prefix = _DATA_URL.match(value)
    text = value[prefix.end() :] if prefix else value
    if not prefix and value[:5].lower() == "data:":
        raise MalformedBody(f"malformed JSON body: {path} is a data: URL without ;base64,")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedBody(
            f"malformed JSON body: {path} is not standard base64 (padded, no whitespace)"
        ) from None
    if sniff_format(data) is None:
        raise NotAnImage(f"not an image: the JSON field {path} holds no image")
    return data


def _multipart_images(body: bytes, content_type: str, max_parts: int) -> list[bytes]:
    """The images among a form's parts: every part whose bytes are an image, file or field.

    A file part (one with a filename, or declared image/*) must be an image or empty (a form's
    file input with no file chosen); a plain field that is no image is ignored.
    """
    images = []
    for part in multipart.parse(body, multipart.boundary_of(content_type), max_parts=max_parts):
        declared_image = (part.content_type or "").strip().lower().startswith("image/")
        if part.filename is None:
            found = _as_text_field(part.data)  # the app gets a str
        else:
            found = [part.data] if sniff_format(part.data) is not None else []
        if not found and (part.filename is not None or declared_image) and part.data:
            raise NotAnImage("not an image: a file part's bytes are no image format guard accepts")
        images += found
    return images
