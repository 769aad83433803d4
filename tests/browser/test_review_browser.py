"""The review page in a real browser: Debian's chromium, driven headless by playwright through
``executable_path`` (no browser is downloaded). The guarded app and the review page run in one
uvicorn server, as a host app would serve them.

Skipped, saying why, where playwright or a chromium is missing (.ci/run installs chromium).
With GUARD_REVIEW_SCREENSHOTS=1 the page screenshots are also written to docs/.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import data_file, run
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount, Route
from test_middleware import BLOCKED, UNRELATED, load_lists, make_config

from guard import GuardMiddleware, review_app
from guard.review import Quarantine
from guard.store import Store

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

CHROMIUM = os.environ.get("GUARD_CHROMIUM") or next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and Path(p).exists()
    ),
    None,
)
if CHROMIUM is None:
    pytest.skip(
        "no chromium to drive: install Debian's `chromium` (apt-get install chromium; .ci/run "
        "does) or set GUARD_CHROMIUM to a Chromium binary",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"
USERS = {"mod": "correct horse"}

FORM = """<!doctype html><meta name="viewport" content="width=device-width">
<title>upload</title>
<form id="{name}" action="/{name}" method="post" enctype="multipart/form-data">
<input type="file" name="file"><button>Upload to /{name}</button></form>"""


async def form(request: Request) -> HTMLResponse:
    return HTMLResponse(FORM.format(name=request.path_params["name"]))


async def upload(request: Request) -> JSONResponse:
    await request.form()
    decision = getattr(request.state, "guard", None)
    return JSONResponse({"guard": decision.action if decision else None})


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


@contextmanager
def serving(redis_url: str, quarantine: Quarantine | None = None) -> Iterator[str]:
    """The guarded app (/upload, /soft) and the review page (/guard) on one uvicorn server."""
    import uvicorn

    # In a thread: playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(run, load_lists(redis_url)).result()
    config = make_config()
    review = review_app(config, store=Store.from_url(redis_url), users=USERS, quarantine=quarantine)
    inner = Starlette(
        routes=[
            Route("/form/{name}", form),
            Route("/upload", upload, methods=["POST"]),
            Route("/soft", upload, methods=["POST"]),
            Mount("/guard", review),
        ]
    )
    guard = GuardMiddleware(
        inner, config=config, store=Store.from_url(redis_url), quarantine=quarantine
    )
    guard.modes.interval = 0.1
    port = free_port()
    settings = uvicorn.Config(
        Starlette(routes=[Mount("/", guard)]), host="127.0.0.1", port=port, log_level="warning"
    )
    uvicorn_server = uvicorn.Server(settings)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)


@pytest.fixture
def server(redis_url: str) -> Iterator[str]:
    with serving(redis_url) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    """Every page's picture: into the test's folder, and docs/ when asked."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000  # a rendered page, not a blank one
    if os.environ.get("GUARD_REVIEW_SCREENSHOTS") == "1":
        shutil.copy(path, DOCS / name)


def sign_in(page: Page, server: str) -> None:
    answer = page.goto(f"{server}/guard/")
    assert answer is not None and answer.status == 401
    page.fill("input[name=name]", "mod")
    page.fill("input[name=password]", USERS["mod"])
    page.click("text=Sign in >> nth=-1")
    expect(page.locator("h1")).to_have_text("Lists")


def upload_through_the_app(page: Page, server: str, route: str, image: str) -> str:
    """Upload with the app's own form, as a user does; the app's JSON answer (or the status)."""
    page.goto(f"{server}/form/{route}")
    page.set_input_files("input[type=file]", str(data_file(image)))
    with page.expect_navigation() as navigation:
        page.click("button")
    answer = navigation.value
    assert answer is not None
    return page.inner_text("body") if answer.status == 200 else str(answer.status)


def test_sign_in_and_every_page_renders(page: Page, server: str, tmp_path: Path) -> None:
    page.goto(f"{server}/guard/login")
    screenshot(page, "review-login.png", tmp_path)
    sign_in(page, server)
    expect(page.locator('tr[data-list="spam"] [data-mode]')).to_have_text("enforce")
    screenshot(page, "review-lists.png", tmp_path)
    page.click('tr[data-list="spam"] a')
    expect(page.locator("#entries tbody tr")).to_have_count(2)
    screenshot(page, "review-entries.png", tmp_path)
    page.click("text=Decisions")
    expect(page.locator("h1")).to_have_text("Decisions")


