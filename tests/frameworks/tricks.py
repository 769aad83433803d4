"""The requests of the end-to-end suite: a blocked image hidden by one trick each
(docs/frameworks.md).

Every trick is sent as exact bytes over a socket (http.client would normalise the request line,
headers and framing). ``payloads`` are the image bytes the app must never receive.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
BLOCKED_FILE = ROOT / "blocklists" / "spam" / "win-cash.jpg"
CLEAN_FILE = ROOT / "examples" / "images" / "unrelated.jpg"
CRLF = b"\r\n"

#: The trick classes, in the order of docs/frameworks.md's table.
CLASSES = {
    "canon": "canonical blocked upload (multipart, raw, JSON)",
    "a": "framing: delimiter without CRLF, part after the close, body opening with the close, ...",
    "b": "two boundaries: boundary*=, repeated, spaces around =, backslash escapes",
    "c": "a file guard might call a field: filename*=, escaped quote, two C-D, bad UTF-8",
    "d": "formats guard did not recognise (file part, text field, raw body); misdeclared raw JPEG",
    "e": "animation with the blocked picture on a late, long frame; APNG default image; MPO",
    "f": "routes: trailing slash, //, %2F, absolute-form, lower-case method, Mount, root_path",
    "g": "JSON with a BOM, UTF-16, UTF-32, escapes, line breaks, duplicate keys (json_fields)",
}


@dataclass(frozen=True)
class Trick:
    cls: str
    name: str
    path: str
    body: bytes
    content_type: bytes | None = None
    method: bytes = b"POST"
    #: The request target; "{port}" is replaced (absolute-form). Default: ``path``.
    target: str | None = None
    #: Which server gets it: the framework's own (None) or another one ("starlette-root").
    server: str | None = None
    payloads: tuple[bytes, ...] = field(default=(), repr=False)
    #: More request header lines, as sent.
    headers: tuple[bytes, ...] = ()
    #: Send the body with Transfer-Encoding: chunked (in 1000-byte chunks) instead of a length.
    chunked: bool = False
    version: bytes = b"HTTP/1.1"

    def request(self, port: int) -> bytes:
        target = (self.target or self.path).replace("{port}", str(port)).encode()
        lines = [self.method + b" " + target + b" " + self.version]
        lines.append(f"Host: 127.0.0.1:{port}".encode())
        if self.content_type is not None:
            lines.append(b"Content-Type: " + self.content_type)
        lines += self.headers
        if not self.chunked:
            lines.append(f"Content-Length: {len(self.body)}".encode())
            return CRLF.join([*lines, b"Connection: close"]) + CRLF + CRLF + self.body
        lines += [b"Transfer-Encoding: chunked", b"Connection: close"]
        chunks = [self.body[i : i + 1000] for i in range(0, len(self.body), 1000)]
        body = b"".join(b"%x" % len(c) + CRLF + c + CRLF for c in chunks) + b"0" + CRLF + CRLF
        return CRLF.join(lines) + CRLF + CRLF + body


# --- images ------------------------------------------------------------------------------------


def blocked() -> bytes:
    return BLOCKED_FILE.read_bytes()


def clean() -> bytes:
    return CLEAN_FILE.read_bytes()


def _small() -> Image.Image:
    # Small enough that a text field holding it stays under every framework's field-size limit
    # (Quart 500 kB, Starlette 1 MiB): a refusal by the framework would prove nothing.
    with Image.open(BLOCKED_FILE) as image:
        return image.convert("RGB").resize((160, 100), Image.Resampling.LANCZOS)


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _ppm_ascii(image: Image.Image) -> bytes:
    width, height = image.size
    samples = image.tobytes()
    rows = [" ".join(map(str, samples[y * width * 3 : (y + 1) * width * 3])) for y in range(height)]
    return f"P3\n{width} {height}\n255\n".encode() + "\n".join(rows).encode() + b"\n"


@cache
def other_formats() -> dict[str, bytes]:
    """The blocked picture in formats Pillow reads that the first release did not sniff."""
    image = _small()
    formats = {
        "PPM": _save(image, "PPM"),
        "PPM-ascii": _ppm_ascii(image),
        "PGM": _save(image.convert("L"), "PPM"),
        "PCX": _save(image, "PCX"),
        "TGA": _save(image, "TGA"),
        "TIFF": _save(image, "TIFF"),
        "SGI": _save(image, "SGI"),
        "ICO": _save(image, "ICO", sizes=[(160, 100)]),
        "QOI": _save(image, "QOI"),
        "JPEG2000": _save(image, "JPEG2000"),
        "DDS": _save(image, "DDS"),
    }
    for name, data in formats.items():
        with Image.open(io.BytesIO(data)) as opened:  # each is an image Pillow opens
            assert opened.size[0] > 0, name
    return formats


def _frames(count: int, late: int) -> tuple[list[Image.Image], list[int]]:
    """``count`` distinct frames of an unrelated photo, the blocked picture at ``late``, which
    is shown for a minute while the others flash by."""
    with Image.open(CLEAN_FILE) as photo:
        base = photo.convert("RGB").resize((160, 100))
    frames = [base.point(lambda v, i=i: min(255, v + 3 * i)) for i in range(count)]
    frames[late] = _small()
    durations = [20] * count
    durations[late] = 60_000
    return frames, durations


def _unsampled_late_frame(count: int, sampled: int = 8) -> int:
    """A late frame that the first release's evenly spread sample of ``sampled`` frames skips."""
    picks = {round(i * (count - 1) / (sampled - 1)) for i in range(sampled)}
    return max(i for i in range(count) if i not in picks)


