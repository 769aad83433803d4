"""A list's identity: its incarnation, written when the list is created, tells a list loaded
again after a drop or a flush from the one a worker mirrored, even at the same version."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
import pytest
import redis
from conftest import run
from raw_records import raw_records

from guard.hashing import FrameHash, hamming, phash_of_coefficients
from guard.store import MirrorSettings, Store
from guard.types import Entry

#: Slow (several workers' stores and mirrors over a list loaded again): not in the fast path.
pytestmark = pytest.mark.slow

RADIUS = 4


def frame_of(ahash: int, seed: int = 0) -> FrameHash:
    coefficients = np.random.default_rng(seed).normal(size=(8, 8))
    return FrameHash(ahash, phash_of_coefficients(coefficients), False, 0, coefficients)


def random_entries(rng: random.Random, count: int) -> list[Entry]:
    return [Entry(rng.getrandbits(64), rng.getrandbits(64), f"e{i}") for i in range(count)]


async def add_in_batches(store: Store, entries: Sequence[Entry], batches: int) -> None:
    """One add call (so one version) per batch."""
    size = -(-len(entries) // batches)
    for start in range(0, len(entries), size):
        await store.add("spam", entries[start : start + size])


def stored(url: str) -> list[tuple[int, int | None]]:
    """Every (aHash, pHash) the list holds, read from Redis directly (the oracle's data)."""
    client = redis.Redis.from_url(url)
    try:
        return raw_records(client, "spam")
    finally:
        client.close()


def oracle(entries: list[tuple[int, int | None]], query: int) -> set[tuple[int, int | None]]:
    return {(a, p) for a, p in entries if hamming(a, query) <= RADIUS}


def queries_for(rng: random.Random, *lists: Sequence[Entry]) -> list[int]:
    """Each entry's aHash, and the same with up to RADIUS bits flipped."""
    found = []
    for entries in lists:
        for entry in entries:
            found.append(entry.ahash)
            flipped = entry.ahash
            for bit in rng.sample(range(64), rng.randint(1, RADIUS)):
                flipped ^= 1 << bit
            found.append(flipped)
    return found


@asynccontextmanager
async def worker_indexed_loader(redis_url: str) -> AsyncIterator[tuple[Store, Store, Store]]:
    """Three stores on one Redis: a worker with a mirror (reloaded at once when it changes), a
    worker on the Redis index alone (no mirror), and one that writes the list."""
    async with (
        Store.from_url(redis_url, mirror=MirrorSettings(retry_seconds=0)) as worker,
        Store.from_url(redis_url, mirror=None) as indexed,
        Store.from_url(redis_url) as loader,
    ):
        yield worker, indexed, loader


async def mirrored(store: Store) -> int:
    mirror = await store.refresh_mirror("spam")
    assert mirror is not None
    return len(mirror)


async def assert_exact(store: Store, url: str, queries: list[int]) -> int:
    """Every lookup returns exactly what brute force over the stored entries finds."""
    entries = stored(url)
    matched = 0
    for i, query in enumerate(queries):
        got = await store.lookup("spam", [frame_of(query, i)], radius=RADIUS)
        want = oracle(entries, query)
        assert {(m.entry.ahash, m.entry.phash) for m in got} == want, hex(query)
        matched += bool(want)
    return matched


@pytest.mark.parametrize("how", ["drop", "flushall"])
def test_a_list_loaded_again_is_seen_by_every_worker_at_the_same_version(
    redis_url: str, how: str
) -> None:
    """Two workers mirror the list; it is dropped (or Redis flushed) and loaded with other
    images until its version is back where it was. Each worker's next lookup, and every one
    after it, returns exactly the new list's entries."""
    rng = random.Random(12)
    old, new = random_entries(rng, 80), random_entries(rng, 80)
    queries = queries_for(rng, new, old)
    settings = MirrorSettings(retry_seconds=0)

    async def body() -> None:
        async with (
            Store.from_url(redis_url, mirror=settings) as first,
            Store.from_url(redis_url, mirror=settings) as second,
            Store.from_url(redis_url) as loader,
        ):
            await add_in_batches(loader, old, 8)
            version = await loader.version("spam")
            assert version == 8
            for worker in (first, second):
                assert await mirrored(worker) == 80
                assert await assert_exact(worker, redis_url, queries[160:]) == 160
                assert worker._mirrors["spam"].version == 8  # answering from its mirror
            client = redis.Redis.from_url(redis_url)
            before = client.hget("guard:{spam}:meta", "incarnation")
            if how == "drop":
                await loader.drop("spam")
            else:
                client.flushall()
            await add_in_batches(loader, new, 8)
            assert await loader.version("spam") == version  # the counter restarted
            for worker in (first, second):
                # The first lookup after the re-load is one of the new list's entries.
                assert await assert_exact(worker, redis_url, queries) == 160
                assert await mirrored(worker) == 80
                mirror = worker._mirrors["spam"]
                assert mirror.version == version
                assert await assert_exact(worker, redis_url, queries) == 160
            after = client.hget("guard:{spam}:meta", "incarnation")
            client.close()
            assert before is not None and after is not None and len(before) == 16
            assert before != after and mirror.incarnation == after.decode()

    run(body())


@pytest.mark.parametrize("mirror", ["mirror", "redis index"])
def test_a_list_re_created_with_other_bands_is_read_with_its_own_layout(
    redis_url: str, mirror: str
) -> None:
    """The layout a worker cached belongs to the list it read: after a re-load with 2 bands
    instead of 4, the Redis index's probes must follow the new layout."""
    rng = random.Random(5)
    old, new = random_entries(rng, 30), random_entries(rng, 30)
    queries = queries_for(rng, new)
    settings = MirrorSettings(retry_seconds=0) if mirror == "mirror" else None

    async def body() -> None:
        async with (
            Store.from_url(redis_url, mirror=settings) as worker,
            Store.from_url(redis_url) as loader,
        ):
            await loader.add("spam", old, bands=4)
            if settings is not None:
                await mirrored(worker)
            await assert_exact(worker, redis_url, queries_for(rng, old))
            await loader.drop("spam")
            await loader.add("spam", new, bands=2)
            assert await assert_exact(worker, redis_url, queries) == 60
            assert len(worker._catalog.cached["spam"].layout.bands) == 2

    run(body())


def test_a_list_made_before_incarnations_works_and_gets_one_at_its_next_add(
    redis_url: str,
) -> None:
    """Metadata without an incarnation reads as "": lookups (mirror and index) work as before;
    the next add gives it one (even an add of nothing new), and workers reload."""
    rng = random.Random(3)
    entries, more = random_entries(rng, 40), random_entries(rng, 5)
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with worker_indexed_loader(redis_url) as (worker, indexed, loader):
            await loader.add("spam", entries)
            client.hdel("guard:{spam}:meta", "incarnation")  # as an older guard wrote it
            assert await mirrored(worker) == 40
            assert worker._mirrors["spam"].incarnation == ""
            for store in (worker, indexed):
                assert await assert_exact(store, redis_url, queries_for(rng, entries)) == 80
            assert "spam" in worker._mirrors  # the mirror answered: "" == ""
            version = await loader.version("spam")
            assert (await loader.add("spam", entries[:3])).added == 0  # nothing new
            incarnation = client.hget("guard:{spam}:meta", "incarnation")
            assert incarnation is not None and len(incarnation) == 16
            assert await loader.version("spam") == version
            await loader.add("spam", more)
            for store in (worker, indexed):
                assert await assert_exact(store, redis_url, queries_for(rng, entries, more)) == 90
            assert await mirrored(worker) == 45
            assert worker._mirrors["spam"].incarnation == incarnation.decode()

    try:
        run(body())
    finally:
        client.close()


def test_the_incarnation_is_written_with_the_first_entries_and_kept(redis_url: str) -> None:
    """Creating a list is one script call with its first entries: meta, entries and version
    appear together; later adds and removes keep the incarnation."""
    rng = random.Random(9)
    entries = random_entries(rng, 10)
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", entries[:5])
            meta = client.hgetall("guard:{spam}:meta")
            assert int(meta[b"entries"]) == 5 and client.get("guard:{spam}:ver") == b"1"
            incarnation = meta[b"incarnation"]
            assert len(incarnation) == 16 and int(incarnation, 16) >= 0
            await store.add("spam", entries[5:])
            await store.remove("spam", entries[0].ahash)
            assert client.hget("guard:{spam}:meta", "incarnation") == incarnation
            assert client.sismember("guard:lists", "spam")
            await store.drop("spam")
            await store.add("spam", entries[:1])
            assert client.hget("guard:{spam}:meta", "incarnation") not in (None, incarnation)

    try:
        run(body())
    finally:
        client.close()


def test_a_remove_follows_the_layout_of_the_list_as_it_is_now(redis_url: str) -> None:
    """A store that read the list with 4 bands removes from it after it was re-created with 2:
    the band members it removes are the new list's (no stray members left behind)."""
    rng = random.Random(4)
    entries = random_entries(rng, 6)

    async def body() -> None:
        async with Store.from_url(redis_url) as remover, Store.from_url(redis_url) as loader:
            await loader.add("spam", entries, bands=4)
            assert await remover.remove("spam", entries[0].ahash) == 1  # caches 4 bands
            await loader.drop("spam")
            await loader.add("spam", entries, bands=2)
            assert await remover.remove("spam", entries[1].ahash) == 1
            report = await loader.verify("spam")
            assert report.ok and report.entries == 5 and report.bands == 2, report.findings

    run(body())
