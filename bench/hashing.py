"""Hashing throughput per image format: guard against imagehash.average_hash and against the
format's decode-only floor, timed side by side.

    cd /work/main && PYTHONPATH=. python bench/hashing.py [--photos DIR] [--reps N] [--quick] \
        [--json]

Needs the `bench` extra (imagehash). The corpus is made in memory from the photos in ``--photos``
(default ../shared/data/photos): each is centre-cropped to 4:3 or 16:9 and resized with LANCZOS to
640x480, 1920x1080 and 4000x3000, then encoded in every format guard allows by default (FORMATS):
JPEG baseline and progressive q90, PNG 8-bit RGB, PNG 16-bit RGB and 16-bit grey, PNG palette
(256 colours), GIF (the same palette), WebP lossy q80 and lossless, BMP. The photos are at most
1024 px on the long side, so 1920x1080 and 4000x3000 are upscaled; the 4000x3000 set gets Gaussian
noise (sigma 2) before encoding so that it is not unrealistically smooth. A fixed subset is used
per size: 12 / 8 / 4 images (``--quick``: 2 / 1 / 1 and one repetition, under a minute).

Timed on one thread, from the in-memory bytes: imagehash.average_hash; guard's ``hash_bytes``
(aHash and pHash, what the middleware runs); the floor, decoding alone (Image.open and load), in
full and, where the format's decoder offers a reduced decode (JPEG: ``draft`` to 1/2..1/8 scale,
as guard asks for), reduced. For each image, each repetition runs all methods back to back
(interleaved, in a rotating order); a method's time on an image is its median over repetitions.
Printed: the machine, then per size and format the ms/image of each (median over images), guard's
speed over imagehash's (median over images of the per-image ratio, > 1 is faster) and guard's time
over the floor's (the reduced floor where there is one; 1.10 is 10% over it); then the bit distance
between guard's aHash and imagehash's, with border trimming on and off; finally the targets with
the measured values and MET / MISSED. ``--json`` prints the same as JSON.

This is a benchmark, not a test: it measures and reports, it does not fail.
"""

from __future__ import annotations

import os

# Single thread throughout: pin any BLAS/OpenMP pool before numpy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import gc
import io
import json
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import PIL
from machine import arguments, describe, machine_line, repetitions  # bench/machine.py
from PIL import Image, features

from guard import hamming, hash_bytes
from guard.hashing import ahash_of_cells
from guard.images import WORKING_SIZE, normalise
from guard.types import DEFAULT_LIMITS

SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1920, 1080), (4000, 3000))
FULL_COUNTS = (12, 8, 4)
QUICK_COUNTS = (2, 1, 1)
# Every format guard allows by default, as a photo is usually saved in it.
FORMATS = (
    "jpeg",
    "jpeg-prog",
    "png",
    "png16",
    "png16-grey",
    "png-palette",
    "gif",
    "webp",
    "webp-lossless",
    "bmp",
)
FORMAT_NOTES = (
    "jpeg / jpeg-prog: JPEG baseline / progressive q90",
    "png: 8-bit RGB, compress_level 6; png16: 16-bit RGB; png16-grey: 16-bit grey (I;16)",
    "png-palette, gif: 256 colours (fast octree quantisation), no dither in PNG",
    "webp: lossy q80; webp-lossless: method 0 (the fastest to encode)",
    "bmp: 24-bit",
)
JPEG_QUALITY = 90
PNG_LEVEL = 6
WEBP_QUALITY = 80
NOISE_SIGMA = 2.0
NOISY_SIZE = (4000, 3000)
SEED = 5

# The hashing targets the project holds itself to (docs/performance.md).
TARGET_12MP_SPEEDUP = 8.0
TARGET_1080P_SPEEDUP = 3.5
TARGET_MEAN_BITS = 0.2
TARGET_MAX_BITS = 2
TARGET_OVER_FLOOR = 1.10  # guard's time at most 10% over the format's decode floor

REFERENCE = "imagehash"
GUARD = "guard"
FULL = "full decode"
REDUCED = "reduced decode"