@cache
def animations() -> dict[str, bytes]:
    """30 frames (the blocked one where the first release's sample of 8 did not look), a GIF
    of 8 with the blocked picture last, an APNG whose default image (shown by viewers without
    APNG support) is harmless and whose only animation frame is blocked, and an MPO (a JPEG
    with more pictures after the first) whose second picture is blocked."""
    frames, _ = _frames(2, 1)
    out = {
        "APNG default image": _save(
            frames[0], "PNG", save_all=True, append_images=frames[1:], default_image=True
        ),
        "MPO": _save(frames[0], "MPO", save_all=True, append_images=frames[1:]),
    }
    for count, suffix in ((30, ""), (8, " 8 frames")):
        late = _unsampled_late_frame(count) if count > 8 else count - 1
        frames, durations = _frames(count, late)
        options = {"save_all": True, "append_images": frames[1:], "duration": durations, "loop": 0}
        out["GIF" + suffix] = _save(frames[0], "GIF", **options)
        if not suffix:
            out["APNG"] = _save(frames[0], "PNG", **options)
            out["WEBP"] = _save(frames[0], "WEBP", lossless=True, **options)
    return out


# --- multipart ---------------------------------------------------------------------------------


def part(
    disposition: bytes, data: bytes, content_type: bytes | None = None, *extra: bytes
) -> bytes:
    headers = [b"Content-Disposition: " + disposition]
    if content_type is not None:
        headers.append(b"Content-Type: " + content_type)
    return CRLF.join([*headers, *extra]) + CRLF + CRLF + data


def file_part(data: bytes, name: bytes = b"file", filename: bytes = b"x.jpg") -> bytes:
    return part(
        b'form-data; name="' + name + b'"; filename="' + filename + b'"', data, b"image/jpeg"
    )


def field_part(data: bytes, name: bytes = b"comment") -> bytes:
    return part(b'form-data; name="' + name + b'"', data)


def form(boundary: bytes, *parts: bytes) -> bytes:
    body = b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts)
    return body + b"--" + boundary + b"--" + CRLF


def multipart_type(boundary_params: bytes) -> bytes:
    return b"multipart/form-data; " + boundary_params


B = b"----guardE2Eaaaa1111"
A2 = b"----guardE2Ebbbb2222"


def _multipart(cls: str, name: str, body: bytes, params: bytes, image: bytes, path: str) -> Trick:
    return Trick(cls, name, path, body, multipart_type(params), payloads=(image,))


