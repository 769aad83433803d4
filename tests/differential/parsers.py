"""What each framework hands its app for a POST body, what guard hashed, and the invariant.

Each adapter runs the framework's own request parsing, the code path a view reaches, and returns
every value the app can get as bytes:

* the raw body (``request.body``, ``await request.body()``, ``request.get_data()``): every
  framework hands it to any view that asks, whatever the form parser thinks of it;
* every file part's content and every text field's value (a text field reaches the app as ``str``:
  it is turned back into bytes with each charset that could have decoded it, so a field decoded
  losslessly, e.g. as latin-1, gives back the exact bytes the client sent);
* the images at the route's JSON fields, as an app that parses the body as JSON gets them
  (``json.loads`` for Django, Starlette, Flask/Werkzeug and Quart; msgspec for Litestar, which
  also reads MessagePack, where a field can hold the image's bytes as they are).

A form parser that raises hands the app no form (the framework answers 400/413/500): that is
recorded as refused by the framework, and only the raw body and JSON values remain.

The invariant checked against them: either guard refuses the body, or every value that Pillow can
open was hashed by guard (the same bytes as an image guard hashed, or the same decoded pixels).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from guard.errors import GuardError
from guard.hashing import hash_bytes
from guard.types import DEFAULT_LIMITS
from guard.uploads import JsonScan, find_images

#: The route's JSON fields that hold base64 images (``json_fields`` in guard's config).
JSON_FIELDS = ("image",)
#: guard's configuration for every body of the suite: the defaults of ``http`` and ``limits``.
JSON_SCAN = JsonScan(fields=JSON_FIELDS, max_bytes=10_000_000, max_depth=32)
MAX_PARTS = 64
MAX_IMAGES = 16
# Above this many pixels an image Pillow opens is counted as openable without decoding it (a
# mutated body can declare a huge picture; decoding it would only cost memory).
_DECODE_PIXELS = 16_000_000


class FrameworkRefused(Exception):
    """The framework's form parser raised: the app gets an error response, not the form."""


@dataclass
class Parsed:
    """What one framework hands the app for one body."""

    values: list[bytes]
    #: Why the framework's form parser refused the body (None when it parsed it).
    refused: str | None = None


# --- turning what the app gets into bytes ------------------------------------------------------

_CHARSET = re.compile(
    rb"""charset\s*\*?=\s*["']?(?:utf-8'')?([A-Za-z0-9_.:-]{1,40})""", re.IGNORECASE
)


def _charsets(body: bytes, content_type: str) -> list[str]:
    names = ["utf-8", "latin-1"]
    for match in _CHARSET.finditer(content_type.encode("latin-1", "replace") + b"\n" + body):
        name = match.group(1).decode("ascii")
        if name not in names:
            names.append(name)
    return names


def _text_bytes(value: str, charsets: Iterable[str]) -> list[bytes]:
    """The bytes a text value can stand for: its encoding in each charset that could hold it."""
    found = []
    for charset in charsets:
        try:
            encoded = value.encode(charset)
        except (UnicodeError, LookupError):
            continue
        if encoded not in found:
            found.append(encoded)
    return found


def _base64_images(value: Any) -> list[bytes]:
    """What an app may decode from a JSON field: lenient, strict and URL-safe base64."""
    if not isinstance(value, str):
        return []
    text = value.split(",", 1)[1] if value[:5].lower() == "data:" and "," in value else value
    decoders: list[Callable[[], bytes]] = [
        lambda: base64.b64decode(text),
        lambda: base64.b64decode(text + "=" * (-len(text) % 4)),
        lambda: base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)),
    ]
    found = []
    for decode in decoders:
        try:
            data = decode()
        except (binascii.Error, ValueError):
            continue
        if data and data not in found:
            found.append(data)
    return found


def _document_values(body: bytes, documents: Callable[[bytes], list[Any]]) -> list[bytes]:
    """The images at the route's JSON fields, for an app that parses the body as JSON (or, in
    Litestar, MessagePack) whatever its declared type (Starlette's ``request.json()``,
    ``json.loads(request.body)``, Flask's ``get_json(force=True)``): base64 text, or bytes as
    MessagePack carries them."""
    found: list[bytes] = []
    for document in documents(body):
        if not isinstance(document, dict):
            continue
        for name in JSON_FIELDS:
            value = document.get(name)
            found += [value] if isinstance(value, bytes) else _base64_images(value)
    return found


