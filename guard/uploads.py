"""The ASGI body: the only module that reads ``receive``.

It spools a request body under a byte limit (in memory, then a temporary file; file I/O off the
event loop), finds the images in it (multipart file parts and raw image bodies, judged by their
bytes), and replays the exact bytes to the app afterwards, handing ``receive`` back to the server
once the body is delivered.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import IO, Any

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header

from guard.errors import BodyTooLarge, MalformedBody, NotAnImage
from guard.images import sniff_format

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

#: Size of the chunks replayed to the app and read from the spool (as Starlette and uvicorn use).
CHUNK_SIZE = 64 * 1024
# Bytes needed to sniff every format guard knows.
_SNIFF_BYTES = 16


class ClientDisconnected(Exception):
    """The client went away before the body was complete: nothing to answer."""


class Spool:
    """A request body: kept in memory up to ``memory_limit`` bytes, then in a temporary file.

    Writes to and reads from the file run in a worker thread, never on the event loop
    (CVE-2025-54121 was exactly that mistake). Call :meth:`close` on every path.
    """

    def __init__(self, memory_limit: int) -> None:
        self._memory_limit = memory_limit
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self.size = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self._file is None and len(self._memory) + len(data) <= self._memory_limit:
            self._memory += data
            return
        if self._file is None:
            # Written as they are, not joined first: a copy would double the memory held.
            self._file = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
            await anyio.to_thread.run_sync(self._file.write, self._memory)
            self._memory = bytearray()
        await anyio.to_thread.run_sync(self._file.write, data)

    def read_all(self) -> bytes:
        """The whole body (blocking when on disk: call from a worker thread)."""
        if self._file is None:
            return bytes(self._memory)
        self._file.seek(0)
        return self._file.read()

    def chunks(self) -> _Chunks:
        return _Chunks(self)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = bytearray()


class _Chunks:
    """Reads a spool back in CHUNK_SIZE pieces."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._offset = 0

    async def next(self) -> tuple[bytes, bool]:
        """The next chunk and whether more follow."""
        spool = self._spool
        if spool._file is None:
            chunk = bytes(spool._memory[self._offset : self._offset + CHUNK_SIZE])
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
    has arrived (reliability.md H12). A delimiter is CRLF "--" boundary; part data cannot contain
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
        window = self._tail + data
        self.count += window.count(self._delimiter)
        self._tail = window[len(window) - len(self._delimiter) + 1 :]
        if self.count > self._max_parts + 1:
            raise BodyTooLarge(f"multipart body has more than max_parts={self._max_parts} parts")


def part_counter(content_type: str, max_parts: int) -> PartCounter | None:
    """A PartCounter for a multipart body with a boundary; None for anything else."""
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type.lower() != b"multipart/form-data" or not boundary:
        return None
    return PartCounter(boundary, max_parts)


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
    rather than guess which length the app will believe (reliability.md H03).
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
    empty body (a naive replay was polled 26,519 times in 150 ms, reliability.md H07).
    """

    def __init__(self, spool: Spool, receive: Receive) -> None:
        self._chunks = spool.chunks()
        self._receive = receive
        self._done = False

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        chunk, more = await self._chunks.next()
        self._done = not more
        return {"type": "http.request", "body": chunk, "more_body": more}


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    is_file: bool = False
    kept: bool = True  # False once the first bytes show a plain field that is not an image


def find_images(body: bytes, content_type: str, *, max_parts: int, max_images: int) -> list[bytes]:
    """The images in a request body, judged by their bytes (a CPU job: run it in a worker thread).

    Multipart: every file part (one with a filename) must be an image, and any other part whose
    bytes sniff as an image is one too; plain text fields are ignored. Raw bodies declared
    ``image/*`` must be images; ``application/octet-stream`` or untyped bodies are images when
    their bytes say so. Anything else is not scanned. Raises MalformedBody, BodyTooLarge (parts or
    images over their caps) and NotAnImage (a file part or image body that is no image).
    """
    media_type, options = parse_options_header(content_type)
    media = media_type.decode("latin-1").lower()
    if media == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise MalformedBody("malformed multipart body: missing boundary")
        images = _multipart_images(body, boundary, max_parts)
    elif media.startswith("image/"):
        if sniff_format(body) is None:
            raise NotAnImage(
                f"not an image: the body is declared {media} but its bytes are no image"
            )
        images = [body]
    elif media in ("", "application/octet-stream"):
        images = [body] if sniff_format(body) is not None else []
    else:
        images = []
    if len(images) > max_images:
        raise BodyTooLarge(f"request has {len(images)} images, over max_images={max_images}")
    return images


def _multipart_images(body: bytes, boundary: bytes, max_parts: int) -> list[bytes]:
    parts: list[_Part] = []
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise BodyTooLarge(f"multipart body has more than max_parts={max_parts} parts")
        parts.append(_Part())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        if not part.kept:
            return
        part.data += data[start:end]
        if (
            not part.is_file
            and len(part.data) >= _SNIFF_BYTES
            and sniff_format(bytes(part.data)) is None
        ):
            part.kept, part.data = False, bytearray()  # a text field: not ours to keep

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers.append((bytes(header_name).lower(), bytes(header_value)))
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        part = parts[-1]
        for name, value in part.headers:
            if name == b"content-transfer-encoding":
                # RFC 7578 deprecates it, and parsers disagree on decoding it (reliability.md H16).
                raise MalformedBody(
                    "malformed multipart body: Content-Transfer-Encoding is not accepted"
                )
            if name == b"content-disposition":
                _, options = parse_options_header(value)
                part.is_file = b"filename" in options or b"filename*" in options
            if name == b"content-type" and value.strip().lower().startswith(b"image/"):
                part.is_file = True

    ended: list[bool] = []

    def on_end() -> None:
        ended.append(True)

    callbacks = {
        "on_end": on_end,
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        for start in range(0, len(body), CHUNK_SIZE):
            parser.write(body[start : start + CHUNK_SIZE])
        parser.finalize()
        if not ended:
            raise MalformedBody("malformed multipart body: it ends before its closing boundary")
    except (BodyTooLarge, MalformedBody):
        raise
    except Exception as error:  # python-multipart raises several types for broken framing
        raise MalformedBody(f"malformed multipart body: {error}") from error
    images = []
    for part in parts:
        data = bytes(part.data)
        if part.is_file:
            if sniff_format(data) is None:
                raise NotAnImage(
                    "not an image: a file part's bytes are no image format guard accepts"
                )
            images.append(data)
        elif part.kept and sniff_format(data) is not None:
            images.append(data)
    return images
