"""Hashing throughput: guard's aHash against imagehash.average_hash, timed side by side.

    cd /work/main && PYTHONPATH=. python bench/hashing.py [--photos DIR] [--reps N] [--quick] \
        [--json]

Needs the `bench` extra (imagehash). The corpus is made in memory from the photos in ``--photos``
(default ../shared/data/photos): each is centre-cropped to 4:3 or 16:9 and resized with LANCZOS to
640x480, 1920x1080 and 4000x3000, then encoded as JPEG baseline q90, JPEG progressive q90 and PNG
(compress_level 6). The photos are at most 1024 px on the long side, so 1920x1080 and 4000x3000
are upscaled; the 4000x3000 set gets Gaussian noise (sigma 2) before encoding so that it is not
unrealistically smooth. A fixed subset is used per size: 24 / 16 / 8 images (``--quick``: 8 / 4 / 2
and one repetition, well under a minute).

Every method decodes from the in-memory bytes on one thread. For each image, each repetition runs
all methods back to back (interleaved, in a rotating order); the time of a method on an image is
its median over the repetitions. Printed: the machine, then a markdown table per size and format
with ms/image (median over images), images/s per core, and the speedup over imagehash (median over
images of the per-image ratio imagehash time / method time, so > 1 is faster); then the bit
distance between guard's aHash and imagehash's, with border trimming on and off; finally the
issue's targets with the measured values and MET / MISSED. ``--json`` prints the same as JSON.

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
import sys
import time
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
FULL_COUNTS = (24, 16, 8)
QUICK_COUNTS = (8, 4, 2)
FORMATS = ("jpeg", "jpeg-prog", "png")
JPEG_QUALITY = 90
PNG_LEVEL = 6
NOISE_SIGMA = 2.0
NOISY_SIZE = (4000, 3000)
SEED = 5

# The hashing speed targets the project holds itself to (docs/performance.md).
TARGET_12MP_SPEEDUP = 8.0
TARGET_1080P_SPEEDUP = 3.5
TARGET_MEAN_BITS = 0.2
TARGET_MAX_BITS = 2


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
class TimingRow:
    size: str
    fmt: str
    method: str
    images: int
    ms_per_image: float  # median over images of the per-image median over repetitions
    images_per_s: float
    speedup_vs_imagehash: float  # median over images of imagehash time / method time


@dataclass
class BitsRow:
    size: str
    fmt: str
    images: int
    median_bytes: int
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


def guard_ahash_phash(data: bytes) -> int:
    return hash_bytes(data, DEFAULT_LIMITS).ahash


def full_decode(data: bytes) -> None:
    with _open(data) as image:
        image.load()


def draft_decode(data: bytes) -> None:
    with _open(data) as image:
        image.draft("L", (WORKING_SIZE, WORKING_SIZE))
        image.load()


REFERENCE = "imagehash.average_hash"
METHODS: tuple[Method, ...] = (
    Method(REFERENCE, imagehash_ahash),
    Method("guard aHash", guard_ahash),
    Method("guard aHash + pHash (hash_bytes)", guard_ahash_phash),
    Method("guard aHash, trim off", guard_ahash_no_trim),
    Method("floor: full decode", full_decode),
    Method(f"floor: draft(L, {WORKING_SIZE}) decode", draft_decode, jpeg_only=True),
)


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


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=PNG_LEVEL)
    else:
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, progressive=fmt == "jpeg-prog")
    return buffer.getvalue()


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
        samples.extend(Sample(label, fmt, path.name, encode(image, fmt)) for fmt in FORMATS)
    return samples


# --- timing ----------------------------------------------------------------------------------


def methods_for(fmt: str) -> list[Method]:
    return [m for m in METHODS if not m.jpeg_only or fmt.startswith("jpeg")]


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


def timing_rows(samples: list[Sample], per_image: list[dict[str, float]]) -> list[TimingRow]:
    first = samples[0]
    rows = []
    for method in methods_for(first.fmt):
        seconds = [t[method.name] for t in per_image]
        ratios = [t[REFERENCE] / t[method.name] for t in per_image]
        ms = 1000 * statistics.median(seconds)
        rows.append(
            TimingRow(
                size=first.size,
                fmt=first.fmt,
                method=method.name,
                images=len(seconds),
                ms_per_image=ms,
                images_per_s=1000 / ms,
                speedup_vs_imagehash=statistics.median(ratios),
            )
        )
    return rows


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
        int(statistics.median(len(s.data) for s in samples)),
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
    timings: list[TimingRow]
    bits: list[BitsRow]
    all_distances: list[tuple[int, int]]


def run_size(
    folder: Path, size: tuple[int, int], count: int, reps: int, rng: np.random.Generator
) -> tuple[list[TimingRow], list[BitsRow], list[tuple[int, int]]]:
    samples = build_samples(folder, size, count, rng)
    for method in methods_for(samples[0].fmt):  # warm up imports and plugin registries
        method.run(samples[0].data)
    timings: list[TimingRow] = []
    bits: list[BitsRow] = []
    everything: list[tuple[int, int]] = []
    for fmt in FORMATS:
        group = [s for s in samples if s.fmt == fmt]
        timings.extend(timing_rows(group, [time_sample(s, reps) for s in group]))
        distances = [bit_distances(s) for s in group]
        bits.append(bits_row(group, distances))
        everything.extend(distances)
    return timings, bits, everything


def machine() -> dict[str, Any]:
    return describe() | {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "zlib": features.version("zlib"),
        "numpy": np.__version__,
        "imagehash": imagehash.__version__,
    }


def run(folder: Path, counts: tuple[int, ...], reps: int) -> Results:
    rng = np.random.default_rng(SEED)
    timings: list[TimingRow] = []
    bits: list[BitsRow] = []
    everything: list[tuple[int, int]] = []
    for size, count in zip(SIZES, counts, strict=True):
        size_timings, size_bits, distances = run_size(folder, size, count, reps, rng)
        timings += size_timings
        bits += size_bits
        everything += distances
    corpus = {
        "photos": str(folder),
        "images_per_size": {f"{w}x{h}": n for (w, h), n in zip(SIZES, counts, strict=True)},
        "repetitions": reps,
        "formats": ["JPEG baseline q90", "JPEG progressive q90", "PNG compress_level 6"],
        "notes": [
            "centre-cropped to 4:3 / 16:9, resized with LANCZOS",
            (
                "source photos are at most 1024 px on the long side: 1920x1080 and 4000x3000 "
                "are upscaled"
            ),
            f"4000x3000: Gaussian noise sigma {NOISE_SIGMA:g} added before encoding",
        ],
    }
    return Results(machine(), corpus, timings, bits, everything)


def _find(rows: list[TimingRow], size: str, fmt: str, method: str) -> TimingRow:
    return next(r for r in rows if (r.size, r.fmt, r.method) == (size, fmt, method))


def targets(results: Results) -> list[Target]:
    big = _find(results.timings, "4000x3000", "jpeg", "guard aHash")
    hd = _find(results.timings, "1920x1080", "jpeg", "guard aHash")
    off = [d[1] for d in results.all_distances]
    mean_off, max_off = statistics.mean(off), max(off)
    n = len(off)
    return [
        Target(
            f"aHash of a 12 MP baseline JPEG at least {TARGET_12MP_SPEEDUP:g}x faster than "
            "imagehash",
            f"{big.speedup_vs_imagehash:.2f}x ({big.ms_per_image:.2f} ms/image)",
            big.speedup_vs_imagehash >= TARGET_12MP_SPEEDUP,
        ),
        Target(
            f"aHash of a 1080p baseline JPEG at least {TARGET_1080P_SPEEDUP:g}x faster than "
            "imagehash",
            f"{hd.speedup_vs_imagehash:.2f}x ({hd.ms_per_image:.2f} ms/image)",
            hd.speedup_vs_imagehash >= TARGET_1080P_SPEEDUP,
        ),
        Target(
            f"border trimming off: mean bit distance to imagehash under {TARGET_MEAN_BITS:g}",
            f"{mean_off:.3f} bits over all {n} images",
            mean_off < TARGET_MEAN_BITS,
        ),
        Target(
            f"border trimming off: max bit distance to imagehash at most {TARGET_MAX_BITS}",
            f"{max_off} bits over all {n} images",
            max_off <= TARGET_MAX_BITS,
        ),
    ]


# --- output ----------------------------------------------------------------------------------


def markdown(results: Results, elapsed: float) -> str:
    m, c = results.machine, results.corpus
    lines = [
        "# guard hashing benchmark",
        "",
        machine_line(m),
        (
            f"- Python {m['python']}, Pillow {m['pillow']} (libjpeg-turbo "
            f"{m['libjpeg_turbo']}, zlib {m['zlib']}), numpy {m['numpy']}, "
            f"imagehash {m['imagehash']}"
        ),
        (
            f"- corpus: {c['photos']}, images per size {c['images_per_size']}, "
            f"{c['repetitions']} repetition(s), formats: {', '.join(c['formats'])}"
        ),
        *(f"- {note}" for note in c["notes"]),
        (
            "- single thread; methods interleaved per image; per-image median over "
            "repetitions; x imagehash = median over images of (imagehash time / method time), "
            "> 1 is faster"
        ),
        "",
        "## Time per image",
        "",
        "| size | format | method | ms/image | img/s | x imagehash |",
        "|---|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.size} | {r.fmt} | {r.method} | {r.ms_per_image:.2f} | {r.images_per_s:.0f} | "
        f"{r.speedup_vs_imagehash:.2f} |"
        for r in results.timings
    ]
    lines += [
        "",
        "## Bits between guard's aHash and imagehash.average_hash",
        "",
        "| size | format | images | median size | trim on: mean | max | trim off: mean | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {b.size} | {b.fmt} | {b.images} | {b.median_bytes / 1000:.0f} KB | "
        f"{b.trim_on_mean:.2f} | {b.trim_on_max} | {b.trim_off_mean:.2f} | {b.trim_off_max} |"
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
        "timings": [asdict(r) for r in results.timings],
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
