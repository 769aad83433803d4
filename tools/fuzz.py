"""Bounded-time fuzzing of guard's two hostile-input paths, with hypothesis. Not run in CI.

Targets:

* ``multipart``: GuardMiddleware driven directly (scripted ``receive``, recorded ``send``) with a
  real :class:`guard.store.Store` on fakeredis holding one blocked image. Bodies are structured
  multipart (random parts, headers, boundaries, filenames, Content-Transfer-Encoding), byte
  mutations of a valid multipart body holding a small PNG and JPEG, and raw bodies under random
  content types. Each body is sent twice, whole and split at random points. Properties: the status
  is one guard defines (200 from the app, 400, 403, 408, 413, 415, 422, 503), never 500; a refusal
  is short JSON with no traceback; the app is called at most once, and when it is, it receives the
  exact original bytes in <= 64 KiB messages; both splits give the same status and body (the
  chunked-write idea of python-multipart's fuzzers). Clean bodies also have a known answer.
* ``decode``: :func:`guard.hashing.hash_bytes` over 1-8 mutations (byte edits, inserts, deletions,
  truncation, header integer overwrites) of small valid images generated here with Pillow
  (PNG, JPEG, GIF, WEBP, BMP, TIFF, animated ones, and refused formats). Property: a hash, or a
  :class:`guard.errors.GuardError` whose status is 413, 415 or 422; never another exception, never
  more than ``--time-bound`` seconds per input, and the process RSS stays under ``--max-rss-mb``.

Failing inputs are shrunk by hypothesis, printed, and written to ``tools/fuzz-findings/``. The input
under test is also written to a scratch file before it runs, so a hang or a crash in a C decoder
(the process dies; faulthandler prints the stack) leaves it behind.

Run (needs the ``fuzz`` extra: ``pip install -e '.[fuzz,test]'``)::

    PYTHONPATH=. python tools/fuzz.py --seconds 120 --target all --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import hashlib
import io
import itertools
import json
import logging
import os
import resource
import string
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import fakeredis
import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from PIL import Image

from guard.config import DEFAULT_HTTP, Config, HttpSettings, Route
from guard.errors import GuardError
from guard.hashing import HASH_BITS, hash_bytes
from guard.middleware import GuardMiddleware
from guard.store import Store
from guard.types import DEFAULT_LIMITS, SUPPORTED_FORMATS, Entry, ImageLimits
from guard.verdict import refusal_for
from tests.asgi_driver import Ending, Recorder, call  # the tests' ASGI driver

T = TypeVar("T")

FINDINGS = Path(__file__).resolve().parent / "fuzz-findings"
CHUNK_SIZE = 64 * 1024
DEFINED_STATUSES = frozenset({200, 400, 403, 408, 413, 415, 422, 503})
DECODE_STATUSES = frozenset({413, 415, 422})
# A hang is reported, and the process stopped, after this long on one input.
HARD_TIMEOUT = 60.0


# --- seed images ----------------------------------------------------------------------------------


def _pattern(width: int = 24, height: int = 16, shift: int = 0) -> Image.Image:
    """A small image with structure in every cell of the hash grid (not low-information)."""
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // max(1, width - 1)).astype(np.uint8)
    green = (((x + y + shift) // 3) % 2 * 200).astype(np.uint8)
    blue = (y * 255 // max(1, height - 1)).astype(np.uint8)
    return Image.fromarray(np.dstack([red, green, blue]), "RGB")


def _save(image: Image.Image, image_format: str, **options: Any) -> bytes | None:
    buffer = io.BytesIO()
    try:
        image.save(buffer, image_format, **options)
    except Exception:  # noqa: BLE001 - a Pillow build without this encoder: skip the seed
        return None
    return buffer.getvalue()


def _exif_rotated_jpeg() -> bytes | None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 on display
    return _save(_pattern().transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())


def _frames(count: int = 3) -> list[Image.Image]:
    return [_pattern(shift=i * 2) for i in range(count)]


def _sixteen_bit_png() -> bytes | None:
    samples = (np.asarray(_pattern().convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return _save(Image.fromarray(samples), "PNG")


def decode_seeds() -> dict[str, bytes]:
    """Small valid files in every format guard opens, and some it refuses."""
    base = _pattern()
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(24 * 16).reshape(16, 24) % 256).astype(np.uint8)))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    frames = _frames()
    candidates: dict[str, bytes | None] = {
        "png-rgb": _save(base, "PNG"),
        "png-rgba": _save(rgba, "PNG"),
        "png-palette-trns": _save(palette, "PNG", transparency=0),
        "png-16bit": _sixteen_bit_png(),
        "png-1bit": _save(base.convert("1"), "PNG"),
        "apng": _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "jpeg": _save(base, "JPEG", quality=85),
        "jpeg-progressive": _save(base, "JPEG", quality=70, progressive=True),
        "jpeg-cmyk": _save(base.convert("CMYK"), "JPEG"),
        "jpeg-exif-orientation": _exif_rotated_jpeg(),
        "gif": _save(palette, "GIF"),
        "gif-animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "webp-lossy": _save(base, "WEBP", quality=80),
        "webp-lossless-alpha": _save(rgba, "WEBP", lossless=True),
        "webp-animated": _save(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
        "bmp-24": _save(base, "BMP"),
        "bmp-1bit": _save(base.convert("1"), "BMP"),
        "bmp-palette": _save(palette, "BMP"),
        "tiff": _save(base, "TIFF"),
        "tiff-lzw": _save(base, "TIFF", compression="tiff_lzw"),
        "tiff-multipage": _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "tiff-16bit": _save(Image.fromarray(np.full((8, 8), 300, np.uint16)), "TIFF"),
        # refused: recognised but not allowed, or not recognised at all
        "ico": _save(base, "ICO"),
        "pdf": _save(base, "PDF"),
        "eps": _save(base, "EPS"),
        "qoi": _save(base, "QOI"),
        "jpeg2000": _save(base, "JPEG2000"),
        "avif": _save(base, "AVIF"),
        "tga": _save(base, "TGA"),
        "ppm": _save(base, "PPM"),
    }
    return {name: data for name, data in candidates.items() if data}


# --- mutations ------------------------------------------------------------------------------------

_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
                0x80000000, 0xFFFFFFFF)  # fmt: skip


@st.composite
def edit(draw: st.DrawFn, size: int) -> tuple[str, int, bytes]:
    """One edit: (kind, position, bytes). Header positions are favoured: sizes live there."""
    kind = draw(st.sampled_from(["set", "header_int", "insert", "delete", "truncate", "repeat"]))
    limit = max(1, size)
    where = draw(st.integers(0, min(limit, 64) - 1) | st.integers(0, limit - 1))
    if kind == "set":
        return kind, where, draw(st.binary(min_size=1, max_size=4))
    if kind == "header_int":
        value = draw(st.sampled_from(_INTERESTING) | st.integers(0, 0xFFFFFFFF))
        width = draw(st.sampled_from([1, 2, 4]))
        order = draw(st.sampled_from(["little", "big"]))
        return kind, where, (value & ((1 << (8 * width)) - 1)).to_bytes(width, order)  # type: ignore[arg-type]
    if kind == "insert":
        return kind, where, draw(st.binary(min_size=1, max_size=64))
    if kind == "repeat":
        return kind, where, bytes([draw(st.integers(1, 64))])
    return kind, where, bytes([draw(st.integers(1, 255))])


def apply_edits(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        where = min(where, len(out))
        if kind in ("set", "header_int"):
            out[where : where + len(value)] = value
        elif kind == "insert":
            out[where:where] = value
        elif kind == "delete":
            del out[where : where + value[0]]
        elif kind == "truncate":
            del out[where:]
        elif kind == "repeat":  # duplicate a span (chunk repetition confuses chunked formats)
            out[where:where] = out[where : where + value[0]]
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    edits = draw(st.lists(edit(len(data)), min_size=1, max_size=8))
    return name, apply_edits(data, edits)


# --- reports --------------------------------------------------------------------------------------


@dataclass
class Report:
    target: str
    examples: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class Scratch:
    """The input under test, on disk before it runs: left behind if a decoder hangs or crashes."""

    def __init__(self) -> None:
        handle, name = tempfile.mkstemp(prefix="guard-fuzz-current-", suffix=".bin")
        os.close(handle)
        self.path = Path(name)

    def hold(self, data: bytes) -> None:
        self.path.write_bytes(data)
        faulthandler.dump_traceback_later(HARD_TIMEOUT, exit=True)

    def release(self) -> None:
        faulthandler.cancel_dump_traceback_later()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def save_finding(target: str, data: bytes, meta: dict[str, Any]) -> Path:
    FINDINGS.mkdir(exist_ok=True)
    stem = f"{target}-{hashlib.sha256(data).hexdigest()[:12]}"
    (FINDINGS / f"{stem}.bin").write_bytes(data)
    (FINDINGS / f"{stem}.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return FINDINGS / f"{stem}.bin"


def run_batches(
    report: Report,
    make_test: Callable[[], Callable[[], None]],
    seconds: float,
    base_seed: int,
    last_failure: dict[str, Any],
    save: Callable[[dict[str, Any]], Path],
) -> None:
    """Run hypothesis in batches (each with its own seed) until the time is up.

    Hypothesis has no wall-clock budget, so batches of growing size stand in for one; a failure is
    shrunk by hypothesis, saved, and fuzzing goes on (the same failure is only saved once).
    """
    start = time.monotonic()
    batch, size = 0, 25
    seen: set[str] = set()
    while time.monotonic() - start < seconds:
        test = make_test()
        test = settings(
            max_examples=size,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
            print_blob=False,
            verbosity=Verbosity.quiet,  # the failing example is printed (shortened) below
        )(test)
        test = hypothesis_seed(base_seed * 100_003 + batch)(test)
        last_failure.clear()
        try:
            test()
        except Exception as error:  # noqa: BLE001 - every failure is a finding to report
            summary = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            if summary not in seen:
                seen.add(summary)
                path = save(dict(last_failure)) if last_failure else None
                report.failures.append(f"{summary} -> {path}")
                print(f"\n[{report.target}] FAILURE {summary}", flush=True)
                print(f"  minimal input: {last_failure.get('summary', '?')}", flush=True)
                print(f"  saved to {path}", flush=True)
                lines = traceback.format_exception(type(error), error, error.__traceback__)
                print("".join(line[:400] for line in lines[-8:]), flush=True)
        batch += 1
        size = min(size * 2, 200)
    report.seconds = time.monotonic() - start


# --- target: decode -------------------------------------------------------------------------------

WITH_TIFF = ImageLimits(allowed_formats=SUPPORTED_FORMATS)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def fuzz_decode(args: argparse.Namespace, scratch: Scratch) -> Report:
    report = Report("decode")
    seeds = decode_seeds()
    print(f"[decode] {len(seeds)} seeds: {', '.join(sorted(seeds))}", flush=True)
    last_failure: dict[str, Any] = {}

    def check(name: str, data: bytes, limits: ImageLimits, trim: bool) -> None:
        report.examples += 1
        scratch.hold(data)
        started = time.perf_counter()
        try:
            hashes = hash_bytes(data, limits, trim=trim)
        except GuardError as error:
            status = refusal_for(error, DEFAULT_HTTP).status
            report.count(f"{type(error).__name__} ({status})")
            assert status in DECODE_STATUSES, f"{type(error).__name__} maps to {status}: {error}"
        else:
            report.count("hashed")
            assert hashes.frames, "no frames"
            for frame in hashes.frames:
                assert 0 <= frame.ahash < 1 << HASH_BITS and 0 <= frame.phash < 1 << HASH_BITS
        finally:
            scratch.release()
        took = time.perf_counter() - started
        assert took <= args.time_bound, f"took {took:.2f} s (bound {args.time_bound} s)"
        assert rss_mb() <= args.max_rss_mb, f"peak RSS {rss_mb():.0f} MB over {args.max_rss_mb}"

    def make_test() -> Callable[[], None]:
        @given(
            mutated(seeds),
            st.sampled_from([DEFAULT_LIMITS, WITH_TIFF]),
            st.booleans(),
        )
        def test(case: tuple[str, bytes], limits: ImageLimits, trim: bool) -> None:
            name, data = case
            try:
                check(name, data, limits, trim)
            except BaseException as error:
                last_failure.update(
                    seed=name,
                    data=data,
                    tiff_allowed="TIFF" in limits.allowed_formats,
                    trim=trim,
                    error=f"{type(error).__name__}: {error}",
                    summary=f"mutated {name}, {len(data)} bytes, trim={trim}: {data[:48]!r}...",
                )
                raise

        return test

    def save(failure: dict[str, Any]) -> Path:
        data = failure.pop("data")
        return save_finding("decode", data, failure)

    run_batches(report, make_test, args.seconds, args.seed, last_failure, save)
    return report


# --- target: multipart ----------------------------------------------------------------------------

BLOCKED = _pattern(48, 32, shift=1)
BLOCKED_PNG = _save(BLOCKED, "PNG") or b""
BLOCKED_JPEG = _save(BLOCKED, "JPEG", quality=90) or b""
SMALL_PNG = _save(_pattern(20, 20, shift=5).transpose(Image.Transpose.ROTATE_90), "PNG") or b""
SMALL_JPEG = _save(Image.fromarray(np.kron(np.eye(4), np.ones((6, 6))) * 255).convert("RGB"),
                   "JPEG") or b""  # fmt: skip
SMALL_GIF = _save(_pattern(16, 16, shift=7).convert("P"), "GIF") or b""
SMALL_TIFF = _save(_pattern(), "TIFF") or b""

# What each payload does to a clean request (one whose framing is valid): the known answer.
PAYLOADS: dict[str, tuple[bytes, str]] = {
    "png": (SMALL_PNG, "image"),
    "jpeg": (SMALL_JPEG, "image"),
    "gif": (SMALL_GIF, "image"),
    "blocked-png": (BLOCKED_PNG, "blocked"),
    "blocked-jpeg": (BLOCKED_JPEG, "blocked"),
    "tiff": (SMALL_TIFF, "not-allowed"),
    "truncated-png": (SMALL_PNG[: len(SMALL_PNG) // 2], "undecodable"),
}

MULTIPART_CONFIG = Config(
    routes=(Route(path="/upload", lists=("spam",), methods=frozenset({"POST"})),),
    http=HttpSettings(
        max_body_bytes=256 * 1024,
        max_images=4,
        max_parts=12,
        spool_memory_bytes=16 * 1024,  # larger bodies go through the temporary file
        body_timeout=0.25,  # stalled bodies cost this twice; short, not flaky under load
        decision_timeout=30.0,
    ),
)
HTTP = MULTIPART_CONFIG.http
BCHARS = string.ascii_letters + string.digits + "'()+_,-./:=?"
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=24)
PRINTABLE_TEXT = st.text(
    string.ascii_letters + string.digits + string.punctuation + " ", max_size=40
)


class EventLoop:
    """One asyncio loop in a thread for every request: one middleware, as a server would run it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass(frozen=True)
