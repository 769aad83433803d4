"""The review page for moderators (``guard.review_app``): lists, decisions, a check of an
uploaded image, and the actions that teach the lists. Needs the ``review`` extra (Jinja2,
python-multipart); :mod:`guard.review.modes` needs neither, so the middleware may import it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guard.review.quarantine import Quarantine

if TYPE_CHECKING:
    from guard.review.app import review_app


def __getattr__(name: str) -> Any:
    if name == "review_app":
        from guard.review import app

        return app.review_app
    raise AttributeError(f"module 'guard.review' has no attribute {name!r}")


__all__ = ["Quarantine", "review_app"]
