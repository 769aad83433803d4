"""Hot reload: the config file re-read on SIGHUP, or when it changes, without a restart.

A running middleware polls the file's identity (modification time, size, inode: an editor's
save-by-rename counts) at most once per ``POLL_SECONDS``, on a request; SIGHUP asks for a
reload at once, where guard may take the signal (below). A new file is read and validated in a
worker thread, whole: one with an error, or one that changes what cannot change while running
(the ``redis`` section: the store is open), is logged as an ERROR and ignored; the config in
force stays, and the same file is not retried until it changes again. Requests in flight finish
under the config they started with.

SIGHUP is taken only on asyncio's main-thread loop and only while nobody else handles it (its
handler is the default, which would end the process): under gunicorn, whose master uses HUP to
restart its workers, guard leaves it alone, and the restarted workers read the new file anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable

import anyio

from guard.config import Config, load_config
from guard.errors import ConfigError

logger = logging.getLogger("guard")

#: Seconds between two looks at the file.
POLL_SECONDS = 1.0

FileIdentity = tuple[int, int, int] | None


def identity(path: str) -> FileIdentity:
    """What tells one version of the file from another; None when it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ConfigReloader:
    """Watches one config file for a middleware; ``apply`` installs a new, valid config."""

    def __init__(
        self,
        path: str,
        current: Config,
        apply: Callable[[Config], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.current = current
        self._apply = apply
        self._clock = clock
        self._seen = identity(path)
        self._next_poll = clock() + POLL_SECONDS
        self._lock: anyio.Lock | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Reloads applied and refused, since start (for tests and metrics).
        self.applied = 0
        self.refused = 0

    async def poll(self) -> None:
        """Reload if the file changed since the last look (which is at most once a second)."""
        now = self._clock()
        if now < self._next_poll:
            return
        self._next_poll = now + POLL_SECONDS
        if identity(self.path) != self._seen:
            await self.reload()

    async def reload(self) -> bool:
        """Read the file now; True when a new config was applied."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            self._seen = identity(self.path)
            try:
                config = await anyio.to_thread.run_sync(load_config, self.path)
                self._check_unchanged(config)
                await self._apply(config)
            except ConfigError as error:
                self.refused += 1
                logger.error("guard: config not reloaded, the running one stays: %s", error)
                return False
            self.current = config
            self.applied += 1
            logger.warning("guard: config reloaded from %s", self.path)
            return True

    def _check_unchanged(self, config: Config) -> None:
        if config.redis != self.current.redis:
            raise ConfigError(
                "the redis section changed: restart the app to apply it (the store is open)",
                key="redis",
                source=self.path,
            )

    # --- SIGHUP ---------------------------------------------------------------------------------

    def install_sighup(self) -> bool:
        """Reload on SIGHUP from now on, if guard may take the signal (see the module)."""
        if self._signal_loop is not None or not hasattr(signal, "SIGHUP"):
            return self._signal_loop is not None
        if threading.current_thread() is not threading.main_thread():
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # not asyncio (trio): file changes still reload
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL:
            logger.info("guard: SIGHUP has a handler already; reloading on file changes only")
            return False
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        self._signal_loop = loop
        return True

    def _on_sighup(self) -> None:
        logger.info("guard: SIGHUP: reloading %s", self.path)
        assert self._signal_loop is not None
        task = self._signal_loop.create_task(self._reload_quietly())
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _reload_quietly(self) -> None:
        try:
            await self.reload()
        except Exception:  # noqa: BLE001 - a signal's task has nobody to raise to
            logger.exception("guard: reload on SIGHUP failed; the running config stays")

    def uninstall_sighup(self) -> None:
        """Give SIGHUP back (at shutdown), so a later handler or the default applies again."""
        loop, self._signal_loop = self._signal_loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_signal_handler(signal.SIGHUP)
