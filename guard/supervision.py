"""Store supervision: every call guard makes to the store, watched (hostile cases H32, H33, H37).

One :class:`StoreSupervisor` per middleware, shared by every request. It runs store operations
through the circuit breaker, counts what went wrong (:class:`StoreCounters`), checks the server and
the lists before trusting them, and logs store trouble at most once per ``report_interval``. It
decides nothing about a request: a lookup's failures go back to :func:`guard.verdict.judge`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from guard.breaker import CircuitBreaker
from guard.config import Config, ListPolicy, Route
from guard.errors import (
    EvictionUnsafe,
    StoreError,
    StoreInconsistent,
    StoreUnavailable,
    UnknownList,
)
from guard.hashing import FrameHash
from guard.list_scale import warning as scale_warning
from guard.observers import Observer
from guard.review.modes import with_modes
from guard.store import Store
from guard.store.allow import allow_list, numbered
from guard.types import ListInfo, Match
from guard.verdict import action_for, refuses, suppresses

logger = logging.getLogger("guard")
T = TypeVar("T")
#: Seconds between two log lines about the same store trouble (hostile case H32).
REPORT_INTERVAL = 10.0


@dataclass
class StoreCounters:
    """How often the store let guard down, and how often a shadow decision let an upload through,
    for metrics: read ``GuardMiddleware.counters``.

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
    #: Requests passed to the app as "shadow-reject": a list in shadow mode (or outside its
    #: enforce_ratio) would have rejected them.
    shadow_rejects: int = 0
    #: Requests passed to the app as "shadow-flag": such a list would have flagged them.
    shadow_flags: int = 0


@dataclass(frozen=True)
class Lookups:
    """What one request's lookups found: the matches, and the lists that could not be checked."""

    matches: list[Match] = field(default_factory=list)
    #: Each list whose lookup failed, with why, in route order (the verdict applies its policy).
    failures: dict[str, StoreError] = field(default_factory=dict)
    #: Each list's allow entry nearest to a frame, by list and frame index (``Match.frame``), for
    #: the lists that matched and have one.
    allowed: dict[tuple[str, int], Match] = field(default_factory=dict)