def framing(image: bytes, path: str) -> list[Trick]:
    tricks = []
    for label, before in (("none", b""), ("LF", b"\n"), ("CR", b"\r")):
        smuggled = b"hello" + before + b"--" + B + CRLF + file_part(image)
        body = b"--" + B + CRLF + field_part(smuggled) + CRLF + b"--" + B + b"--" + CRLF
        tricks.append(
            _multipart(
                "a", f"delimiter after {label} in a field", body, b"boundary=" + B, image, path
            )
        )
    after = form(B, field_part(b"hello")) + b"--" + B + CRLF + file_part(image) + CRLF
    after += b"--" + B + b"--" + CRLF
    tricks.append(_multipart("a", "part after the close", after, b"boundary=" + B, image, path))
    opening = b"--" + B + b"--" + CRLF + form(B, file_part(image))
    tricks.append(
        _multipart("a", "body opens with the close", opening, b"boundary=" + B, image, path)
    )
    return tricks + more_framing(image, path)


def more_framing(image: bytes, path: str) -> list[Trick]:
    """What lenient parsers accept: bare LF, a preamble, padding, folded or encoded parts, other
    request framing, and a urlencoded form holding an ASCII image."""
    params = b"boundary=" + B
    canonical = form(B, file_part(image))
    disposition = b'form-data; name="file"; filename="x.jpg"'
    variants = {
        "LF line endings": canonical.replace(CRLF, b"\n"),
        "preamble": b"preamble text" + CRLF + canonical,
        "padding after the delimiter": canonical.replace(
            b"--" + B + CRLF, b"--" + B + b"  \t" + CRLF, 1
        ),
        "LF between part headers": form(B, file_part(image).replace(CRLF, b"\n", 2)),
        "folded Content-Disposition": form(
            B, part(b'form-data; name="file";' + CRLF + b' filename="x.jpg"', image, b"image/jpeg")
        ),
        "Content-Transfer-Encoding: base64": form(
            B,
            part(
                disposition,
                base64.b64encode(image),
                b"image/jpeg",
                b"Content-Transfer-Encoding: base64",
            ),
        ),
        "upper-case BOUNDARY": canonical,
    }
    tricks = [
        _multipart("a", name, body, b"BOUNDARY=" + B if "BOUNDARY" in name else params, image, path)
        for name, body in variants.items()
    ]
    multipart = multipart_type(params)
    tricks += [
        Trick("a", "chunked request body", path, canonical, multipart, chunked=True),
        Trick(
            "a",
            "two Content-Type headers",
            path,
            canonical,
            b"text/plain",
            headers=(b"Content-Type: " + multipart,),
        ),
        Trick(
            "a",
            "Content-Length and chunked",
            path,
            canonical,
            multipart,
            headers=(b"Transfer-Encoding: chunked",),
        ),
    ]
    tricks = [replace(trick, payloads=(image,)) for trick in tricks]
    ascii_image = other_formats()["PPM-ascii"]
    urlencoded = b"file=" + urllib.parse.quote_from_bytes(ascii_image).encode()
    form_type = b"application/x-www-form-urlencoded"
    plus = b"file=" + urllib.parse.quote_plus(ascii_image.decode()).encode()
    for name, body in (("urlencoded ASCII PPM", urlencoded), ("urlencoded ASCII PPM, +", plus)):
        tricks.append(Trick("a", name, path, body, form_type, payloads=(ascii_image,)))
    return tricks


def _polyglot(first: bytes, second: bytes, image: bytes, image_under_second: bool) -> bytes:
    """A body valid under either boundary: one sees a harmless field (the other part is its
    preamble or epilogue), the other the image."""
    harmless, loaded = field_part(b"harmless"), file_part(image)
    if image_under_second:
        return form(first, harmless) + form(second, loaded)
    return form(second, harmless) + form(first, loaded)


