"""Routes match the requests the app routes (tricky paths, methods, mount points), and the
start-up checks (routes that check nothing, lists missing or empty).

What the frameworks route was measured with uvicorn 0.55 (h11) in front of Starlette, FastAPI,
Django, Quart and Litestar: see config/guard.yaml's routes section. Every trick below reaches
some framework's upload view, so guard must check it; none of them folds case or reads "\\".
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest
from asgi_driver import Recorder, Result, call, multipart
from conftest import run
from starlette.applications import Starlette
from starlette.testclient import TestClient
from test_middleware import (
    BLOCKED,
    UNRELATED,
    guarded,
    jpeg,
    load_lists,
    make_config,
)

from guard import hash_bytes
from guard.config import Config, ListPolicy, Route, normalize_path, request_paths
from guard.middleware import GuardMiddleware
from guard.store import Store
from guard.types import Entry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def loaded(redis_url: str) -> str:
    """The real Redis server with test_middleware's lists `spam` and `soft`."""
    run(load_lists(redis_url))
    return redis_url


POST = frozenset({"POST"})
UPLOAD = Route("/upload", ("spam",), POST)

# (method, ASGI path, raw_path or None, root_path): each reaches an upload view at /upload.
TRICKS = [
    ("POST", "/upload", None, ""),
    ("POST", "/upload/", b"/upload/", ""),  # Litestar; Starlette redirects it
    ("POST", "//upload", b"//upload", ""),  # Litestar, Quart
    ("POST", "/upload/", b"/upload%2F", ""),  # uvicorn decodes %2F; Litestar routes it
    ("POST", "/upload%2F", None, ""),  # a server that left %2F alone, an app decoding again
    ("POST", "//upload", b"/%2Fupload", ""),  # Quart, Litestar
    ("POST", "/upload", b"/up%6coad", ""),  # every framework
    ("POST", "/upload%2F", b"/upload%252F", ""),  # decoded twice
    ("POST", "/upload", b"/upload?x=1", ""),  # a server that left the query in raw_path
    ("POST", "/a/../upload", None, ""),  # a proxy or app resolving dot segments
    ("POST", "/./upload", None, ""),
    ("POST", "/x/../upload", b"/x/..%2Fupload", ""),
    ("POST", "/a/b/../../upload", None, ""),
    ("POST", "/../upload", None, ""),  # never above the root
    ("POST", "http://host/upload", b"http://host/upload", ""),  # absolute form: Quart
    ("POST", "https://h:8443/upload", None, ""),
    ("POST", "//host/upload", None, ""),
    ("post", "/upload", None, ""),  # uvicorn's h11 passes it; Django and Quart route it
    ("Post", "/upload", None, ""),
    ("pOsT", "//upload/", None, ""),
    ("POST", "/api/upload", b"/api/upload", "/api"),  # uvicorn --root-path, Starlette Mount
    ("POST", "/api//upload/", None, "/api"),
    ("POST", "/api/upload", None, "/api/"),
    ("POST", "/r/api/upload", None, "/r/api"),  # a Mount under --root-path
]

# (method, ASGI path, raw_path, root_path): no framework routes these to /upload.
UNRELATED_REQUESTS = [
    ("POST", "/uploads", None, ""),
    ("POST", "/upload-x", None, ""),
    ("POST", "/uploadx/", None, ""),
    ("POST", "/other", None, ""),
    ("POST", "/up/load", None, ""),
    ("POST", "/upload/x", None, ""),
    ("POST", "/UPLOAD", None, ""),  # all five frameworks are case-sensitive
    ("POST", "/Upload", b"/Upload", ""),
    ("POST", "/upload\\", None, ""),  # none reads "\" as "/"
    ("POST", "\\upload", None, ""),
    ("POST", "/api/upload", None, ""),  # not mounted at /api
    ("POST", "/apiupload", None, "/api"),  # the mount point ends at a segment boundary
    ("POST", "/v1/upload", None, "/api"),
    ("GET", "/upload", None, ""),
    ("DELETE", "//upload/", None, ""),
    ("POSTX", "/upload", None, ""),
]


def _ids(rows: list[tuple[str, str, bytes | None, str]]) -> list[str]:
    return [f"{m} {p!r} raw={r!r} root={root!r}" for m, p, r, root in rows]


