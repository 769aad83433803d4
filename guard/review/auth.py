"""Who may use the review page, and proof that an action came from the page.

Three ways in, in this order: a session cookie from the login form (users and passwords given
to :func:`guard.review_app` or in ``GUARD_REVIEW_USERS``), HTTP Basic with the same users (for
scripts), or the host app's own ``authenticate`` function. Nothing is served without one.

Every action is a POST carrying a CSRF token: an HMAC of the credential it was issued for
(the session's random id, or the user's name), so a token from one session is refused in
another. The session cookie is HttpOnly and SameSite=Strict, and a POST whose Origin names
another site is refused before the token is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from guard.errors import ConfigError

#: The host app's check: the moderator's name for this request, or None (not signed in).
Authenticate = Callable[[Request], "Awaitable[str | None] | str | None"]

COOKIE = "guard_review"
#: Seconds a login lasts.
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Moderator:
    """Who is signed in, and the credential their CSRF token is tied to."""

    name: str
    credential: str
    #: Signed in with the login form (so the page offers to sign out).
    session: bool = False


def users_from_env(text: str | None) -> dict[str, str]:
    """``GUARD_REVIEW_USERS``: ``name:password`` pairs separated by commas."""
    users: dict[str, str] = {}
    for item in (text or "").split(","):
        name, colon, password = item.strip().partition(":")
        if not item.strip():
            continue
        if not colon or not name or not password:
            raise ConfigError(
                "GUARD_REVIEW_USERS: expected name:password pairs separated by commas"
            )
        users[name] = password
    return users


class Access:
    """Signs sessions and CSRF tokens with one secret, and checks credentials."""

    def __init__(
        self,
        users: Mapping[str, str] | None,
        authenticate: Authenticate | None,
        secret: str | bytes | None,
    ) -> None:
        self.users = (
            dict(users)
            if users is not None
            else users_from_env(os.environ.get("GUARD_REVIEW_USERS"))
        )
        self.authenticate = authenticate
        if not self.users and authenticate is None:
            raise ConfigError(
                "the review page needs credentials: review_app(users={name: password}), "
                "GUARD_REVIEW_USERS=name:password, or review_app(authenticate=...)"
            )
        secret = secret if secret is not None else os.environ.get("GUARD_REVIEW_SECRET")
        if secret is None:
            self.secret = secrets.token_bytes(32)  # sessions last as long as the process
        else:
            self.secret = secret.encode() if isinstance(secret, str) else secret

    def _sign(self, *parts: str) -> str:
        return hmac.new(self.secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    def password_ok(self, name: str, password: str) -> bool:
        expected = self.users.get(name)
        # Compared in constant time, and a wrong name costs as much as a wrong password.
        return (
            hmac.compare_digest((expected or "\0" + password).encode(), password.encode())
            and expected is not None
        )

    def session_cookie(self, name: str) -> str:
        expires = str(int(time.time()) + SESSION_SECONDS)
        nonce = secrets.token_hex(16)
        return f"{name}|{expires}|{nonce}|{self._sign('session', name, expires, nonce)}"

    async def moderator(self, request: Request) -> Moderator | None:
        """Who sent the request, or None."""
        cookie = request.cookies.get(COOKIE)
        if cookie:
            parts = cookie.split("|")
            if len(parts) == 4:
                name, expires, nonce, signature = parts
                good = hmac.compare_digest(signature, self._sign("session", name, expires, nonce))
                if good and expires.isdigit() and int(expires) > time.time() and name in self.users:
                    return Moderator(name, f"session\0{nonce}", session=True)
        basic = _basic(request.headers.get("authorization", ""))
        if basic is not None and self.password_ok(*basic):
            return Moderator(basic[0], f"basic\0{basic[0]}")
        if self.authenticate is not None:
            found = self.authenticate(request)
            host_name = await found if inspect.isawaitable(found) else found
            if host_name:
                return Moderator(str(host_name), f"host\0{host_name}")
        return None

    def csrf_token(self, moderator: Moderator) -> str:
        return self._sign("csrf", moderator.credential)

    def csrf_ok(self, request: Request, moderator: Moderator, token: object) -> bool:
        """The form's token was issued for this credential, and the request is not from
        another site (Origin, when the browser sends one, names this host)."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                return False
        elif origin == "null":
            return False
        return isinstance(token, str) and hmac.compare_digest(
            token.encode(), self.csrf_token(moderator).encode()
        )


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, colon, password = decoded.partition(":")
    return (name, password) if colon else None
