"""Mode switches made on the review page: a list's ``mode`` stored in Redis (``guard:modes``),
overriding the config file's until cleared, so every worker obeys it without editing the file.

The middleware reads the switches at most once a second (:class:`ModeOverrides`) and puts them
over its config, including a config reloaded from the file since.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, cast

from guard.config import Config
from guard.errors import StoreError

if TYPE_CHECKING:
    from guard.middleware import GuardMiddleware
    from guard.store import Store

logger = logging.getLogger("guard")

MODES = ("enforce", "shadow")
#: Seconds between two reads of the switches by one middleware.
INTERVAL = 1.0


def with_modes(config: Config, modes: Mapping[str, str]) -> Config:
    """``config`` with each switched list's policy in its switched mode (unknown modes are
    ignored: a switch written by a newer guard must not break this one)."""
    lists = dict(config.lists)
    for name, mode in modes.items():
        policy = config.policy(name)
        if mode in MODES and policy.mode != mode:
            lists[name] = dataclasses.replace(policy, mode=cast(Literal["enforce", "shadow"], mode))
    if lists == dict(config.lists):
        return config
    return dataclasses.replace(config, lists=lists)


class ModeOverrides:
    """Keeps a middleware's config in the modes switched on the review page."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.modes: dict[str, str] = {}
        self._read_at = -float("inf")
        self._base: Config | None = None  # the config as given or reloaded, without switches
        self._applied: Config | None = None  # what this object put in force
        self._wanted: tuple[int, tuple[tuple[str, str], ...]] | None = None
        self._reading: asyncio.Task[None] | None = None

    async def poll(self, guard: GuardMiddleware) -> None:
        """Put the switches last read over the config in force (at once after a reload), and
        start reading them again if ``interval`` has passed.

        The read runs beside the requests, never in one: a slow or silent Redis delays a switch,
        never an upload. It uses only a store the lookups opened, while its breaker is closed.
        """
        if guard.config is not self._applied:
            self._base = guard.config  # first call, or the file was reloaded
        now = time.monotonic()
        store = guard.opened_store
        if (
            store is not None
            and (self._reading is None or self._reading.done())
            and now - self._read_at >= self.interval
            and guard.supervisor.breaker.state == "closed"
        ):
            self._read_at = now
            self._reading = asyncio.get_running_loop().create_task(self._read(store))
        assert self._base is not None
        wanted = (id(self._base), tuple(sorted(self.modes.items())))
        if wanted != self._wanted:
            self._wanted = wanted
            guard.config = with_modes(self._base, self.modes)
        self._applied = guard.config

    async def _read(self, store: Store) -> None:
        try:
            self.modes = await store.mode_overrides()
        except StoreError as error:  # the last switches stay
            logger.debug("guard: mode switches not read: %s", error)

    def close(self) -> None:
        """Stop a read in progress (the store is closing)."""
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
