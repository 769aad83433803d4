"""The decision stream: every recorded decision in a bounded Redis Stream, and `guard events`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from asgi_driver import Recorder, call, multipart
from conftest import data_file, run
from test_middleware import BLOCKED, UNRELATED, jpeg, loaded, make_config  # noqa: F401

from guard import events as events_module
from guard import hash_bytes, to_hex
from guard.cli import main
from guard.config import Config, ListPolicy, OperationsSettings, Route
from guard.events import SCHEMA, Event, EventStream, encode, parse_since
from guard.middleware import GuardMiddleware
from guard.store import Store
from guard.types import DecisionRecord, Entry

STREAM = "test:decisions"


def events_config(**operations: object) -> Config:
    """make_config's routes, plus /trial (the list `trial`, holding BLOCKED, in shadow mode);
    the stream at :data:`STREAM`."""
    config = make_config()
    lists = {**config.lists, "trial": ListPolicy(mode="shadow")}
    routes = (*config.routes, Route(path="/trial", lists=("trial",), methods=frozenset({"POST"})))
    settings = OperationsSettings(events_stream=STREAM, **operations)  # type: ignore[arg-type]
    return dataclasses.replace(config, lists=lists, routes=routes, operations=settings)


def stream_of(url: str, key: str = STREAM) -> list[tuple[str, dict[str, str]]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [(i, dict(f)) for i, f in client.xrange(key)]
    finally:
        client.close()


async def load_trial(url: str) -> None:
    async with Store.from_url(url) as store:
        hashes = hash_bytes(data_file(BLOCKED).read_bytes())
        await store.add("trial", [Entry(hashes.ahash, hashes.phash, BLOCKED)])


def assert_no_upload_hash(fields: dict[str, str], *uploads: bytes) -> None:
    """No field holds an upload's hash (hex or decimal) or anything as long as image bytes."""
    for upload in uploads:
        hashes = hash_bytes(upload)
        for value in (hashes.ahash, hashes.phash):
            assert value is not None
            for spelling in (to_hex(value), str(value), f"{value:x}"):
                assert all(spelling not in text for text in fields.values()), spelling
    assert not {name for name in fields if "hash" in name} - {"phash_distance"}
    assert max(len(text) for text in fields.values()) < 200


# --- the writer, through the middleware ----------------------------------------------------------


