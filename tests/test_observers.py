"""Observers hear of every guarded request, every recorded decision and every store counter."""

from __future__ import annotations

import logging

import pytest
from asgi_driver import Recorder, call, multipart
from conftest import run
from test_middleware import BLOCKED, UNRELATED, jpeg, loaded, make_config  # noqa: F401

from guard.middleware import GuardMiddleware
from guard.observers import DecisionLog, Observer, Observers, RequestReport
from guard.store import Store
from guard.types import DecisionRecord


class Notes(Observer):
    def __init__(self) -> None:
        self.reports: list[RequestReport] = []
        self.records: list[DecisionRecord] = []
        self.counters: list[str] = []

    def checked(self, report: RequestReport) -> None:
        self.reports.append(report)

    def decided(self, record: DecisionRecord) -> None:
        self.records.append(record)

    def counted(self, counter: str) -> None:
        self.counters.append(counter)


class Broken(Observer):
    def checked(self, report: RequestReport) -> None:
        raise RuntimeError("observer bug")

    def decided(self, record: DecisionRecord) -> None:
        raise RuntimeError("observer bug")


def test_every_outcome_reaches_the_observers(loaded: str) -> None:  # noqa: F811
    notes = Notes()
    app = Recorder()
    guard = GuardMiddleware(
        app, config=make_config(), store=Store.from_url(loaded), observers=[notes]
    )
    assert isinstance(next(iter(guard.observers)), DecisionLog)  # the log comes first
    uploads = [
        ("/upload", multipart(("b.jpg", jpeg(BLOCKED)))),
        ("/upload", multipart(("u.jpg", jpeg(UNRELATED)), ("v.jpg", jpeg(UNRELATED)))),
        ("/soft", multipart(("u.jpg", jpeg(UNRELATED)))),
        ("/upload", multipart(("t.txt", b"not an image"))),
    ]
    results = [
        run(call(guard, body, path=path, headers=[("x-request-id", f"r{i}")]))
        for i, (path, body) in enumerate(uploads)
    ]
    assert [r.status for r in results] == [403, 200, 200, 415]
    assert [
        (r.route, r.method, r.outcome, r.status, r.images, r.request_id) for r in notes.reports
    ] == [
        ("/upload", "POST", "reject", 403, 1, "r0"),
        ("/upload", "POST", "allow", None, 2, "r1"),
        ("/soft", "POST", "flag", None, 1, "r2"),
        ("/upload", "POST", "refuse", 415, 0, "r3"),
    ]
    for report in notes.reports[:3]:
        assert report.hash_seconds > 0 and report.lookup_seconds > 0
    assert [(r.action, r.list, r.request_id, r.distance, r.source) for r in notes.records] == [
        ("reject", "spam", "r0", 0, BLOCKED),
        ("flag", "soft", "r2", 3, "near.jpg"),
    ]
    assert app.states[1].request_id == "r2"  # the flagged request's decision, as recorded


def test_a_failing_observer_never_fails_the_request(
    loaded: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    notes = Notes()
    guard = GuardMiddleware(
        Recorder(),
        config=make_config(),
        store=Store.from_url(loaded),
        observers=[Broken(), notes],
    )
    with caplog.at_level(logging.ERROR, logger="guard"):
        blocked = run(call(guard, multipart(("b.jpg", jpeg(BLOCKED)))))
        passed = run(call(guard, multipart(("u.jpg", jpeg(UNRELATED)))))
    assert (blocked.status, passed.status) == (403, 200)
    # The observer after the broken one still heard everything.
    assert [r.outcome for r in notes.reports] == ["reject", "allow"]
    # Logged once per interval, not once per call: three failed calls, one record.
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_store_counters_are_announced(silent_server: int) -> None:
    notes = Notes()
    guard = GuardMiddleware(Recorder(), config=make_config(decision_timeout=0.3), observers=[notes])
    guard._store = Store.from_url(
        f"redis://127.0.0.1:{silent_server}", socket_timeout=30, connect_timeout=30
    )
    result = run(call(guard, multipart(("a.jpg", jpeg(UNRELATED))), path="/open"))
    assert result.status == 200
    assert notes.counters == ["store_failures", "unchecked"]
    assert guard.counters.store_failures == 1 and guard.counters.unchecked == 1
    assert [(r.action, r.unchecked_lists) for r in notes.records] == [("unchecked", ("open",))]


def test_observers_can_be_added_and_removed() -> None:
    notes = Notes()
    group = Observers()
    group.add(notes)
    record = DecisionRecord("flag", "r", "/upload", "POST", 0.0)
    group.decided(record)
    group.remove(notes)
    group.decided(record)
    assert notes.records == [record] and len(group) == 0
