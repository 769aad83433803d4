"""The pure hash functions: bit order, conversions, permutations, pHash definition."""

from __future__ import annotations

import random

import numpy as np
import pytest

from guard import (
    InvalidHash,
    from_hex,
    from_signed,
    hamming,
    is_low_information,
    permute,
    to_hex,
    to_signed,
)
from guard.hashing import (
    TRANSFORMS,
    _all_variants,
    ahash_of_cells,
    bits_to_int,
    int_to_bits,
    low_frequencies,
    phash_of_coefficients,
    transform_coefficients,
)

RNG = random.Random(20261126)
RANDOM_HASHES = [RNG.getrandbits(64) for _ in range(2000)] + [0, 1, 2**63 - 1, 2**63, 2**64 - 1]


def test_top_left_cell_is_the_most_significant_bit() -> None:
    cells = np.zeros((8, 8))
    cells[0, 0] = 255
    assert ahash_of_cells(cells) == 1 << 63
    cells = np.zeros((8, 8))
    cells[0, 1] = 255  # row-major: the next cell along the top row is the next bit
    assert ahash_of_cells(cells) == 1 << 62
    cells = np.zeros((8, 8))
    cells[7, 7] = 255
    assert ahash_of_cells(cells) == 1


def test_cells_are_rounded_to_whole_grey_levels() -> None:
    cells = np.full((8, 8), 100.0)
    cells[0, 0] = 100.4  # float noise: rounds to the same level as the rest, so no bit
    assert ahash_of_cells(cells) == 0
    cells[0, 0] = 100.6
    assert ahash_of_cells(cells) == 1 << 63


def test_bit_is_strictly_above_the_mean() -> None:
    cells = np.full((8, 8), 10.0)
    assert ahash_of_cells(cells) == 0  # flat: no cell is above the mean
    cells[:4] = 20.0
    assert to_hex(ahash_of_cells(cells)) == "ffffffff00000000"


@pytest.mark.parametrize("value", RANDOM_HASHES[:200])
def test_bits_round_trip(value: int) -> None:
    assert bits_to_int(int_to_bits(value)) == value


def test_hex_round_trip_and_format() -> None:
    for value in RANDOM_HASHES:
        text = to_hex(value)
        assert len(text) == 16 and text == text.lower()
        assert from_hex(text) == value
        assert from_hex(text.upper()) == value
    assert to_hex(5) == "0000000000000005"


def test_signed_round_trip_and_range() -> None:
    for value in RANDOM_HASHES:
        signed = to_signed(value)
        assert -(2**63) <= signed < 2**63
        assert from_signed(signed) == value
    assert to_signed(2**64 - 1) == -1
    assert to_signed(2**63) == -(2**63)
    assert to_signed(2**63 - 1) == 2**63 - 1


@pytest.mark.parametrize(
    "bad", ["", "123", "0" * 17, "g" * 16, "0x00000000000000", "12345678 9abcdef"]
)
def test_from_hex_rejects_malformed_text(bad: str) -> None:
    with pytest.raises(InvalidHash, match="16 hex digits"):
        from_hex(bad)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True])
def test_out_of_range_hashes_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidHash):
        to_hex(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidHash):
        to_signed(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-(2**63) - 1, 2**63])
def test_from_signed_rejects_out_of_range(bad: int) -> None:
    with pytest.raises(InvalidHash):
        from_signed(bad)


def test_hamming_matches_a_bit_by_bit_count() -> None:
    for a, b in zip(RANDOM_HASHES[:300], RANDOM_HASHES[300:600], strict=True):
        assert hamming(a, b) == sum(((a >> i) & 1) != ((b >> i) & 1) for i in range(64))


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_permutation_equals_hash_of_transformed_cells(transform: str) -> None:
    rng = np.random.default_rng(7)
    flips = {
        "identity": lambda g: g,
        "flip_left_right": np.fliplr,
        "flip_top_bottom": np.flipud,
        "rotate_180": lambda g: np.rot90(g, 2),
        "transpose": lambda g: g.T,
        "rotate_90": lambda g: np.rot90(g, 1),
        "rotate_270": lambda g: np.rot90(g, -1),
        "transverse": lambda g: np.rot90(g, 2).T,
    }
    for _ in range(200):
        cells = rng.random((8, 8)) * 255
        expected = ahash_of_cells(flips[transform](cells))
        assert permute(ahash_of_cells(cells), transform) == expected  # type: ignore[arg-type]