@pytest.mark.parametrize(("method", "path", "raw", "root"), TRICKS, ids=_ids(TRICKS))
def test_tricks_match_the_route(method: str, path: str, raw: bytes | None, root: str) -> None:
    assert UPLOAD.matches(method, path, raw_path=raw, root_path=root)
    config = Config(routes=(Route("/other", ("x",)), UPLOAD))
    assert config.route_for(method, path, raw_path=raw, root_path=root) == UPLOAD


@pytest.mark.parametrize(
    ("method", "path", "raw", "root"), UNRELATED_REQUESTS, ids=_ids(UNRELATED_REQUESTS)
)
def test_unrelated_requests_do_not_match(
    method: str, path: str, raw: bytes | None, root: str
) -> None:
    assert not UPLOAD.matches(method, path, raw_path=raw, root_path=root)
    assert Config(routes=(UPLOAD,)).route_for(method, path, raw_path=raw, root_path=root) is None


# (route path, request path, raw_path, root_path, matches?): globs after normalisation.
GLOBS = [
    ("/images/*", "//images//cat.png", None, "", True),
    ("/images/*", "/images/a/b", None, "", False),
    ("/images/*", "/images/a/b", b"/images/a%2Fb", "", True),  # one segment, routed on raw
    ("/images/*", "/images/x/../cat.png", None, "", True),
    ("/images/*.png", "/images/cat.png/", None, "", True),
    ("/images/*.png", "/images/cat.jpg", None, "", False),
    ("/images/**", "/images", None, "", True),  # the mount point itself, as /images/
    ("/images/**", "/images/a/b/c", None, "", True),
    ("/images/**", "/imagesX/a", None, "", False),
    ("/images/**", "/api/images/a/b", None, "/api", True),
    ("/api/*/upload", "/api/v1//upload/", None, "", True),
    ("/api/*/upload", "/api/v1/x/upload", None, "", False),
    ("/api/**/upload", "/api/v1/x/upload", None, "", True),
    ("/api/**/upload", "/api/upload", None, "", False),  # "**" between slashes: one at least
    ("/**", "/anything/at/all", None, "", True),
    ("/**.png", "//a//b.png", None, "", True),
]