class Request:
    body: bytes
    content_type: str
    content_length: str  # exact | absent | low | high
    ending: Ending
    cuts: tuple[int, ...]  # split points of the second send
    expected: int | None = None  # the known answer, for clean structured bodies

    def summary(self) -> str:
        return (
            f"{len(self.body)} bytes, content-type {self.content_type!r}, content-length "
            f"{self.content_length}, {self.ending}, cuts {list(self.cuts)[:8]}, "
            f"expected {self.expected}: {self.body[:80]!r}..."
        )


@dataclass(frozen=True)
class Outcome:
    status: int | None
    body: bytes
    calls: int
    received: tuple[bytes, ...]
    problems: tuple[str, ...]
    messages: int


async def send_request(
    guard: GuardMiddleware, app: Recorder, request: Request, cuts: list[int]
) -> Outcome:
    """One request through the middleware (tests/asgi_driver.py's ``call``), the body in pieces
    cut at ``cuts``; the Content-Length exact, absent, low or high; the body ending, stalling or
    cut off by a disconnect."""
    app.reset()
    body = request.body
    declared = {"exact": len(body), "low": len(body) // 2, "high": len(body) + 1000}
    edges = [0, *sorted({c for c in cuts if 0 < c < len(body)}), len(body)]
    result = await call(
        guard,
        body,
        content_type="",  # sent below, even when empty: an empty one is a case of its own
        headers=[("content-type", request.content_type)],
        pieces=[body[a:b] for a, b in itertools.pairwise(edges)],
        content_length=declared.get(request.content_length, False),
        ending=request.ending,
        linger=HARD_TIMEOUT,  # a complete body: nothing more until the response is sent
    )
    return Outcome(
        status=result.status,
        body=result.body,
        calls=app.calls,
        received=tuple(app.bodies),
        problems=tuple(app.problems),
        messages=len(result.messages),
    )


def check_outcome(request: Request, outcome: Outcome) -> None:
    status = outcome.status
    assert not outcome.problems, outcome.problems
    assert outcome.calls <= 1, f"app called {outcome.calls} times"
    if request.ending != "complete":
        assert outcome.calls == 0, f"app called on a body that never ended ({request.ending})"
    if request.ending == "disconnect" and status is None:
        assert outcome.messages == 0, "sent a partial response"
        return
    assert status in DEFINED_STATUSES, f"status {status}: {outcome.body[:300]!r}"
    if status == 200:
        assert outcome.calls == 1, "200 without calling the app"
        assert outcome.received == (request.body,), "the app did not get the exact bytes"
        return
    assert outcome.calls == 0, f"app called, then status {status}"
    assert len(outcome.body) <= 512, f"{len(outcome.body)}-byte refusal"
    assert b"Traceback" not in outcome.body and b'File "' not in outcome.body, outcome.body
    payload = json.loads(outcome.body)
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), payload
    if request.ending != "complete":
        # A body that never ends gets 408 (stall) or nothing (disconnect), unless it was refused
        # from what had arrived: longer than its Content-Length (400), or too many parts (413).
        early = (HTTP.statuses.malformed, HTTP.statuses.too_large)
        wanted = (HTTP.statuses.timeout,) if request.ending == "stall" else ()
        assert status in wanted + early, f"{request.ending} body gave {status}"


