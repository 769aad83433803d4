"""A store's worker-local mirrors (guard.mirror): loaded in the background, trusted only at the
(incarnation, version) they were loaded at.

A lookup through a mirror costs one MULTI round trip that checks both and fetches the records to
return; a stale mirror answers nothing (the lookup goes to the Redis index) and is reloaded, at
most once per ``retry_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ResponseError

from guard.errors import StoreError
from guard.mirror import RECORD_SIZE, Mirror, Ranked
from guard.spelling import to_signed
from guard.store.connection import Gone, Recreated, is_cluster, read_in_one_step, translated
from guard.store.index import INLINE_QUERIES, Query, run
from guard.store.records import ListMeta, entries_from_json, keys, text
from guard.types import Match

logger = logging.getLogger("guard")


@dataclass(frozen=True)
class MirrorSettings:
    """The worker-local mirror of each list a store looks up (see guard.mirror).

    A worker holds about 73 bytes per entry at 4 bands (73 MB per million).
    Lists with more than ``max_entries`` aHashes stay on the Redis index. After a change, a
    mirror is reloaded in the background at most once per ``retry_seconds``; lookups use the
    Redis index until it is ready.
    """

    max_entries: int = 2_000_000
    retry_seconds: float = 1.0


DEFAULT_MIRROR = MirrorSettings()


class MirrorCache:
    """The loaded mirrors of one store, and the background loads under way."""

    def __init__(self, client: aioredis.Redis, settings: MirrorSettings | None) -> None:
        self._client = client
        self.settings = settings
        self.mirrors: dict[str, Mirror] = {}
        self._tried: dict[str, float] = {}  # list -> monotonic time of the last refresh
        self._refreshes: dict[str, asyncio.Task[Mirror | None]] = {}
        self._snapshot_warned: set[str] = set()  # lists whose snapshot disagrees: said once

    def forget(self, list_name: str) -> None:
        self.mirrors.pop(list_name, None)

    async def close(self) -> None:
        """Cancel the loads under way."""
        for task in self._refreshes.values():
            task.cancel()
        await asyncio.gather(*self._refreshes.values(), return_exceptions=True)
        self._refreshes.clear()

    async def refresh(self, list_name: str, meta: ListMeta) -> Mirror | None:
        """Load the list's mirror now (or wait for the load under way)."""
        task = self._refreshes.get(list_name)
        if task is None:
            task = self._start_refresh(list_name, meta)
        return await asyncio.shield(task)

    def mirror_for(self, list_name: str, meta: ListMeta) -> Mirror | None:
        """The list's mirror if one is loaded; else start loading one (at most once per
        ``retry_seconds``) and answer from the Redis index meanwhile."""
        if self.settings is None:
            return None
        mirror = self.mirrors.get(list_name)
        if mirror is not None:
            return mirror
        last = self._tried.get(list_name)
        if list_name not in self._refreshes and (
            last is None or time.monotonic() - last >= self.settings.retry_seconds
        ):
            self._start_refresh(list_name, meta)
        return None

    def _start_refresh(self, list_name: str, meta: ListMeta) -> asyncio.Task[Mirror | None]:
        self._tried[list_name] = time.monotonic()
        task = asyncio.ensure_future(self._load(list_name, meta))
        self._refreshes[list_name] = task
        task.add_done_callback(lambda _: self._refreshes.pop(list_name, None))
        return task

    async def _load(self, list_name: str, meta: ListMeta) -> Mirror | None:
        names = keys(list_name)
        assert self.settings is not None
        try:
            async with translated():
                size = int(await self._client.hget(names.meta, "entries") or 0)
                if size > self.settings.max_entries:
                    return None
                version, incarnation, snapshot, size = await read_together(
                    self._client,
                    lambda pipe: (
                        pipe.get(names.ver),
                        pipe.hget(names.meta, "incarnation"),
                        pipe.get(names.snap),
                        pipe.hget(names.meta, "entries"),
                    ),
                )
        except StoreError:
            return None  # the lookup that needs Redis reports the failure
        snapshot = snapshot or b""
        if len(snapshot) != RECORD_SIZE * int(size or 0):
            if list_name in self._snapshot_warned:
                return None
            self._snapshot_warned.add(list_name)
            logger.warning(
                "guard: list %r has %d entries but its snapshot holds %d: lookups use the Redis "
                "index only (guard lists --verify %s)",
                list_name,
                int(size or 0),
                len(snapshot) // RECORD_SIZE,
                list_name,
            )
            return None
        mirror = await asyncio.to_thread(
            Mirror.from_snapshot,
            snapshot,
            meta.layout,
            int(version or 0),
            text(incarnation or b""),
        )
        self.mirrors[list_name] = mirror
        return mirror

    async def lookup(
        self,
        list_name: str,
        meta: ListMeta,
        mirror: Mirror,
        queries: Sequence[Query],
        radius: int,
        confirm_radius: int,
        limit: int | None,
    ) -> list[Match] | None:
        """Matches from ``mirror``, best first, or None if it is stale (then a reload starts, as
        often as ``retry_seconds`` allows).

        The incarnation and version check and the entries' records come in one MULTI, so the
        answer is exact for the (incarnation, version) the mirror holds, or not used at all.
        Raises :class:`Gone` if the list has no metadata, :class:`Recreated` if it is not the
        incarnation ``meta`` describes.
        """
        many = len(queries) > INLINE_QUERIES
        pairs = [(q[0], q[1]) for q in queries]
        ranked = await run(many, mirror.rank, pairs, radius, confirm_radius, limit)
        return await self._fetch_ranked(list_name, meta, mirror, ranked, queries, limit)

    async def _fetch_ranked(
        self,
        list_name: str,
        meta: ListMeta,
        mirror: Mirror,
        ranked: Ranked,
        queries: Sequence[Query],
        limit: int | None,
    ) -> list[Match] | None:
        chosen = range(len(ranked) if limit is None else min(limit, len(ranked)))
        fields = list(dict.fromkeys(int(mirror.ahashes[ranked.positions[i]]) for i in chosen))
        names = keys(list_name)

        def reads(pipe: Any) -> None:
            pipe.exists(names.meta)
            pipe.hget(names.meta, "incarnation")
            pipe.get(names.ver)
            if fields:
                pipe.hmget(names.entries, [to_signed(h) for h in fields])

        async with translated():
            exists, incarnation, *replies = await read_together(self._client, reads)
        if not exists:
            raise Gone(list_name)
        incarnation = text(incarnation or b"")
        if incarnation != meta.incarnation:
            raise Recreated
        if (incarnation, int(replies[0] or 0)) != (mirror.incarnation, mirror.version):
            if self.mirrors.get(list_name) is mirror:
                del self.mirrors[list_name]
            self.mirror_for(list_name, meta)  # reload it (rate-limited)
            return None
        records = {
            ahash: entries_from_json(ahash, record)
            for ahash, record in zip(fields, replies[1] if fields else [], strict=True)
            if record is not None
        }
        matches = []
        for i in chosen:
            position = ranked.positions[i]
            ahash = int(mirror.ahashes[position])
            phash = int(mirror.phashes[position]) if mirror.has_phash[position] else None
            entry = next((e for e in records.get(ahash, []) if e.phash == phash), None)
            if entry is None:
                continue  # cannot happen at a matching version; never invent an entry
            query = queries[int(ranked.query[i])]
            matches.append(
                Match(
                    list=list_name,
                    entry=entry,
                    distance=int(ranked.distance[i]),
                    phash_distance=None if phash is None else int(ranked.phash_distance[i]),
                    confirmed=bool(ranked.confirmed[i]),
                    transform=query[2],
                    frame=query[3],
                )
            )
        return matches


async def read_together(client: aioredis.Redis, reads: Callable[[Any], object]) -> list[Any]:
    """Run ``reads`` (queued on a pipeline) in one MULTI: one consistent (incarnation, version)
    with the records read.

    A Redis over ``maxmemory`` refuses every command queued in a MULTI, reads included (Redis 6
    and 7): lookups would then fail until memory is freed. So under OOM the reads run again as a
    plain pipeline. A full ``noeviction`` Redis refuses the writes that could come between them,
    except removals, which at worst take a record away: the answer then skips that entry, as it
    skips one removed between two round trips. On a Redis Cluster: one Lua call instead
    (:func:`guard.store.connection.read_in_one_step`).
    """
    if is_cluster(client):
        return await read_in_one_step(client, reads)
    pipe = client.pipeline(transaction=True)
    reads(pipe)
    try:
        return list(await pipe.execute())
    except ResponseError as error:
        # redis-py turns "-OOM ..." into OutOfMemoryError and drops the "OOM" from the text.
        if not isinstance(error, OutOfMemoryError) and "maxmemory" not in str(error):
            raise
    pipe = client.pipeline(transaction=False)
    reads(pipe)
    return list(await pipe.execute())
