"""GuardMiddleware against a real Redis server: every outcome, byte-exact replay, pass-through.

The ASGI app is driven directly (scripted ``receive``, recorded ``send``) and through httpx.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from asgi_driver import BOUNDARY, MULTIPART, Recorder, Result, call, multipart
from conftest import LOCAL_PHOTOS, data_file, encode, photo, run
from fastapi import FastAPI, UploadFile
from PIL import Image

from guard import hash_bytes
from guard.config import Config, HttpSettings, ListPolicy, Route, default_hash_workers
from guard.middleware import Decision, GuardMiddleware
from guard.store import Store
from guard.types import Entry, Message

#: Run against the bundled Redis 6.2 and, where installed, a current Redis 7+/Valkey.
pytestmark = pytest.mark.every_redis

BLOCKED = LOCAL_PHOTOS[0]
ALSO_BLOCKED = LOCAL_PHOTOS[1]
UNRELATED = LOCAL_PHOTOS[5]


def make_config(**http: Any) -> Config:
    policies = {"spam": ListPolicy(), "soft": ListPolicy(reject_radius=2, flag_radius=8)}
    routes = (
        Route(path="/upload", lists=("spam",), methods=frozenset({"POST"})),
        Route(path="/soft", lists=("soft",), methods=frozenset({"POST"})),
        Route(path="/open", lists=("open",), methods=frozenset({"POST"})),
    )
    policies["open"] = ListPolicy(fail_open=True)
    return Config(lists=policies, routes=routes, http=HttpSettings(**http))


async def load_lists(redis_url: str) -> None:
    """The list `spam` (two photos) and `soft` (a hash 3 bits away from UNRELATED)."""
    async with Store.from_url(redis_url) as store:
        for name in (BLOCKED, ALSO_BLOCKED):
            hashes = hash_bytes(data_file(name).read_bytes())
            await store.add("spam", [Entry(hashes.ahash, hashes.phash, name)])
        target = hash_bytes(data_file(UNRELATED).read_bytes())
        await store.add("soft", [Entry(target.ahash ^ 0b10101, target.phash, "near.jpg")])


@pytest.fixture
def loaded(redis_url: str) -> str:
    """The real Redis server with the lists of :func:`load_lists`."""
    run(load_lists(redis_url))
    return redis_url


def guarded(redis_url: str, app: Any = None, **http: Any) -> tuple[GuardMiddleware, Recorder]:
    recorder = app or Recorder()
    return GuardMiddleware(
        recorder, config=make_config(**http), store=Store.from_url(redis_url)
    ), recorder


def jpeg(name: str, quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)


# --- the outcome table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("blocked original", 403, "upload rejected"),
        ("blocked, JPEG q50", 403, "upload rejected"),
        ("blocked, mirrored", 403, "upload rejected"),
        ("too many pixels", 413, "max_image_pixels"),
        ("too many images", 413, "max_images=3"),
        ("tiff part", 415, "image format TIFF is not allowed"),
        ("text file part", 415, "not an image"),
        ("corrupt jpeg", 422, "image could not be decoded"),
        ("missing boundary", 400, "missing boundary"),
        ("no closing boundary", 400, "ends before its closing boundary"),
        ("transfer encoding", 400, "Content-Transfer-Encoding"),
        ("gzip body", 415, "Content-Encoding gzip"),
        ("raw blocked body", 403, "upload rejected"),
        ("raw body that is no image", 415, "declared image/png"),
    ],
)
def test_refusals(case: str, status: int, error: str, loaded: str) -> None:
    bodies: dict[str, tuple[bytes, str, list[tuple[str, str]]]] = {
        "blocked original": (multipart(("a.jpg", data_file(BLOCKED).read_bytes())), MULTIPART, []),
        "blocked, JPEG q50": (multipart(("a.jpg", jpeg(BLOCKED, 50))), MULTIPART, []),
        "blocked, mirrored": (
            multipart(
                ("a.jpg", encode(photo(BLOCKED).transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG"))
            ),
            MULTIPART,
            [],
        ),
        "too many pixels": (
            multipart(("big.png", data_file("hard/bomb-20000x20000.png").read_bytes())),
            MULTIPART,
            [],
        ),
        "too many images": (
            multipart(*[(f"{i}.jpg", jpeg(UNRELATED)) for i in range(4)]),
            MULTIPART,
            [],
        ),
        "tiff part": (multipart(("a.tif", encode(photo(UNRELATED), "TIFF"))), MULTIPART, []),
        "text file part": (
            multipart(("a.jpg", b"just some text, named like an image")),
            MULTIPART,
            [],
        ),
        "corrupt jpeg": (
            multipart(("t.jpg", data_file("hard/truncated.jpg").read_bytes())),
            MULTIPART,
            [],
        ),
        "missing boundary": (multipart(("a.jpg", jpeg(UNRELATED))), "multipart/form-data", []),
        "no closing boundary": (multipart(("a.jpg", jpeg(UNRELATED)))[:-30], MULTIPART, []),
        "transfer encoding": (
            multipart(
                ("a.jpg", jpeg(UNRELATED)), part_headers="Content-Transfer-Encoding: base64\r\n"
            ),
            MULTIPART,
            [],
        ),
        "gzip body": (jpeg(UNRELATED), "image/jpeg", [("content-encoding", "gzip")]),
        "raw blocked body": (jpeg(ALSO_BLOCKED, 60), "image/jpeg", []),
        "raw body that is no image": (
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            "image/png",
            [],
        ),
    }
    body, content_type, headers = bodies[case]
    guard, app = guarded(loaded, max_images=3)
    result = run(call(guard, body, content_type=content_type, headers=headers))
    assert result.status == status
    assert error in result.json()["error"]
    assert app.calls == 0
    assert b"Traceback" not in result.body
    if status == 403:
        assert result.json() == {"error": "upload rejected", "list": "spam"}  # no hash, no distance


def test_content_length_over_the_limit_is_refused_before_reading(loaded: str) -> None:
    async def must_not_read() -> dict[str, Any]:
        raise AssertionError("guard read the body of a request it could refuse from its headers")

    guard, app = guarded(loaded, max_body_bytes=1000)
    result = run(call(guard, b"x" * 5000, receive=must_not_read))
    assert (result.status, result.json()) == (
        413,
        {"error": "request body is over max_body_bytes=1000"},
    )
    assert app.calls == 0


def test_chunked_body_over_the_limit_is_counted(loaded: str) -> None:
    guard, app = guarded(loaded, max_body_bytes=100_000)
    result = run(
        call(guard, multipart(("a.jpg", os.urandom(300_000))), chunk=4096, content_length=False)
    )
    assert result.status == 413 and app.calls == 0


def test_body_deadline_gives_408(loaded: str) -> None:
    async def stalls() -> dict[str, Any]:
        await anyio.sleep(10)
        return {"type": "http.request", "body": b"", "more_body": False}

    guard, app = guarded(loaded, body_timeout=0.2)
    result = run(call(guard, b"", receive=stalls))
    assert result.status == 408 and "body_timeout=0.2s" in result.json()["error"] and app.calls == 0


def test_store_down_fails_closed_with_retry_after(loaded: str) -> None:
    guard, app = guarded(loaded, retry_after=7)
    guard._store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)
    result = run(call(guard, multipart(("a.jpg", jpeg(UNRELATED)))))
    assert (result.status, result.json(), result.headers["retry-after"]) == (
        503,
        {"error": "blocklist store unavailable"},
        "7",
    )
    assert app.calls == 0


def test_store_down_fails_open_when_the_list_says_so(loaded: str) -> None:
    guard, app = guarded(loaded)
    guard._store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)
    body = multipart(("a.jpg", jpeg(UNRELATED)))
    result = run(call(guard, body, path="/open"))
    assert result.status == 200 and app.bodies == [body]
    assert app.states == [Decision("unchecked", images=1, unchecked_lists=("open",))]
    assert result.headers["x-guard-verdict"] == "unchecked"


# --- allow and flag: the app gets the exact bytes ------------------------------------------------


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("shape", ["multipart", "raw"])
def test_allowed_requests_reach_the_app_byte_for_byte(shape: str, size: str, loaded: str) -> None:
    large = encode(photo(UNRELATED).resize((1500, 1500)), "PNG", compress_level=0)
    image = jpeg(UNRELATED) if size == "small" else large
    assert size == "small" or len(image) > 3_000_000
    body = (
        multipart(("u.jpg", image), fields={"comment": "hello"}) if shape == "multipart" else image
    )
    content_type = MULTIPART if shape == "multipart" else "application/octet-stream"
    guard, app = guarded(loaded, spool_memory_bytes=64 * 1024)  # the large ones go to disk
    result = run(call(guard, body, content_type=content_type, chunk=10_000))
    assert result.status == 200
    assert app.calls == 1
    assert hashlib.sha256(app.bodies[0]).hexdigest() == hashlib.sha256(body).hexdigest()
    assert result.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert app.states == [Decision("allow", images=1)]
    assert "x-guard-verdict" not in result.headers


@pytest.mark.parametrize(
    ("sizes", "replayed"),
    [
        pytest.param([100_000, 50_000], [100_000, 50_000], id="big chunks as they came"),
        pytest.param([4096] * 20, [65536, 16384], id="small ones joined up to 64 KiB"),
        pytest.param([70_000, 1000, 1000, 70_000], [70_000, 2000, 70_000], id="mixed"),
    ],
)
def test_the_app_gets_the_servers_chunks(
    sizes: list[int], replayed: list[int], loaded: str
) -> None:
    """Protects: a body held in memory is replayed as the server's own chunks (not copied into
    one buffer and cut again), runs of small chunks joined up to 64 KiB, every byte once."""
    image = jpeg(UNRELATED)
    head = multipart(("u.jpg", image))
    body = head + b" " * (sum(sizes) - len(head))  # whitespace after the closing boundary
    assert len(head) <= len(body) == sum(sizes)
    cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    pieces = [body[start:stop] for start, stop in zip(cuts, cuts[1:], strict=False)]
    lengths: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            lengths.append(len(message["body"]))
            more = message["more_body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard, _ = guarded(loaded, app=app)
    result = run(call(guard, body, pieces=pieces))
    assert result.status == 200
    assert lengths == replayed


def test_flagged_request_reaches_the_app_with_the_verdict(
    loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = multipart(("u.jpg", data_file(UNRELATED).read_bytes()))
    guard, app = guarded(loaded)
    with caplog.at_level(logging.INFO, logger="guard"):
        result = run(call(guard, body, path="/soft"))
    assert result.status == 200 and app.bodies == [body]
    assert app.states == [Decision("flag", images=1, list="soft", distance=3, source="near.jpg")]
    assert result.headers["x-guard-verdict"] == "flag"
    [record] = [r for r in caplog.records if hasattr(r, "guard")]
    assert record.levelno == logging.INFO  # a flag is routine for a moderated app
    assert record.guard == {
        "action": "flag",
        "list": "soft",
        "route": "/soft",
        "distance": 3,
        "phash_distance": 0,
        "transform": "identity",
        "source": "near.jpg",
        "client": "203.0.113.7:5555",
        "request_id": app.states[0].request_id,  # the app's decision and the log agree
    }
    assert len(app.states[0].request_id) == 32  # made by guard: the client sent none


def shadow_guarded(
    redis_url: str, mode: str, ratio: float = 1.0
) -> tuple[GuardMiddleware, Recorder]:
    """:func:`guarded`, with the list `spam` (on /upload) in ``mode`` at ``ratio``."""
    config = make_config()
    lists = {**config.lists, "spam": ListPolicy(mode=mode, enforce_ratio=ratio)}  # type: ignore[arg-type]
    recorder = Recorder()
    guard = GuardMiddleware(
        recorder, config=dataclasses.replace(config, lists=lists), store=Store.from_url(redis_url)
    )
    return guard, recorder


def test_a_shadow_list_lets_a_listed_image_through_logged_and_counted(
    loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The very image on the list: rejected in enforce mode; in shadow mode it reaches the app
    byte for byte with a shadow-reject decision, an INFO record as detailed as a reject's, a
    count, and no response header telling the uploader."""
    body = multipart(("u.jpg", data_file(BLOCKED).read_bytes()), fields={"comment": "hi"})
    enforcing, refused_app = shadow_guarded(loaded, "enforce")
    refused = run(call(enforcing, body))
    assert (refused.status, refused.json(), refused_app.calls) == (
        403,
        {"error": "upload rejected", "list": "spam"},
        0,
    )
    assert enforcing.counters.shadow_rejects == 0

    guard, app = shadow_guarded(loaded, "shadow")
    # Only the shadow run's records: an earlier test may have left logging at INFO, and then the
    # enforced run above logged its reject too.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="guard"):
        result = run(call(guard, body))
    assert result.status == 200 and app.calls == 1 and app.bodies == [body]
    assert result.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert app.states == [
        Decision("shadow-reject", images=1, list="spam", distance=0, source=BLOCKED)
    ]
    assert "x-guard-verdict" not in result.headers
    [record] = [r for r in caplog.records if hasattr(r, "guard")]
    assert record.levelno == logging.INFO
    assert record.guard == {
        "action": "shadow-reject",
        "list": "spam",
        "route": "/upload",
        "distance": 0,
        "phash_distance": 0,
        "transform": "identity",
        "source": BLOCKED,
        "client": "203.0.113.7:5555",
        "request_id": app.states[0].request_id,
    }
    assert "shadow-reject" in record.getMessage()
    assert (guard.counters.shadow_rejects, guard.counters.shadow_flags) == (1, 0)
    assert guard.counters.unchecked == 0


