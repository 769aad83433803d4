"""guard.mirror on its own: Mirror.rank against a brute-force numpy oracle.

The oracle compares every entry with every query (no bands, no index): an entry is in the answer
if some query is within ``radius`` aHash bits; its best query is the one that confirms it (pHash
within ``confirm_radius``), then the nearest in aHash, then in pHash, then the first; entries
come best first: confirmed, then without a pHash (nothing can confirm them), then contradicted
by their pHash; ties in entry order; ``limit`` keeps the first ones.
Many random cases, over every band count, both of the search's paths (band index and linear
scan), with duplicate aHashes, entries without a pHash and queries near the entries; and the
middleware's real query (radius 12 over the 8 flips/rotations) on a crowded list. guard.mih's
own oracle test covers the search alone over more radii and band cuts. A lookup with a limit
ranks in guard.rank_compiled's loops when numba is installed: every case runs on that path
(both of its loops) and on the numpy one.
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from guard import mih, rank_compiled
from guard import mirror as mirror_module
from guard.bands import BAND_COUNTS, default_layout
from guard.hashing import TRANSFORMS, permute
from guard.mirror import RECORD_SIZE, Mirror, Ranked, snapshot_record

#: Rank in numpy, or in the compiled loops (skipped without numba: install the test extra).
PATHS = [
    "numpy",
    pytest.param(
        "compiled",
        marks=pytest.mark.skipif(not rank_compiled.AVAILABLE, reason="numba is not installed"),
    ),
]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(mirror_module, "COMPILED", request.param == "compiled")
    if request.param == "compiled":
        rank_compiled.warm(wait=True)  # a mirror only starts it: numpy ranks until it is done
    return str(request.param)


def _popcount(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.int64)


def _oracle(
    ahashes: list[int],
    phashes: list[int | None],
    queries: list[tuple[int, int]],
    radius: int,
    confirm_radius: int,
    limit: int | None,
) -> list[tuple[int, int, int, int, bool]]:
    """(position, query, distance, pHash distance, confirmed) of every entry in the answer."""
    if not ahashes or not queries:
        return []
    a = np.array(ahashes, dtype=np.uint64)
    p = np.array([h or 0 for h in phashes], dtype=np.uint64)
    has = np.array([h is not None for h in phashes])
    qa = np.array([q for q, _ in queries], dtype=np.uint64)
    qp = np.array([q for _, q in queries], dtype=np.uint64)
    distance = _popcount(a[:, None] ^ qa[None, :])  # entries x queries
    phash_distance = np.where(has[:, None], _popcount(p[:, None] ^ qp[None, :]), 0)
    # 0 confirmed, 1 no pHash, 2 contradicted by the pHash.
    tier = np.where(has[:, None], np.where(phash_distance > confirm_radius, 2, 0), 1)
    # Each (entry, query) pair's rank as one number: tier, aHash distance, pHash distance,
    # query index, in that order of importance; pairs beyond the radius never count.
    key = ((tier * 65 + distance) * 65 + phash_distance) * len(queries)
    key = key + np.arange(len(queries))[None, :]
    key = np.where(distance <= radius, key, np.iinfo(np.int64).max)
    best = key.min(axis=1)
    positions = np.flatnonzero(best < np.iinfo(np.int64).max)
    # Best first by (tier, distance, pHash distance), not by query; ties in entry order.
    positions = positions[np.lexsort((positions, best[positions] // len(queries)))][:limit]
    answer = []
    for position in positions.tolist():
        q = int(best[position] % len(queries))
        d, pd = int(distance[position, q]), int(phash_distance[position, q])
        answer.append((position, q, d, pd, bool(has[position]) and pd <= confirm_radius))
    return answer


def _as_rows(ranked: Ranked) -> list[tuple[int, int, int, int, bool]]:
    columns = (
        ranked.positions,
        ranked.query,
        ranked.distance,
        ranked.phash_distance,
        ranked.confirmed,
    )
    assert len({len(column) for column in columns}) == 1 and len(ranked) == len(ranked.positions)
    return [
        (int(pos), int(q), int(d), int(pd), bool(c))
        for pos, q, d, pd, c in zip(*columns, strict=True)
    ]


def _flip(value: int, rng: random.Random, bits: int) -> int:
    for position in rng.sample(range(64), bits):
        value ^= 1 << position
    return value


def _mirror(ahashes: list[int], phashes: list[int | None], bands: int) -> Mirror:
    return Mirror(
        np.array(ahashes, dtype=np.uint64),
        np.array([h or 0 for h in phashes], dtype=np.uint64),
        np.array([h is not None for h in phashes], dtype=bool),
        default_layout(bands),
        version=1,
    )


def _entries(
    generator: np.random.Generator, centres: list[int], size: int, flips: int
) -> list[int]:
    """``size`` aHashes: half of them up to ``flips`` bits from a centre, a tenth repeats of
    earlier ones (ties broken by position), the rest uniform."""
    if not size:
        return []
    # Per entry, a random order of the 64 bits; flip the first k of them (k in 0..flips).
    order = generator.random((size, 64)).argsort(axis=1).argsort(axis=1)
    flipped = order < generator.integers(0, flips + 1, size)[:, None]
    masks = np.packbits(flipped, axis=1).view(">u8")[:, 0].astype(np.uint64)
    near = np.array(centres, dtype=np.uint64)[generator.integers(0, len(centres), size)] ^ masks
    uniform = generator.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
    kind = generator.random(size)
    values = np.where(kind < 0.5, near, uniform)
    repeats = np.flatnonzero((kind >= 0.5) & (kind < 0.6))
    repeats = repeats[repeats > 0]
    earlier = (generator.random(len(repeats)) * repeats).astype(np.intp)
    for at, source in zip(repeats.tolist(), earlier.tolist(), strict=True):
        values[at] = values[source]
    return [int(v) for v in values]


def test_rank_equals_the_brute_force_oracle_over_many_random_cases(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    rng = random.Random(20261207)
    default_share = mih.SCAN_SHARE
    compiled_share = rank_compiled.SCAN_SHARE
    paths = {"index": 0, "scan": 0}
    compiled_paths = {"index": 0, "scan": 0}
    found = limited = unconfirmed = 0
    for case in range(600):
        bands = rng.choice(BAND_COUNTS)
        radius = rng.randint(0, 12 if bands > 1 else 4)
        confirm_radius = rng.randint(0, 24)
        centres = [rng.getrandbits(64) for _ in range(rng.randint(1, 6))]
        size = rng.choice([0, 1, 5, 40, 400, 3000])
        ahashes = _entries(np.random.default_rng(case), centres, size, radius + 3)
        phashes = [None if rng.random() < 0.3 else rng.getrandbits(64) for _ in ahashes]
        # The uploaded frames' variants: near a centre, with pHashes near some entries' own.
        queries = []
        for _ in range(rng.randint(1, 8)):
            ahash = _flip(rng.choice(centres), rng, rng.randint(0, radius + 2))
            close = [p for p in phashes if p is not None]
            phash = _flip(rng.choice(close), rng, rng.randint(0, 30)) if close else 0
            queries.append((ahash, phash if rng.random() < 0.7 else rng.getrandbits(64)))
        limit = rng.choice([None, None, 1, 3, 10])
        # The search picks probing or scanning by cost; a third of the cases force each path.
        share = rng.choice([None, float("inf"), -1.0])
        monkeypatch.setattr(mih, "SCAN_SHARE", default_share if share is None else share)
        monkeypatch.setattr(rank_compiled, "SCAN_SHARE", compiled_share if share is None else share)
        if share is not None and limit is not None:
            compiled_paths["index" if share > 0 else "scan"] += 1
        mirror = _mirror(ahashes, phashes, bands)
        expected = _oracle(ahashes, phashes, queries, radius, confirm_radius, limit)
        got = _as_rows(mirror.rank(queries, radius, confirm_radius, limit))
        assert got == expected, (case, bands, radius, confirm_radius, limit)
        if ahashes:
            paths["scan" if mirror.scans([a for a, _ in queries], radius) else "index"] += 1
        found += bool(expected)
        limited += limit is not None and len(expected) == limit
        unconfirmed += any(not row[4] for row in expected)
    # Every kind of case came up: both paths, answers found, cut by limit, not confirmed.
    assert min(paths.values()) > 100, paths
    assert min(compiled_paths.values()) > 80, compiled_paths
    assert found > 300 and limited > 50 and unconfirmed > 50, (found, limited, unconfirmed)


@pytest.mark.parametrize("limit", [None, 1, 2])
def test_the_real_query_equals_the_oracle_on_a_crowded_list(limit: int | None, path: str) -> None:
    """Radius 12, confirm radius 12, the 8 flips/rotations of an upload whose list is crowded
    around it and its mirror image (crops of one photo), some entries with close pHashes."""
    rng = random.Random(1207)
    generator = np.random.default_rng(1207)
    checked = 0
    for _ in range(12):
        ahash, phash = rng.getrandbits(64), rng.getrandbits(64)
        mirrored = permute(ahash, "flip_left_right")
        size = rng.choice([1, 3, 50, 4000])
        ahashes = _entries(generator, [ahash, mirrored], size, 18)
        phashes = [
            None if rng.random() < 0.2 else _flip(phash, rng, rng.randint(0, 40)) for _ in ahashes
        ]
        queries = [
            (permute(ahash, name), _flip(phash, rng, rng.randint(0, 3))) for name in TRANSFORMS
        ]
        mirror = _mirror(ahashes, phashes, 4)
        expected = _oracle(ahashes, phashes, queries, 12, 12, limit)
        assert _as_rows(mirror.rank(queries, 12, 12, limit)) == expected
        checked += len(expected)
    assert checked > (100 if limit is None else 8)  # the crowd was near enough to matter


def count_routes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one item per query a mirror answers by its pHash index."""
    calls: list[int] = []
    real = Mirror._rank_by_confirmation

    def counted(self: Mirror, *args: object) -> Ranked:
        calls.append(1)
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Mirror, "_rank_by_confirmation", counted)
    return calls


