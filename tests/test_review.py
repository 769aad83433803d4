"""The review page (guard.review_app) against a real Redis, mounted beside a guarded app as a
host app would: access control, CSRF, each page, each action, and the middleware obeying them."""

from __future__ import annotations

import base64
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import data_file, encode, photo, run
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from test_middleware import BLOCKED, UNRELATED, load_lists, make_config

from guard import ConfigError, GuardMiddleware, hash_bytes, list_scale, review_app, to_hex
from guard.config import Config, ListPolicy
from guard.config import Route as GuardRoute
from guard.review import Quarantine
from guard.store import Store
from guard.types import Entry

pytestmark = pytest.mark.every_redis

USERS = {"mod": "correct horse", "other": "battery staple"}
PAGES = ["/guard/", "/guard/entries?list=spam", "/guard/decisions", "/guard/check"]
ACTIONS = [
    "/guard/check",
    "/guard/actions/add",
    "/guard/actions/remove",
    "/guard/actions/mode",
    "/guard/logout",
]


async def upload(request: Request) -> JSONResponse:
    await request.form()
    decision = getattr(request.state, "guard", None)
    return JSONResponse({"guard": decision.action if decision else None})


def site(
    redis_url: str,
    quarantine: Quarantine | None = None,
    config: Config | None = None,
    **review: Any,
) -> tuple[Starlette, GuardMiddleware]:
    """A host app: /upload and /soft guarded by the middleware, the review page at /guard."""
    config = config or make_config()
    options: dict[str, Any] = {
        "users": USERS,
        "secret": "test secret",
        "quarantine": quarantine,
        **review,
    }
    inner = Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/soft", upload, methods=["POST"]),
            Mount("/guard", review_app(config, store=Store.from_url(redis_url), **options)),
        ]
    )
    guard = GuardMiddleware(
        inner, config=config, store=Store.from_url(redis_url), quarantine=quarantine
    )
    guard.modes.interval = 0  # read the mode switches on every request
    return Starlette(routes=[Mount("/", guard)]), guard


@pytest.fixture
def loaded(redis_url: str) -> str:
    """The real Redis server with test_middleware's lists: `spam` (two photos), `soft`."""
    run(load_lists(redis_url))
    return redis_url


@pytest.fixture
def client(loaded: str) -> Iterator[TestClient]:
    app, _ = site(loaded)
    with TestClient(app) as test_client:
        yield test_client