def test_a_shadow_flag_is_counted_apart(loaded: str) -> None:
    """`soft` holds an entry 3 bits from UNRELATED: a flag, in shadow mode a shadow-flag."""
    config = make_config()
    lists = {**config.lists, "soft": ListPolicy(reject_radius=2, flag_radius=8, mode="shadow")}
    app = Recorder()
    guard = GuardMiddleware(
        app, config=dataclasses.replace(config, lists=lists), store=Store.from_url(loaded)
    )
    body = multipart(("u.jpg", data_file(UNRELATED).read_bytes()))
    result = run(call(guard, body, path="/soft"))
    assert result.status == 200 and app.bodies == [body]
    assert app.states == [
        Decision("shadow-flag", images=1, list="soft", distance=3, source="near.jpg")
    ]
    assert (guard.counters.shadow_rejects, guard.counters.shadow_flags) == (0, 1)


@pytest.mark.parametrize(("ratio", "enforced"), [(0.0, False), (1.0, True)])
def test_enforce_ratio_decides_in_the_middleware_as_in_judge(
    loaded: str, ratio: float, enforced: bool
) -> None:
    guard, app = shadow_guarded(loaded, "enforce", ratio)
    body = multipart(("u.jpg", jpeg(BLOCKED, 50)))

    async def three() -> list[Result]:
        return [await call(guard, body) for _ in range(3)]  # one event loop: one Redis pool

    results = run(three())
    assert [r.status for r in results] == ([403] * 3 if enforced else [200] * 3)
    assert app.calls == (0 if enforced else 3)
    assert guard.counters.shadow_rejects == (0 if enforced else 3)