def test_a_crowded_query_answered_by_the_phash_index_equals_the_oracle(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Mirror.rank's other way for a crowded query (confirmed entries by the pHash index, then
    the nearest contradicted ones by the aHash index at growing radii) gives the oracle's
    answer: forced here on every list, small ones included, whenever the aHash probes would
    test anything."""
    monkeypatch.setattr(mirror_module, "CONFIRM_INDEX_FROM", 0)
    monkeypatch.setattr(mirror_module, "ROUTE_FACTOR", 0.0)
    routed = count_routes(monkeypatch)
    rng = random.Random(1208)
    generator = np.random.default_rng(1208)
    outcomes = {"confirmed only": 0, "mixed": 0, "contradicted only": 0, "nothing": 0}
    for case in range(300):
        radius = rng.randint(0, 14)
        confirm_radius = rng.randint(0, 16)
        limit = rng.choice([1, 1, 1, 2, 3, 6])
        ahash, phash = rng.getrandbits(64), rng.getrandbits(64)
        size = rng.choice([1, 20, 300, 3000])
        ahashes = _entries(generator, [ahash, permute(ahash, "rotate_90")], size, radius + 4)
        # pHashes: most far from the upload's (a crowd of unrelated photos), some near it.
        phashes: list[int | None] = [
            _flip(phash, rng, rng.randint(0, 20)) if rng.random() < 0.05 else rng.getrandbits(64)
            for _ in ahashes
        ]
        queries = [
            (permute(ahash, name), _flip(phash, rng, rng.randint(0, 2)))
            for name in rng.sample(list(TRANSFORMS), rng.randint(1, 8))
        ]
        mirror = _mirror(ahashes, phashes, rng.choice([4, 8]))
        expected = _oracle(ahashes, phashes, queries, radius, confirm_radius, limit)
        got = _as_rows(mirror.rank(queries, radius, confirm_radius, limit))
        assert got == expected, (case, radius, confirm_radius, limit)
        confirmed = sum(row[4] for row in expected)
        kind = (
            "nothing"
            if not expected
            else "confirmed only"
            if confirmed == len(expected)
            else "contradicted only"
            if not confirmed
            else "mixed"
        )
        outcomes[kind] += 1
    assert len(routed) > 250, len(routed)
    assert min(outcomes.values()) > 10, outcomes


def test_a_big_crowded_list_answers_by_the_phash_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the default settings: a mirror of CONFIRM_INDEX_FROM entries with a pHash each
    indexes their pHashes, and a query in its crowd goes that way; one entry without a pHash
    and it has no pHash index (nothing could rank that entry among the confirmed ones)."""
    generator = np.random.default_rng(1209)
    rng = random.Random(1209)
    ahash, phash = rng.getrandbits(64), rng.getrandbits(64)
    size = mirror_module.CONFIRM_INDEX_FROM
    ahashes = _entries(generator, [ahash], size, 14)
    phashes: list[int | None] = [rng.getrandbits(64) for _ in ahashes]
    ahashes[7], phashes[7] = _flip(ahash, rng, 3), _flip(phash, rng, 5)
    queries = [(permute(ahash, name), phash) for name in TRANSFORMS]
    routed = count_routes(monkeypatch)
    mirror = _mirror(ahashes, phashes, 4)
    assert mirror._confirm_index is not None
    for limit in (1, 2):
        expected = _oracle(ahashes, phashes, queries, 12, 12, limit)
        assert _as_rows(mirror.rank(queries, 12, 12, limit)) == expected
        assert expected[0][0] == 7 and expected[0][4]  # the one confirmed entry, first
    assert routed == [1, 1]
    phashes[3] = None
    assert _mirror(ahashes, phashes, 4)._confirm_index is None


