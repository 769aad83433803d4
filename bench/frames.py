"""What hashing every frame of an animation costs, against hashing its first frame only.

    PYTHONPATH=. python bench/frames.py [--shared DIR] [--photos DIR] [--reps N] [--quick] [--json]

The corpus: the animations in ``--shared`` (default ../shared/data/hard: animated.gif,
animated.webp, animated.png, animated-blank-first-frame.gif) when present, and animations made in
memory from the photos in ``--photos`` (default ../shared/data/photos, else tests/data): a slow pan
and zoom over a photo, every frame distinct, as screen-recorded or video-clip GIFs are; 480x270 at
10 and 25 fps for 2 to 10 s (GIF, lossy animated WebP, APNG), a 1080p 3 s GIF loop, and a
300-frame GIF of one still picture, made twice: with a flickering corner pixel (frames differ,
their hashes do not: one lookup) and in identical frames (each repeat is skipped before the
shrink). ``--quick`` makes the shorter ones only and runs one repetition (well under a minute).

Each file is hashed by ``guard.hash_bytes`` under limits that let every frame through, and by the
same steps on its first frame only (open, decode, flatten, shrink, hash: the baseline), back to
back in the same run; each time is the median over the repetitions. Printed: the machine, then a
markdown table (file, frames, pixels of all frames, distinct (aHash, pHash) frames left for
lookup, ms for all frames, ms per frame, ms for the first frame, ratio all / first), and the
defaults of ``max_frames``/``max_animation_pixels`` with the files they refuse. ``--json`` prints
the same as JSON.

This is a benchmark, not a test: it measures and reports, it does not fail.
"""

from __future__ import annotations

import os

# Single thread throughout: pin any BLAS/OpenMP pool before numpy is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import io
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from machine import arguments, describe, machine_line, repetitions  # bench/machine.py
from PIL import Image, features

from guard import hash_bytes
from guard.errors import ImageError
from guard.hashing import FrameHash
from guard.images import _grey, _load, _open, _shrink
from guard.types import DEFAULT_LIMITS, ImageLimits

DEFAULT_SHARED = "../shared/data/hard"
LOCAL_PHOTOS = "tests/data"
SHARED_FILES = (
    "animated.gif",
    "animated.webp",
    "animated.png",
    "animated-blank-first-frame.gif",
)
# (format, width, height, fps, seconds, kind): the generated animations. "pan": every frame
# differs; "still": one picture, a corner pixel flickering (frames differ, hashes do not);
# "repeat": one picture in identical frames. The full run adds the longer and larger ones.
Spec = tuple[str, int, int, int, float, str]
QUICK_MADE: tuple[Spec, ...] = (
    ("GIF", 480, 270, 10, 2, "pan"),
    ("GIF", 480, 270, 10, 5, "pan"),
    ("WEBP", 480, 270, 25, 2, "pan"),
    ("PNG", 480, 270, 10, 2, "pan"),
    ("GIF", 480, 270, 30, 10, "still"),
    ("GIF", 480, 270, 30, 10, "repeat"),
)
FULL_MADE = QUICK_MADE + (
    ("GIF", 480, 270, 25, 10, "pan"),
    ("WEBP", 480, 270, 25, 4, "pan"),
    ("GIF", 640, 360, 15, 6, "pan"),
    ("GIF", 1920, 1080, 10, 3, "pan"),
)
# Limits under which every frame of every file is hashed.
UNBOUNDED = ImageLimits(max_frames=1_000_000, max_animation_pixels=10**13)


@dataclass(frozen=True)
class Animation:
    name: str
    data: bytes


@dataclass
class Row:
    name: str
    kilobytes: int
    size: str
    frames: int
    megapixels: float  # all frames
    distinct: int  # (aHash, pHash) frames hash_bytes returns: what is looked up
    ms_all: float
    ms_per_frame: float
    ms_first: float
    ratio: float
    default_limits: str  # "hashed", or the limit that refuses it under the defaults