def test_an_entry_without_a_phash_flags_the_very_image_and_never_rejects(redis_url: str) -> None:
    """A list imported from another tool (aHash only) holds the uploaded image itself: the upload
    reaches the app flagged, as the aHash alone cannot tell it from unrelated photos."""

    async def load() -> None:
        async with Store.from_url(redis_url) as store:
            hashes = hash_bytes(data_file(BLOCKED).read_bytes())
            await store.add("spam", [Entry(hashes.ahash, None, "imported.txt:1")])

    run(load())
    body = multipart(("u.jpg", data_file(BLOCKED).read_bytes()))
    guard, app = guarded(redis_url)
    result = run(call(guard, body, path="/upload"))
    assert result.status == 200 and app.bodies == [body]
    assert app.states == [
        Decision("flag", images=1, list="spam", distance=0, source="imported.txt:1")
    ]


def test_reject_is_logged_once_with_its_details(
    loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    guard, _ = guarded(loaded)
    with caplog.at_level(logging.INFO, logger="guard"):
        run(call(guard, multipart(("a.jpg", jpeg(BLOCKED, 50)))))
    [record] = [r for r in caplog.records if hasattr(r, "guard")]
    assert record.levelno == logging.WARNING  # default server logging shows rejects
    details = record.guard
    assert (details["action"], details["list"], details["source"], details["route"]) == (
        "reject",
        "spam",
        BLOCKED,
        "/upload",
    )


def test_several_images_with_the_blocked_one_last(loaded: str) -> None:
    files = [(f"{i}.jpg", jpeg(name)) for i, name in enumerate(LOCAL_PHOTOS[2:7])] + [
        ("z.jpg", jpeg(ALSO_BLOCKED))
    ]
    guard, app = guarded(loaded, max_images=16)
    result = run(call(guard, multipart(*files)))
    assert result.status == 403 and app.calls == 0


def test_text_fields_are_not_images(loaded: str) -> None:
    body = multipart(fields={"title": "a holiday", "long": "x" * 200_000})
    guard, app = guarded(loaded)
    result = run(call(guard, body))
    assert (
        result.status == 200
        and app.bodies == [body]
        and app.states == [Decision("allow", images=0)]
    )


# --- the ASGI contract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http", "method": "GET", "path": "/upload", "headers": []},
        {"type": "http", "method": "POST", "path": "/elsewhere", "headers": []},
        {"type": "websocket", "path": "/upload", "headers": []},
    ],
)
def test_unguarded_requests_get_the_servers_own_receive(scope: dict[str, Any], loaded: str) -> None:
    guard, app = guarded(loaded)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    run(guard(scope, receive, send))
    assert app.calls == 1 and app.receives == [receive]


