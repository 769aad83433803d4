"""Django's ASGI handler has no lifespan: how guard's store opens and closes under uvicorn.

The example answers the lifespan events itself (examples/django_app/asgi.py), so with
``--lifespan auto`` (uvicorn's default) or ``on`` the server's shutdown reaches guard, which
closes the store: the embedded Redis saves its file and stops before uvicorn exits. With
``--lifespan off`` nothing tells guard; the store stays open until the process exits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run

from frameworks.conftest import guide_config
from frameworks.servers import APPS, Server, exchange, start, stop, wait_listening
from frameworks.tricks import B, Trick, blocked, clean, file_part, form, multipart_type
from guard import hash_file
from guard.store import Entry, Store

psutil = pytest.importorskip("psutil", reason="psutil comes with the 'embedded' extra")

ROOT = Path(__file__).resolve().parents[2]


def embedded_servers(folder: Path) -> list[Any]:
    """The redis-server processes serving the embedded database in ``folder``."""
    found = []
    for process in psutil.process_iter(["name"]):
        try:
            if (
                process.info["name"] == "redis-server"
                and Path(process.cwd()) == folder
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


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
    config = tmp_path / "guard.yaml"
    config.write_text(guide_config() + f"redis:\n  embedded_path: {database}\n")
    yield config
    for process in embedded_servers(database.parent):  # never leave one behind
        process.kill()


def upload(data: bytes) -> Trick:
    return Trick(
        "-", "upload", "/upload", form(B, file_part(data)), multipart_type(b"boundary=" + B)
    )


def served(config: Path, log_dir: Path, lifespan: str) -> Server:
    return start(
        f"django-{lifespan}",
        APPS["django"],
        {"GUARD_CONFIG": str(config), "GUARD_REDIS_URL": None},
        log_dir,
        "--lifespan",
        lifespan,
    )


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_with_lifespan_the_store_closes_at_shutdown(
    embedded: Path, tmp_path: Path, lifespan: str
) -> None:
    folder = tmp_path / "store"
    saved = (folder / "redis.db").stat().st_mtime_ns
    server = served(embedded, tmp_path, lifespan)
    try:
        wait_listening(server)
        opened_at_start = bool(embedded_servers(folder))
        assert exchange(server.port, upload(clean()).request(server.port)).status == 200
        assert exchange(server.port, upload(blocked()).request(server.port)).status == 403
        assert len(embedded_servers(folder)) == 1
    finally:
        began = time.monotonic()
        stop(server)
        took = time.monotonic() - began
    resaved = (folder / "redis.db").stat().st_mtime_ns != saved
    when = "at start-up" if opened_at_start else "on the first request"
    print(
        f"\n--lifespan {lifespan}: store opened {when}; uvicorn stopped in {took:.2f}s; "
        f"embedded Redis stopped: {not embedded_servers(folder)}; file saved at shutdown: {resaved}"
    )
    assert embedded_servers(folder) == [], "the embedded Redis outlived the server"
    assert resaved, "the embedded Redis did not save its file at shutdown"
    assert "Traceback" not in server.output(), server.output()


def test_without_lifespan_the_store_opens_on_the_first_request_and_outlives_the_server(
    embedded: Path, tmp_path: Path
) -> None:
    """``--lifespan off``: nothing tells guard the server stops, and uvicorn ends by re-raising
    SIGTERM, so no atexit hook runs either. The embedded Redis keeps running (the next process
    on the same file uses it); with a Redis URL the connections just close with the process.
    docs/frameworks.md says so."""
    folder = tmp_path / "store"
    server = served(embedded, tmp_path, "off")
    try:
        wait_listening(server)
        assert embedded_servers(folder) == [], "the store opened before any request"
        assert exchange(server.port, upload(blocked()).request(server.port)).status == 403
        assert len(embedded_servers(folder)) == 1
    finally:
        stop(server)
    left = embedded_servers(folder)
    print(f"\n--lifespan off: embedded Redis still running after uvicorn exited: {bool(left)}")
    assert len(left) == 1
    again = served(embedded, tmp_path, "off")  # a new server shares the running one
    try:
        wait_listening(again)
        assert exchange(again.port, upload(blocked()).request(again.port)).status == 403
        assert embedded_servers(folder) == left
    finally:
        stop(again)