def test_permutations_form_the_dihedral_group() -> None:
    value = RANDOM_HASHES[0]
    variants = {permute(value, name) for name in TRANSFORMS}  # type: ignore[arg-type]
    assert len(variants) == 8  # a random hash has no symmetry
    for name in ("flip_left_right", "flip_top_bottom", "transpose", "transverse", "rotate_180"):
        assert permute(permute(value, name), name) == value  # type: ignore[arg-type]
    quarter = permute(value, "rotate_90")
    assert permute(permute(permute(quarter, "rotate_90"), "rotate_90"), "rotate_90") == value
    assert permute(permute(value, "rotate_90"), "rotate_270") == value
    for name in TRANSFORMS:
        assert permute(value, name).bit_count() == value.bit_count()  # type: ignore[arg-type]


def _scipy_free_reference_dct(block: np.ndarray) -> np.ndarray:
    """Textbook unnormalised 2-D DCT-II by explicit sums (what scipy.fftpack.dct computes)."""
    n = block.shape[0]
    out = np.zeros((8, 8))
    x = np.arange(n)
    for k in range(8):
        for m in range(8):
            basis = np.outer(
                np.cos(np.pi * k * (2 * x + 1) / (2 * n)), np.cos(np.pi * m * (2 * x + 1) / (2 * n))
            )
            out[k, m] = 4 * (block * basis).sum()
    return out


def test_phash_uses_the_unnormalised_dct_and_the_median() -> None:
    rng = np.random.default_rng(3)
    detail = rng.integers(0, 256, (32, 32)).astype(np.float64)
    coefficients = low_frequencies(detail)
    np.testing.assert_allclose(
        coefficients, _scipy_free_reference_dct(detail), rtol=1e-9, atol=1e-6
    )
    bits = int_to_bits(phash_of_coefficients(coefficients))
    assert bits.sum() == 32  # exactly half the coefficients are above their median
    assert np.array_equal(bits, (coefficients > np.median(coefficients)).ravel())


@pytest.mark.parametrize("transform", list(TRANSFORMS))
def test_coefficient_transform_equals_dct_of_transformed_image(transform: str) -> None:
    rng = np.random.default_rng(11)
    detail = rng.random((32, 32)) * 255
    grids = {
        "identity": detail,
        "flip_left_right": np.fliplr(detail),
        "flip_top_bottom": np.flipud(detail),
        "rotate_180": np.rot90(detail, 2),
        "transpose": detail.T,
        "rotate_90": np.rot90(detail, 1),
        "rotate_270": np.rot90(detail, -1),
        "transverse": np.rot90(detail, 2).T,
    }
    expected = low_frequencies(np.ascontiguousarray(grids[transform]))
    actual = transform_coefficients(low_frequencies(detail), transform)  # type: ignore[arg-type]
    np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_all_variants_at_once_equal_each_variant_computed_alone() -> None:
    """FrameHash.variants() computes the 8 variants in one numpy pass: bit for bit what
    permute() and phash_of_coefficients(transform_coefficients()) give one at a time, on random
    hashes and on coefficient blocks with ties at the median (whole numbers, repeated values)."""
    rng = np.random.default_rng(5)
    for case in range(3000):
        ahash = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        coefficients = rng.normal(size=(8, 8)) * 50
        if case % 3 == 0:
            coefficients = np.round(coefficients / 20)  # many equal values, some at the median
        expected = [
            (
                permute(ahash, name),
                phash_of_coefficients(transform_coefficients(coefficients, name)),
            )
            for name in TRANSFORMS
        ]
        assert _all_variants(ahash, coefficients) == expected


@pytest.mark.parametrize(
    ("value", "low"),
    [
        (0, True),
        (1, True),
        (0b111, True),
        (0b1111, False),
        (2**64 - 1, True),
        (0xFFFFFFFF00000000, False),
        (0xFFFFFFFFFFFFFFF8, True),
        (0xFFFFFFFFFFFFFFF0, False),
        (0x0F0F0F0F0F0F0F0F, False),
    ],
)
def test_low_information_hashes(value: int, low: bool) -> None:
    assert is_low_information(value) is low
