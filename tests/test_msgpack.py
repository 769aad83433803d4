"""guard.msgpack reads what msgspec (Litestar's decoder) reads, as pairs, and nothing else."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from PIL import Image

from guard.errors import MalformedBody
from guard.msgpack import MAX_DEPTH, NotMessagePack, Pairs, loads
from guard.uploads import find_images

msgspec = pytest.importorskip("msgspec")


def as_dicts(value: Any) -> Any:
    """guard's pairs as dicts, to compare with msgspec's reading."""
    if isinstance(value, Pairs):
        return {key: as_dicts(item) for key, item in value}
    if isinstance(value, list):
        return [as_dicts(item) for item in value]
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "neg", "big", "float", "str", "bytes", "none", "bool"]
    if depth < 4:
        kinds += ["list", "dict"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randrange(0, 2 ** rng.choice([7, 8, 16, 32, 64]))
    if kind == "neg":
        return -rng.randrange(1, 2 ** rng.choice([5, 7, 15, 31, 63]))
    if kind == "big":
        return rng.choice([2**64 - 1, -(2**63)])
    if kind == "float":
        return rng.random() * 1e6
    if kind == "str":
        return "".join(rng.choice("aé写 \n") for _ in range(rng.choice([0, 5, 40, 300, 70_000])))
    if kind == "bytes":
        return rng.randbytes(rng.choice([0, 3, 300, 70_000]))
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.choice([0, 3, 20]))]
    return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.choice([0, 3, 17]))}


def test_random_documents_read_as_msgspec_reads_them() -> None:
    rng = random.Random(3)
    for _ in range(300):
        document = rng.choice([list, dict])()
        for index in range(rng.randrange(0, 6)):
            value = random_value(rng)
            if isinstance(document, list):
                document.append(value)
            else:
                document[f"f{index}"] = value
        data = msgspec.msgpack.encode(document)
        expected = msgspec.msgpack.decode(data)
        assert as_dicts(loads(data)) == expected


def test_repeated_keys_are_kept_as_pairs() -> None:
    data = b"\x82\xa1a\x01\xa1a\x02"  # {"a": 1, "a": 2}
    assert loads(data) == [("a", 1), ("a", 2)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x01", id="an-int-not-a-container"),
        pytest.param(b"\xa3abc", id="a-str-not-a-container"),
        pytest.param(b"\x91", id="truncated-array"),
        pytest.param(b"\x91\xc4\x05ab", id="truncated-bin"),
        pytest.param(b"\x90\x00", id="bytes-after-the-document"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array-longer-than-the-body"),
        pytest.param(b"\x91\xc1", id="reserved-type-byte"),
        pytest.param(b"\x91\xa2\xff\xfe", id="str-not-utf8"),
        pytest.param(b"\x91" * (MAX_DEPTH + 2) + b"\x90", id="too-deep"),
        pytest.param(b"hello world", id="text"),
    ],
)
def test_other_bytes_are_not_messagepack(data: bytes) -> None:
    with pytest.raises(NotMessagePack):
        loads(data)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((32, 32)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/x-msgpack"])
def test_an_image_in_a_messagepack_body_is_found_whatever_the_type(content_type: str) -> None:
    """Litestar's request.msgpack() decodes any body: its bin values are images as they are."""
    image = _png()
    body = msgspec.msgpack.encode({"name": "x", "photos": [image]})
    assert find_images(body, content_type, max_parts=10, max_images=4) == [image]


def test_a_body_declared_messagepack_must_be_one() -> None:
    with pytest.raises(MalformedBody, match="malformed MessagePack body"):
        find_images(b"not msgpack", "application/vnd.msgpack", max_parts=10, max_images=4)
