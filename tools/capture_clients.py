"""Capture what real HTTP clients send for benign multipart uploads, and judge them with guard.

    python tools/capture_clients.py            # capture every client x case into the corpus
    python tools/capture_clients.py --only curl,go
    python tools/capture_clients.py --table    # guard's verdict on the stored corpus

Capturing starts a small server on 127.0.0.1 that records each request's headers, in order, and
its exact body bytes, and answers 200, then makes each client upload the same cases (CASES
below). What a client sent is stored as ``tests/differential/benign/<client>--<case>.body`` (the
body exactly as received, de-chunked if it came chunked) with ``<client>--<case>.json`` beside it
(method, path, the Content-Type header, every header in order, the client's version, and what it
was asked to send). A case a client cannot express gets only the ``.json``, with
``"expressible": false`` and a note.

Clients: curl (``-F`` files and fields, ``--form-string`` for the field with CRLF and quotes),
Python requests, httpx and aiohttp (FormData, as it comes and with quote_fields=False), Go's
mime/multipart with net/http (tools/capture_go/main.go, built once with ``go build``, stdlib
only), node's built-in fetch + FormData (undici), and headless Chromium submitting a real HTML
form (files set through playwright's ``set_input_files``) and ``fetch()`` of a FormData of Blobs.
Chromium is Debian's /usr/bin/chromium driven by the playwright Python package (``pip install
playwright``; no browser is downloaded).

The corpus is checked by tests/differential/test_benign_clients.py; ``--table`` prints the
client x case table of guard's verdicts (accepted / refused with the reason / not expressible).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import io
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "differential" / "benign"
FIXTURES = ("fixture.jpg", "fixture2.jpg")
CHROMIUM = "/usr/bin/chromium"
#: Every client, in the table's order.
CLIENTS = (
    "curl",
    "requests",
    "httpx",
    "aiohttp",
    "aiohttp-unquoted",
    "go",
    "node",
    "chromium-form",
    "chromium-fetch",
)


# --- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One form entry: a text field (``value``) or a file (``fixture``, None for an empty one)."""

    name: str
    value: str | None = None
    fixture: str | None = None
    filename: str = ""
    type: str = "image/jpeg"

    @property
    def is_file(self) -> bool:
        return self.value is None


def _file(name: str, filename: str, fixture: str = "fixture.jpg") -> Part:
    return Part(name, fixture=fixture, filename=filename)


#: The empty file input of a browser form submitted with no file chosen: filename "", no bytes.
EMPTY_FILE = Part("image", fixture=None, filename="", type="application/octet-stream")

TEXT_WITH_CRLF = 'line one\r\nshe said "hi" \\ there; x=1\r\ncafé ☕ 写真'

#: case -> the form entries, in order. Every client uploads these to /upload/<client>/<case>.
CASES: dict[str, tuple[Part, ...]] = {
    "file": (_file("image", "photo.jpg"),),
    "file-fields": (
        Part("title", "A photo"),
        Part("tags", "cats, dogs"),
        _file("image", "photo.jpg"),
    ),
    "two-files": (
        _file("images", "a.jpg"),
        _file("images", "b.jpg", fixture="fixture2.jpg"),
    ),
    "unicode-filename": (_file("image", "café 写真.jpg"),),
    "quote-filename": (_file("image", 'my "best" \\ photo.jpg'),),
    "dquote-filename": (_file("image", 'my "best" photo.jpg'),),
    "backslash-filename": (_file("image", "my \\ photo.jpg"),),
    "text-crlf": (Part("comment", TEXT_WITH_CRLF),),
    "empty-file": (Part("title", "no photo"), EMPTY_FILE),
    "field-name": (Part("my field café 名前", "value"), _file("photo 写真", "photo.jpg")),
}