@pytest.mark.parametrize(("pattern", "path", "raw", "root", "expected"), GLOBS)
def test_globs_after_normalisation(
    pattern: str, path: str, raw: bytes | None, root: str, expected: bool
) -> None:
    route = Route(pattern, ("spam",), POST)
    assert route.matches("POST", path, raw_path=raw, root_path=root) is expected


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("/upload/", "/upload"),
        ("//upload", "/upload"),
        ("/a/./b/../upload//", "/a/upload"),
        ("/", "/"),
        ("//", "/"),
        ("/..", "/"),
        ("/images/*/", "/images/*"),
        ("/images/**/", "/images/**"),
        ("/a/b/../*", "/a/*"),
    ],
)
def test_route_paths_are_normalised_when_the_config_is_built(given: str, stored: str) -> None:
    assert Route(given, ("spam",)).path == stored
    assert Route(given, ("spam",)) == Route(stored, ("spam",))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/a/*/../b", 'path may not use ".." after a segment with * or **'),
        ("/a/**/..", 'path may not use ".." after a segment with * or **'),
        ("/a\x00b", "without"),  # control characters: the shadowing check's markers
        ("/a\x01", "without"),
        ("/a/**/b/**", "path may use ** at most once"),
    ],
)
def test_route_paths_that_cannot_be_normalised_are_refused(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Route(path, ("spam",))


def test_normalize_path() -> None:
    assert normalize_path("//a/./b/../c/") == "/a/c"
    assert normalize_path("") == "/"
    assert normalize_path("/a/%2e%2e/b") == "/a/%2e%2e/b"  # decoded readings resolve it
    assert "/b" in request_paths("/a/%2e%2e/b")


def _regex(pattern: str) -> re.Pattern[str]:
    """The reference semantics: "*" [^/]*, "**" .* (what guard used before its own matcher)."""
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(regex, re.DOTALL)


@pytest.mark.slow  # 30,000 random cases; test_routes' tables cover the matcher in the fast path
def test_the_glob_matcher_agrees_with_the_reference_regex() -> None:
    """Random patterns and paths over a small alphabet: every corner ("*" empty, "**" over no
    slash, adjacent stars, repeated chunks) comes up many times."""
    rng = random.Random(20261206)
    checked = 0
    for _ in range(30_000):
        pattern = "/" + "".join(rng.choice(["a", "b", "/", "*", "*", "ab"]) for _ in range(7))
        if pattern.count("**") > 1 or "/." in pattern:
            continue
        route = Route(pattern, ("spam",))
        path = "/" + "".join(rng.choice("ab/") for _ in range(rng.randint(0, 9)))
        expected = _regex(route.path).fullmatch(path) is not None
        assert route.matches_path([path]) is expected, (route.path, path)
        checked += 1
    assert checked > 20_000


def _matching_work(action: Callable[[], object]) -> tuple[int, list[str]]:
    """The steps ``action`` takes (Python lines run plus builtin calls made) and the regular
    expression calls among them: counted, not timed, so a loaded machine cannot fail it."""
    steps = 0
    regex: list[str] = []

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal steps
        steps += 1
        return trace

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal steps
        module = str(frame.f_globals.get("__name__", ""))
        if event == "call" and (module == "re" or module.startswith("re.")):
            regex.append(f"{module}.{frame.f_code.co_name}")
        elif event == "c_call":
            steps += 1
            if isinstance(getattr(arg, "__self__", None), re.Pattern):
                regex.append(getattr(arg, "__qualname__", repr(arg)))

    old_trace, old_profile = sys.gettrace(), sys.getprofile()
    sys.settrace(trace)
    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.settrace(old_trace)
        sys.setprofile(old_profile)
    return steps, regex


def test_the_work_counter_sees_a_regex_and_counts_steps() -> None:
    steps, regex = _matching_work(lambda: re.fullmatch(r"a+b", "aaab"))
    assert regex and steps > 0


@pytest.mark.parametrize("pattern", ["/*a*a*a*a*a*b", "/**a*a*a*a*b", "/a*a*a*a**a*a*b"])
def test_matching_is_linear_in_the_path(pattern: str) -> None:
    """A regex backtracks for ever on these (O(n^5) and worse); the client controls the path.

    Protects: matching a route is a fixed number of linear string operations (split, find,
    startswith) per reading of the path, whatever its length, and never a regex. Counted
    (Python lines and builtin calls), not timed: a 2 s wall-clock bound failed once on a loaded
    machine, and the step count catches a backtracking matcher on any machine."""
    config = Config(routes=(Route(pattern, ("spam",)),))
    route = config.routes[0]
    route.matches_path(["/warm"])  # the compiled glob is cached: compile it outside the count
    work: dict[int, int] = {}
    for size in (1_000, 16_000):
        path = "/" + "a" * size
        hostile = "/" + "%2F/.a" * (size // 5)
        assert config.route_for("POST", path, raw_path=path.encode()) is None
        config.route_for("POST", hostile, raw_path=hostile.encode(), root_path="/%2F")
        readings = request_paths(path, path.encode()) + request_paths(
            hostile, hostile.encode(), "/%2F"
        )
        assert len(request_paths(hostile, hostile.encode(), "/%2F")) <= 60
        steps, regex = _matching_work(lambda rs=readings: [route.matches_path((r,)) for r in rs])
        assert not regex, regex
        work[size] = steps
    # 16 times the path, the same number of steps (give or take): none loops over characters.
    assert work[16_000] <= work[1_000] * 1.25, work


@pytest.mark.parametrize(
    ("method", "path", "raw", "lists"),
    [
        ("POST", "/public/../upload", None, ("weak", "strong")),  # a dot-resolving framework
        ("POST", "/public/x", b"/public/x%2F..%2F..%2Fupload", ("weak", "strong")),
        ("POST", "/public/x", None, ("weak",)),
        ("POST", "/upload", None, ("strong",)),
        ("PUT", "/public/../upload", None, ("strong",)),  # the first route takes POST only
        ("POST", "/images/special", None, ("a",)),  # first match wins for one reading
        ("POST", "/images/special/", None, ("a",)),
        ("POST", "/images/other/../special", None, ("a",)),
        # Routed on raw_path, "x%2F..%2Fspecial" is one segment; decoded, it is /images/special.
        ("POST", "/images/x/../special", b"/images/x%2F..%2Fspecial", ("a", "b")),
    ],
)
def test_readings_taken_by_different_routes_are_checked_against_all(
    method: str, path: str, raw: bytes | None, lists: tuple[str, ...]
) -> None:
    """Each reading takes its first route; a request the app may route to either gets both
    routes' lists (in file order), never only the weaker ones."""
    config = Config(
        routes=(
            Route("/public/**", ("weak",), POST),
            Route("/upload", ("strong",), frozenset({"POST", "PUT"})),
            Route("/images/special", ("a",)),
            Route("/images/*", ("b",), json_fields=("photo",)),
        )
    )
    route = config.route_for(method, path, raw_path=raw)
    assert route is not None and route.lists == lists
    if lists == ("a", "b"):
        assert (route.path, route.json_fields) == ("/images/special", ("photo",))


def test_methods_no_route_names_cost_no_path_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import guard.config

    def fail(*args: object) -> None:
        raise AssertionError("request_paths called for a GET")

    monkeypatch.setattr(guard.config, "request_paths", fail)
    assert Config(routes=(UPLOAD,)).route_for("GET", "/upload") is None


# --- routes that check nothing ------------------------------------------------------------------


def _problems(*routes: Route) -> list[str]:
    return list(Config(routes=routes).route_problems())


def test_route_problems() -> None:
    get_only = Route("/upload", ("spam",), frozenset({"GET", "head"}))
    assert _problems(get_only) == [
        "routes[0] (/upload) has only methods that carry no body (GET, HEAD): it checks no upload"
    ]
    everything = Route("/**", ("a",))
    upload = Route("/upload/", ("b",))
    assert _problems(everything, upload) == [
        (
            "routes[1] (/upload) is never used: routes[0] (/**) comes first and takes every "
            "request it matches (the first matching route wins)"
        )
    ]
    # Shadowed method by method, by two earlier routes.
    post, put = Route("/u/*", ("a",), POST), Route("/u/**", ("b",), frozenset({"PUT"}))
    both = Route("/u/x", ("c",), frozenset({"POST", "PUT"}))
    assert _problems(post, put, both)[0].startswith(
        "routes[2] (/u/x) is never used: routes[0] (/u/*), routes[1] (/u/**) come first and take"
    )
    # Not shadowed: a method or a path the earlier routes leave.
    assert _problems(post, Route("/u/x", ("c",), frozenset({"POST", "PATCH"}))) == []
    assert _problems(Route("/u/*", ("a",)), Route("/u/**", ("b",))) == []
    assert _problems(Route("/u/*/*", ("a",)), Route("/u/**", ("b",))) == []
    assert _problems(Route("/upload", ("a",)), Route("/uploads", ("b",))) == []
    assert _problems(UPLOAD) == []


# --- through the middleware, with a real Redis ------------------------------------------------


def _scoped(guard: GuardMiddleware, **changes: Any) -> Any:
    """``guard`` behind a server that sets these scope keys (call() sets method and path)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await guard({**scope, **changes}, receive, send)

    return app


@pytest.mark.parametrize(("method", "path", "raw", "root"), TRICKS, ids=_ids(TRICKS))
def test_tricks_are_checked_by_the_middleware(
    method: str, path: str, raw: bytes | None, root: str, loaded: str
) -> None:
    guard, app = guarded(loaded)
    extra: dict[str, Any] = {"root_path": root} | ({"raw_path": raw} if raw is not None else {})
    result = run(
        call(_scoped(guard, **extra), multipart(("b.jpg", jpeg(BLOCKED))), path=path, method=method)
    )
    assert (result.status, result.json(), app.calls) == (
        403,
        {"error": "upload rejected", "list": "spam"},
        0,
    )


@pytest.mark.parametrize(
    ("path", "root"), [("/api/upload", ""), ("/UPLOAD", ""), ("/apiupload", "/api")]
)
def test_unrelated_paths_pass_untouched(path: str, root: str, loaded: str) -> None:
    guard, app = guarded(loaded)
    body = multipart(("b.jpg", jpeg(BLOCKED)))
    result = run(call(_scoped(guard, root_path=root), body, path=path))
    assert result.status == 200 and app.bodies == [body] and app.states == [None]


def test_under_a_starlette_mount(loaded: str) -> None:
    """Starlette's Mount("/api") passes path /api/upload and root_path /api (measured): the
    route /upload checks it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount
    from starlette.routing import Route as StarletteRoute

    seen: list[tuple[str, str]] = []

    async def upload(request: Request) -> JSONResponse:
        form = await request.form()
        data = await form["file"].read()  # type: ignore[union-attr]
        seen.append((request.scope["path"], request.scope["root_path"]))
        return JSONResponse({"sha256": hashlib.sha256(data).hexdigest()})

    inner = Starlette(routes=[StarletteRoute("/upload", upload, methods=["POST"])])
    guard = GuardMiddleware(inner, config=make_config(), store=Store.from_url(loaded))
    app = Starlette(routes=[Mount("/api", app=guard)])

    async def body() -> list[int]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            statuses = []
            for path, name in [
                ("/api/upload", BLOCKED),
                ("/api/upload", UNRELATED),
                ("/api//upload", BLOCKED),
            ]:
                files = {"file": ("x.jpg", jpeg(name), "image/jpeg")}
                statuses.append((await client.post(path, files=files)).status_code)
            return statuses

    assert run(body()) == [403, 200, 403]
    assert seen == [("/api/upload", "/api")]


# --- start-up -------------------------------------------------------------------------------------


async def _lifespan_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that starts and stops (its own start-up succeeds)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


def _start(guard: GuardMiddleware) -> list[dict[str, Any]]:
    """Run the lifespan protocol through ``guard`` as a server does; what the server got."""
    script = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return script.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError("the server stops here")

    async def body() -> None:
        with contextlib.suppress(RuntimeError):
            await guard({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    run(body())
    return sent


def _config(lists: dict[str, ListPolicy] | None = None, *routes: Route) -> Config:
    return Config(lists=lists or {}, routes=routes or (UPLOAD,))


def test_startup_fails_naming_a_missing_required_list(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    guard = GuardMiddleware(_lifespan_app, config=_config(), store=Store.from_url(redis_url))
    with caplog.at_level(logging.ERROR, logger="guard"):
        sent = _start(guard)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    message = sent[0]["message"]
    assert message == (
        f"guard: list 'spam' (route POST /upload) is not in the store "
        f"({Store.from_url(redis_url).location}): load it (guard load <images> --list spam) "
        "before serving, or set lists.spam.required: false to serve without it"
    )
    assert any(r.levelno == logging.ERROR and "'spam'" in r.getMessage() for r in caplog.records)


def test_a_failed_startup_shuts_the_started_app_down_and_raises(redis_url: str) -> None:
    """The app did start: it is told to shut down (its answer goes nowhere), and the failure is
    raised, so a test client that waits for the lifespan to end raises instead of hanging."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            kind = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return

    guard = GuardMiddleware(app, config=_config(), store=Store.from_url(redis_url))
    script = [{"type": "lifespan.startup"}]  # a second receive from the server would fail
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return script.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError, match="list 'spam' .* is not in the store"):
        run(guard({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert seen == ["lifespan.startup", "lifespan.shutdown"]

    outcome: list[BaseException | None] = []

    def enter() -> None:
        starlette = Starlette()
        client = TestClient(
            GuardMiddleware(starlette, config=_config(), store=Store.from_url(redis_url))
        )
        try:
            with client:
                outcome.append(None)
        except RuntimeError as error:
            outcome.append(error)

    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "TestClient hung on a failed start-up"
    assert isinstance(outcome[0], RuntimeError) and "'spam'" in str(outcome[0])


def test_startup_fails_on_an_empty_required_list(redis_url: str) -> None:
    async def empty() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(0x0F0F_0F0F_0F0F_0F0F, None, "x")])
            await store.remove("spam", 0x0F0F_0F0F_0F0F_0F0F)

    run(empty())
    guard = GuardMiddleware(_lifespan_app, config=_config(), store=Store.from_url(redis_url))
    [failed] = _start(guard)
    assert failed["type"] == "lifespan.startup.failed"
    assert failed["message"].startswith("guard: list 'spam' (route POST /upload) is empty in the")


def test_startup_says_when_every_entry_of_a_required_list_is_disabled(redis_url: str) -> None:
    async def disabled() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [Entry(0x0F0F_0F0F_0F0F_0F0F, None, "x")])
            await store.disable("spam", 0x0F0F_0F0F_0F0F_0F0F)

    run(disabled())
    guard = GuardMiddleware(_lifespan_app, config=_config(), store=Store.from_url(redis_url))
    [failed] = _start(guard)
    assert failed["type"] == "lifespan.startup.failed"
    assert "is empty in the store" in failed["message"]
    assert "(all 1 of its entries are disabled)" in failed["message"]


def test_startup_names_every_bad_list_and_hides_the_password(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config({}, Route("/a", ("one", "two")), Route("/b/*", ("two",), frozenset({"PUT"})))
    guard = GuardMiddleware(_lifespan_app, config=config, store=Store.from_url(redis_url))
    [failed] = _start(guard)
    assert "list 'one' (route PATCH|POST|PUT /a)" in failed["message"]
    assert "list 'two' (route PATCH|POST|PUT /a, PUT /b/*)" in failed["message"]
    monkeypatch.setenv("GUARD_REDIS_URL", "redis://user:secret@db.example:6380/2")
    located = GuardMiddleware(_lifespan_app, config=config)  # its store is not opened yet
    assert located.store_location == "redis://db.example:6380/2"
    assert Store.from_url("redis://user:secret@db.example:6380/2").location == (
        "redis://db.example:6380/2"
    )


def test_startup_warns_of_an_optional_list_and_completes(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config({"spam": ListPolicy(required=False)})
    guard = GuardMiddleware(_lifespan_app, config=config, store=Store.from_url(redis_url))
    with caplog.at_level(logging.WARNING, logger="guard"):
        sent = _start(guard)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    assert "list 'spam' (route POST /upload) is not in the store" in warning.getMessage()


def test_defaults_may_make_every_list_optional(tmp_path: Path, redis_url: str) -> None:
    from guard.config import load_config

    path = tmp_path / "guard.yaml"
    path.write_text(
        "defaults: {required: false}\nlists: {spam: {required: true}}\n"
        "routes: [{path: /a, lists: [spam, other]}]\n"
    )
    config = load_config(path)
    assert (config.policy("spam").required, config.policy("other").required) == (True, False)
    guard = GuardMiddleware(_lifespan_app, config=config, store=Store.from_url(redis_url))
    [failed] = _start(guard)
    assert "'spam'" in failed["message"] and "'other'" not in failed["message"]


def test_startup_warns_of_routes_that_check_nothing(
    loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(
        {}, UPLOAD, Route("/upload", ("spam",)), Route("/form", ("spam",), frozenset({"GET"}))
    )
    guard = GuardMiddleware(_lifespan_app, config=config, store=Store.from_url(loaded))
    with caplog.at_level(logging.WARNING, logger="guard"):
        sent = _start(guard)
    assert sent[0]["type"] == "lifespan.startup.complete"
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == 1  # PUT and PATCH keep routes[1] in use
    assert warnings[0].startswith("guard: routes[2] (/form) has only methods that carry no body")
    shadowed = _config({}, UPLOAD, Route("/upload/", ("spam",), POST))
    assert shadowed.route_problems()[0].startswith("routes[1] (/upload) is never used")


def _serving(recorder: Recorder) -> Any:
    """``recorder`` for requests, :func:`_lifespan_app` for the lifespan."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan_app(scope, receive, send)
        else:
            await recorder(scope, receive, send)

    return app


def test_a_store_down_at_startup_does_not_stop_it(caplog: pytest.LogCaptureFixture) -> None:
    store = Store.from_url("redis://127.0.0.1:9", connect_timeout=0.2)
    guard = GuardMiddleware(_serving(Recorder()), config=_config(), store=store)
    with caplog.at_level(logging.ERROR, logger="guard"):
        sent = _start(guard)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    [error] = [r.getMessage() for r in caplog.records if "start-up" in r.getMessage()]
    assert "cannot check the lists in redis://127.0.0.1:9/0" in error
    result = run(call(guard, multipart(("a.jpg", jpeg(UNRELATED)))))
    assert result.status == 503  # the list's fail_open: false


def test_without_lifespan_the_first_request_runs_the_checks(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Django's ASGI handler has no lifespan: the error is logged at the first request, even
    one that is not checked, and once."""
    guard = GuardMiddleware(Recorder(), config=_config(), store=Store.from_url(redis_url))

    async def requests() -> list[int | None]:
        return [(await call(guard, b"", path=p, method="GET")).status for p in ("/a", "/b")]

    with caplog.at_level(logging.ERROR, logger="guard"):
        assert run(requests()) == [200, 200]
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and errors[0].startswith("guard: start-up: list 'spam'")


def test_a_required_list_that_vanishes_after_startup_fails_by_its_policy(
    loaded: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up found `spam` and `soft`; another process then drops them. A lookup then finds
    them missing: 503 (fail-closed) or unchecked (fail-open), an error, and a count."""
    config = make_config()
    config = dataclasses.replace(
        config, lists={**config.lists, "soft": ListPolicy(fail_open=True, flag_radius=8)}
    )
    config = dataclasses.replace(config, routes=config.routes[:2])
    guard = GuardMiddleware(Recorder(), config=config, store=Store.from_url(loaded))

    async def scenario() -> list[Result]:
        assert await guard.startup() is None  # both lists are there
        async with Store.from_url(loaded) as operator:
            await operator.drop("spam")
            await operator.drop("soft")
        body = multipart(("a.jpg", jpeg(UNRELATED)))
        return [await call(guard, body, path=path) for path in ("/upload", "/soft")]

    with caplog.at_level(logging.ERROR, logger="guard"):
        closed, opened = run(scenario())
    assert (closed.status, closed.json()) == (503, {"error": "blocklist store unavailable"})
    assert opened.status == 200 and opened.headers["x-guard-verdict"] == "unchecked"
    assert guard.counters.missing_lists == 2
    assert guard.counters.unchecked == 1
    errors = [r for r in caplog.records if "store missing list" in r.getMessage()]
    assert [r.levelno for r in errors] == [logging.ERROR, logging.ERROR]
    assert "list 'spam' has vanished" in errors[0].getMessage()


def test_a_required_list_missing_after_startup_counts_and_fails_open_by_policy(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config({"open": ListPolicy(fail_open=True)}, Route("/open", ("open",)))
    app = Recorder()
    guard = GuardMiddleware(app, config=config, store=Store.from_url(redis_url))
    with caplog.at_level(logging.ERROR, logger="guard"):
        result = run(call(guard, multipart(("a.jpg", jpeg(UNRELATED))), path="/open"))
    assert result.status == 200 and result.headers["x-guard-verdict"] == "unchecked"
    assert app.states[0].unchecked_lists == ("open",)
    assert (guard.counters.missing_lists, guard.counters.unchecked) == (1, 1)
    [error] = [r.getMessage() for r in caplog.records if "store missing list" in r.getMessage()]
    assert "its uploads are unchecked (fail_open)" in error


# --- a real server: uvicorn --root-path -----------------------------------------------------------

SERVED_APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from guard import GuardMiddleware

async def upload(request):
    await request.body()
    return JSONResponse({"path": request.scope["path"], "root_path": request.scope["root_path"]})

app = GuardMiddleware(Starlette(routes=[Route("/upload", upload, methods=["POST"])]))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow  # a real uvicorn in a child process
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
def test_uvicorn_root_path_and_startup_failure(redis_url: str, tmp_path: Path) -> None:
    """A real uvicorn: with the list missing it refuses to start, naming it; loaded, under
    --root-path /api a request for /upload reaches the app as path /api/upload and is checked."""
    pytest.importorskip("uvicorn")
    (tmp_path / "served.py").write_text(SERVED_APP)
    (tmp_path / "guard.yaml").write_text("routes: [{path: /upload, lists: [spam]}]\n")
    port = _free_port()
    env = {
        **os.environ,
        "GUARD_CONFIG": str(tmp_path / "guard.yaml"),
        "GUARD_REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    command = [sys.executable, "-m", "uvicorn", "served:app", "--port", str(port)]
    command += ["--root-path", "/api", "--lifespan", "on"]
    failed = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 3
    assert "guard: list 'spam' (route PATCH|POST|PUT /upload) is not in the store" in failed.stderr

    async def load() -> None:
        async with Store.from_url(redis_url) as store:
            hashes = hash_bytes(jpeg(BLOCKED))
            await store.add("spam", [Entry(hashes.ahash, hashes.phash, "b")])

    run(load())
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    "uvicorn did not start"
                )
                time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            statuses = []
            for target, name in [
                ("/upload", BLOCKED),
                ("/upload", UNRELATED),
                ("/upload/", BLOCKED),  # Starlette would redirect it: guard checks first
                ("/up%6coad", BLOCKED),
            ]:
                files = {"file": ("x.jpg", jpeg(name), "image/jpeg")}
                response = client.post(target, files=files)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    assert response.json() == {"path": "/api/upload", "root_path": "/api"}
        assert statuses == [403, 200, 403, 403]
    finally:
        server.terminate()
        server.wait(timeout=30)
