"""What a store knows of each list's metadata: cached until the list is seen re-created or gone,
so a lookup costs no metadata round trip, and a list that vanishes is told from one that never
existed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from guard.errors import StoreError, StoreInconsistent, UnknownList
from guard.hashing import HASH_VERSION
from guard.store.allow import validate_stored_name
from guard.store.connection import Gone, Recreated, translated
from guard.store.records import LOADING, ListMeta, drop_marker, keys, text

T = TypeVar("T")


class Catalog:
    """The metadata of the lists one store has read. ``on_forget`` drops whatever else the store
    holds about a list (its mirror) when the list is seen re-created or gone."""

    def __init__(self, client: aioredis.Redis, on_forget: Callable[[str], object]) -> None:
        self._client = client
        self._on_forget = on_forget
        self.cached: dict[str, ListMeta] = {}
        #: Lists this store has read: one that disappears is data loss, not "no such list" (H37).
        self.seen: set[str] = set()

    async def meta(self, list_name: str) -> ListMeta:
        """The list's metadata (cached).

        :class:`UnknownList` if there is none, :class:`StoreInconsistent` if this store had read
        the list before (it vanished).
        """
        cached = self.cached.get(list_name)
        if cached is not None:
            return cached
        meta = await self.read(list_name)
        if meta is None and list_name in self.seen:
            raise await self.vanished(list_name)
        if meta is None:
            raise UnknownList(f"no list named {list_name!r}")
        if meta.pending == LOADING:
            raise UnknownList(
                f"list {list_name!r} is being loaded (or its first load did not finish: "
                "load it again)"
            )
        return meta

    async def read(self, list_name: str) -> ListMeta | None:
        """Read the list's metadata from Redis (None if it has none) and cache it."""
        validate_stored_name(list_name)
        async with translated():
            raw = await self._client.hgetall(keys(list_name).meta)
        if not raw:
            return None
        meta = ListMeta.parse(raw)
        if meta.hash_version != HASH_VERSION:
            raise StoreError(
                f"list {list_name!r} holds {meta.hash_version} hashes; this guard computes "
                f"{HASH_VERSION}: re-load the list from its images"
            )
        if meta.pending != LOADING:  # a list being loaded is read again until its load ends
            self.cached[list_name] = meta
        self.seen.add(list_name)
        return meta

    def forget(self, list_name: str) -> None:
        """Drop what the store holds about a list that was re-created or has gone."""
        self.cached.pop(list_name, None)
        self._on_forget(list_name)

    async def vanished(self, list_name: str) -> StoreError:
        """A list this store had read is gone (a restart without persistence, FLUSHDB, an
        eviction): an error, never "no match" (hostile case H37, tests/hostile).

        Unless it was dropped on purpose (``guard drop``, ``guard rename``: its drop marker says
        so): then :class:`UnknownList`, as a list never loaded, and the list's ``required``
        setting decides what a route does without it.
        """
        self.forget(list_name)
        async with translated():
            marker = text(await self._client.get(drop_marker(list_name)) or b"")
        if marker.startswith("drop"):
            self.seen.discard(list_name)
            return UnknownList(f"list {list_name!r} was dropped (guard drop or guard rename)")
        return StoreInconsistent(
            f"list {list_name!r} has vanished from Redis (restarted without persistence, "
            f"flushed or evicted?): re-load it (guard load ... --list {list_name})"
        )

    async def on_current(self, list_name: str, work: Callable[[ListMeta], Awaitable[T]]) -> T:
        """``work(meta)``; if the list turns out re-created since this store read it (dropped,
        flushed or lost in a restart, and loaded again: layout, hash version and entries may
        all differ), ``work`` again, once, on the list as it is now."""
        try:
            return await work(await self.meta(list_name))
        except Recreated:
            self.forget(list_name)
        except Gone:
            raise await self.vanished(list_name) from None
        try:
            return await work(await self.meta(list_name))
        except Gone:
            raise await self.vanished(list_name) from None
