"""guard.multipart: the canonical subset is read exactly, everything outside it is refused.

Random canonical bodies are checked against the parts they were built from and against
python-multipart (Starlette's parser) as a second reader; every rule has a body that breaks it.
"""

from __future__ import annotations

import random
import re

import pytest
from python_multipart.multipart import MultipartParser

from guard.errors import BodyTooLarge, MalformedBody
from guard.multipart import MAX_PART_HEADER_BYTES, Part, boundary_of, parse

B = b"----guardBoundary7MA4YWxkTrZu0gW"
CT = "multipart/form-data; boundary=" + B.decode()


def body_of(parts: list[Part], boundary: bytes = B, end: bytes = b"\r\n") -> bytes:
    """A body as browsers and curl build it."""
    out = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        head = f"Content-Disposition: {disposition}\r\n"
        if part.content_type is not None:
            head += f"Content-Type: {part.content_type}\r\n"
        out.append(b"--" + boundary + b"\r\n" + head.encode() + b"\r\n" + part.data + b"\r\n")
    return b"".join(out) + b"--" + boundary + b"--" + end


def reference(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts' data as python-multipart reads them."""
    datas: list[bytearray] = []

    def on_part_begin() -> None:
        datas.append(bytearray())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        datas[-1].extend(data[start:end])

    parser = MultipartParser(
        boundary, {"on_part_begin": on_part_begin, "on_part_data": on_part_data}
    )
    parser.write(body)
    parser.finalize()
    return [bytes(data) for data in datas]


def random_data(rng: random.Random) -> bytes:
    """Bytes that stress a parser: CR, LF, dashes, pieces of the boundary, binary."""
    pieces = [b"\r", b"\n", b"\r\n", b"--", b"-", B[:10], B[2:], b"\r\n-", b"\x00", b"\xff"]
    out = bytearray()
    for _ in range(rng.randrange(0, 40)):
        if rng.random() < 0.5:
            out += rng.choice(pieces)
        else:
            out += rng.randbytes(rng.randrange(1, 20))
    return bytes(out)


def random_parts(rng: random.Random) -> list[Part]:
    names = ["file", "a", "comment", "café", "写真", "with space", "x-y_z.1"]
    filenames = [None, None, "a.jpg", "", "café 写真.png", "my photo (1).jpeg", "a;b=c.gif"]
    types = [None, "image/jpeg", "text/plain; charset=utf-8", "application/octet-stream"]
    parts = []
    for _ in range(rng.randrange(0, 6)):
        data = random_data(rng)
        while b"--" + B in data:
            data = data.replace(b"--" + B, b"-")
        parts.append(Part(rng.choice(names), rng.choice(filenames), rng.choice(types), data))
    return parts


def test_random_canonical_bodies_read_exactly() -> None:
    rng = random.Random(11)
    checked = with_parts = 0
    for _ in range(2_000):
        parts = random_parts(rng)
        end = rng.choice([b"", b"\r\n", b"\r\n\r\n", b" \t\r\n"])
        body = body_of(parts, end=end)
        assert parse(body, B, max_parts=100) == parts
        assert reference(body, B) == [part.data for part in parts]
        checked += 1
        with_parts += bool(parts)
    assert checked == 2_000 and with_parts > 1_500


def test_part_data_may_hold_the_boundary_without_its_dashes_or_after_other_bytes() -> None:
    data = B + b"\r\n-" + B + b"\r\n" + b"x-" + B + b"\r\n--" + B[:-1]
    parts = [Part("a", None, None, data)]
    assert parse(body_of(parts), B, max_parts=10) == parts


def test_empty_form_and_empty_parts() -> None:
    assert parse(b"--" + B + b"--\r\n", B, max_parts=10) == []
    empty = [Part("a", None, None, b""), Part("f", "", "application/octet-stream", b"")]
    assert parse(body_of(empty), B, max_parts=10) == empty


def test_max_parts_is_exact() -> None:
    parts = [Part(f"f{i}", None, None, b"v") for i in range(5)]
    assert len(parse(body_of(parts), B, max_parts=5)) == 5
    with pytest.raises(BodyTooLarge, match="max_parts=4"):
        parse(body_of(parts), B, max_parts=4)


ONE = body_of([Part("a", None, None, b"x")])
HEAD = b"--" + B + b"\r\n"
CLOSE = b"--" + B + b"--\r\n"
DISPOSITION = b'Content-Disposition: form-data; name="a"'


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        pytest.param(b"\r\n" + ONE, "no preamble", id="crlf-preamble"),
        pytest.param(b"preamble\r\n" + ONE, "no preamble", id="text-preamble"),
        pytest.param(
            HEAD + DISPOSITION + b"\r\n\r\nx" + HEAD + CLOSE,
            "the boundary appears inside the body, not after CRLF",
            id="delimiter-after-nothing",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\r\n\r\nx\n" + HEAD + CLOSE,
            "the boundary appears inside the body, not after CRLF",
            id="delimiter-after-bare-LF",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\r\n\r\nx\r" + HEAD + CLOSE,
            "the boundary appears inside the body, not after CRLF",
            id="delimiter-after-bare-CR",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\r\n\r\nx\r\n--" + B + b"junk\r\n" + CLOSE,
            "a boundary line must end with CRLF",
            id="delimiter-followed-by-text",
        ),
        pytest.param(
            b"--" + B + b" \r\n" + DISPOSITION + b"\r\n\r\nx\r\n" + CLOSE,
            "a boundary line must end with CRLF",
            id="transport-padding",
        ),
        pytest.param(
            ONE + HEAD + DISPOSITION + b"\r\n\r\ny\r\n" + CLOSE,
            "the body goes on after its closing boundary",
            id="part-after-the-end",
        ),
        pytest.param(
            CLOSE + HEAD + DISPOSITION + b"\r\n\r\ny\r\n" + CLOSE,
            "the body goes on after its closing boundary",
            id="starts-with-closing",
        ),
        pytest.param(ONE + b"epilogue", "only whitespace may follow", id="text-epilogue"),
        pytest.param(HEAD + DISPOSITION + b"\r\n\r\nx", "it ends before", id="no-closing"),
        pytest.param(ONE.replace(b"\r\n", b"\n"), "not after CRLF", id="LF-only"),
        pytest.param(
            HEAD + DISPOSITION + b"\n\r\n\r\nx\r\n" + CLOSE,
            "ends with a bare CR or LF",
            id="header-bare-LF",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\rContent-Type: image/png\r\n\r\nx\r\n" + CLOSE,
            "ends with a bare CR or LF",
            id="header-bare-CR",
        ),
        pytest.param(
            HEAD + b'Content-Disposition: form-data;\r\n name="a"\r\n\r\nx\r\n' + CLOSE,
            "folded",
            id="folded-header",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\r\n" + DISPOSITION + b'; filename="a.png"\r\n\r\nx\r\n' + CLOSE,
            "two content-disposition headers",
            id="two-dispositions",
        ),
        pytest.param(
            HEAD + b"Content-Type: image/png\r\n\r\nx\r\n" + CLOSE,
            "no Content-Disposition",
            id="no-disposition",
        ),
        pytest.param(HEAD + b"\r\nx\r\n" + CLOSE, "no header section", id="no-headers"),
        pytest.param(
            HEAD + DISPOSITION + b"x\r\n" + CLOSE, "no header section", id="headers-never-end"
        ),
        pytest.param(
            HEAD + b'Content-Disposition: attachment; name="a"\r\n\r\nx\r\n' + CLOSE,
            "not form-data",
            id="attachment",
        ),
        pytest.param(
            HEAD + b'Content-Disposition: form-data; filename="a.png"\r\n\r\nx\r\n' + CLOSE,
            "no name",
            id="no-name",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"; filename*=utf-8''a.png\r\n\r\nx\r\n" + CLOSE,
            "RFC 2231 parameter filename*",
            id="filename-star",
        ),
        pytest.param(
            HEAD
            + b'Content-Disposition: form-data; name="a\\"; filename="b.png"\r\n\r\nx\r\n'
            + CLOSE,
            "not name=value",
            id="escaped-quote-swallows-the-filename",
        ),
        pytest.param(
            HEAD + b'Content-Disposition: form-data; name="a\\\\"\r\n\r\nx\r\n' + CLOSE,
            "backslash",
            id="escaped-backslash-in-name",
        ),
        pytest.param(
            HEAD + DISPOSITION + b'; filename="a.png"; filename="b.txt"\r\n\r\nx\r\n' + CLOSE,
            "names the parameter filename twice",
            id="two-filenames",
        ),
        pytest.param(
            HEAD + b'Content-Disposition: form-data; name = "a"\r\n\r\nx\r\n' + CLOSE,
            "not name=value",
            id="spaces-around-equals",
        ),
        pytest.param(
            HEAD + DISPOSITION + b'; filename="\xff.png"\r\n\r\nx\r\n' + CLOSE,
            "not valid UTF-8",
            id="invalid-utf8",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\r\nX-A: \x00\r\n\r\nx\r\n" + CLOSE,
            "control character",
            id="control-character",
        ),
        pytest.param(
            HEAD + DISPOSITION + b"\r\nContent-Transfer-Encoding: base64\r\n\r\neA==\r\n" + CLOSE,
            "Content-Transfer-Encoding is not accepted",
            id="transfer-encoding",
        ),
        pytest.param(
            HEAD
            + DISPOSITION
            + b"\r\nX-A"
            + b"a" * MAX_PART_HEADER_BYTES
            + b": b\r\n\r\nx\r\n"
            + CLOSE,
            "headers are over",
            id="long-headers",
        ),
    ],
)
def test_every_rule_is_enforced(body: bytes, rule: str) -> None:
    with pytest.raises(MalformedBody, match="malformed multipart body: .*" + re.escape(rule)):
        parse(body, B, max_parts=100)


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="abc"', b"abc"),
        ("Multipart/Form-Data; Boundary=abc", b"abc"),
        ("multipart/form-data;boundary=abc", b"abc"),
        ("multipart/form-data; charset=utf-8; boundary=abc", b"abc"),
        ('multipart/form-data; boundary="a:b=c?d/e"', b"a:b=c?d/e"),
        ("multipart/form-data; boundary=" + "x" * 70, b"x" * 70),
        ("multipart/form-data; boundary=abc  ", b"abc"),
    ],
)
def test_canonical_boundaries(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "rule"),
    [
        ("multipart/form-data", "missing boundary"),
        ("multipart/form-data; charset=utf-8", "missing boundary"),
        ("multipart/form-data; boundary=a; boundary*=b", "RFC 2231 parameter boundary*"),
        ("multipart/form-data; boundary*0=a", "RFC 2231"),
        ("multipart/form-data; boundary=a; boundary=b", "names the parameter boundary twice"),
        ("multipart/form-data; boundary=a; Boundary=b", "names the parameter boundary twice"),
        ("multipart/form-data; boundary =a", "not name=value"),
        ("multipart/form-data; boundary= a", "not name=value"),
        ('multipart/form-data; boundary="a\\"b"', "backslash"),
        ('multipart/form-data; boundary="a\\\\b"', "backslash"),
        ("multipart/form-data; boundary=a=b", "not name=value"),
        ("multipart/form-data; boundary=abc;", "not name=value"),
        ('multipart/form-data; boundary="a;b"', "the boundary must be 1 to 70"),
        ('multipart/form-data; boundary="a b"', "the boundary must be 1 to 70"),
        ('multipart/form-data; boundary=""', "the boundary must be 1 to 70"),
        ("multipart/form-data; boundary=" + "x" * 71, "the boundary must be 1 to 70"),
        ("multipart/mixed; boundary=abc", "not multipart/form-data"),
    ],
)
def test_other_boundaries_are_refused(content_type: str, rule: str) -> None:
    with pytest.raises(MalformedBody, match=re.escape(rule)):
        boundary_of(content_type)


