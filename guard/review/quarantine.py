"""An optional quarantine of flagged uploads' pictures, so a moderator can see what was flagged.

Off unless a :class:`Quarantine` is given to the middleware (``GuardMiddleware(quarantine=...)``)
and to the review page (``review_app(quarantine=...)``). When on, the images of a request
flagged or shadow-decided are kept in Redis under ``guard:quarantine:<request id>`` for ``ttl``
seconds (then Redis deletes them), if together they hold at most ``max_bytes``. Rejected
uploads are never kept: they are listed pictures, which nobody should store again. The review
page serves them to signed-in moderators only. docs/review.md says what this means for privacy.

This module imports no Starlette or Jinja2: the middleware uses it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from guard.errors import StoreError
from guard.store import Store

logger = logging.getLogger("guard")

#: The decisions whose pictures are kept.
KEPT_ACTIONS = frozenset({"flag", "shadow-reject", "shadow-flag"})
KEY_PREFIX = "guard:quarantine:"


@dataclass(frozen=True)
class Quarantine:
    """Where and how long flagged pictures are kept."""

    #: Seconds a picture is kept (Redis deletes it then).
    ttl: int = 7 * 86400
    #: Bytes of one request's images kept at most; a larger request keeps none.
    max_bytes: int = 5_000_000

    def __post_init__(self) -> None:
        if not (isinstance(self.ttl, int) and self.ttl > 0):
            raise ValueError(f"Quarantine.ttl must be positive seconds, not {self.ttl!r}")
        if not (isinstance(self.max_bytes, int) and self.max_bytes > 0):
            raise ValueError(f"Quarantine.max_bytes must be positive, not {self.max_bytes!r}")

    async def keep(self, store: Store, request_id: str, images: list[bytes]) -> bool:
        """Keep the request's images; False if they are too large or the store failed (the
        request goes on either way: the quarantine never decides anything)."""
        if not images or sum(map(len, images)) > self.max_bytes:
            return False
        try:
            await store.keep_pictures(KEY_PREFIX + request_id, images, self.ttl)
        except StoreError as error:
            logger.warning("guard: flagged upload %s not quarantined: %s", request_id, error)
            return False
        return True

    async def pictures(self, store: Store, request_id: str) -> list[bytes]:
        """The kept images of a request (none: never kept, or expired)."""
        return await store.kept_pictures(KEY_PREFIX + request_id)