def fixture_bytes(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def content(part: Part) -> bytes:
    return fixture_bytes(part.fixture) if part.fixture else b""


def make_fixtures() -> None:
    """Two small distinct JPEGs (about 2 KB), made once from tests/data/cat.jpg."""
    from PIL import Image, ImageOps

    CORPUS.mkdir(parents=True, exist_ok=True)
    with Image.open(ROOT / "tests" / "data" / "cat.jpg") as source:
        image = source.convert("RGB")
    image.thumbnail((112, 112))
    for name, variant in zip(FIXTURES, (image, ImageOps.mirror(image)), strict=True):
        path = CORPUS / name
        if not path.exists():
            buffer = io.BytesIO()
            variant.save(buffer, "JPEG", quality=65)
            path.write_bytes(buffer.getvalue())


# --- the capture server ---------------------------------------------------------------------


class Captured(dict):
    """path -> {"method", "headers", "body", "chunked"}, filled by the server's threads."""


class _Handler(socketserver.StreamRequestHandler):
    server: _CaptureServer

    def handle(self) -> None:
        request_line = self.rfile.readline(65536)
        if not request_line:
            return
        headers: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(65536)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        lower = {name.lower(): value for name, value in headers}
        if lower.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        chunked = "chunked" in lower.get("transfer-encoding", "").lower()
        if chunked:
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(lower.get("content-length", "0")))
        if method == "GET":
            page = self.server.pages.get(target.split("?")[0])
            status, reply = (b"200 OK", page.encode()) if page else (b"404 Not Found", b"")
            kind = b"text/html; charset=utf-8"
        else:
            self.server.captured[target] = {
                "method": method,
                "headers": headers,
                "body": body,
                "chunked": chunked,
            }
            status, reply, kind = b"200 OK", b"<p>captured</p>", b"text/html; charset=utf-8"
        length = str(len(reply)).encode()
        self.wfile.write(
            b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s"
            % (status, kind, length, reply)
        )

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()


class _CaptureServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.captured = Captured()
        self.pages: dict[str, str] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


# --- the clients ----------------------------------------------------------------------------


class NotExpressible(Exception):
    """The client has no way to send this case as the case means it."""


def _run(args: list[str], **kwargs: Any) -> str:
    result = subprocess.run(args, capture_output=True, timeout=120, check=False, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {result.stderr.decode(errors='replace')[-2000:]}")
    return result.stdout.decode()


def _curl_quote(text: str) -> str:
    """A value for curl's -F syntax as a double-quoted string (backslash escapes \\ and ")."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Curl:
    name = "curl"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def version(self) -> str:
        return _run(["curl", "--version"]).splitlines()[0]

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        args = ["curl", "-sS", "-o", "/dev/null", "--fail"]
        notes = []
        for part in parts:
            if not part.is_file:
                if any(c in part.value for c in '\r\n";@<'):
                    # -F would read @ and < as files and ; as options: --form-string is the way.
                    args += ["--form-string", f"{part.name}={part.value}"]
                    notes.append(f"{part.name!r} sent with --form-string")
                else:
                    args += ["-F", f"{part.name}={part.value}"]
                continue
            if part.fixture is None:
                # No empty-file-input in curl; the nearest is an empty file named "" explicitly.
                empty = self.workdir / "empty"
                empty.write_bytes(b"")
                args += ["-F", f"{part.name}=@{empty};filename=;type={part.type}"]
                notes.append("empty file sent as -F name=@empty;filename=;type=...")
                continue
            # The real way: a file on disk with that very name; curl names the part after it and
            # guesses image/jpeg from .jpg.
            folder = Path(tempfile.mkdtemp(dir=self.workdir))
            path = folder / part.filename
            path.write_bytes(content(part))
            args += ["-F", f"{part.name}=@{_curl_quote(str(path))}"]
        _run(args + [url])
        return "; ".join(notes) or None


class Requests:
    name = "requests"

    def version(self) -> str:
        import requests
        import urllib3

        return f"requests {requests.__version__} (urllib3 {urllib3.__version__})"

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        import requests

        data = [(p.name, p.value) for p in parts if not p.is_file]
        files = [(p.name, (p.filename, content(p), p.type)) for p in parts if p.is_file]
        if not files:
            # requests only sends multipart when there are files; a text-only form would be
            # urlencoded. A files= entry with a None filename is its way to send a plain field.
            files = [(name, (None, value)) for name, value in data]
            data = []
        note = None
        if data and parts[0].is_file is False and any(p.is_file for p in parts):
            note = "requests puts data= fields before files= (same order as the case here)"
        response = requests.post(url, data=data, files=files, timeout=30)
        response.raise_for_status()
        return note


class Httpx:
    name = "httpx"

    def version(self) -> str:
        import httpx

        return f"httpx {httpx.__version__}"

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        import httpx

        data: dict[str, Any] = {}
        for p in parts:
            if not p.is_file:
                data.setdefault(p.name, []).append(p.value)
        files = [(p.name, (p.filename, content(p), p.type)) for p in parts if p.is_file]
        if not files:
            # Without files httpx sends data= urlencoded; multipart needs a files= entry, and a
            # None filename makes it a plain field.
            files = [(p.name, (None, p.value.encode())) for p in parts]
            data = {}
        response = httpx.post(url, data=data, files=files, timeout=30)
        response.raise_for_status()
        return None


class Aiohttp:
    """aiohttp's FormData: as it comes (quote_fields=True), or told the server takes 8-bit."""

    def __init__(self, quote_fields: bool = True) -> None:
        self.quote_fields = quote_fields
        self.name = "aiohttp" if quote_fields else "aiohttp-unquoted"

    def version(self) -> str:
        import aiohttp

        flag = "" if self.quote_fields else ", FormData(quote_fields=False)"
        return f"aiohttp {aiohttp.__version__}{flag}"

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        import aiohttp
        from aiohttp.helpers import content_disposition_header

        for p in parts:
            header = content_disposition_header("form-data", self.quote_fields, name=p.name)
            if "name=" not in header:
                # quote_fields=True turns a non-ASCII name into name*=utf-8''..., and then
                # aiohttp's own MultipartWriter asserts that "name=" is in the header.
                raise NotExpressible(
                    f"FormData() sends a non-ASCII name as {header.split('; ')[1]!r}, then its"
                    ' writer fails (AssertionError: "name=" in Content-Disposition)'
                )

        async def post() -> None:
            form = aiohttp.FormData(quote_fields=self.quote_fields)
            for p in parts:
                if p.is_file:
                    form.add_field(p.name, content(p), filename=p.filename, content_type=p.type)
                else:
                    form.add_field(p.name, p.value)
            if all(not p.is_file for p in parts):
                form._is_multipart = True  # otherwise a text-only form is sent urlencoded
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=form) as response,
            ):
                response.raise_for_status()

        # In a thread of its own: playwright's sync API keeps an event loop on this one.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, post()).result()
        if all(not p.is_file for p in parts):
            return "text-only FormData is urlencoded unless forced multipart (done here)"
        return None