# Strategies: structured multipart, mutated multipart, raw bodies.


def _disposition(name: str, filename: str | None, star: str | None) -> str:
    value = f'form-data; name="{name}"'
    if filename is not None:
        value += f'; filename="{filename}"'
    if star is not None:
        value += f"; filename*=utf-8''{star}"
    return value


@st.composite
def part(draw: st.DrawFn) -> tuple[bytes, str]:
    """One part, and what it should do to a clean request (see :func:`expected_status`)."""
    kind = draw(st.sampled_from(["image", "field", "file-text", "binary"]))
    name = draw(TEXT)
    texts = [name]
    headers: list[tuple[str, str]] = []
    if kind == "field":
        data, effect = draw(PRINTABLE_TEXT).encode(), "field"
        headers.append(("Content-Disposition", _disposition(name, None, None)))
        if draw(st.booleans()):
            headers.append(("Content-Type", "text/plain; charset=utf-8"))
    else:
        if kind == "image":
            data, effect = PAYLOADS[draw(st.sampled_from(sorted(PAYLOADS)))]
        elif kind == "file-text":
            data, effect = draw(PRINTABLE_TEXT).encode() or b"x", "not-an-image"
        else:
            data, effect = draw(st.binary(max_size=300)), "unknown"
        filename = draw(st.none() | TEXT)
        star = draw(st.none() | st.text(string.ascii_letters + "%.", max_size=12))
        declared = draw(
            st.none() | st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"])
        )
        texts += [filename or "", star or ""]
        headers.append(("Content-Disposition", _disposition(name, filename, star)))
        if declared:
            headers.append(("Content-Type", declared))
        if filename is None and not (declared or "").startswith("image/"):
            # No sign of a file (python-multipart >= 0.0.30 drops RFC 2231 ``filename*``, so the
            # app sees a plain field too): guard judges the bytes, images count, text does not.
            effect = "field" if effect == "not-an-image" else effect
        if filename is None and effect in ("image", "blocked"):
            # A text field: the app gets a str, whose bytes each framework decodes its own way,
            # so a binary image there is refused (400); it must be sent as a file.
            effect = "text-image"
        elif filename is None and effect in ("not-allowed", "undecodable"):
            effect = "unknown"  # refused as a text-field image or not, by what its bytes sniff as
    if kind != "field" and star is not None:
        effect = "non-canonical"  # filename* is outside guard's canonical subset: 400 (as below)
    if draw(st.integers(0, 9)) == 0:
        headers.append(("Content-Transfer-Encoding", draw(st.sampled_from(["base64", "binary"]))))
        effect = "cte"
    for _ in range(draw(st.integers(0, 2))):
        value = draw(TEXT)
        texts.append(value)
        header = draw(st.sampled_from(["X-Note", "Content-ID", "X-Empty"]))
        if any(header == name for name, _ in headers):
            effect = "non-canonical"  # a header twice is outside the canonical subset too: 400
        headers.append((header, value))
    raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n" + data
    # A quote or backslash in a quoted parameter changes how it parses: no known answer then.
    clean = not any(c in text for text in texts for c in '"\\')
    return raw, effect if clean else "unknown"


