"""No false negatives: every store lookup equals a brute-force scan.

Thousands of queries, radii 0..12, band counts 2, 4 and 8, uniform and real-photo hashes, with and
without dihedral variants; through the Redis band index and through the worker-local mirror (with
writes in between that make it stale); against a real Redis server (the bundled one and, where
installed, a current Redis 7+/Valkey).

fakeredis runs the same Lua scripts (through lupa) and SUNIONs in Python, many times slower: it
keeps a small case of the same test (150 random hashes, every band count and path, radii up to 8,
ten queries each, a stale mirror) as a fast check of the scripts' logic that needs no server.
The exactness claim (no false negatives over thousands of random cases) is the real servers'
part, marked slow.
"""

from __future__ import annotations

import functools
import random
import threading

import fakeredis
import numpy as np
import pytest
import redis
from conftest import LOCAL_PHOTOS, encode, photo, run

import guard.store
from guard import hash_bytes
from guard.hashing import TRANSFORMS, FrameHash, hamming, permute, phash_of_coefficients
from guard.store import MirrorSettings, Store
from guard.types import Entry

#: Run against the bundled Redis 6.2 and, where installed, a current Redis 7+/Valkey.
pytestmark = pytest.mark.every_redis

#: Per backend: how many uniform random hashes are stored, the radii asked (with 4 and 8 bands;
#: with 2, those up to 6), and how many queries per radius.
SIZES = {
    "redis": (3000, range(13), 80),
    "current-redis": (3000, range(13), 80),
    "fakeredis": (150, (0, 3, 4, 6, 8), 10),
}


@functools.cache  # decoded, cropped and hashed once for every test here
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
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("redis", marks=pytest.mark.slow),
        pytest.param("current-redis", marks=pytest.mark.slow),
        "fakeredis",
    ],
)
def test_lookup_equals_brute_force(backend: str, path: str, request: pytest.FixtureRequest) -> None:
    mirror = path == "mirror"
    settings = MirrorSettings(retry_seconds=0) if mirror else None
    if backend in ("redis", "current-redis"):
        url = request.getfixturevalue("redis_url" if backend == "redis" else "current_redis_server")
        redis.Redis.from_url(url).flushdb()

        def make() -> Store:
            return Store.from_url(url, socket_timeout=10, mirror=settings)
    else:
        server = fakeredis.FakeServer()

        def make() -> Store:
            return Store(fakeredis.FakeAsyncRedis(server=server), mirror=settings)

    rng = random.Random(backend)
    stored_count, radii, queries_per_radius = SIZES[backend]
    uniform = [rng.getrandbits(64) for _ in range(stored_count)]
    real = _real_photo_hashes()
    near = [
        _flip(h, rng, rng.randint(1, 8)) for h in rng.sample(uniform, min(200, stored_count)) + real
    ]
    stored = {h for h in uniform + real + near if 4 <= h.bit_count() <= 60}
    counts = {"queries": 0, "with_matches": 0, "mirrored": 0}

    async def body() -> None:
        async with make() as store:
            for bands in (2, 4, 8):
                name = f"oracle{bands}"
                await store.add(name, [Entry(h, 0) for h in stored], bands=bands)
                if mirror:
                    assert await store.refresh_mirror(name) is not None
                for radius in [r for r in radii if bands > 2 or r <= 6]:
                    if mirror and radius % 3 == 2:
                        # A write makes the mirror stale: the next lookups must still be exact.
                        extra = _flip(rng.choice(real), rng, 2)
                        if 4 <= extra.bit_count() <= 60 and extra not in stored:
                            await store.add(name, [Entry(extra, 0)])
                            stored.add(extra)
                        gone = rng.choice(sorted(stored))
                        assert await store.remove(name, gone) == 1
                        stored.discard(gone)
                    for i in range(queries_per_radius):
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
    asked = len([r for r in radii if r <= 6]) + 2 * len(radii)
    assert counts["queries"] == queries_per_radius * asked
    assert counts["with_matches"] > counts["queries"] // 2  # the oracle is not comparing empty sets


@pytest.mark.slow
@pytest.mark.parametrize("path", ["index", "mirror"])
def test_many_frame_lookups_equal_brute_force_and_run_off_the_event_loop(
    path: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An animation's frames are one lookup of hundreds of query hashes: still exact, its CPU
    work (probes, candidate filter, mirror ranking) in a worker thread, and its band keys read
    in SUNIONs of at most SUNION_KEYS keys."""
    mirror = path == "mirror"
    rng = random.Random(path)
    real = _real_photo_hashes()
    stored = {h for h in real + [_flip(h, rng, 3) for h in real] if 4 <= h.bit_count() <= 60}
    frames = [_frame(_flip(rng.choice(real), rng, rng.randint(0, 10))) for _ in range(40)]
    frames += [_frame(rng.getrandbits(64)) for _ in range(20)]
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real_probe_keys, real_rank = guard.store.index.probe_keys, guard.store.Mirror.rank

    def probe_keys(*args: object) -> list[str]:
        threads.append(threading.get_ident())
        return real_probe_keys(*args)  # type: ignore[arg-type]

    def rank(self: object, *args: object) -> object:
        threads.append(threading.get_ident())
        return real_rank(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(guard.store.index, "probe_keys", probe_keys)
    monkeypatch.setattr(guard.store.Mirror, "rank", rank)
    monkeypatch.setattr(guard.store.index, "SUNION_KEYS", 500)
    settings = MirrorSettings(retry_seconds=0) if mirror else None

    async def body() -> None:
        async with Store.from_url(redis_url, socket_timeout=10, mirror=settings) as store:
            await store.add("frames", [Entry(h, 0) for h in stored])
            if mirror:
                assert await store.refresh_mirror("frames") is not None
            for radius in (4, 8, 12):
                matches = await store.lookup("frames", frames, radius=radius, dihedral=True)
                expected = set().union(*(_oracle(stored, f.ahash, radius, True) for f in frames))
                assert {m.entry.ahash for m in matches} == expected, radius
                assert expected
            await store.drop("frames")

    run(body())
    assert threads and loop_thread not in threads
