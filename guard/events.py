"""The decision stream: every recorded decision appended to a bounded Redis Stream.

(Skeleton: the contract the middleware wires; the writer and the reader land with issue 15.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from guard.config import OperationsSettings
from guard.observers import Observer
from guard.store import Store
from guard.types import DecisionRecord


class EventStream(Observer):
    """Queues each decision record; a background task appends them to the stream."""

    def __init__(self, store: Callable[[], Awaitable[Store]], settings: OperationsSettings) -> None:
        self._store = store
        self.settings = settings

    def decided(self, record: DecisionRecord) -> None:
        """Queue ``record`` (never blocks, never raises into the request)."""

    async def aclose(self) -> None:
        """Write what is queued (within a bounded time) and stop the writer."""
