"""Who hears about guarded requests: the log, the metrics, the decision stream, the app's own.

The middleware tells an :class:`Observer` three things: every guarded request once it is
answered (:meth:`Observer.checked`), every decision worth keeping (:meth:`Observer.decided`, a
:class:`guard.types.DecisionRecord`), and every store trouble counted
(:meth:`Observer.counted`). Observers are called on the event loop, in the request's path: they
must be quick and never block (queue slow work, as the decision stream does). A failing observer
is logged once a minute and never fails the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from guard.types import DecisionRecord

logger = logging.getLogger("guard")

#: Seconds between two log lines about the same failing observer.
_FAILURE_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class RequestReport:
    """One guarded request, once guard has answered it or handed it to the app."""

    #: The route's configured path.
    route: str
    method: str
    #: "allow", "flag", "reject", "unchecked", "shadow-reject", "shadow-flag" (the app was
    #: called, or a match refused it), or "refuse" (refused for another reason: ``status`` says
    #: which), or "disconnect" (the client left before the decision).
    outcome: str
    #: The refusal's HTTP status; None when the app was called (or nobody was answered).
    status: int | None
    images: int
    #: Seconds spent finding, decoding and hashing the images (in the worker thread), and
    #: looking them up in the store; 0.0 for a stage that did not run.
    hash_seconds: float
    lookup_seconds: float
    request_id: str


class Observer:
    """Base class: override what you need; every method does nothing by default."""

    def checked(self, report: RequestReport) -> None:
        """A guarded request was answered (or handed to the app)."""

    def decided(self, record: DecisionRecord) -> None:
        """A reject, flag, shadow outcome, allow-list suppression, or unchecked pass."""

    def counted(self, counter: str) -> None:
        """One of :class:`guard.supervision.StoreCounters`' counters went up by one."""


class Observers(Observer):
    """Several observers as one; an observer that raises is logged and skipped, never fatal."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: list[Observer] = list(observers)
        self._failed_at: dict[int, float] = {}

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def __iter__(self) -> Iterator[Observer]:
        return iter(self._observers)

    def __len__(self) -> int:
        return len(self._observers)

    def checked(self, report: RequestReport) -> None:
        self._tell("checked", report)

    def decided(self, record: DecisionRecord) -> None:
        self._tell("decided", record)

    def counted(self, counter: str) -> None:
        self._tell("counted", counter)

    def _tell(self, method: str, news: object) -> None:
        """Call ``method`` of every observer with ``news``; one that raises is logged, skipped."""
        for observer in self._observers:
            try:
                getattr(observer, method)(news)
            except Exception:  # noqa: BLE001 - an observer never fails a request
                self._failed(observer)

    def _failed(self, observer: Observer) -> None:
        now = time.monotonic()
        last = self._failed_at.get(id(observer))
        if last is None or now - last >= _FAILURE_LOG_INTERVAL:
            self._failed_at[id(observer)] = now
            logger.exception("guard: observer %r failed (the request went on)", observer)


class DecisionLog(Observer):
    """Every recorded decision on the ``guard`` logger.

    A reject is a WARNING, so a server's default logging (uvicorn's prints WARNING and above for
    loggers it does not configure) shows it; flags, shadow outcomes, allow-list suppressions and
    unchecked passes, routine for a moderated app, are INFO. The record rides along as
    ``extra={"guard": {...}}`` for structured handlers.
    """

    def decided(self, record: DecisionRecord) -> None:
        fields = {
            "action": record.action,
            "request_id": record.request_id,
            "list": record.list,
            "route": record.route,
            "distance": record.distance,
            "phash_distance": record.phash_distance,
            "transform": record.transform,
            "source": record.source,
            "client": record.client,
        }
        level = logging.WARNING if record.action == "reject" else logging.INFO
        if record.action == "unchecked":
            return  # logged by the supervisor, once per interval with a count (H32)
        if record.action == "allowed":
            fields["allowed_by"] = record.allowed_by
            logger.log(
                level,
                "guard allowed: upload on %s matched %s (%s) at distance %d, allowed by %s "
                "[request %s]",
                record.route,
                record.list,
                record.source,
                record.distance,
                record.allowed_by,
                record.request_id,
                extra={"guard": fields},
            )
            return
        logger.log(
            level,
            "guard %s: upload on %s matched %s (%s) at distance %d [request %s]",
            record.action,
            record.route,
            record.list,
            record.source,
            record.distance,
            record.request_id,
            extra={"guard": fields},
        )