def test_every_recorded_decision_reaches_the_stream(loaded: str) -> None:  # noqa: F811
    """A reject, a flag, a shadow-reject and an unchecked pass, each on its own event loop (as
    TestClient runs requests): each is in the stream with its fields and the request id its
    refusal or Decision carries; an allowed upload and a refusal for another reason are not."""
    run(load_trial(loaded))
    app = Recorder()
    guard = GuardMiddleware(app, config=events_config(), store=Store.from_url(loaded))
    blocked, unrelated = data_file(BLOCKED).read_bytes(), data_file(UNRELATED).read_bytes()
    uploads = [
        ("r-reject", "/upload", blocked),
        ("r-flag", "/soft", unrelated),
        ("r-shadow", "/trial", blocked),
        ("r-unchecked", "/open", unrelated),  # `open` was never loaded: fail-open, unchecked
        ("r-allow", "/upload", unrelated),
    ]
    started = time.time()
    results = [
        run(call(guard, multipart(("a.jpg", body)), path=path, headers=[("x-request-id", rid)]))
        for rid, path, body in uploads
    ]
    text_part = run(call(guard, multipart(("t.txt", b"no image")), path="/upload"))
    assert [r.status for r in results] + [text_part.status] == [403, 200, 200, 200, 200, 415]
    assert results[0].headers["x-request-id"] == "r-reject"
    assert [d.request_id for d in app.states] == ["r-flag", "r-shadow", "r-unchecked", "r-allow"]

    records = stream_of(loaded)
    assert guard.events is not None
    assert (guard.events.written, guard.events.dropped, guard.events.queued) == (4, 0, 0)
    fields = [f for _, f in records]
    for record in fields:
        assert abs(float(record.pop("time")) - started) < 60
        assert_no_upload_hash(record, blocked, unrelated)
    common = {"schema": SCHEMA, "method": "POST", "images": "1", "client": "203.0.113.7:5555"}
    match = {"phash_distance": "0", "transform": "identity"}
    assert fields == [
        {**common, **match, "action": "reject", "request_id": "r-reject", "route": "/upload",
         "list": "spam", "distance": "0", "source": BLOCKED},
        {**common, **match, "action": "flag", "request_id": "r-flag", "route": "/soft",
         "list": "soft", "distance": "3", "source": "near.jpg"},
        {**common, **match, "action": "shadow-reject", "request_id": "r-shadow",
         "route": "/trial", "list": "trial", "distance": "0", "source": BLOCKED},
        {**common, "action": "unchecked", "request_id": "r-unchecked", "route": "/open",
         "unchecked_lists": "open"},
    ]  # fmt: skip
    ids = [i for i, _ in records]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_starlette_testclient_app_with_a_lazily_opened_store_records_every_decision(
    loaded: str,  # noqa: F811
) -> None:
    """No store injected: the middleware opens it on first use. TestClient outside ``with``
    runs each request on a new event loop; inside, the lifespan's shutdown calls aclose()."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    async def upload(request: object) -> PlainTextResponse:
        return PlainTextResponse("stored")

    config = events_config()
    config = dataclasses.replace(
        config,
        redis=dataclasses.replace(config.redis, url=loaded),
        routes=config.routes[:1],  # /upload: its list is loaded, so the lifespan starts
    )
    app = Starlette(routes=[StarletteRoute("/upload", upload, methods=["POST"])])
    guard = GuardMiddleware(app, config=config)
    client = TestClient(guard)
    blocked = {"file": ("a.jpg", data_file(BLOCKED).read_bytes(), "image/jpeg")}
    answers = [client.post("/upload", files=blocked, headers={"x-request-id": "t1"})]
    answers.append(client.post("/upload", files=blocked, headers={"x-request-id": "t2"}))
    with TestClient(guard) as in_lifespan:
        answers.append(in_lifespan.post("/upload", files=blocked, headers={"x-request-id": "t3"}))
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert [f["request_id"] for _, f in stream_of(loaded)] == ["t1", "t2", "t3"]
    assert guard.events is not None
    assert (guard.events.written, guard.events.dropped, guard.events.queued) == (3, 0, 0)


def test_the_stream_keeps_about_max_length_records(redis_url: str) -> None:
    settings = OperationsSettings(events_stream=STREAM, events_max_length=100)

    async def body() -> EventStream:
        async with Store.from_url(redis_url) as store:

            async def get() -> Store:
                return store

            events = EventStream(get, settings)
            for i in range(1000):
                events.decided(record(request_id=f"r{i}"))
            await events.aclose()
            return events

    events = run(body())
    assert (events.written, events.dropped) == (1000, 0)
    records = stream_of(redis_url)
    assert 100 <= len(records) <= 200  # MAXLEN ~ trims whole nodes (100 records each)
    assert records[-1][1]["request_id"] == "r999"  # the newest kept, the oldest trimmed


def test_redis_down_drops_and_counts_the_records_and_answers_every_request(
    loaded: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Recorder()
    guard = GuardMiddleware(app, config=events_config(), store=Store.from_url(loaded))
    guard._store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)  # refuses
    body = multipart(("a.jpg", jpeg(UNRELATED)))
    with caplog.at_level(logging.WARNING, logger="guard"):
        results = [run(call(guard, body, path="/open")) for _ in range(3)]
    assert [r.status for r in results] == [200, 200, 200]
    assert [r.headers["x-guard-verdict"] for r in results] == ["unchecked"] * 3
    assert app.bodies == [body] * 3
    assert guard.events is not None
    assert (guard.events.dropped, guard.events.written, guard.events.queued) == (3, 0, 0)
    said = [r.getMessage() for r in caplog.records if "decision stream" in r.getMessage()]
    assert len(said) == 1 and "1 records dropped" in said[0]  # once per interval, not per drop


def test_after_a_failed_batch_the_writer_leaves_redis_alone_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch is tried three times (two retries), then dropped; for REST_SECONDS records are
    dropped without asking Redis (no connection storm on a struggling server), then it asks
    again."""
    monkeypatch.setattr(events_module, "RETRY_DELAYS", (0.01, 0.01))
    asked: list[float] = []
    store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)

    async def get() -> Store:
        asked.append(time.monotonic())
        return store

    events = EventStream(get, OperationsSettings(events_stream=STREAM))

    async def body() -> None:
        events.decided(record(request_id="first"))
        while events.dropped < 1:
            await asyncio.sleep(0.01)
        for i in range(3):
            events.decided(record(request_id=f"resting{i}"))
            await asyncio.sleep(0.01)
        assert (len(asked), events.dropped) == (3, 4)
        monkeypatch.setattr(events_module, "REST_SECONDS", 0.0)
        events._rest_until = 0.0
        events.decided(record(request_id="later"))
        await events.aclose()
        await store.close()

    run(body())
    assert (len(asked), events.dropped, events.written) == (6, 5, 0)