class Go:
    name = "go"
    source = ROOT / "tools" / "capture_go" / "main.go"

    def __init__(self, workdir: Path) -> None:
        self.binary = workdir / "capture_go"
        env = dict(os.environ, GOPROXY="off", GOFLAGS="")
        env.setdefault("GOCACHE", str(workdir / "gocache"))
        self.env = env
        _run(["go", "build", "-o", str(self.binary), str(self.source)], env=env)

    def version(self) -> str:
        return _run(["go", "version"], env=self.env).strip() + " (mime/multipart, net/http)"

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        spec = {"url": url, "parts": [_json_part(p) for p in parts]}
        _run([str(self.binary)], input=json.dumps(spec).encode(), env=self.env)
        if any(p.is_file for p in parts):
            return "CreateFormFile: Content-Type is always application/octet-stream"
        return None


def _json_part(part: Part) -> dict[str, Any]:
    if not part.is_file:
        return {"name": part.name, "value": part.value}
    return {
        "name": part.name,
        "filename": part.filename,
        "content_b64": base64.b64encode(content(part)).decode(),
        "type": part.type,
    }


NODE_SCRIPT = r"""
const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", async () => {
  const spec = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const form = new FormData();
  for (const p of spec.parts) {
    if ("value" in p) form.append(p.name, p.value);
    else form.append(p.name, new Blob([Buffer.from(p.content_b64, "base64")], {type: p.type}),
                     p.filename);
  }
  const response = await fetch(spec.url, {method: "POST", body: form});
  await response.arrayBuffer();
  if (response.status !== 200) { console.error("status", response.status); process.exit(1); }
  console.log(`node ${process.version} (undici ${process.versions.undici})`);
});
"""


class Node:
    name = "node"

    def version(self) -> str:
        script = "console.log(`node ${process.version} (undici ${process.versions.undici})`)"
        return _run(["node", "-e", script]).strip()

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        spec = {"url": url, "parts": [_json_part(p) for p in parts]}
        _run(["node", "-e", NODE_SCRIPT], input=json.dumps(spec).encode())
        return None


def _form_page(action: str, parts: tuple[Part, ...]) -> str:
    """An HTML form with one input per entry; text values go in textareas (they keep CRLF)."""
    fields = []
    for index, part in enumerate(parts):
        name = html.escape(part.name, quote=True)
        if part.is_file:
            fields.append(f'<input type="file" id="f{index}" name="{name}" multiple>')
        else:
            fields.append(f'<textarea id="f{index}" name="{name}"></textarea>')
    return (
        '<!doctype html><meta charset="utf-8"><title>upload</title>'
        f'<form id="form" method="post" action="{html.escape(action, quote=True)}"'
        ' enctype="multipart/form-data">'
        + "".join(fields)
        + '<button id="submit" type="submit">send</button></form>'
    )


