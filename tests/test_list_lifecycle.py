"""A list's lifecycle: `guard drop` and `guard rename`, end to end on a real Redis, and what a
running worker (a store with a loaded mirror) sees of them."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import redis
from conftest import run
from test_cli_lists import cli, folder  # noqa: F401 - `folder` is a fixture used here
from test_list_identity import frame_of

from guard.config import ListPolicy
from guard.errors import StoreError, StoreInconsistent, UnknownList
from guard.store import MirrorSettings, Store, writes
from guard.store.records import drop_marker
from guard.types import Entry
from guard.verdict import refuses


class Terminal(io.StringIO):
    """Standard input on a terminal, with what the user types."""

    def isatty(self) -> bool:
        return True


def exported(capsys: pytest.CaptureFixture[str], redis_url: str, name: str) -> list[dict[str, str]]:
    code, out, _ = cli(capsys, "export", "--list", name, "--json", "--redis-url", redis_url)
    assert code == 0
    return [{k: v for k, v in e.items()} for e in json.loads(out)]


def names(capsys: pytest.CaptureFixture[str], redis_url: str) -> list[str]:
    code, out, _ = cli(capsys, "lists", "--json", "--redis-url", redis_url)
    assert code == 0
    return [info["list"] for info in json.loads(out)]


def keys_of(redis_url: str, name: str) -> list[bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        return sorted(client.scan_iter(match=f"guard:{{{name}}}:*"))
    finally:
        client.close()


def test_drop_with_yes_deletes_the_list_and_keeps_the_others(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli(capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url)
    cli(capsys, "load", str(folder), "--list", "keep", "--skip-bad", "--redis-url", redis_url)
    code, out, _ = cli(capsys, "drop", "spam", "--yes", "--json", "--redis-url", redis_url)
    report = json.loads(out)
    assert (code, report["list"], report["entries"], report["dropped"]) == (0, "spam", 5, True)
    assert report["keys"] >= 4 * 5 // 2 + 3  # band sets, entries, snap, meta, ver
    assert names(capsys, redis_url) == ["keep"]
    # Only the drop marker is left of it.
    assert keys_of(redis_url, "spam") == [drop_marker("spam").encode()]
    code, out, err = cli(capsys, "check", "--list", "spam", str(folder), "--redis-url", redis_url)
    assert code == 3 and "spam" in err
    code, out, _ = cli(capsys, "check", "--json", str(folder), "--redis-url", redis_url)
    matched = {m["list"] for result in json.loads(out) for m in result.get("matches", [])}
    assert code == 1 and matched == {"keep"}
    code, out, _ = cli(capsys, "lists", "--verify", "--redis-url", redis_url)
    assert code == 0 and out.startswith("keep: ok")
    # The name can be loaded again: a new list (the marker goes).
    code, _, _ = cli(
        capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url
    )
    assert code == 0 and names(capsys, redis_url) == ["keep", "spam"]
    assert drop_marker("spam").encode() not in keys_of(redis_url, "spam")
    code, _, _ = cli(capsys, "lists", "--verify", "--redis-url", redis_url)
    assert code == 0


def test_drop_without_yes_and_without_a_terminal_is_refused(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli(capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url)
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))  # not a terminal: never read
    code, out, err = cli(capsys, "drop", "spam", "--redis-url", redis_url)
    assert code == 2 and "--yes" in err and out == ""
    assert names(capsys, redis_url) == ["spam"]


@pytest.mark.parametrize("answer", ["", "n", "no", "yess", "Y"])
def test_drop_asks_on_a_terminal(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
) -> None:
    cli(capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url)
    monkeypatch.setattr("sys.stdin", Terminal(answer + "\n"))
    code, out, err = cli(capsys, "drop", "spam", "--redis-url", redis_url)
    assert "drop list 'spam' (5 entries)? [y/N]" in err
    if answer == "Y":
        assert code == 0 and out.startswith("spam: dropped (5 entries")
        assert names(capsys, redis_url) == []
    else:
        assert code == 1 and "not dropped" in err
        assert names(capsys, redis_url) == ["spam"]


def test_drop_of_an_unknown_list_says_so(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "drop", "nothing", "--yes", "--redis-url", redis_url)
    assert code == 1 and out == "" and "no list named 'nothing'" in err
    code, _, err = cli(capsys, "drop", "bad name!", "--yes", "--redis-url", redis_url)
    assert code == 2


def test_an_interrupted_drop_hides_the_list_refuses_a_reload_and_is_finished_by_drop(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the first step ran (drop.lua: meta and ver gone, the marker says "dropping")."""
    cli(capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(drop_marker("spam"), "dropping x")
        client.delete("guard:{spam}:meta", "guard:{spam}:ver")
    finally:
        client.close()
    assert names(capsys, redis_url) == []
    code, _, err = cli(
        capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url
    )
    assert code == 3 and "being dropped" in err
    code, out, _ = cli(capsys, "drop", "spam", "--yes", "--redis-url", redis_url)
    assert code == 0 and "dropped" in out
    assert keys_of(redis_url, "spam") == [drop_marker("spam").encode()]
    code, _, _ = cli(
        capsys, "load", str(folder), "--list", "spam", "--skip-bad", "--redis-url", redis_url
    )
    assert code == 0
    code, _, _ = cli(capsys, "lists", "--verify", "spam", "--redis-url", redis_url)
    assert code == 0


def test_a_worker_with_a_mirror_stops_matching_a_dropped_list_at_its_next_lookup(
    redis_url: str,
) -> None:
    """One store (a worker) has the list mirrored; another drops it. The worker's next lookup
    matches nothing: the list is missing (UnknownList), as one never loaded, so a required list
    refuses (or fails open, by its policy) and an optional one is ignored."""
    rng = random.Random(15)
    entries = [Entry(rng.getrandbits(64), rng.getrandbits(64), f"e{i}") for i in range(40)]
    frames = [frame_of(entries[0].ahash)]

    async def body() -> None:
        async with (
            Store.from_url(redis_url, mirror=MirrorSettings(retry_seconds=0)) as worker,
            Store.from_url(redis_url) as operator,
        ):
            await operator.add("spam", entries)
            assert await worker.refresh_mirror("spam") is not None
            assert len(await worker.lookup("spam", frames, radius=0)) == 1
            assert "spam" in worker._mirrors  # the mirror answered
            await operator.drop("spam", keep_marker=True)
            with pytest.raises(UnknownList) as dropped:
                await worker.lookup("spam", frames, radius=0)
            assert "was dropped" in str(dropped.value)
            assert "spam" not in worker._mirrors
            assert refuses(dropped.value, ListPolicy(required=True))
            assert not refuses(dropped.value, ListPolicy(required=True, fail_open=True))
            assert not refuses(dropped.value, ListPolicy(required=False))
            with pytest.raises(UnknownList):  # and stays missing
                await worker.lookup("spam", frames, radius=0)
            # Loaded again: the worker finds the new list.
            await operator.add("spam", entries[:1])
            assert len(await worker.lookup("spam", frames, radius=0)) == 1

    run(body())


def test_a_drop_without_its_marker_reads_as_a_vanished_list(redis_url: str) -> None:
    """`guard eval`'s temporary lists leave no marker: a store that had read the list then
    reports it vanished (as after a flush), the H37 rule for lists lost by accident."""
    entries = [Entry(0x0F0F_3C3C_5A5A_9696, 1, "a")]

    async def body() -> None:
        async with Store.from_url(redis_url) as worker, Store.from_url(redis_url) as operator:
            await operator.add("spam", entries)
            assert len(await worker.lookup("spam", [frame_of(entries[0].ahash)], radius=0)) == 1
            assert await operator.drop("spam") >= 7
            assert keys_of(redis_url, "spam") == []
            with pytest.raises(StoreInconsistent):
                await worker.lookup("spam", [frame_of(entries[0].ahash)], radius=0)

    run(body())


def test_rename_copies_every_entry_and_drops_the_old_list(
    folder: Path,  # noqa: F811
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    cli(capsys, "load", str(folder), "--list", "typo", "--skip-bad", "--redis-url", redis_url)
    listing = tmp_path / "more.txt"
    listing.write_text("0123456789abcdef 0123456789abcdef report 7\n")
    cli(capsys, "import", str(listing), "--list", "typo", "--redis-url", redis_url)
    cli(capsys, "load", str(folder), "--list", "taken", "--skip-bad", "--redis-url", redis_url)
    before = exported(capsys, redis_url, "typo")
    assert len(before) == 6 and any(e["label"] == "report 7" for e in before)
    assert any(e["source"] for e in before)

    code, out, err = cli(capsys, "rename", "typo", "taken", "--redis-url", redis_url)
    assert code == 1 and "exists already" in err
    code, out, err = cli(capsys, "rename", "typo", "typo", "--redis-url", redis_url)
    assert code == 1
    code, out, err = cli(capsys, "rename", "nothing", "other", "--redis-url", redis_url)
    assert code == 1 and "no list named 'nothing'" in err
    assert names(capsys, redis_url) == ["taken", "typo"]

    code, out, _ = cli(capsys, "rename", "typo", "spam", "--json", "--redis-url", redis_url)
    assert code == 0 and json.loads(out) == {"list": "spam", "renamed_from": "typo", "entries": 6}
    assert exported(capsys, redis_url, "spam") == before  # labels, sources, times
    assert names(capsys, redis_url) == ["spam", "taken"]
    assert keys_of(redis_url, "typo") == [drop_marker("typo").encode()]
    code, out, _ = cli(capsys, "lists", "--verify", "--redis-url", redis_url)
    assert code == 0, out
    code, out, _ = cli(
        capsys, "check", "--json", "--list", "spam", str(folder), "--redis-url", redis_url
    )
    assert code == 1  # the listed photos are rejected through the new name


def test_a_rename_cut_short_leaves_the_new_list_marked_incomplete(redis_url: str) -> None:
    """Interrupted after its first batch, the new list carries its pending note: verify says it
    is not whole, another rename into it is refused, and dropping it lets the rename run."""
    entries = [Entry(0x0F0F_3C3C_5A5A_9696 + i * 0x1111, i + 1, f"e{i}") for i in range(3)]

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("old", entries)
            await writes.add(
                store._client, store._add, store._catalog, "new", entries[:1], 4, pending="x"
            )
            report = await store.verify("new")
            assert not report.ok and "incomplete" in report.findings[0]
            with pytest.raises(StoreError, match="exists already"):
                await store.rename("old", "new")
            await store.drop("new", keep_marker=True)
            assert await store.rename("old", "new") == 3
            report = await store.verify("new")
            assert report.ok and report.entries == 3, report.findings
            assert [i.name for i in await store.lists()] == ["new"]

    run(body())