def two_boundaries(image: bytes, path: str) -> list[Trick]:
    escaped_raw, escaped_unquoted = b"----guard\\E2E", b"----guardE2E"
    quote_raw, quote_unquoted = b'----guard\\"E2E', b'----guard"E2E'
    cases = [
        ("boundary= then boundary*=", b"boundary=" + B + b"; boundary*=" + A2, B, A2),
        ("boundary*= then boundary=", b"boundary*=" + A2 + b"; boundary=" + B, B, A2),
        ("repeated boundary", b"boundary=" + B + b"; boundary=" + A2, B, A2),
        ("repeated, other case", b"boundary=" + B + b"; BOUNDARY=" + A2, B, A2),
        ("spaces around =", b"boundary =" + B + b"; boundary=" + A2, B, A2),
        ("backslash in quotes", b'boundary="' + escaped_raw + b'"', escaped_raw, escaped_unquoted),
        ('escaped " in quotes', b'boundary="' + quote_raw + b'"', quote_raw, quote_unquoted),
    ]
    tricks = [
        _multipart(
            "b", "space before = only", form(B, file_part(image)), b"boundary = " + B, image, path
        )
    ]
    for name, params, first, second in cases:
        for under_second in (False, True):
            which = "second" if under_second else "first"
            body = _polyglot(first, second, image, under_second)
            tricks.append(
                _multipart("b", f"{name}, image under the {which}", body, params, image, path)
            )
    return tricks


