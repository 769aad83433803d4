"""The CLI and the middleware open the store a config names the same way (guard.store.open_store):
same URL or embedded file, timeouts and mirror settings."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from guard.cli import _open_store
from guard.config import Config, RedisSettings
from guard.middleware import GuardMiddleware
from guard.store import MirrorSettings, Store, StoreSettings, open_store, store_settings


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not called")


CONFIGS = {
    "url": RedisSettings(
        url="redis://127.0.0.1:1/0", socket_timeout=1.5, connect_timeout=0.7, mirror_max_entries=9
    ),
    "url without mirror": RedisSettings(url="redis://127.0.0.1:1/0", mirror_max_entries=0),
    "embedded file": RedisSettings(embedded_path="/srv/guard/lists.db"),
    "embedded default": RedisSettings(),
}


def _opened_by_both(config: Config, monkeypatch: pytest.MonkeyPatch) -> list[StoreSettings]:
    """The settings the CLI and the middleware each open a store with (nothing is opened)."""
    opened: list[StoreSettings] = []

    def record(settings: StoreSettings) -> Store:
        opened.append(settings)
        return object.__new__(Store)

    monkeypatch.setattr(StoreSettings, "open", record)
    _open_store(argparse.Namespace(config_object=config, redis_url=None, data_dir=None))
    asyncio.run(GuardMiddleware(_app, config=config).store())
    return opened


@pytest.mark.parametrize("name", CONFIGS)
def test_the_cli_and_the_middleware_open_the_same_store(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GUARD_REDIS_URL", raising=False)
    monkeypatch.setenv("GUARD_HOME", str(tmp_path))
    if name == "embedded file":
        monkeypatch.delenv("GUARD_HOME")
    config = Config(redis=CONFIGS[name])
    cli, middleware = _opened_by_both(config, monkeypatch)
    assert cli == middleware == store_settings(config)
    if name == "url":
        assert (cli.socket_timeout, cli.connect_timeout) == (1.5, 0.7)
        assert cli.mirror == MirrorSettings(max_entries=9)
    if name == "url without mirror":
        assert cli.mirror is None
    if name == "embedded file":
        assert (cli.url, cli.embedded_path) == (None, Path("/srv/guard/lists.db"))
    if name == "embedded default":
        assert cli.embedded_path == tmp_path / "redis.db"


def test_the_environment_and_the_command_line_override_the_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = Config(redis=RedisSettings(embedded_path="/srv/guard/lists.db"))
    monkeypatch.setenv("GUARD_REDIS_URL", "redis://127.0.0.1:2/0")
    assert store_settings(config).url == "redis://127.0.0.1:2/0"
    assert store_settings(config, redis_url="redis://127.0.0.1:3/0").url == "redis://127.0.0.1:3/0"
    monkeypatch.delenv("GUARD_REDIS_URL")
    assert store_settings(config, data_dir=tmp_path).embedded_path == tmp_path / "redis.db"


def test_open_store_hands_the_settings_to_the_store() -> None:
    config = Config(
        redis=RedisSettings(
            url="redis://127.0.0.1:1/0",
            socket_timeout=1.5,
            connect_timeout=0.7,
            mirror_max_entries=9,
        )
    )
    store = open_store(config)
    settings = store._client.connection_pool.connection_kwargs
    assert (settings["socket_timeout"], settings["socket_connect_timeout"]) == (1.5, 0.7)
    assert store._mirror_cache.settings == MirrorSettings(max_entries=9)
    asyncio.run(store.close())
