"""multipart/form-data, read strictly: the canonical subset every mainstream parser agrees on.

Django, Werkzeug (Flask, Quart), Litestar and python-multipart (Starlette, FastAPI) each read
the edges of the format their own way: a delimiter that is not preceded by CRLF, a part after the
closing delimiter, two ``boundary`` parameters, ``filename*``, escaped quotes. A body read one way
by guard and another way by the app is a body whose images guard never saw. So guard reads only
bodies whose meaning no parser can dispute and refuses (400, naming the rule) everything else:

- the Content-Type has exactly one ``boundary`` parameter, ``name=value`` with nothing around
  the ``=``, a token or a quoted string without backslashes, of 1-70 RFC 2046 characters
  (no space); no ``*`` (RFC 2231) parameters, no parameter named twice;
- the body starts with the first delimiter line, and ``--boundary`` appears nowhere else but at
  the start of a line after CRLF; each delimiter is followed by CRLF, the closing one by ``--``
  and then only whitespace to the end of the body (no preamble, no padding, no epilogue);
- each part has a header section of CRLF-ended lines (no bare CR or LF, no folded lines) in
  UTF-8, each header at most once, a ``Content-Disposition: form-data`` with a ``name``, an
  optional ``filename``, no parameter named twice, no ``*`` parameter, and no quoted value that
  ends in a backslash; no ``Content-Transfer-Encoding``.

Quoted values are read as RFC 9110 quoted strings (``\\"`` is a quote inside the value), as
Django, Werkzeug, python-multipart and multipart all read them: Go and httpx escape quotes and
backslashes in filenames that way, and curl and browsers send a bare backslash. The one reading
they do not share is a value ending in an escaped backslash (``"a\\\\"``): Django's parameter
splitter counts that closing quote as escaped, so it is refused.

Every client measured (browsers' forms and FormData, curl, requests, httpx, aiohttp, Go's
mime/multipart, Node's fetch) sends bodies inside this subset. This module is pure: bytes in,
parts out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guard.errors import BodyTooLarge, MalformedBody

#: A part's header section is at most this many bytes ...
MAX_PART_HEADER_BYTES = 8 * 1024
#: ... in at most this many header lines (clients send two or three).
MAX_PART_HEADERS = 8

# RFC 2046 bchars without the space (allowed by the RFC, sent by no client, and a parser that
# trims it would read another boundary).
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=?]{1,70}")
# RFC 9110: a token, and an optional-whitespace run.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# One "; name=value" parameter: a token value, or a quoted string (backslash escapes any byte
# but CR and LF).
_PARAMETER = re.compile(
    rb"[ \t]*;[ \t]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)="
    rb'("(?:[^"\\\r\n]|\\[^\r\n])*"|[!#$%&\'*+\-.^_`|~0-9A-Za-z]+)'
)
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_TRAILING_SPACE = re.compile(rb"[ \t]*")
_EPILOGUE = re.compile(rb"[ \t\r\n]*")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _malformed(rule: str) -> MalformedBody:
    return MalformedBody(f"malformed multipart body: {rule}")


@dataclass(frozen=True)
class Part:
    """One part of a form: its name, its filename (None for a plain field), its declared type
    and its bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parameters(text: bytes, what: str, *, escapes: bool = True) -> dict[str, bytes]:
    """The ``; name=value`` parameters that follow a media type or disposition type, strictly.

    Names are lower-cased and must be unique; quoted values are unquoted and unescaped. Refused:
    ``*`` parameters (RFC 2231 encodings that some parsers decode and others ignore), whitespace
    around ``=``, a quoted value ending in a backslash (or holding any backslash, without
    ``escapes``), and anything that is not a parameter.
    """
    result: dict[str, bytes] = {}
    position = 0
    while position < len(text):
        found = _PARAMETER.match(text, position)
        if found is None:
            if _TRAILING_SPACE.fullmatch(text, position):
                break
            raise _malformed(f"{what} has a parameter that is not name=value: {_show(text)}")
        name = found.group(1).lower().decode("ascii")
        value = found.group(2)
        if "*" in name:
            raise _malformed(f"{what} has an RFC 2231 parameter {name}: not accepted")
        if name in result:
            raise _malformed(f"{what} names the parameter {name} twice")
        if value.startswith(b'"'):
            value = value[1:-1]
            if b"\\" in value and (not escapes or value.endswith(b"\\")):
                raise _malformed(f"{what} has a backslash in the quoted {name}: not accepted")
            value = _ESCAPE.sub(rb"\1", value)
        result[name] = value
        position = found.end()
    return result


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, if it is canonical (else 400)."""
    raw = content_type.encode("latin-1")
    media = raw.partition(b";")[0]
    if media.strip().lower() != b"multipart/form-data":
        raise _malformed("the content type is not multipart/form-data")
    options = parameters(raw[len(media) :], "the content type", escapes=False)
    boundary = options.get("boundary")
    if boundary is None:
        raise _malformed("missing boundary")
    if not _BOUNDARY.fullmatch(boundary):
        raise _malformed(
            "the boundary must be 1 to 70 characters from A-Z a-z 0-9 ' ( ) + _ , - . / : = ?"
        )
    return boundary


def parse(body: bytes, boundary: bytes, *, max_parts: int) -> list[Part]:
    """The parts of a multipart body, or MalformedBody naming the first rule it breaks.

    BodyTooLarge past ``max_parts``. The body is searched for the delimiter once (memchr speed),
    so the cost is linear in its size whatever it holds.
    """
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):
        raise _malformed("the body must start with its first boundary (no preamble)")
    starts = _delimiters(body, delimiter)
    parts: list[Part] = []
    for index, start in enumerate(starts):
        end = start + len(delimiter)
        if body.startswith(b"--", end):
            if index != len(starts) - 1:
                raise _malformed("the body goes on after its closing boundary")
            if not _EPILOGUE.fullmatch(body, end + 2):
                raise _malformed("only whitespace may follow the closing boundary")
            return parts
        if not body.startswith(b"\r\n", end):
            raise _malformed("a boundary line must end with CRLF, right after the boundary")
        if index == len(starts) - 1:
            break
        if len(parts) >= max_parts:
            raise BodyTooLarge(f"multipart body has more than max_parts={max_parts} parts")
        # The CRLF before the next delimiter belongs to the delimiter, not to the data.
        parts.append(_part(body, end + 2, starts[index + 1] - 2))
    raise _malformed("it ends before its closing boundary")


def _delimiters(body: bytes, delimiter: bytes) -> list[int]:
    """Where ``delimiter`` occurs; each one but the first must begin a line after CRLF."""
    starts = [0]
    position = body.find(delimiter, 1)
    while position != -1:
        if body[position - 2 : position] != b"\r\n":
            raise _malformed("the boundary appears inside the body, not after CRLF")
        starts.append(position)
        position = body.find(delimiter, position + 1)
    return starts


def _part(body: bytes, start: int, stop: int) -> Part:
    header_end = body.find(b"\r\n\r\n", start, stop)
    if body.startswith(b"\r\n", start) or header_end == -1:
        raise _malformed("a part has no header section")
    if header_end - start > MAX_PART_HEADER_BYTES:
        raise _malformed(f"a part's headers are over {MAX_PART_HEADER_BYTES} bytes")
    section = body[start:header_end]
    lines = section.split(b"\r\n")
    if len(lines) > MAX_PART_HEADERS:
        raise _malformed(f"a part has more than {MAX_PART_HEADERS} headers")
    headers: dict[str, bytes] = {}
    for line in lines:
        header, value = _header(line)
        if header in headers:
            raise _malformed(f"a part has two {header} headers")
        headers[header] = value
    if "content-transfer-encoding" in headers:
        # RFC 7578 deprecates it, and parsers disagree on decoding it (hostile case H16).
        raise _malformed("Content-Transfer-Encoding is not accepted")
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _malformed("a part has no Content-Disposition")
    kind = disposition.partition(b";")[0]
    if kind.strip().lower() != b"form-data":
        raise _malformed("a part's Content-Disposition is not form-data")
    options = parameters(disposition[len(kind) :], "a Content-Disposition")
    name = options.get("name")
    if name is None:
        raise _malformed("a part has no name")
    filename = options.get("filename")
    content_type = headers.get("content-type")
    return Part(
        name=name.decode("utf-8"),
        filename=None if filename is None else filename.decode("utf-8"),
        content_type=None if content_type is None else content_type.decode("utf-8"),
        data=body[header_end + 4 : stop],
    )


def _header(line: bytes) -> tuple[str, bytes]:
    """One part header line as (lower-case name, value without surrounding whitespace)."""
    if line[:1] in (b" ", b"\t"):
        raise _malformed("a part header is folded over two lines")
    if b"\r" in line or b"\n" in line:
        raise _malformed("a part header line ends with a bare CR or LF, not CRLF")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise _malformed(f"a part header is not name: value: {_show(line)}")
    value = value.strip(b" \t")
    if _CONTROL.search(value):
        raise _malformed(f"a part header has a control character: {_show(line)}")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("a part header is not valid UTF-8") from None
    return name.lower().decode("ascii"), value


def _show(text: bytes) -> str:
    return repr(text[:60].decode("latin-1"))
