"""The list commands end to end: load, check, lists, remove, export, import.

In-process against the session's real Redis server (--redis-url), and as real subprocesses on the
embedded default, where one process loads and the next one checks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
from conftest import LOCAL_PHOTOS, data_file, encode, photo, run_guard
from PIL import Image
from raw_records import raw_records

from guard import hash_file, to_hex
from guard.bands import default_layout, list_key
from guard.cli import main
from guard.hashing import to_signed

LISTED = LOCAL_PHOTOS[:5]
UNLISTED = LOCAL_PHOTOS[5:]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A blocklist folder: five photos (one in a subfolder), a text file and a flat image."""
    spam = tmp_path / "spam"
    (spam / "more").mkdir(parents=True)
    for i, name in enumerate(LISTED):
        target = spam / ("more" if i == 0 else ".") / Path(name).name
        shutil.copy(data_file(name), target)
    (spam / "notes.txt").write_text("not an image")
    Image.new("RGB", (64, 64), "white").save(spam / "blank.png")
    return spam


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_load_reports_added_present_and_skipped_and_is_idempotent(
    folder: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys, "load", str(folder), "--json", "--skip-bad", "--redis-url", redis_url
    )
    assert code == 0
    summary = json.loads(out)
    assert (summary["list"], summary["added"], summary["present"]) == ("spam", 5, 0)
    assert sorted(summary["skipped"], key=lambda s: s["file"]) == [
        {
            "file": "blank.png",
            "reason": "low-information image (flat, nearly flat or tiny): "
            "it would match any such image",
        },
        {"file": "notes.txt", "reason": "not an image: the bytes match no known image format"},
    ]
    code, out, _ = cli(
        capsys, "load", str(folder), "--json", "--skip-bad", "--redis-url", redis_url
    )
    again = json.loads(out)
    assert (code, again["added"], again["present"]) == (0, 0, 5)
    code, out, _ = cli(capsys, "lists", "--json", "--redis-url", redis_url)
    [info] = json.loads(out)
    assert (info["list"], info["entries"], info["bands"], info["version"]) == ("spam", 5, 4, 1)