def expected_status(effects: list[str]) -> int | None:
    """The known answer for a clean body, in the order guard meets the problems, or None."""
    if "unknown" in effects:
        return None
    statuses = HTTP.statuses
    if len(effects) > HTTP.max_parts:
        # Refused as the body streams, or by the parser at the part after the cap, or at an
        # earlier part's Content-Transfer-Encoding: which one depends on counting details.
        return None if "cte" in effects else statuses.too_large
    if "cte" in effects or "non-canonical" in effects:  # refused while parsing that part's headers
        return statuses.malformed
    if "text-image" in effects:  # refused at that part: unknown if a 415 part may come first
        return None if "not-an-image" in effects else statuses.malformed
    if "not-an-image" in effects:  # a file part that is no image
        return statuses.unsupported
    images = [e for e in effects if e in ("image", "blocked", "not-allowed", "undecodable")]
    if len(images) > HTTP.max_images:
        return statuses.too_large
    first = next((e for e in images if e in ("not-allowed", "undecodable")), None)
    if first == "not-allowed":
        return statuses.unsupported
    if first == "undecodable":
        return statuses.undecodable
    return statuses.reject if "blocked" in images else 200


@st.composite
def structured(draw: st.DrawFn) -> tuple[bytes, str, int | None]:
    boundary = draw(
        st.text(BCHARS, min_size=1, max_size=70)
        | st.sampled_from(["a" * 257, "with space", "x", "--", "=?utf-8?"])
    )
    drawn = draw(st.lists(part(), min_size=0, max_size=14))
    preamble = draw(st.sampled_from([b"", b"\r\n", b"preamble text\r\n", b"\r\n" * 50]))
    epilogue = draw(st.sampled_from([b"\r\n", b"", b"epilogue", b"\r\n" * 50]))
    dash = b"--" + boundary.encode()
    body = preamble + b"".join(dash + b"\r\n" + raw + b"\r\n" for raw, _ in drawn)
    body += dash + b"--" + epilogue
    quoted = draw(st.booleans())
    param = (
        f'"{boundary}"'
        if quoted or set(boundary) - set(string.ascii_letters + string.digits + "-_.")
        else boundary
    )
    extra = draw(st.sampled_from(["", "; charset=utf-8", "; boundary=other"]))
    content_type = f"multipart/form-data; boundary={param}{extra}"
    effects = [effect for _, effect in drawn]
    clean = (
        preamble == b""  # guard's canonical subset has no preamble at all (400)
        and epilogue.strip() == b""  # and only whitespace after the closing boundary
        and len(boundary) <= 70
        and " " not in boundary
        # A boundary of dashes only overlaps itself in the closing delimiter ("-----" holds
        # "---" three times): guard refuses the body (400), which no real client sends.
        and boundary.strip("-") != ""
        and not extra.startswith("; boundary")
        and all(dash not in raw for raw, _ in drawn)
    )
    expected = expected_status(effects) if clean and drawn else None
    return body, content_type, expected


