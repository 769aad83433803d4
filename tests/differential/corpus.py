"""Crafted request bodies for the differential suite, and a hypothesis strategy of mutated ones.

Every case hides the blocked image (a small generated picture with structure, in one of the
formats Pillow opens) where some parser might find it: framing that parsers split differently,
two boundaries in one Content-Type, part headers they read differently, images in text fields and
raw bodies, JSON in other encodings, url-encoded fields. Controls are bodies as curl, requests and
browsers send them: guard must accept them and every parser must hand the app the image.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import struct
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from PIL import Image, ImageDraw

BOUNDARY = b"XyZzy42"
A = b"AaA1"  # the outer boundary of a body that carries a second multipart body inside it
B = b"BbB2"


@dataclass(frozen=True)
class Case:
    id: str
    cls: str
    body: bytes
    content_type: str | None
    #: The blocked image placed in the body.
    image: bytes
    #: A control: guard must accept it and every parser must hand the app ``image``.
    control: bool = False

    def __repr__(self) -> str:
        # Short enough for a failure message: the image bytes are named, not printed.
        body = self.body.replace(self.image, b"<IMAGE %d bytes>" % len(self.image))
        if len(body) > 1500:
            body = body[:1500] + b"...(%d bytes)" % len(self.body)
        return f"Case({self.id!r}, content_type={self.content_type!r}, body={body!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints falsifying examples with this


# --- the blocked picture, in every format Pillow opens -----------------------------------------


@functools.cache
def picture() -> Image.Image:
    """64x64 RGB with structure (gradients, a bar, a disc): its hashes are not low-information."""
    image = Image.new("RGB", (64, 64))
    image.putdata([(x * 4, y * 4, 128) for y in range(64) for x in range(64)])
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 6, 56, 18), fill=(250, 250, 250))
    draw.ellipse((14, 26, 50, 60), fill=(10, 10, 10))
    return image


def _save(image_format: str, mode: str | None = None, **options: object) -> bytes:
    image = picture() if mode is None else picture().convert(mode)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IM is deprecated: it still opens, so it is tested
        image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _netpbm_ascii(magic: bytes) -> bytes:
    if magic == b"P1":
        grey = picture().convert("1").convert("L").tobytes()
        values = [0 if v else 1 for v in grey]  # in PBM, 1 is black
        return b"P1\n64 64\n" + _rows(values, 64)
    if magic == b"P2":
        values = list(picture().convert("L").tobytes())
        return b"P2\n64 64\n255\n" + _rows(values, 64)
    values = list(picture().tobytes())
    return b"P3\n64 64\n255\n" + _rows(values, 64 * 3)


def _rows(values: list[int], width: int) -> bytes:
    lines = (
        " ".join(str(v) for v in values[i : i + width]).encode()
        for i in range(0, len(values), width)
    )
    return b"\n".join(lines) + b"\n"


def _xpm() -> bytes:
    image = picture().convert("1")
    rows = [
        '"' + "".join("." if image.getpixel((x, y)) else " " for x in range(64)) + '",'
        for y in range(64)
    ]
    lines = ["/* XPM */", "static char *blocked[] = {", '"64 64 2 1",', '"  c #000000",']
    lines += ['". c #FFFFFF",', *rows, "};", ""]
    return "\n".join(lines).encode()


def _sun() -> bytes:
    grey = picture().convert("L").tobytes()
    return struct.pack(">8I", 0x59A66A95, 64, 64, 8, len(grey), 1, 0, 0) + grey


def _fits() -> bytes:
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8"]
    cards += ["NAXIS   =                    2", "NAXIS1  =                   64"]
    cards += ["NAXIS2  =                   64", "END"]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode()
    data = picture().convert("L").tobytes()
    return header + data + b"\0" * (-len(data) % 2880)


def _gbr() -> bytes:
    name = b"blocked\0"
    header = struct.pack(">7I", 28 + len(name), 2, 64, 64, 1, 0x47494D50, 10) + name
    return header + picture().convert("L").tobytes()


def _dcx() -> bytes:
    return struct.pack("<3I", 0x3ADE68B1, 12, 0) + _save("PCX")


def _cur() -> bytes:
    ico = bytearray(_save("ICO", sizes=[(64, 64)], bitmap_format="bmp"))
    ico[2:4] = b"\2\0"
    return bytes(ico)


def _imt() -> bytes:
    # IM Tools: a text header and raw pixels; Pillow tries it on any bytes (it has no accept test).
    return b"width 64\nheight 64\npixel n8\n\x0c" + picture().convert("L").tobytes()


def _xvthumb() -> bytes:
    return b"P7 332\n#XVVERSION:Version 2.28\n64 64 255\n" + picture().convert("L").tobytes()


def _pixar() -> bytes:
    header = bytearray(1024)
    header[0:4] = b"\x80\xe8\x00\x00"
    struct.pack_into("<HH", header, 416, 64, 64)  # height, width
    struct.pack_into("<HH", header, 424, 14, 2)  # RGB
    return bytes(header) + picture().tobytes()


def _mcidas() -> bytes:
    words = [0] * 64
    words[1], words[8], words[9], words[10], words[13], words[33] = 4, 64, 64, 1, 1, 256
    return struct.pack("!64i", *words) + picture().convert("L").tobytes()


def _psd() -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 64, 64, 8, 3) + bytes(12) + bytes(2)
    return header + b"".join(band.tobytes() for band in picture().split())


def _pcd() -> bytes:
    # Kodak Photo CD: Pillow reads its header at byte 2048 whatever comes before (text here), and
    # decodes 768x512 pixels from byte 196608. The pixels are a ramp, not the picture (no encoder).
    prefix = (b"Just a note, nothing to see. " * 80)[:2048]
    header = b"PCD_IPI".ljust(1539, b"\0")
    ramp = bytes(i % 251 for i in range(768 * 512 * 3 // 2))
    return (prefix + header).ljust(96 * 2048, b"\0") + ramp


# Every way of writing the picture: the formats Pillow saves, and the ones it only opens (made by
# hand here). The names are the case ids' format part.
_WRITERS: dict[str, Callable[[], bytes]] = {
    "png": lambda: _save("PNG"),
    "jpeg": lambda: _save("JPEG", quality=90),
    "gif": lambda: _save("GIF"),
    "bmp": lambda: _save("BMP"),
    "webp": lambda: _save("WEBP", lossless=True),
    "tiff": lambda: _save("TIFF"),
    "ico": lambda: _save("ICO", sizes=[(64, 64)]),
    "cur": _cur,
    "ppm-p6": lambda: _save("PPM"),
    "pgm-p5": lambda: _save("PPM", "L"),
    "pbm-p4": lambda: _save("PPM", "1"),
    "pbm-p1": lambda: _netpbm_ascii(b"P1"),
    "pgm-p2": lambda: _netpbm_ascii(b"P2"),
    "ppm-p3": lambda: _netpbm_ascii(b"P3"),
    "pcx": lambda: _save("PCX"),
    "dcx": _dcx,
    "tga": lambda: _save("TGA"),
    "tga-rle": lambda: _save("TGA", compression="tga_rle"),
    "sgi": lambda: _save("SGI"),
    "dds": lambda: _save("DDS", "RGBA"),
    "im": lambda: _save("IM"),
    "dib": lambda: _save("DIB"),
    "spider": lambda: _save("SPIDER", "F"),
    "icns": lambda: _save("ICNS"),
    "xbm": lambda: _save("XBM", "1"),
    "msp": lambda: _save("MSP", "1"),
    "qoi": lambda: _save("QOI"),
    "jpeg2000": lambda: _save("JPEG2000"),
    "blp": lambda: _save("BLP", "P"),
    "avif": lambda: _save("AVIF"),
    "xpm": _xpm,
    "sun": _sun,
    "fits": _fits,
    "gbr": _gbr,
    "imt": _imt,
    "xvthumb": _xvthumb,
    "pixar": _pixar,
    "mcidas": _mcidas,
    "psd": _psd,
    "pcd": _pcd,
}


def _opens(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        return True
    except Exception:  # noqa: BLE001 - a codec this Pillow lacks (JPEG 2000, AVIF)
        return False


@functools.cache
def images() -> dict[str, bytes]:
    """The picture in every format this Pillow writes or opens (those it cannot are left out)."""
    found = {}
    for name, write in _WRITERS.items():
        try:
            data = write()
        except Exception:  # noqa: BLE001, S112 - no encoder for it here
            continue
        if _opens(data):
            found[name] = data
    return found


def png() -> bytes:
    return images()["png"]


# --- body builders -----------------------------------------------------------------------------

CRLF = b"\r\n"
Headers = list[bytes]


def cd(
    name: str | bytes | None, filename: str | bytes | None = None, kind: bytes = b"form-data"
) -> bytes:
    """A Content-Disposition header line (without its line ending)."""
    line = b"Content-Disposition: " + kind
    if name is not None:
        line += b'; name="' + _b(name) + b'"'
    if filename is not None:
        line += b'; filename="' + _b(filename) + b'"'
    return line


def _b(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


def file_headers(image: bytes, filename: str = "cat.png", media: bytes = b"image/png") -> Headers:
    return [cd("file", filename), b"Content-Type: " + media]


def text_headers(name: str = "title") -> Headers:
    return [cd(name)]


def multipart(
    parts: list[tuple[Headers, bytes]],
    boundary: bytes = BOUNDARY,
    *,
    nl: bytes = CRLF,
    header_nl: bytes | None = None,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    padding: bytes = b"",
    close: bytes = b"--",
    final: bytes | None = None,
) -> bytes:
    """A multipart body: each part's headers and data, delimiters with ``nl`` line ends."""
    header_nl = nl if header_nl is None else header_nl
    out = preamble
    for headers, data in parts:
        out += b"--" + boundary + padding + nl
        out += b"".join(h + header_nl for h in headers) + header_nl + data + nl
    return out + b"--" + boundary + close + (nl if final is None else final) + epilogue