class _Chromium:
    """Headless Debian Chromium through playwright (the Python package only: no download)."""

    def __init__(self, server: _CaptureServer) -> None:
        from playwright.sync_api import sync_playwright

        self.server = server
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )

    def version(self) -> str:
        return f"Chromium {self.browser.version} (headless, playwright)"

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()

    def open(self, client: str, case: str, parts: tuple[Part, ...]) -> Any:
        action = f"/upload/{client}/{case}"
        page_path = f"/page/{client}/{case}"
        self.server.pages[page_path] = _form_page(action, parts)
        page = self.browser.new_page()
        page.goto(self.server.base + page_path)
        return page


def _grouped(parts: tuple[Part, ...]) -> list[tuple[int, Part, list[Part]]]:
    """Consecutive file parts of one name are one <input multiple> (how a browser sends two)."""
    groups: list[tuple[int, Part, list[Part]]] = []
    for index, part in enumerate(parts):
        if part.is_file and groups and groups[-1][1].is_file and groups[-1][1].name == part.name:
            groups[-1][2].append(part)
        else:
            groups.append((index, part, [part]))
    return groups


class ChromiumForm:
    name = "chromium-form"

    def __init__(self, chromium: _Chromium) -> None:
        self.chromium = chromium

    def version(self) -> str:
        return self.chromium.version() + ", <form enctype=multipart/form-data> submit"

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        client, case = url.rsplit("/", 2)[-2:]
        groups = _grouped(parts)
        page = self.chromium.open(client, case, tuple(g[1] for g in groups))
        for index, (_, part, members) in enumerate(groups):
            locator = page.locator(f"#f{index}")
            if part.is_file:
                files = [
                    {"name": m.filename, "mimeType": m.type, "buffer": content(m)}
                    for m in members
                    if m.fixture is not None
                ]
                if files:
                    locator.set_input_files(files)
            else:
                locator.fill(part.value)
        with page.expect_navigation():
            page.click("#submit")
        page.close()
        if any(p.fixture is None and p.is_file for p in parts):
            return "the file input is left empty (no file chosen)"
        return None


FETCH_SCRIPT = """async ([url, parts, fromForm]) => {
  const form = fromForm ? new FormData(document.getElementById("form")) : new FormData();
  if (!fromForm) {
    for (const p of parts) {
      if ("value" in p) { form.append(p.name, p.value); continue; }
      const bytes = Uint8Array.from(atob(p.content_b64), (c) => c.charCodeAt(0));
      form.append(p.name, new Blob([bytes], {type: p.type}), p.filename);
    }
  }
  const response = await fetch(url, {method: "POST", body: form});
  await response.text();
  return response.status;
}"""


class ChromiumFetch:
    name = "chromium-fetch"

    def __init__(self, chromium: _Chromium) -> None:
        self.chromium = chromium

    def version(self) -> str:
        return self.chromium.version() + ", fetch() of a FormData of Blobs"

    def upload(self, url: str, parts: tuple[Part, ...]) -> str | None:
        client, case = url.rsplit("/", 2)[-2:]
        page = self.chromium.open(client, case, parts)
        empty = any(p.is_file and p.fixture is None for p in parts)
        note = None
        if empty:
            # An empty file input exists only in a form: new FormData(form), text filled in.
            for index, part in enumerate(parts):
                if not part.is_file:
                    page.locator(f"#f{index}").fill(part.value)
            note = "new FormData(form) of the page's form, its file input left empty"
        status = page.evaluate(FETCH_SCRIPT, [url, [_json_part(p) for p in parts], empty])
        page.close()
        if status != 200:
            raise RuntimeError(f"fetch answered {status}")
        return note


# --- capture --------------------------------------------------------------------------------


def capture(only: set[str] | None) -> None:
    make_fixtures()
    server = _CaptureServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    workdir = Path(tempfile.mkdtemp(prefix="capture_clients-"))
    chromium = None
    try:

        def wanted(name: str) -> bool:
            return only is None or name in only

        factories: list[tuple[str, Callable[[], Any]]] = [
            ("curl", lambda: Curl(workdir)),
            ("requests", Requests),
            ("httpx", Httpx),
            ("aiohttp", Aiohttp),
            ("aiohttp-unquoted", lambda: Aiohttp(quote_fields=False)),
            ("go", lambda: Go(workdir)),
            ("node", Node),
        ]
        clients = [factory() for name, factory in factories if wanted(name)]
        if wanted("chromium-form") or wanted("chromium-fetch"):
            chromium = _Chromium(server)
            clients += [c(chromium) for c in (ChromiumForm, ChromiumFetch) if wanted(c.name)]
        for client in clients:
            version = client.version()
            for case, parts in CASES.items():
                _capture_one(server, client, version, case, parts)
    finally:
        if chromium is not None:
            chromium.close()
        server.shutdown()
        server.server_close()
        shutil.rmtree(workdir, ignore_errors=True)


