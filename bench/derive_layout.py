"""Derive the decorrelating band layouts pinned in ``guard.bands.DEFAULT_PERMUTATIONS``.

    PYTHONPATH=. python bench/derive_layout.py [FOLDER]    (from the repository root;
                                                          default: ../shared/data/photos)

Sample: each photo (sorted by name) plus deterministic edits of it (random crops of 60-95% of each
side at random positions, some scaled down, re-encoded as JPEG in memory), all hashed with
``guard.hash_bytes``. Crops move the content against the 8x8 grid, so they give different but
realistic aHashes; the photo's own hash alone would be too small a sample. Photos at even positions
in sorted order form the derivation half, odd positions the held-out half, so that a photo and its
crops never fall on both sides.

Prints: the sample sizes, the greedy permutation for m = 2, 4, 8 (paste them into guard/bands.py),
then a markdown table of held-out candidates per query (the sum of the probed buckets' sizes, the
query itself left out) for the contiguous, a seeded random and the greedy layout at m = 4 and 8.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path

import numpy as np
from machine import DEFAULT_PHOTOS, photos_folder  # bench/machine.py
from PIL import Image

from guard import hash_bytes
from guard.bands import HASH_BITS, BandLayout

CROPS = 16
SCALES = (1.0, 0.75, 0.5)
JPEG_QUALITY = 85
DERIVED_COUNTS = (2, 4, 8)
EVALUATED_COUNTS = (4, 8)
RADII = (0, 4, 8)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _edits(image: Image.Image, rng: np.random.Generator) -> list[bytes]:
    """The photo at two smaller scales, and CROPS random crops, each at a random scale."""
    width, height = image.size
    edits = [_jpeg(image.resize((round(width * s), round(height * s)))) for s in SCALES[1:]]
    for _ in range(CROPS):
        # Width and height fractions drawn apart: crops change the aspect ratio, as real ones do.
        crop_width = round(width * rng.uniform(0.6, 0.95))
        crop_height = round(height * rng.uniform(0.6, 0.95))
        left = int(rng.integers(0, width - crop_width + 1))
        top = int(rng.integers(0, height - crop_height + 1))
        crop = image.crop((left, top, left + crop_width, top + crop_height))
        scale = float(rng.choice(SCALES))
        if scale != 1.0:
            crop = crop.resize((round(crop_width * scale), round(crop_height * scale)))
        edits.append(_jpeg(crop))
    return edits


def photo_hashes(path: Path, seed: int) -> list[int]:
    """aHashes of a photo and its edits; low-information ones are dropped (nothing indexes them)."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    # One generator per photo: a photo's edits do not depend on which other photos are present.
    rng = np.random.default_rng([0, seed])
    hashes = [hash_bytes(blob) for blob in [data, *_edits(image, rng)]]
    return [h.ahash for h in hashes if not h.low_information]


def bit_matrix(hashes: list[int]) -> np.ndarray:
    """One row per hash, one 0/1 column per bit position (column 0 = most significant bit)."""
    shifts = np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)
    values = np.array(hashes, dtype=np.uint64)[:, None]
    return ((values >> shifts) & np.uint64(1)).astype(np.float64)


def abs_correlation(hashes: list[int]) -> np.ndarray:
    """64x64 |Pearson correlation| of the bits; a constant bit correlates with nothing (0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.abs(np.corrcoef(bit_matrix(hashes), rowvar=False))
    matrix: np.ndarray = np.nan_to_num(raw, nan=0.0)
    np.fill_diagonal(matrix, 0.0)
    return matrix


def greedy_permutation(correlation: np.ndarray, band_count: int) -> tuple[int, ...]:
    """Greedy decorrelation: most-correlated bits first, each into the least-correlated band.

    Placing the most-correlated bits while every band still has room is what separates them; the
    weakly correlated rest fills the gaps. Ties go to the lowest band: the result is deterministic.
    """
    width = HASH_BITS // band_count
    order = sorted(range(HASH_BITS), key=lambda bit: (-correlation[bit].sum(), bit))
    bands: list[list[int]] = [[] for _ in range(band_count)]
    for bit in order:
        open_bands = [i for i in range(band_count) if len(bands[i]) < width]
        best = min(open_bands, key=lambda i: (sum(correlation[bit, b] for b in bands[i]), i))
        bands[best].append(bit)
    # Bit order inside a band does not change which hashes share a bucket: sort for readability.
    return tuple(bit for band in bands for bit in sorted(band))


def within_band_correlation(correlation: np.ndarray, layout: BandLayout) -> float:
    """Summed |correlation| over the pairs of bits that share a band (what greedy minimises)."""
    return float(sum(correlation[np.ix_(band, band)].sum() / 2 for band in layout.bands))


def mean_candidates(layout: BandLayout, hashes: list[int], radius: int) -> float:
    """Mean over queries of the summed sizes of the probed buckets, leaving the query itself out."""
    stored = sorted(set(hashes))  # an index holds each hash once
    own = {value: layout.values(value) for value in stored}
    sizes = Counter((band, v) for values in own.values() for band, v in enumerate(values))
    total = 0
    for query in stored:
        for band, value in layout.probes(query, radius):
            total += sizes[band, value] - (own[query][band] == value)
    return total / len(stored)


def main(folder: str = DEFAULT_PHOTOS) -> None:
    files = sorted(Path(folder).glob("*.jpg"))
    derive: list[int] = []
    held_out: list[int] = []
    for index, path in enumerate(files):
        (derive if index % 2 == 0 else held_out).extend(photo_hashes(path, index))
    print(
        f"{len(files)} photos in {folder}: derivation half (even positions) "
        f"{len(derive)} hashes ({len(set(derive))} distinct), held-out half (odd) "
        f"{len(held_out)} hashes ({len(set(held_out))} distinct)\n"
    )

    correlation = abs_correlation(derive)
    permutations = {m: greedy_permutation(correlation, m) for m in DERIVED_COUNTS}
    for m, permutation in permutations.items():
        print(f"m={m}: {permutation}")
    print()

    layouts = {
        "contiguous": list(range(HASH_BITS)),
        "random (seed 0)": random.Random(0).sample(range(HASH_BITS), HASH_BITS),
    }
    held_out_correlation = abs_correlation(held_out)
    print(
        "Held-out half: mean candidates per query (sum of probed bucket sizes, query left out); "
        "ratio to contiguous in brackets; last column: summed within-band |correlation|.\n"
    )
    print("| m | layout | " + " | ".join(f"r={r}" for r in RADII) + " | within-band abs(corr) |")
    print("|---|---|" + "---:|" * (len(RADII) + 1))
    for m in EVALUATED_COUNTS:
        candidates = {**layouts, "greedy": list(permutations[m])}
        baseline: list[float] = []
        for name, order in candidates.items():
            layout = BandLayout.from_permutation(order, m)
            means = [mean_candidates(layout, held_out, r) for r in RADII]
            baseline = baseline or means
            cells = " | ".join(
                f"{c:.1f} ({c / b:.2f})" for c, b in zip(means, baseline, strict=True)
            )
            summed = within_band_correlation(held_out_correlation, layout)
            print(f"| {m} | {name} | {cells} | {summed:.1f} |")


if __name__ == "__main__":
    main(photos_folder(__doc__.splitlines()[0]))