def form_ct(boundary: bytes = BOUNDARY) -> str:
    return "multipart/form-data; boundary=" + boundary.decode()


def canonical(image: bytes, boundary: bytes = BOUNDARY, **options: object) -> bytes:
    """Text fields and the image as a file part, as clients send them."""
    parts = [
        (text_headers("title"), b"a cat"),
        (file_headers(image), image),
        (text_headers("note"), b"hello"),
    ]
    return multipart(parts, boundary, **options)  # type: ignore[arg-type]


def nested(image: bytes, outer: bytes, inner: bytes) -> bytes:
    """A body that is one text field under ``outer`` and, under ``inner``, a preamble, a text
    field and the image as a file part, then an epilogue."""
    inside = canonical(image, inner)
    return multipart([(text_headers("t"), inside)], outer)


# --- the crafted cases -------------------------------------------------------------------------


def _framing(image: bytes, tag: str) -> Iterator[Case]:
    ct = form_ct()
    hidden_part = b"--" + BOUNDARY + CRLF + b"".join(h + CRLF for h in file_headers(image)) + CRLF
    text = (text_headers("title"), b"a cat")

    def case(name: str, body: bytes, content_type: str | None = ct) -> Case:
        return Case(f"framing-{name}-{tag}", "framing", body, content_type, image)

    for sep_name, sep in (("none", b""), ("lf", b"\n"), ("cr", b"\r")):
        field = b"hello" + sep + hidden_part + image
        yield case(f"delimiter-after-{sep_name}", multipart([(text_headers("title"), field)]))
    yield case(
        "delimiter-opens-field-data", multipart([(text_headers("title"), hidden_part + image)])
    )
    lookalike = b"hello\r\n--" + BOUNDARY + b"x" + CRLF + hidden_part[len(BOUNDARY) + 4 :] + image
    yield case("delimiter-lookalike", multipart([(text_headers("title"), lookalike)]))
    yield case("epilogue-part", multipart([text], epilogue=CRLF + hidden_part + image + CRLF))
    yield case(
        "epilogue-part-no-crlf",
        multipart([text], epilogue=hidden_part + image + CRLF + b"--" + BOUNDARY + b"--" + CRLF),
    )
    yield case("starts-with-close", b"--" + BOUNDARY + b"--" + CRLF + canonical(image))
    yield case("preamble", canonical(image, preamble=b"This is a preamble." + CRLF))
    yield case("preamble-lf", canonical(image, preamble=b"\n"))
    yield case("preamble-crlf", canonical(image, preamble=CRLF))
    yield case("preamble-smuggled", b"x" + hidden_part + image + CRLF + multipart([text]))
    yield case("padding-space-tab", canonical(image, padding=b" \t"))
    one_padded = multipart([text], epilogue=b"")[: -len(b"--" + BOUNDARY + b"--" + CRLF)]
    one_padded += b"--" + BOUNDARY + b"  " + CRLF + hidden_part[len(BOUNDARY) + 4 :]
    one_padded += image + CRLF + b"--" + BOUNDARY + b"--" + CRLF
    yield case("padding-one-delimiter", one_padded)
    yield case("padding-junk", canonical(image, padding=b" junk"))
    yield case("lf-only", canonical(image, nl=b"\n"))
    yield case("cr-only", canonical(image, nl=b"\r"))
    yield case("headers-bare-lf", canonical(image, header_nl=b"\n"))
    yield case("headers-bare-cr", canonical(image, header_nl=b"\r"))
    yield case("no-final-crlf", canonical(image, final=b""))
    yield case("no-close-delimiter", canonical(image)[: -len(b"--" + BOUNDARY + b"--" + CRLF)])
    yield case("close-then-junk", canonical(image, final=b"junk" + CRLF))
    yield case("close-no-dashes-eof", canonical(image, close=b"", final=b""))
    yield case("crlf-before-first", CRLF + canonical(image))
    yield case("lf-after-close", canonical(image, final=b"\n"))
    yield case(
        "image-then-lf-delimiter",
        multipart([text]).replace(
            b"--" + BOUNDARY + b"--",
            b"--"
            + BOUNDARY
            + CRLF
            + file_headers_block(image)
            + image
            + b"\n--"
            + BOUNDARY
            + b"--",
        ),
    )