class StoreSupervisor:
    """The store as the middleware sees it: behind a breaker, checked, counted and reported.

    ``open_store`` opens (or returns) the store; ``location`` names it for messages. Both belong
    to the middleware, which builds the store and may be handed one. ``observers`` hear of every
    counter that goes up.
    """

    def __init__(
        self,
        config: Config,
        open_store: Callable[[], Awaitable[Store]],
        location: Callable[[], str],
        observers: Observer | None = None,
    ) -> None:
        self.config = config
        #: Told of every counter that goes up (metrics count per process from it).
        self.observers = observers if observers is not None else Observer()
        self._open_store = open_store
        self._location = location
        redis = config.redis
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
        self._missing_lists_warned: set[str] = set()
        self._store_checked = False

    # --- start-up ---------------------------------------------------------------------------

    async def check_lists(self) -> str | None:
        """Check every list the routes name; the message start-up fails with, or None.

        A ``required`` list (the default) that is missing, empty or unusable fails start-up,
        naming it, its routes and the store; an optional one is a warning. A store that cannot
        answer within ``http.decision_timeout`` is logged and does not stop start-up: requests
        then follow each list's ``fail_open``.
        """
        routes: dict[str, list[Route]] = {}
        for route in self.config.routes:
            for name in route.lists:
                routes.setdefault(name, []).append(route)
        if not routes:
            return None
        try:
            with anyio.fail_after(self.config.http.decision_timeout):
                store = await self._open_store()
                infos = {info.name: info for info in await store.lists()}
                problems = await self._list_problems(store, infos, list(routes))
                modes = await store.mode_overrides()
        except (StoreError, TimeoutError) as error:
            reason = str(error) or "no answer within http.decision_timeout"
            logger.error(
                "guard: start-up: cannot check the lists in %s (%s): until it answers, each "
                "request follows its lists' fail_open",
                self._location(),
                reason,
            )
            return None
        await self._load_mirrors(store, [name for name in routes if name not in problems])
        config = with_modes(self.config, modes)
        for name in routes:
            if name in infos and name not in problems:
                size_warning = scale_warning(name, config.policy(name), infos[name].entries)
                if size_warning is not None:
                    logger.warning("guard: start-up: %s", size_warning)
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

    async def _load_mirrors(self, store: Store, names: list[str]) -> None:
        """Load the lists' mirrors (and their allow-lists') before serving, one after the other,
        within ``http.decision_timeout`` in all: the first requests then find them ready. What
        is not loaded by then goes on loading; requests wait for it within their deadline."""
        try:
            with anyio.fail_after(self.config.http.decision_timeout):
                for name in names:
                    for stored in (name, allow_list(name)):
                        with contextlib.suppress(StoreError):  # no allow-list; Redis failing
                            await store.refresh_mirror(stored)
        except TimeoutError:
            logger.warning(
                "guard: start-up: the lists' mirrors are still loading after "
                "http.decision_timeout: the first requests wait for them"
            )

    async def _list_problems(
        self, store: Store, infos: dict[str, ListInfo], names: list[str]
    ) -> dict[str, str]:
        """What is wrong with each list that is missing, empty or unusable."""
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
            info = infos.get(name)
            if info is not None and info.entries == 0:
                # Every entry disabled enforces nothing either: say so, or "empty" misleads.
                why = f" (all {info.disabled} of its entries are disabled)" if info.disabled else ""
                problems[name] = f"is empty in the store ({store.location}){why}"
        return problems

    def count(self, counter: str) -> None:
        """Add one to a :class:`StoreCounters` counter and tell the observers."""
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        self.observers.counted(counter)

    # --- every store call -------------------------------------------------------------------

    async def call(self, operation: Callable[[Store], Awaitable[T]]) -> T:
        """Run one store operation through the circuit breaker (hostile cases H32, H33).

        An open breaker raises :class:`StoreUnavailable` at once, so each list's policy applies
        without a connection attempt. The first call also checks the server (eviction policy,
        list metadata); a failed check is re-run on the next call.
        """
        if not self.breaker.allow():
            self.count("short_circuits")
            error = StoreUnavailable(
                f"Redis is unavailable (circuit breaker open after "
                f"{self.breaker.failures} failures; next probe in {self.breaker.retry_in():.1f}s)"
            )
            self.report("unavailable", error)
            raise error
        started = time.monotonic()
        try:
            store = await self._open_store()
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
        self.count("store_failures")
        self.breaker.failure()
        self.report("unavailable", error)
        # Redis may come back restarted, empty or reconfigured: check it again first.
        self._store_checked = False

    def store_closed(self) -> None:
        """The middleware closed the store: check the next one before trusting it."""
        self._store_checked = False

    async def _check_store(self, store: Store) -> None:
        """Start-up checks (hostile case H37): an evicting Redis is refused (every lookup fails
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
                # An empty list is not "no match" (hostile case H37).
                self.report("inconsistent", error, level=logging.ERROR)
                raise
            except StoreUnavailable:
                raise
            except StoreError as error:
                logger.error("guard: %s", error)
        self._store_checked = True

    # --- lookups ----------------------------------------------------------------------------

    async def look_up(self, route: Route, frames: list[FrameHash]) -> Lookups:
        """Look the frames up in every list of ``route`` (within the caller's deadline).

        A list that cannot be checked is recorded with its error (missing ones counted and
        reported); the first one that alone refuses the request (:func:`guard.verdict.refuses`)
        ends the lookups, as no later match could change the answer. A list whose match would
        do something also has its allow-list looked up (:meth:`_allow_for`); if that fails, the
        list counts as failed.
        """
        matches: list[Match] = []
        failures: dict[str, StoreError] = {}
        allowed: dict[tuple[str, int], Match] = {}
        for name in route.lists:
            policy = self.config.policy(name)
            try:
                found = await self.call(_lookup(name, frames, policy))
                allow_entries, found = await self._allow_for(name, frames, policy, found)
                matches += found
                allowed.update(allow_entries)
            except StoreError as error:
                failures[name] = error
                if isinstance(error, UnknownList) and not policy.required:
                    self._warn_missing_list(name, route.path)
                elif isinstance(error, (UnknownList, StoreInconsistent)):
                    # Never loaded (UnknownList), or gone since this store read it
                    # (StoreInconsistent: data loss, whatever `required` says; hostile case H37).
                    self._missing_list(name, route.path, policy, error)
                if refuses(error, policy):
                    break
        return Lookups(matches, failures, allowed)

    async def _allow_for(
        self, name: str, frames: list[FrameHash], policy: ListPolicy, found: list[Match]
    ) -> tuple[dict[tuple[str, int], Match], list[Match]]:
        """The list's allow entries nearest to the frames, by (list, frame) (none: none near,
        or not needed), and the list's matches the verdict needs.

        Only a list whose best match would reject or flag pays for the allow-list lookup (the
        common upload matches nothing), and with no allow entry near any frame, that is all.
        Otherwise the rule is applied frame by frame (an allowed image beside a listed one, in
        one request or one animation, must not pass the listed one): with several frames, each
        is looked up alone, under its index in ``frames``.
        """
        if not found or action_for(found[0], policy) == "allow":
            return {}, found
        allow = await self.call(_lookup_allowed(name, frames, policy))
        if allow is None:
            return {}, found
        if len(frames) == 1:
            return await self._one_frame(name, frames, policy, found, allow)
        allowed: dict[tuple[str, int], Match] = {}
        matches: list[Match] = []
        for frame in numbered(frames):
            alone = [frame]
            found = await self.call(_lookup(name, alone, policy))
            if not found or action_for(found[0], policy) == "allow":
                continue
            allow = await self.call(_lookup_allowed(name, alone, policy))
            more, found = await self._one_frame(name, alone, policy, found, allow)
            allowed.update(more)
            matches += found
        return allowed, matches

    async def _one_frame(
        self,
        name: str,
        frame: list[FrameHash],
        policy: ListPolicy,
        found: list[Match],
        allow: Match | None,
    ) -> tuple[dict[tuple[str, int], Match], list[Match]]:
        """One frame's best match and nearest allow entry, and the list's matches the verdict
        needs: if the allow entry suppresses the best match, every match it cannot suppress is
        nearer than it (within its aHash distance: only entries without a pHash can be, as the
        best match is the nearest confirmed one), so those are fetched too, and the verdict
        equals ``guard check``'s, which sees every match."""
        if allow is None:
            return {}, found
        allowed = {(name, allow.frame): allow}
        if not suppresses(allow, found[0], policy):
            return allowed, found
        nearer = await self.call(_lookup_within(name, frame, policy, allow.distance))
        return allowed, [found[0], *nearer]

    def passed_unchecked(self, route: Route, lists: Sequence[str]) -> None:
        """Count a request let through with fail-open lists unchecked; log it once per
        interval with the count (H32)."""
        self.count("unchecked")
        self.report(
            "unchecked",
            StoreUnavailable(
                f"uploads on {route.path} passed unchecked for {', '.join(lists)} "
                f"(fail-open; {self.counters.unchecked} in all)"
            ),
        )

    # --- logs -------------------------------------------------------------------------------

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

    def _missing_list(
        self, list_name: str, route: str, policy: ListPolicy, error: StoreError
    ) -> None:
        """A lookup found a required list missing (or vanished): count it, report an error."""
        self.count("missing_lists")
        follows = "unchecked (fail_open)" if policy.fail_open else "refused as unavailable"
        reason = (
            f"it is not in the store ({self._location()}): load it "
            f"(guard load <images> --list {list_name})"
            if isinstance(error, UnknownList)
            else str(error)
        )
        report = StoreError(
            f"route {route} checks list {list_name!r}, but {reason}; until then its uploads "
            f"are {follows}"
        )
        self.report(f"missing list {list_name}", report, level=logging.ERROR)

    def _warn_missing_list(self, list_name: str, route: str) -> None:
        """A route names an optional list the store does not have (not loaded yet, or a typo):
        say so once."""
        if list_name not in self._missing_lists_warned:
            self._missing_lists_warned.add(list_name)
            logger.warning(
                "guard: route %s checks list %r, which does not exist in the store: nothing can "
                "match it until it is loaded (guard load ... --list %s)",
                route,
                list_name,
                list_name,
            )


def _lookup(
    name: str, frames: list[FrameHash], policy: ListPolicy
) -> Callable[[Store], Awaitable[list[Match]]]:
    """One list's lookup, to run through :meth:`StoreSupervisor.call`. The best match decides a
    list's verdict, so only it is fetched."""
    return lambda store: store.lookup_under(name, frames, policy, limit=1)


def _lookup_allowed(
    name: str, frames: list[FrameHash], policy: ListPolicy
) -> Callable[[Store], Awaitable[Match | None]]:
    """One list's allow-list lookup (:meth:`Store.lookup_allowed`), to run through
    :meth:`StoreSupervisor.call`."""
    return lambda store: store.lookup_allowed(name, frames, policy)


def _lookup_within(
    name: str, frames: list[FrameHash], policy: ListPolicy, radius: int
) -> Callable[[Store], Awaitable[list[Match]]]:
    """Every match of one list within ``radius`` aHash bits (under its confirm radius and
    dihedral setting)."""
    return lambda store: store.lookup(
        name,
        frames,
        radius=radius,
        confirm_radius=policy.confirm_radius,
        dihedral=policy.dihedral,
    )
