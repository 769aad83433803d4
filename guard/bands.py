"""Multi-index hashing, pure: bit layouts, per-band probe radii, probe enumeration, key names.

A list with m bands cuts each 64-bit hash into m bands. For a Hamming radius r the bands get radii
rho_i >= -1 with sum(rho_i + 1) = r + 1. If a stored hash is within r of the query, the band
distances d_i add up to at most r, so at least one band has d_i <= rho_i: probing every band value
within rho_i of the query's (rho_i = -1: skip the band) finds it. No false negatives, by the
pigeonhole principle; the exact distance filter removes the false positives.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

HASH_BITS = 64
BAND_COUNTS = (1, 2, 4, 8)


@dataclass(frozen=True)
class BandLayout:
    """Which hash bits (0 = most significant = top-left cell) make up each band, in order."""

    bands: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        bits = sorted(bit for band in self.bands for bit in band)
        if bits != list(range(HASH_BITS)):
            raise ValueError("a band layout must use each of the 64 bit positions exactly once")
        if len(self.bands) not in BAND_COUNTS or len({len(b) for b in self.bands}) != 1:
            raise ValueError(f"a band layout has {BAND_COUNTS} equal bands, got {len(self.bands)}")

    @classmethod
    def from_permutation(cls, permutation: Sequence[int], band_count: int) -> BandLayout:
        """Cut a permutation of the 64 bit positions into ``band_count`` consecutive bands."""
        width = HASH_BITS // band_count
        order = tuple(permutation)
        return cls(tuple(order[i * width : (i + 1) * width] for i in range(band_count)))

    @property
    def width(self) -> int:
        return len(self.bands[0])

    def values(self, value: int) -> tuple[int, ...]:
        """The band values of a hash: each band's bits, first listed bit most significant."""
        return tuple(
            sum(
                ((value >> (HASH_BITS - 1 - bit)) & 1) << (len(band) - 1 - k)
                for k, bit in enumerate(band)
            )
            for band in self.bands
        )

    def radii(self, radius: int) -> tuple[int, ...]:
        """Per-band probe radii for a query radius (as even as possible; sum(rho + 1) = r + 1)."""
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        base, extra = divmod(radius + 1, len(self.bands))
        return tuple(base if i < extra else base - 1 for i in range(len(self.bands)))

    def probe_count(self, radius: int) -> int:
        """How many (band, value) pairs :meth:`probes` yields for one query, without them."""
        return sum(
            math.comb(self.width, k)
            for rho in self.radii(radius)
            for k in range(min(rho, self.width) + 1)
        )

    def probes(self, value: int, radius: int) -> Iterator[tuple[int, int]]:
        """Every (band index, band value) to look in so that no hash within ``radius`` is missed."""
        for index, (own, rho) in enumerate(
            zip(self.values(value), self.radii(radius), strict=True)
        ):
            for flipped in range(min(rho, self.width) + 1):
                for positions in itertools.combinations(range(self.width), flipped):
                    mask = 0
                    for position in positions:
                        mask |= 1 << position
                    yield index, own ^ mask


#: List names end up inside Redis keys and their ``{hash tag}``: no braces, colons or spaces.
LIST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
LIST_NAME_RULE = "use 1 to 64 characters from A-Z a-z 0-9 _ . -"


def is_list_name(name: object) -> bool:
    """True for names that are safe inside a Redis key and hash tag."""
    return isinstance(name, str) and LIST_NAME.fullmatch(name) is not None


def validate_list_name(name: str) -> str:
    """Return ``name`` if it is a valid list name, else raise ValueError saying the rule."""
    if not is_list_name(name):
        raise ValueError(f"invalid list name {name!r}: {LIST_NAME_RULE}")
    return name


#: The set of list names: the only key outside a list's hash-tag slot.
LISTS_KEY = "guard:lists"


def list_key(list_name: str, part: str) -> str:
    """Redis key of one part of a list. ``{list}`` is a Cluster hash tag: a whole list lives in one
    slot, so SUNION, MULTI/EXEC and Lua work on a cluster."""
    return f"guard:{{{list_name}}}:{part}"


