"""Prometheus metrics for guard (the ``metrics`` extra: prometheus_client).

One set of metrics per process, as prometheus_client expects: the metric objects are made once,
on prometheus_client's default registry, when the first GuardMiddleware is built, and every
GuardMiddleware of the process counts into them (an app has one; a test suite makes many).
Label values come from the config only (route paths, list names, counter names), never from a
request, so the number of series stays bounded whatever clients send.

The list gauges are read from the store when a scrape comes (bounded by
:data:`SCRAPE_STORE_TIMEOUT`; a store that fails keeps the last values and never fails the
scrape). With ``PROMETHEUS_MULTIPROC_DIR`` set (before prometheus_client is imported: many
workers) every worker writes its values to that folder and a scrape, answered by any worker, sums
them (prometheus_client's multiprocess mode).

prometheus_client is imported here only, and only when asked for: without it the core works,
:func:`metrics_observer` returns None and :func:`metrics_app` answers 501 saying what to install.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import fields
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

import anyio

from guard.list_scale import estimate as estimate_scale
from guard.observers import Observer, RequestReport
from guard.supervision import StoreCounters
from guard.types import ASGIApp, DecisionRecord, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from guard.middleware import GuardMiddleware

logger = logging.getLogger("guard")

#: guard_breaker_state's values.
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: Decode+hash and lookup seconds: a lookup takes about a millisecond, hashing a 1080p JPEG a few,
#: a 12 MP one tens; past the top bucket is the decision deadline's business.
SECONDS_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
IMAGE_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64)
#: Seconds a scrape waits for the store's list sizes before answering with the last ones.
SCRAPE_STORE_TIMEOUT = 1.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
INSTALL_HINT = (
    "guard: Prometheus metrics need the prometheus_client package: "
    "pip install 'asgi-imageguard[metrics]'"
)

#: Every GuardMiddleware counting into the metrics: a scrape refreshes their list gauges.
_guards: weakref.WeakSet[GuardMiddleware] = weakref.WeakSet()
_metrics: _Metrics | None = None
#: metrics_app()'s app, by the multiprocess folder it was made for (None: single process).
_default_apps: dict[str | None, ASGIApp] = {}
_warned_missing = False


def _prometheus() -> ModuleType | None:
    try:
        import prometheus_client
    except ImportError:
        return None
    return prometheus_client


class _Metrics:
    """The metric objects, made once per process."""

    def __init__(self, prometheus: ModuleType) -> None:
        counter, gauge, histogram = prometheus.Counter, prometheus.Gauge, prometheus.Histogram
        self.requests = counter(
            "guard_requests_total",
            "Guarded requests by route (its configured path) and outcome: allow, flag, reject, "
            "unchecked, shadow-reject, shadow-flag, refuse (see guard_refusals_total), disconnect",
            ["route", "outcome"],
        )
        self.refusals = counter(
            "guard_refusals_total",
            "Guarded requests guard answered itself (a reject or another refusal), by HTTP status",
            ["route", "status"],
        )
        self.decisions = counter(
            "guard_decisions_total",
            "Recorded decisions by list and action: reject, flag, shadow-reject, shadow-flag, "
            "allowed (an allow-list entry suppressed the match), unchecked (a fail-open list "
            "that could not be checked)",
            ["list", "action"],
        )
        self.images = histogram(
            "guard_images_per_request",
            "Images found in a guarded request",
            ["route"],
            buckets=IMAGE_BUCKETS,
        )
        self.hash_seconds = histogram(
            "guard_hash_seconds",
            "Seconds finding, decoding and hashing a request's images (requests with images)",
            ["route"],
            buckets=SECONDS_BUCKETS,
        )
        self.lookup_seconds = histogram(
            "guard_lookup_seconds",
            "Seconds looking a request's hashes up in the store (requests that asked it)",
            ["route"],
            buckets=SECONDS_BUCKETS,
        )
        self.store_events = counter(
            "guard_store_events_total",
            "Store trouble and passes without a check: store_failures, short_circuits (refused "
            "by the open breaker), missing_lists, unchecked (requests passed with a fail-open "
            "list unchecked), shadow_rejects, shadow_flags",
            ["event"],
        )
        for field in fields(StoreCounters):
            self.store_events.labels(field.name)  # every event shows, at 0 until it happens
        self.breaker = gauge(
            "guard_breaker_state",
            "The store's circuit breaker: 0 closed, 1 half-open, 2 open (the worst of the "
            "process's guards; of the live workers in multiprocess mode)",
            multiprocess_mode="livemax",
        )
        self.list_entries = gauge(
            "guard_list_entries",
            "Entries in each list the config names, read from the store at scrape time",
            ["list"],
            multiprocess_mode="mostrecent",
        )
        self.list_false_rejects = gauge(
            "guard_list_estimated_false_reject_share",
            "The share of innocent uploads each list's radii would reject at its size: guard's "
            "reference estimate, as guard lists prints it (1% or more warns at start-up)",
            ["list"],
            multiprocess_mode="mostrecent",
        )
        self.list_version = gauge(
            "guard_list_version",
            "Each list's version (it goes up with every change), read at scrape time",
            ["list"],
            multiprocess_mode="mostrecent",
        )

    def breaker_state(self, guard: GuardMiddleware) -> None:
        self.breaker.set(BREAKER_STATES[guard.breaker.state])


class MetricsObserver(Observer):
    """Counts one GuardMiddleware's requests, decisions and store events."""

    def __init__(self, metrics: _Metrics, guard: GuardMiddleware) -> None:
        self._metrics = metrics
        self._guard = weakref.ref(guard)  # the guard holds this observer: no cycle through it

    def checked(self, report: RequestReport) -> None:
        metrics = self._metrics
        route = report.route
        metrics.requests.labels(route, report.outcome).inc()
        if report.status is not None:
            metrics.refusals.labels(route, str(report.status)).inc()
        metrics.images.labels(route).observe(report.images)
        if report.hash_seconds > 0:
            metrics.hash_seconds.labels(route).observe(report.hash_seconds)
        if report.lookup_seconds > 0:
            metrics.lookup_seconds.labels(route).observe(report.lookup_seconds)
        self._breaker()

    def decided(self, record: DecisionRecord) -> None:
        if record.list is not None and record.action != "unchecked":
            self._metrics.decisions.labels(record.list, record.action).inc()
        for name in record.unchecked_lists:
            self._metrics.decisions.labels(name, "unchecked").inc()

    def counted(self, counter: str) -> None:
        self._metrics.store_events.labels(counter).inc()
        self._breaker()

    def _breaker(self) -> None:
        guard = self._guard()
        if guard is not None:
            self._metrics.breaker_state(guard)