_PORTED = ("host", "origin", "referer")


def _sent(part: Part) -> dict[str, Any]:
    """What the client was asked to send: a text field, or a file (the fixture's name, or null
    for an empty file input) with its filename."""
    if not part.is_file:
        return {"name": part.name, "value": part.value}
    return {"name": part.name, "file": part.fixture, "filename": part.filename}


def _capture_one(
    server: _CaptureServer, client: Any, version: str, case: str, parts: tuple[Part, ...]
) -> None:
    stem = f"{client.name}--{case}"
    path = f"/upload/{client.name}/{case}"
    for stale in (CORPUS / f"{stem}.body", CORPUS / f"{stem}.json"):
        stale.unlink(missing_ok=True)
    record: dict[str, Any] = {
        "client": client.name,
        "case": case,
        "version": version,
        "sent": [_sent(p) for p in parts],
    }
    try:
        note = client.upload(server.base + path, parts)
    except NotExpressible as reason:
        record |= {"expressible": False, "note": str(reason)}
        _write_json(CORPUS / f"{stem}.json", record)
        print(f"{stem}: not expressible ({reason})")
        return
    seen = server.captured.pop(path)
    port = str(server.server_address[1])
    headers = [
        f"{name}: {value.replace(port, 'PORT') if name.lower() in _PORTED else value}"
        for name, value in seen["headers"]
    ]
    content_type = next((v for n, v in seen["headers"] if n.lower() == "content-type"), None)
    record |= {
        "expressible": True,
        "method": seen["method"],
        "path": path,
        "content_type": content_type,
        "chunked": seen["chunked"],
        "headers": headers,
    }
    if note:
        record["note"] = note
    (CORPUS / f"{stem}.body").write_bytes(seen["body"])
    _write_json(CORPUS / f"{stem}.json", record)
    print(f"{stem}: {len(seen['body'])} bytes, {content_type}")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- the table ------------------------------------------------------------------------------


def expected_images(record: dict[str, Any]) -> list[bytes]:
    """The images guard must find in a capture: the fixtures sent, in order."""
    return [fixture_bytes(p["file"]) for p in record["sent"] if p.get("file")]


def verdict(stem: str) -> str:
    """guard's verdict on one stored capture: accepted / refused (reason) / not expressible."""
    sys.path.insert(0, str(ROOT))
    from guard.errors import GuardError
    from guard.uploads import find_images

    record = json.loads((CORPUS / f"{stem}.json").read_text(encoding="utf-8"))
    if not record["expressible"]:
        return f"not expressible ({record['note']})"
    body = (CORPUS / f"{stem}.body").read_bytes()
    try:
        images = find_images(body, record["content_type"], max_parts=64, max_images=16)
    except GuardError as error:
        return f"REFUSED ({type(error).__name__}: {error})"
    expected = expected_images(record)
    if images != expected:
        return f"WRONG ({len(images)} images, not the {len(expected)} sent)"
    return f"accepted ({len(images)} image{'' if len(images) == 1 else 's'})"


def table() -> str:
    stems = sorted(p.stem for p in CORPUS.glob("*--*.json"))
    clients = list(dict.fromkeys(s.split("--")[0] for s in stems))
    clients.sort(key=lambda c: CLIENTS.index(c) if c in CLIENTS else len(CLIENTS))
    lines = ["| client | " + " | ".join(CASES) + " |", "|---" * (len(CASES) + 1) + "|"]
    refusals = []
    for client in clients:
        cells = []
        for case in CASES:
            stem = f"{client}--{case}"
            if not (CORPUS / f"{stem}.json").exists():
                cells.append("not captured")
                continue
            result = verdict(stem)
            if result.startswith(("REFUSED", "WRONG", "not expressible")):
                refusals.append(f"- {stem}: {result}")
                result = result.split(" (")[0]
            cells.append(result)
        lines.append(f"| {client} | " + " | ".join(cells) + " |")
    versions = []
    for client in clients:
        record = next(
            json.loads((CORPUS / f"{s}.json").read_text(encoding="utf-8"))
            for s in stems
            if s.startswith(client + "--")
        )
        versions.append(f"- {client}: {record['version']}")
    return "\n".join(lines + ["", *refusals, *([""] if refusals else []), *versions])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="judge the stored corpus")
    parser.add_argument("--only", help="comma-separated clients to capture")
    args = parser.parse_args(argv)
    if args.table:
        print(table())
        return 0
    capture(set(args.only.split(",")) if args.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