@pytest.mark.parametrize("bands", BAND_COUNTS)
def test_rank_finds_every_entry_at_every_distance_up_to_the_radius(bands: int) -> None:
    """No false negatives at the edge: entries exactly radius bits away are in, radius + 1 out."""
    rng = random.Random(bands)
    query = rng.getrandbits(64)
    ahashes = [_flip(query, rng, d) for d in range(0, 14) for _ in range(20)]
    ahashes += [rng.getrandbits(64) for _ in range(2000)]
    mirror = _mirror(ahashes, [None] * len(ahashes), bands)
    for radius in range(0, 13 if bands > 1 else 5):
        got = _as_rows(mirror.rank([(query, 0)], radius, confirm_radius=0))
        assert got == _oracle(ahashes, [None] * len(ahashes), [(query, 0)], radius, 0, None)
        assert {row[2] for row in got} >= set(range(radius + 1))
        assert all(row[2] <= radius for row in got)


def test_no_query_and_no_entries_give_an_empty_answer() -> None:
    mirror = _mirror([1, 2, 3], [None, 5, 6], 4)
    for ranked in (mirror.rank([], 12, 10), _mirror([], [], 4).rank([(1, 2)], 12, 10)):
        assert len(ranked) == 0
        assert _as_rows(ranked) == []
        assert ranked.positions.dtype == np.intp and ranked.distance.dtype == np.uint8
        assert ranked.confirmed.dtype == bool
    assert len(mirror.rank([(1, 0)], 0, 0)) == 1  # the same mirror answers a real query