def test_a_flag_appears_is_allowed_and_the_reupload_passes(
    page: Page, server: str, tmp_path: Path
) -> None:
    sign_in(page, server)
    assert '"guard":"flag"' in upload_through_the_app(page, server, "soft", UNRELATED)
    page.goto(f"{server}/guard/decisions")
    flag = page.locator('tr[data-action="flag"]')
    expect(flag).to_have_count(1)
    expect(flag).to_contain_text("near.jpg")

    page.click("text=Check an image")
    page.set_input_files("input[name=image]", str(data_file(UNRELATED)))
    page.click("button:text('Check')")
    expect(page.locator("#verdict")).to_have_text("flag")
    expect(page.locator('#per-list tr[data-list="soft"]')).to_contain_text("near.jpg: 3 / 0")
    screenshot(page, "review-check.png", tmp_path)
    page.select_option("#teach select[name=list]", "soft")
    page.click("text=Allow on the list")
    expect(page.locator(".message")).to_contain_text("1 entries added to the allow-list of soft")

    assert '"guard":"allow"' in upload_through_the_app(page, server, "soft", UNRELATED)
    page.goto(f"{server}/guard/decisions")
    rows = page.locator("#decisions tbody tr")
    expect(rows.nth(0)).to_have_attribute("data-action", "allowed", timeout=5000)
    expect(rows.nth(1)).to_have_attribute("data-action", "review-allow")
    expect(rows.nth(1)).to_contain_text("mod")
    expect(rows.nth(2)).to_have_attribute("data-action", "flag")
    screenshot(page, "review-decisions.png", tmp_path)


def test_switching_to_shadow_lets_the_listed_image_through(page: Page, server: str) -> None:
    sign_in(page, server)
    assert upload_through_the_app(page, server, "upload", BLOCKED) == "403"
    page.goto(f"{server}/guard/")
    page.click('tr[data-list="spam"] button:text("Shadow")')
    expect(page.locator(".message")).to_contain_text("spam is now in mode shadow")
    deadline = time.monotonic() + 5
    while (answer := upload_through_the_app(page, server, "upload", BLOCKED)) == "403":
        assert time.monotonic() < deadline, "the middleware did not obey the switch"
    assert '"guard":"shadow-reject"' in answer
    page.goto(f"{server}/guard/")
    expect(page.locator('tr[data-list="spam"] [data-mode]')).to_have_text("shadow")


def test_anonymous_and_a_phone(browser: Browser, server: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    for path in ("/guard/", "/guard/decisions", "/guard/check", "/guard/entries?list=spam"):
        answer = phone.goto(server + path)
        assert answer is not None and answer.status == 401
        expect(phone.locator("h1")).to_have_text("Sign in")
    sign_in(phone, server)
    # Nothing wider than the phone: the tables stack their cells.
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    screenshot(phone, "review-phone.png", tmp_path)
    context.close()


def test_a_quarantined_picture_is_shown_to_moderators_only(
    browser: Browser, page: Page, redis_url: str, tmp_path: Path
) -> None:
    with serving(redis_url, Quarantine(ttl=600)) as server:
        assert '"guard":"flag"' in upload_through_the_app(page, server, "soft", UNRELATED)
        sign_in(page, server)
        page.goto(f"{server}/guard/decisions")
        link = page.locator('tr[data-action="flag"] a.picture')
        address = link.get_attribute("href")
        assert address
        stranger = browser.new_context().new_page()
        answer = stranger.goto(server + address)
        assert answer is not None and answer.status == 401
        expect(stranger.locator("#pictures img")).to_have_count(0)
        stranger.context.close()
        link.click()
        picture = page.locator("#pictures img")
        expect(picture).to_have_count(1)
        assert picture.evaluate("img => img.naturalWidth") > 100  # decoded, not a broken image
        screenshot(page, "review-quarantine.png", tmp_path)