def test_check_rejects_edited_copies_and_allows_other_photos(
    folder: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--list", "spam", "--redis-url", redis_url)
    queries = []
    for name in LISTED:
        image = photo(name)
        recompressed, half = (
            tmp_path / f"q50-{Path(name).name}",
            tmp_path / f"half-{Path(name).name}",
        )
        recompressed.write_bytes(encode(image, "JPEG", quality=50))
        half.write_bytes(
            encode(image.resize((image.width // 2, image.height // 2)), "JPEG", quality=85)
        )
        queries += [str(recompressed), str(half)]
    others = [str(data_file(name)) for name in UNLISTED]
    code, out, _ = cli(capsys, "check", *queries, *others, "--json", "--redis-url", redis_url)
    reports = json.loads(out)
    assert code == 1  # some file would be rejected
    assert [r["verdict"] for r in reports] == ["reject"] * len(queries) + ["allow"] * len(others)
    for report in reports[: len(queries)]:
        best = report["matches"][0]
        assert (
            set(best) >= {"list", "distance", "source"}
            and best["list"] == "spam"
            and best["confirmed"]
        )
        assert Path(report["file"]).name.split("-", 1)[1] == Path(best["source"]).name
    code, out, _ = cli(capsys, "check", *others, "--redis-url", redis_url)
    assert code == 0 and out.startswith("ALLOW")


def test_check_exit_status_and_errors_for_bad_files(
    folder: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    code, out, _ = cli(
        capsys, "check", str(data_file("hard/truncated.jpg")), "--json", "--redis-url", redis_url
    )
    [report] = json.loads(out)
    # 1, as `guard hash` of the same file: each file's problem is in the output (3 is the store's).
    assert code == 1 and report["verdict"] == "error" and "truncated" in report["error"]


def test_export_import_round_trip_and_plain_imagehash_lines(
    folder: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    code, exported, _ = cli(capsys, "export", "--list", "spam", "--redis-url", redis_url)
    assert code == 0 and len(exported.splitlines()) == 5
    dump = tmp_path / "spam.txt"
    dump.write_text(exported)
    code, out, _ = cli(
        capsys, "import", str(dump), "--list", "copy", "--json", "--redis-url", redis_url
    )
    assert json.loads(out)["added"] == 5
    _, copied, _ = cli(capsys, "export", "--list", "copy", "--redis-url", redis_url)
    assert copied == exported  # same hashes, same labels (the source file names)

    plain = tmp_path / "imagehash.txt"
    plain.write_text("# exported by imagehash\nffff000000e0ff00\n\nnot-a-hash\n0000000000000000\n")
    code, out, _ = cli(
        capsys, "import", str(plain), "--list", "ih", "--json", "--redis-url", redis_url
    )
    summary = json.loads(out)
    assert summary["added"] == 1
    assert [s["file"] for s in summary["skipped"]] == ["imagehash.txt:4", "imagehash.txt:5"]
    _, lines, _ = cli(capsys, "export", "--list", "ih", "--redis-url", redis_url)
    assert lines.split()[:2] == ["ffff000000e0ff00", "-"]


def test_an_imported_ahash_without_phash_flags_and_never_rejects(
    folder: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = folder / Path(LISTED[1]).name
    plain = tmp_path / "imagehash.txt"
    plain.write_text(to_hex(hash_file(image).ahash) + "\n")  # the very image, aHash only
    code, _, err = cli(capsys, "import", str(plain), "--list", "ih", "--redis-url", redis_url)
    assert code == 0 and "1 of 1 entries have no pHash" in err and "never reject" in err
    code, out, _ = cli(capsys, "check", str(image), "--json", "--redis-url", redis_url)
    [report] = json.loads(out)
    assert report["verdict"] == "flag"  # distance 0, yet only a flag: nothing confirms it
    assert report["matches"][0]["distance"] == 0 and report["matches"][0]["confirmed"] is False
    code, out, _ = cli(capsys, "check", str(image), "--redis-url", redis_url)
    assert "no pHash: flags at most" in out
    # A list loaded from the image itself still rejects it.
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    _, out, _ = cli(capsys, "check", str(image), "--json", "--redis-url", redis_url)
    assert json.loads(out)[0]["verdict"] == "reject"


def test_remove_by_hash_and_by_file(
    folder: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    first, second = (folder / Path(LISTED[1]).name), (folder / Path(LISTED[2]).name)
    by_hash = to_hex(hash_file(first).ahash)
    code, out, _ = cli(
        capsys, "remove", "--list", "spam", by_hash, str(second), "--json", "--redis-url", redis_url
    )
    assert code == 0
    assert json.loads(out)["removed"] == [
        {"target": by_hash, "removed": 1},
        {"target": str(second), "removed": 1},
    ]
    code, out, _ = cli(capsys, "remove", "--list", "spam", by_hash, "--redis-url", redis_url)
    assert code == 1 and "removed 0" in out
    _, out, _ = cli(capsys, "check", str(first), "--json", "--redis-url", redis_url)
    assert json.loads(out)[0]["verdict"] == "allow"


def test_store_down_is_a_message_not_a_traceback(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = cli(capsys, "load", str(folder), "--redis-url", f"redis://127.0.0.1:{port}")
    assert code == 3
    assert err.startswith("guard: Redis is unavailable")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load", "/nonexistent/folder"], "no such file or folder"),
        (["check", "x.jpg", "--list", "bad name"], "list name"),
        (["load", ".", "--list", "a{b}"], "list name"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, *argv, "--redis-url", redis_url)
    assert code == 2 and message in err


def test_embedded_default_persists_between_processes(folder: Path, tmp_path: Path) -> None:
    """No Redis URL anywhere: `guard load` in one process, `guard check` in the next, from
    another working directory: the store is the per-user one, not one under the working dir."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GUARD_REDIS_URL", "GUARD_CONFIG", "GUARD_HOME")
    }
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    env["GUARD_EMBEDDED_IDLE"] = "0.5"

    def guard(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        return run_guard(env, *argv, cwd=cwd)

    loaded = guard(work, "load", str(folder), "--json", "--skip-bad")
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["added"] == 5
    assert not (work / ".guard").exists()
    store = tmp_path / "data" / "guard"
    assert (store / "server.lock").is_file()
    edited = tmp_path / "edited.jpg"
    edited.write_bytes(encode(photo(LISTED[3]), "JPEG", quality=50))
    checked = guard(elsewhere, "check", str(edited), str(data_file(UNLISTED[0])), "--json")
    assert checked.returncode == 1, checked.stderr
    assert [r["verdict"] for r in json.loads(checked.stdout)] == ["reject", "allow"]
    assert "Traceback" not in loaded.stderr + checked.stderr
    deadline = time.monotonic() + 20
    while (store / "redis.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the server saves and stops once idle
    assert (store / "redis.db").is_file() and not (store / "redis.sock").exists()


def test_config_file_and_environment_select_policy_and_server(
    folder: Path,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GUARD_REDIS_URL picks the server; --config's per-list policy decides (here: no dihedral)."""
    monkeypatch.setenv("GUARD_REDIS_URL", redis_url)
    assert cli(capsys, "load", str(folder), "--skip-bad")[0] == 0
    mirrored = tmp_path / "mirrored.jpg"
    mirrored.write_bytes(
        encode(photo(LISTED[4]).transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG", quality=80)
    )
    code, out, _ = cli(capsys, "check", str(mirrored), "--json")
    assert code == 1 and json.loads(out)[0]["matches"][0]["transform"] == "flip_left_right"
    config = tmp_path / "guard.yaml"
    config.write_text("lists:\n  spam: {dihedral: false}\n")
    code, out, _ = cli(capsys, "check", str(mirrored), "--json", "--config", str(config))
    assert code == 0 and json.loads(out)[0]["verdict"] == "allow"
    config.write_text("lists:\n  spam: {dihedral: maybe}\n")
    code, _, err = cli(capsys, "check", str(mirrored), "--config", str(config))
    assert code == 3 and "lists.spam.dihedral" in err


# --- lists --verify and the eviction check (hostile cases H37, H38) ----------------------------


def _tamper(redis_url: str, how: str) -> str:
    """Damage the loaded list `spam` one way; return the finding `lists --verify` must print."""
    client = redis.Redis.from_url(redis_url)
    try:
        ahash = raw_records(client, "spam")[0][0]
        band, value = 2, default_layout(4).values(ahash)[2]
        key = list_key("spam", f"b{band}:{value}")
        if how == "srem":
            assert client.srem(key, to_signed(ahash)) == 1
            return "1 band memberships missing"
        if how == "stray":
            assert client.sadd(list_key("spam", "b0:12345"), to_signed(0x0123456789ABCDEF)) == 1
            return "1 stray band members"
        if how == "wrong set":
            # A real aHash in a band set its band value does not name: stray (and still present).
            assert client.sadd(list_key("spam", f"b1:{(value + 1) % 65536}"), to_signed(ahash))
            return "1 stray band members"
        if how == "meta":
            client.hincrby(list_key("spam", "meta"), "entries", 3)
            return "meta counts 8 entries, the entry records hold 5"
        if how == "snapshot":
            # One record (of the 5, whatever their format) replaced by one that is no entry.
            snap = client.get(list_key("spam", "snap"))
            assert isinstance(snap, bytes) and len(snap) % 5 == 0
            size = len(snap) // 5
            client.set(list_key("spam", "snap"), snap[size:] + b"\x01" * size)
            return "snapshot: 1 missing, 1 stray"
        raise AssertionError(how)
    finally:
        client.close()


def test_verify_says_ok_for_a_whole_list(
    folder: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    code, out, _ = cli(capsys, "lists", "--verify", "spam", "--json", "--redis-url", redis_url)
    [report] = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert (report["missing"], report["stray"]) == (0, 0)
    assert report["snapshot"] in (None, 5)  # the store keeps a snapshot, or not (yet)
    client = redis.Redis.from_url(redis_url)
    client.delete(list_key("spam", "snap"))
    client.close()
    code, out, err = cli(capsys, "lists", "--verify", "--redis-url", redis_url)
    assert (code, out, err) == (0, "spam: ok: 5 entries, 5 aHashes, 4 bands; no snapshot\n", "")


def test_verify_checks_the_snapshot_the_store_keeps(
    folder: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    code, out, _ = cli(capsys, "lists", "--verify", "--json", "--redis-url", redis_url)
    [report] = json.loads(out)
    assert (code, report["ok"], report["snapshot"], report["findings"]) == (0, True, 5, [])


@pytest.mark.parametrize("how", ["srem", "stray", "wrong set", "meta", "snapshot"])
def test_verify_finds_each_kind_of_damage(
    how: str, folder: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "load", str(folder), "--redis-url", redis_url)
    finding = _tamper(redis_url, how)
    code, out, _ = cli(capsys, "lists", "--verify", "spam", "--redis-url", redis_url)
    assert code == 1
    assert out.startswith("spam: INCONSISTENT: 5 entries, 5 aHashes, 4 bands; ")
    assert finding in out
    code, out, _ = cli(capsys, "lists", "--verify", "--json", "--redis-url", redis_url)
    [report] = json.loads(out)
    assert code == 1 and report["ok"] is False and finding in report["findings"]
    if how in ("srem", "stray", "wrong set"):
        assert report["examples"][0].startswith("missing " if how == "srem" else "stray ")


def test_verify_a_missing_list_and_a_store_that_is_down(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "lists", "--verify", "nothere", "--redis-url", redis_url)
    assert (code, out) == (1, "nothere: MISSING (no such list)\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = cli(capsys, "lists", "--verify", "--redis-url", f"redis://127.0.0.1:{port}")
    assert (code, out) == (3, "")
    assert err.startswith("guard: Redis is unavailable") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("policy", "allow", "code"),
    [("allkeys-lru", False, 3), ("allkeys-lru", True, 0), ("volatile-lru", False, 0)],
)
def test_commands_refuse_a_redis_that_may_evict_the_lists(
    policy: str,
    allow: bool,
    code: int,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text(f"redis:\n  allow_eviction: {str(allow).lower()}\n")
    client = redis.Redis.from_url(redis_url)
    client.config_set("maxmemory-policy", policy)
    try:
        got, out, err = cli(capsys, "lists", "--config", str(config), "--redis-url", redis_url)
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()
    assert got == code
    if policy.startswith("allkeys"):
        assert f"maxmemory-policy is {policy}" in err and "noeviction" in err
        assert err.startswith("guard: warning: " if allow else "guard: Redis's maxmemory-policy")
        assert err.count("\n") == 1
    else:
        assert (out, err) == ("no lists\n", "")