def test_after_the_replay_receive_is_the_servers_again(loaded: str) -> None:
    """Protects: once the app has read the replayed body, its next receive() is the server's
    own (here, the client leaving), not more replay. The client leaves once the app has been
    called, not after a 0.2 s linger: that raced the decision on a loaded machine (guard's
    disconnect watcher saw the client gone first, and rightly never called the app)."""
    guard, app = guarded(loaded)
    app.poll_after_body = True  # it waits for a disconnect before answering
    body = multipart(("a.jpg", jpeg(UNRELATED)))
    pieces = [
        {"type": "http.request", "body": body[i : i + 1000], "more_body": i + 1000 < len(body)}
        for i in range(0, len(body), 1000)
    ]

    async def receive() -> dict[str, Any]:
        if pieces:
            return pieces.pop(0)
        while not app.calls:  # the event: guard decided and handed the request to the app
            await anyio.sleep(0.005)
        return {"type": "http.disconnect"}

    result = run(call(guard, body, receive=receive))
    assert app.calls == 1 and app.bodies == [body] and result.status == 200
    assert app.after_body == [{"type": "http.disconnect"}]


def test_client_disconnect_mid_upload_sends_nothing(loaded: str) -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"--" + BOUNDARY.encode(), "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    guard, app = guarded(loaded)
    result = run(call(guard, b"", receive=receive, content_length=False))
    assert result.messages == [] and app.calls == 0


