"""Bit distance between guard's aHash and imagehash.average_hash, and where it comes from.

    python bench/compare_imagehash.py [FOLDER]     (default: ../shared/data/photos)

Needs the `bench` extra (imagehash). For each file it also hashes with guard's pipeline minus one
step (no border trim; no JPEG draft) to attribute the differences.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import imagehash
from machine import DEFAULT_PHOTOS, photos_folder  # bench/machine.py
from PIL import Image

import guard.images
from guard import hamming, hash_bytes
from guard.hashing import FrameHash


def main(folder: str = DEFAULT_PHOTOS) -> None:
    files = sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )
    rows = []
    draft_cost: list[tuple[int, bool]] = []  # (bits draft() moves the hash, low-information?)
    for path in files:
        data = path.read_bytes()
        theirs = int(str(imagehash.average_hash(Image.open(path))), 16)
        ours = hash_bytes(data).ahash
        no_draft = FrameHash.of(guard.images.normalise(data, draft=False)[0]).ahash
        no_trim = hash_bytes(data, trim=False).ahash
        bare = FrameHash.of(guard.images.normalise(data, draft=False, trim=False)[0]).ahash
        draft_cost.append((hamming(ours, no_draft), hash_bytes(data).low_information))
        rows.append(
            (
                hamming(ours, theirs),
                hamming(no_trim, theirs),
                hamming(no_draft, theirs),
                hamming(bare, theirs),
                path.name,
            )
        )
    print(f"{len(rows)} files in {folder}\n")
    print("| guard pipeline | mean bits to imagehash | max | identical |")
    print("|---|---:|---:|---:|")
    for column, label in enumerate(
        ["guard-ahash v1", "without border trim", "without JPEG draft", "without trim and draft"]
    ):
        values = [row[column] for row in rows]
        print(
            f"| {label} | {statistics.mean(values):.2f} | {max(values)} | "
            f"{sum(v == 0 for v in values)}/{len(values)} |"
        )
    for label, costs in (
        ("all files", draft_cost),
        ("informative", [c for c in draft_cost if not c[1]]),
    ):
        bits = [c[0] for c in costs]
        print(
            f"\nJPEG draft() vs full decode, same pipeline, {label}: "
            f"mean {statistics.mean(bits):.2f} bits, "
            f"max {max(bits)}, identical {bits.count(0)}/{len(bits)}"
        )
    print("\nlargest differences (guard, no-trim, no-draft, neither, file):")
    for row in sorted(rows, reverse=True)[:8]:
        print("  ", *row)


if __name__ == "__main__":
    main(photos_folder(__doc__.splitlines()[0]))
