"""Just enough MessagePack to see what an app that calls ``request.msgpack()`` would get.

Litestar decodes a request body as MessagePack when the app asks, whatever the body is declared
as, and a MessagePack ``bin`` value hands the app raw bytes: an image. guard reads a body that is
one complete MessagePack map or array, and nothing else, into plain Python values (dict keys may
repeat: a document is read as pairs). Pure and bounded: every length is checked against the bytes
that remain before anything is allocated, and nesting is capped.
"""

from __future__ import annotations

import struct
from typing import Any

#: Containers nested deeper than this are not read (a body is then "not MessagePack").
MAX_DEPTH = 64


class NotMessagePack(ValueError):
    """The bytes are not exactly one MessagePack map or array."""


class Pairs(list[tuple[Any, Any]]):
    """A map, as its (key, value) pairs in order: keys may repeat, and need not be hashable."""


def loads(data: bytes) -> Any:
    """The document in ``data``: lists for arrays, :class:`Pairs` for maps."""
    if not data or not (0x80 <= data[0] <= 0x9F or data[0] in (0xDC, 0xDD, 0xDE, 0xDF)):
        raise NotMessagePack("not a MessagePack map or array")
    value, end = _read(data, 0, 0)
    if end != len(data):
        raise NotMessagePack("bytes after the document")
    return value


def _take(data: bytes, position: int, size: int) -> int:
    end = position + size
    if end > len(data):
        raise NotMessagePack("truncated")
    return end


def _read(data: bytes, position: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise NotMessagePack("nested too deep")
    end = _take(data, position, 1)
    tag = data[position]
    if tag <= 0x7F or tag >= 0xE0:  # positive and negative fixint
        return (tag if tag <= 0x7F else tag - 0x100), end
    if 0x80 <= tag <= 0x8F:
        return _pairs(data, end, tag & 0x0F, depth)
    if 0x90 <= tag <= 0x9F:
        return _items(data, end, tag & 0x0F, depth)
    if 0xA0 <= tag <= 0xBF:
        return _raw(data, end, tag & 0x1F, text=True)
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if tag in simple:
        return simple[tag], end
    sized = {  # tag: (length bytes, what follows)
        0xC4: (1, "bin"), 0xC5: (2, "bin"), 0xC6: (4, "bin"),
        0xD9: (1, "str"), 0xDA: (2, "str"), 0xDB: (4, "str"),
        0xDC: (2, "array"), 0xDD: (4, "array"), 0xDE: (2, "map"), 0xDF: (4, "map"),
        0xC7: (1, "ext"), 0xC8: (2, "ext"), 0xC9: (4, "ext"),
    }  # fmt: skip
    if tag in sized:
        width, kind = sized[tag]
        start = _take(data, end, width)
        length = int.from_bytes(data[end:start], "big")
        if kind == "array":
            return _items(data, start, length, depth)
        if kind == "map":
            return _pairs(data, start, length, depth)
        if kind == "ext":
            start = _take(data, start, 1)  # the ext type byte
        return _raw(data, start, length, text=kind == "str")
    fixed = {
        0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
        0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
    }  # fmt: skip
    if tag in fixed:
        size = struct.calcsize(fixed[tag])
        return struct.unpack_from(fixed[tag], data, end)[0], _take(data, end, size)
    if 0xD4 <= tag <= 0xD8:  # fixext 1, 2, 4, 8, 16
        return _raw(data, _take(data, end, 1), 1 << (tag - 0xD4), text=False)
    raise NotMessagePack(f"unknown type byte 0x{tag:02x}")


def _raw(data: bytes, position: int, length: int, *, text: bool) -> tuple[Any, int]:
    end = _take(data, position, length)
    raw = data[position:end]
    if not text:
        return raw, end
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        raise NotMessagePack("a str that is not UTF-8") from None


def _items(data: bytes, position: int, count: int, depth: int) -> tuple[list[Any], int]:
    _take(data, position, count)  # every item takes at least one byte
    items = []
    for _ in range(count):
        item, position = _read(data, position, depth + 1)
        items.append(item)
    return items, position


def _pairs(data: bytes, position: int, count: int, depth: int) -> tuple[Pairs, int]:
    _take(data, position, 2 * count)
    pairs = Pairs()
    for _ in range(count):
        key, position = _read(data, position, depth + 1)
        value, position = _read(data, position, depth + 1)
        pairs.append((key, value))
    return pairs, position
