"""A worker's mirror follows its list through the change log (guard.store.changes), on a real
Redis: an add, a removal, a disable and an enable made by another process are seen at the next
lookup as deltas (the loaded mirror is kept, not loaded again); a gap in the log loads the
snapshot again; the log stays bounded and goes with its list; and no lookup walks the Redis
index while a mirror can be had (a cold worker waits for its mirror)."""

from __future__ import annotations

import random

import pytest
import redis
from asgi_driver import Recorder
from conftest import run
from test_store_oracle import _flip, _frame

from guard.config import Config, ListPolicy, Route
from guard.hashing import FrameHash
from guard.middleware import GuardMiddleware
from guard.store import MirrorSettings, Store, index
from guard.store.changes import CHANGES_KEPT
from guard.store.records import changes_key
from guard.types import Entry

pytestmark = pytest.mark.every_redis


def _entry(rng: random.Random, source: str) -> Entry:
    """A random listable entry (its low byte set: never a low-information hash)."""
    return Entry(rng.getrandbits(64) | 0xFF, rng.getrandbits(64), source)


def _entries(rng: random.Random, count: int) -> list[Entry]:
    return [_entry(rng, f"e{i}") for i in range(count)]


async def _found(store: Store, frame: FrameHash) -> set[int]:
    return {m.entry.ahash for m in await store.lookup("spam", [frame], radius=4)}