def pick_photos(folder: Path, count: int) -> list[Path]:
    photos = sorted(folder.glob("*.jpg")) or sorted(Path(LOCAL_PHOTOS).glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos in {folder} or {LOCAL_PHOTOS}")
    return photos[:: max(1, len(photos) // count)][:count]


def pan(photo: Image.Image, size: tuple[int, int], frames: int) -> list[Image.Image]:
    """A slow pan and zoom over ``photo``: every frame differs, neighbours only a little."""
    width, height = size
    base = photo.resize((width * 3 // 2, height * 3 // 2), Image.Resampling.LANCZOS)
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        zoom = 1.0 - 0.25 * t
        w, h = int(base.width * zoom / 1.5 * 1.0), int(base.height * zoom / 1.5 * 1.0)
        left = int((base.width - w) * t)
        top = int((base.height - h) * (1 - t) / 2)
        out.append(base.crop((left, top, left + w, top + h)).resize(size))
    return out


def still_frames(photo: Image.Image, size: tuple[int, int], frames: int) -> list[Image.Image]:
    """One picture ``frames`` times. Pillow's GIF writer merges identical frames, so one corner
    pixel alternates (as dither noise does): every frame is stored, all hash alike."""
    base = photo.resize(size)
    out = []
    for i in range(frames):
        frame = base.copy()
        frame.putpixel((0, 0), (255, 255, 255) if i % 2 else (0, 0, 0))
        out.append(frame)
    return out


def repeated(photo: Image.Image, size: tuple[int, int], frames: int, fps: int) -> bytes:
    """A GIF of one picture in ``frames`` identical frames. Pillow's writer merges identical
    frames, so the frame's blocks are repeated by hand, as some encoders write stills."""
    buffer = io.BytesIO()
    photo.resize(size).save(buffer, "GIF", duration=round(1000 / fps))
    single = buffer.getvalue()
    start = single.index(b"\x21\xf9")  # the frame's graphic control extension
    return single[:start] + single[start:-1] * frames + b"\x3b"


def make(photo: Image.Image, spec: Spec) -> Animation:
    fmt, width, height, fps, seconds, kind = spec
    count = int(fps * seconds)
    if kind == "repeat":
        data = repeated(photo, (width, height), count, fps)
        return Animation(f"made {width}x{height} repeat.gif", data)
    still = kind == "still"
    frames = (
        still_frames(photo, (width, height), count) if still else pan(photo, (width, height), count)
    )
    options: dict[str, Any] = {
        "save_all": True,
        "append_images": frames[1:],
        "duration": round(1000 / fps),
        "loop": 0,
    }
    if fmt == "WEBP":
        options["quality"] = 75
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, **options)
    kind = "still" if still else f"{fps}fps-{seconds:g}s"
    extension = {"GIF": "gif", "WEBP": "webp", "PNG": "apng"}[fmt]
    return Animation(f"made {width}x{height} {kind}.{extension}", buffer.getvalue())


def corpus(shared: Path, photos: Path, quick: bool) -> list[Animation]:
    found = [
        Animation(name, (shared / name).read_bytes())
        for name in SHARED_FILES
        if (shared / name).exists()
    ]
    specs = QUICK_MADE if quick else FULL_MADE
    sources = pick_photos(photos, len(specs))
    for index, spec in enumerate(specs):
        with Image.open(sources[index % len(sources)]) as image:
            found.append(make(image.convert("RGB"), spec))
    return found


def first_frame_only(data: bytes) -> FrameHash:
    """hash_bytes' steps on the first frame alone: the baseline."""
    image = _open(data, UNBOUNDED)
    try:
        return FrameHash.of(_shrink(_grey(_load(image))))
    finally:
        image.close()


def median_ms(run: Any, data: bytes, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run(data)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def under_defaults(data: bytes) -> str:
    try:
        hash_bytes(data, DEFAULT_LIMITS)
    except ImageError as error:
        return getattr(error, "limit", type(error).__name__)
    return "hashed"


def measure(animation: Animation, reps: int) -> Row:
    with Image.open(io.BytesIO(animation.data)) as image:
        frames = getattr(image, "n_frames", 1)
        width, height = image.size
    ms_all, ms_first = [], []
    for _ in range(reps):  # interleaved: both see the same machine load
        ms_all.append(median_ms(lambda d: hash_bytes(d, UNBOUNDED), animation.data, 1))
        ms_first.append(median_ms(first_frame_only, animation.data, 1))
    all_frames, first = statistics.median(ms_all), statistics.median(ms_first)
    return Row(
        name=animation.name,
        kilobytes=round(len(animation.data) / 1000),
        size=f"{width}x{height}",
        frames=frames,
        megapixels=round(frames * width * height / 1e6, 1),
        distinct=len(hash_bytes(animation.data, UNBOUNDED).frames),
        ms_all=round(all_frames, 1),
        ms_per_frame=round(all_frames / frames, 2),
        ms_first=round(first, 2),
        ratio=round(all_frames / first, 1),
        default_limits=under_defaults(animation.data),
    )


def machine() -> dict[str, Any]:
    return describe() | {
        "pillow": PIL.__version__,
        "libwebp": features.version("webp"),
        "numpy": np.__version__,
    }


def markdown(rows: list[Row], info: dict[str, Any], reps: int, elapsed: float) -> str:
    lines = [
        "# guard frames benchmark: every frame against the first only",
        "",
        machine_line(info),
        (
            f"- Python {info['python']}, Pillow {info['pillow']} (libwebp {info['libwebp']}), "
            f"numpy {info['numpy']}"
        ),
        f"- single thread; {reps} repetition(s), median; all and first interleaved per file",
        (
            f"- defaults: max_frames={DEFAULT_LIMITS.max_frames}, "
            f"max_animation_pixels={DEFAULT_LIMITS.max_animation_pixels}"
        ),
        "",
        (
            "| file | KB | size | frames | Mpx (all) | distinct | ms all | ms/frame | ms first | "
            "all/first | under defaults |"
        ),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.name} | {r.kilobytes} | {r.size} | {r.frames} | {r.megapixels} | {r.distinct} | "
        f"{r.ms_all} | {r.ms_per_frame} | {r.ms_first} | {r.ratio} | {r.default_limits} |"
        for r in rows
    ]
    lines += ["", f"(run took {elapsed:.0f} s)"]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0],
        photos="photos to animate",
        reps=(5, 1),
        quick="short animations, one repetition",
    )
    parser.add_argument("--shared", default=DEFAULT_SHARED, help="folder of shared animations")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reps = repetitions(args)
    started = time.perf_counter()
    animations = corpus(Path(args.shared), Path(args.photos), args.quick)
    rows = [measure(animation, reps) for animation in animations]
    elapsed = time.perf_counter() - started
    info = machine()
    if args.json:
        document = {
            "machine": info,
            "repetitions": reps,
            "defaults": {
                "max_frames": DEFAULT_LIMITS.max_frames,
                "max_animation_pixels": DEFAULT_LIMITS.max_animation_pixels,
            },
            "rows": [asdict(r) for r in rows],
            "elapsed_s": round(elapsed, 1),
        }
        print(json.dumps(document, indent=2))
    else:
        print(markdown(rows, info, reps, elapsed))


if __name__ == "__main__":
    main()
