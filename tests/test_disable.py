"""Disabling one entry of a list (a known false positive) and enabling it again: on a real Redis,
through a running middleware (mirror on and off), the store's own lifecycle (add, remove, drop,
rename) and the CLI; and an oracle: lookups equal a brute-force scan over the enabled entries."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import redis
from asgi_driver import Recorder, call, multipart
from conftest import LOCAL_PHOTOS, data_file, run
from raw_records import raw_count
from test_cli_lists import cli, folder  # noqa: F401 - `folder` is a fixture used here
from test_store_oracle import _flip, _frame, _oracle

from guard import hash_bytes
from guard.cli import main
from guard.config import Config, ListPolicy, Route
from guard.errors import StoreInconsistent
from guard.middleware import GuardMiddleware
from guard.store import MirrorSettings, Store
from guard.types import Entry

#: Run against the bundled Redis 6.2 and, where installed, a current Redis 7+/Valkey.
pytestmark = pytest.mark.every_redis

BLOCKED = LOCAL_PHOTOS[0]
OTHER = LOCAL_PHOTOS[1]


def entry_of(name: str) -> Entry:
    hashes = hash_bytes(data_file(name).read_bytes())
    return Entry(hashes.ahash, hashes.phash, name)


# --- a running worker sees each change at its next request ------------------------------------


@pytest.mark.parametrize("mirrored", [True, False])
def test_a_running_middleware_lets_a_disabled_entry_pass_and_rejects_it_again_once_enabled(
    mirrored: bool, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_REDIS_URL", redis_url)
    config = Config(
        lists={"spam": ListPolicy()},
        routes=(Route(path="/upload", lists=("spam",), methods=frozenset({"POST"})),),
    )
    # mirror_max_entries 0 keeps every lookup on the Redis band index.
    config = dataclasses.replace(
        config,
        redis=dataclasses.replace(config.redis, mirror_max_entries=2_000_000 if mirrored else 0),
    )
    app = Recorder()
    guard = GuardMiddleware(app, config=config)
    listed = entry_of(BLOCKED)
    upload = multipart(("a.jpg", data_file(BLOCKED).read_bytes()))

    async def body() -> None:
        async with Store.from_url(redis_url) as operator:
            await operator.add("spam", [listed, entry_of(OTHER)])
            assert (await call(guard, upload)).status == 403
            worker = await guard.store()
            if mirrored:  # the next lookups go through a loaded mirror
                assert await worker.refresh_mirror("spam") is not None
            before = await operator.version("spam")

            assert await operator.disable("spam", listed.ahash, listed.phash) == (1, 0)
            assert await operator.version("spam") == before + 1
            result = await call(guard, upload)
            assert result.status == 200 and app.calls == 1
            if mirrored:  # a mirror reloaded after the change answers the same
                assert await worker.refresh_mirror("spam") is not None
                assert (await call(guard, upload)).status == 200
                assert "spam" in worker._mirrors
            else:
                assert "spam" not in worker._mirrors

            assert await operator.enable("spam", listed.ahash, listed.phash) == (1, 0)
            assert await operator.version("spam") > before + 1
            assert (await call(guard, upload)).status == 403
            if mirrored:
                assert await worker.refresh_mirror("spam") is not None
                assert (await call(guard, upload)).status == 403
        await guard.aclose()

    run(body())


# --- the store ----------------------------------------------------------------------------------


def test_disable_is_idempotent_counted_apart_and_leaves_the_list_whole(redis_url: str) -> None:
    listed, other = entry_of(BLOCKED), entry_of(OTHER)
    twin = Entry(listed.ahash, listed.phash ^ 0xFFFF, "twin")  # same aHash, another pHash

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [listed, other, twin])
            version = await store.version("spam")
            assert await store.disable("spam", listed.ahash, listed.phash) == (1, 0)
            assert await store.disable("spam", listed.ahash, listed.phash) == (0, 1)
            assert await store.version("spam") == version + 1  # the no-op moved nothing
            assert await store.disable("spam", 0x0123_4567_89AB_CDEF) == (0, 0)
            (info,) = await store.lists()
            assert (info.entries, info.disabled) == (2, 1)
            report = await store.verify("spam")
            assert report.ok and report.entries == 2, report.findings
            assert [e.source async for e in store.disabled_entries("spam")] == [BLOCKED]
            assert sorted([e.source async for e in store.entries("spam")]) == [OTHER, "twin"]
            # The twin (same aHash) is still found; the disabled entry is not.
            frame = _frame(listed.ahash)
            found = await store.lookup("spam", [frame], radius=0)
            assert [m.entry.source for m in found] == ["twin"]
            # An add of the disabled entry (a reload of the folder) does not re-enable it.
            assert (await store.add("spam", [listed])).present == 1
            assert [m.entry.source for m in await store.lookup("spam", [frame], radius=0)] == [
                "twin"
            ]
            # Every entry of the aHash at once; enabling is idempotent too.
            assert await store.disable("spam", listed.ahash) == (1, 1)
            assert await store.enable("spam", listed.ahash) == (2, 0)
            assert await store.enable("spam", listed.ahash) == (0, 2)
            (info,) = await store.lists()
            assert (info.entries, info.disabled) == (3, 0)
            assert (await store.verify("spam")).ok
            assert raw_count(redis_url, "spam", disabled=True) == 0

    run(body())


def test_remove_takes_disabled_entries_too(redis_url: str) -> None:
    listed = entry_of(BLOCKED)

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [listed, entry_of(OTHER)])
            await store.disable("spam", listed.ahash)
            version = await store.version("spam")
            assert await store.remove("spam", listed.ahash) == 1
            assert await store.version("spam") == version + 1
            assert await store.enable("spam", listed.ahash) == (0, 0)  # nothing left to enable
            (info,) = await store.lists()
            assert (info.entries, info.disabled) == (1, 0)
            assert (await store.verify("spam")).ok

    run(body())


def test_drop_deletes_the_disabled_entries(redis_url: str) -> None:
    listed = entry_of(BLOCKED)

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [listed, entry_of(OTHER)])
            await store.disable("spam", listed.ahash)
            assert raw_count(redis_url, "spam", disabled=True) == 1
            await store.drop("spam")
            assert raw_count(redis_url, "spam", disabled=True) == 0
            # Re-created, the list starts with nothing disabled.
            await store.add("spam", [listed])
            (info,) = await store.lists()
            assert (info.entries, info.disabled) == (1, 0)

    run(body())


def test_rename_keeps_disabled_entries_disabled(redis_url: str) -> None:
    listed, other = entry_of(BLOCKED), entry_of(OTHER)

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("old", [listed, other])
            await store.disable("old", listed.ahash, listed.phash)
            assert await store.rename("old", "new") == 2
            (info,) = await store.lists()
            assert (info.name, info.entries, info.disabled) == ("new", 1, 1)
            assert [e.source async for e in store.disabled_entries("new")] == [BLOCKED]
            assert await store.lookup("new", [_frame(listed.ahash)], radius=0) == []
            assert (await store.verify("new")).ok
            assert await store.enable("new", listed.ahash, listed.phash) == (1, 0)
            found = await store.lookup("new", [_frame(listed.ahash)], radius=0)
            assert [m.entry.source for m in found] == [BLOCKED]

    run(body())


@pytest.mark.parametrize("path", ["index", "mirror"])
def test_lookups_equal_a_brute_force_scan_over_the_enabled_entries(
    path: str, redis_url: str
) -> None:
    mirror = path == "mirror"
    rng = random.Random(path)
    base = [rng.getrandbits(64) for _ in range(400)]
    stored = {h for h in base + [_flip(h, rng, rng.randint(1, 6)) for h in base[:150]]}
    stored = {h for h in stored if 4 <= h.bit_count() <= 60}
    off = set(rng.sample(sorted(stored), len(stored) // 3))
    settings = MirrorSettings(retry_seconds=0) if mirror else None

    async def check(store: Store, enabled: set[int]) -> int:
        if mirror:
            assert await store.refresh_mirror("oracle") is not None
        hits = 0
        for i in range(120):
            query = _flip(rng.choice(sorted(stored)), rng, rng.randint(0, 10))
            radius = rng.choice((0, 4, 8, 12))
            dihedral = i % 6 == 5
            frames = [_frame(query)]
            matches = await store.lookup("oracle", frames, radius=radius, dihedral=dihedral)
            expected = _oracle(enabled, query, radius, dihedral)
            assert {m.entry.ahash for m in matches} == expected, (radius, hex(query))
            hits += bool(expected)
        if mirror:
            assert "oracle" in store._mirrors
        return hits

    async def body() -> None:
        async with Store.from_url(redis_url, socket_timeout=10, mirror=settings) as store:
            await store.add("oracle", [Entry(h, h ^ 0x5555) for h in stored])
            for ahash in off:
                assert await store.disable("oracle", ahash, ahash ^ 0x5555) == (1, 0)
            assert await check(store, stored - off) > 30
            # Some of them back: exact again for the new set.
            back = set(rng.sample(sorted(off), len(off) // 2))
            for ahash in back:
                assert await store.enable("oracle", ahash) == (1, 0)
            assert await check(store, stored - off | back) > 30
            (info,) = await store.lists()
            assert (info.entries, info.disabled) == (len(stored - off | back), len(off - back))
            assert (await store.verify("oracle")).ok

    run(body())


# --- the CLI ------------------------------------------------------------------------------------


def test_the_cli_disables_enables_and_shows_disabled_entries(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = ["--redis-url", redis_url]
    cli(capsys, "load", str(folder), "--list", "spam", "--skip-bad", *url)
    photo = next(p for p in folder.rglob("*.jpg"))
    code, out, _ = cli(capsys, "check", "--json", "--list", "spam", str(photo), *url)
    assert code == 1 and json.loads(out)[0]["verdict"] == "reject"

    code, out, _ = cli(capsys, "disable", "--list", "spam", str(photo), *url)
    assert (code, out) == (0, f"{photo}: disabled 1\n")
    code, out, _ = cli(capsys, "disable", "--list", "spam", str(photo), *url)
    assert (code, out) == (0, f"{photo}: already disabled (1)\n")

    code, out, _ = cli(capsys, "check", "--json", "--list", "spam", str(photo), *url)
    (report,) = json.loads(out)
    assert code == 0 and report["verdict"] == "allow"
    assert [m["distance"] for m in report["disabled_matches"]] == [0]
    code, out, _ = cli(capsys, "check", "--list", "spam", str(photo), *url)
    assert "DISABLED, not enforced" in out

    code, out, _ = cli(capsys, "lists", *url)
    assert "spam: 4 entries (+1 disabled)" in out
    code, out, _ = cli(capsys, "lists", "--json", *url)
    assert [(i["entries"], i["disabled"]) for i in json.loads(out)] == [(4, 1)]
    code, out, _ = cli(capsys, "lists", "--verify", *url)
    assert code == 0, out

    code, out, _ = cli(capsys, "export", "--list", "spam", *url)
    lines = out.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("# disabled: ")
    assert not any(line.startswith("#") for line in lines[:-1])
    code, out, _ = cli(capsys, "export", "--list", "spam", "--json", *url)
    exported = json.loads(out)
    (source,) = [e["source"] for e in exported if e["disabled"]]

    code, out, _ = cli(capsys, "enable", "--list", "spam", "--source", source, *url)
    assert (code, out) == (0, f"{source}: enabled 1\n")
    code, out, _ = cli(capsys, "check", "--json", "--list", "spam", str(photo), *url)
    assert code == 1 and "disabled_matches" not in json.loads(out)[0]
    code, out, _ = cli(capsys, "disable", "--list", "spam", "--source", source, "--json", *url)
    assert code == 0 and json.loads(out)["disabled"] == [
        {"target": source, "disabled": 1, "already": 0}
    ]


def test_the_cli_says_when_a_target_names_no_entry(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = ["--redis-url", redis_url]
    cli(capsys, "load", str(folder), "--list", "spam", "--skip-bad", *url)
    unlisted = data_file(LOCAL_PHOTOS[-1])
    code, out, _ = cli(capsys, "disable", "--list", "spam", str(unlisted), *url)
    assert (code, out) == (1, f"{unlisted}: no entry of list 'spam'\n")
    code, out, _ = cli(capsys, "enable", "--list", "spam", "--source", "nowhere.jpg", *url)
    assert (code, out) == (1, "nowhere.jpg: no entry of list 'spam'\n")
    code, out, err = cli(capsys, "disable", "--list", "spam", "zz", *url)
    assert code == 1 and "neither a file nor a 16-hex-digit hash" in out
    code, _, err = cli(capsys, "disable", "--list", "spam", *url)
    assert code == 2 and "HASH|FILE arguments or --source" in err
    code, _, err = cli(capsys, "disable", "--list", "nolist", "0123456789abcdef", *url)
    assert code == 3 and "no list named 'nolist'" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["disable", "enable"])
def test_help_shows_examples_and_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert raised.value.code == 0
    assert f"guard {command} --list spam --source " in text
    assert "1 a target names no entry of the list" in text and "docs/cli.md" in text


def test_check_refuses_a_list_whose_every_entry_is_disabled_and_says_so(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--redis-url", redis_url]
    image = str(data_file(BLOCKED))
    assert cli(capsys, "load", image, "--list", "one", *url)[0] == 0
    assert cli(capsys, "disable", "--list", "one", image, *url)[0] == 0
    code, _, err = cli(capsys, "check", "--list", "one", image, *url)
    assert code == 3 and "list 'one' is empty in the store (every entry disabled" in err
    assert cli(capsys, "enable", "--list", "one", image, *url)[0] == 0
    assert cli(capsys, "check", "--list", "one", image, *url)[0] == 1


def test_several_sources_in_one_call_each_get_their_line(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def load() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [entry_of(BLOCKED), entry_of(OTHER)])

    run(load())
    url = ["--redis-url", redis_url]
    sources = [BLOCKED, "gone", OTHER]
    code, out, _ = cli(capsys, "disable", "--list", "spam", "--source", *sources, *url)
    assert (code, out.splitlines()) == (
        1,
        [f"{BLOCKED}: disabled 1", "gone: no entry of list 'spam'", f"{OTHER}: disabled 1"],
    )
    code, out, _ = cli(capsys, "disable", "--list", "spam", "--source", OTHER, *url)
    assert (code, out) == (0, f"{OTHER}: already disabled (1)\n")
    code, out, _ = cli(capsys, "lists", *url)
    assert "spam: 0 entries (+2 disabled)" in out


def test_disabling_in_a_list_whose_metadata_is_gone_writes_nothing(redis_url: str) -> None:
    """Mid-drop (metadata gone, entries not yet deleted) a disable must not re-create a stub
    ``meta``: it reports the list gone and leaves the keys as they were."""
    listed = entry_of(BLOCKED)
    client = redis.Redis.from_url(redis_url)

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [listed])
            client.delete("guard:{spam}:meta")
            with pytest.raises(StoreInconsistent):
                await store.disable("spam", listed.ahash)

    try:
        run(body())
        assert not client.exists("guard:{spam}:meta")
        assert raw_count(redis_url, "spam", disabled=True) == 0
        assert raw_count(redis_url, "spam") == 1
    finally:
        client.close()