def _stdlib_json(body: bytes) -> list[Any]:
    try:
        return [json.loads(body)]
    except (ValueError, RecursionError):  # not JSON, or too deep: the app gets no document
        return []


def _litestar_documents(body: bytes) -> list[Any]:
    """Litestar apps read JSON (``request.json()``, msgspec) or MessagePack (``request.msgpack()``,
    a ``data`` parameter of a handler declared ``application/x-msgpack``)."""
    from litestar.serialization import decode_json, decode_msgpack

    documents = []
    with contextlib.suppress(Exception):  # not JSON
        documents.append(decode_json(body or b"null"))
    with contextlib.suppress(Exception):  # not MessagePack
        documents.append(decode_msgpack(body or b"\xc0"))
    return documents


# --- the adapters ------------------------------------------------------------------------------

_runner: asyncio.Runner | None = None


def _run(coroutine: Any) -> Any:
    # One event loop for every async adapter call (a new one per body costs more than parsing).
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()
    return _runner.run(coroutine)


def close() -> None:
    """Close the adapters' event loop (it is also the thread's current loop until then)."""
    global _runner
    if _runner is not None:
        _runner.close()
        _runner = None


def receive_for(body: bytes) -> Callable[[], Any]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def asgi_scope(body: bytes, content_type: str | None) -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/upload",
        "raw_path": b"/upload",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


def _environ(body: bytes, content_type: str | None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/upload",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    return environ


def _configure_django() -> None:
    """Minimal settings, once, and only if nobody configured Django before and no settings module
    is named (then Django loads that one, as a test of a real Django app in this process would)."""
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure(
            DEBUG=False,
            SECRET_KEY="guard-differential-tests",
            ALLOWED_HOSTS=["*"],
            USE_TZ=True,
            DEFAULT_CHARSET="utf-8",
        )


def django_form(body: bytes, content_type: str | None, charsets: list[str]) -> list[bytes]:
    """``request.POST`` and ``request.FILES`` of a real WSGIRequest (Django's own dispatch:
    multipart through MultiPartParser, urlencoded through QueryDict, anything else empty)."""
    _configure_django()
    from django.core.handlers.wsgi import WSGIRequest

    request = WSGIRequest(_environ(body, content_type))
    try:
        post, files = request.POST, request.FILES
        values = [v for _, vs in post.lists() for v in vs]
        uploads = [f.read() for _, fs in files.lists() for f in fs]
    except Exception as error:  # MultiPartParserError, TooManyFieldsSent, ...
        raise FrameworkRefused(f"{type(error).__name__}: {error}") from error
    return [b for v in values for b in _text_bytes(v, charsets)] + uploads


def werkzeug_form(body: bytes, content_type: str | None, charsets: list[str]) -> list[bytes]:
    """``request.form`` and ``request.files`` of a werkzeug Request (Flask's request class; its
    form parser is silent, so a broken body gives an empty form, not an error)."""
    from werkzeug.wrappers import Request

    request = Request(_environ(body, content_type))
    try:
        values = [v for _, vs in request.form.lists() for v in vs]
        uploads = [f.read() for _, fs in request.files.lists() for f in fs]
    except Exception as error:  # RequestEntityTooLarge and the like
        raise FrameworkRefused(f"{type(error).__name__}: {error}") from error
    return [b for v in values for b in _text_bytes(v, charsets)] + uploads


async def _quart_form(body: bytes, content_type: str | None) -> tuple[list[str], list[bytes]]:
    from quart.wrappers import Request
    from werkzeug.datastructures import Headers

    scope = asgi_scope(body, content_type)
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])

    async def no_push(path: str, headers: Headers) -> None:
        return None

    request = Request(
        "POST",
        "http",
        "/upload",
        b"",
        headers,
        "",
        "1.1",
        scope,  # type: ignore[arg-type]
        send_push_promise=no_push,
    )
    request.body.append(body)
    request.body.set_complete()
    form = await request.form
    files = await request.files
    values = [v for _, vs in form.lists() for v in vs]
    uploads = [f.read() for _, fs in files.lists() for f in fs]
    return values, uploads


def quart_form(body: bytes, content_type: str | None, charsets: list[str]) -> list[bytes]:
    """``await request.form`` and ``await request.files`` of a Quart Request (Quart's own
    FormDataParser over werkzeug's sans-io MultipartDecoder; silent like werkzeug's)."""
    try:
        values, uploads = _run(_quart_form(body, content_type))
    except Exception as error:
        raise FrameworkRefused(f"{type(error).__name__}: {error}") from error
    return [b for v in values for b in _text_bytes(v, charsets)] + uploads


