"""Refusal bodies people can read: JSON for APIs, a small HTML page for browsers.

A browser's form post that guard refuses would otherwise show raw JSON. The body follows the
request's ``Accept`` header (RFC 9110 12.5.1, quality values included): HTML when the client
prefers ``text/html`` to ``application/json``, JSON otherwise (``*/*``, no header, or a tie:
APIs and ``fetch()`` keep the JSON they parse). Every body carries the request id that the
decision record and the ``X-Request-ID`` header carry, so a user's report can be found in the
logs and the decision stream.

The page can be replaced: ``operations.refusal_page`` names an HTML file (a
:class:`string.Template` with $status, $error, $list and $request_id, HTML-escaped), or the app
passes ``GuardMiddleware(render_refusal=...)``, a callable that returns its own content type and
body (or None for guard's).
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guard.errors import ConfigError

#: Bytes of a refusal page template; a bigger file is refused when the config is read.
MAX_PAGE_BYTES = 262_144

_DEFAULT_PAGE = string.Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 3rem auto; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.4rem; }
.id { color: #666; font-size: 0.85rem; }
</style>
</head>
<body>
<h1>$title</h1>
<p>$explanation</p>
<p class="id">Reference: <code>$request_id</code> (status $status)</p>
</body>
</html>
"""
)

#: What a person is told for each status class; the error text follows for the details.
_TITLES = {
    403: ("This upload was not accepted", "The image matches one this site does not accept."),
    408: ("The upload took too long", "The upload did not arrive in time. Please try again."),
    413: ("The upload is too large", "Please upload a smaller image."),
    415: ("This file type is not accepted", "Please upload a JPEG, PNG, GIF, WebP or BMP image."),
    422: ("The image could not be read", "The file looks damaged. Please try another one."),
    503: (
        "Uploads are paused for a moment",
        "The upload could not be checked right now. Please try again shortly.",
    ),
}


@dataclass(frozen=True)
class RefusalView:
    """What a refusal page may show: never a hash or a distance (no oracle for evaders)."""

    status: int
    error: str
    request_id: str
    #: The list that rejected the upload (rejections only).
    list: str | None = None


#: ``render_refusal``: (view, wants_html) -> (content type, body), or None for guard's own.
RefusalRenderer = Callable[[RefusalView, bool], "tuple[str, bytes] | None"]


def prefers_html(accept: str) -> bool:
    """True when ``accept`` ranks ``text/html`` above ``application/json``.

    Each media range's quality counts (``q=0`` excludes); a more specific range overrides a
    wider one (``text/*`` over ``*/*``). A tie goes to JSON.
    """
    html_q = _quality(accept, "text", "html")
    json_q = _quality(accept, "application", "json")
    return html_q > json_q


def _quality(accept: str, kind: str, subtype: str) -> float:
    """The quality ``accept`` gives ``kind/subtype``: its most specific matching range's."""
    best: tuple[int, float] = (-1, 0.0)  # (specificity, quality)
    for item in accept.split(","):
        media, *params = (piece.strip() for piece in item.split(";"))
        if "/" not in media:
            continue
        main, _, sub = media.lower().partition("/")
        if main == kind and sub == subtype:
            specificity = 2
        elif main == kind and sub == "*":
            specificity = 1
        elif main == "*" and sub == "*":
            specificity = 0
        else:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0  # a malformed q counts as "not acceptable"
        if specificity > best[0]:
            best = (specificity, quality)
    return best[1]


class RefusalPages:
    """Turns a refusal into a body: JSON, guard's page, the configured template, or the app's
    renderer (tried first)."""

    def __init__(
        self, template_path: str | None = None, renderer: RefusalRenderer | None = None
    ) -> None:
        self.renderer = renderer
        self.template = _DEFAULT_PAGE if template_path is None else load_template(template_path)

    def render(self, view: RefusalView, accept: str) -> tuple[str, bytes]:
        """(content type, body) for ``view`` as the request's ``Accept`` header asks."""
        wants_html = prefers_html(accept)
        if self.renderer is not None:
            custom = self.renderer(view, wants_html)
            if custom is not None:
                return custom
        if not wants_html:
            body = {"error": view.error, "request_id": view.request_id}
            if view.list is not None:
                body["list"] = view.list
            return "application/json", json.dumps(body).encode()
        title, explanation = _TITLES.get(
            view.status, ("The upload could not be accepted", "Please try again.")
        )
        page = self.template.safe_substitute(
            title=html.escape(title),
            explanation=html.escape(explanation),
            status=str(view.status),
            error=html.escape(view.error),
            list=html.escape(view.list or ""),
            request_id=html.escape(view.request_id),
        )
        return "text/html; charset=utf-8", page.encode()


def load_template(path: str) -> string.Template:
    """The refusal page at ``path``; :class:`ConfigError` naming the key when it is unusable."""
    key = "operations.refusal_page"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}", key=key) from None
    if len(data) > MAX_PAGE_BYTES:
        raise ConfigError(f"{path} is over {MAX_PAGE_BYTES} bytes", key=key)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", key=key) from None
    template = string.Template(text)
    if not template.is_valid():
        raise ConfigError(
            f"{path} has a $ that starts no placeholder (write $$ for a dollar sign)", key=key
        )
    return template