def file_headers_block(image: bytes) -> bytes:
    return b"".join(h + CRLF for h in file_headers(image)) + CRLF


def _content_types(image: bytes, tag: str) -> Iterator[Case]:
    a, b = A.decode(), B.decode()
    two = {
        "rfc2231-after": f"multipart/form-data; boundary={a}; boundary*={b}",
        "rfc2231-before": f"multipart/form-data; boundary*=utf-8''{b}; boundary={a}",
        "rfc2231-continuation": f"multipart/form-data; boundary={a}; boundary*0={b}",
        "rfc2231-split": (
            f"multipart/form-data; boundary={a}; boundary*0={b[:2]}; boundary*1={b[2:]}"
        ),
        "repeated": f"multipart/form-data; boundary={a}; boundary={b}",
        "repeated-quoted": f'multipart/form-data; boundary="{a}"; boundary="{b}"',
        "space-around-equals": f"multipart/form-data; boundary = {a}; boundary={b}",
        "space-before-equals": f"multipart/form-data; boundary ={a}; boundary={b}",
        "upper-and-lower": f"multipart/form-data; Boundary={a}; boundary={b}",
        "comma-separated": f"multipart/form-data; boundary={a}, boundary={b}",
        "no-semicolon": f"multipart/form-data boundary={a}; boundary={b}",
        "quoted-semicolon": f'multipart/form-data; boundary="{a};boundary={b}"',
        "backslash-escape": f'multipart/form-data; boundary="{a[:2]}\\{a[2:]}"; x={b}',
        "charset-between": f"multipart/form-data; boundary={a}; charset=utf-8; boundary={b}",
    }
    for name, content_type in two.items():
        # Whichever of the two boundaries a parser takes, the image is a file part under it.
        yield Case(
            f"ct-{name}-image-under-B-{tag}",
            "content-type",
            nested(image, A, B),
            content_type,
            image,
        )
        yield Case(
            f"ct-{name}-image-under-A-{tag}",
            "content-type",
            nested(image, B, A),
            content_type,
            image,
        )
    # Backslash escapes: the boundary is AaA1 unescaped, Aa\A1 taken literally.
    literal = A[:2] + b"\\" + A[2:]
    yield Case(
        f"ct-backslash-literal-{tag}",
        "content-type",
        nested(image, A, literal),
        f'multipart/form-data; boundary="{a[:2]}\\{a[2:]}"',
        image,
    )
    yield Case(
        f"ct-backslash-unescaped-{tag}",
        "content-type",
        nested(image, literal, A),
        f'multipart/form-data; boundary="{a[:2]}\\{a[2:]}"',
        image,
    )
    single = {
        "upper-case-param": "multipart/form-data; Boundary={}",
        "upper-case-all": "MULTIPART/FORM-DATA; BOUNDARY={}",
        "quoted": 'multipart/form-data; boundary="{}"',
        "quoted-trailing-space": 'multipart/form-data; boundary="{} "',
        "space-around-equals-only": "multipart/form-data; boundary = {}",
        "charset-utf16": "multipart/form-data; charset=utf-16; boundary={}",
        "charset-latin1": "multipart/form-data; boundary={}; charset=latin-1",
        "rfc2231-only": "multipart/form-data; boundary*=utf-8''{}",
        "trailing-semicolon": "multipart/form-data; boundary={};",
        "no-space": "multipart/form-data;boundary={}",
        "tab": "multipart/form-data;\tboundary={}",
        "mixed": "multipart/mixed; boundary={}",
        "no-boundary": "multipart/form-data",
        "form-data-typo": "multipart/form-data-x; boundary={}",
    }
    for name, template in single.items():
        yield Case(
            f"ct-{name}-{tag}", "content-type", canonical(image, B), template.format(b), image
        )
    semi = b"Aa;Bb"
    yield Case(
        f"ct-quoted-semicolon-body-{tag}",
        "content-type",
        canonical(image, semi),
        'multipart/form-data; boundary="Aa;Bb"',
        image,
    )
    yield Case(
        f"ct-quoted-semicolon-prefix-{tag}",
        "content-type",
        nested(image, semi, b"Aa"),
        'multipart/form-data; boundary="Aa;Bb"',
        image,
    )
    # A text field holding the image's bytes, under a declared charset that decodes it losslessly.
    binary_field = multipart([(text_headers("title"), image)], B)
    yield Case(
        f"ct-charset-latin1-binary-field-{tag}",
        "content-type",
        binary_field,
        f"multipart/form-data; boundary={b}; charset=latin-1",
        image,
    )


