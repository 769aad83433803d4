"""A list's change log: how a worker's mirror follows a change without loading the list again.

Every script that changes a list's version (add, remove, disable, enable: scripts/changes.lua)
appends one item to the stream ``guard:{<list>}:changes`` in the same step: its id is the new
version (``<version>-0``), its fields the snapshot records (guard.mirror.RECORD) the change added
to the index and took out of it. About the last :data:`CHANGES_KEPT` versions are kept (at most
a few MB: a change adds at most one write batch of records). A mirror at version ``v`` catches up
with one XRANGE from ``v + 1`` and a few records applied in memory (guard.mirror_patch),
however big the list: a one-entry change costs what one entry costs. A mirror that finds a gap
(versions trimmed, or written by a guard that kept no log) loads the snapshot again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from guard.store.connection import translated
from guard.store.records import changes_key

#: About how many versions a list's log keeps (Redis trims whole stream nodes: a few more).
CHANGES_KEPT = 256


@dataclass(frozen=True)
class Change:
    """One item of the log: the version a change made, and its snapshot records."""

    version: int
    added: bytes
    removed: bytes


async def changes_since(
    client: aioredis.Redis, list_name: str, version: int, wanted: int
) -> list[Change] | None:
    """The changes that take a mirror at ``version`` to ``wanted`` (or further), oldest first;
    None if the log cannot (a version in between is missing)."""
    async with translated():
        try:
            reply: list[Any] = (
                await client.xrange(changes_key(list_name), min=f"{version + 1}-0", max="+")
                or []
            )
        except ResponseError:  # the key is no stream (written by hand): no log to follow
            return None
    changes = [
        Change(
            version=int(position.split(b"-")[0]),
            added=fields.get(b"add", b""),
            removed=fields.get(b"del", b""),
        )
        for position, fields in reply
    ]
    expected = version + 1
    for change in changes:
        if change.version != expected:
            return None
        expected += 1
    return changes if expected - 1 >= wanted else None
