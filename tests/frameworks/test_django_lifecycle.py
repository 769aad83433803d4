"""Django's ASGI handler has no lifespan: how guard's store opens and closes under uvicorn.

The example answers the lifespan events itself (examples/django_app/asgi.py), so with
``--lifespan auto`` (uvicorn's default) or ``on`` the server's shutdown reaches guard, which
closes the store and gives up its lease on the embedded Redis. With ``--lifespan off`` nothing
tells guard; the lease ends with the process. Either way the embedded Redis, shared by every
process on the data directory, saves and stops once no process has held a lease for
GUARD_EMBEDDED_IDLE seconds, and the next process starts it again on the saved data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run

from frameworks.conftest import guide_config
from frameworks.servers import APPS, Server, exchange, start, stop, wait_listening
from frameworks.tricks import B, Trick, blocked, clean, file_part, form, multipart_type
from guard import embedded as embedded_redis
from guard import hash_file
from guard.store import Store
from guard.types import Entry

#: Slow (servers in child processes): not in the fast path, -m 'not slow'.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IDLE = "0.5"  # seconds without a lease before the embedded Redis stops


def running(folder: Path) -> int | None:
    """The pid of the supervisor of the embedded Redis in ``folder``, if one runs."""
    pid = embedded_redis.record(folder / "redis.db").get("pid")
    return pid if isinstance(pid, int) and embedded_redis._alive(pid) else None


def wait_stopped(folder: Path, timeout: float = 15.0) -> float:
    began = time.monotonic()
    while running(folder) is not None:
        assert time.monotonic() - began < timeout, "the embedded Redis did not stop"
        time.sleep(0.02)
    return time.monotonic() - began


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Path]:
    """A config on an embedded Redis in tmp_path holding the `spam` list (nothing running)."""
    database = tmp_path / "store" / "redis.db"

    async def load() -> None:
        async with Store.embedded(database) as store:
            spam = sorted((ROOT / "blocklists" / "spam").glob("*.jpg"))
            await store.add(
                "spam", [Entry(h.ahash, h.phash, p.name) for p in spam for h in [hash_file(p)]]
            )

    run(load())
    embedded_redis.stop(database)  # saved; the tests start from nothing running
    config = tmp_path / "guard.yaml"
    config.write_text(guide_config() + f"redis:\n  embedded_path: {database}\n")
    yield config
    embedded_redis.stop(database)  # never leave one behind


def upload(data: bytes) -> Trick:
    return Trick(
        "-", "upload", "/upload", form(B, file_part(data)), multipart_type(b"boundary=" + B)
    )


def served(config: Path, log_dir: Path, lifespan: str) -> Server:
    return start(
        f"django-{lifespan}",
        APPS["django"],
        {"GUARD_CONFIG": str(config), "GUARD_REDIS_URL": None, "GUARD_EMBEDDED_IDLE": IDLE},
        log_dir,
        "--lifespan",
        lifespan,
    )


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_with_lifespan_the_store_closes_at_shutdown(
    embedded: Path, tmp_path: Path, lifespan: str
) -> None:
    folder = tmp_path / "store"
    server = served(embedded, tmp_path, lifespan)
    try:
        wait_listening(server)
        opened_at_start = running(folder) is not None
        assert exchange(server.port, upload(clean()).request(server.port)).status == 200
        assert exchange(server.port, upload(blocked()).request(server.port)).status == 403
        assert running(folder) is not None
    finally:
        began = time.monotonic()
        stop(server)
        took = time.monotonic() - began
    after = wait_stopped(folder)
    when = "at start-up" if opened_at_start else "on the first request"
    print(
        f"\n--lifespan {lifespan}: store opened {when}; uvicorn stopped in {took:.2f}s; "
        f"embedded Redis stopped {after:.2f}s later (idle timeout {IDLE}s)"
    )
    assert (folder / "redis.db").is_file()
    assert "Traceback" not in server.output(), server.output()


def test_without_lifespan_the_store_opens_on_the_first_request_and_stops_after_the_server(
    embedded: Path, tmp_path: Path
) -> None:
    """``--lifespan off``: nothing tells guard the server stops, and uvicorn ends by re-raising
    SIGTERM, so no atexit hook runs either. The lease ends with the process all the same, so
    the embedded Redis stops once idle; the next server starts it again on the saved data.
    docs/frameworks.md says so."""
    folder = tmp_path / "store"
    server = served(embedded, tmp_path, "off")
    try:
        wait_listening(server)
        assert running(folder) is None, "the store opened before any request"
        assert exchange(server.port, upload(blocked()).request(server.port)).status == 403
        first = running(folder)
        assert first is not None
    finally:
        stop(server)
    after = wait_stopped(folder)
    print(f"\n--lifespan off: embedded Redis stopped {after:.2f}s after uvicorn exited")
    again = served(embedded, tmp_path, "off")
    try:
        wait_listening(again)
        assert exchange(again.port, upload(blocked()).request(again.port)).status == 403
        assert running(folder) not in (None, first)
    finally:
        stop(again)