def _part_headers(image: bytes, tag: str) -> Iterator[Case]:
    media = b"Content-Type: application/octet-stream"

    def case(name: str, headers: Headers, data: bytes = image) -> Case:
        body = multipart([(text_headers("title"), b"a cat"), (headers, data)])
        return Case(f"headers-{name}-{tag}", "part-headers", body, form_ct(), image)

    yield case(
        "filename-star-only",
        [b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''cat.img", media],
    )
    yield case(
        "filename-star-and-plain",
        [
            b'Content-Disposition: form-data; name="file"; filename="a.txt"; '
            b"filename*=UTF-8''cat.img",
            media,
        ],
    )
    yield case(
        "escaped-quote-in-name",
        [b'Content-Disposition: form-data; name="x\\"; filename=\\"cat.img"', media],
    )
    yield case(
        "escaped-quote-in-name-no-type",
        [b'Content-Disposition: form-data; name="x\\"; filename=\\"cat.img"'],
    )
    yield case(
        "escaped-quote-in-filename",
        [b'Content-Disposition: form-data; name="file"; filename="a\\"b.img"', media],
    )
    yield case("two-dispositions-file-last", [cd("title"), cd("file", "cat.img"), media])
    yield case("two-dispositions-file-first", [cd("file", "cat.img"), cd("title"), media])
    yield case("two-dispositions-no-type", [cd("title"), cd("file", "cat.img")])
    yield case(
        "two-filenames",
        [
            b'Content-Disposition: form-data; name="file"; filename="a.txt"; filename="cat.img"',
            media,
        ],
    )
    yield case(
        "two-filenames-empty-first",
        [b'Content-Disposition: form-data; name="file"; filename=""; filename="cat.img"'],
    )
    yield case("empty-filename", [cd("file", ""), media])
    yield case("invalid-utf8-filename", [cd("file", b"\xff\xfe.img"), media])
    yield case("invalid-utf8-name", [cd(b"\xff\xfe", "cat.img"), media])
    yield case("invalid-utf8-name-field", [cd(b"\xc3\x28")])
    yield case(
        "folded-crlf-space",
        [b'Content-Disposition: form-data; name="file";\r\n filename="cat.img"', media],
    )
    yield case(
        "folded-crlf-tab",
        [b'Content-Disposition: form-data; name="file"\r\n\t; filename="cat.img"', media],
    )
    yield case("folded-type", [cd("file", "cat.img"), b"Content-Type:\r\n image/png"])
    yield case("no-disposition", [media])
    yield case("no-disposition-image-type", [b"Content-Type: image/png"])
    yield case("no-headers", [])
    yield case(
        "disposition-no-name", [b'Content-Disposition: form-data; filename="cat.img"', media]
    )
    yield case("disposition-attachment", [cd("file", "cat.img", b"attachment"), media])
    yield case("disposition-inline-no-filename", [cd("file", None, b"inline")])
    yield case(
        "space-before-colon",
        [b'Content-Disposition : form-data; name="file"; filename="cat.img"', media],
    )
    yield case(
        "lower-case-names",
        [
            b'content-disposition: form-data; name="file"; filename="cat.img"',
            b"content-type: application/octet-stream",
        ],
    )
    yield case("garbage-header-line", [cd("file", "cat.img"), b"this is not a header", media])
    yield case(
        "nul-in-header",
        [b'Content-Disposition: form-data; name="file\0"; filename="cat.img"', media],
    )
    yield case(
        "unquoted-params", [b"Content-Disposition: form-data; name=file; filename=cat.img", media]
    )
    yield case(
        "single-quoted-params",
        [b"Content-Disposition: form-data; name='file'; filename='cat.img'", media],
    )
    yield case("field-with-image-type", [cd("title2"), b"Content-Type: image/png"])
    yield case(
        "field-charset-latin1", [cd("title2"), b"Content-Type: text/plain; charset=iso-8859-1"]
    )
    yield case("field-charset-utf16", [cd("title2"), b"Content-Type: text/plain; charset=utf-16"])
    encoded = base64.b64encode(image)
    cte = b"Content-Transfer-Encoding: base64"
    yield case("cte-base64-file", [cd("file", "cat.img"), media, cte], encoded)
    yield case("cte-base64-field", [cd("title2"), cte], encoded)
    wrapped = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    yield case("cte-base64-wrapped", [cd("file", "cat.img"), media, cte], wrapped)
    yield case(
        "cte-binary-upper",
        [cd("file", "cat.img"), media, b"CONTENT-TRANSFER-ENCODING: BASE64"],
        encoded,
    )
    yield case(
        "cte-quoted-printable",
        [cd("file", "cat.img"), media, b"Content-Transfer-Encoding: quoted-printable"],
        _quoted_printable(image),
    )


def _quoted_printable(data: bytes) -> bytes:
    import quopri

    return quopri.encodestring(data)


def _formats() -> Iterator[Case]:
    for name, image in images().items():
        file_part = multipart(
            [
                (text_headers("title"), b"a cat"),
                ([cd("file", f"cat.{name}"), b"Content-Type: application/octet-stream"], image),
            ]
        )
        places: list[tuple[str, bytes, str | None]] = [
            ("file-part", file_part, form_ct()),
            ("text-field", multipart([(text_headers("title"), image)]), form_ct()),
            ("raw-text-plain", image, "text/plain"),
            ("raw-no-type", image, None),
            ("raw-octet-stream", image, "application/octet-stream"),
            ("raw-declared-png", image, "image/png"),
            ("raw-form-urlencoded", image, "application/x-www-form-urlencoded"),
            ("urlencoded-field", urlencoded_body(image), "application/x-www-form-urlencoded"),
            # Quart (and Flask's werkzeug before 2.3) parse this older name as a form too.
            ("x-url-encoded-field", urlencoded_body(image), "application/x-url-encoded"),
        ]
        for where, body, content_type in places:
            yield Case(f"format-{name}-{where}", "formats", body, content_type, image)


def _json(image: bytes, tag: str) -> Iterator[Case]:
    encoded = base64.b64encode(image).decode()
    document = '{"title": "a cat", "image": "' + encoded + '"}'

    def case(name: str, body: bytes, content_type: str | None = "application/json") -> Case:
        return Case(f"json-{name}-{tag}", "json", body, content_type, image)

    encodings = {
        "utf8-bom": b"\xef\xbb\xbf" + document.encode(),
        "utf16": document.encode("utf-16"),
        "utf16-le": document.encode("utf-16-le"),
        "utf16-be": document.encode("utf-16-be"),
        "utf32": document.encode("utf-32"),
        "utf32-le": document.encode("utf-32-le"),
        "utf32-be": document.encode("utf-32-be"),
    }
    for name, body in encodings.items():
        yield case(name, body)
        yield case(f"{name}-text-plain", body, "text/plain")
        yield case(f"{name}-no-type", body, None)
    yield case("utf8-text-plain", document.encode(), "text/plain")
    yield case("utf8-no-type", document.encode(), None)
    yield case("utf8-form-urlencoded", document.encode(), "application/x-www-form-urlencoded")
    yield case("leading-whitespace", b" \r\n\t" + document.encode())
    for count in (100, 5000):
        # json.loads skips any amount of leading whitespace; a sniffer that looks at a prefix
        # for "{" must look past it.
        padded = " " * count + document
        yield case(f"leading-spaces-{count}-text-plain", padded.encode(), "text/plain")
        yield case(f"leading-spaces-{count}-no-type", padded.encode(), None)
        yield case(
            f"leading-newlines-{count}-utf16-no-type",
            ("\n" * count + document).encode("utf-16"),
            None,
        )
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    yield case("base64-newlines", ('{"image": "' + wrapped.replace("\n", "\\n") + '"}').encode())
    yield case("base64-unpadded", ('{"image": "' + encoded.rstrip("=") + '"}').encode())
    urlsafe = base64.urlsafe_b64encode(image).decode()
    yield case("base64-urlsafe", ('{"image": "' + urlsafe + '"}').encode())
    yield case("base64-junk-chars", ('{"image": "' + "*".join(encoded) + '"}').encode())
    yield case("data-url", ('{"image": "data:image/png;base64,' + encoded + '"}').encode())
    yield case("data-url-no-base64", ('{"image": "data:image/png,' + encoded + '"}').encode())
    yield case("escaped-key", ('{"\\u0069mage": "' + encoded + '"}').encode())
    yield case("duplicate-key-image-last", ('{"image": null, "image": "' + encoded + '"}').encode())
    yield case(
        "duplicate-key-image-first", ('{"image": "' + encoded + '", "image": null}').encode()
    )
    yield case("escaped-slashes", ('{"image": "' + encoded.replace("/", "\\/") + '"}').encode())
    yield case("trailing-garbage", (document + " x").encode())
    yield case("nan-field", ('{"n": NaN, "image": "' + encoded + '"}').encode())
    yield case("json-charset-latin1", document.encode(), "application/json; charset=latin-1")
    yield case("vnd-json", document.encode(), "application/vnd.api+json")


def _msgpack(image: bytes, tag: str) -> Iterator[Case]:
    import msgspec

    binary = msgspec.msgpack.encode({"title": "a cat", "image": image})
    text = msgspec.msgpack.encode({"title": "a cat", "image": base64.b64encode(image).decode()})
    for name, content_type in {
        "x-msgpack": "application/x-msgpack",
        "vnd-msgpack": "application/vnd.msgpack",
        "octet-stream": "application/octet-stream",
        "no-type": None,
    }.items():
        yield Case(f"msgpack-binary-{name}-{tag}", "msgpack", binary, content_type, image)
        yield Case(f"msgpack-base64-{name}-{tag}", "msgpack", text, content_type, image)


def urlencoded_body(image: bytes) -> bytes:
    return b"title=a+cat&image=" + urllib.parse.quote_from_bytes(image).encode()


def _urlencoded(image: bytes, tag: str) -> Iterator[Case]:
    body = urlencoded_body(image)
    for name, content_type in {
        "plain": "application/x-www-form-urlencoded",
        "latin1": "application/x-www-form-urlencoded; charset=latin-1",
        "iso-8859-1": "application/x-www-form-urlencoded; charset=ISO-8859-1",
        "upper-case": "Application/X-WWW-Form-URLEncoded",
        "x-url-encoded": "application/x-url-encoded",
    }.items():
        yield Case(f"urlencoded-{name}-{tag}", "urlencoded", body, content_type, image)


def _polyglots() -> Iterator[Case]:
    """Bodies that are canonical multipart and, read whole (``request.body``), an image too."""
    pcd = images().get("pcd")
    if pcd is None:
        return
    head = b"--" + BOUNDARY + CRLF + cd("note") + CRLF + CRLF
    text = head + pcd[len(head) :]  # the note field's text fills the PCD's first 2048 bytes
    body = text + CRLF + b"--" + BOUNDARY + b"--" + CRLF
    yield Case("polyglot-multipart-pcd", "polyglot", body, form_ct(), body)


def _controls() -> Iterator[Case]:
    image = png()
    jpeg = images()["jpeg"]
    curl = b"------------------------d74496d66958873e"
    curl_body = multipart(
        [
            (text_headers("title"), b"a cat"),
            ([cd("file", "cat.png"), b"Content-Type: image/png"], image),
        ],
        curl,
    )
    yield Case("control-curl", "control", curl_body, form_ct(curl), image, control=True)
    requests_boundary = b"3c3bd84e8bd5d11ac1f0ea4c7e2fd5c9"
    requests_body = multipart(
        [([cd("title")], b"a cat"), ([cd("file", "cat.png")], image)], requests_boundary
    )
    yield Case(
        "control-requests",
        "control",
        requests_body,
        form_ct(requests_boundary),
        image,
        control=True,
    )
    browser = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
    browser_body = multipart(
        [
            (text_headers("title"), b"a cat"),
            ([cd("file", "photo.jpg"), b"Content-Type: image/jpeg"], jpeg),
            (text_headers("note"), "caf\u00e9".encode()),
        ],
        browser,
    )
    yield Case("control-browser", "control", browser_body, form_ct(browser), jpeg, control=True)
    yield Case("control-canonical", "control", canonical(image), form_ct(), image, control=True)
    yield Case("control-raw-png", "control", image, "image/png", image, control=True)
    yield Case("control-raw-jpeg", "control", jpeg, "image/jpeg", jpeg, control=True)
    document = '{"title": "a cat", "image": "' + base64.b64encode(image).decode() + '"}'
    yield Case(
        "control-json", "control", document.encode(), "application/json", image, control=True
    )


@functools.cache
def corpus() -> tuple[Case, ...]:
    """Every crafted case; ids are unique."""
    cases: list[Case] = list(_controls())
    hidden = {"png": png(), "tga": images()["tga"]}
    for tag, image in hidden.items():
        cases += _framing(image, tag)
        cases += _content_types(image, tag)
        cases += _part_headers(image, tag)
        cases += _json(image, tag)
        cases += _urlencoded(image, tag)
        cases += _msgpack(image, tag)
    cases += _formats()
    cases += _polyglots()
    return tuple(cases)


# --- mutated bodies (hypothesis) ---------------------------------------------------------------

_TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b'"',
    b";",
    b"\\",
    b"=",
    b"--" + BOUNDARY,
    b"--" + BOUNDARY + b"--",
    b"--" + BOUNDARY + b"\r\n",
    b"\r\n--" + BOUNDARY + b"\r\n",
    b"\r\n--" + BOUNDARY + b"--\r\n",
    b"\n--" + BOUNDARY + b"\n",
    b'Content-Disposition: form-data; name="x"; filename="y.img"\r\n',
    b'Content-Disposition: form-data; name="x"\r\n',
    b"Content-Type: image/png\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Type: text/plain; charset=iso-8859-1\r\n",
    b'; filename="z.img"',
    b"; filename*=UTF-8''z.img",
    b'; name="file"',
    b' filename="f.img"',
]
_CT_PARAMS = [
    "; boundary=" + A.decode(),
    "; boundary*=" + A.decode(),
    "; charset=latin-1",
    '; boundary="' + BOUNDARY.decode() + '"',
    "; Boundary=" + A.decode(),
    " ",
    ";",
]