VALID_MULTIPART = (
    b"--fuzzboundary\r\n"
    b'Content-Disposition: form-data; name="comment"\r\n\r\nhello\r\n'
    b"--fuzzboundary\r\n"
    b'Content-Disposition: form-data; name="a"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    + SMALL_PNG
    + b"\r\n--fuzzboundary\r\n"
    b'Content-Disposition: form-data; name="b"; filename="b.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n" + SMALL_JPEG + b"\r\n--fuzzboundary--\r\n"
)


@st.composite
def mutated_multipart(draw: st.DrawFn) -> tuple[bytes, str, int | None]:
    edits = draw(st.lists(edit(len(VALID_MULTIPART)), min_size=1, max_size=8))
    return apply_edits(VALID_MULTIPART, edits), "multipart/form-data; boundary=fuzzboundary", None


@st.composite
def raw_body(draw: st.DrawFn) -> tuple[bytes, str, int | None]:
    content_type = draw(
        st.sampled_from(
            ["image/png", "image/jpeg", "application/octet-stream", "", "text/plain",
             "application/json", "multipart/form-data", "multipart/form-data; boundary=",
             "multipart/form-data; boundary=\"unterminated", "image/png; charset=\x7f"]
        )
        | TEXT
    )  # fmt: skip
    payload = draw(st.sampled_from(sorted(PAYLOADS)))
    data = PAYLOADS[payload][0]
    if draw(st.booleans()):
        data = apply_edits(data, draw(st.lists(edit(len(data)), min_size=1, max_size=8)))
    return data, content_type, None


