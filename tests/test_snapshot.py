"""The snapshot less its tombstones (guard.store.snapshot.live_records): pure, against a
brute-force multiset oracle."""

from __future__ import annotations

import random

import pytest

from guard.mirror import snapshot_record
from guard.store.snapshot import live_records, needs_compacting


def oracle(records: list[bytes], tombstones: list[bytes]) -> bytes:
    """Each tombstone takes the first record equal to it; one that matches none is ignored."""
    left = list(records)
    for dead in tombstones:
        if dead in left:
            left.remove(dead)
    return b"".join(left)


@pytest.mark.parametrize("seed", range(40))
def test_live_records_match_the_oracle(seed: int) -> None:
    rng = random.Random(seed)
    ahashes = [rng.getrandbits(64) for _ in range(rng.randint(1, 30))]
    # Few distinct aHashes, repeated pHashes: duplicates and shared aHashes on purpose.
    records = [
        snapshot_record(rng.choice(ahashes), rng.choice([None, 1, 2, rng.getrandbits(64)]))
        for _ in range(rng.randint(0, 80))
    ]
    tombstones = rng.sample(records, rng.randint(0, len(records)))
    tombstones += [snapshot_record(rng.getrandbits(64), 3) for _ in range(rng.randint(0, 3))]
    rng.shuffle(tombstones)
    got = live_records(b"".join(records), b"".join(tombstones))
    assert got == oracle(records, tombstones)


def test_torn_input_is_refused_and_the_threshold_is_a_sixteenth() -> None:
    with pytest.raises(ValueError, match="whole 17-byte records"):
        live_records(b"x" * 18, b"")
    with pytest.raises(ValueError, match="whole 17-byte records"):
        live_records(b"x" * 17, b"y")
    assert not needs_compacting(16 * 17 * 10, 17 * 10)
    assert needs_compacting(16 * 17 * 10, 17 * 11)
    assert not needs_compacting(0, 0)