@functools.lru_cache(maxsize=1)
def _litestar_app() -> Any:
    """A Litestar app with one upload route, and that route's handler (the request reads its
    body size limit from it, as in a real app)."""
    from litestar import Litestar, Request, post

    @post("/upload", sync_to_thread=False)
    def upload(request: Request[Any, Any, Any]) -> None:
        return None

    app = Litestar(route_handlers=[upload])
    return app, app.routes[0].route_handlers[0]  # type: ignore[attr-defined]


async def _litestar_form(body: bytes, content_type: str | None) -> tuple[list[str], list[bytes]]:
    from litestar import Request
    from litestar.datastructures import UploadFile

    scope = asgi_scope(body, content_type)
    scope["litestar_app"], scope["route_handler"] = _litestar_app()
    request: Request[Any, Any, Any] = Request(scope, receive_for(body))  # type: ignore[arg-type]
    form = await request.form()
    values: list[str] = []
    uploads: list[bytes] = []
    for _, value in form.multi_items():
        if isinstance(value, UploadFile):
            uploads.append(await value.read())
            await value.close()
        else:
            values.append(value)
    return values, uploads


def litestar_form(body: bytes, content_type: str | None, charsets: list[str]) -> list[bytes]:
    """``await request.form()`` of a Litestar Request (litestar._multipart, on the ``multipart``
    package's PushMultipartParser; a data: Body(media_type=MULTI_PART) handler parameter goes
    through the same parse_multipart_form)."""
    try:
        values, uploads = _run(_litestar_form(body, content_type))
    except Exception as error:  # ClientException (400), UnicodeDecodeError (500)
        raise FrameworkRefused(f"{type(error).__name__}: {error}") from error
    return [b for v in values for b in _text_bytes(v, charsets)] + uploads


async def _starlette_form(body: bytes, content_type: str | None) -> tuple[list[str], list[bytes]]:
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    request = Request(asgi_scope(body, content_type), receive_for(body))  # type: ignore[arg-type]
    values: list[str] = []
    uploads: list[bytes] = []
    async with request.form() as form:
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append(await value.read())
            else:
                values.append(value)
    return values, uploads


def starlette_form(body: bytes, content_type: str | None, charsets: list[str]) -> list[bytes]:
    """``await request.form()`` of a Starlette Request (python-multipart; FastAPI's Form/File
    parameters read the same FormData)."""
    try:
        values, uploads = _run(_starlette_form(body, content_type))
    except Exception as error:  # MultiPartException (400) and the rest
        raise FrameworkRefused(f"{type(error).__name__}: {error}") from error
    return [b for v in values for b in _text_bytes(v, charsets)] + uploads


@dataclass(frozen=True)
class Adapter:
    name: str
    form: Callable[[bytes, str | None, list[str]], list[bytes]]
    documents: Callable[[bytes], list[Any]] = _stdlib_json

    def examine(self, body: bytes, content_type: str | None) -> Parsed:
        """Everything the app can get: raw body, form values (unless refused), JSON images."""
        charsets = _charsets(body, content_type or "")
        values = [body]
        refused = None
        try:
            values += self.form(body, content_type, charsets)
        except FrameworkRefused as error:
            refused = str(error)[:200]
        values += _document_values(body, self.documents)
        return Parsed(values, refused)

    def parse(self, body: bytes, content_type: str | None) -> list[bytes]:
        return self.examine(body, content_type).values


ADAPTERS: tuple[Adapter, ...] = (
    Adapter("django", django_form),
    Adapter("werkzeug", werkzeug_form),
    Adapter("quart", quart_form),
    Adapter("litestar", litestar_form, _litestar_documents),
    Adapter("starlette", starlette_form),
)
BY_NAME = {adapter.name: adapter for adapter in ADAPTERS}


# --- guard, the party under test ---------------------------------------------------------------


@dataclass(frozen=True)
class GuardView:
    """guard's answer: refused (with its error), or the images it hashed."""

    refused: str | None
    images: tuple[bytes, ...] = ()


