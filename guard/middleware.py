"""GuardMiddleware: pure ASGI, shaped like Starlette's own middleware; the ASGI flow only.

``GuardMiddleware`` holds the validated config, the store, its supervisor
(:mod:`guard.supervision`: breaker, counters, store logs) and the hashing limiter; a
``_Responder`` holds one request's state and does its I/O: receive -> uploads -> hashing (in a
worker thread) -> store lookups -> :func:`guard.verdict.judge` -> send. Requests that match no
route (and every non-HTTP scope) go straight to the app with the server's own ``receive``: no
buffering, no copy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar, cast

import anyio

from guard.breaker import CircuitBreaker
from guard.config import (
    Config,
    Route,
    load_config,
    resolve_embedded_path,
    resolve_redis_url,
)
from guard.errors import (
    BodyTimeout,
    BodyTooLarge,
    GuardError,
    MalformedBody,
    StoreUnavailable,
    UnsupportedEncoding,
)
from guard.events import EventStream
from guard.hashing import FrameHash, ImageHashes, hash_bytes
from guard.health import HealthCheck
from guard.health import serve as serve_health
from guard.metrics import metrics_app, metrics_observer
from guard.observers import DecisionLog, Observer, Observers, RequestReport
from guard.refusals import RefusalPages, RefusalRenderer, RefusalView
from guard.reload import ConfigReloader
from guard.review.modes import ModeOverrides
from guard.review.quarantine import KEPT_ACTIONS, Quarantine
from guard.store import Store, open_store
from guard.supervision import REPORT_INTERVAL, Lookups, StoreCounters, StoreSupervisor
from guard.types import (
    ASGIApp,
    Decision,
    DecisionRecord,
    ImageLimits,
    Match,
    Message,
    Receive,
    RecordedAction,
    Scope,
    Send,
)
from guard.uploads import (
    ClientDisconnected,
    JsonScan,
    Replay,
    Spool,
    find_images,
    part_counter,
    read_body,
)
from guard.verdict import Outcome, Refusal, judge, refusal_for

# Re-exported: Decision and the counters were first defined here, and apps import them from here.
__all__ = ["REPORT_INTERVAL", "Decision", "GuardMiddleware", "StoreCounters"]

logger = logging.getLogger("guard")
T = TypeVar("T")
#: A client's X-Request-ID is kept when it is this tame (else guard makes one): it goes into
#: logs, headers and the decision stream as it came.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class GuardMiddleware:
    """Checks image uploads on the configured routes against the blocklists in Redis.

    A request is matched as the app would route it: every plausible reading of its path,
    relative to the mount point (``root_path``) or not, and its method upper-cased (see
    :func:`guard.config.request_paths`). :meth:`startup` checks the routes and their lists at
    lifespan start-up, or on the first request for a server or an app without lifespan.

    ``config`` is a :class:`guard.Config`, a path to a YAML file, or None (``$GUARD_CONFIG``, else
    the built-in defaults, which guard no route: start-up then warns). ``store`` replaces the one
    the config names (tests inject one). ``observers`` hear of every guarded request and every
    decision (:mod:`guard.observers`), after the decision log; more may be added later with
    ``guard.observers.add``. ``render_refusal`` replaces the body of guard's refusals
    (:mod:`guard.refusals`).

    Every reject is a WARNING record on the ``guard`` logger; every flag, shadow-reject and
    shadow-flag an INFO one; store trouble a WARNING or ERROR. uvicorn's default logging
    configures only its own loggers, so without a handler of the app's own only WARNING and
    above reach stderr (rejects do), as bare messages. To see flags too, e.g.
    ``logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")``
    in the app module, or a ``guard`` logger in uvicorn's ``--log-config``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: Config | str | os.PathLike[str] | None = None,
        store: Store | None = None,
        observers: Iterable[Observer] = (),
        render_refusal: RefusalRenderer | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.app = app
        #: Keeps flagged uploads' pictures for the review page (guard.review.quarantine); None:
        #: off, nothing of an upload is kept.
        self.quarantine = quarantine
        source = None if isinstance(config, Config) else config or os.environ.get("GUARD_CONFIG")
        self._config = config if isinstance(config, Config) else load_config(source)
        self._render_refusal = render_refusal
        self._store = store
        self._store_lock: anyio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        #: Readiness: ``await guard.health()`` (operations.health_path serves it).
        self.health = HealthCheck(self)
        #: Refusal bodies: JSON, or an HTML page for browsers (operations.refusal_page).
        self.refusal_pages = RefusalPages(self.config.operations.refusal_page, render_refusal)
        #: Told of every guarded request, decision and store counter: the log first.
        self.observers = Observers([DecisionLog(), *observers])
        #: The decision stream's writer (operations.events), else None.
        self.events: EventStream | None = None
        if self.config.operations.events:
            self.events = EventStream(self.store, self.config.operations)
            self.observers.add(self.events)
        metrics = metrics_observer(self)
        if metrics is not None:
            self.observers.add(metrics)
        #: Every store call goes through it: breaker, start-up checks, counters, throttled logs.
        self.supervisor = StoreSupervisor(
            self.config, self.store, lambda: self.store_location, self.observers
        )
        self._started = False  # the start-up checks have run (or are running)
        #: The lists' modes as switched on the review page (guard.review.modes).
        self.modes = ModeOverrides()
        #: Re-reads the config file on SIGHUP and when it changes (operations.reload); None for
        #: a config given as a Config object, or with reload off.
        self.reloader: ConfigReloader | None = None
        if source is not None and self.config.operations.reload:
            self.reloader = ConfigReloader(os.fspath(source), self.config, self._apply_config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if not self._started:
            await self.startup()  # a server or an app without lifespan: on the first request
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.reloader is not None:
            await self.reloader.poll()  # a clock read, but once a second a stat of the file
        await self.modes.poll(self)  # the review page's mode switches, read once a second
        endpoint = self._endpoint(scope["path"])
        if endpoint is not None:
            await endpoint(scope, receive, send)
            return
        route = self.config.route_for(
            scope["method"],
            scope["path"],
            raw_path=scope.get("raw_path"),
            root_path=scope.get("root_path", ""),
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        await _Responder(self, route, scope, receive, send).run()

    async def _apply_config(self, config: Config) -> None:
        """Put a reloaded config in force (:mod:`guard.reload` has validated it). Requests
        already being decided keep the config they started with."""
        pages = RefusalPages(config.operations.refusal_page, self._render_refusal)
        if config.http.hash_threads != self.config.http.hash_threads:
            self._limiter = None  # a new limit for new requests
        if config.operations.events and self.events is None:
            self.events = EventStream(self.store, config.operations)
            self.observers.add(self.events)
        elif not config.operations.events and self.events is not None:
            self.observers.remove(self.events)
            events, self.events = self.events, None
            await events.aclose()
        if self.events is not None:
            self.events.settings = config.operations
        self.refusal_pages = pages
        self.config = config
        if not config.operations.reload and self.reloader is not None:
            self.reloader.uninstall_sighup()
            self.reloader = None
        for problem in config.route_problems():
            logger.warning("guard: %s", problem)

    @property
    def config(self) -> Config:
        """The config in force; setting it (a reload, a mode switch) sets the supervisor's too."""
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = self.supervisor.config = config

    def _endpoint(self, path: str) -> ASGIApp | None:
        """guard's own endpoint at ``path`` (operations.metrics_path, health_path), else None.
        Exact paths only: these are for probes and scrapers, which ask for the path as set."""
        operations = self.config.operations
        if operations.metrics_path is not None and path == operations.metrics_path:
            return metrics_app()
        if operations.health_path is not None and path == operations.health_path:
            return partial(serve_health, self.health)
        return None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's lifespan, with guard's start-up checks once the app has started (it may
        load the lists in its own start-up), and the store closed when the server shuts down
        (the embedded Redis saves and stops then).

        When guard's checks fail, the server is told ``lifespan.startup.failed`` and the app,
        which did start, is shut down at once (its ``receive`` says ``lifespan.shutdown``; its
        answer goes nowhere); then the failure is raised, as Starlette's router does for a
        start-up that raised: servers ignore it after a failed start-up, and a test client
        (Starlette's ``TestClient`` waits for the lifespan to end) raises it.
        """
        failure: list[str] = []

        async def lifespan_receive() -> Message:
            if failure:
                return {"type": "lifespan.shutdown"}
            return await receive()

        async def lifespan_send(message: Message) -> None:
            if failure:
                return  # the app's shutdown after a failed start-up: the server is not waiting
            if message["type"] == "lifespan.startup.complete":
                problem = await self.startup()
                if problem is not None:
                    await self.aclose()  # no shutdown follows a failed start-up
                    failure.append(problem)
                    message = {"type": "lifespan.startup.failed", "message": problem}
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)
        if failure:
            raise RuntimeError(failure[0])

    async def startup(self) -> str | None:
        """Start-up checks; the message start-up fails with, or None when it may go on.

        Run at lifespan start-up, or on the first request for a server or app without lifespan
        (Django's ASGI handler), within ``http.decision_timeout``. No routes at all, and routes
        that check nothing, are warned about: a guard that guards nothing must not look like one
        that found nothing. Then the lists the routes name are checked
        (:meth:`StoreSupervisor.check_lists`).
        """
        self._started = True
        if self.reloader is not None:
            self.reloader.install_sighup()
        if not self.config.routes:
            logger.warning(
                "guard: no routes configured: GuardMiddleware checks no upload (pass config= "
                "or set GUARD_CONFIG to a file with routes)"
            )
        for problem in self.config.route_problems():
            logger.warning("guard: %s", problem)
        return await self.supervisor.check_lists()

    @property
    def counters(self) -> StoreCounters:
        """How often the store let guard down, and how often a shadow decision let an upload
        through (for metrics): see :class:`StoreCounters`."""
        return self.supervisor.counters

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker in front of the store; ``breaker.state`` for health checks."""
        return self.supervisor.breaker

    @property
    def report_interval(self) -> float:
        """Store trouble is logged at most once per this many seconds (default 10)."""
        return self.supervisor.report_interval

    @report_interval.setter
    def report_interval(self, seconds: float) -> None:
        self.supervisor.report_interval = seconds

    async def call_store(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        """Run one store operation as every lookup does: see :meth:`StoreSupervisor.call`."""
        return await self.supervisor.call(operation)

    @property
    def opened_store(self) -> Store | None:
        """The store if it is open, else None: for code that must not open one (a scrape)."""
        return self._store

    @property
    def store_location(self) -> str:
        """Where the store is, for messages (a URL without its password, or a file)."""
        if self._store is not None:
            return self._store.location
        url = resolve_redis_url(self.config)
        if url:
            return re.sub(r"//[^/@]*@", "//", url)
        return f"the embedded Redis at {resolve_embedded_path(self.config)}"

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Guard's own thread limit for decoding and hashing (not the app's default pool)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.config.http.hash_threads)
        return self._limiter

    async def store(self) -> Store:
        """The store, opened on first use (the embedded server starts in a worker thread)."""
        if self._store is not None:
            return self._store
        if self._store_lock is None:
            self._store_lock = anyio.Lock()
        async with self._store_lock:
            if self._store is None:
                self._store = await anyio.to_thread.run_sync(partial(open_store, self.config))
        return self._store

    async def aclose(self) -> None:
        """Close the store (call from the app's shutdown if you care about a clean exit)."""
        if self.reloader is not None:
            self.reloader.uninstall_sighup()
        if self.events is not None:
            await self.events.aclose()  # the last records, while the store is still open
        self.modes.close()
        if self._store is not None:
            await self._store.close()
            self._store = None
            self.supervisor.store_closed()


class _Responder:
    """One guarded request: read, find images, hash, look up, then refuse or call the app."""

    def __init__(
        self, guard: GuardMiddleware, route: Route, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.guard = guard
        self.config = guard.config
        self.route = route
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        given = self.headers.get("x-request-id", "").strip()
        self.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # What the request report says (filled in as the request goes).
        self.images = 0
        self.hash_seconds = 0.0
        self.lookup_seconds = 0.0
        #: The images found, kept only while the quarantine may need them.
        self.pictures: list[bytes] = []
        #: The server's ``receive`` under way once the body is in: it answers when the client
        #: leaves (see :meth:`_judge_while_connected`), and the app is handed its message.
        self.watch: asyncio.Future[Message] | None = None

    async def run(self) -> None:
        spool = Spool(self.config.http.spool_memory_bytes)
        outcome, status = "disconnect", None
        try:
            try:
                decided = await self._decide(spool)
            except ClientDisconnected:
                return  # nobody to answer; the spool is dropped below
            except GuardError as error:
                refusal = refusal_for(error, self.config.http)
                outcome, status = "refuse", refusal.status
                await self._refuse(refusal)
                return
            except Exception:
                logger.exception("guard failed on %s %s", self.scope["method"], self.scope["path"])
                outcome, status = "refuse", 500
                await self._refuse(Refusal(500, {"error": "internal error"}))
                return
            answer = decided.answer
            outcome = decided.action
            if isinstance(answer, Refusal):
                status = answer.status
                await self._refuse(answer)
                return
            answer = replace(answer, request_id=self.request_id)
            await self._quarantine(answer.action)
            self.scope.setdefault("state", {})["guard"] = answer
            receive = Replay(spool, self.receive, self.watch)
            await self.guard.app(self.scope, receive, self._send_for(answer))
        finally:
            if self.watch is not None and not self.watch.done():
                self.watch.cancel()  # the app did not wait for it (or was never called)
            spool.close()
            self.guard.observers.checked(
                RequestReport(
                    route=self.route.path,
                    method=self.scope["method"],
                    outcome=outcome,
                    status=status,
                    images=self.images,
                    hash_seconds=self.hash_seconds,
                    lookup_seconds=self.lookup_seconds,
                    request_id=self.request_id,
                )
            )

    async def _quarantine(self, action: str) -> None:
        """Keep a flagged upload's pictures when the quarantine is on (never a rejected one)."""
        store = self.guard.opened_store
        quarantine = self.guard.quarantine
        if quarantine is not None and store is not None and action in KEPT_ACTIONS:
            await quarantine.keep(store, self.request_id, self.pictures)
        self.pictures = []

    async def _decide(self, spool: Spool) -> Outcome:
        http = self.config.http
        declared = self._check_headers()
        parts = part_counter(self.headers.get("content-type", ""), http.max_parts)
        try:
            with anyio.fail_after(http.body_timeout):
                await read_body(
                    self.receive, spool, http.max_body_bytes, declared=declared, parts=parts
                )
        except TimeoutError:
            raise BodyTimeout(
                f"request body not received within body_timeout={http.body_timeout:g}s"
            ) from None
        try:
            with anyio.fail_after(http.decision_timeout):
                return await self._judge_while_connected(spool)
        except TimeoutError:
            # Too slow to decide (a slow store, or decoding queued behind other uploads): each
            # list of the route follows its own policy, as when the store is down.
            late = StoreUnavailable(
                f"no decision within decision_timeout={http.decision_timeout:g}s"
            )
            return self._recorded(
                judge(0, (), dict.fromkeys(self.route.lists, late), self.config.policy, http)
            )

    async def _judge_while_connected(self, spool: Spool) -> Outcome:
        """:meth:`_judge`, given up as soon as the client disconnects (hostile case H05).

        Once the body is complete the server's ``receive`` only ever says ``http.disconnect``,
        so it is called once, in a task of its own (``self.watch``), while this task judges: a
        client that left gets neither an answer nor an app call, whatever the lists' policies.
        A plain task, not a task group: when the decision comes first (every request but a
        gone client's), nothing has to be cancelled and awaited, which cost about 0.2 ms a
        request. The watch goes on into the app's ``receive`` (:class:`guard.uploads.Replay`).
        """
        judging = asyncio.current_task()
        assert judging is not None
        stopped: list[BaseException] = []  # why the watch stopped the judging, if it did
        deciding = True

        def heard(watch: asyncio.Future[Message]) -> None:
            if not deciding or watch.cancelled():
                return
            error = watch.exception()
            if error is None and watch.result()["type"] != "http.disconnect":
                return  # not the client leaving: the app is handed it after the body
            stopped.append(ClientDisconnected() if error is None else error)
            judging.cancel()

        watch = self.watch = asyncio.ensure_future(self.receive())
        watch.add_done_callback(heard)
        watch.add_done_callback(_retrieve)
        try:
            return await self._judge(spool)
        except asyncio.CancelledError:
            if not stopped:
                raise  # the decision deadline, or the server
            judging.uncancel()
            raise stopped[0] from None
        finally:
            deciding = False
            if stopped or not watch.done() and judging.cancelling():
                self.watch = None
                watch.cancel()

    async def _judge(self, spool: Spool) -> Outcome:
        """Find the images, hash them in a worker thread, look them up in every list, judge."""
        http = self.config.http
        content_type = self.headers.get("content-type", "")
        json_scan = (
            JsonScan(self.route.json_fields, http.max_json_bytes, http.max_json_depth)
            if self.route.json_fields
            else None
        )
        dihedral = any(self.config.policy(name).dihedral for name in self.route.lists)
        abandoned = threading.Event()

        def find_and_hash() -> tuple[int, list[FrameHash]]:
            # One worker thread for the whole body (one hop, one limiter slot); a request given
            # up on (deadline, disconnect) stops before its next image.
            started = time.perf_counter()
            images = find_images(
                spool.read_all(),
                content_type,
                max_parts=http.max_parts,
                max_images=http.max_images,
                json_scan=json_scan,
            )
            frames: list[FrameHash] = []
            if self.guard.quarantine is not None:
                self.pictures = images
            for image in images:
                if abandoned.is_set():
                    break
                hashes = _hash_for_lookup(image, self.config.limits, dihedral)
                frames += [frame for frame in hashes.frames if not frame.low_information]
            self.hash_seconds = time.perf_counter() - started
            return len(images), frames

        try:
            image_count, frames = await anyio.to_thread.run_sync(
                find_and_hash, limiter=self.guard.limiter, abandon_on_cancel=True
            )
        finally:
            abandoned.set()
        self.images = image_count
        # No image, or only low-information ones: nothing to look up, the store is not asked.
        found = Lookups()
        if frames:
            started = time.perf_counter()
            found = await self.guard.supervisor.look_up(self.route, frames)
            self.lookup_seconds = time.perf_counter() - started
        return self._recorded(
            judge(
                image_count, found.matches, found.failures, self.config.policy, http, found.allowed
            )
        )

    def _recorded(self, outcome: Outcome) -> Outcome:
        """Record the match that rejected, flagged, shadow-rejected or shadow-flagged the request
        (counting the shadow ones), each list's match an allow entry suppressed ("allowed"), and
        the fail-open lists it passed unchecked (counted, and logged once per interval, H32):
        the observers hear of each."""
        supervisor = self.guard.supervisor
        match = outcome.match
        if match is not None:
            if outcome.action == "shadow-reject":
                supervisor.count("shadow_rejects")
            elif outcome.action == "shadow-flag":
                supervisor.count("shadow_flags")
            action = cast(RecordedAction, outcome.action)  # a match's: reject, flag or shadow
            self.guard.observers.decided(
                self._record(action, **_matched(match), unchecked_lists=outcome.unchecked)
            )
        for suppression in outcome.allowed:  # checked before any reject: recorded whatever won
            self.guard.observers.decided(
                self._record(
                    "allowed",
                    **_matched(suppression.match),
                    allowed_by=suppression.allowed_by.entry.source,
                )
            )
        if outcome.unchecked:
            supervisor.passed_unchecked(self.route, outcome.unchecked)
            if match is None:
                self.guard.observers.decided(
                    self._record("unchecked", unchecked_lists=outcome.unchecked)
                )
        return outcome

    def _record(self, action: RecordedAction, **details: Any) -> DecisionRecord:
        """A decision record of this request."""
        return DecisionRecord(
            action=action,
            request_id=self.request_id,
            route=self.route.path,
            method=self.scope["method"],
            time=time.time(),
            images=self.images,
            client=self._client(),
            **details,
        )

    def _check_headers(self) -> int | None:
        """Refuse what the headers alone condemn, before reading a byte; the declared length.

        A client waiting on ``Expect: 100-continue`` then never uploads (hostile case H01).
        Framing headers must be single: guard and the app must agree on the body's type and
        length, and Starlette reads the first of several headers where guard's dict keeps the
        last. Every Content-Encoding token counts (H09).
        """
        http = self.config.http
        for name in ("content-length", "content-type"):
            if len(self._header_values(name)) > 1:
                raise MalformedBody(f"more than one {name} header")
        declared = self.headers.get("content-length")
        length = None
        if declared is not None:
            digits = declared.strip()
            if not (digits.isascii() and digits.isdigit()):
                raise MalformedBody(f"invalid Content-Length: {declared[:40]!r}")
            digits = digits.lstrip("0") or "0"  # int() refuses over 4,300 digits
            if len(digits) > len(str(http.max_body_bytes)) or int(digits) > http.max_body_bytes:
                raise BodyTooLarge(f"request body is over max_body_bytes={http.max_body_bytes}")
            length = int(digits)
        for value in self._header_values("content-encoding"):
            for token in value.split(","):
                encoding = token.strip().lower()
                if encoding not in ("", "identity"):
                    raise UnsupportedEncoding(
                        f"Content-Encoding {encoding[:40]} is not accepted on this route"
                    )
        return length

    def _header_values(self, name: str) -> list[str]:
        """Every value of one request header (``self.headers`` keeps only the last)."""
        key = name.encode("latin-1")
        return [
            value.decode("latin-1")
            for header, value in self.scope.get("headers", [])
            if header.lower() == key
        ]

    def _send_for(self, decision: Decision) -> Send:
        """The app's ``send``, adding the flag header to a flagged or unchecked request's
        response. A shadow decision shows no more than an allow would (or "unchecked"): the
        uploader must not learn that a list in shadow mode holds the image."""
        header = self.config.http.flag_header
        action = decision.action
        if action in ("shadow-reject", "shadow-flag"):
            action = "unchecked" if decision.unchecked_lists else "allow"
        if header is None or action == "allow":
            return self.send
        name, value = header.lower().encode("latin-1"), action.encode("latin-1")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (name, value)]}
            await self.send(message)

        return send

    async def _refuse(self, refusal: Refusal) -> None:
        """Answer with ``refusal``: JSON, or a page for a browser (:mod:`guard.refusals`)."""
        view = RefusalView(
            refusal.status, refusal.body["error"], self.request_id, refusal.body.get("list")
        )
        try:
            content_type, body = self.guard.refusal_pages.render(
                view, self.headers.get("accept", "")
            )
        except Exception:
            logger.exception("guard: the refusal renderer failed; answering with JSON")
            content_type, body = RefusalPages().render(view, "application/json")
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self.request_id.encode("latin-1")),
        ]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers]
        try:
            await self.send(
                {"type": "http.response.start", "status": refusal.status, "headers": headers}
            )
            await self.send({"type": "http.response.body", "body": body})
        except OSError:
            pass  # the client is gone (uvicorn raises ClientDisconnect, an OSError)

    def _client(self) -> str | None:
        client = self.scope.get("client")
        return f"{client[0]}:{client[1]}" if client else None


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read a finished task's outcome, so a task given up on (a watch cancelled, a decision the
    client left) never logs "exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


def _matched(match: Match) -> dict[str, Any]:
    """A match's fields of a :class:`DecisionRecord`: the list and entry, never the upload's
    hashes."""
    return {
        "list": match.list,
        "distance": match.distance,
        "phash_distance": match.phash_distance,
        "transform": match.transform,
        "source": match.entry.source,
        "label": match.entry.label,
    }


def _hash_for_lookup(data: bytes, limits: ImageLimits, dihedral: bool) -> ImageHashes:
    """Hash an upload, and its flips and rotations when a list will ask for them: in the
    worker thread that decoded it, not on the event loop."""
    hashes = hash_bytes(data, limits)
    if dihedral:
        for frame in hashes.frames:
            frame.variants()
    return hashes
