"""guard.mih on its own: HammingIndex.near against a brute-force oracle in plain Python.

The oracle compares every hash with every query by ``int.bit_count`` (no bands, no numpy): a
position is in the answer if some query is within the radius. Many random cases over radius 0..16,
band cuts of 1 to 8 bands (the mirror's own cuts among them), lists of 0, 1, a few and thousands
of hashes, clustered around a few centres, with repeats; each case on both of near's paths
(probing the bands, scanning every hash) and on the one it picks itself.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from guard.hashing import TRANSFORMS, permute
from guard.mih import HASH_BITS, MAX_WIDTH, HammingIndex, band_radii, bands_for
from guard.mirror import SEARCH_BIT_ORDER

PROBE, SCAN = float("inf"), 0.0  # scan_share that forces each path


def _oracle(hashes: list[int], queries: list[int], radius: int) -> list[int]:
    return [
        position
        for position, stored in enumerate(hashes)
        if any((stored ^ query).bit_count() <= radius for query in queries)
    ]


def _flip(value: int, rng: random.Random, bits: int) -> int:
    for position in rng.sample(range(HASH_BITS), bits):
        value ^= 1 << position
    return value


def _random_bands(rng: random.Random) -> tuple[tuple[int, ...], ...]:
    """A random cut of a random bit order into 1..8 bands of uneven widths (each <= 16 bits),
    or one of the mirror's own cuts."""
    if rng.random() < 0.4:  # the mirror's cuts, or 3 wide bands (large tables: few cases)
        choice = rng.choice([10, 10, 10_000, 10_000, 0])
        if not choice:
            order = SEARCH_BIT_ORDER
            return (tuple(order[:22]), tuple(order[22:43]), tuple(order[43:]))
        return bands_for(choice, SEARCH_BIT_ORDER)
    order = rng.sample(range(HASH_BITS), HASH_BITS)
    count = rng.randint(4, 8)
    cuts = sorted(rng.sample(range(1, HASH_BITS), count - 1))
    bands = [tuple(order[a:b]) for a, b in zip([0, *cuts], [*cuts, HASH_BITS], strict=True)]
    if max(len(b) for b in bands) > 16:  # keep tables and probe balls small
        return bands_for(10_000, tuple(order))
    return tuple(bands)


def _list(rng: random.Random, size: int, centres: list[int], flips: int) -> list[int]:
    """Half near a centre, a tenth repeats of earlier hashes, the rest uniform."""
    hashes: list[int] = []
    for _ in range(size):
        kind = rng.random()
        if kind < 0.5:
            hashes.append(_flip(rng.choice(centres), rng, rng.randint(0, flips)))
        elif kind < 0.6 and hashes:
            hashes.append(rng.choice(hashes))
        else:
            hashes.append(rng.getrandbits(HASH_BITS))
    return hashes


def test_near_equals_the_brute_force_oracle_over_many_random_cases() -> None:
    rng = random.Random(20261207)
    found = 0
    for case in range(300):
        bands = _random_bands(rng)
        radius = rng.randint(0, 16)
        centres = [rng.getrandbits(HASH_BITS) for _ in range(rng.randint(1, 5))]
        size = rng.choice([0, 1, 2, 5, 40, 400, 3000])
        hashes = _list(rng, size, centres, radius + 4)
        queries = [
            _flip(rng.choice(centres), rng, rng.randint(0, radius + 3))
            for _ in range(rng.randint(1, 8))
        ]
        expected = _oracle(hashes, queries, radius)
        wanted = np.array(queries, dtype=np.uint64)
        index = HammingIndex(np.array(hashes, dtype=np.uint64), bands)
        for share in (index.scan_share, PROBE, SCAN):
            index.scan_share = share
            got = index.near(wanted, radius)
            assert got.dtype == np.intp
            assert got.tolist() == expected, (case, share, radius, [len(b) for b in bands])
            if share is PROBE and size:
                assert index.candidates(wanted, radius) >= len(expected)
        found += bool(expected)
    assert found > 100, found  # many cases had an answer to get right, not just nothing


