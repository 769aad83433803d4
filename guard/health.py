"""Health and readiness: can guard check the uploads its routes expect it to check?

Readiness (``operations.health_path``, or ``await guard.health()``) asks the store, through the
circuit breaker, for the lists the routes name: 200 when every fail-closed list can be checked,
503 when one cannot (its uploads would be refused as unavailable, so a load balancer should send
them elsewhere). A fail-open list that cannot be checked, or an optional list never loaded,
makes the answer "degraded" but still 200: uploads go on, unchecked. Liveness
(``<health_path>?live``) never touches the store: a Redis outage must not make Kubernetes
restart every worker.

An answer is reused for ``CACHE_SECONDS``, so a crowd of probes costs Redis one round trip a
second. The body names lists, their sizes and versions, and the breaker's state; never the
store's address or a hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio

from guard.errors import StoreError
from guard.types import ListInfo, Receive, Scope, Send

if TYPE_CHECKING:
    from guard.middleware import GuardMiddleware

#: Seconds an answer is reused.
CACHE_SECONDS = 1.0
#: Seconds one readiness check may wait for the store (or the decision timeout, if shorter).
MAX_WAIT = 2.0

Status = Literal["ok", "degraded", "unavailable"]


@dataclass(frozen=True)
class Health:
    """One readiness answer."""

    status: Status
    #: Per list the routes name: its state and, when the store answered, its size and version.
    lists: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_reachable: bool = True
    breaker: str = "closed"
    #: Why the store could not be asked, if it could not.
    store_error: str | None = None
    checked_at: float = 0.0

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def as_json(self) -> dict[str, Any]:
        store: dict[str, Any] = {"reachable": self.store_reachable, "breaker": self.breaker}
        if self.store_error is not None:
            store["error"] = self.store_error
        return {
            "status": self.status,
            "store": store,
            "lists": self.lists,
            "checked_at": round(self.checked_at, 3),
        }


class HealthCheck:
    """The readiness answers of one middleware, cached for :data:`CACHE_SECONDS`."""

    def __init__(self, guard: GuardMiddleware) -> None:
        self.guard = guard
        self._last: Health | None = None
        self._lock: anyio.Lock | None = None

    async def __call__(self) -> Health:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:  # one store round trip for a crowd of probes
            last = self._last
            if last is not None and time.monotonic() - last.checked_at < CACHE_SECONDS:
                return last
            self._last = await self._check()
            return self._last

    async def _check(self) -> Health:
        guard = self.guard
        config = guard.config
        names = list(dict.fromkeys(name for route in config.routes for name in route.lists))
        breaker = guard.breaker
        infos: dict[str, ListInfo] = {}
        error: str | None = None
        if breaker.state == "open" and breaker.retry_in() > 0:
            # Not a probe's turn: the breaker answers for Redis (no connection attempt).
            error = f"circuit breaker open (next probe in {breaker.retry_in():.1f}s)"
        else:
            wait = min(MAX_WAIT, config.http.decision_timeout)
            try:
                with anyio.fail_after(wait):
                    found = await guard.call_store(lambda store: store.lists())
                infos = {info.name: info for info in found}
            except StoreError as failure:
                error = str(failure)
            except TimeoutError:
                error = f"no answer within {wait:g}s"
        lists: dict[str, dict[str, Any]] = {}
        status: Status = "ok"
        for name in names:
            policy = config.policy(name)
            entry: dict[str, Any] = {
                "mode": policy.mode,
                "fail_open": policy.fail_open,
                "required": policy.required,
            }
            info = infos.get(name)
            if error is not None:
                state = "unreachable"
            elif info is None or info.entries == 0:
                state = "missing" if info is None else "empty"
            else:
                state = "ok"
                entry.update(entries=info.entries, version=info.version)
            entry["state"] = state
            lists[name] = entry
            if state == "ok":
                continue
            if state == "unreachable" and not policy.fail_open:
                status = "unavailable"
            elif state != "unreachable" and policy.required and not policy.fail_open:
                status = "unavailable"  # each lookup would answer 503 (H37)
            elif status == "ok":
                status = "degraded"
        return Health(
            status=status,
            lists=lists,
            store_reachable=error is None,
            breaker=breaker.state,
            store_error=error,
            checked_at=time.monotonic(),
        )


async def serve(check: HealthCheck, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request for the health path: readiness, or liveness with ``?live``."""
    if scope["method"] not in ("GET", "HEAD"):
        await _answer(send, 405, {"error": "use GET"}, scope, (("allow", "GET, HEAD"),))
        return
    query = scope.get("query_string", b"").decode("latin-1")
    if "live" in query.split("&"):
        await _answer(send, 200, {"status": "alive"}, scope)
        return
    health = await check()
    await _answer(send, health.http_status, health.as_json(), scope)


async def _answer(
    send: Send,
    status: int,
    body: dict[str, Any],
    scope: Scope,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    data = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *((name.encode(), value.encode()) for name, value in extra),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})