def band_key(list_name: str, band: int, value: int) -> str:
    """Redis key of one bucket: the set of stored aHashes whose band ``band`` equals ``value``."""
    return list_key(list_name, f"b{band}:{value}")


# Default bit layouts: bands are consecutive chunks of these permutations (a band, at most 16
# bits, a line).
# Derived by bench/derive_layout.py (greedy decorrelation) from aHashes of 170 real photographs
# (the set docs/accuracy.md describes):
# each of the 170 photos plus 18 seeded edits of it (16 random crops of 60-95% a side, some scaled
# to 0.75 or 0.5, and 2 scaled-down copies; JPEG q85 in memory; low-information hashes dropped).
# Rule: photos at even positions in sorted name order (1598 hashes) form the 64x64 bit |correlation|
# matrix; bits are placed most-correlated first, each into the band with room whose bits it
# correlates with least (ties: lowest band); bits are sorted within a band (order there is moot).
# Held out (the 1436 distinct hashes of the odd photos, indexed and queried with themselves), mean
# candidates per query (summed probed bucket sizes, query left out) for r = 0 / 4 / 8:
#   m=4: contiguous 19.8 / 73.8 / 155.9, random (seed 0) 1.3 / 11.2 / 47.0,
#        greedy 1.0 / 8.4 / 34.5
#   m=8: contiguous 90.9 / 210.6 / 508.8, random (seed 0) 15.8 / 89.1 / 222.6,
#        greedy 13.8 / 64.1 / 168.5
# i.e. greedy returns 20x / 9x / 4.5x fewer candidates than contiguous (two-pixel-row) bands at m=4.
# fmt: off
DEFAULT_PERMUTATIONS: dict[int, tuple[int, ...]] = {
    2: (
         0,  2,  4,  6,  9, 11, 13, 15, 17, 19, 20, 22, 26, 29, 31, 32,  # band 0
        34, 37, 38, 39, 41, 43, 44, 46, 49, 51, 53, 56, 58, 59, 61, 63,
         1,  3,  5,  7,  8, 10, 12, 14, 16, 18, 21, 23, 24, 25, 27, 28,  # band 1
        30, 33, 35, 36, 40, 42, 45, 47, 48, 50, 52, 54, 55, 57, 60, 62,
    ),
    4: (
         4,  8, 10, 13, 15, 16, 21, 26, 28, 32, 36, 38, 42, 52, 54, 56,  # band 0
         0,  5,  7,  9, 11, 22, 25, 31, 34, 40, 44, 47, 50, 57, 61, 63,  # band 1
         2, 12, 14, 17, 19, 23, 27, 33, 37, 39, 43, 46, 49, 53, 59, 60,  # band 2
         1,  3,  6, 18, 20, 24, 29, 30, 35, 41, 45, 48, 51, 55, 58, 62,  # band 3
    ),
    8: (
         4, 10, 21, 26, 28, 45, 52, 56,  # band 0
         5, 16, 31, 33, 44, 46, 50, 62,  # band 1
         1, 12, 14, 19, 25, 39, 41, 60,  # band 2
         0,  6, 11, 24, 30, 35, 57, 63,  # band 3
         3, 20, 22, 32, 37, 42, 53, 59,  # band 4
         7, 17, 29, 38, 43, 49, 55, 61,  # band 5
         9, 15, 27, 34, 47, 48, 51, 54,  # band 6
         2,  8, 13, 18, 23, 36, 40, 58,  # band 7
    ),
}
# fmt: on


def default_layout(band_count: int) -> BandLayout:
    """The pinned decorrelating layout for ``band_count`` bands (one band needs no permutation)."""
    if band_count == 1:
        return BandLayout.from_permutation(range(HASH_BITS), 1)
    if band_count not in DEFAULT_PERMUTATIONS:
        raise ValueError(f"band_count must be one of {BAND_COUNTS}, got {band_count}")
    return BandLayout.from_permutation(DEFAULT_PERMUTATIONS[band_count], band_count)