def test_a_full_queue_drops_and_counts_and_aclose_writes_the_rest(redis_url: str) -> None:
    """Records queued with no event loop running wait for a writer; past the limit they are
    dropped. aclose() on a loop writes the ones queued."""
    store = Store.from_url(redis_url)

    async def get() -> Store:
        return store

    events = EventStream(get, OperationsSettings(events_stream=STREAM), queue_limit=5)
    for i in range(8):
        events.decided(record(request_id=f"r{i}"))
    assert (events.queued, events.dropped) == (5, 3)

    async def close() -> None:
        await events.aclose()
        await store.close()

    run(close())
    assert [f["request_id"] for _, f in stream_of(redis_url)] == [f"r{i}" for i in range(5)]
    assert (events.written, events.dropped) == (5, 3)


def record(**fields: object) -> DecisionRecord:
    values: dict[str, object] = {
        "action": "reject",
        "request_id": "r1",
        "route": "/upload",
        "method": "POST",
        "time": 1796616000.25,
        "images": 1,
        "client": "203.0.113.7:5555",
        "list": "spam",
        "distance": 2,
        "phash_distance": 5,
        "transform": "flip",
        "source": "banned one.jpg",
        "label": "report 7",
    }
    return DecisionRecord(**{**values, **fields})  # type: ignore[arg-type]


def test_encode_writes_text_leaves_out_none_and_joins_tuples() -> None:
    unchecked = record(
        action="unchecked",
        list=None,
        distance=None,
        phash_distance=None,
        transform=None,
        source=None,
        label=None,
        unchecked_lists=("a", "b"),
    )
    assert encode(unchecked) == {
        "schema": SCHEMA,
        "action": "unchecked",
        "request_id": "r1",
        "route": "/upload",
        "method": "POST",
        "time": "1796616000.25",
        "images": "1",
        "client": "203.0.113.7:5555",
        "unchecked_lists": "a,b",
    }
    event = Event("1796616000300-0", encode(unchecked))
    assert event.as_json()["unchecked_lists"] == ["a", "b"]
    assert event.matches(["b"], []) and not event.matches(["c"], [])
    assert not event.matches([], ["reject"]) and event.matches([], ["unchecked", "flag"])


# --- guard events ----------------------------------------------------------------------------


def write(url: str, *records: DecisionRecord) -> None:
    async def body() -> None:
        async with Store.from_url(url) as store:
            await store.append_events(STREAM, [encode(r) for r in records], max_length=100)

    run(body())


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "guard.yaml"
    path.write_text(f"operations:\n  events_stream: {STREAM}\n")
    return path


def events_cli(url: str, config: Path, *argv: str) -> int:
    return main(["events", "--redis-url", url, "--config", str(config), *argv])


def test_guard_events_prints_the_last_records_oldest_first(
    redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(redis_url, *[record(request_id=f"r{i}", time=1796616000.0 + i) for i in range(25)])
    write(redis_url, record(action="flag", list="soft", request_id="r-flag", time=1796616030.0))
    assert events_cli(redis_url, config_file) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20
    assert lines[0] == (
        "2026-12-07T04:00:06.000Z reject        list=spam distance=2 phash=5 transform=flip "
        'source="banned one.jpg" route="POST /upload" client=203.0.113.7:5555 request=r6'
    )
    assert lines[-1].startswith("2026-12-07T04:00:30.000Z flag          list=soft distance=2")
    assert lines[-1].endswith("request=r-flag")

    assert events_cli(redis_url, config_file, "--json", "-n", "3", "--action", "reject") == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["request_id"] for p in printed] == ["r22", "r23", "r24"]
    ids = [i for i, _ in stream_of(redis_url)]
    assert printed[0] == {
        "id": ids[22],
        "schema": int(SCHEMA),
        "action": "reject",
        "request_id": "r22",
        "route": "/upload",
        "method": "POST",
        "time": 1796616022.0,
        "images": 1,
        "client": "203.0.113.7:5555",
        "list": "spam",
        "distance": 2,
        "phash_distance": 5,
        "transform": "flip",
        "source": "banned one.jpg",
        "label": "report 7",
    }
    # --since a stream id: the records after it.
    assert events_cli(redis_url, config_file, "--json", "--since", ids[23]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["request_id"] for p in printed] == ["r24", "r-flag"]
    assert events_cli(redis_url, config_file, "--list", "soft") == 0
    assert capsys.readouterr().out.splitlines() == lines[-1:]


