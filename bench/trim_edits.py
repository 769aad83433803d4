"""How well border trimming survives letterbox/padding edits, and what the tolerance does.

    python bench/trim_edits.py [FOLDER]      (default: ../shared/data/photos)

For each photo: aHash distance between the photo and (a) a black letterbox (15% bars) saved as JPEG
q50, (b) white padding (10% border) as JPEG q75, (c) the letterbox plus Gaussian noise (sigma 4) as
JPEG q75; for TRIM_TOLERANCE 10, 6 (the default) and 4.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from machine import DEFAULT_PHOTOS, photos_folder  # bench/machine.py
from PIL import Image, ImageOps

import guard.images
from guard import hamming, hash_bytes


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _edits(image: Image.Image, rng: np.random.Generator) -> list[bytes]:
    width, height = image.size
    letterbox = Image.new("RGB", (width, int(height * 1.3)), "black")
    letterbox.paste(image, (0, int(height * 0.15)))
    padded = ImageOps.expand(image, border=width // 10, fill="white")
    noisy = np.asarray(letterbox, dtype=np.float64) + rng.normal(
        0, 4, (letterbox.height, letterbox.width, 3)
    )
    noisy_image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return [_jpeg(letterbox, 50), _jpeg(padded, 75), _jpeg(noisy_image, 75)]


def main(folder: str = DEFAULT_PHOTOS) -> None:
    files = sorted(Path(folder).glob("*.jpg"))
    print(f"{len(files)} photos in {folder}; aHash bits between photo and edit\n")
    print("| tolerance | edit | mean | p90 | max | within 4 bits | photos trimmed as they are |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    default = guard.images.TRIM_TOLERANCE
    for tolerance in (10, 6, 4):
        guard.images.TRIM_TOLERANCE = tolerance
        rng = np.random.default_rng(0)
        distances: list[list[int]] = [[], [], []]
        trimmed = 0
        for path in files:
            data = path.read_bytes()
            original = hash_bytes(data).ahash
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            trimmed += guard.images.trim_box(np.asarray(image.convert("L"))) != (0, 0, 0, 0)
            for column, edited in enumerate(_edits(image, rng)):
                distances[column].append(hamming(original, hash_bytes(edited).ahash))
        for label, values in zip(
            ["letterbox q50", "padding q75", "letterbox+noise q75"], distances, strict=True
        ):
            array = np.array(values)
            print(
                f"| {tolerance} | {label} | {array.mean():.2f} | {np.percentile(array, 90):.0f} | "
                f"{array.max()} | {100 * (array <= 4).mean():.0f}% | {trimmed} |"
            )
    guard.images.TRIM_TOLERANCE = default


if __name__ == "__main__":
    main(photos_folder(__doc__.splitlines()[0]))
