"""Prometheus metrics (guard/metrics.py) through a real GuardMiddleware on a real Redis.

Every GuardMiddleware of a process counts into one set of metrics (tests make many), so each test
scrapes before and after its own requests and asserts the differences exactly.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from asgi_driver import Recorder, Result, call, multipart
from conftest import data_file, run
from prometheus_client.parser import text_string_to_metric_families
from test_middleware import BLOCKED, UNRELATED, jpeg, load_lists, make_config

from guard import list_scale
from guard import metrics_app as exported
from guard.config import OperationsSettings, RedisSettings
from guard.metrics import (
    INSTALL_HINT,
    MULTIPROC_ENV,
    SCRAPE_STORE_TIMEOUT,
    MetricsObserver,
    metrics_app,
)
from guard.middleware import GuardMiddleware
from guard.store import Store

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: A sample's key: its name and its labels.
Key = tuple[str, frozenset[tuple[str, str]]]
#: 20000x20000 pixels: over limits.max_image_pixels, 413.
BOMB = "hard/bomb-20000x20000.png"


@pytest.fixture
def loaded(redis_url: str) -> str:
    """The lists of test_middleware.load_lists; the guards of earlier tests collected first, so
    only this test's guards are in the scrape-time gauges."""
    gc.collect()
    run(load_lists(redis_url))
    return redis_url


def metrics_guard(redis_url: str, **redis: Any) -> tuple[GuardMiddleware, Recorder]:
    config = dataclasses.replace(
        make_config(),
        operations=OperationsSettings(metrics_path="/metrics", events=False),
        redis=RedisSettings(**redis),
    )
    app = Recorder()
    return GuardMiddleware(app, config=config, store=Store.from_url(redis_url)), app