@dataclass(frozen=True)
class Sample:
    """One encoded image of the corpus."""

    size: str  # "640x480"
    fmt: str  # one of FORMATS
    name: str  # source photo
    data: bytes


@dataclass(frozen=True)
class Method:
    """One timed way of turning bytes into a hash (or, for floors, into pixels)."""

    name: str
    run: Callable[[bytes], object]
    jpeg_only: bool = False


@dataclass
class FormatRow:
    """One size and format: each method's ms/image (median over images) and the ratios."""

    size: str
    fmt: str
    images: int
    median_bytes: int
    ms: dict[str, float]  # method -> median over images of its per-image median time
    guard_x_imagehash: float  # median over images of imagehash time / guard time
    guard_over_floor: float  # median over images of guard time / floor time
    floor: str  # the floor guard is held to: the reduced decode where there is one


@dataclass
class BitsRow:
    size: str
    fmt: str
    images: int
    trim_on_mean: float
    trim_on_max: int
    trim_off_mean: float
    trim_off_max: int


@dataclass
class Target:
    text: str
    measured: str
    met: bool


# --- the methods -----------------------------------------------------------------------------


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def imagehash_ahash(data: bytes) -> int:
    return int(str(imagehash.average_hash(_open(data))), 16)


def guard_ahash(data: bytes) -> int:
    return ahash_of_cells(normalise(data, DEFAULT_LIMITS)[0].cells)


def guard_ahash_no_trim(data: bytes) -> int:
    return ahash_of_cells(normalise(data, DEFAULT_LIMITS, trim=False)[0].cells)


def guard_hash_bytes(data: bytes) -> int:
    return hash_bytes(data, DEFAULT_LIMITS).ahash


def full_decode(data: bytes) -> None:
    with _open(data) as image:
        image.load()


def draft_decode(data: bytes) -> None:
    with _open(data) as image:
        image.draft("L", (WORKING_SIZE, WORKING_SIZE))
        image.load()


METHODS: tuple[Method, ...] = (
    Method(REFERENCE, imagehash_ahash),
    Method(GUARD, guard_hash_bytes),
    Method(FULL, full_decode),
    Method(REDUCED, draft_decode, jpeg_only=True),
)


def methods_for(fmt: str) -> list[Method]:
    return [m for m in METHODS if not m.jpeg_only or fmt.startswith("jpeg")]


# --- the corpus ------------------------------------------------------------------------------


