"""The health answer with Redis up, down, and a list missing; liveness never asks Redis."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from asgi_driver import Recorder, call
from conftest import run
from test_middleware import loaded, make_config  # noqa: F401

from guard import health as health_module
from guard.config import Config, ListPolicy, OperationsSettings, Route
from guard.middleware import GuardMiddleware
from guard.store import Store

pytestmark = pytest.mark.every_redis


def config_with_health(**lists: ListPolicy) -> Config:
    config = make_config()
    policies = {**config.lists, **lists}
    routes = config.routes + tuple(
        Route(f"/{name}", (name,), frozenset({"POST"})) for name in lists
    )
    return dataclasses.replace(
        config,
        lists=policies,
        routes=routes,
        operations=OperationsSettings(health_path="/guard/health"),
    )


def probe(guard: GuardMiddleware, query: str = "", method: str = "GET") -> tuple[int, Any]:
    path = "/guard/health" + (f"?{query}" if query else "")
    result = run(call(guard, b"", path=path, method=method, content_type=""))
    return result.status or 0, json.loads(result.body) if result.body else None


def test_redis_up_with_every_list_loaded(loaded: str) -> None:  # noqa: F811
    # make_config's `open` list is fail-open and never loaded: drop it from the routes here.
    config = dataclasses.replace(config_with_health(), routes=make_config().routes[:2])
    app = Recorder()
    guard = GuardMiddleware(app, config=config, store=Store.from_url(loaded))
    status, body = probe(guard)
    assert status == 200 and app.calls == 0  # answered by guard, not the app
    assert body["status"] == "ok"
    assert body["store"] == {"reachable": True, "breaker": "closed"}
    assert body["lists"] == {
        "spam": {
            "mode": "enforce",
            "fail_open": False,
            "required": True,
            "state": "ok",
            "entries": 2,
            "version": body["lists"]["spam"]["version"],
        },
        "soft": {
            "mode": "enforce",
            "fail_open": False,
            "required": True,
            "state": "ok",
            "entries": 1,
            "version": body["lists"]["soft"]["version"],
        },
    }
    assert body["lists"]["spam"]["version"] >= 1
    assert "unix" not in json.dumps(body) and "redis://" not in json.dumps(body)  # no address


def test_a_missing_list_fails_readiness_unless_optional_or_fail_open(loaded: str) -> None:  # noqa: F811
    # `open` (make_config) is fail-open and missing: degraded. `extra` is required and missing.
    guard = GuardMiddleware(
        Recorder(),
        config=config_with_health(extra=ListPolicy()),
        store=Store.from_url(loaded),
    )
    status, body = probe(guard)
    assert (status, body["status"]) == (503, "unavailable")
    assert body["lists"]["extra"]["state"] == "missing"
    assert body["lists"]["open"]["state"] == "missing"
    optional = GuardMiddleware(
        Recorder(),
        config=config_with_health(extra=ListPolicy(required=False)),
        store=Store.from_url(loaded),
    )
    status, body = probe(optional)
    assert (status, body["status"]) == (200, "degraded")
    assert body["lists"]["extra"] == {
        "mode": "enforce",
        "fail_open": False,
        "required": False,
        "state": "missing",
    }


def test_redis_down_fails_readiness_and_liveness_stays_up(silent_server: int) -> None:
    config = dataclasses.replace(
        config_with_health(), http=dataclasses.replace(make_config().http, decision_timeout=0.3)
    )
    guard = GuardMiddleware(Recorder(), config=config)
    guard._store = Store.from_url(
        f"redis://127.0.0.1:{silent_server}", socket_timeout=30, connect_timeout=30
    )
    status, body = probe(guard)
    assert (status, body["status"]) == (503, "unavailable")
    assert body["store"]["reachable"] is False and "0.3s" in body["store"]["error"]
    assert {entry["state"] for entry in body["lists"].values()} == {"unreachable"}
    assert probe(guard, "live") == (200, {"status": "alive"})


def test_only_fail_open_lists_down_is_degraded_not_unavailable() -> None:
    config = dataclasses.replace(
        config_with_health(),
        routes=(Route("/open", ("open",), frozenset({"POST"})),),
    )
    guard = GuardMiddleware(Recorder(), config=config, store=Store.from_url("redis://127.0.0.1:9"))
    status, body = probe(guard)
    assert (status, body["status"]) == (200, "degraded")
    assert body["lists"]["open"]["state"] == "unreachable"


def test_an_open_breaker_answers_without_touching_redis(
    loaded: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = GuardMiddleware(Recorder(), config=config_with_health(), store=Store.from_url(loaded))
    for _ in range(guard.breaker.failures):
        guard.breaker.failure()
    calls: list[object] = []
    monkeypatch.setattr(guard, "call_store", lambda op: calls.append(op))
    status, body = probe(guard)
    assert (status, body["store"]["breaker"]) == (503, "open")
    assert "circuit breaker open" in body["store"]["error"] and calls == []


def test_answers_are_reused_for_a_second(
    loaded: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = GuardMiddleware(Recorder(), config=config_with_health(), store=Store.from_url(loaded))
    asked: list[int] = []
    real = guard.call_store

    async def counting(operation: Any) -> Any:
        asked.append(1)
        return await real(operation)

    monkeypatch.setattr(guard, "call_store", counting)
    now = [1000.0]
    monkeypatch.setattr(health_module.time, "monotonic", lambda: now[0])
    probe(guard)
    probe(guard)
    assert len(asked) == 1
    now[0] += health_module.CACHE_SECONDS
    probe(guard)
    assert len(asked) == 2


def test_methods_and_head(loaded: str) -> None:  # noqa: F811
    guard = GuardMiddleware(Recorder(), config=config_with_health(), store=Store.from_url(loaded))
    status, body = probe(guard, method="POST")
    assert (status, body) == (405, {"error": "use GET"})
    head = run(call(guard, b"", path="/guard/health", method="HEAD", content_type=""))
    assert head.status == 200 and head.body == b""  # degraded: `open` fails open
    assert int(head.headers["content-length"]) > 0