def samples(text: str) -> dict[Key, float]:
    """Every sample of a scrape in Prometheus' text format."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def scrape(app: Any, path: str = "/metrics") -> dict[Key, float]:
    result = run(call(app, b"", path=path, method="GET", content_type=""))
    assert result.status == 200, result.body
    assert result.headers["content-type"].startswith("text/plain")
    return samples(result.body.decode())


def added(before: dict[Key, float], after: dict[Key, float], name: str) -> dict[Key, float]:
    """How much each sample of ``name`` (counters, histogram counts) went up."""
    return {
        k: v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0] == name and v - before.get(k, 0.0) != 0
    }


def mixed_load(guard: GuardMiddleware) -> list[Result]:
    """A reject, a flag, an allow, an unchecked pass (the fail-open list `open` is missing from
    the store), a 415 and a 413."""

    unrelated = data_file(UNRELATED).read_bytes()

    async def requests() -> list[Result]:
        return [
            await call(guard, multipart(("a.jpg", data_file(BLOCKED).read_bytes()))),
            await call(guard, multipart(("u.jpg", unrelated)), path="/soft"),
            await call(guard, multipart(("a.jpg", jpeg(UNRELATED)))),
            await call(guard, multipart(("a.jpg", jpeg(UNRELATED))), path="/open"),
            await call(guard, multipart(("a.jpg", b"just some text, named like an image"))),
            await call(guard, multipart(("b.png", data_file(BOMB).read_bytes()))),
        ]

    return run(requests())


def test_a_mixed_load_is_counted_by_route_outcome_list_and_action(loaded: str) -> None:
    guard, app = metrics_guard(loaded)
    before = scrape(guard)
    results = mixed_load(guard)
    assert [r.status for r in results] == [403, 200, 200, 200, 415, 413]
    assert [s.action for s in app.states] == ["flag", "allow", "unchecked"]
    after = scrape(guard)

    assert added(before, after, "guard_requests_total") == {
        key("guard_requests_total", route="/upload", outcome="reject"): 1,
        key("guard_requests_total", route="/soft", outcome="flag"): 1,
        key("guard_requests_total", route="/upload", outcome="allow"): 1,
        key("guard_requests_total", route="/open", outcome="unchecked"): 1,
        key("guard_requests_total", route="/upload", outcome="refuse"): 2,
    }
    assert added(before, after, "guard_refusals_total") == {
        key("guard_refusals_total", route="/upload", status="403"): 1,
        key("guard_refusals_total", route="/upload", status="415"): 1,
        key("guard_refusals_total", route="/upload", status="413"): 1,
    }
    assert added(before, after, "guard_decisions_total") == {
        key("guard_decisions_total", list="spam", action="reject"): 1,
        key("guard_decisions_total", list="soft", action="flag"): 1,
        key("guard_decisions_total", list="open", action="unchecked"): 1,
    }
    assert added(before, after, "guard_store_events_total") == {
        key("guard_store_events_total", event="missing_lists"): 1,
        key("guard_store_events_total", event="unchecked"): 1,
    }
    # Every store event is there from the start, at 0 until it happens.
    for event in ("store_failures", "short_circuits", "shadow_rejects", "shadow_flags"):
        assert key("guard_store_events_total", event=event) in after

    # Histograms: one observation per request; the refusals found no image to hash.
    assert added(before, after, "guard_images_per_request_count") == {
        key("guard_images_per_request_count", route="/upload"): 4,
        key("guard_images_per_request_count", route="/soft"): 1,
        key("guard_images_per_request_count", route="/open"): 1,
    }
    assert added(before, after, "guard_images_per_request_sum") == {
        key("guard_images_per_request_sum", route="/upload"): 2,
        key("guard_images_per_request_sum", route="/soft"): 1,
        key("guard_images_per_request_sum", route="/open"): 1,
    }
    hashed = {"/upload": 2, "/soft": 1, "/open": 1}
    for name in ("guard_hash_seconds_count", "guard_lookup_seconds_count"):
        assert added(before, after, name) == {
            key(name, route=route): count for route, count in hashed.items()
        }
    # Each observation fell in a bucket: the +Inf bucket counts them all, and the time is real.
    soft_count = after[key("guard_hash_seconds_count", route="/soft")]
    assert after[key("guard_hash_seconds_bucket", route="/soft", le="+Inf")] == soft_count
    soft_sum = key("guard_hash_seconds_sum", route="/soft")
    assert added(before, after, "guard_hash_seconds_sum")[soft_sum] > 0

    # Scrape-time gauges: the lists the config names, from the store; the breaker closed.
    assert after[key("guard_list_entries", list="spam")] == 2
    assert after[key("guard_list_entries", list="soft")] == 1
    assert after[key("guard_list_entries", list="open")] == 0  # missing from the store
    assert after[key("guard_list_version", list="spam")] >= 1
    assert key("guard_list_version", list="open") not in after
    spam = guard.config.policy("spam")
    share = after[key("guard_list_estimated_false_reject_share", list="spam")]
    assert share == pytest.approx(list_scale.estimate(spam, 2).rejected) and 0 < share < 1e-3
    assert key("guard_list_estimated_false_reject_share", list="open") not in after
    assert after[key("guard_breaker_state")] == 0


def test_metrics_app_serves_the_same_counts_as_the_metrics_path(loaded: str) -> None:
    guard, _ = metrics_guard(loaded)
    mounted = metrics_app()
    assert exported is metrics_app  # guard.metrics_app, exported lazily
    before = scrape(mounted, path="/")
    run(call(guard, multipart(("a.jpg", data_file(BLOCKED).read_bytes()))))
    through_app, through_path = scrape(mounted, path="/"), scrape(guard)
    name = "guard_requests_total"
    reject = key(name, route="/upload", outcome="reject")
    assert added(before, through_app, name) == {reject: 1}
    assert through_path[reject] == through_app[reject]


def test_several_guards_in_one_process_share_the_metrics(loaded: str) -> None:
    first, _ = metrics_guard(loaded)
    second, _ = metrics_guard(loaded)  # no "Duplicated timeseries"
    before = scrape(first)
    run(call(first, multipart(("a.jpg", jpeg(UNRELATED)))))
    run(call(second, multipart(("a.jpg", jpeg(UNRELATED)))))
    allow = key("guard_requests_total", route="/upload", outcome="allow")
    assert added(before, scrape(second), "guard_requests_total") == {allow: 2}


def test_store_failures_and_the_open_breaker(loaded: str) -> None:
    guard, _ = metrics_guard(loaded, breaker_failures=1)
    before = scrape(guard)
    guard._store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)
    body = multipart(("a.jpg", jpeg(UNRELATED)))

    async def twice() -> list[int | None]:
        return [(await call(guard, body)).status for _ in range(2)]

    assert run(twice()) == [503, 503]  # the first failed, the second met the open breaker
    after = scrape(guard)  # the store is down: the list gauges keep their last values
    assert added(before, after, "guard_store_events_total") == {
        key("guard_store_events_total", event="store_failures"): 1,
        key("guard_store_events_total", event="short_circuits"): 1,
    }
    assert after[key("guard_breaker_state")] == 2
    assert after[key("guard_list_entries", list="spam")] == 2
    assert added(before, after, "guard_refusals_total") == {
        key("guard_refusals_total", route="/upload", status="503"): 2
    }


def test_a_silent_store_leaves_the_last_list_sizes_and_the_scrape_answers(
    loaded: str, silent_server: int
) -> None:
    guard, _ = metrics_guard(loaded)
    assert scrape(guard)[key("guard_list_entries", list="spam")] == 2
    guard._store = Store.from_url(
        f"redis://127.0.0.1:{silent_server}", socket_timeout=30, connect_timeout=30
    )

    async def timed() -> tuple[dict[Key, float], float]:
        started = anyio.current_time()
        result = await call(guard, b"", path="/metrics", method="GET", content_type="")
        assert result.status == 200
        return samples(result.body.decode()), anyio.current_time() - started

    found, elapsed = run(timed())
    assert found[key("guard_list_entries", list="spam")] == 2
    assert found[key("guard_list_version", list="spam")] >= 1
    # SCRAPE_STORE_TIMEOUT (1 s) ended the wait, not the 30 s socket timeout (10 s: slack for a
    # loaded test machine).
    assert SCRAPE_STORE_TIMEOUT <= elapsed < 10


# --- without the extra -------------------------------------------------------------------------


@pytest.fixture
def without_prometheus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """prometheus_client as if not installed: importing it raises ImportError."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    yield