def guard_view(body: bytes, content_type: str | None) -> GuardView:
    """What the middleware does with a body on a guarded route: find the images, hash each.

    A GuardError anywhere is a refusal (400/413/415/422); any other exception is a 500 from the
    middleware, also a refusal (the app is not called), marked so a report can tell them apart.
    """
    try:
        images = find_images(
            body,
            content_type or "",
            max_parts=MAX_PARTS,
            max_images=MAX_IMAGES,
            json_scan=JSON_SCAN,
        )
        for image in images:
            hash_bytes(image, DEFAULT_LIMITS)
    except GuardError as error:
        return GuardView(f"{type(error).__name__}: {error}"[:200])
    except Exception as error:  # noqa: BLE001 - the middleware answers 500
        return GuardView(f"CRASH {type(error).__name__}: {error}"[:200])
    return GuardView(None, tuple(images))


def naive_guard(body: bytes, content_type: str | None) -> GuardView:
    """A guard that finds no image anywhere: the suite must catch it."""
    return GuardView(None, ())


@functools.lru_cache(maxsize=4096)
def pixels(data: bytes) -> str | None:
    """A digest of the first frame's pixels when Pillow opens and decodes ``data``, else None.

    Pillow is asked with every format it knows, as an app calling ``Image.open`` does.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > _DECODE_PIXELS:
                    return f"undecoded {image.format} {width}x{height}"
                image.load()
                rgba = image.convert("RGBA")
                digest = hashlib.sha256(rgba.tobytes()).hexdigest()
                return f"{width}x{height}:{digest}"
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is no image to the app
        return None


@dataclass
class Outcome:
    """One body through one parser, judged against guard's view of it."""

    parser: str
    guard: GuardView
    parsed: Parsed
    #: Values the app gets that Pillow opens but guard never hashed.
    unhashed: list[bytes] = field(default_factory=list)

    @property
    def violated(self) -> bool:
        return bool(self.unhashed)


def check(adapter: Adapter, body: bytes, content_type: str | None, view: GuardView) -> Outcome:
    parsed = adapter.examine(body, content_type)
    outcome = Outcome(adapter.name, view, parsed)
    if view.refused is not None:
        return outcome
    hashed_pixels: set[str] | None = None
    seen: set[bytes] = set()
    for value in parsed.values:
        if value in seen or value in view.images:
            continue
        seen.add(value)
        signature = pixels(value)
        if signature is None:
            continue
        if hashed_pixels is None:
            hashed_pixels = {p for p in map(pixels, view.images) if p is not None}
        if signature not in hashed_pixels:
            outcome.unhashed.append(value)
    return outcome


def describe(data: bytes) -> str:
    """A short label for a value: its Pillow format and size, else its first bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
        with image:
            return f"{image.format} {image.size[0]}x{image.size[1]} ({len(data)} bytes)"
    except Exception:  # noqa: BLE001
        return repr(data[:24])


# --- the summary -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Bodies x parsers: how many guard refused or accepted, and which bodies broke the
    invariant."""

    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    violations: dict[str, list[str]] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)

    def add(self, case_id: str, outcome: Outcome) -> None:
        row = self.rows.setdefault(
            outcome.parser,
            {"bodies": 0, "refused": 0, "accepted": 0, "framework refused": 0, "violations": 0},
        )
        row["bodies"] += 1
        if outcome.guard.refused is not None:
            row["refused"] += 1
            if outcome.guard.refused.startswith("CRASH") and case_id not in self.crashes:
                self.crashes.append(case_id)
        else:
            row["accepted"] += 1
            if outcome.parsed.refused is not None:
                row["framework refused"] += 1
        if outcome.violated:
            row["violations"] += 1
            self.violations.setdefault(outcome.parser, []).append(case_id)

    @property
    def total_violations(self) -> int:
        return sum(row["violations"] for row in self.rows.values())

    def table(self, *, ids: bool = True) -> str:
        columns = ["parser   ", "bodies", "refused by guard", "accepted by guard"]
        columns += ["of which framework refused form", "violations"]
        lines = [" | ".join(columns), " | ".join("-" * len(c) for c in columns)]
        for parser, row in self.rows.items():
            cells = [row["bodies"], row["refused"], row["accepted"]]
            cells += [row["framework refused"], row["violations"]]
            numbers = [str(c).rjust(len(h)) for c, h in zip(cells, columns[1:], strict=True)]
            lines.append(" | ".join([parser.ljust(len(columns[0])), *numbers]))
        if self.crashes:
            lines.append(f"guard crashed (500) on {len(self.crashes)}: {', '.join(self.crashes)}")
        if ids:
            for parser, case_ids in self.violations.items():
                lines.append(f"{parser} violations ({len(case_ids)}): {', '.join(case_ids)}")
        return "\n".join(lines)