def test_entries_without_a_phash_are_never_confirmed_and_rank_between() -> None:
    ahash = 0x00FF00FF00FF00FF
    mirror = _mirror([ahash, ahash, ahash ^ 1, ahash ^ 3], [None, 0, None, 2**64 - 1], 4)
    ranked = mirror.rank([(ahash, 2**64 - 1)], radius=2, confirm_radius=10)
    # Entry 3's pHash confirms it (2 bits further in aHash, still first); entries 0 and 2 have
    # no pHash (unconfirmable); entry 1's pHash is 64 bits away (contradicted): last.
    assert _as_rows(ranked) == [
        (3, 0, 2, 0, True),
        (0, 0, 0, 0, False),
        (2, 0, 1, 0, False),
        (1, 0, 0, 64, False),
    ]


def test_the_best_query_confirms_before_it_is_near() -> None:
    ahash, phash = 0x0F0F0F0F0F0F0F0F, 0x3333333333333333
    mirror = _mirror([ahash], [phash], 2)
    queries = [(ahash, ~phash & (2**64 - 1)), (ahash ^ 0b111, phash ^ 1)]
    # Query 0 is nearer in aHash but its pHash is 64 bits off; query 1 confirms at 3 bits.
    assert _as_rows(mirror.rank(queries, radius=4, confirm_radius=5)) == [(0, 1, 3, 1, True)]
    assert _as_rows(mirror.rank(queries, radius=2, confirm_radius=5)) == [(0, 0, 0, 64, False)]


def test_a_snapshot_round_trips_and_a_torn_one_is_refused() -> None:
    rng = random.Random(3)
    entries = [
        (rng.getrandbits(64), None if i % 3 == 0 else rng.getrandbits(64)) for i in range(50)
    ]
    entries += [(2**64 - 1, 2**64 - 1), (0, None), (0, 0)]
    snapshot = b"".join(snapshot_record(a, p) for a, p in entries)
    assert len(snapshot) == RECORD_SIZE * len(entries) == 17 * len(entries)
    mirror = Mirror.from_snapshot(snapshot, default_layout(4), version=7, incarnation="x")
    assert (len(mirror), mirror.version, mirror.incarnation) == (len(entries), 7, "x")
    assert mirror.ahashes.tolist() == [a for a, _ in entries]
    assert mirror.phashes.tolist() == [p or 0 for _, p in entries]
    assert mirror.has_phash.tolist() == [p is not None for _, p in entries]
    with pytest.raises(ValueError) as raised:
        Mirror.from_snapshot(snapshot[:-1], default_layout(4), version=7)
    message = f"a snapshot holds whole 17-byte records, got {len(snapshot) - 1} bytes"
    assert str(raised.value) == message
    assert len(Mirror.from_snapshot(b"", default_layout(4), version=1)) == 0
