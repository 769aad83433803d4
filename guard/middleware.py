"""GuardMiddleware: pure ASGI, shaped like Starlette's own middleware.

``GuardMiddleware`` holds the validated config, the store and the hashing limiter; a
``_Responder`` holds one request's state. Requests that match no route (and every non-HTTP scope)
go straight to the app with the server's own ``receive``: no buffering, no copy.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import anyio

from guard.breaker import CircuitBreaker
from guard.config import (
    Config,
    ListPolicy,
    Route,
    load_config,
    resolve_embedded_path,
    resolve_redis_url,
)
from guard.errors import (
    BodyTimeout,
    BodyTooLarge,
    EvictionUnsafe,
    GuardError,
    MalformedBody,
    StoreError,
    StoreInconsistent,
    StoreUnavailable,
    UnknownList,
    UnsupportedEncoding,
)
from guard.hashing import FrameHash, ImageHashes, hash_bytes
from guard.store import Store, open_store
from guard.types import ASGIApp, ImageLimits, Match, Message, Receive, Scope, Send
from guard.uploads import (
    ClientDisconnected,
    JsonScan,
    Replay,
    Spool,
    find_images,
    part_counter,
    read_body,
)
from guard.verdict import Refusal, decide, refusal_for, rejection

logger = logging.getLogger("guard")
T = TypeVar("T")
#: Seconds between two log lines about the same store trouble (reliability H32).
REPORT_INTERVAL = 10.0


@dataclass
class StoreCounters:
    """How often the store let guard down, for metrics: read ``GuardMiddleware.counters``.

    Counted since the middleware was made; never reset by guard.
    """

    #: Requests passed to the app with a fail-open list unchecked (verdict "unchecked", or "flag"
    #: with ``unchecked_lists``): the uploads nobody looked at.
    unchecked: int = 0
    #: Store calls that failed: refused, timed out, or abandoned at the decision deadline.
    store_failures: int = 0
    #: Store calls the open circuit breaker refused at once, without touching Redis.
    short_circuits: int = 0
    #: Lookups that found a required list missing from the store (each then followed the list's
    #: fail_open, as when the store is down).
    missing_lists: int = 0


@dataclass(frozen=True)
class Decision:
    """What guard concluded about a request it let through: ``scope["state"]["guard"]``.

    ``action`` is "allow", "flag" (a confirmed match within a flag radius: the app decides) or
    "unchecked" (a fail-open list's store was unavailable).
    """

    action: Literal["allow", "flag", "unchecked"]
    images: int = 0
    list: str | None = None
    distance: int | None = None
    source: str | None = None
    unchecked_lists: tuple[str, ...] = ()


class GuardMiddleware:
    """Checks image uploads on the configured routes against the blocklists in Redis.

    A request is matched as the app would route it: every plausible reading of its path,
    relative to the mount point (``root_path``) or not, and its method upper-cased (see
    :func:`guard.config.request_paths`). :meth:`startup` checks the routes and their lists at
    lifespan start-up, or on the first request for a server or an app without lifespan.

    ``config`` is a :class:`guard.Config`, a path to a YAML file, or None (``$GUARD_CONFIG``, else
    the built-in defaults, which guard no route). ``store`` replaces the one the config names
    (tests inject one).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: Config | str | os.PathLike[str] | None = None,
        store: Store | None = None,
    ) -> None:
        self.app = app
        if isinstance(config, Config):
            self.config = config
        else:
            self.config = load_config(
                config if config is not None else os.environ.get("GUARD_CONFIG")
            )
        self._store = store
        self._store_lock: anyio.Lock | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._missing_lists_warned: set[str] = set()
        redis = self.config.redis
        #: Shared by every request: a dead Redis is skipped for a cool-down, then probed once.
        self.breaker = CircuitBreaker(
            failures=redis.breaker_failures,
            cooldown=redis.breaker_cooldown,
            max_cooldown=redis.breaker_max_cooldown,
        )
        self.counters = StoreCounters()
        #: Store trouble is logged at most once per this many seconds, with the count in between.
        self.report_interval = REPORT_INTERVAL
        self._reported_at: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._store_checked = False
        self._started = False  # the start-up checks have run (or are running)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if not self._started:
            await self.startup()  # a server or an app without lifespan: on the first request
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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

    def _lifespan_send(self, send: Send) -> Send:
        """Check the lists once the app has started (it may load them in its own start-up), and
        close the store when the server shuts down (the embedded Redis saves and stops then)."""

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                failure = await self.startup()
                if failure is not None:
                    await self.aclose()  # no shutdown follows a failed start-up
                    message = {"type": "lifespan.startup.failed", "message": failure}
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        return lifespan_send

    async def startup(self) -> str | None:
        """Start-up checks; the message start-up fails with, or None when it may go on.

        Run at lifespan start-up, or on the first request for a server or app without lifespan
        (Django's ASGI handler), within ``http.decision_timeout``. Routes that check nothing
        are warned about. Each list a route names must be in the store and hold entries: if a
        ``required`` list (the default) is not, the error names it, its routes and the store;
        if an optional one is not, a warning. A store that cannot answer is logged and does
        not stop start-up: requests then follow each list's ``fail_open``.
        """
        self._started = True
        for problem in self.config.route_problems():
            logger.warning("guard: %s", problem)
        routes: dict[str, list[Route]] = {}
        for route in self.config.routes:
            for name in route.lists:
                routes.setdefault(name, []).append(route)
        if not routes:
            return None
        try:
            with anyio.fail_after(self.config.http.decision_timeout):
                problems = await self._list_problems(await self.store(), list(routes))
        except (StoreError, TimeoutError) as error:
            reason = str(error) or "no answer within http.decision_timeout"
            logger.error(
                "guard: start-up: cannot check the lists in %s (%s): until it answers, each "
                "request follows its lists' fail_open",
                self.store_location,
                reason,
            )
            return None
        failures = []
        for name, problem in problems.items():
            used = ", ".join(f"{'|'.join(sorted(r.methods))} {r.path}" for r in routes[name])
            text = f"list {name!r} (route {used}) {problem}"
            if self.config.policy(name).required:
                failures.append(
                    f"{text}: load it (guard load <images> --list {name}) before serving, or "
                    f"set lists.{name}.required: false to serve without it"
                )
                logger.error("guard: start-up: %s", failures[-1])
            else:
                logger.warning("guard: start-up: %s (required: false: serving without it)", text)
        return "guard: " + "; ".join(failures) if failures else None

    async def _list_problems(self, store: Store, names: list[str]) -> dict[str, str]:
        """What is wrong with each list that is missing, empty or unusable."""
        sizes = {info.name: info.entries for info in await store.lists()}
        problems = {}
        for name in names:
            try:
                await store.check_meta(name)
            except UnknownList:
                problems[name] = f"is not in the store ({store.location})"
                continue
            except StoreUnavailable:
                raise
            except StoreError as error:
                problems[name] = f"cannot be used ({error}; store {store.location})"
                continue
            if sizes.get(name) == 0:
                problems[name] = f"is empty in the store ({store.location})"
        return problems

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
            self._limiter = anyio.CapacityLimiter(self.config.http.hash_workers)
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

    async def call_store(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        """Run one store operation through the circuit breaker (reliability H32, H33).

        An open breaker raises :class:`StoreUnavailable` at once, so each list's policy applies
        without a connection attempt. The first call also checks the server (eviction policy,
        list metadata); a failed check is re-run on the next call.
        """
        if not self.breaker.allow():
            self.counters.short_circuits += 1
            error = StoreUnavailable(
                f"Redis is unavailable (circuit breaker open after "
                f"{self.breaker.failures} failures; next probe in {self.breaker.retry_in():.1f}s)"
            )
            self.report("unavailable", error)
            raise error
        started = time.monotonic()
        try:
            store = await self.store()
            if not self._store_checked:
                await self._check_store(store)
            started = time.monotonic()
            result = await operation(store)
        except StoreUnavailable as error:
            self._store_failed(error)
            raise
        except StoreError:
            self.breaker.success()  # Redis answered (a missing list, a refused command)
            raise
        except BaseException:
            # Cancelled (the decision deadline, or the client left) or a bug. A Redis that kept
            # us waiting long counts as a failure, so a half-open probe never stays out forever;
            # a short wait does not, or clients that disconnect on purpose could open the
            # breaker for everyone.
            if time.monotonic() - started >= self._slow_store_seconds:
                self._store_failed(StoreUnavailable("Redis did not answer before the deadline"))
            else:
                self.breaker.release()
            raise
        self.breaker.success()
        return result

    @property
    def _slow_store_seconds(self) -> float:
        """A cancelled store call that waited this long counts as a failure of the store:
        half the socket timeout or half the decision timeout, whichever is shorter."""
        return min(self.config.redis.socket_timeout, self.config.http.decision_timeout) / 2

    def _store_failed(self, error: StoreUnavailable) -> None:
        self.counters.store_failures += 1
        self.breaker.failure()
        self.report("unavailable", error)
        # Redis may come back restarted, empty or reconfigured: check it again first.
        self._store_checked = False

    async def _check_store(self, store: Store) -> None:
        """Start-up checks (reliability H37): an evicting Redis is refused (every lookup fails
        with :class:`EvictionUnsafe` until it is fixed), damaged list metadata is logged."""
        try:
            warning = await store.check_eviction(allow_eviction=self.config.redis.allow_eviction)
        except EvictionUnsafe as error:
            self.report("eviction", error, level=logging.ERROR)
            raise
        if warning:
            logger.warning("guard: %s", warning)
        names = dict.fromkeys(name for route in self.config.routes for name in route.lists)
        for name in names:
            try:
                await store.check_meta(name)
            except UnknownList:
                continue  # never seen: not loaded yet (warned when a route looks it up)
            except StoreInconsistent as error:
                # It was there before Redis failed: restarted without persistence, or flushed.
                # An empty list is not "no match" (reliability H37).
                self.report("inconsistent", error, level=logging.ERROR)
                raise
            except StoreUnavailable:
                raise
            except StoreError as error:
                logger.error("guard: %s", error)
        self._store_checked = True

    def report(self, kind: str, error: Exception, *, level: int = logging.WARNING) -> None:
        """Log store trouble once per ``report_interval``, not once per request (H32)."""
        now = time.monotonic()
        last = self._reported_at.get(kind)
        if last is not None and now - last < self.report_interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        more = self._suppressed.pop(kind, 0)
        self._reported_at[kind] = now
        logger.log(
            level,
            "guard: store %s: %s (%d more since the last report; breaker %s; counters %s)",
            kind,
            error,
            more,
            self.breaker.state,
            self.counters,
            extra={"guard": {"action": f"store {kind}", "suppressed": more}},
        )

    def missing_list(
        self, list_name: str, route: str, policy: ListPolicy, error: StoreError
    ) -> None:
        """A lookup found a required list missing (or vanished): count it, report an error."""
        self.counters.missing_lists += 1
        follows = "unchecked (fail_open)" if policy.fail_open else "refused as unavailable"
        reason = (
            f"it is not in the store ({self.store_location}): load it "
            f"(guard load <images> --list {list_name})"
            if isinstance(error, UnknownList)
            else str(error)
        )
        report = StoreError(
            f"route {route} checks list {list_name!r}, but {reason}; until then its uploads "
            f"are {follows}"
        )
        self.report(f"missing list {list_name}", report, level=logging.ERROR)

    def warn_missing_list(self, list_name: str, route: str) -> None:
        """A route names a list the store does not have (not loaded yet, or a typo): say so once."""
        if list_name not in self._missing_lists_warned:
            self._missing_lists_warned.add(list_name)
            logger.warning(
                "guard: route %s checks list %r, which does not exist in the store: nothing can match it "
                "until it is loaded (guard load ... --list %s)",
                route,
                list_name,
                list_name,
            )

    async def aclose(self) -> None:
        """Close the store (call from the app's shutdown if you care about a clean exit)."""
        if self._store is not None:
            await self._store.close()
            self._store = None
            self._store_checked = False


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

    async def run(self) -> None:
        spool = Spool(self.config.http.spool_memory_bytes)
        try:
            try:
                outcome = await self._decide(spool)
            except ClientDisconnected:
                return  # nobody to answer; the spool is dropped below
            except GuardError as error:
                await self._refuse(refusal_for(error, self.config.http))
                return
            except Exception:
                logger.exception("guard failed on %s %s", self.scope["method"], self.scope["path"])
                await self._refuse(Refusal(500, {"error": "internal error"}))
                return
            if isinstance(outcome, Refusal):
                await self._refuse(outcome)
                return
            self.scope.setdefault("state", {})["guard"] = outcome
            await self.guard.app(self.scope, Replay(spool, self.receive), self._send_for(outcome))
        finally:
            spool.close()

    async def _decide(self, spool: Spool) -> Decision | Refusal:
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
            if all(self.config.policy(name).fail_open for name in self.route.lists):
                self._log_unchecked(list(self.route.lists))
                return Decision("unchecked", unchecked_lists=tuple(self.route.lists))
            raise StoreUnavailable(
                f"no decision within decision_timeout={http.decision_timeout:g}s"
            ) from None

    async def _judge_while_connected(self, spool: Spool) -> Decision | Refusal:
        """:meth:`_judge`, given up as soon as the client disconnects (reliability H05).

        Once the body is complete the server's ``receive`` only ever says ``http.disconnect``,
        so a watcher can wait on it meanwhile, as Starlette's streaming responses do: a client
        that left gets neither an answer nor an app call, whatever the lists' policies.
        """
        outcome: list[Decision | Refusal] = []
        failure: list[Exception] = []
        gone = False

        async def judge() -> None:
            try:
                outcome.append(await self._judge(spool))
            except Exception as error:  # noqa: BLE001 - re-raised below, unwrapped from the group
                failure.append(error)
            tasks.cancel_scope.cancel()

        async def watch() -> None:
            nonlocal gone
            message = await self.receive()
            if message["type"] == "http.disconnect":
                gone = True
                tasks.cancel_scope.cancel()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(judge)
            tasks.start_soon(watch)
        if gone:
            raise ClientDisconnected
        if failure:
            raise failure[0]
        return outcome[0]

    async def _judge(self, spool: Spool) -> Decision | Refusal:
        """Find the images, hash them in worker threads and look them up in every list."""
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
            images = find_images(
                spool.read_all(),
                content_type,
                max_parts=http.max_parts,
                max_images=http.max_images,
                json_scan=json_scan,
            )
            frames: list[FrameHash] = []
            for image in images:
                if abandoned.is_set():
                    break
                hashes = _hash_for_lookup(image, self.config.limits, dihedral)
                frames += [frame for frame in hashes.frames if not frame.low_information]
            return len(images), frames

        try:
            image_count, frames = await anyio.to_thread.run_sync(
                find_and_hash, limiter=self.guard.limiter, abandon_on_cancel=True
            )
        finally:
            abandoned.set()
        if not frames:
            return Decision("allow", images=image_count)
        matches, unchecked = await self._look_up(frames)
        verdict = decide(matches, self.config.policy)
        if verdict.action == "reject" and verdict.match is not None:
            self._log("reject", verdict.match)
            return rejection(verdict.match.list, http.statuses)
        if verdict.action == "flag" and verdict.match is not None:
            self._log("flag", verdict.match)
            if unchecked:
                self._log_unchecked(unchecked)
            match = verdict.match
            return Decision(
                "flag",
                image_count,
                match.list,
                match.distance,
                match.entry.source,
                tuple(unchecked),
            )
        if unchecked:
            self._log_unchecked(unchecked)
            return Decision("unchecked", image_count, unchecked_lists=tuple(unchecked))
        return Decision("allow", images=image_count)

    def _log_unchecked(self, lists: list[str]) -> None:
        """Count a fail-open pass; log it once per interval with the count (H32)."""
        self.guard.counters.unchecked += 1
        self.guard.report(
            "unchecked",
            StoreUnavailable(
                f"uploads on {self.route.path} passed unchecked for {', '.join(lists)} "
                f"(fail-open; {self.guard.counters.unchecked} in all)"
            ),
        )

    def _check_headers(self) -> int | None:
        """Refuse what the headers alone condemn, before reading a byte; the declared length.

        A client waiting on ``Expect: 100-continue`` then never uploads (reliability.md H01).
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

    async def _look_up(self, frames: list[FrameHash]) -> tuple[list[Match], list[str]]:
        """Matches from every list of the route (within the caller's decision deadline).

        A list whose store is unavailable, or a required list missing from it, is "unchecked"
        if its policy fails open; otherwise the whole request is refused as unavailable
        (fail-closed, the default). A missing list that is not required matches nothing.
        """
        matches: list[Match] = []
        unchecked: list[str] = []
        for name in self.route.lists:
            policy = self.config.policy(name)
            try:
                matches += await self.guard.call_store(_lookup(name, frames, policy))
            except (UnknownList, StoreInconsistent) as error:
                # Never loaded (UnknownList), or gone since this store read it (StoreInconsistent:
                # data loss, whatever `required` says; reliability H37).
                if isinstance(error, UnknownList) and not policy.required:
                    self.guard.warn_missing_list(name, self.route.path)
                    continue
                self.guard.missing_list(name, self.route.path, policy, error)
                if not policy.fail_open:
                    raise
                unchecked.append(name)
            except StoreError:
                if not policy.fail_open:
                    raise
                unchecked.append(name)
        return matches, unchecked

    def _send_for(self, decision: Decision) -> Send:
        header = self.config.http.flag_header
        if header is None or decision.action == "allow":
            return self.send
        name, value = header.lower().encode("latin-1"), decision.action.encode("latin-1")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (name, value)]}
            await self.send(message)

        return send

    async def _refuse(self, refusal: Refusal) -> None:
        body = json.dumps(refusal.body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
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

    def _log(self, action: str, match: Match) -> None:
        record = {
            "action": action,
            "list": match.list,
            "route": self.route.path,
            "distance": match.distance,
            "phash_distance": match.phash_distance,
            "transform": match.transform,
            "source": match.entry.source,
            "client": self._client(),
        }
        logger.info(
            "guard %s: upload on %s matched %s (%s) at distance %d",
            action,
            self.route.path,
            match.list,
            match.entry.source,
            match.distance,
            extra={"guard": record},
        )


def _hash_for_lookup(data: bytes, limits: ImageLimits, dihedral: bool) -> ImageHashes:
    """Hash an upload, and its flips and rotations when a list will ask for them: in the
    worker thread that decoded it, not on the event loop."""
    hashes = hash_bytes(data, limits)
    if dihedral:
        for frame in hashes.frames:
            frame.variants()
    return hashes


def _lookup(
    name: str, frames: list[FrameHash], policy: ListPolicy
) -> Callable[[Store], Awaitable[list[Match]]]:
    """One list's lookup, to run through :meth:`GuardMiddleware.call_store`. The best match
    decides a list's verdict, so only it is fetched."""
    return lambda store: store.lookup_under(name, frames, policy, limit=1)