def field_or_file(image: bytes, label: str, path: str) -> list[Trick]:
    cases = [
        (
            "filename*= only",
            [b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''x.jpg"],
        ),
        (
            "escaped quote in name",
            [b'Content-Disposition: form-data; name="a\\"; filename=\\"x.jpg"'],
        ),
        (
            "escaped quote in filename",
            [b'Content-Disposition: form-data; name="file"; filename="x\\".jpg"'],
        ),
        (
            "two C-D, field first",
            [
                b'Content-Disposition: form-data; name="comment"',
                b'Content-Disposition: form-data; name="file"; filename="x.jpg"',
            ],
        ),
        (
            "two C-D, file first",
            [
                b'Content-Disposition: form-data; name="file"; filename="x.jpg"',
                b'Content-Disposition: form-data; name="comment"',
            ],
        ),
        (
            "bad UTF-8 in filename",
            [b'Content-Disposition: form-data; name="file"; filename="\xff\xfe.jpg"'],
        ),
        (
            "bad UTF-8 in name",
            [b'Content-Disposition: form-data; name="\xff\xfe"; filename="x.jpg"'],
        ),
    ]
    tricks = []
    for name, headers in cases:
        body = form(B, CRLF.join(headers) + CRLF + CRLF + image)
        tricks.append(_multipart("c", f"{name} ({label})", body, b"boundary=" + B, image, path))
    return tricks


def formats(multipart_paths: list[str], field_name: bytes) -> list[Trick]:
    tricks = []
    for label, data in other_formats().items():
        for path in multipart_paths:
            suffix = "" if path == "/upload" else f" {path}"
            body = form(B, file_part(data, filename=b"x.bin"))
            tricks.append(
                _multipart("d", f"{label} file part{suffix}", body, b"boundary=" + B, data, path)
            )
            body = form(B, field_part(data, name=field_name))
            tricks.append(
                _multipart("d", f"{label} text field{suffix}", body, b"boundary=" + B, data, path)
            )
        for content_type in (b"text/plain", None):
            kind = "untyped" if content_type is None else "text/plain"
            tricks.append(
                Trick("d", f"{label} raw {kind}", "/raw", data, content_type, payloads=(data,))
            )
    return tricks + misdeclared_raw()


def misdeclared_raw() -> list[Trick]:
    """The blocked JPEG as a raw body declared as anything but an image: the raw-body view
    reads it whatever the type says."""
    image = blocked()
    types = [
        b"application/json",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data",
        b"multipart/form-data; boundary=" + B,
        b"text/html; charset=utf-8",
        b"application/xml",
        b"application/x-anything",
        b"",
    ]
    return [
        Trick("d", f"JPEG raw as {t.decode() or 'empty type'}", "/raw", image, t, payloads=(image,))
        for t in types
    ]


def animated(multipart_paths: list[str]) -> list[Trick]:
    tricks = []
    for label, data in animations().items():
        for path in multipart_paths:
            body = form(B, file_part(data, filename=b"x.gif"))
            suffix = "" if path == "/upload" else f" {path}"
            tricks.append(
                _multipart("e", f"{label} file part{suffix}", body, b"boundary=" + B, data, path)
            )
        tricks.append(
            Trick("e", f"{label} raw image/*", "/raw", data, b"image/gif", payloads=(data,))
        )
        tricks.append(Trick("e", f"{label} raw untyped", "/raw", data, None, payloads=(data,)))
    return tricks


def routes(image: bytes, path: str = "/upload") -> list[Trick]:
    body = form(B, file_part(image))
    content_type = multipart_type(b"boundary=" + B)
    targets = [
        ("trailing slash", f"{path}/"),
        ("double slash", f"/{path}"),
        ("encoded slash", f"{path}%2F"),
        ("encoded slash, upper", f"{path}%2f"),
        ("dot segment", f"/.{path}"),
        ("query string", f"{path}?x=1"),
        ("absolute-form", f"http://127.0.0.1:{{port}}{path}"),
        ("absolute-form, other host", f"http://example.com{path}"),
        ("encoded letter", path.replace("u", "%75", 1)),
        ("upper case", path.upper()),
        ("dot-dot segment", f"/x/..{path}"),
        ("trailing dot segment", f"{path}/."),
        ("semicolon parameter", f"{path};x=1"),
    ]
    tricks = [
        Trick("f", name, path, body, content_type, target=target, payloads=(image,))
        for name, target in targets
    ]
    for label, method in (("lower-case method", b"post"), ("mixed-case method", b"PoSt")):
        tricks.append(Trick("f", label, path, body, content_type, method=method, payloads=(image,)))
    tricks.append(
        Trick("f", "HTTP/1.0", path, body, content_type, version=b"HTTP/1.0", payloads=(image,))
    )
    return tricks


def canonical(image: bytes) -> list[Trick]:
    return [
        Trick(
            "canon",
            "file part",
            "/upload",
            form(B, file_part(image)),
            multipart_type(b"boundary=" + B),
            payloads=(image,),
        ),
        Trick("canon", "raw image/jpeg", "/raw", image, b"image/jpeg", payloads=(image,)),
        Trick("canon", "JSON", "/json", json_body(image), b"application/json", payloads=(image,)),
    ]


def json_body(image: bytes) -> bytes:
    return json.dumps({"image": base64.b64encode(image).decode()}).encode()


def json_encodings(image: bytes) -> list[Trick]:
    text = json_body(image).decode()
    bodies = {
        "UTF-8 BOM": b"\xef\xbb\xbf" + text.encode(),
        "UTF-16-LE BOM": text.encode("utf-16"),  # Python writes the BOM, little-endian
        "UTF-16-BE BOM": b"\xfe\xff" + text.encode("utf-16-be"),
        "UTF-16-LE no BOM": text.encode("utf-16-le"),
        "UTF-16-BE no BOM": text.encode("utf-16-be"),
        "UTF-32-LE no BOM": text.encode("utf-32-le"),
    }
    tricks = []
    for name, body in bodies.items():
        tricks.append(
            Trick(
                "g",
                f"{name} application/json",
                "/json",
                body,
                b"application/json",
                payloads=(image,),
            )
        )
    tricks.append(
        Trick("g", "UTF-8 BOM untyped", "/json", bodies["UTF-8 BOM"], None, payloads=(image,))
    )
    tricks.append(
        Trick(
            "g",
            "UTF-16-LE BOM text/plain",
            "/json",
            bodies["UTF-16-LE BOM"],
            b"text/plain",
            payloads=(image,),
        )
    )
    return tricks + json_escapes(image)


def json_escapes(image: bytes) -> list[Trick]:
    """JSON that every parser decodes alike but a naive scanner would not: escapes in the key
    or the value, MIME line breaks (base64.b64decode skips them), duplicate keys."""
    encoded = base64.b64encode(image).decode()
    other = base64.b64encode(clean()).decode()
    with_u = "".join(f"\\u{ord(c):04x}" if i % 7 == 0 else c for i, c in enumerate(encoded))
    broken = "\\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))

    def obj(*pairs: tuple[str, str]) -> str:
        return "{" + ", ".join(f'"{key}": "{value}"' for key, value in pairs) + "}"

    texts = {
        "key with a \\u escape": obj(("\\u0069mage", encoded)),
        "value with \\/ escapes": obj(("image", encoded.replace("/", "\\/"))),
        "value with \\u escapes": obj(("image", with_u)),
        "base64 with line breaks": obj(("image", broken)),
        "duplicate key, image first": obj(("image", encoded), ("image", other)),
        "duplicate key, image last": obj(("image", other), ("image", encoded)),
        "data: URL": obj(("image", "data:image/jpeg;base64," + encoded)),
    }
    tricks = [
        Trick("g", name, "/json", text.encode(), b"application/json", payloads=(image,))
        for name, text in texts.items()
    ]
    # Views that parse the body as JSON whatever its declared type (Starlette's request.json(),
    # Django's json.loads(request.body)).
    for declared in (
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=" + B,
        b"application/octet-stream",
        b"text/html",
        b"application/jsonx",
    ):
        name = f"JSON declared {declared.decode()}"
        tricks.append(Trick("g", name, "/json", json_body(image), declared, payloads=(image,)))
    # json.loads skips any amount of leading whitespace, whatever the body is declared as.
    for size in (100, 5000):
        padded = (b" \r\n\t" * 1250)[:size] + json_body(image)
        for content_type in (b"application/json", b"text/plain", None):
            kind = "untyped" if content_type is None else content_type.decode()
            name = f"{size} bytes of whitespace first, {kind}"
            tricks.append(Trick("g", name, "/json", padded, content_type, payloads=(image,)))
    return tricks


def for_framework(framework: str) -> list[Trick]:
    """Every trick, aimed at this framework's example (its multipart routes and field name)."""
    image = blocked()
    # FastAPI's `file: UploadFile` refuses a plain field (422); `bytes = File()` takes either.
    paths = ["/upload", "/upload-bytes"] if framework == "fastapi" else ["/upload"]
    tricks = canonical(image)
    for path in paths:
        ppm = other_formats()["PPM"]
        these = framing(image, path) + two_boundaries(image, path)
        these += field_or_file(image, "JPEG", path) + field_or_file(ppm, "PPM", path)
        these += routes(image, path)
        if path != "/upload":
            these = [replace(trick, name=f"{trick.name} {path}") for trick in these]
        tricks += these
    tricks += formats(paths, b"file")
    tricks += animated(paths)
    tricks += json_encodings(image)
    if framework == "starlette":
        tricks += mounted(image)
    names = [(trick.cls, trick.name) for trick in tricks]
    assert len(names) == len(set(names)), "trick names must be unique"
    return tricks


def mounted(image: bytes) -> list[Trick]:
    """Starlette: guard inside ``Mount("/api", ...)`` with a config naming /upload, and the app
    served with ``--root-path /prefix``."""
    body = form(B, file_part(image))
    content_type = multipart_type(b"boundary=" + B)
    tricks = [Trick("f", "Mount /api/upload", "/api/upload", body, content_type, payloads=(image,))]
    tricks += [
        Trick("f", "Mount /api/raw", "/api/raw", image, b"image/jpeg", payloads=(image,)),
        Trick(
            "f",
            "Mount /api/json",
            "/api/json",
            json_body(image),
            b"application/json",
            payloads=(image,),
        ),
        Trick(
            "f",
            "Mount //api/upload",
            "/api/upload",
            body,
            content_type,
            target="//api/upload",
            payloads=(image,),
        ),
    ]
    for path in ("/upload", "/api/upload"):
        tricks.append(
            Trick(
                "f",
                f"--root-path /prefix, {path}",
                path,
                body,
                content_type,
                server="starlette-root",
                payloads=(image,),
            )
        )
    return tricks