@pytest.mark.parametrize(
    ("disposition", "name", "filename"),
    [
        # Unescaped as RFC 9110 says (as Werkzeug does; Django keeps what follows the last
        # backslash, Starlette the backslash): parsers differ on the name, never on the framing.
        (b'name="image"; filename="my \\ photo.jpg"', "image", "my  photo.jpg"),
        (b'name="image"; filename="my \\"best\\" photo.jpg"', "image", 'my "best" photo.jpg'),
        (b'name="image"; filename="a\\\\b.jpg"', "image", "a\\b.jpg"),
        (b'name="image"; filename="my %22best%22.jpg"', "image", "my %22best%22.jpg"),
        (b'name="a;b"; filename="c;d=e.jpg"', "a;b", "c;d=e.jpg"),
        (b"name=image; filename=a.jpg", "image", "a.jpg"),
    ],
)
def test_quoted_values_are_read_as_quoted_strings(
    disposition: bytes, name: str, filename: str
) -> None:
    """How browsers and curl (a bare backslash, %22), Go and httpx (backslash escapes) send
    awkward filenames: read as Django, Werkzeug, python-multipart and multipart read them."""
    body = HEAD + b"Content-Disposition: form-data; " + disposition + b"\r\n\r\nx\r\n" + CLOSE
    assert parse(body, B, max_parts=10) == [Part(name, filename, None, b"x")]


def test_a_mismatched_boundary_is_refused() -> None:
    with pytest.raises(MalformedBody, match="no preamble"):
        parse(ONE, b"other", max_parts=10)
