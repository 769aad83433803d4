"""H36: hot buckets. Thousands of listed hashes that share the band values a query probes.

guard does not cap candidates (a capped lookup could only answer "unchecked"); a lookup is
bounded by the list instead: the mirror falls back to a linear scan when probing would cost
more, and the Redis index sends one SUNION of at most the whole list. Both stay exact.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from conftest import run

from guard.bands import default_layout
from guard.hashing import FrameHash, hamming, phash_of_coefficients
from guard.store import MirrorSettings, Store
from guard.types import Entry

#: Slow (lists with hot buckets of thousands of entries): not in the fast path.
pytestmark = pytest.mark.slow

HOT = 20_000


def _hot_list() -> tuple[int, list[int]]:
    """A base hash and HOT hashes that differ from it only in the bits of band 3."""
    rng = random.Random(36)
    layout = default_layout(4)
    base = rng.getrandbits(64)
    free = layout.bands[3]  # bit positions, 0 = most significant
    hashes: set[int] = set()
    while len(hashes) < HOT:
        value = base
        for bit in rng.sample(free, rng.randint(1, 12)):
            value ^= 1 << (63 - bit)
        hashes.add(value)
    return base, sorted(hashes)


def _frame(ahash: int) -> FrameHash:
    coefficients = np.random.default_rng(ahash % 997).normal(size=(8, 8))
    return FrameHash(ahash, phash_of_coefficients(coefficients), False, 0, coefficients)


@pytest.mark.parametrize("path", ["mirror", "redis index"])
def test_H36_a_query_into_hot_buckets_is_exact_and_bounded(path: str, redis_url: str) -> None:
    base, hashes = _hot_list()
    settings = MirrorSettings(retry_seconds=0) if path == "mirror" else None

    async def body() -> list[float]:
        async with Store.from_url(redis_url, socket_timeout=10, mirror=settings) as store:
            await store.add("hot", [Entry(h, None) for h in hashes])
            if settings is not None:
                assert await store.refresh_mirror("hot") is not None
            times = []
            for radius in (0, 4, 8):
                query = base ^ (1 << 63)  # one bit off the base, outside band 3's bits or not
                started = time.perf_counter()
                matches = await store.lookup("hot", [_frame(query)], radius=radius)
                times.append(time.perf_counter() - started)
                expected = {h for h in hashes if hamming(h, query) <= radius}
                assert {m.entry.ahash for m in matches} == expected
                assert len(expected) > 0 or radius == 0
                best = await store.lookup("hot", [_frame(query)], radius=radius, limit=1)
                assert len(best) == min(1, len(expected))
            if settings is not None:
                assert "hot" in store._mirrors  # answered by the mirror
            return times

    times = run(body())
    # Bounded by the list, not by a pile-up: generous for a shared machine.
    assert max(times) < 2.0, times