@pytest.fixture
def open_descriptors() -> Iterator[None]:
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    yield
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before + 2  # redis connections may stay pooled


def test_spooled_files_are_closed_on_every_path(loaded: str, open_descriptors: None) -> None:
    big = encode(photo(UNRELATED).resize((1500, 1500)), "PNG")
    guard, app = guarded(loaded, spool_memory_bytes=1024)
    statuses = [
        run(call(guard, body)).status  # each run a new event loop: the store follows it
        for body in (
            multipart(("u.png", big)),
            multipart(("u.png", big[:-1000])),
            multipart(("b.jpg", jpeg(BLOCKED))),
        )
    ]
    assert statuses == [200, 422, 403] and app.calls == 1


# --- through httpx, Starlette and FastAPI ---------------------------------------------------------


def test_through_httpx_with_a_starlette_app(loaded: str) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route as StarletteRoute

    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        data = await form["file"].read()  # type: ignore[union-attr]
        return JSONResponse(
            {"sha256": hashlib.sha256(data).hexdigest(), "guard": request.state.guard.action}
        )

    app = Starlette(
        routes=[StarletteRoute("/upload", upload, methods=["POST"])],
        middleware=[
            Middleware(GuardMiddleware, config=make_config(), store=Store.from_url(loaded))
        ],
    )

    async def body() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            ok = await client.post(
                "/upload", files={"file": ("u.jpg", jpeg(UNRELATED), "image/jpeg")}
            )
            assert ok.status_code == 200
            assert ok.json() == {
                "sha256": hashlib.sha256(jpeg(UNRELATED)).hexdigest(),
                "guard": "allow",
            }
            blocked = await client.post(
                "/upload", files={"file": ("b.jpg", jpeg(BLOCKED, 50), "image/jpeg")}
            )
            assert (blocked.status_code, blocked.json()) == (
                403,
                {
                    "error": "upload rejected",
                    "list": "spam",
                    "request_id": blocked.headers["x-request-id"],
                },
            )

    run(body())