@st.composite
def mutants(draw: st.DrawFn) -> Case:
    """A canonical body with 1-4 random structural edits; the image bytes themselves are kept
    intact (an image the edits break is no image to any parser)."""
    tag = draw(st.sampled_from(["png", "bmp", "tga"]))
    image = images()[tag]
    base = draw(st.sampled_from(["canonical", "field", "two-files"]))
    if base == "canonical":
        body = canonical(image)
    elif base == "field":
        body = multipart([(text_headers("title"), b"a cat"), (text_headers("pic"), image)])
    else:
        body = multipart([(file_headers(image), image), (file_headers(image, "b.png"), image)])
    content_type = form_ct()
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "unfile", "ct"]))
        protected = _image_spans(body, image)
        if kind == "ct":
            param = draw(st.sampled_from(_CT_PARAMS))
            content_type = (
                (content_type + param)
                if draw(st.booleans())
                else ("multipart/form-data" + param + "; boundary=" + BOUNDARY.decode())
            )
            edits.append(f"ct{_CT_PARAMS.index(param)}")
            continue
        if kind == "duplicate":
            parts = body.split(b"--" + BOUNDARY)
            if len(parts) > 2:
                index = draw(st.integers(1, len(parts) - 2))
                parts.insert(index, parts[index])
                body = (b"--" + BOUNDARY).join(parts)
                edits.append(f"dup{index}")
            continue
        if kind == "unfile":
            # Move the image into a text field: drop its filename (or its part's headers).
            old = draw(st.sampled_from([b'; filename="cat.png"', b"Content-Type: image/png\r\n"]))
            body = body.replace(old, b"", 1)
            edits.append("unfile")
            continue
        positions = [i for i in _structural_positions(body) if not _inside(i, protected)]
        position = draw(st.sampled_from(positions))
        if kind == "insert":
            token = draw(st.sampled_from(_TOKENS))
            body = body[:position] + token + body[position:]
            edits.append(f"ins{_TOKENS.index(token)}@{position}")
        else:
            size = draw(st.integers(1, 4))
            if any(_inside(i, protected) for i in range(position, position + size)):
                continue
            token = draw(st.sampled_from(_TOKENS)) if kind == "replace" else b""
            body = body[:position] + token + body[position + size :]
            edits.append(f"{kind[:3]}{size}@{position}")
    digest = hashlib.blake2s(content_type.encode() + body, digest_size=3).hexdigest()
    case_id = f"mutant-{tag}-{base}-{'-'.join(edits)}-{digest}"
    return Case(case_id, "mutant", body, content_type, image)


def _image_spans(body: bytes, image: bytes) -> list[tuple[int, int]]:
    spans, start = [], body.find(image)
    while start != -1:
        spans.append((start, start + len(image)))
        start = body.find(image, start + 1)
    return spans


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < position < end for start, end in spans)


def _structural_positions(body: bytes) -> list[int]:
    """Places where framing happens: around line ends, dashes, quotes, semicolons, colons."""
    positions = {0, len(body)}
    for token in (b"\r\n", b"--", b'"', b";", b":", b"="):
        start = body.find(token)
        while start != -1:
            positions.update((start, start + len(token)))
            start = body.find(token, start + 1)
    return sorted(positions)