def test_without_prometheus_client_the_path_answers_501_and_start_up_warns(
    loaded: str, without_prometheus: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="guard"):
        guard, app = metrics_guard(loaded)
    assert not any(isinstance(o, MetricsObserver) for o in guard.observers)
    assert [r.getMessage() for r in caplog.records if "prometheus_client" in r.getMessage()] == [
        f"{INSTALL_HINT} (operations.metrics_path /metrics answers 501 until then)"
    ]
    result = run(call(guard, b"", path="/metrics", method="GET", content_type=""))
    assert (result.status, result.body.decode()) == (501, INSTALL_HINT + "\n")
    assert result.headers["content-type"] == "text/plain; charset=utf-8"
    # Guarding goes on without metrics.
    assert run(call(guard, multipart(("a.jpg", jpeg(UNRELATED))))).status == 200
    assert app.calls == 1


def test_the_core_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, guard, guard.middleware, guard.metrics; "
        "print('prometheus_client' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert completed.stdout.strip() == "False"


# --- many workers: multiprocess mode -----------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import asyncio, dataclasses, sys
    from asgi_driver import call, multipart
    from conftest import data_file
    from test_middleware import UNRELATED, make_config
    from guard.config import OperationsSettings
    from guard.metrics import refresh
    from guard.middleware import GuardMiddleware
    from guard.store import Store
    from asgi_driver import Recorder

    async def main(url, count):
        config = dataclasses.replace(make_config(), operations=OperationsSettings(events=False))
        guard = GuardMiddleware(Recorder(), config=config, store=Store.from_url(url))
        body = multipart(("a.jpg", data_file(UNRELATED).read_bytes()))
        for _ in range(count):
            assert (await call(guard, body)).status == 200
        await refresh()  # as a scrape answered by this worker would: the list gauges
        await guard.aclose()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.slow
def test_two_worker_processes_are_summed_in_one_scrape(
    loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, MULTIPROC_ENV: str(folder), "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, loaded, str(count)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for count in (2, 3)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.decode()
    assert len(list(folder.glob("*.db"))) >= 2  # each worker wrote its own files

    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    found = scrape(metrics_app(), path="/")
    assert found[key("guard_requests_total", route="/upload", outcome="allow")] == 5
    assert found[key("guard_hash_seconds_count", route="/upload")] == 5
    assert found[key("guard_images_per_request_sum", route="/upload")] == 5
    assert found[key("guard_list_entries", list="spam")] == 2
    assert found[key("guard_breaker_state")] == 0
