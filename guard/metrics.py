"""Prometheus metrics for guard (the ``metrics`` extra: prometheus_client).

(Skeleton: the contract the middleware wires; the metrics land with issue 15.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guard.observers import Observer
from guard.types import ASGIApp

if TYPE_CHECKING:
    from guard.middleware import GuardMiddleware


def metrics_observer(guard: GuardMiddleware) -> Observer | None:
    """The observer that counts ``guard``'s requests and decisions; None without
    prometheus_client installed."""
    return None


def metrics_app() -> ASGIApp:
    """An ASGI app answering GET with the metrics in Prometheus' text format."""
    raise NotImplementedError