def pick_photos(folder: Path, count: int) -> list[Path]:
    """A fixed, evenly spread subset of the RGB photos at least 640 px on the long side."""
    candidates: list[Path] = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as image:
            if image.mode == "RGB" and max(image.size) >= 640:
                candidates.append(path)
    if not candidates:
        raise SystemExit(f"no usable RGB *.jpg photos in {folder}")
    count = min(count, len(candidates))
    return [candidates[i * len(candidates) // count] for i in range(count)]


def crop_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop to the aspect of ``size``, then resize with LANCZOS."""
    width, height = image.size
    target_w, target_h = size
    if width * target_h > height * target_w:  # too wide: cut the sides
        new_w = round(height * target_w / target_h)
        box = ((width - new_w) // 2, 0, (width - new_w) // 2 + new_w, height)
    else:
        new_h = round(width * target_h / target_w)
        box = (0, (height - new_h) // 2, width, (height - new_h) // 2 + new_h)
    return image.crop(box).resize(size, Image.Resampling.LANCZOS)


def add_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(sigma)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png16_rgb(image: Image.Image) -> bytes:
    """A 48-bit RGB PNG (Pillow reads these but does not write them): each 8-bit sample v as
    v * 257, every row with filter type 0."""
    width, height = image.size
    samples = np.asarray(image, dtype=np.uint16) * np.uint16(257)
    rows = np.zeros((height, 1 + width * 6), dtype=np.uint8)
    rows[:, 1:] = samples.astype(">u2").view(np.uint8).reshape(height, width * 6)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_LEVEL))
        + _chunk(b"IEND", b"")
    )


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def encode_all(image: Image.Image) -> dict[str, bytes]:
    """``image`` (RGB) in every format of FORMATS."""
    palette = image.quantize(256, method=Image.Quantize.FASTOCTREE)
    grey16 = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * np.uint16(257))
    return {
        "jpeg": _save(image, "JPEG", quality=JPEG_QUALITY),
        "jpeg-prog": _save(image, "JPEG", quality=JPEG_QUALITY, progressive=True),
        "png": _save(image, "PNG", compress_level=PNG_LEVEL),
        "png16": png16_rgb(image),
        "png16-grey": _save(grey16, "PNG", compress_level=PNG_LEVEL),
        "png-palette": _save(palette, "PNG", compress_level=PNG_LEVEL),
        "gif": _save(palette, "GIF"),
        "webp": _save(image, "WEBP", quality=WEBP_QUALITY),
        "webp-lossless": _save(image, "WEBP", lossless=True, method=0, quality=0),
        "bmp": _save(image, "BMP"),
    }


def build_samples(
    folder: Path, size: tuple[int, int], count: int, rng: np.random.Generator
) -> list[Sample]:
    label = f"{size[0]}x{size[1]}"
    samples: list[Sample] = []
    for path in pick_photos(folder, count):
        with Image.open(path) as source:
            image = crop_resize(source.convert("RGB"), size)
        if size == NOISY_SIZE:
            image = add_noise(image, NOISE_SIGMA, rng)
        encoded = encode_all(image)
        samples.extend(Sample(label, fmt, path.name, encoded[fmt]) for fmt in FORMATS)
    return samples


# --- timing ----------------------------------------------------------------------------------


def time_sample(sample: Sample, reps: int) -> dict[str, float]:
    """Per-method median seconds over ``reps`` interleaved repetitions on one image."""
    methods = methods_for(sample.fmt)
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    gc.collect()
    gc.disable()
    try:
        for rep in range(reps):
            shift = rep % len(methods)
            for method in methods[shift:] + methods[:shift]:
                start = time.perf_counter()
                method.run(sample.data)
                times[method.name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in times.items()}


def format_row(samples: list[Sample], per_image: list[dict[str, float]]) -> FormatRow:
    first = samples[0]
    floor = REDUCED if REDUCED in per_image[0] else FULL
    return FormatRow(
        size=first.size,
        fmt=first.fmt,
        images=len(samples),
        median_bytes=int(statistics.median(len(s.data) for s in samples)),
        ms={name: 1000 * statistics.median(t[name] for t in per_image) for name in per_image[0]},
        guard_x_imagehash=statistics.median(t[REFERENCE] / t[GUARD] for t in per_image),
        guard_over_floor=statistics.median(t[GUARD] / t[floor] for t in per_image),
        floor=floor,
    )


def bit_distances(sample: Sample) -> tuple[int, int]:
    """Bits between imagehash's aHash and guard's, with border trimming on and off."""
    theirs = imagehash_ahash(sample.data)
    trim_on = hamming(guard_ahash(sample.data), theirs)
    return trim_on, hamming(guard_ahash_no_trim(sample.data), theirs)


def bits_row(samples: list[Sample], distances: list[tuple[int, int]]) -> BitsRow:
    on = [d[0] for d in distances]
    off = [d[1] for d in distances]
    return BitsRow(
        samples[0].size,
        samples[0].fmt,
        len(samples),
        statistics.mean(on),
        max(on),
        statistics.mean(off),
        max(off),
    )


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Results:
    machine: dict[str, Any]
    corpus: dict[str, Any]
    rows: list[FormatRow]
    bits: list[BitsRow]
    jpeg_distances: list[tuple[int, int]]  # baseline and progressive JPEG, every size


def run_size(
    folder: Path,
    size: tuple[int, int],
    count: int,
    reps: int,
    rng: np.random.Generator,
    *,
    warm_up: bool,
) -> tuple[list[FormatRow], list[BitsRow], list[tuple[int, int]]]:
    samples = build_samples(folder, size, count, rng)
    rows: list[FormatRow] = []
    bits: list[BitsRow] = []
    jpeg: list[tuple[int, int]] = []
    for fmt in FORMATS:
        group = [s for s in samples if s.fmt == fmt]
        if warm_up:  # imports and plugin registries, once: on the smallest images
            for method in methods_for(fmt):
                method.run(group[0].data)
        rows.append(format_row(group, [time_sample(s, reps) for s in group]))
        distances = [bit_distances(s) for s in group]
        bits.append(bits_row(group, distances))
        if fmt.startswith("jpeg"):
            jpeg.extend(distances)
    return rows, bits, jpeg


def machine() -> dict[str, Any]:
    return describe() | {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "zlib": features.version("zlib"),
        "libwebp": features.version("webp"),
        "numpy": np.__version__,
        "imagehash": imagehash.__version__,
    }


def run(folder: Path, counts: tuple[int, ...], reps: int) -> Results:
    rng = np.random.default_rng(SEED)
    rows: list[FormatRow] = []
    bits: list[BitsRow] = []
    jpeg: list[tuple[int, int]] = []
    for index, (size, count) in enumerate(zip(SIZES, counts, strict=True)):
        size_rows, size_bits, distances = run_size(
            folder, size, count, reps, rng, warm_up=index == 0
        )
        rows += size_rows
        bits += size_bits
        jpeg += distances
    corpus = {
        "photos": str(folder),
        "images_per_size": {f"{w}x{h}": n for (w, h), n in zip(SIZES, counts, strict=True)},
        "repetitions": reps,
        "formats": list(FORMAT_NOTES),
        "notes": [
            "centre-cropped to 4:3 / 16:9, resized with LANCZOS",
            (
                "source photos are at most 1024 px on the long side: 1920x1080 and 4000x3000 "
                "are upscaled"
            ),
            f"4000x3000: Gaussian noise sigma {NOISE_SIGMA:g} added before encoding",
        ],
    }
    return Results(machine(), corpus, rows, bits, jpeg)


def _find(rows: list[FormatRow], size: str, fmt: str) -> FormatRow:
    return next(r for r in rows if (r.size, r.fmt) == (size, fmt))


def _label(row: FormatRow) -> str:
    return f"{row.size} {row.fmt}"


def targets(results: Results) -> list[Target]:
    big = _find(results.rows, "4000x3000", "jpeg")
    hd = _find(results.rows, "1920x1080", "jpeg")
    off = [d[1] for d in results.jpeg_distances]
    mean_off, max_off = statistics.mean(off), max(off)
    n = len(off)
    over = [r for r in results.rows if r.guard_over_floor > TARGET_OVER_FLOOR]
    behind = [r for r in results.rows if r.guard_x_imagehash <= 1.0]
    worst = max(results.rows, key=lambda r: r.guard_over_floor)
    slowest = min(results.rows, key=lambda r: r.guard_x_imagehash)
    return [
        Target(
            f"hash_bytes of a 12 MP baseline JPEG at least {TARGET_12MP_SPEEDUP:g}x faster than "
            "imagehash",
            f"{big.guard_x_imagehash:.2f}x ({big.ms[GUARD]:.2f} ms/image)",
            big.guard_x_imagehash >= TARGET_12MP_SPEEDUP,
        ),
        Target(
            f"hash_bytes of a 1080p baseline JPEG at least {TARGET_1080P_SPEEDUP:g}x faster than "
            "imagehash",
            f"{hd.guard_x_imagehash:.2f}x ({hd.ms[GUARD]:.2f} ms/image)",
            hd.guard_x_imagehash >= TARGET_1080P_SPEEDUP,
        ),
        Target(
            f"JPEG, border trimming off: mean bit distance to imagehash under {TARGET_MEAN_BITS:g}",
            f"{mean_off:.3f} bits over {n} images",
            mean_off < TARGET_MEAN_BITS,
        ),
        Target(
            f"JPEG, border trimming off: max bit distance to imagehash at most {TARGET_MAX_BITS}",
            f"{max_off} bits over {n} images",
            max_off <= TARGET_MAX_BITS,
        ),
        Target(
            f"every format and size: guard at most {TARGET_OVER_FLOOR:.2f}x the decode floor",
            f"worst {worst.guard_over_floor:.2f}x ({_label(worst)}); over: "
            + (", ".join(f"{_label(r)} {r.guard_over_floor:.2f}" for r in over) or "none"),
            not over,
        ),
        Target(
            "every format and size: guard faster than imagehash",
            f"slowest {slowest.guard_x_imagehash:.2f}x ({_label(slowest)}); behind: "
            + (", ".join(f"{_label(r)} {r.guard_x_imagehash:.2f}" for r in behind) or "none"),
            not behind,
        ),
    ]


# --- output ----------------------------------------------------------------------------------


def _ms(row: FormatRow, method: str) -> str:
    return f"{row.ms[method]:.2f}" if method in row.ms else "-"


def markdown(results: Results, elapsed: float) -> str:
    m, c = results.machine, results.corpus
    lines = [
        "# guard hashing benchmark",
        "",
        machine_line(m),
        (
            f"- Python {m['python']}, Pillow {m['pillow']} (libjpeg-turbo "
            f"{m['libjpeg_turbo']}, zlib {m['zlib']}, libwebp {m['libwebp']}), "
            f"numpy {m['numpy']}, imagehash {m['imagehash']}"
        ),
        (
            f"- corpus: {c['photos']}, images per size {c['images_per_size']}, "
            f"{c['repetitions']} repetition(s)"
        ),
        *(f"- {note}" for note in c["formats"]),
        *(f"- {note}" for note in c["notes"]),
        (
            "- single thread; methods interleaved per image; per-image median over "
            "repetitions; ms = median over images; x imagehash = median over images of "
            "(imagehash time / guard time), > 1 is faster; / floor = median over images of "
            "(guard time / floor time), the floor being the reduced decode where the format has "
            "one (JPEG draft), else the full decode"
        ),
        "",
        "## Time per image (ms)",
        "",
        "| size | format | median size | imagehash | guard (hash_bytes) | full decode | "
        "reduced decode | guard x imagehash | guard / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.size} | {r.fmt} | {r.median_bytes / 1000:.0f} KB | {_ms(r, REFERENCE)} | "
        f"{_ms(r, GUARD)} | {_ms(r, FULL)} | {_ms(r, REDUCED)} | {r.guard_x_imagehash:.2f} | "
        f"{r.guard_over_floor:.2f} |"
        for r in results.rows
    ]
    lines += [
        "",
        "## Bits between guard's aHash and imagehash.average_hash",
        "",
        "| size | format | images | trim on: mean | max | trim off: mean | max |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {b.size} | {b.fmt} | {b.images} | {b.trim_on_mean:.2f} | {b.trim_on_max} | "
        f"{b.trim_off_mean:.2f} | {b.trim_off_max} |"
        for b in results.bits
    ]
    lines += ["", "## Targets", ""]
    lines += [
        f"- {t.text}: {t.measured} -> **{'MET' if t.met else 'MISSED'}**" for t in targets(results)
    ]
    lines += ["", f"(run took {elapsed:.0f} s)"]
    return "\n".join(lines)


def as_json(results: Results, elapsed: float) -> str:
    document = {
        "machine": results.machine,
        "corpus": results.corpus,
        "rows": [asdict(r) for r in results.rows],
        "bits": [asdict(b) for b in results.bits],
        "targets": [asdict(t) for t in targets(results)],
        "elapsed_s": round(elapsed, 1),
    }
    return json.dumps(document, indent=2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0],
        photos="folder of source *.jpg photos",
        reps=(3, 1),
        quick="fewer images and one repetition",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    reps = repetitions(args)
    start = time.perf_counter()
    results = run(Path(args.photos), counts, reps)
    elapsed = time.perf_counter() - start
    print(as_json(results, elapsed) if args.json else markdown(results, elapsed))


if __name__ == "__main__":
    main()
