"""Multi-index hashing, pure: bit layouts, per-band probe radii, probe enumeration, key names.

A list with m bands cuts each 64-bit hash into m bands. For a Hamming radius r the bands get radii
rho_i >= -1 with sum(rho_i + 1) = r + 1. If a stored hash is within r of the query, the band
distances d_i add up to at most r, so at least one band has d_i <= rho_i: probing every band value
within rho_i of the query's (rho_i = -1: skip the band) finds it. No false negatives, by the
pigeonhole principle; the exact distance filter removes the false positives.
"""

from __future__ import annotations

import itertools
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

    def probes(self, value: int, radius: int) -> Iterator[tuple[int, int]]:
        """Every (band index, band value) to look in so that no hash within ``radius`` is missed."""
        for index, (own, rho) in enumerate(zip(self.values(value), self.radii(radius))):
            for flipped in range(min(rho, self.width) + 1):
                for positions in itertools.combinations(range(self.width), flipped):
                    mask = 0
                    for position in positions:
                        mask |= 1 << position
                    yield index, own ^ mask


def band_key(list_name: str, band: int, value: int) -> str:
    """Redis key of one bucket. ``{list}`` is a Cluster hash tag: a whole list lives in one slot."""
    return f"guard:{{{list_name}}}:b{band}:{value}"