def login(client: TestClient, name: str = "mod") -> str:
    """Sign in with the form; the CSRF token of the session."""
    answer = client.post("/guard/login", data={"name": name, "password": USERS[name]})
    assert answer.status_code == 200 and "Lists" in answer.text
    return csrf_of(answer.text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found[1]


def spam_entries(redis_url: str) -> list[Entry]:
    async def read() -> list[Entry]:
        async with Store.from_url(redis_url) as store:
            return [e async for e in store.entries("spam")]

    return run(read())


def events(redis_url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [fields for _, fields in client.xrange("guard:events")]
    finally:
        client.close()


def wait_for_event(redis_url: str, action: str) -> dict[str, str]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [e for e in events(redis_url) if e["action"] == action]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {action!r} record in the stream: {events(redis_url)}")


def until(condition: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def image_file(name: str) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name.split("/")[-1], data_file(name).read_bytes(), "image/jpeg")}


# --- access --------------------------------------------------------------------------------------


def test_anonymous_gets_401_on_every_page_and_action_and_changes_nothing(
    client: TestClient, loaded: str
) -> None:
    before = spam_entries(loaded)
    hashes = hash_bytes(data_file(UNRELATED).read_bytes())
    forms = {
        "/guard/actions/add": {
            "list": "spam",
            "hashes": f"{to_hex(hashes.ahash)}:0000000000000000",
        },
        "/guard/actions/remove": {"list": "spam", "ahash": to_hex(before[0].ahash)},
        "/guard/actions/mode": {"list": "spam", "mode": "shadow"},
    }
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 401, path
        assert "Sign in" in answer.text and "spam" not in answer.text, path
    for path in ACTIONS:
        files = image_file(BLOCKED) if path == "/guard/check" else None
        answer = client.post(path, data={"csrf": "0" * 64, **forms.get(path, {})}, files=files)
        assert answer.status_code == 401, path
    assert sorted(spam_entries(loaded), key=repr) == sorted(before, key=repr)
    assert [e for e in events(loaded) if e["action"].startswith("review-")] == []
    assert (
        client.post("/upload", files={"f": ("b.jpg", data_file(BLOCKED).read_bytes())}).status_code
        == 403
    )


def test_a_wrong_password_or_an_unknown_name_or_a_forged_cookie_gets_401(
    client: TestClient,
) -> None:
    for name, password in (("mod", "wrong"), ("nobody", "correct horse"), ("mod", "")):
        answer = client.post("/guard/login", data={"name": name, "password": password})
        assert answer.status_code == 401 and "Wrong name or password" in answer.text
        assert "guard_review" not in answer.cookies
    expires = str(int(time.time()) + 3600)
    client.cookies.set("guard_review", f"mod|{expires}|{'0' * 32}|{'0' * 64}")
    assert client.get("/guard/").status_code == 401


def test_the_login_cookie_is_httponly_samesite_strict_and_scoped_to_the_mount(
    client: TestClient,
) -> None:
    answer = client.post(
        "/guard/login", data={"name": "mod", "password": USERS["mod"]}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/guard/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/guard/" in cookie
    page = client.get("/guard/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    signed_out = client.post("/guard/logout", data={"csrf": csrf_of(page.text)})
    assert signed_out.status_code == 200 and "Sign in" in signed_out.text
    assert client.get("/guard/").status_code == 401


def test_http_basic_and_a_host_authenticate_function_let_moderators_in(loaded: str) -> None:
    app, _ = site(loaded)
    with TestClient(app) as client:
        good = "Basic " + base64.b64encode(b"other:battery staple").decode()
        bad = "Basic " + base64.b64encode(b"other:wrong").decode()
        assert client.get("/guard/", headers={"authorization": good}).status_code == 200
        refused = client.get("/guard/", headers={"authorization": bad})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Basic realm="guard review"')
        assert "www-authenticate" not in client.get("/guard/").headers  # a browser: the form
        assert client.get("/guard/", headers={"authorization": "Basic !!"}).status_code == 401

    def host_auth(request: Request) -> str | None:
        return "host-mod" if request.headers.get("x-test-user") == "yes" else None

    app, _ = site(loaded, users={}, authenticate=host_auth)
    with TestClient(app) as client:
        assert client.get("/guard/decisions").status_code == 401
        page = client.get("/guard/decisions", headers={"x-test-user": "yes"})
        assert page.status_code == 200 and "host-mod" in page.text
        # No users: the login form is not offered, and no password signs in.
        refused = client.post("/guard/login", data={"name": "mod", "password": "correct horse"})
        assert refused.status_code == 401


def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUARD_REVIEW_USERS", raising=False)
    with pytest.raises(ConfigError, match="needs credentials"):
        review_app(make_config())
    monkeypatch.setenv("GUARD_REVIEW_USERS", "mod")
    with pytest.raises(ConfigError, match="name:password"):
        review_app(make_config())
    monkeypatch.setenv("GUARD_REVIEW_USERS", "a:1, b:2")
    assert review_app(make_config()).state.review.access.users == {"a": "1", "b": "2"}


def test_a_wrong_or_foreign_csrf_token_gets_403_and_changes_nothing(
    loaded: str,
) -> None:
    app, _ = site(loaded)
    with TestClient(app) as first, TestClient(app) as second:
        token = login(first)
        foreign = login(second, "other")
        assert token != foreign
        before = spam_entries(loaded)
        entry = before[0]
        remove = {"list": "spam", "ahash": to_hex(entry.ahash), "phash": to_hex(entry.phash or 0)}
        for bad in ("", "0" * 64, foreign, token[:-1]):
            answer = first.post("/guard/actions/remove", data={**remove, "csrf": bad})
            assert answer.status_code == 403 and "Nothing was changed" in answer.text
            answer = first.post(
                "/guard/actions/mode", data={"list": "spam", "mode": "shadow", "csrf": bad}
            )
            assert answer.status_code == 403
        # The right token from another site (Origin names another host): refused too.
        answer = first.post(
            "/guard/actions/remove",
            data={**remove, "csrf": token},
            headers={"origin": "https://evil.example"},
        )
        assert answer.status_code == 403
        # A GET cannot act at all.
        assert first.get("/guard/actions/remove").status_code == 405
        assert sorted(spam_entries(loaded), key=repr) == sorted(before, key=repr)
        assert [e for e in events(loaded) if e["action"].startswith("review-")] == []
        assert first.get("/guard/").text.count('data-mode="enforce"') >= 1
        # And the right token does act (the test above could not pass by refusing everything).
        answer = first.post(
            "/guard/actions/remove",
            data={**remove, "csrf": token},
            headers={"origin": "http://testserver"},
        )
        assert answer.status_code == 200 and "1 entries removed from spam" in answer.text
        assert entry not in spam_entries(loaded)


# --- pages ---------------------------------------------------------------------------------------


def test_the_lists_page_shows_each_list_with_its_settings(client: TestClient) -> None:
    login(client)
    page = client.get("/guard/").text
    spam = re.search(r'<tr data-list="spam">(.*?)</tr>', page, re.S)
    soft = re.search(r'<tr data-list="soft">(.*?)</tr>', page, re.S)
    missing = re.search(r'<tr data-list="open">(.*?)</tr>', page, re.S)
    assert spam and soft and missing
    assert ">2<" in spam[1] and "8 / 12 / 12" in spam[1] and 'data-mode="enforce"' in spam[1]
    assert "<code>/upload</code>" in spam[1]
    assert ">1<" in soft[1] and "2 / 8 / 12" in soft[1]
    assert "not in the store" in missing[1]
    assert '<meta name="viewport"' in page
    # What each list's size costs innocent uploads (2 entries at the defaults: a tiny share).
    assert "under 0.01% rejected, under 0.01% flagged" in spam[1]
    assert 'class="tag reject">under' not in spam[1]


def test_the_lists_page_marks_an_enforcing_list_that_rejects_too_many(loaded: str) -> None:
    loose = ListPolicy(reject_radius=12, flag_radius=12, confirm_radius=40)
    routes = (GuardRoute(path="/upload", lists=("spam",), methods=frozenset({"POST"})),)
    expected = list_scale.compact(list_scale.estimate(loose, 2))
    for mode, marked in (("enforce", True), ("shadow", False)):
        config = Config(lists={"spam": dataclasses.replace(loose, mode=mode)}, routes=routes)
        app, _ = site(loaded, config=config)
        with TestClient(app) as test_client:
            login(test_client)
            page = test_client.get("/guard/").text
        spam = re.search(r'<tr data-list="spam">(.*?)</tr>', page, re.S)
        assert spam and expected in spam[1] and expected.startswith("about")
        assert (f'<span class="tag reject">{expected}</span>' in spam[1]) is marked


def test_entries_page_through_the_list_with_cursors_and_search(
    client: TestClient, loaded: str
) -> None:
    many = [
        Entry(0x0F0F_3C3C_5A5A_0000 + i * 0x10001, 0x1234 + i, f"bulk-{i}.jpg", f"L{i % 7}")
        for i in range(260)
    ]

    async def load() -> None:
        async with Store.from_url(loaded) as store:
            await store.add("bulk", many)

    run(load())
    login(client)
    seen: list[str] = []
    pages = 0
    url = "/guard/entries?list=bulk"
    while url:
        page = client.get(url).text
        pages += 1
        rows = re.findall(r"<td data-label=\"Source\">(bulk-\d+\.jpg)</td>", page)
        assert len(rows) <= 120  # a page, not the list
        seen += rows
        more = re.search(r'rel="next" href="([^"]+)"', page)
        url = more[1].replace("&amp;", "&") if more else ""
    assert sorted(seen) == sorted(e.source for e in many) and pages > 2
    found = client.get("/guard/entries?list=bulk&q=l3").text
    labels = re.findall(r'<td data-label="Label">(L\d)</td>', found)
    assert (
        labels and set(labels) == {"L3"} and len(labels) == sum(1 for e in many if e.label == "L3")
    )
    exact = client.get(f"/guard/entries?list=bulk&q={to_hex(many[5].ahash).upper()}").text
    assert re.findall(r"(bulk-\d+\.jpg)</td>", exact) == ["bulk-5.jpg"]
    assert client.get("/guard/entries?list=nosuch").status_code == 404
    assert client.get("/guard/entries?list=bad%20name").status_code == 400


def test_decisions_show_the_stream_newest_first_with_filters(
    client: TestClient, loaded: str
) -> None:
    login(client)
    blocked = data_file(BLOCKED).read_bytes()
    near = data_file(UNRELATED).read_bytes()
    assert client.post("/upload", files={"f": ("b.jpg", blocked)}).status_code == 403
    assert client.post("/soft", files={"f": ("u.jpg", near)}).json() == {"guard": "flag"}
    wait_for_event(loaded, "flag")
    page = client.get("/guard/decisions").text
    actions = re.findall(r'<tr data-action="([^"]+)">', page)
    assert actions == ["flag", "reject"]
    assert "near.jpg" in page and BLOCKED in page and "identity" in page
    rejects = client.get("/guard/decisions?action=reject").text
    assert re.findall(r'<tr data-action="([^"]+)">', rejects) == ["reject"]
    soft = client.get("/guard/decisions?list=soft").text
    assert re.findall(r'<tr data-action="([^"]+)">', soft) == ["flag"]
    assert "No decisions pass these filters" in client.get("/guard/decisions?action=unchecked").text


def test_check_gives_the_middlewares_verdict_per_list_and_the_nearest_entries(
    client: TestClient,
) -> None:
    token = login(client)
    listed = client.post("/guard/check", data={"csrf": token}, files=image_file(BLOCKED)).text
    assert re.search(r'id="verdict">reject<', listed)
    spam = re.search(r'<tr data-list="spam">(.*?)</tr>', listed, re.S)
    soft = re.search(r'<tr data-list="soft">(.*?)</tr>', listed, re.S)
    assert spam and ">reject<" in spam[1] and f"{BLOCKED}: 0 / 0" in spam[1]
    assert soft and ">allow<" in soft[1]
    near = client.post("/guard/check", data={"csrf": token}, files=image_file(UNRELATED)).text
    soft = re.search(r'<tr data-list="soft">(.*?)</tr>', near, re.S)
    assert soft and ">flag<" in soft[1] and "near.jpg: 3 / 0" in soft[1]
    assert re.search(r'id="verdict">flag<', near)
    # Each verdict is the middleware's own for the same bytes.
    assert (
        client.post("/upload", files={"f": ("b.jpg", data_file(BLOCKED).read_bytes())}).status_code
        == 403
    )
    assert client.post(
        "/soft", files={"f": ("u.jpg", data_file(UNRELATED).read_bytes())}
    ).json() == {"guard": "flag"}
    bad = client.post(
        "/guard/check", data={"csrf": token}, files={"image": ("x.jpg", b"not an image")}
    )
    assert bad.status_code == 400 and "not checked" in bad.text and "Traceback" not in bad.text


# --- actions ------------------------------------------------------------------------------------


def test_allow_from_a_check_lets_the_flagged_upload_through_recorded_with_who(
    client: TestClient, loaded: str
) -> None:
    token = login(client)
    near = data_file(UNRELATED).read_bytes()
    assert client.post("/soft", files={"f": ("u.jpg", near)}).json() == {"guard": "flag"}
    checked = client.post("/guard/check", data={"csrf": token}, files=image_file(UNRELATED)).text
    hashes = re.search(r'name="hashes" value="([^"]+)"', checked)
    assert hashes
    done = client.post(
        "/guard/actions/add",
        data={
            "csrf": token,
            "hashes": hashes[1],
            "list": "soft",
            "kind": "allow",
            "source": "ok.jpg",
        },
    )
    assert done.status_code == 200 and "1 entries added to the allow-list of soft" in done.text
    record = wait_for_event(loaded, "review-allow")
    assert (record["by"], record["list"], record["source"]) == ("mod", "soft", "ok.jpg")
    assert client.post("/soft", files={"f": ("u.jpg", near)}).json() == {"guard": "allow"}
    assert wait_for_event(loaded, "allowed")["allowed_by"] == "ok.jpg"
    decisions = client.get("/guard/decisions").text
    assert re.findall(r'<tr data-action="([^"]+)">', decisions)[:2] == ["allowed", "review-allow"]


def test_add_then_remove_an_entry_from_the_check_page(client: TestClient, loaded: str) -> None:
    token = login(client)
    image = encode(photo(UNRELATED).rotate(90, expand=True), "PNG")
    assert client.post("/upload", files={"f": ("r.png", image)}).json() == {"guard": "allow"}
    checked = client.post(
        "/guard/check", data={"csrf": token}, files={"image": ("r.png", image, "image/png")}
    ).text
    hashes = re.search(r'name="hashes" value="([^"]+)"', checked)
    assert hashes
    done = client.post(
        "/guard/actions/add",
        data={"csrf": token, "hashes": hashes[1], "list": "spam", "kind": "add", "label": "rot"},
    )
    assert "1 entries added to spam" in done.text
    assert client.post("/upload", files={"f": ("r.png", image)}).status_code == 403
    added = [e for e in spam_entries(loaded) if e.label == "rot"]
    assert len(added) == 1 and added[0].source == "review by mod"  # no source given
    assert wait_for_event(loaded, "review-add")["by"] == "mod"
    removed = client.post(
        "/guard/actions/remove",
        data={
            "csrf": token,
            "list": "spam",
            "ahash": to_hex(added[0].ahash),
            "phash": to_hex(added[0].phash or 0),
        },
    )
    assert "1 entries removed from spam" in removed.text
    assert client.post("/upload", files={"f": ("r.png", image)}).json() == {"guard": "allow"}
    assert wait_for_event(loaded, "review-remove")["by"] == "mod"
    bad = client.post("/guard/actions/add", data={"csrf": token, "hashes": "zz:yy", "list": "spam"})
    assert bad.status_code == 400 and "not an aHash:pHash pair" in bad.text


def test_switching_a_list_to_shadow_is_obeyed_by_the_middleware_and_back(
    client: TestClient, loaded: str
) -> None:
    token = login(client)
    blocked = data_file(BLOCKED).read_bytes()
    assert client.post("/upload", files={"f": ("b.jpg", blocked)}).status_code == 403
    done = client.post(
        "/guard/actions/mode", data={"csrf": token, "list": "spam", "mode": "shadow"}
    )
    assert done.status_code == 200 and "spam is now in mode shadow" in done.text
    # Obeyed once the switches are read again (each request starts a read here: interval 0).
    assert until(lambda: client.post("/upload", files={"f": ("b.jpg", blocked)}).status_code == 200)
    assert client.post("/upload", files={"f": ("b.jpg", blocked)}).json() == {
        "guard": "shadow-reject"
    }
    lists = client.get("/guard/").text
    spam = re.search(r'<tr data-list="spam">(.*?)</tr>', lists, re.S)
    assert spam and 'data-mode="shadow"' in spam[1] and "switched here" in spam[1]
    record = wait_for_event(loaded, "review-mode")
    assert (record["by"], record["list"], record["mode"]) == ("mod", "spam", "shadow")
    client.post("/guard/actions/mode", data={"csrf": token, "list": "spam", "mode": "config"})
    assert until(lambda: client.post("/upload", files={"f": ("b.jpg", blocked)}).status_code == 403)
    bad = client.post("/guard/actions/mode", data={"csrf": token, "list": "spam", "mode": "off"})
    assert bad.status_code == 400


def test_decisions_page_through_the_stream_newest_first(client: TestClient, loaded: str) -> None:
    async def append() -> None:
        async with Store.from_url(loaded) as store:
            records = [
                {
                    "schema": "1",
                    "action": "flag" if n % 3 else "reject",
                    "request_id": f"r{n}",
                    "route": "/upload",
                    "method": "POST",
                    "time": repr(1.8e9 + n),
                    "list": "spam",
                    "source": f"s{n:03d}",
                }
                for n in range(130)
            ]
            await store.append_events("guard:events", records, max_length=1000)

    run(append())
    login(client)
    for query, expected in (("", range(129, -1, -1)), ("?action=reject&", range(129, -1, -1))):
        if query:
            expected = [n for n in expected if n % 3 == 0]
        seen: list[int] = []
        url = f"/guard/decisions{query or '?'}"
        while url:
            page = client.get(url).text
            seen += [int(n) for n in re.findall(r'<td data-label="Entry">s(\d{3})', page)]
            more = re.search(r'rel="next" href="([^"]+)"', page)
            url = more[1].replace("&amp;", "&") if more else ""
        assert seen == list(expected)


def test_the_example_app_mounts_the_review_page(
    loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_example_app import load_example

    monkeypatch.setenv("GUARD_REDIS_URL", loaded)  # its list `spam` stands in for the example's
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    monkeypatch.setenv("GUARD_REVIEW_USERS", "ann:pw1")
    with TestClient(load_example().app) as client:
        assert client.get("/guard/").status_code == 401
        assert client.get("/guard/decisions").status_code == 401
        login = client.post("/guard/login", data={"name": "ann", "password": "pw1"})
        assert login.status_code == 200 and "ann" in login.text
        assert 'data-list="spam"' in login.text


def test_mode_switches_are_put_over_a_reloaded_config_at_once(loaded: str) -> None:
    async def body() -> None:
        guard = GuardMiddleware(upload, config=make_config(), store=Store.from_url(loaded))
        async with Store.from_url(loaded) as store:
            await store.set_mode("spam", "shadow")
            await store.set_mode("soft", "sideways")  # unknown: ignored
            assert guard.config.policy("spam").mode == "enforce"
            await guard.modes.poll(guard)  # starts the read
            assert guard.modes._reading is not None
            await guard.modes._reading
            await guard.modes.poll(guard)
            assert guard.config.policy("spam").mode == "shadow"
            assert guard.supervisor.config is guard.config
            assert guard.config.policy("soft") == make_config().policy("soft")
            # A reload brings the file's mode back; the switch is put over it at the next request,
            # without waiting for a read.
            guard.modes.interval = 3600
            await guard._apply_config(make_config())
            assert guard.config.policy("spam").mode == "enforce"
            await guard.modes.poll(guard)
            assert guard.config.policy("spam").mode == "shadow"
            # Cleared: the file's mode again once read.
            await store.set_mode("spam", None)
            guard.modes.interval = 0
            await guard.modes.poll(guard)
            await guard.modes._reading
            await guard.modes.poll(guard)
            assert guard.config.policy("spam").mode == "enforce"
        await guard.aclose()

    run(body())


# --- the quarantine (off by default) ------------------------------------------------------------


def quarantined(redis_url: str) -> dict[str, int]:
    """The quarantine's keys and their TTLs."""
    client = redis.Redis.from_url(redis_url)
    try:
        return {k.decode(): client.ttl(k) for k in client.scan_iter("guard:quarantine:*")}
    finally:
        client.close()


def test_the_quarantine_is_off_by_default(client: TestClient, loaded: str) -> None:
    login(client)
    near = data_file(UNRELATED).read_bytes()
    assert client.post("/soft", files={"f": ("u.jpg", near)}).json() == {"guard": "flag"}
    record = wait_for_event(loaded, "flag")
    assert quarantined(loaded) == {}
    assert "picture</a>" not in client.get("/guard/decisions").text
    off = client.get(f"/guard/pictures?request={record['request_id']}")
    assert off.status_code == 404 and "quarantine is off" in off.text


def test_the_quarantine_keeps_flagged_pictures_for_moderators_only(loaded: str) -> None:
    app, _ = site(loaded, Quarantine(ttl=600, max_bytes=200_000))
    near = data_file(UNRELATED).read_bytes()
    blocked = data_file(BLOCKED).read_bytes()
    with TestClient(app) as client:
        assert client.post("/upload", files={"f": ("b.jpg", blocked)}).status_code == 403
        assert client.post("/soft", files={"f": ("u.jpg", near)}).json() == {"guard": "flag"}
        flag = wait_for_event(loaded, "flag")
        kept = quarantined(loaded)
        # The flagged upload only (a rejected one is a listed picture: never stored again).
        assert list(kept) == [f"guard:quarantine:{flag['request_id']}"]
        assert 0 < kept[f"guard:quarantine:{flag['request_id']}"] <= 600
        url = f"/guard/pictures?request={flag['request_id']}"
        anonymous = client.get(url)
        assert anonymous.status_code == 401 and "data:image" not in anonymous.text
        login(client)
        decisions = client.get("/guard/decisions").text
        assert f'href="/guard/pictures?request={flag["request_id"]}">picture</a>' in decisions
        shown = client.get(url)
        assert shown.status_code == 200 and shown.text.count('src="data:image/jpeg;base64,') == 1
        assert client.get("/guard/pictures?request=nope").status_code == 404
        assert client.get("/guard/pictures?request=a%20b").status_code == 400

        async def stored() -> list[bytes]:
            async with Store.from_url(loaded) as store:
                return await Quarantine().pictures(store, flag["request_id"])

        assert run(stored()) == [near]  # the exact bytes, nothing else of the request
    # Over max_bytes: nothing kept.
    app, _ = site(loaded, Quarantine(max_bytes=len(near) - 1))
    with TestClient(app) as client:
        assert client.post("/soft", files={"f": ("u.jpg", near)}).json() == {"guard": "flag"}
        assert len(quarantined(loaded)) == 1
    with pytest.raises(ValueError, match="ttl"):
        Quarantine(ttl=0)
