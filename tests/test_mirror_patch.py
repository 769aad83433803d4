"""A mirror with changes laid over it (guard.mirror_patch) answers exactly as a mirror loaded
afresh from the list as it is after those changes: the oracle is a new Mirror of the final
entries, over many random sequences of adds and removals, with and without a limit, across the
merge of the changes into a new mirror."""

from __future__ import annotations

import random

import numpy as np
import pytest
from test_mirror import count_routes

from guard import mirror as mirror_module
from guard import mirror_patch
from guard.bands import default_layout
from guard.mirror import Mirror, Ranked, snapshot_record
from guard.mirror_patch import PatchedMirror

LAYOUT = default_layout(4)
Record = tuple[int, int | None]


def _near(rng: random.Random, centre: int, bits: int) -> int:
    for position in rng.sample(range(64), bits):
        centre ^= 1 << position
    return centre


def _records(entries: list[Record]) -> bytes:
    return b"".join(snapshot_record(a, p) for a, p in entries)


def _mirror(entries: list[Record], version: int = 1) -> Mirror:
    return Mirror.from_snapshot(_records(entries), LAYOUT, version, "inc")


def _rows(ranked: Ranked, hashes_at: object) -> list[tuple[object, ...]]:
    """Each answer row as (entry, its query, aHash distance, pHash distance, confirmed)."""
    return [
        (
            hashes_at(int(ranked.positions[i])),  # type: ignore[operator]
            int(ranked.query[i]),
            int(ranked.distance[i]),
            int(ranked.phash_distance[i]),
            bool(ranked.confirmed[i]),
        )
        for i in range(len(ranked))
    ]


def _fresh_hashes(mirror: Mirror) -> object:
    def at(position: int) -> Record:
        has = bool(mirror.has_phash[position])
        return int(mirror.ahashes[position]), int(mirror.phashes[position]) if has else None

    return at


def _score(row: tuple[object, ...]) -> tuple[int, int, int]:
    _, _, distance, phash_distance, confirmed = row
    entry = row[0]
    assert isinstance(entry, tuple)
    tier = 0 if confirmed else (1 if entry[1] is None else 2)
    return tier, int(distance), int(phash_distance)  # type: ignore[call-overload]


def _scenario(seed: int, without_phash: float = 0.15) -> None:
    rng = random.Random(seed)
    centres = [rng.getrandbits(64) for _ in range(6)]  # clustered, as real lists are

    def new_record() -> Record:
        ahash = _near(rng, rng.choice(centres), rng.randint(0, 14))
        phash = None if rng.random() < without_phash else rng.getrandbits(64)
        return ahash, phash

    listed = list(dict.fromkeys(new_record() for _ in range(rng.randint(0, 300))))
    patched = PatchedMirror(_mirror(listed), version=1)
    version = 1
    for _ in range(rng.randint(1, 12)):
        changes: list[tuple[bytes, bytes]] = []
        for _ in range(rng.randint(1, 4)):
            if listed and rng.random() < 0.45:
                gone = rng.sample(listed, rng.randint(1, min(5, len(listed))))
                listed = [r for r in listed if r not in gone]
                changes.append((b"", _records(gone)))
            else:
                fresh = [
                    r for r in {new_record() for _ in range(rng.randint(1, 40))} if r not in listed
                ]
                listed += fresh
                changes.append((_records(fresh), b""))
            version += 1
        patched = patched.patched(changes, version)
        assert patched.version == version and len(patched) == len(listed)
        fresh_mirror = _mirror(listed, version)
        for _ in range(4):
            centre = _near(rng, rng.choice(centres), rng.randint(0, 10))
            phashes = [p for _, p in listed if p is not None]
            phash = rng.getrandbits(64)
            if phashes and rng.random() < 0.5:  # an upload whose pHash confirms an entry
                phash = _near(rng, rng.choice(phashes), rng.randint(0, 14))
            queries = [(_near(rng, centre, rng.randint(0, 3)), phash)]
            queries += [
                (rng.getrandbits(64), rng.getrandbits(64)) for _ in range(rng.randint(0, 7))
            ]
            radius, confirm = rng.choice([(8, 12), (12, 12), (12, 40), (0, 64)])
            want = _rows(fresh_mirror.rank(queries, radius, confirm), _fresh_hashes(fresh_mirror))
            got = _rows(patched.rank(queries, radius, confirm), patched.hashes_at)
            assert sorted(got, key=repr) == sorted(want, key=repr)
            assert [_score(r) for r in got] == sorted(_score(r) for r in got)
            limit = rng.randint(1, 5)
            top = _rows(patched.rank(queries, radius, confirm, limit), patched.hashes_at)
            # The best ``limit`` (any of equal score), each one of the full answer's rows.
            assert [_score(r) for r in top] == [_score(r) for r in want][:limit]
            assert all(row in want for row in top)


@pytest.mark.parametrize("seed", range(60))
def test_a_patched_mirror_answers_as_a_fresh_one(seed: int) -> None:
    _scenario(seed)


@pytest.mark.parametrize("seed", range(30))
def test_a_patched_mirror_answers_as_a_fresh_one_by_the_phash_index(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, with every limited query of a mirror whose entries all have a pHash answered
    by its pHash index (guard.mirror's way for crowded queries), a removed entry's included."""
    monkeypatch.setattr(mirror_module, "CONFIRM_INDEX_FROM", 0)
    monkeypatch.setattr(mirror_module, "ROUTE_FACTOR", 0.0)
    routed = count_routes(monkeypatch)
    _scenario(seed, without_phash=0.0)
    assert routed


@pytest.mark.parametrize("seed", range(20))
def test_merging_the_changes_into_a_new_mirror_changes_no_answer(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mirror_patch, "COMPACT_ENTRIES", 8)
    monkeypatch.setattr(mirror_patch, "COMPACT_SHARE", 0.0)
    _scenario(seed)


def test_changes_are_laid_over_the_loaded_mirror_until_they_grow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = _mirror([(1 << 40 | 7, 5), (1 << 50 | 3, None)])
    patched = PatchedMirror(base, version=1).patched([(_records([(99 << 20, 1)]), b"")], 2)
    assert patched.base is base and len(patched.added) == 1  # a delta, not a reload
    removed = patched.patched([(b"", _records([(1 << 40 | 7, 5)]))], 3)
    assert removed.base is base and bool(removed.removed[0]) and len(removed) == 2
    monkeypatch.setattr(mirror_patch, "COMPACT_ENTRIES", 1)
    merged = removed.patched([(_records([(5 << 30, 2)]), b"")], 4)
    assert merged.base is not base and len(merged.added) == 0
    assert sorted(int(a) for a in merged.base.ahashes) == sorted([1 << 50 | 3, 99 << 20, 5 << 30])
    assert merged.base.version == 4 and merged.incarnation == "inc"
    assert np.array_equal(merged.removed, np.zeros(3, dtype=bool))
