"""One way to open the store a config names, for the CLI and the middleware alike: the same
URL or embedded file, timeouts and mirror settings from the same config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from guard.config import Config, resolve_embedded_path, resolve_redis_url
from guard.store.mirror_cache import MirrorSettings
from guard.store.store import Store

#: Seconds both timeouts allow on the embedded Redis: a local server, but one that may be
#: loading its file (the config's timeouts are for a remote Redis).
EMBEDDED_TIMEOUT = 5.0


@dataclass(frozen=True)
class StoreSettings:
    """Everything :func:`open_store` decides from a config (tests compare them)."""

    url: str | None  # None: the embedded Redis persisted at ``embedded_path``
    embedded_path: Path | None
    socket_timeout: float
    connect_timeout: float
    mirror: MirrorSettings | None  # None: every lookup goes to the Redis index

    def open(self) -> Store:
        """The store (the embedded server starts here if it is not running: it may block)."""
        if self.url is not None:
            return Store.from_url(
                self.url,
                socket_timeout=self.socket_timeout,
                connect_timeout=self.connect_timeout,
                mirror=self.mirror,
            )
        return Store.embedded(
            self.embedded_path,
            socket_timeout=self.socket_timeout,
            connect_timeout=self.connect_timeout,
            mirror=self.mirror,
        )


def store_settings(
    config: Config,
    *,
    redis_url: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> StoreSettings:
    """How to open the store ``config`` names; ``redis_url`` and ``data_dir`` are the command
    line's overrides (``--redis-url``, ``--data-dir``; see :func:`guard.config.resolve_redis_url`
    and :func:`guard.config.resolve_embedded_path` for the environment's)."""
    redis = config.redis
    limit = redis.mirror_max_entries
    mirror = MirrorSettings(max_entries=limit, shared=redis.mirror_shared) if limit else None
    url = resolve_redis_url(config, redis_url)
    if url:
        return StoreSettings(url, None, redis.socket_timeout, redis.connect_timeout, mirror)
    path = resolve_embedded_path(config, data_dir)
    return StoreSettings(None, path, EMBEDDED_TIMEOUT, EMBEDDED_TIMEOUT, mirror)


def open_store(
    config: Config,
    *,
    redis_url: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Store:
    """The store ``config`` names, as the CLI and the middleware open it (not yet connected; an
    embedded server is started or leased here, so call it off the event loop)."""
    return store_settings(config, redis_url=redis_url, data_dir=data_dir).open()
