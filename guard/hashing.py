"""guard-ahash v1: the hashes, their dihedral variants, and their spellings.

The functions on pixels and integers are pure (numpy only). :func:`hash_bytes` and
:func:`hash_file` put :mod:`guard.images` in front of them. A hash is a plain ``int`` in
``[0, 2**64)``: bit 63 is the top-left cell of the 8x8 grid, rows run left to right, top to bottom,
so the 16-digit hex spelling (:mod:`guard.spelling`) is exactly imagehash's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from guard.errors import FileTooLarge
from guard.images import AHASH_SIZE, PHASH_SIZE, SmallImage, normalise
from guard.spelling import HASH_BITS as HASH_BITS
from guard.spelling import from_hex as from_hex
from guard.spelling import from_signed as from_signed
from guard.spelling import hamming as hamming
from guard.spelling import to_hex as to_hex
from guard.spelling import to_signed as to_signed
from guard.types import DEFAULT_LIMITS, ImageLimits, Transform

HASH_VERSION = "guard-ahash-v1"

# Below this contrast between the darkest and brightest of the 64 cells (grey levels), which
# cells are "above the mean" is decided by noise. Below LOW_INFORMATION_BITS set bits (or above
# 64 minus that), a hash says little more than "flat".
LOW_CONTRAST = 8
LOW_INFORMATION_BITS = 4
# Smaller content than this (after trimming) is upsampled into the grid: no evidence either.
MIN_CONTENT_SIDE = AHASH_SIZE

# Each dihedral transform as (transpose, then flip rows, then flip columns). Names and directions
# follow Pillow's Image.Transpose (rotate_90 is counter-clockwise), so
# ``variants()["rotate_90"]`` is the hash of ``image.transpose(Image.Transpose.ROTATE_90)``.
TRANSFORMS: dict[Transform, tuple[bool, bool, bool]] = {
    "identity": (False, False, False),
    "flip_left_right": (False, False, True),
    "flip_top_bottom": (False, True, False),
    "rotate_180": (False, True, True),
    "transpose": (True, False, False),
    "rotate_90": (True, True, False),
    "rotate_270": (True, False, True),
    "transverse": (True, True, True),
}


def _apply(grid: np.ndarray, transform: Transform) -> np.ndarray:
    transpose, flip_rows, flip_columns = TRANSFORMS[transform]
    if transpose:
        grid = grid.T
    if flip_rows:
        grid = grid[::-1, :]
    if flip_columns:
        grid = grid[:, ::-1]
    return grid


# new_bits = old_bits[_PERMUTATIONS[t]] for bits in row-major order (index 0 = top-left).
_PERMUTATIONS: dict[Transform, np.ndarray] = {
    name: _apply(np.arange(HASH_BITS).reshape(AHASH_SIZE, AHASH_SIZE), name).ravel()
    for name in TRANSFORMS
}
# A DCT-II coefficient of order k changes sign when its axis is mirrored: (-1)**k.
_PARITY = np.where(np.arange(AHASH_SIZE) % 2 == 0, 1.0, -1.0)


# All 8 transforms stacked, in TRANSFORMS order: one numpy call computes every variant (the
# middleware needs all of them per upload; one transform at a time cost 0.3 ms).
_PERMUTATION_STACK = np.stack([_PERMUTATIONS[name] for name in TRANSFORMS])


def bits_to_int(bits: np.ndarray) -> int:
    """Pack 64 booleans, row-major with the first as the most significant bit, into an int."""
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes(), "big")


def int_to_bits(value: int) -> np.ndarray:
    """The inverse of :func:`bits_to_int`: 64 booleans, most significant first."""
    return np.unpackbits(np.frombuffer(value.to_bytes(8, "big"), dtype=np.uint8)).astype(bool)


def grey_levels(cells: np.ndarray) -> np.ndarray:
    """Cells rounded to whole grey levels, as an 8-bit image holds them.

    Float noise a millionth of a level wide must not decide a bit (flat images), and imagehash's
    cells are 8-bit: rounding brings guard within a bit of it.
    """
    return np.rint(np.asarray(cells, dtype=np.float64))


def ahash_of_cells(cells: np.ndarray) -> int:
    """aHash of an 8x8 grey grid: cells rounded to whole grey levels, bit = cell > their mean."""
    values = grey_levels(cells)
    return bits_to_int(values > values.mean())


def _dct_matrix(size: int) -> np.ndarray:
    # Unnormalised DCT-II, as scipy.fftpack.dct(type=2, norm=None): y[k] = 2 sum x[n] cos(...)
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


_DCT = _dct_matrix(PHASH_SIZE)[:AHASH_SIZE]


def low_frequencies(detail: np.ndarray) -> np.ndarray:
    """The 8x8 lowest-frequency DCT-II coefficients of a 32x32 grey image."""
    coefficients: np.ndarray = _DCT @ np.asarray(detail, dtype=np.float64) @ _DCT.T
    return coefficients


def phash_of_coefficients(coefficients: np.ndarray) -> int:
    """pHash bits: low-frequency coefficient > their median (imagehash.phash's definition)."""
    return bits_to_int(coefficients > np.median(coefficients))


def permute(ahash: int, transform: Transform) -> int:
    """The aHash of the transformed image, from the aHash alone (an exact bit permutation)."""
    return bits_to_int(int_to_bits(ahash)[_PERMUTATIONS[transform]])


def transform_coefficients(coefficients: np.ndarray, transform: Transform) -> np.ndarray:
    """The low-frequency DCT block of the transformed image: a transpose and sign changes."""
    transpose, flip_rows, flip_columns = TRANSFORMS[transform]
    if transpose:
        coefficients = coefficients.T
    if flip_rows:
        coefficients = coefficients * _PARITY[:, None]
    if flip_columns:
        coefficients = coefficients * _PARITY[None, :]
    return coefficients


# transform_coefficients as one gather per transform: where each of the transformed block's 64
# coefficients comes from (row-major index into the original's), and its sign.
_BLOCK = np.arange(HASH_BITS, dtype=np.float64).reshape(AHASH_SIZE, AHASH_SIZE)
_COEFFICIENT_SOURCES = np.stack(
    [np.abs(transform_coefficients(_BLOCK, name)).ravel().astype(np.intp) for name in TRANSFORMS]
)
_COEFFICIENT_SIGNS = np.stack(
    [transform_coefficients(np.ones_like(_BLOCK), name).ravel() for name in TRANSFORMS]
)


def is_low_information(ahash: int) -> bool:
    """True for aHashes that carry no evidence: (nearly) all bits equal, as flat images give."""
    ones = ahash.bit_count()
    return ones < LOW_INFORMATION_BITS or ones > HASH_BITS - LOW_INFORMATION_BITS


@dataclass(frozen=True)
class FrameHash:
    """The hashes of one (frame of an) image."""

    ahash: int
    phash: int
    low_information: bool
    frame: int  # index of the frame in the file (0 for still images)
    _coefficients: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def of(cls, small: SmallImage) -> FrameHash:
        cells = grey_levels(small.cells)
        coefficients = low_frequencies(small.detail)
        ahash = ahash_of_cells(cells)
        flat = float(cells.max() - cells.min()) < LOW_CONTRAST
        tiny = min(small.content_size) < MIN_CONTENT_SIDE
        return cls(
            ahash=ahash,
            phash=phash_of_coefficients(coefficients),
            low_information=flat or tiny or is_low_information(ahash),
            frame=small.frame,
            _coefficients=coefficients,
        )

    def variant(self, transform: Transform) -> tuple[int, int]:
        """(aHash, pHash) of the image after ``transform``, without decoding it again."""
        if transform == "identity":
            return self.ahash, self.phash
        return self.variants()[transform]

    def variants(self) -> dict[Transform, tuple[int, int]]:
        """All 8 dihedral variants, ``"identity"`` first. Computed once and kept, so the
        middleware can compute them in its hashing thread, off the event loop."""
        cached: dict[Transform, tuple[int, int]] | None = self.__dict__.get("_variants")
        if cached is None:
            every = _all_variants(self.ahash, self._coefficients)
            cached = dict(zip(TRANSFORMS, every, strict=True))
            object.__setattr__(self, "_variants", cached)  # a cache, not a field: still frozen
        return cached


def _all_variants(ahash: int, coefficients: np.ndarray) -> list[tuple[int, int]]:
    """(aHash, pHash) of every dihedral variant, in TRANSFORMS order: :func:`permute` and
    :func:`phash_of_coefficients` of :func:`transform_coefficients`, bit for bit, all 8 at once
    (each row's median is of the same 64 values as the one-at-a-time path's)."""
    ahash_bits = int_to_bits(ahash)[_PERMUTATION_STACK]
    moved = np.asarray(coefficients, dtype=np.float64).ravel()[_COEFFICIENT_SOURCES]
    moved *= _COEFFICIENT_SIGNS
    phash_bits = moved > np.median(moved, axis=1, keepdims=True)
    ahashes = np.packbits(ahash_bits, axis=1).view(">u8").ravel().tolist()
    phashes = np.packbits(phash_bits, axis=1).view(">u8").ravel().tolist()
    return list(zip(ahashes, phashes, strict=True))


@dataclass(frozen=True)
class ImageHashes:
    """The hashes of one file: one :class:`FrameHash` per distinct hashed frame.

    ``ahash``/``phash``/``low_information`` describe the primary frame: the first frame that is
    not low-information (so a blank first frame cannot hide an animation), else the first.
    """

    frames: tuple[FrameHash, ...]

    @property
    def primary(self) -> FrameHash:
        return next((f for f in self.frames if not f.low_information), self.frames[0])

    @property
    def ahash(self) -> int:
        return self.primary.ahash

    @property
    def phash(self) -> int:
        return self.primary.phash

    @property
    def low_information(self) -> bool:
        """True when every frame is low-information: nothing here to match on."""
        return all(f.low_information for f in self.frames)


def hash_bytes(
    data: bytes, limits: ImageLimits = DEFAULT_LIMITS, *, trim: bool = True
) -> ImageHashes:
    """Hash an image held in memory. Raises a :class:`guard.errors.ImageError` on bad input.

    Every frame of an animation is hashed (within ``limits``' frame budget, else TooManyFrames);
    each distinct (aHash, pHash) is returned once, with the index of its first frame, so a still
    picture stored as 300 frames costs one lookup. ``trim=False`` skips border trimming, for
    measuring what it does; lists use the default.
    """
    frames: list[FrameHash] = []
    for small in normalise(data, limits, trim=trim):
        frame = FrameHash.of(small)
        if all((frame.ahash, frame.phash) != (f.ahash, f.phash) for f in frames):
            frames.append(frame)
    return ImageHashes(tuple(frames))


def hash_file(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> ImageHashes:
    """Hash an image file. Raises OSError if it cannot be read, ImageError if it is no usable image.

    The size is checked before reading (and the read is bounded, should the file grow meanwhile):
    a huge file in a blocklist folder costs one ``fstat``, not its size in memory.
    """
    cap = limits.max_file_bytes
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        data = stream.read(cap + 1) if size <= cap else b""
        if size > cap or len(data) > cap:
            raise FileTooLarge(
                f"file is {max(size, len(data))} bytes, over the limit max_file_bytes={cap}"
            )
        return hash_bytes(data, limits)
