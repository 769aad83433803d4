"""The decision stream's Redis calls: append a batch in one round trip, read back a range.

Records are flat ``{field: text}`` mappings (:mod:`guard.events` makes and reads them); an
entry's stream id (``<milliseconds>-<sequence>``) orders them in time. One key per deployment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from guard.store.records import text

#: A record as read back: its stream id and its fields.
StreamEntry = tuple[str, dict[str, str]]

#: The largest sequence number of a stream id (an unsigned 64-bit integer).
_MAX_SEQUENCE = 2**64 - 1


async def append(
    client: aioredis.Redis,
    stream: str,
    records: Sequence[Mapping[str, str]],
    max_length: int,
) -> None:
    """XADD each record with ``MAXLEN ~ max_length``, pipelined: one round trip per batch.

    The approximate trim lets Redis drop whole macro nodes, so the stream keeps at least
    ``max_length`` records and at most about a node more (100 by default).
    """
    pipe = client.pipeline(transaction=False)
    for record in records:
        fields: dict[Any, Any] = dict(record)
        pipe.xadd(stream, fields, maxlen=max_length, approximate=True)
    await pipe.execute()


async def latest(
    client: aioredis.Redis, stream: str, count: int, before: str | None = None
) -> list[StreamEntry]:
    """Up to ``count`` records before the id ``before`` (default: the newest), newest first
    (XREVRANGE). A missing stream has none."""
    end = "+" if before is None else previous_id(before)
    if end is None:
        return []
    replies: Any = await client.xrevrange(stream, max=end, min="-", count=count)
    return [_entry(reply) for reply in replies]


async def after(
    client: aioredis.Redis, stream: str, last_id: str, count: int, block_ms: int | None = None
) -> list[StreamEntry]:
    """Up to ``count`` records with ids after ``last_id``, oldest first (XREAD). With
    ``block_ms``, waits that long for one when there is none yet (XREAD BLOCK); a missing
    stream has none (and is waited on like an empty one)."""
    replies: Any = await client.xread({stream: last_id}, count=count, block=block_ms)
    if not replies:
        return []
    [(_, entries)] = replies
    return [_entry(reply) for reply in entries]


async def last_id(client: aioredis.Redis, stream: str) -> str:
    """The newest record's id, or ``0-0`` for an empty or missing stream (what follows it is
    every new record)."""
    newest = await latest(client, stream, 1)
    return newest[0][0] if newest else "0-0"


def previous_id(stream_id: str) -> str | None:
    """The largest id before ``stream_id`` (exclusive bounds without Redis 6.2's ``(``), or
    None before ``0-0``."""
    milliseconds, _, sequence = stream_id.partition("-")
    ms, seq = int(milliseconds), int(sequence or 0)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{_MAX_SEQUENCE}"
    return None


def _entry(reply: Any) -> StreamEntry:
    stream_id, fields = reply
    return text(stream_id), {text(k): text(v) for k, v in fields.items()}
