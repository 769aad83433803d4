"""No false negatives: every store lookup equals a brute-force scan.

Thousands of queries, radii 0..12, band counts 2, 4 and 8, uniform and real-photo hashes, with and
without dihedral variants; through the Redis band index and through the worker-local mirror (with
writes in between that make it stale); against a real Redis server and against fakeredis.
"""

from __future__ import annotations

import random

import fakeredis
import numpy as np
import pytest
from conftest import LOCAL_PHOTOS, encode, photo, run

from guard import hash_bytes
from guard.hashing import TRANSFORMS, FrameHash, hamming, permute, phash_of_coefficients
from guard.store import Entry, MirrorSettings, Store

QUERIES_PER_RADIUS = 80


def _real_photo_hashes() -> list[int]:
    """aHashes of real photos and of crops of them: correlated, as real lists are."""
    rng = random.Random(1)
    hashes = []
    for name in LOCAL_PHOTOS:
        image = photo(name)
        for _ in range(12):
            width, height = image.size
            left, top = rng.randrange(width // 5), rng.randrange(height // 5)
            crop = image.crop((left, top, left + int(width * 0.8), top + int(height * 0.8)))
            hashes.append(hash_bytes(encode(crop, "JPEG", quality=rng.randint(40, 95))).ahash)
    return hashes


def _flip(value: int, rng: random.Random, bits: int) -> int:
    for position in rng.sample(range(64), bits):
        value ^= 1 << position
    return value


def _frame(ahash: int) -> FrameHash:
    coefficients = np.random.default_rng(ahash % 1000).normal(size=(8, 8))
    return FrameHash(ahash, phash_of_coefficients(coefficients), False, 0, coefficients)


def _oracle(stored: set[int], query: int, radius: int, dihedral: bool) -> set[int]:
    variants = [permute(query, t) for t in TRANSFORMS] if dihedral else [query]
    return {h for h in stored if min(hamming(h, v) for v in variants) <= radius}


@pytest.mark.parametrize("path", ["index", "mirror"])
@pytest.mark.parametrize("backend", ["redis", "fakeredis"])
def test_lookup_equals_brute_force(backend: str, path: str, request: pytest.FixtureRequest) -> None:
    mirror = path == "mirror"
    settings = MirrorSettings(retry_seconds=0) if mirror else None
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        make = lambda: Store.from_url(url, socket_timeout=10, mirror=settings)
    else:
        server = fakeredis.FakeServer()
        make = lambda: Store(fakeredis.FakeAsyncRedis(server=server), mirror=settings)
    rng = random.Random(backend)
    uniform = [rng.getrandbits(64) for _ in range(3000)]
    real = _real_photo_hashes()
    near = [_flip(h, rng, rng.randint(1, 8)) for h in rng.sample(uniform, 200) + real]
    stored = {h for h in uniform + real + near if 4 <= h.bit_count() <= 60}
    counts = {"queries": 0, "with_matches": 0, "mirrored": 0}

    async def body() -> None:
        async with make() as store:
            for bands in (2, 4, 8):
                name = f"oracle{bands}"
                await store.add(name, [Entry(h, 0) for h in stored], bands=bands)
                if mirror:
                    assert await store.refresh_mirror(name) is not None
                for radius in range(13 if bands > 2 else 7):
                    if mirror and radius % 3 == 2:
                        # A write makes the mirror stale: the next lookups must still be exact.
                        extra = _flip(rng.choice(real), rng, 2)
                        if 4 <= extra.bit_count() <= 60 and extra not in stored:
                            await store.add(name, [Entry(extra, 0)])
                            stored.add(extra)
                        gone = rng.choice(sorted(stored))
                        assert await store.remove(name, gone) == 1
                        stored.discard(gone)
                    for i in range(QUERIES_PER_RADIUS):
                        base = rng.choice(real) if i % 2 else rng.choice(sorted(stored))
                        query = _flip(base, rng, rng.randint(0, radius + 2))
                        if i % 5 == 0:
                            query = rng.getrandbits(64)
                        dihedral = i % 4 == 3 and radius <= 8
                        matches = await store.lookup(
                            name, [_frame(query)], radius=radius, dihedral=dihedral
                        )
                        expected = _oracle(stored, query, radius, dihedral)
                        assert {m.entry.ahash for m in matches} == expected, (
                            bands,
                            radius,
                            hex(query),
                        )
                        assert all(m.distance <= radius for m in matches)
                        counts["queries"] += 1
                        counts["with_matches"] += bool(expected)
                        counts["mirrored"] += name in store._mirrors
                        if mirror and i == 4:
                            # A few lookups ran on the stale mirror / while it reloads in the
                            # background; from here on the rest of this radius uses a fresh one.
                            assert await store.refresh_mirror(name) is not None

    run(body())
    if mirror:  # most lookups really went through the mirror
        assert counts["mirrored"] > counts["queries"] * 0.9, counts
    assert counts["queries"] == QUERIES_PER_RADIUS * (7 + 13 + 13)
    assert counts["with_matches"] > counts["queries"] // 2  # the oracle is not comparing empty sets