def test_fastapi_uploadfile_endpoint(loaded: str) -> None:
    app = FastAPI()
    app.add_middleware(GuardMiddleware, config=make_config(), store=Store.from_url(loaded))

    @app.post("/upload")
    async def upload(file: UploadFile) -> dict[str, str]:
        return {"sha256": hashlib.sha256(await file.read()).hexdigest()}

    async def body() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            ok = await client.post(
                "/upload", files={"file": ("u.jpg", jpeg(UNRELATED), "image/jpeg")}
            )
            assert (ok.status_code, ok.json()) == (
                200,
                {"sha256": hashlib.sha256(jpeg(UNRELATED)).hexdigest()},
            )
            blocked = await client.post(
                "/upload", files={"file": ("b.jpg", jpeg(BLOCKED), "image/png")}
            )
            assert blocked.status_code == 403

    run(body())


@pytest.mark.parametrize(("path", "status"), [("/upload", 503), ("/open", 200)])
def test_a_silent_store_gets_a_decision_within_the_deadline(
    path: str, status: int, silent_server: int
) -> None:
    guard = GuardMiddleware(Recorder(), config=make_config(decision_timeout=0.3))
    guard._store = Store.from_url(
        f"redis://127.0.0.1:{silent_server}", socket_timeout=30, connect_timeout=30
    )

    async def timed() -> tuple[Result, float]:
        started = anyio.current_time()
        result = await call(guard, multipart(("a.jpg", jpeg(UNRELATED))), path=path)
        return result, anyio.current_time() - started

    result, elapsed = run(timed())
    assert result.status == status
    # The deadline, not the socket timeout, ended the wait: the deadline's failure is counted,
    # and the wait is far from 30 s (10 s: no load on a test machine stretches 0.3 s that far).
    assert guard.counters.store_failures == 1
    assert elapsed < 10
    if status == 503:
        assert (
            result.json() == {"error": "blocklist store unavailable"}
            and "retry-after" in result.headers
        )


