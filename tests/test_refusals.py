"""Refusal bodies: negotiated by Accept, carrying the request id, replaceable by the app."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from asgi_driver import call, multipart
from conftest import run
from test_middleware import BLOCKED, UNRELATED, jpeg, loaded, make_config  # noqa: F401

from guard.config import Config, OperationsSettings
from guard.errors import ConfigError
from guard.middleware import GuardMiddleware
from guard.refusals import RefusalPages, RefusalView, prefers_html
from guard.store import Store

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("", False),  # no header: an API client
        ("*/*", False),  # fetch(), curl: a tie goes to JSON
        ("application/json", False),
        (BROWSER, True),  # Firefox's and Chrome's navigation Accept
        ("text/html", True),
        ("text/*", True),
        ("text/html;q=0.5, application/json", False),
        ("text/html, application/json;q=0.9", True),
        ("text/html;q=0, */*", False),  # q=0: not acceptable
        ("text/*;q=0.1, text/html;q=0.9, application/json;q=0.5", True),  # specific wins
        ("text/html;q=oops, application/json;q=0.1", False),  # a malformed q counts as 0
        ("TEXT/HTML", True),
        ("application/*", False),
        ("garbage", False),
    ],
)
def test_accept_negotiation(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def guard_with(redis_url: str, **options: Any) -> GuardMiddleware:
    config: Config = make_config()
    page = options.pop("refusal_page", None)
    if page is not None:
        config = dataclasses.replace(config, operations=OperationsSettings(refusal_page=page))
    return GuardMiddleware(_App(), config=config, store=Store.from_url(redis_url), **options)


class _App:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def refused(guard: GuardMiddleware, accept: str | None, request_id: str | None = None) -> Any:
    headers = [("accept", accept)] if accept is not None else []
    if request_id is not None:
        headers.append(("x-request-id", request_id))
    return run(call(guard, multipart(("b.jpg", jpeg(BLOCKED))), headers=headers))


def test_a_browser_gets_a_page_and_an_api_json(loaded: str) -> None:  # noqa: F811
    guard = guard_with(loaded)
    page = refused(guard, BROWSER)
    assert page.status == 403
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    text = page.body.decode()
    assert "<title>This upload was not accepted</title>" in text
    assert page.headers["x-request-id"] in text  # the reference a user can report
    assert int(page.headers["content-length"]) == len(page.body)
    api = refused(guard, "application/json")
    assert api.headers["content-type"] == "application/json"
    body = json.loads(api.body)
    assert body == {
        "error": "upload rejected",
        "list": "spam",
        "request_id": api.headers["x-request-id"],
    }
    assert page.headers["x-request-id"] != api.headers["x-request-id"]


def test_a_clients_request_id_is_kept_and_a_hostile_one_replaced(loaded: str) -> None:  # noqa: F811
    guard = guard_with(loaded)
    kept = refused(guard, None, request_id="req-7f3a.42:b")
    assert kept.headers["x-request-id"] == "req-7f3a.42:b"
    assert json.loads(kept.body)["request_id"] == "req-7f3a.42:b"
    for hostile in ("<script>", "a" * 129, "two words", ""):
        replaced = refused(guard, None, request_id=hostile)
        made = replaced.headers["x-request-id"]
        assert made != hostile and len(made) == 32 and int(made, 16) >= 0


def test_a_configured_page_is_filled_in_and_escaped(loaded: str, tmp_path: Path) -> None:  # noqa: F811
    template = tmp_path / "refused.html"
    template.write_text(
        "<p>$status: $error ($list) ref $request_id; costs $$5</p>", encoding="utf-8"
    )
    guard = guard_with(loaded, refusal_page=str(template))
    page = refused(guard, "text/html", request_id="abc")
    assert page.body.decode() == "<p>403: upload rejected (spam) ref abc; costs $5</p>"
    view = RefusalView(415, "not an image: <svg onload=x>", "r1")
    _, body = RefusalPages(str(template)).render(view, "text/html")
    assert body.decode() == "<p>415: not an image: &lt;svg onload=x&gt; () ref r1; costs $5</p>"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<p>$status and a stray $ sign</p>", "has a $ that starts no placeholder"),
        (b"\xff\xfe<p>", "is not UTF-8 text"),
        (b"x" * 262_145, "is over 262144 bytes"),
        (None, "cannot read"),
    ],
)
def test_an_unusable_page_stops_the_middleware_at_construction(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    template = tmp_path / "page.html"
    if content is not None:
        template.write_bytes(content)
    config = dataclasses.replace(
        make_config(), operations=OperationsSettings(refusal_page=str(template))
    )
    with pytest.raises(ConfigError) as raised:
        GuardMiddleware(_App(), config=config)
    assert raised.value.key == "operations.refusal_page"
    assert reason in str(raised.value)


def test_the_apps_renderer_replaces_the_body_and_falls_back_on_none_or_failure(
    loaded: str,  # noqa: F811
) -> None:
    seen: list[tuple[RefusalView, bool]] = []

    def render(view: RefusalView, wants_html: bool) -> tuple[str, bytes] | None:
        seen.append((view, wants_html))
        if view.request_id == "broken":
            raise RuntimeError("template bug")
        if not wants_html:
            return None  # guard's JSON for APIs
        return "text/html", f"<b>{view.status} {view.list}</b>".encode()

    guard = guard_with(loaded, render_refusal=render)
    page = refused(guard, "text/html", request_id="r1")
    assert (page.headers["content-type"], page.body) == ("text/html", b"<b>403 spam</b>")
    api = refused(guard, "application/json", request_id="r2")
    assert json.loads(api.body)["request_id"] == "r2"
    broken = refused(guard, "text/html", request_id="broken")
    assert broken.status == 403 and json.loads(broken.body)["request_id"] == "broken"
    assert [(view.request_id, html) for view, html in seen] == [
        ("r1", True),
        ("r2", False),
        ("broken", True),
    ]
    assert seen[0][0] == RefusalView(403, "upload rejected", "r1", "spam")


def test_other_refusals_are_negotiated_too(loaded: str) -> None:  # noqa: F811
    guard = guard_with(loaded)
    headers = [("accept", BROWSER)]
    result = run(call(guard, multipart(("a.txt", b"not an image")), headers=headers))
    assert result.status == 415
    assert "This file type is not accepted" in result.body.decode()
    ok = run(call(guard, multipart(("u.jpg", jpeg(UNRELATED))), headers=headers))
    assert ok.status == 200 and "x-request-id" not in ok.headers  # the app's own response