def metrics_observer(guard: GuardMiddleware) -> Observer | None:
    """The observer that counts ``guard``'s requests and decisions; None without
    prometheus_client installed (then a configured ``operations.metrics_path`` is warned about
    here, at start-up, and answers 501)."""
    global _metrics
    prometheus = _prometheus()
    if prometheus is None:
        path = guard.config.operations.metrics_path
        if path is not None:
            logger.warning(
                "%s (operations.metrics_path %s answers 501 until then)", INSTALL_HINT, path
            )
        return None
    if _metrics is None:
        _metrics = _Metrics(prometheus)
    _guards.add(guard)
    return MetricsObserver(_metrics, guard)


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app answering GET with the metrics in Prometheus' text format (or OpenMetrics, if
    the scraper asks for it), the list gauges refreshed from the store first.

    ``registry``: what to serve; by default prometheus_client's default registry (guard's
    metrics and the process's own), or with ``PROMETHEUS_MULTIPROC_DIR`` set every worker's
    metrics summed from that folder. Without prometheus_client: an app answering 501 with the
    package to install.
    """
    prometheus = _prometheus()
    if prometheus is None:
        _warn_missing()
        return _missing_extra
    if registry is not None:
        return _refreshing(prometheus.make_asgi_app(registry))
    folder = os.environ.get(MULTIPROC_ENV) or None
    app = _default_apps.get(folder)
    if app is None:
        served = prometheus.REGISTRY
        if folder is not None:
            from prometheus_client import multiprocess

            served = prometheus.CollectorRegistry()
            multiprocess.MultiProcessCollector(served, folder)  # type: ignore[no-untyped-call]
        app = _default_apps[folder] = _refreshing(prometheus.make_asgi_app(served))
    return app


def _refreshing(served: Any) -> ASGIApp:
    """``served`` (prometheus_client's ASGI app), after the scrape-time gauges are refreshed."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await refresh()
        await served(scope, receive, partial(_lowercase_headers, send))

    return app


async def refresh() -> None:
    """Set the gauges a scrape reads now: the breaker's state and every list's size and version
    (each guard's store asked at once, for at most :data:`SCRAPE_STORE_TIMEOUT`)."""
    metrics = _metrics
    if metrics is None:
        return
    guards = [guard for guard in _guards if hasattr(guard, "supervisor")]  # built completely
    if not guards:
        return
    metrics.breaker.set(max(BREAKER_STATES[guard.breaker.state] for guard in guards))
    async with anyio.create_task_group() as group:
        for guard in guards:
            group.start_soon(_refresh_lists, metrics, guard)


async def _refresh_lists(metrics: _Metrics, guard: GuardMiddleware) -> None:
    """``guard``'s configured lists' gauges from its store; the last values when it cannot say."""
    if guard.breaker.state == "open":
        return  # the store is down: no scrape probes it (the breaker decides when to)
    store = guard.opened_store
    if store is None:
        return  # not opened yet, or closed: a scrape opens nothing
    config = guard.config
    names = set(config.lists) | {name for route in config.routes for name in route.lists}
    try:
        with anyio.fail_after(SCRAPE_STORE_TIMEOUT):
            infos = {info.name: info for info in await store.lists()}
    except Exception as error:  # noqa: BLE001 - a scrape never fails on the store
        logger.debug("guard: metrics: list sizes not refreshed (%r): the last ones stay", error)
        return
    for name in sorted(names):
        info = infos.get(name)
        metrics.list_entries.labels(name).set(info.entries if info is not None else 0)
        if info is not None:
            metrics.list_version.labels(name).set(info.version)
            scale = estimate_scale(config.policy(name), info.entries)
            metrics.list_false_rejects.labels(name).set(scale.rejected)


async def _lowercase_headers(send: Send, message: Message) -> None:
    """ASGI wants header names in lower case; prometheus_client sends "Content-Type"."""
    if message["type"] == "http.response.start":
        headers = [(name.lower(), value) for name, value in message.get("headers", [])]
        message = {**message, "headers": headers}
    await send(message)


def _warn_missing() -> None:
    global _warned_missing
    if not _warned_missing:
        _warned_missing = True
        logger.warning("%s (metrics_app() answers 501 until then)", INSTALL_HINT)


async def _missing_extra(scope: Scope, receive: Receive, send: Send) -> None:
    """The metrics endpoint without prometheus_client: 501, and what to install."""
    if scope["type"] != "http":
        return
    body = (INSTALL_HINT + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 501, "headers": headers})
    await send({"type": "http.response.body", "body": body})
