"""A store's worker-local mirrors (guard.mirror): loaded in the background, trusted only at the
(incarnation, version) they were loaded at or caught up to.

A lookup through a mirror costs one MULTI round trip that checks both and fetches the records to
return. A mirror found behind catches up from the list's change log (guard.store.changes): one
more round trip and the changed records applied in memory, then the lookup runs again. Only a
mirror the log cannot bring up to date (idle for longer than the log keeps changes, or another
incarnation) loads the whole snapshot again; lookups wait for that load (within their own
deadline) rather than walk the Redis index, which takes seconds on big lists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from guard.errors import StoreError
from guard.mirror import RECORD_SIZE, Mirror, Ranked
from guard.mirror_patch import PatchedMirror
from guard.store.changes import changes_since
from guard.store.connection import Gone, Recreated, read_together, translated
from guard.store.entry_reads import Labels, RecordsOf
from guard.store.index import INLINE_QUERIES, Query, run
from guard.store.records import ListMeta, keys, text
from guard.store.shared_mirrors import SharedMirrors, default_directory
from guard.store.snapshot import live_records, tombstones_key
from guard.types import Match

logger = logging.getLogger("guard")


@dataclass(frozen=True)
class MirrorSettings:
    """The worker-local mirror of each list a store looks up (see guard.mirror).

    A mirror holds about 66 bytes per entry at a million (one copy per machine when shared).
    Lists with more than ``max_entries`` aHashes stay on the Redis index. A mirror that failed to
    load is tried again at most once per ``retry_seconds``; lookups use the Redis index
    meanwhile.
    """

    max_entries: int = 20_000_000
    retry_seconds: float = 1.0
    #: One copy per machine: mirrors are shared with the machine's other processes through
    #: files (guard.store.shared_mirrors); False: each process builds its own.
    shared: bool = True
    #: Where those files go (None: guard.store.shared_mirrors.default_directory()).
    shared_directory: Path | None = None


DEFAULT_MIRROR = MirrorSettings()

#: Mirrors up to this many entries answer inline; bigger ones in a worker thread, so that the
#: event loop is never held for milliseconds (the real query on 100,000 entries: about 1 ms
#: p50 and 4 ms p99, bench/lookup.py --in-process).
INLINE_ENTRIES = 10_000
#: Rounds of (look up, find the list changed, catch up) before a lookup gives the mirror up.
_CATCH_UP_TRIES = 3


class MirrorCache:
    """The loaded mirrors of one store, and the background loads under way."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: MirrorSettings | None,
        location: Callable[[], str] = str,
    ) -> None:
        self._client = client
        self.settings = settings
        self._shared = None
        if settings is not None and settings.shared:
            directory = settings.shared_directory or default_directory()
            self._shared = SharedMirrors(directory, location)
        self.mirrors: dict[str, PatchedMirror] = {}
        self.labels = Labels()  # the store's label cache (lookups and the review page)
        self._tried: dict[str, float] = {}  # list -> when a load last gave no mirror
        self._refreshes: dict[str, asyncio.Task[PatchedMirror | None]] = {}
        self._catch_ups: dict[str, asyncio.Task[PatchedMirror | None]] = {}
        self._snapshot_warned: set[str] = set()  # lists whose snapshot disagrees: said once

    def forget(self, list_name: str) -> None:
        self.mirrors.pop(list_name, None)

    async def close(self) -> None:
        """Cancel the loads under way."""
        tasks = [*self._refreshes.values(), *self._catch_ups.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refreshes.clear()
        self._catch_ups.clear()

    async def refresh(self, list_name: str, meta: ListMeta) -> PatchedMirror | None:
        """Load the list's mirror now (or wait for the load under way)."""
        task = self._refreshes.get(list_name)
        if task is None:
            task = self._start_refresh(list_name, meta)
        return await asyncio.shield(task)

    async def mirror_for(self, list_name: str, meta: ListMeta) -> PatchedMirror | None:
        """The list's mirror: the loaded one, or the one being loaded (waited for: the caller's
        deadline bounds the wait, and the load goes on for the next request). None when there
        is none to have (mirrors off, a list over ``max_entries``, a load that failed less than
        ``retry_seconds`` ago): the lookup then uses the Redis index."""
        if self.settings is None:
            return None
        mirror = self.mirrors.get(list_name)
        if mirror is not None:
            return mirror
        if list_name not in self._refreshes:
            last = self._tried.get(list_name)
            if last is not None and time.monotonic() - last < self.settings.retry_seconds:
                return None
            self._start_refresh(list_name, meta)
        return await asyncio.shield(self._refreshes[list_name])

    def _start_refresh(self, list_name: str, meta: ListMeta) -> asyncio.Task[PatchedMirror | None]:
        task = asyncio.ensure_future(self._load(list_name, meta))
        self._refreshes[list_name] = task
        task.add_done_callback(lambda done: self._loaded(list_name, done))
        return task

    def _loaded(self, list_name: str, task: asyncio.Task[PatchedMirror | None]) -> None:
        """A load ended: only one that gave no mirror holds the next off for retry_seconds."""
        self._refreshes.pop(list_name, None)
        if not task.cancelled() and task.exception() is None and task.result() is not None:
            self._tried.pop(list_name, None)
        else:
            self._tried[list_name] = time.monotonic()

    async def _load(self, list_name: str, meta: ListMeta) -> PatchedMirror | None:
        base = await self._load_base(list_name, meta)
        if base is None:
            return None
        mirror = PatchedMirror(base, version=base.version)
        self.mirrors[list_name] = mirror
        return mirror

    async def _load_base(self, list_name: str, meta: ListMeta) -> Mirror | None:
        """The list's mirror at its current version: the copy another process of this machine
        shared, else built from the snapshot (and shared). None: see :meth:`mirror_for`."""
        names = keys(list_name)
        assert self.settings is not None
        try:
            async with translated():
                size, version, incarnation = await read_together(
                    self._client,
                    lambda pipe: (
                        pipe.hget(names.meta, "entries"),
                        pipe.get(names.ver),
                        pipe.hget(names.meta, "incarnation"),
                    ),
                )
                if int(size or 0) > self.settings.max_entries:
                    return None
                if self._shared is not None:
                    shared = await asyncio.to_thread(
                        self._shared.open, list_name, text(incarnation or b""), int(version or 0)
                    )
                    if shared is not None:
                        return shared
                # Again, with the snapshot: all five of one version.
                version, incarnation, snapshot, tombstones, size = await read_together(
                    self._client,
                    lambda pipe: (
                        pipe.get(names.ver),
                        pipe.hget(names.meta, "incarnation"),
                        pipe.get(names.snap),
                        pipe.get(tombstones_key(list_name)),
                        pipe.hget(names.meta, "entries"),
                    ),
                )
        except StoreError:
            return None  # the lookup that needs Redis reports the failure
        snapshot, tombstones = snapshot or b"", tombstones or b""
        if len(snapshot) - len(tombstones) != RECORD_SIZE * int(size or 0):
            if list_name in self._snapshot_warned:
                return None
            self._snapshot_warned.add(list_name)
            logger.warning(
                "guard: list %r has %d entries but its snapshot holds %d: lookups use the Redis "
                "index only (guard lists --verify %s)",
                list_name,
                int(size or 0),
                (len(snapshot) - len(tombstones)) // RECORD_SIZE,
                list_name,
            )
            return None
        try:
            return await asyncio.to_thread(
                self._build,
                list_name,
                snapshot,
                tombstones,
                meta.layout,
                int(version or 0),
                text(incarnation or b""),
            )
        except (ValueError, MemoryError) as error:
            logger.warning(
                "guard: cannot build the mirror of list %r (%s): lookups use the Redis index",
                list_name,
                error,
            )
            return None

    def _build(self, list_name: str, snapshot: bytes, tombstones: bytes, *args: Any) -> Mirror:
        """Build a mirror from its snapshot less its tombstones (in a worker thread) and share
        it."""
        live = live_records(snapshot, tombstones)
        return self._share(list_name, Mirror.from_snapshot(live, *args))

    def _share(self, list_name: str, mirror: Mirror) -> Mirror:
        """The shared copy of ``mirror`` (published now unless another process did): this
        process maps it too and lets its own go, one copy per machine. ``mirror`` itself when
        not sharing, or when the copy cannot be written or read."""
        if self._shared is None:
            return mirror
        self._shared.publish(list_name, mirror)
        return self._shared.open(list_name, mirror.incarnation, mirror.version) or mirror

    def _patch(
        self,
        list_name: str,
        mirror: PatchedMirror,
        records: list[tuple[bytes, bytes]],
        version: int,
    ) -> PatchedMirror:
        """``mirror`` with the changes applied (in a worker thread); merged into a new mirror,
        that one is shared as a loaded one is."""
        patched = mirror.patched(records, version)
        if patched.base is mirror.base:
            return patched
        return PatchedMirror(self._share(list_name, patched.base), version=version)

    async def lookup(
        self,
        list_name: str,
        meta: ListMeta,
        mirror: PatchedMirror,
        queries: Sequence[Query],
        radius: int,
        confirm_radius: int,
        limit: int | None,
    ) -> list[Match] | None:
        """Matches from ``mirror`` (caught up first if the list changed since), best first, or
        None if it could not be brought up to date (the caller then uses the Redis index).

        The incarnation and version check and the entries' records come in one MULTI, so the
        answer is exact for the (incarnation, version) the mirror holds, or not used at all.
        Raises :class:`Gone` if the list has no metadata, :class:`Recreated` if it is not the
        incarnation ``meta`` describes.
        """
        pairs = [(q[0], q[1]) for q in queries]
        for _ in range(_CATCH_UP_TRIES):
            # Off the event loop once the work could take a millisecond.
            heavy = len(queries) > INLINE_QUERIES or len(mirror) > INLINE_ENTRIES
            ranked = await run(heavy, mirror.rank, pairs, radius, confirm_radius, limit)
            found, version = await self._fetch_ranked(
                list_name, meta, mirror, ranked, queries, limit
            )
            if found is not None:
                return found
            caught_up = await self._catch_up(list_name, meta, mirror, version)
            if caught_up is None:
                return None
            mirror = caught_up
        return None

    async def _catch_up(
        self, list_name: str, meta: ListMeta, mirror: PatchedMirror, version: int
    ) -> PatchedMirror | None:
        """The list's mirror at ``version`` or later: ``mirror`` with the change log applied,
        else (a gap in the log) the snapshot loaded again. One catch-up per list at a time:
        concurrent lookups wait for it."""
        current = self.mirrors.get(list_name)
        if current is not None and current is not mirror and current.version >= version:
            return current  # another lookup caught up meanwhile
        task = self._catch_ups.get(list_name)
        if task is None:
            task = asyncio.ensure_future(self._apply_changes(list_name, meta, mirror, version))
            self._catch_ups[list_name] = task
            task.add_done_callback(lambda _: self._catch_ups.pop(list_name, None))
        caught_up = await asyncio.shield(task)
        if caught_up is not None:
            return caught_up
        if self.mirrors.get(list_name) is mirror:
            del self.mirrors[list_name]
        return await self.refresh(list_name, meta)

    async def _apply_changes(
        self, list_name: str, meta: ListMeta, mirror: PatchedMirror, version: int
    ) -> PatchedMirror | None:
        if mirror.incarnation != meta.incarnation:
            return None
        changes = await changes_since(self._client, list_name, mirror.version, version)
        if changes is None:
            return None
        records = [(change.added, change.removed) for change in changes]
        # In a thread: even one record rebuilds the small mirror of everything added since the
        # load (up to 1/16 of the list), or merges it all into a new one.
        patched = await asyncio.to_thread(
            self._patch, list_name, mirror, records, changes[-1].version
        )
        self.mirrors[list_name] = patched
        return patched

    async def _fetch_ranked(
        self,
        list_name: str,
        meta: ListMeta,
        mirror: PatchedMirror,
        ranked: Ranked,
        queries: Sequence[Query],
        limit: int | None,
    ) -> tuple[list[Match] | None, int]:
        """The matches ``ranked`` names, with the list's version; None for the matches if the
        list is not at the mirror's version."""
        chosen = range(len(ranked) if limit is None else min(limit, len(ranked)))
        records = RecordsOf(
            list_name, (mirror.hashes_at(int(ranked.positions[i]))[0] for i in chosen)
        )
        names = keys(list_name)

        def reads(pipe: Any) -> None:
            pipe.exists(names.meta)
            pipe.hget(names.meta, "incarnation")
            pipe.get(names.ver)
            records.queue(pipe)

        async with translated():
            exists, incarnation, *replies = await read_together(self._client, reads)
        if not exists:
            raise Gone(list_name)
        incarnation = text(incarnation or b"")
        if incarnation != meta.incarnation:
            raise Recreated
        version = int(replies[0] or 0)
        if (incarnation, version) != (mirror.incarnation, mirror.version):
            return None, version
        replies = replies[1:]
        async with translated():
            labels = await self.labels.resolve(
                self._client, list_name, incarnation, records.records(replies)
            )
        found = records.entries(replies, labels)
        matches = []
        for i in chosen:
            ahash, phash = mirror.hashes_at(int(ranked.positions[i]))
            entry = next((e for e in found.get(ahash, []) if e.phash == phash), None)
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
        return matches, version