def _no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the Redis index path fail: the lookups must come from a mirror."""

    async def refused(*args: object, **kwargs: object) -> object:
        raise AssertionError("a lookup walked the Redis index")

    monkeypatch.setattr(index, "lookup", refused)


def test_a_worker_sees_every_kind_of_change_as_a_delta(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1)
    listed = _entries(rng, 300)

    async def body() -> None:
        async with Store.from_url(redis_url) as operator, Store.from_url(redis_url) as worker:
            await operator.add("spam", listed)
            loaded = await worker.refresh_mirror("spam")
            assert loaded is not None
            _no_index(monkeypatch)
            new = _entry(rng, "new")
            near_new = _frame(_flip(new.ahash, rng, 2))
            assert await _found(worker, near_new) == set()

            await operator.add("spam", [new])
            assert await _found(worker, near_new) == {new.ahash}
            patched = worker._mirrors["spam"]
            assert patched.base is loaded.base  # applied as a delta
            assert patched.version == await operator.version("spam")

            await operator.disable("spam", new.ahash, new.phash)
            assert await _found(worker, near_new) == set()
            await operator.enable("spam", new.ahash, new.phash)
            assert await _found(worker, near_new) == {new.ahash}

            old = listed[7]
            near_old = _frame(_flip(old.ahash, rng, 1))
            assert old.ahash in await _found(worker, near_old)
            assert await operator.remove("spam", old.ahash) == 1
            assert old.ahash not in await _found(worker, near_old)
            assert worker._mirrors["spam"].base is loaded.base
            assert len(worker._mirrors["spam"]) == len(listed)  # one added, one removed

    run(body())


def test_a_gap_in_the_log_loads_the_snapshot_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(2)
    listed = _entries(rng, 50)

    async def body() -> None:
        async with Store.from_url(redis_url) as operator, Store.from_url(redis_url) as worker:
            await operator.add("spam", listed)
            loaded = await worker.refresh_mirror("spam")
            assert loaded is not None
            _no_index(monkeypatch)
            new = _entry(rng, "new")
            await operator.add("spam", [new])
            redis.Redis.from_url(redis_url).delete(changes_key("spam"))  # the log is gone
            assert await _found(worker, _frame(new.ahash)) == {new.ahash}
            assert worker._mirrors["spam"].base is not loaded.base  # loaded again

    run(body())


def test_a_cold_worker_waits_for_its_mirror_instead_of_walking_the_index(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    listed = _entries(rng, 100)

    async def body() -> None:
        async with Store.from_url(redis_url) as operator, Store.from_url(redis_url) as worker:
            await operator.add("spam", listed)
            _no_index(monkeypatch)
            assert "spam" not in worker._mirrors
            assert await _found(worker, _frame(listed[0].ahash)) == {listed[0].ahash}
            assert "spam" in worker._mirrors

    run(body())


def test_the_log_keeps_a_bounded_number_of_versions_and_goes_with_its_list(
    redis_url: str,
) -> None:
    rng = random.Random(4)
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with Store.from_url(redis_url) as operator:
            for entry in _entries(rng, CHANGES_KEPT + 150):
                await operator.add("spam", [entry])
            version = await operator.version("spam")
            length = client.xlen(changes_key("spam"))
            # Trimming drops whole stream nodes (100 items each by default): about CHANGES_KEPT.
            assert CHANGES_KEPT <= length <= CHANGES_KEPT + 100
            newest = client.xrevrange(changes_key("spam"), count=1)[0][0]
            assert newest == f"{version}-0".encode()
            await operator.drop("spam")
            assert not client.exists(changes_key("spam"))

    run(body())


def test_a_change_whose_log_cannot_be_written_is_still_made(redis_url: str) -> None:
    rng = random.Random(5)
    client = redis.Redis.from_url(redis_url)
    listed = _entries(rng, 3)

    async def body() -> None:
        async with Store.from_url(redis_url) as operator, Store.from_url(redis_url) as worker:
            await operator.add("spam", listed[:1])
            assert await worker.refresh_mirror("spam") is not None
            client.delete(changes_key("spam"))
            client.set(changes_key("spam"), "not a stream")  # XADD fails on it
            assert (await operator.add("spam", listed[1:])).added == 2
            # The worker finds no log to follow and loads the list again: still exact.
            assert await _found(worker, _frame(listed[2].ahash)) == {listed[2].ahash}

    run(body())


def test_a_list_over_the_mirror_limit_still_answers_from_the_index(redis_url: str) -> None:
    rng = random.Random(6)
    listed = _entries(rng, 20)

    async def body() -> None:
        settings = MirrorSettings(max_entries=10)
        async with (
            Store.from_url(redis_url) as operator,
            Store.from_url(redis_url, mirror=settings) as worker,
        ):
            await operator.add("spam", listed)
            assert await _found(worker, _frame(listed[3].ahash)) == {listed[3].ahash}
            assert "spam" not in worker._mirrors

    run(body())


def test_start_up_loads_the_mirrors_of_the_routes_lists(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    listed = _entries(rng, 40)
    config = Config(
        lists={"spam": ListPolicy()},
        routes=(Route(path="/upload", lists=("spam",), methods=frozenset({"POST"})),),
    )

    async def body() -> None:
        async with Store.from_url(redis_url) as operator:
            await operator.add("spam", listed)
            await operator.allow("spam", listed[:2])
        worker = Store.from_url(redis_url)
        guard = GuardMiddleware(Recorder(), config=config, store=worker)
        assert "spam" not in worker._mirrors
        assert await guard.startup() is None
        assert {"spam", "spam/allow"} <= set(worker._mirrors)  # loaded before serving
        await guard.aclose()

    run(body())


def test_a_mirror_dropped_after_a_good_load_is_loaded_again_at_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a load that gave no mirror holds the next one off (retry_seconds)."""
    listed = _entries(random.Random(8), 30)

    async def body() -> None:
        async with Store.from_url(redis_url) as operator, Store.from_url(redis_url) as worker:
            await operator.add("spam", listed)
            assert await worker.refresh_mirror("spam") is not None
            _no_index(monkeypatch)
            worker._mirror_cache.forget("spam")  # as when the list is read again
            assert await _found(worker, _frame(listed[1].ahash)) == {listed[1].ahash}
            assert "spam" in worker._mirrors

    run(body())


def test_a_mirror_that_cannot_be_built_leaves_lookups_on_the_index(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = _entries(random.Random(9), 30)

    def broken(*args: object) -> object:
        raise MemoryError("no room")

    async def body() -> None:
        async with Store.from_url(redis_url) as operator, Store.from_url(redis_url) as worker:
            await operator.add("spam", listed)
            monkeypatch.setattr(worker._mirror_cache, "_build", broken)
            assert await _found(worker, _frame(listed[2].ahash)) == {listed[2].ahash}
            assert "spam" not in worker._mirrors

    run(body())