def test_it_probes_a_spread_list_and_scans_a_crowded_one() -> None:
    """The path follows the probed runs' size: a few hashes per run in a list of uniform hashes,
    most of the list in them when it is crowded around the query."""
    rng = np.random.default_rng(5)
    spread = rng.integers(0, 2**64, 100_000, dtype=np.uint64)
    query = np.array([int(spread[0])], dtype=np.uint64)
    index = HammingIndex(spread, bands_for(len(spread), SEARCH_BIT_ORDER))
    assert not index.scans(query, 8) and index.candidates(query, 8) < 1000
    assert index.near(query, 8).tolist() == [0]
    crowded = spread.copy()
    crowded[: len(crowded) // 2] = int(query[0]) ^ rng.integers(0, 2**8, 50_000, dtype=np.uint64)
    index = HammingIndex(crowded, bands_for(len(crowded), SEARCH_BIT_ORDER))
    assert index.scans(query, 8) and index.candidates(query, 8) == len(crowded)
    assert len(index.near(query, 8)) == 50_000


def test_the_expected_candidates_of_uniform_hashes_and_giving_up_on_a_crowd() -> None:
    """expected_candidates is what uniform hashes test on average (within a few percent over
    many queries); a lookup given a bound gives up (None) only where its probes exceed it."""
    rng = np.random.default_rng(6)
    spread = rng.integers(0, 2**64, 200_000, dtype=np.uint64)
    index = HammingIndex(spread, bands_for(len(spread), SEARCH_BIT_ORDER))
    queries = rng.integers(0, 2**64, 400, dtype=np.uint64)
    for radius in (4, 8, 12):
        tested = np.mean([index.candidates(queries[i : i + 1], radius) for i in range(400)])
        expected = index.expected_candidates(1, radius)
        assert abs(tested - expected) < 0.05 * expected, (radius, tested, expected)
        assert index.expected_candidates(8, radius) == 8 * expected
    assert index.probes(8, 12) == 8 * (697 + 3 * 137)  # 4 bands of 16 bits: radii 3, 2, 2, 2
    query = queries[:1]
    bound = 2 * index.expected_candidates(1, 12)
    assert index.near(query, 12, give_up_above=bound) is not None
    crowded = spread.copy()
    crowded[:20_000] = int(query[0]) ^ rng.integers(0, 2**10, 20_000, dtype=np.uint64)
    for share in (1.0, None):  # probes however many, or scans as it does by default
        index = HammingIndex(crowded, bands_for(len(crowded), SEARCH_BIT_ORDER), share)
        assert index.scans(query, 12) is (share is None)
        assert index.near(query, 12, give_up_above=bound) is None
        assert len(index.near(query, 12)) >= 20_000


@pytest.mark.parametrize("share", [PROBE, SCAN])
def test_the_real_query_on_a_crowded_list(share: float) -> None:
    """Radius 12 over the 8 flips/rotations of one hash, on a list crowded around it and its
    mirror image (as crops of one photo are), with repeats."""
    rng = random.Random(12)
    query = rng.getrandbits(HASH_BITS)
    variants = [permute(query, name) for name in TRANSFORMS]
    centres = [query, permute(query, "flip_left_right")]
    hashes = _list(rng, 6000, centres, 20)
    index = HammingIndex(
        np.array(hashes, dtype=np.uint64), bands_for(len(hashes), SEARCH_BIT_ORDER), share
    )
    got = index.near(np.array(variants, dtype=np.uint64), 12).tolist()
    expected = _oracle(hashes, variants, 12)
    assert got == expected
    assert 200 < len(expected) < len(hashes)  # crowded, but not everything


@pytest.mark.parametrize("share", [PROBE, SCAN])
def test_hashes_exactly_at_the_radius_are_in_and_one_bit_further_out(share: float) -> None:
    rng = random.Random(7)
    query = rng.getrandbits(HASH_BITS)
    hashes = [_flip(query, rng, d) for d in range(0, 18) for _ in range(10)]
    hashes += [rng.getrandbits(HASH_BITS) for _ in range(500)]
    index = HammingIndex(
        np.array(hashes, dtype=np.uint64), bands_for(10_000, SEARCH_BIT_ORDER), share
    )
    for radius in range(17):
        got = index.near(np.array([query], dtype=np.uint64), radius).tolist()
        assert got == _oracle(hashes, [query], radius)
        distances = {(hashes[p] ^ query).bit_count() for p in got}
        assert distances >= set(range(radius + 1)) and max(distances) <= radius


def test_no_queries_or_no_hashes_find_nothing() -> None:
    bands = bands_for(10, SEARCH_BIT_ORDER)
    empty = HammingIndex(np.empty(0, dtype=np.uint64), bands)
    assert empty.near(np.array([1], dtype=np.uint64), 12).tolist() == []
    assert empty.candidates(np.array([1], dtype=np.uint64), 12) == 0
    assert not empty.scans(np.array([1], dtype=np.uint64), 12)
    some = HammingIndex(np.array([1, 2, 3], dtype=np.uint64), bands)
    assert some.near(np.empty(0, dtype=np.uint64), 12).tolist() == []
    assert some.near(np.array([1], dtype=np.uint64), 1).tolist() == [0, 2]


def test_bands_grow_with_the_list_and_cover_every_bit_once() -> None:
    for size, widths in (
        (0, [8] * 8),
        (4095, [8] * 8),
        (4096, [16] * 4),
        (3_999_999, [16] * 4),
        (20_000_000, [16] * 4),
    ):
        bands = bands_for(size, SEARCH_BIT_ORDER)
        assert [len(b) for b in bands] == widths
        assert sorted(bit for band in bands for bit in band) == list(range(HASH_BITS))
    assert band_radii(4, 12) == (3, 2, 2, 2) and band_radii(3, 12) == (4, 3, 3)
    assert band_radii(8, 12) == (1, 1, 1, 1, 1, 0, 0, 0)
    assert band_radii(4, 2) == (0, 0, 0, -1)  # sum(rho + 1) = radius + 1: one band unprobed


@pytest.mark.parametrize(
    "bands",
    [
        (tuple(range(32)),),  # half the bits
        (tuple(range(32)), tuple(range(31, 64))),  # bit 31 twice
        (tuple(range(MAX_WIDTH + 1)), tuple(range(MAX_WIDTH + 1, 64))),  # a table too big
    ],
)
def test_a_cut_that_is_not_a_partition_of_narrow_bands_is_refused(
    bands: tuple[tuple[int, ...], ...],
) -> None:
    with pytest.raises(ValueError) as raised:
        HammingIndex(np.zeros(3, dtype=np.uint64), bands)
    assert str(raised.value) == f"bands must cut the 64 bits into bands of 1 to {MAX_WIDTH} bits"