def test_a_route_naming_a_missing_required_list_is_refused_as_unavailable(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A list never loaded (or a typo) must not pass every upload: 503, counted, an error."""
    guard, app = guarded(redis_url)  # an empty server: the list `spam` does not exist yet

    async def twice() -> list[Result]:
        return [await call(guard, multipart(("a.jpg", jpeg(UNRELATED)))) for _ in range(2)]

    with caplog.at_level(logging.WARNING, logger="guard"):
        results = run(twice())
    assert [(r.status, r.json(), r.headers["retry-after"]) for r in results] == 2 * [
        (503, {"error": "blocklist store unavailable"}, "5")
    ]
    assert app.calls == 0 and guard.counters.missing_lists == 2
    errors = [r for r in caplog.records if "store missing list spam" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # the second is throttled


def test_a_route_naming_a_missing_optional_list_allows_and_warns_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config()
    config = dataclasses.replace(config, lists={**config.lists, "spam": ListPolicy(required=False)})
    app = Recorder()
    guard = GuardMiddleware(app, config=config, store=Store.from_url(redis_url))

    async def twice() -> list[int | None]:
        return [(await call(guard, multipart(("a.jpg", jpeg(UNRELATED))))).status for _ in range(2)]

    with caplog.at_level(logging.WARNING, logger="guard"):
        assert run(twice()) == [200, 200]
    warnings = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(warnings) == 1 and "'spam'" in warnings[0].getMessage()
    assert app.calls == 2 and guard.counters.missing_lists == 0


def test_a_guard_without_routes_says_it_guards_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No config= and no $GUARD_CONFIG: the defaults guard no route, so start-up warns (once),
    naming both ways to configure it, and the upload reaches the app unchecked."""
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    app = Recorder()
    guard = GuardMiddleware(app)

    async def twice() -> list[int | None]:
        body = multipart(("a.jpg", data_file(BLOCKED).read_bytes()))
        return [(await call(guard, body)).status for _ in range(2)]

    with caplog.at_level(logging.WARNING, logger="guard"):
        assert run(twice()) == [200, 200]
    [warning] = [r for r in caplog.records if r.name == "guard"]
    assert warning.levelno == logging.WARNING
    assert "no routes configured" in warning.getMessage()
    assert "config=" in warning.getMessage() and "GUARD_CONFIG" in warning.getMessage()
    assert app.calls == 2


def test_a_guard_with_routes_does_not_warn_of_none(
    loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    guard, _ = guarded(loaded)
    with caplog.at_level(logging.WARNING, logger="guard"):
        run(guard.startup())  # fails on the list `open`, which `loaded` lacks: logged, not here
    assert caplog.records  # the capture works
    assert not [r for r in caplog.records if "no routes" in r.getMessage()]


def test_lifespan_passes_through_and_shutdown_closes_the_store(loaded: str) -> None:
    """The app runs its own lifespan; when it reports shutdown, guard closes its store too."""
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append(message["type"])
            reply = {
                "lifespan.startup": "lifespan.startup.complete",
                "lifespan.shutdown": "lifespan.shutdown.complete",
            }
            await send({"type": reply[message["type"]]})
            if message["type"] == "lifespan.shutdown":
                return

    closed: list[bool] = []
    store = Store.from_url(loaded)
    original_close = store.close

    async def close() -> None:
        closed.append(True)
        await original_close()

    store.close = close  # type: ignore[method-assign]
    config = make_config()  # `loaded` has no list `open`: not required here
    config = dataclasses.replace(
        config, lists={**config.lists, "open": ListPolicy(fail_open=True, required=False)}
    )
    guard = GuardMiddleware(app, config=config, store=store)
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    run(guard({"type": "lifespan"}, receive, send))
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert closed == [True]


@pytest.mark.parametrize(("setting", "mirrored"), [(2_000_000, True), (0, False)])
def test_the_mirror_follows_redis_mirror_max_entries(
    setting: int, mirrored: bool, loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_REDIS_URL", loaded)
    config = make_config()
    config = dataclasses.replace(
        config, redis=dataclasses.replace(config.redis, mirror_max_entries=setting)
    )
    guard = GuardMiddleware(Recorder(), config=config)

    async def body() -> bool:
        result = await call(guard, multipart(("a.jpg", jpeg(BLOCKED))))
        assert result.status == 403
        store = await guard.store()
        mirror = await store.refresh_mirror("spam")
        await guard.aclose()
        return mirror is not None

    assert run(body()) is mirrored


@pytest.mark.parametrize(("hash_workers", "threads"), [(None, default_hash_workers()), (3, 3)])
def test_decoding_threads_are_hash_workers_else_the_usable_cpus(
    hash_workers: int | None, threads: int
) -> None:
    guard = GuardMiddleware(Recorder(), config=make_config(hash_workers=hash_workers))

    async def limits() -> tuple[float, float]:
        before = guard.limiter.total_tokens
        # A reloaded config with another count takes effect for new requests.
        await guard._apply_config(make_config(hash_workers=1 if threads != 1 else 2))
        return before, guard.limiter.total_tokens

    assert run(limits()) == (threads, 1 if threads != 1 else 2)