def test_guard_events_help_has_examples_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["events", "--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert examples and all(line.startswith("  guard events") for line in examples)
    assert "--follow ended with Ctrl-C" in text and "docs/cli.md" in text


def test_guard_events_on_a_missing_stream_prints_nothing_and_exits_0(
    redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert events_cli(redis_url, config_file) == 0
    out, err = capsys.readouterr()
    assert out == "" and f"no records in the decision stream '{STREAM}'" in err


def test_guard_events_without_redis_says_so_and_exits_3(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert events_cli("redis://127.0.0.1:9", config_file) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("guard: Redis is unavailable") and "Traceback" not in err


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10m", "1796615399999-18446744073709551615"),  # 600 s before `now`, inclusive
        ("2h", "1796608799999-18446744073709551615"),
        ("1d", "1796529599999-18446744073709551615"),
        ("1712345678901-3", "1712345678901-3"),  # a stream id: the records after it
        ("2026-12-07T04:00:00Z", "1796615999999-18446744073709551615"),
        ("2026-12-07T05:00:00+01:00", "1796615999999-18446744073709551615"),
        ("2026-12-07T04:00:00", "1796615999999-18446744073709551615"),  # naive: UTC
    ],
)
def test_since_reads_durations_times_and_stream_ids(given: str, expected: str) -> None:
    assert parse_since(given, now=1796616000.0) == expected


@pytest.mark.parametrize("given", ["yesterday", "10 minutes", "5x", "12:00pm", ""])
def test_a_bad_since_is_a_usage_error(
    given: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_since(given)
    assert events_cli("redis://127.0.0.1:9", config_file, "--since", given) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"guard: --since {given!r}: expected a duration (10m, 2h, 1d)")


@pytest.mark.slow
def test_guard_events_follow_prints_records_as_uploads_are_decided(
    loaded: str,  # noqa: F811
    config_file: Path,
) -> None:
    """`guard events --follow --json` in a child process prints the records of uploads decided
    after it started; Ctrl-C ends it with status 0 and no traceback."""
    run(load_trial(loaded))
    write(loaded, record(request_id="before"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "guard", "events", "--follow", "--json", "-n", "1"]
    child = subprocess.Popen(
        [*command, "--redis-url", loaded, "--config", str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert child.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in child.stdout or ()])
    reader.start()
    try:
        assert json.loads(lines.get(timeout=30))["request_id"] == "before"  # it is reading
        guard = GuardMiddleware(Recorder(), config=events_config(), store=Store.from_url(loaded))
        for rid, path in [("f-reject", "/upload"), ("f-shadow", "/trial")]:
            body = multipart(("a.jpg", data_file(BLOCKED).read_bytes()))
            run(call(guard, body, path=path, headers=[("x-request-id", rid)]))
        followed = [json.loads(lines.get(timeout=30)) for _ in range(2)]
        assert [(f["request_id"], f["action"], f["list"]) for f in followed] == [
            ("f-reject", "reject", "spam"),
            ("f-shadow", "shadow-reject", "trial"),
        ]
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=30)
        finally:
            child.kill()
            reader.join(timeout=5)
    assert child.stderr is not None
    errors = child.stderr.read()
    assert child.returncode == 0, errors
    assert "Traceback" not in errors


def test_guard_events_last_zero_prints_no_history_and_a_negative_count_is_refused(
    redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(redis_url, *[record(request_id=f"r{i}") for i in range(3)])
    assert events_cli(redis_url, config_file, "-n", "0") == 0
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit) as exited:
        events_cli(redis_url, config_file, "--last", "-1")
    assert exited.value.code == 2
    assert "argument -n/--last: must be 0 or more, got -1" in capsys.readouterr().err


def test_guard_events_filters_the_review_pages_actions_too(
    redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(redis_url, record(request_id="r-reject"))

    async def review() -> None:
        async with Store.from_url(redis_url) as store:
            fields = {
                "schema": SCHEMA,
                "action": "review-allow",
                "request_id": "r-review",
                "route": "/guard",
                "method": "POST",
                "time": "1796616000.0",
                "by": "ana",
            }
            await store.append_events(STREAM, [fields], max_length=100)

    run(review())
    assert events_cli(redis_url, config_file, "--json", "--action", "review-allow") == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(p["action"], p["request_id"], p["by"]) for p in printed] == [
        ("review-allow", "r-review", "ana")
    ]
