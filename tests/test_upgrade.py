"""Lists an older guard wrote (entries as JSON per aHash) are read as they are and upgraded in
place to compact entry records by the first change (guard.store.upgrade), against a real
Redis: lookups on both paths, listing, verify, disable/enable, an interrupted upgrade."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

import pytest
import redis
from conftest import run
from raw_records import raw_records
from test_cli_lists import cli
from test_list_identity import (
    assert_exact,
    frame_of,
    queries_for,
    random_entries,
    worker_indexed_loader,
)

import guard.store.upgrade as upgrading
from guard.errors import StoreUnavailable
from guard.mirror import snapshot_record
from guard.spelling import to_signed
from guard.store import Store
from guard.store.connection import NeedsUpgrade
from guard.store.records import disabled_key, entry_from_record, entry_json, keys
from guard.types import Entry

pytestmark = pytest.mark.every_redis


def as_older_guard_wrote_it(client: redis.Redis, list_name: str) -> int:
    """Rewrite a list's compact entry records as the JSON records of an older guard: an
    `entries` (and `disabled`) hash of signed aHash -> JSON list, no labels hash, no `records`
    in meta. Returns the entries rewritten."""
    entries = _records(client, list_name, "e:*") + _records(client, list_name, "off")
    old: dict[tuple[str, int], list[str]] = defaultdict(list)
    for kind, entry in entries:
        old[kind, entry.ahash].append(entry_json(entry))
    for (kind, ahash), records in old.items():
        key = keys(list_name).entries if kind == "e:*" else disabled_key(list_name)
        client.hset(key, str(to_signed(ahash)), "[" + ",".join(records) + "]")
    for pattern in ("e:*", "off", "labels"):
        for key in client.scan_iter(match=f"guard:{{{list_name}}}:{pattern}"):
            client.delete(key)
    client.hdel(f"guard:{{{list_name}}}:meta", "records", "labels")
    return len(entries)


def _records(client: redis.Redis, list_name: str, kind: str) -> list[tuple[str, Entry]]:
    labels = {
        int(k): v.decode()
        for k, v in client.hgetall(f"guard:{{{list_name}}}:labels").items()
        if not k.startswith(b"=")
    }
    found = []
    for key in client.scan_iter(match=f"guard:{{{list_name}}}:{kind}"):
        for field, value in client.hgetall(key).items():
            found.append((kind, entry_from_record(field, value, labels)))
    return found


def labelled(entries: list[Entry], rng: random.Random, folder: str = "img") -> list[Entry]:
    return [
        Entry(e.ahash, e.phash, f"{folder}/{i}.jpg", rng.choice([None, "spam", "scam"]), 1.7e9 + i)
        for i, e in enumerate(entries)
    ]


def test_an_older_list_is_read_as_it_is_and_changed_only_once_upgraded(redis_url: str) -> None:
    rng = random.Random(11)
    entries = labelled(random_entries(rng, 60), rng)
    twin = Entry(entries[0].ahash, (entries[0].phash or 0) ^ 0xFFFF, "twin.jpg", "spam", 1.8e9)
    entries.append(twin)  # a second entry of one aHash
    more = labelled(random_entries(rng, 5), rng, "more")
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with worker_indexed_loader(redis_url) as (worker, indexed, loader):
            await loader.add("spam", entries)
            await loader.disable("spam", entries[1].ahash)
            assert as_older_guard_wrote_it(client, "spam") == 61
            assert client.hlen(keys("spam").entries) == 59 and client.hlen(disabled_key("spam"))
            queries = queries_for(rng, entries[2:])
            for store in (worker, indexed):  # read as they are, on both lookup paths
                assert await assert_exact(store, redis_url, queries) >= 59
                found = await store.lookup("spam", [frame_of(twin.ahash)], radius=0)
                assert sorted(m.entry.source for m in found) == [entries[0].source, "twin.jpg"]
                assert {m.entry for m in found} == {entries[0], twin}
            listed = sorted([e async for e in loader.entries("spam")], key=_source)
            assert listed == sorted([e for e in entries if e != entries[1]], key=_source)
            assert (await loader.verify("spam")).ok
            version = await loader.version("spam")
            (info,) = await loader.lists()
            assert (info.entries, info.disabled, info.needs_upgrade) == (60, 1, True)

            # No change until the operator upgrades it: older workers could not read it after.
            for change in (
                loader.add("spam", more),
                loader.remove("spam", entries[2].ahash),
                loader.disable("spam", entries[3].ahash),
                loader.enable("spam", entries[1].ahash),
            ):
                with pytest.raises(NeedsUpgrade, match="run `guard upgrade spam` once every"):
                    await change
            assert await loader.version("spam") == version
            assert not client.keys("guard:{spam}:e:*")  # nothing written either
            assert (client.hlen(keys("spam").entries), client.hlen(disabled_key("spam"))) == (59, 1)

            assert await loader.upgrade("spam") == 60  # aHashes, one of them disabled
            assert not client.exists(keys("spam").entries, disabled_key("spam"))
            assert client.hget("guard:{spam}:meta", "records") == b"2"
            assert await loader.version("spam") == version  # the index did not change
            assert not (await loader.lists())[0].needs_upgrade
            assert await loader.upgrade("spam") == 0
            await loader.add("spam", more)
            whole = [e for e in entries if e != entries[1]] + more
            assert sorted(raw_records(client, "spam")) == sorted((e.ahash, e.phash) for e in whole)
            listed = sorted([e async for e in loader.entries("spam")], key=_source)
            assert listed == sorted(whole, key=_source)  # labels, sources and times kept
            assert [e async for e in loader.disabled_entries("spam")] == [entries[1]]
            assert (await loader.enable("spam", entries[1].ahash)).done == 1
            for store in (worker, indexed):
                assert await assert_exact(store, redis_url, queries_for(rng, whole)) >= 130
            assert (await loader.verify("spam")).ok

    try:
        run(body())
    finally:
        client.close()


def test_an_interrupted_upgrade_is_read_whole_and_finished_by_the_next_one(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(12)
    entries = labelled(random_entries(rng, 50), rng)
    whole = sorted(entries, key=_source)
    client = redis.Redis.from_url(redis_url)
    move, calls = upgrading._move, 0

    async def interrupted_after_five(*args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise ConnectionError("interrupted")
        return await move(*args)

    monkeypatch.setattr(upgrading, "UPGRADE_BATCH", 5)
    monkeypatch.setattr(upgrading, "_move", interrupted_after_five)

    async def body() -> None:
        async with Store.from_url(redis_url, mirror=None) as store:
            await store.add("spam", entries)
            as_older_guard_wrote_it(client, "spam")
            # Stopped after five batches of five aHashes: half the list moved.
            with pytest.raises(StoreUnavailable, match="interrupted"):
                await upgrading.upgrade(store._client, "spam")
            assert client.hlen(keys("spam").entries) == 25
            assert client.hget("guard:{spam}:meta", "records") is None
            assert sorted([e async for e in store.entries("spam")], key=_source) == whole
            assert await assert_exact(store, redis_url, queries_for(rng, entries)) >= 50
            monkeypatch.setattr(upgrading, "_move", move)
            assert await store.upgrade("spam") == 25  # the rest
            assert client.hget("guard:{spam}:meta", "records") == b"2"
            assert sorted([e async for e in store.entries("spam")], key=_source) == whole
            assert (await store.verify("spam")).ok

    try:
        run(body())
    finally:
        client.close()


def _source(entry: Entry) -> tuple[str, int, int]:
    return entry.source, entry.ahash, entry.phash or 0


def test_guard_upgrade_moves_the_lists_that_need_it(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(13)
    client = redis.Redis.from_url(redis_url)

    async def fill() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", labelled(random_entries(rng, 30), rng))
            await store.add("scam", labelled(random_entries(rng, 3), rng))
            await store.allow("spam", labelled(random_entries(rng, 2), rng, "ok"))

    try:
        run(fill())
        as_older_guard_wrote_it(client, "spam")
        as_older_guard_wrote_it(client, "spam/allow")
        code, out, _ = cli(capsys, "lists", "--redis-url", redis_url)
        assert "spam: 30 entries, 4 bands" in out and "(older records: guard upgrade spam)" in out
        assert "scam: 3 entries" in out and "guard upgrade scam" not in out
        code, _, err = cli(
            capsys, "remove", "--list", "spam", "00ff00ff00ff00ff", "--redis-url", redis_url
        )
        assert code == 3 and "run `guard upgrade spam` once every worker runs this version" in err
        code, out, err = cli(capsys, "upgrade", "spam", "nosuch", "--redis-url", redis_url)
        assert code == 1 and "no list named 'nosuch'" in err
        assert out == "spam: upgraded (32 aHashes moved to compact records)\n"
        assert not client.exists(keys("spam").entries, keys("spam/allow").entries)
        code, out, _ = cli(capsys, "upgrade", "--json", "--redis-url", redis_url)
        assert code == 0 and json.loads(out) == [
            {"list": "scam", "upgraded": False, "moved": 0},
            {"list": "spam", "upgraded": False, "moved": 0},
        ]
    finally:
        client.close()


def test_an_entry_an_older_guard_writes_into_an_upgraded_list_is_enforced(redis_url: str) -> None:
    """During a rolling upgrade an older `guard load` may still add to a compact list, as JSON:
    both lookup paths and the listing still find that entry's record."""
    rng = random.Random(14)
    entries = labelled(random_entries(rng, 20), rng)
    old = Entry(rng.getrandbits(64), rng.getrandbits(64), "old-guard.jpg", "spam", 1.75e9)
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with worker_indexed_loader(redis_url) as (worker, indexed, loader):
            await loader.add("spam", entries)
            for store in (worker, indexed):
                assert await store.lookup("spam", [frame_of(old.ahash)], radius=0) == []
            # What an older guard's add script writes for one entry, in one step.
            layout = (await loader._catalog.meta("spam")).layout
            pipe = client.pipeline(transaction=True)
            pipe.hset(keys("spam").entries, str(to_signed(old.ahash)), f"[{entry_json(old)}]")
            for band, value in enumerate(layout.values(old.ahash)):
                pipe.sadd(f"guard:{{spam}}:b{band}:{value}", to_signed(old.ahash))
            pipe.append(keys("spam").snap, snapshot_record(old.ahash, old.phash))
            pipe.hincrby(keys("spam").meta, "entries", 1)
            pipe.incr(keys("spam").ver)
            pipe.execute()
            for store in (worker, indexed):
                found = await store.lookup("spam", [frame_of(old.ahash)], radius=0)
                assert [m.entry for m in found] == [old]
            assert old in [e async for e in loader.entries("spam")]
            assert (await loader.verify("spam")).ok

    try:
        run(body())
    finally:
        client.close()
