"""``guard.review_app()``: the review page, a Starlette app to mount beside the guarded app.

Server-rendered (Jinja2 templates shipped in the package, no JavaScript), readable on a phone.
Every page and action needs a moderator (:mod:`guard.review.auth`); every action is a POST with
a CSRF token; responses are never cached and may not be framed.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from guard.config import Config, load_config
from guard.errors import GuardError, ImageError, StoreError, UnknownList
from guard.hashing import ImageHashes, from_hex, hash_bytes, to_hex
from guard.list_scale import compact as compact_scale
from guard.review import actions, pages
from guard.review.auth import COOKIE, SESSION_SECONDS, Access, Authenticate, Moderator
from guard.review.modes import MODES, with_modes
from guard.review.quarantine import KEPT_ACTIONS, Quarantine
from guard.store import Store, open_store
from guard.store.allow import validate_stored_name

HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # No script at all; images only as data: URLs (the checked upload's thumbnail).
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
ACTION_FILTERS = (
    "reject",
    "flag",
    "shadow-reject",
    "shadow-flag",
    "allowed",
    "unchecked",
    *actions.ACTIONS,
)

Handler = Callable[[Request, Moderator], Awaitable[Response]]


class Review:
    """The page's state: config, store (opened on first use), access and templates."""

    def __init__(
        self,
        config: Config,
        store: Store | None,
        access: Access,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.config = config
        self.quarantine = quarantine
        self.access = access
        self._store = store
        self._owns_store = store is None
        self._lock = anyio.Lock()
        self.templates = Environment(
            loader=PackageLoader("guard.review", "templates"),
            autoescape=select_autoescape(default=True),
        )
        self.templates.filters["hex"] = to_hex
        self.templates.filters["utc"] = _utc
        self.templates.filters["compact"] = compact_scale

    async def store(self) -> Store:
        async with self._lock:
            if self._store is None:
                self._store = await anyio.to_thread.run_sync(partial(open_store, self.config))
        return self._store

    async def close(self) -> None:
        if self._owns_store and self._store is not None:
            await self._store.close()
            self._store = None

    async def current_config(self, store: Store) -> tuple[Config, dict[str, str]]:
        """The config with the review page's mode switches over it, and the switches."""
        modes = await store.mode_overrides()
        return with_modes(self.config, modes), modes

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        moderator: Moderator | None = context.pop("moderator", None)
        html = self.templates.get_template(template).render(
            base=request.scope.get("root_path", "").rstrip("/"),
            moderator=moderator,
            csrf=self.access.csrf_token(moderator) if moderator else "",
            **context,
        )
        return HTMLResponse(html, status, headers=HEADERS)

    def guarded(self, handler: Handler, *, action: bool = False) -> Callable[..., Any]:
        """``handler`` for moderators only (401 with the login form otherwise); with
        ``action``, a POST with a good CSRF token only (403 otherwise, nothing changed)."""

        async def endpoint(request: Request) -> Response:
            moderator = await self.access.moderator(request)
            if moderator is None:
                return self.login_page(request, status=401)
            if action:
                form = await request.form(max_files=1, max_fields=20)
                if not self.access.csrf_ok(request, moderator, form.get("csrf")):
                    return self.render(
                        request,
                        "message.html",
                        403,
                        moderator=moderator,
                        title="Refused",
                        message="This form expired or came from another site: reload the page "
                        "and try again. Nothing was changed.",
                    )
            try:
                return await handler(request, moderator)
            except (UnknownList, UnknownPicture) as error:
                return self.problem(request, moderator, 404, str(error))
            except StoreError as error:
                return self.problem(request, moderator, 503, f"the store cannot answer: {error}")
            except (GuardError, ValueError) as error:  # ValueError: a bad list name
                return self.problem(request, moderator, 400, str(error))

        return endpoint

    def problem(self, request: Request, moderator: Moderator, status: int, text: str) -> Response:
        return self.render(
            request, "message.html", status, moderator=moderator, title="Not done", message=text
        )

    def login_page(self, request: Request, *, status: int, error: str = "") -> HTMLResponse:
        page = self.render(request, "login.html", status, form=bool(self.access.users), error=error)
        if status == 401 and request.headers.get("authorization", "").lower().startswith("basic"):
            # A script that tried HTTP Basic gets the challenge; a browser gets the form (a
            # challenge would open the browser's own password dialog over it).
            page.headers["WWW-Authenticate"] = 'Basic realm="guard review", charset="UTF-8"'
        return page

    # --- sign in and out ---------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.login_page(request, status=200)
        form = await request.form(max_files=0, max_fields=5)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        if not self.access.password_ok(name, password):
            return self.login_page(request, status=401, error="Wrong name or password.")
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/", 303, headers=HEADERS)
        response.set_cookie(
            COOKIE,
            self.access.session_cookie(name),
            max_age=SESSION_SECONDS,
            path=f"{base}/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request, moderator: Moderator) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/login", 303, headers=HEADERS)
        response.delete_cookie(COOKIE, path=f"{base}/", httponly=True, samesite="strict")
        return response

    # --- pages -------------------------------------------------------------------------------

    async def lists(self, request: Request, moderator: Moderator) -> Response:
        store = await self.store()
        config, modes = await self.current_config(store)
        rows = await pages.list_rows(store, config, modes)
        return self.render(request, "lists.html", moderator=moderator, rows=rows, modes=MODES)

    async def entries(self, request: Request, moderator: Moderator) -> Response:
        name = validate_stored_name(request.query_params.get("list", ""))
        query = request.query_params.get("q", "")
        cursor_text = request.query_params.get("cursor", "0")
        cursor = int(cursor_text) if cursor_text.isdigit() else 0
        store = await self.store()
        page = await pages.entries_page(store, name, query, cursor)
        return self.render(
            request,
            "entries.html",
            moderator=moderator,
            name=name,
            q=query,
            page=page,
            cursor=cursor,
        )

    async def decisions(self, request: Request, moderator: Moderator) -> Response:
        params = request.query_params
        lists = [v for v in params.getlist("list") if v]
        chosen = [v for v in params.getlist("action") if v]
        store = await self.store()
        page = await pages.decisions_page(
            store, self.config.operations.events_stream, lists, chosen, params.get("before")
        )
        names = [info.name for info in await store.lists()]
        return self.render(
            request,
            "decisions.html",
            moderator=moderator,
            page=page,
            lists=lists,
            chosen=chosen,
            names=names,
            actions=ACTION_FILTERS,
            kept=KEPT_ACTIONS if self.quarantine is not None else (),
        )

    async def pictures(self, request: Request, moderator: Moderator) -> Response:
        """A flagged upload's pictures from the quarantine (moderators only, never cached)."""
        if self.quarantine is None:
            raise UnknownPicture("the quarantine is off: no upload is kept")
        request_id = request.query_params.get("request", "")
        if not _REQUEST_ID.fullmatch(request_id):
            raise actions.ActionError("not a request id")
        kept = await self.quarantine.pictures(await self.store(), request_id)
        if not kept:
            raise UnknownPicture(f"no picture kept for request {request_id} (or it expired)")
        return self.render(
            request,
            "pictures.html",
            moderator=moderator,
            request_id=request_id,
            pictures=[_thumbnail(data, 640) for data in kept],
        )

    async def check_form(self, request: Request, moderator: Moderator) -> Response:
        return self.render(request, "check.html", moderator=moderator, result=None)

    async def check(self, request: Request, moderator: Moderator) -> Response:
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise actions.ActionError("choose an image to check")
        limit = self.config.http.max_body_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise actions.ActionError(f"the image is over http.max_body_bytes ({limit} bytes)")
        try:
            hashes = await anyio.to_thread.run_sync(self._hash, data)
        except ImageError as error:
            raise actions.ActionError(f"not checked: {error}") from None
        store = await self.store()
        config, modes = await self.current_config(store)
        rows = await pages.list_rows(store, config, modes)
        result = await pages.check_image(store, config, hashes, pages.checkable(rows))
        pairs = [(f.ahash, f.phash) for f in result.frames]
        return self.render(
            request,
            "check.html",
            moderator=moderator,
            result=result,
            hashes=actions.hashes_field(pairs),
            thumbnail=_thumbnail(data),
            names=pages.checkable(rows),
            filename=upload.filename or "upload",
        )

    def _hash(self, data: bytes) -> ImageHashes:
        hashes = hash_bytes(data, self.config.limits)
        for frame in hashes.frames:
            frame.variants()  # as the middleware does, in this worker thread
        return hashes

    # --- actions -----------------------------------------------------------------------------

    async def add(self, request: Request, moderator: Moderator) -> Response:
        form = await request.form(max_files=1, max_fields=20)
        name = validate_stored_name(str(form.get("list", "")))
        pairs = actions.frame_hashes(str(form.get("hashes", "")))
        if not pairs:
            raise actions.ActionError("no image hashes to add (the image was too plain)")
        allow = form.get("kind") == "allow"
        source = str(form.get("source", "")).strip() or f"review by {moderator.name}"
        label = str(form.get("label", "")).strip() or None
        store = await self.store()
        done = await actions.add(
            store,
            self.config,
            name,
            pairs,
            by=moderator.name,
            path=request.url.path,
            source=source,
            label=label,
            allow=allow,
        )
        return self.done(request, moderator, done, name)

    async def remove(self, request: Request, moderator: Moderator) -> Response:
        form = await request.form(max_files=1, max_fields=20)
        name = validate_stored_name(str(form.get("list", "")))
        ahash = from_hex(str(form.get("ahash", "")))
        phash_text = str(form.get("phash", ""))
        phash = from_hex(phash_text) if phash_text else None
        store = await self.store()
        done = await actions.remove(
            store, self.config, name, ahash, phash, by=moderator.name, path=request.url.path
        )
        return self.done(request, moderator, done, name)

    async def mode(self, request: Request, moderator: Moderator) -> Response:
        form = await request.form(max_files=1, max_fields=20)
        name = validate_stored_name(str(form.get("list", "")))
        mode = str(form.get("mode", ""))
        if mode not in (*MODES, "config"):
            raise actions.ActionError(f"mode must be enforce, shadow or config, not {mode!r}")
        store = await self.store()
        done = await actions.switch_mode(
            store,
            self.config,
            name,
            None if mode == "config" else mode,
            by=moderator.name,
            path=request.url.path,
        )
        return self.done(request, moderator, done, name)

    def done(self, request: Request, moderator: Moderator, text: str, name: str) -> Response:
        return self.render(
            request, "message.html", moderator=moderator, title="Done", message=text, name=name
        )


def _utc(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


class UnknownPicture(GuardError):
    """No kept picture to show (404)."""


#: The request ids guard makes or accepts (guard.middleware), as they name kept pictures.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _thumbnail(data: bytes, size: int = 240) -> str | None:
    """An image, shrunk, as a data: URL: inside the one response, never at an address."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=80)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def review_app(
    config: Config | str | os.PathLike[str] | None = None,
    *,
    store: Store | None = None,
    users: Mapping[str, str] | None = None,
    authenticate: Authenticate | None = None,
    secret: str | bytes | None = None,
    quarantine: Quarantine | None = None,
) -> Starlette:
    """The review page as an ASGI app: mount it, e.g. ``Mount("/guard", review_app(...))``.

    ``config`` as the middleware takes it (a Config, a path, or ``GUARD_CONFIG``); ``store``:
    one to use (else the config's is opened on first use and closed at shutdown). Moderators
    sign in with ``users`` (name -> password; default ``GUARD_REVIEW_USERS``,
    ``name:password,...``) or are named by ``authenticate(request)`` (the host app's own
    sign-in; return None for anyone else). ``secret`` signs sessions and CSRF tokens (default
    ``GUARD_REVIEW_SECRET``, else random per process: set it with several workers).
    ``quarantine``: the one given to the middleware, to show flagged uploads' pictures (off by
    default). Raises ConfigError without any way to sign in.
    """
    source = None if isinstance(config, Config) else config or os.environ.get("GUARD_CONFIG")
    loaded = config if isinstance(config, Config) else load_config(source)
    review = Review(loaded, store, Access(users, authenticate, secret), quarantine)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await review.close()

    page, act = review.guarded, partial(review.guarded, action=True)
    routes = [
        Route("/", page(review.lists)),
        Route("/login", review.login, methods=["GET", "POST"]),
        Route("/logout", act(review.logout), methods=["POST"]),
        Route("/entries", page(review.entries)),
        Route("/decisions", page(review.decisions)),
        Route("/pictures", page(review.pictures)),
        Route("/check", page(review.check_form)),
        Route("/check", act(review.check), methods=["POST"]),
        Route("/actions/add", act(review.add), methods=["POST"]),
        Route("/actions/remove", act(review.remove), methods=["POST"]),
        Route("/actions/mode", act(review.mode), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.review = review
    return app
