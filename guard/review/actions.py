"""What a moderator changes, each change written to the decision stream with who made it.

The records share the stream with the middleware's decisions (``guard events`` shows them):
action ``review-add``, ``review-allow``, ``review-remove`` or ``review-mode``, the list, the
entry's source and label, ``by`` (the moderator) and, for a mode switch, ``mode``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import get_args

from guard.config import Config
from guard.errors import GuardError, InvalidHash
from guard.events import SCHEMA
from guard.hashing import from_hex, to_hex
from guard.store import Store
from guard.store.allow import owner_of
from guard.types import Entry, ReviewAction

ACTIONS: tuple[ReviewAction, ...] = get_args(ReviewAction)


class ActionError(GuardError):
    """A form the page cannot act on (said to the moderator, never a traceback)."""


def frame_hashes(text: str) -> list[tuple[int, int]]:
    """The ``ahash:phash`` pairs (hex, comma-separated) a check's form carries."""
    pairs = []
    for item in text.split(","):
        ahash, colon, phash = item.strip().partition(":")
        try:
            pairs.append((from_hex(ahash), from_hex(phash)))
        except (InvalidHash, ValueError):
            raise ActionError(f"not an aHash:pHash pair: {item.strip()[:40]!r}") from None
        if not colon:
            raise ActionError(f"not an aHash:pHash pair: {item.strip()[:40]!r}")
    return pairs


def hashes_field(pairs: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{to_hex(a)}:{to_hex(p)}" for a, p in pairs)


async def record(
    store: Store, config: Config, action: str, by: str, path: str, **details: str | None
) -> None:
    """Append one moderator action to the decision stream (when the config keeps one)."""
    operations = config.operations
    if not operations.events:
        return
    fields = {
        "schema": SCHEMA,
        "action": action,
        "request_id": uuid.uuid4().hex,
        "route": path,
        "method": "POST",
        "time": repr(time.time()),
        "by": by,
    }
    fields.update({k: v for k, v in details.items() if v})
    await store.append_events(
        operations.events_stream, [fields], max_length=operations.events_max_length
    )


def entries(pairs: Sequence[tuple[int, int]], source: str, label: str | None) -> list[Entry]:
    return [Entry(ahash, phash, source, label or None) for ahash, phash in pairs]


async def add(
    store: Store,
    config: Config,
    list_name: str,
    pairs: Sequence[tuple[int, int]],
    *,
    by: str,
    path: str,
    source: str,
    label: str | None,
    allow: bool,
) -> str:
    """Add the image's frames to the list, or to its allow-list; returns what was done."""
    bands = config.policy(list_name).bands
    new = entries(pairs, source, label)
    if allow:
        result = await store.allow(list_name, new, bands=bands)
    else:
        result = await store.add(list_name, new, bands=bands)
    kind = "review-allow" if allow else "review-add"
    await record(store, config, kind, by, path, list=list_name, source=source, label=label)
    where = f"the allow-list of {list_name}" if allow else list_name
    return f"{result.added} entries added to {where} ({result.present} already there)"


async def remove(
    store: Store,
    config: Config,
    stored_name: str,
    ahash: int,
    phash: int | None,
    *,
    by: str,
    path: str,
) -> str:
    removed = await store.remove(stored_name, ahash, phash)
    owner = owner_of(stored_name)
    await record(
        store,
        config,
        "review-remove",
        by,
        path,
        list=owner or stored_name,
        allowed_by="allow-list" if owner else None,
        source=to_hex(ahash),
    )
    return f"{removed} entries removed from {stored_name}"


async def switch_mode(
    store: Store, config: Config, list_name: str, mode: str | None, *, by: str, path: str
) -> str:
    await store.set_mode(list_name, mode)
    shown = mode or f"the config's ({config.policy(list_name).mode})"
    await record(store, config, "review-mode", by, path, list=list_name, mode=mode or "config")
    return f"{list_name} is now in mode {shown}"
