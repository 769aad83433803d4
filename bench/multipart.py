"""The cost of reading uploads strictly: guard's canonical multipart reader vs python-multipart.

    cd /work/main && PYTHONPATH=. python bench/multipart.py [--photos DIR] [--reps N] [--quick] \
        [--json]

Bodies are built the way browsers send them: one photo resized to 640x480, 1920x1080 and
4000x3000 and encoded as JPEG q90, in a form with two text fields and the file part. For each
body, every repetition runs, back to back in a rotating order:

- ``guard.multipart.parse``: the strict reader alone (boundary check, one delimiter search over
  the whole body, header rules, part slicing);
- ``python-multipart``: the same body through python-multipart's ``MultipartParser`` with the
  callbacks guard used before (64 KiB writes, part data collected): the baseline, and what
  Starlette and FastAPI apps run on the same body anyway;
- ``find_images``: guard's whole body step (the strict read plus sniffing every part's bytes).

Printed: the machine, then per size the median µs of each method and the strict reader's time
minus the baseline's ("added"; negative means the strict reader is faster). The issue's target is
under 0.2 ms added for a 1080p upload. This is a benchmark, not a test: it measures and reports.
"""

from __future__ import annotations

import io
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import arguments, cpu_model, repetitions  # bench/machine.py, next to this script
from PIL import Image
from python_multipart.multipart import MultipartParser

from guard.multipart import boundary_of, parse
from guard.uploads import find_images

SIZES = ((640, 480), (1920, 1080), (4000, 3000))
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
TARGET_ADDED_MS = 0.2


def form_body(image: bytes) -> bytes:
    """Two text fields and a file, as Chromium's FormData sends them."""
    b = BOUNDARY.encode()

    def part(disposition: str, data: bytes, content_type: str | None = None) -> bytes:
        head = f"Content-Disposition: form-data; {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        return b"--" + b + b"\r\n" + head.encode() + b"\r\n" + data + b"\r\n"

    return (
        part('name="title"', b"A photo of my cat")
        + part('name="tags"', b"cat,sofa,afternoon")
        + part('name="file"; filename="IMG_0001.jpg"', image, "image/jpeg")
        + b"--"
        + b
        + b"--\r\n"
    )


def python_multipart(body: bytes) -> list[bytes]:
    """What guard ran before: python-multipart with callbacks, fed in 64 KiB writes."""
    datas: list[bytearray] = []
    headers: list[tuple[bytes, bytes]] = []
    name, value = bytearray(), bytearray()

    def on_header_end() -> None:
        headers.append((bytes(name).lower(), bytes(value)))
        name.clear()
        value.clear()

    callbacks: dict[str, Callable[..., None]] = {
        "on_part_begin": lambda: datas.append(bytearray()),
        "on_part_data": lambda data, start, end: datas[-1].extend(data[start:end]),
        "on_header_field": lambda data, start, end: name.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": on_header_end,
    }
    parser = MultipartParser(BOUNDARY.encode(), callbacks)  # type: ignore[arg-type]
    for start in range(0, len(body), 64 * 1024):
        parser.write(body[start : start + 64 * 1024])
    parser.finalize()
    return [bytes(data) for data in datas]


def strict(body: bytes) -> list[bytes]:
    return [part.data for part in parse(body, boundary_of(CONTENT_TYPE), max_parts=1000)]


def whole_step(body: bytes) -> list[bytes]:
    return find_images(body, CONTENT_TYPE, max_parts=1000, max_images=16)


METHODS: dict[str, Callable[[bytes], list[bytes]]] = {
    "strict reader": strict,
    "python-multipart": python_multipart,
    "find_images": whole_step,
}


def photo_bytes(photos: Path, size: tuple[int, int]) -> bytes:
    source = min(photos.glob("*.jpg"), default=None) if photos.exists() else None
    if source is None:
        # No photo set: a synthetic gradient photo of the same size (compresses better).
        image = Image.linear_gradient("L").convert("RGB").resize(size)
    else:
        image = Image.open(source).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def measure(body: bytes, reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    names = list(METHODS)
    # The three readers must agree on this canonical body, or the comparison means nothing.
    assert strict(body) == python_multipart(body)
    assert whole_step(body) == [strict(body)[2]]
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            started = time.perf_counter_ns()
            METHODS[name](body)
            times[name].append((time.perf_counter_ns() - started) / 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = arguments(
        __doc__.splitlines()[0], photos="folder of photos", reps=(400, 40), quick="40 repetitions"
    )
    args = parser.parse_args(argv)
    reps = repetitions(args)
    rows: list[dict[str, Any]] = []
    for size in SIZES:
        body = form_body(photo_bytes(Path(args.photos), size))
        medians = measure(body, reps)
        rows.append(
            {
                "size": f"{size[0]}x{size[1]}",
                "body_bytes": len(body),
                **{f"{name} us": round(value, 1) for name, value in medians.items()},
                "added us": round(medians["strict reader"] - medians["python-multipart"], 1),
            }
        )
    machine = f"{cpu_model()}, Python {platform.python_version()}, {reps} repetitions"
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return 0
    print(f"machine: {machine}\n")
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[column]) for column in columns) + " |")
    hd = next(row for row in rows if row["size"] == "1920x1080")
    added_ms = hd["added us"] / 1000
    verdict = "MET" if added_ms < TARGET_ADDED_MS else "MISSED"
    print(
        f"\ntarget: strict checks add < {TARGET_ADDED_MS} ms to a 1080p upload: "
        f"{added_ms:+.3f} ms ({verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