@st.composite
def requests(draw: st.DrawFn) -> Request:
    body, content_type, expected = draw(st.one_of(structured(), mutated_multipart(), raw_body()))
    content_length = draw(st.sampled_from(["exact", "absent", "low", "high"]))
    complete: list[Ending] = ["complete"]
    endings = complete * 10 + ["stall", "disconnect"]
    ending = draw(st.sampled_from(endings))
    cuts = draw(st.lists(st.integers(0, max(0, len(body))), max_size=12))
    if content_length != "exact" or ending != "complete":
        expected = None
    return Request(body, content_type, content_length, ending, tuple(cuts), expected)


def fuzz_multipart(args: argparse.Namespace, scratch: Scratch) -> Report:
    report = Report("multipart")
    loop = EventLoop()
    app = Recorder(max_message=CHUNK_SIZE)  # the replay comes in <= 64 KiB messages
    store = Store(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    blocked = hash_bytes(BLOCKED_PNG)
    loop.run(store.add("spam", [Entry(blocked.ahash, blocked.phash, "blocked.png")]), 30)
    guard = GuardMiddleware(app, config=MULTIPART_CONFIG, store=store)
    errors = LogCapture()
    logging.getLogger("guard").addHandler(errors)
    last_failure: dict[str, Any] = {}

    def check(request: Request) -> None:
        report.examples += 1
        scratch.hold(request.body)
        errors.records.clear()
        try:
            whole = loop.run(send_request(guard, app, request, []), HARD_TIMEOUT)
            split = loop.run(send_request(guard, app, request, list(request.cuts)), HARD_TIMEOUT)
        finally:
            scratch.release()
        report.count(str(whole.status))
        assert not errors.records, f"guard logged an exception: {errors.records[0]}"
        check_outcome(request, whole)
        check_outcome(request, split)
        assert (whole.status, whole.body) == (split.status, split.body), (
            f"split changed the answer: {whole.status} {whole.body!r} vs "
            f"{split.status} {split.body!r}"
        )
        if request.expected is not None:
            assert whole.status == request.expected, (
                f"clean body: expected {request.expected}, got {whole.status} {whole.body!r}"
            )

    def make_test() -> Callable[[], None]:
        @given(requests())
        def test(request: Request) -> None:
            try:
                check(request)
            except BaseException as error:
                last_failure.update(
                    request=request,
                    error=f"{type(error).__name__}: {error}",
                    summary=request.summary(),
                )
                raise

        return test

    def save(failure: dict[str, Any]) -> Path:
        request: Request = failure.pop("request")
        meta = {
            "content_type": request.content_type,
            "content_length": request.content_length,
            "ending": request.ending,
            "cuts": list(request.cuts),
            "expected": request.expected,
            **failure,
        }
        return save_finding("multipart", request.body, meta)

    try:
        run_batches(report, make_test, args.seconds, args.seed, last_failure, save)
    finally:
        logging.getLogger("guard").removeHandler(errors)
        loop.run(store.close(), 10)
        loop.close()
    return report


class LogCapture(logging.Handler):
    """Collects guard's logged exceptions (the 500 path logs one before answering)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--target", choices=["multipart", "decode", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--time-bound", type=float, default=2.0, help="seconds per decode input")
    parser.add_argument("--max-rss-mb", type=float, default=2048.0, help="process peak RSS bound")
    args = parser.parse_args(argv)

    warnings.simplefilter("ignore")  # Pillow's decoder warnings: noise here, never a response
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    # python-multipart logs each framing error it meets: thousands of lines here.
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)
    faulthandler.enable()
    scratch = Scratch()
    print(f"input under test: {scratch.path} (left behind if the process dies)", flush=True)
    reports = []
    if args.target in ("multipart", "all"):
        reports.append(fuzz_multipart(args, scratch))
    if args.target in ("decode", "all"):
        reports.append(fuzz_decode(args, scratch))
    scratch.remove()

    print(f"\nseed {args.seed}, {args.seconds:g} s per target, peak RSS {rss_mb():.0f} MB")
    print(f"{'target':<10} {'examples':>9} {'failures':>9} {'time':>8}  outcomes")
    for report in reports:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
        print(
            f"{report.target:<10} {report.examples:>9} {len(report.failures):>9} "
            f"{report.seconds:>7.1f}s  {outcomes}"
        )
        for failure in report.failures:
            print(f"  - {failure}")
    return 1 if any(report.failures for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
