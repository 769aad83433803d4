"""The :class:`Store` users see: one object over the connection, the metadata catalog, the
writes, the two lookup paths (mirror, Redis index) and the integrity checks."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException

from guard.bands import BAND_COUNTS, LISTS_KEY
from guard.errors import StoreError, StoreUnavailable, UnknownList
from guard.hashing import TRANSFORMS, FrameHash, from_signed
from guard.mirror_patch import PatchedMirror
from guard.store import index, integrity, writes
from guard.store import stream as stream_calls
from guard.store.allow import allow_list, owner_of
from guard.store.catalog import Catalog
from guard.store.connection import (
    ListExists,
    client,
    cluster_location,
    is_cluster_url,
    lease_embedded,
    replicated,
    socket_timeout_of,
    translated,
)
from guard.store.entry_reads import BUCKETS, BUCKETS_PER_READ, bucket_records, read_entries
from guard.store.index import Query
from guard.store.integrity import VerifyReport
from guard.store.mirror_cache import DEFAULT_MIRROR, MirrorCache, MirrorSettings
from guard.store.records import (
    COMPACT,
    ListMeta,
    entries_from_json,
    entry_from_record,
    keys,
    text,
)
from guard.store.stream import StreamEntry
from guard.store.upgrade import upgrade
from guard.types import AddResult, Entry, ListInfo, Match, Transform

StoreT = TypeVar("StoreT", bound="Store")

#: The review page's mode switches: list name -> "enforce" or "shadow" (guard.review.modes).
MODES_KEY = "guard:modes"


class LookupPolicy(Protocol):
    """What a lookup needs from a list's policy (guard.config.ListPolicy has it)."""

    @property
    def flag_radius(self) -> int: ...
    @property
    def confirm_radius(self) -> int: ...
    @property
    def dihedral(self) -> bool: ...


class AllowPolicy(LookupPolicy, Protocol):
    """What an allow-list lookup needs from its list's policy (a ListPolicy has it)."""

    @property
    def reject_radius(self) -> int: ...


class Store:
    """Async access to guard's lists in Redis.

    Make one with :meth:`from_url` or :meth:`embedded` (or wrap an existing ``redis.asyncio``
    client) and use it as an async context manager, or call :meth:`close`. Every Redis failure is
    raised as :class:`guard.errors.StoreUnavailable` (connection, timeout) or
    :class:`guard.errors.StoreError`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        mirror: MirrorSettings | None = DEFAULT_MIRROR,
        reconnect: Callable[[], aioredis.Redis] | None = None,
    ) -> None:
        self._on_close = on_close
        self._location: str | None = None  # set by embedded(): the file, not its private socket
        self._mirror_settings = mirror
        self._reconnect = reconnect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._use(client)

    def _use(self, client: aioredis.Redis) -> None:
        self._client = client
        self._mirror_cache = MirrorCache(client, self._mirror_settings, lambda: self.location)
        self._catalog = Catalog(client, on_forget=self._mirror_cache.forget)
        self._labels = self._mirror_cache.labels
        self._add = client.register_script(writes.ADD_SCRIPT)
        self._remove = client.register_script(writes.REMOVE_SCRIPT)
        self._drop = client.register_script(writes.DROP_SCRIPT)
        self._enable = client.register_script(writes.ENABLE_SCRIPT)

    def _follow_loop(self) -> None:
        """Open a new client when called from another event loop than the last call's.

        redis-py's asyncio connections belong to the loop that opened them: used from another
        one, every call fails. An app tested with Starlette's TestClient outside a ``with``
        block runs each request on a new loop. A store made by :meth:`from_url` or
        :meth:`embedded` then reconnects (its mirrors reload); one wrapping a client it was
        given cannot, and keeps redis-py's behaviour.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop and self._loop is not None and self._reconnect is not None:
            self._use(self._reconnect())
            # The old connections can no longer be closed through their loop; collected now, their
            # transports close the sockets (else they wait for a later collection).
            gc.collect()
        self._loop = loop

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        mirror: MirrorSettings | None = DEFAULT_MIRROR,
    ) -> Store:
        """A store on a Redis server (``redis://``, ``rediss://`` or ``unix://`` URL), or on a
        Redis Cluster (``redis+cluster://`` or ``rediss+cluster://`` and any node's address).

        Both timeouts are explicit: redis-py's defaults wait about a minute on a silent server.
        The connections follow :func:`guard.store.client_options`: they survive a restart of
        Redis.
        """

        def connect() -> aioredis.Redis:
            return client(url, socket_timeout, connect_timeout)

        try:
            redis_client = connect()
        except (ValueError, RedisClusterException) as error:
            raise StoreUnavailable(f"invalid Redis URL {url!r}: {error}") from error
        store = cls(redis_client, mirror=mirror, reconnect=connect)
        if is_cluster_url(url):
            store._location = cluster_location(url)
        return store

    @classmethod
    def embedded(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        socket_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        mirror: MirrorSettings | None = DEFAULT_MIRROR,
    ) -> Store:
        """A store on the embedded Redis persisted at ``path`` (default: ``redis.db`` in
        ``$GUARD_HOME``, else the per-user data directory; see :mod:`guard.embedded`).

        One server runs per data directory (``path``'s folder), shared by every process using
        it: the first one starts it, the others connect to its unix socket. Each store holds a
        lease until it closes; the server saves and stops once no process has held one for a
        few seconds.
        """
        lease = lease_embedded(Path(path) if path is not None else None)

        def connect() -> aioredis.Redis:
            # The same settings as any Redis: the shared server can restart under a worker.
            return client(f"unix://{lease.socket}", socket_timeout, connect_timeout)

        async def stop() -> None:
            await asyncio.to_thread(lease.release)

        store = cls(connect(), on_close=stop, mirror=mirror, reconnect=connect)
        store._location = f"the embedded Redis at {lease.rdb}"
        return store

    @property
    def location(self) -> str:
        """Where the store is, for messages: the server's address (never a password), or the
        embedded Redis's file."""
        if self._location is not None:
            return self._location
        pool = self._client.connection_pool
        settings = pool.connection_kwargs
        if "path" in settings:
            return f"unix://{settings['path']}?db={settings.get('db', 0)}"
        scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
        host, port = settings.get("host", "localhost"), settings.get("port", 6379)
        return f"{scheme}://{host}:{port}/{settings.get('db', 0)}"

    @property
    def _mirrors(self) -> dict[str, PatchedMirror]:
        """The mirrors loaded now (tests look here to tell which path a lookup took)."""
        return self._mirror_cache.mirrors

    async def close(self) -> None:
        self._follow_loop()
        await self._mirror_cache.close()
        await self._client.aclose()
        if self._on_close is not None:
            await self._on_close()

    async def __aenter__(self: StoreT) -> StoreT:  # noqa: PYI019 - typing.Self needs 3.11
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- lists -------------------------------------------------------------------------------

    async def lists(self) -> list[ListInfo]:
        """Every list with its size and settings, sorted by name (allow-lists, which belong to
        a list, are not among them: :meth:`allow_lists`)."""
        return [info for info in await self._every_list() if owner_of(info.name) is None]

    async def _every_list(self) -> list[ListInfo]:
        """Every list in the store, allow-lists under their stored names, sorted by name."""
        self._follow_loop()
        async with translated():
            names = sorted(text(n) for n in await self._client.smembers(LISTS_KEY))
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(keys(name).meta)
                pipe.get(keys(name).ver)
            replies = await pipe.execute()
        infos = []
        for name, meta, version in zip(names, replies[::2], replies[1::2], strict=True):
            if not meta:
                continue  # listed but never created (an interrupted first load): nothing in it
            infos.append(
                ListInfo(
                    name=name,
                    entries=int(meta.get(b"entries", 0)),
                    bands=int(meta[b"bands"]),
                    hash_version=text(meta[b"hash_version"]),
                    created=float(meta[b"created"]),
                    version=int(version or 0),
                    disabled=int(meta.get(b"disabled", 0)),
                    needs_upgrade=text(meta.get(b"records", b"")) != COMPACT,
                )
            )
        return infos

    # --- writes ------------------------------------------------------------------------------

    async def add(self, list_name: str, entries: Iterable[Entry], *, bands: int = 4) -> AddResult:
        """Add entries (idempotent: an entry with the same aHash and pHash is already present).

        The list is created with ``bands`` bands if it does not exist; an existing list keeps its
        own. Low-information aHashes are refused before anything is written.
        """
        self._follow_loop()
        return await writes.add(self._client, self._add, self._catalog, list_name, entries, bands)

    async def remove(self, list_name: str, ahash: int, phash: int | None = None) -> int:
        """Remove the entries with this aHash (only the one with this pHash, if given).

        Returns how many entries were removed (0 if none matched).
        """
        self._follow_loop()
        removed = await self._catalog.on_current(
            list_name,
            lambda meta: writes.remove(self._client, self._remove, list_name, meta, ahash, phash),
        )
        await self._replicated(list_name)
        return removed

    async def drop(self, list_name: str, *, keep_marker: bool = False) -> int:
        """Delete a whole list (every key under its hash tag). Returns the number of keys deleted
        (0 if there was no such list).

        Readers see the list gone at once (its metadata goes first, in one step), then its keys
        are deleted in batches (guard.store.writes says the order). ``keep_marker`` leaves a
        small marker saying it was dropped on purpose: a worker that had read the list then gets
        :class:`UnknownList` (its ``required`` setting decides), not
        :class:`StoreInconsistent` (data loss). ``guard drop`` keeps it; temporary lists
        (``guard eval``) do not. Run it again to finish a drop that was interrupted.

        The list's allow-list (if it has one) is dropped first, the same way: interrupted
        between the two, the list is still there (stricter, never laxer) and a second drop
        finishes.
        """
        self._follow_loop()
        deleted = 0
        if owner_of(list_name) is None and await self._has_allow_list(list_name):
            allowed = allow_list(list_name)
            deleted += await writes.drop(
                self._client, self._drop, self._catalog, allowed, keep_marker=keep_marker
            )
        return deleted + await writes.drop(
            self._client, self._drop, self._catalog, list_name, keep_marker=keep_marker
        )

    async def upgrade(self, list_name: str) -> int:
        """Move the entries of a list an older guard wrote to compact records, in place (see
        :mod:`guard.store.upgrade`: lookups carry on meanwhile; run again if interrupted).
        Its allow-list (``guard allow``) goes with it. Returns the aHashes moved: 0 for a list
        that is compact already. Workers running an older guard cannot read an upgraded list:
        upgrade them first."""
        self._follow_loop()
        await self._catalog.meta(list_name)  # UnknownList if there is none
        moved = 0
        names = [list_name] if owner_of(list_name) else [list_name, allow_list(list_name)]
        for name in names:
            moved += await upgrade(self._client, name)
            self._catalog.forget(name)
        return moved

    async def unfinished_drop(self, list_name: str) -> bool:
        """Whether a drop of the list began and did not finish (:meth:`drop` it again)."""
        self._follow_loop()
        return await writes.unfinished_drop(self._client, list_name)

    async def rename(self, old: str, new: str) -> int:
        """Rename a list: copy its entries (labels, sources, times) into a new list ``new``,
        check the copy whole, then drop ``old`` (keeping its marker). Returns the entries copied.

        A list's keys share the hash tag of its name, so a Cluster cannot RENAME them: the copy
        is written through the add script and carries a pending note until it is proven whole
        (``guard lists --verify`` reports it incomplete meanwhile). Raises
        :class:`guard.store.ListExists` if ``new`` exists, :class:`UnknownList` if
        ``old`` does not; interrupted, ``old`` is kept: drop ``new`` and rename again.

        ``old``'s allow-list moves with it, after it (the same copy, check and drop). Interrupted
        in between, the allow entries stay under ``old``: renaming ``old`` to ``new`` again
        moves them (``old`` is gone, ``new`` exists). Refused (ListExists) if ``new`` has an
        allow-list already.
        """
        self._follow_loop()
        moved_allow_list = owner_of(old) is None and await self._has_allow_list(old)
        if owner_of(old) is None and await self._has_allow_list(new):
            raise ListExists(f"list {new!r} has an allow-list already: drop it first")
        try:
            copied = await writes.rename(
                self._client, self._add, self._drop, self._catalog, old, new
            )
        except UnknownList:
            if not (moved_allow_list and await self._has_list(new)):
                raise
            copied = 0  # resumed: `old` was renamed, its allow-list was not moved yet
        if moved_allow_list:
            moves = (allow_list(old), allow_list(new))
            await writes.rename(self._client, self._add, self._drop, self._catalog, *moves)
        return copied

    async def disable(
        self, list_name: str, ahash: int, phash: writes.Selector = writes.EVERY
    ) -> writes.Toggled:
        """Stop enforcing entries with this aHash (the one with pHash ``phash``, None: the one
        without a pHash; default: every one) without losing them: in one step they leave every
        lookup path (band sets, entries, snapshot) for the list's ``disabled`` hash and the
        version moves (workers see it at their next lookup). Idempotent: ``already`` counts the
        matching entries that were disabled before."""
        self._follow_loop()
        toggled = await self._catalog.on_current(
            list_name,
            lambda meta: writes.disable(self._client, self._remove, list_name, meta, ahash, phash),
        )
        await self._replicated(list_name)
        return toggled

    async def enable(
        self, list_name: str, ahash: int, phash: writes.Selector = writes.EVERY
    ) -> writes.Toggled:
        """Enforce disabled entries again (:meth:`disable`'s inverse, written back as an add
        writes them). ``already`` counts matching entries that were enabled already."""
        self._follow_loop()
        toggled = await self._catalog.on_current(
            list_name,
            lambda meta: writes.enable(self._enable, list_name, meta, ahash, phash),
        )
        await self._replicated(list_name)
        return toggled

    async def _replicated(self, list_name: str) -> None:
        """On a Redis Cluster, return once a replica has the list's writes (WAIT; see
        :func:`guard.store.connection.replicated`)."""
        async with translated():
            await replicated(self._client, keys(list_name).ver)

    async def disabled_entries(self, list_name: str) -> AsyncIterator[Entry]:
        """Every disabled entry of a list, in no particular order."""
        self._follow_loop()
        await self._catalog.meta(list_name)
        async for entry in writes.entries(self._client, list_name, disabled=True):
            yield entry

    async def disabled_matches(
        self, list_name: str, frames: Sequence[FrameHash], policy: LookupPolicy
    ) -> list[Match]:
        """The disabled entries a lookup under ``policy`` would have matched (``guard check``
        says why an image passes), best first. A scan: a list holds few disabled entries."""
        return index.matches_among(
            list_name,
            [e async for e in self.disabled_entries(list_name)],
            index.queries_of(frames, policy.dihedral),
            policy.flag_radius,
            policy.confirm_radius,
        )

    # --- reads -------------------------------------------------------------------------------

    async def version(self, list_name: str) -> int:
        """The list's change counter: it moves on every add or remove that changed something."""
        self._follow_loop()
        async with translated():
            return int(await self._client.get(keys(list_name).ver) or 0)

    async def entries(self, list_name: str) -> AsyncIterator[Entry]:
        """Every entry of a list (for export), in no particular order."""
        self._follow_loop()
        await self._catalog.meta(list_name)
        async for entry in writes.entries(self._client, list_name):
            yield entry

    async def lookup_under(
        self,
        list_name: str,
        frames: Sequence[FrameHash],
        policy: LookupPolicy,
        *,
        limit: int | None = None,
    ) -> list[Match]:
        """:meth:`lookup` as a list's policy asks: every candidate up to its flag radius."""
        return await self.lookup(
            list_name,
            frames,
            radius=policy.flag_radius,
            confirm_radius=policy.confirm_radius,
            dihedral=policy.dihedral,
            limit=limit,
        )

    async def lookup(
        self,
        list_name: str,
        frames: Sequence[FrameHash],
        *,
        radius: int,
        confirm_radius: int = 64,
        dihedral: bool = False,
        limit: int | None = None,
    ) -> list[Match]:
        """Every entry within ``radius`` aHash bits of a query frame (or its flips/rotations).

        Exact: the band probes cannot miss a stored hash within ``radius`` (no false negatives).
        Each match says whether its pHash confirms it; the best match per entry comes first:
        confirmed, then entries without a pHash, then contradicted ones, then by distance.
        ``limit`` keeps only the best ones (the first decides a list's verdict): with the
        mirror, the others are never fetched.
        """
        self._follow_loop()
        transforms: Sequence[Transform] = list(TRANSFORMS) if dihedral else ["identity"]
        queries: list[Query] = [
            (*frame.variant(t), t, frame.frame) for frame in frames for t in transforms
        ]

        async def lookup(meta: ListMeta) -> list[Match]:
            # The worker-local mirror (waiting for its load, catching it up), else the Redis
            # index: mirrors off, a list over their limit, or a mirror that would not load.
            mirror = await self._mirror_cache.mirror_for(list_name, meta)
            if mirror is not None:
                found = await self._mirror_cache.lookup(
                    list_name, meta, mirror, queries, radius, confirm_radius, limit
                )
                if found is not None:
                    return found
            return await index.lookup(
                self._client, self._labels, list_name, meta, queries, radius, confirm_radius, limit
            )

        return await self._catalog.on_current(list_name, lookup)

    async def refresh_mirror(self, list_name: str) -> PatchedMirror | None:
        """Load the list's mirror now (a lookup otherwise loads it on first use, and waits for
        it; the middleware loads its lists' at start-up).

        None when the mirror is off, the list has more than ``max_entries`` entries, its
        snapshot does not agree with its entries (a list written by an older guard), or the
        mirror cannot be built: lookups then stay on the Redis index, which is always exact.
        """
        self._follow_loop()
        if self._mirror_cache.settings is None:
            return None
        meta = await self._catalog.meta(list_name)
        return await self._mirror_cache.refresh(list_name, meta)

    # --- allow-lists -------------------------------------------------------------------------
    # A list's allow-list is a list of its own under a reserved name (guard.store.allow): the
    # same index, versions, mirror and exact lookups. guard.verdict decides what it suppresses.

    async def allow(self, list_name: str, entries: Iterable[Entry], *, bands: int = 4) -> AddResult:
        """Add entries to ``list_name``'s allow-list (created with ``bands`` bands), as
        :meth:`add` adds to a list. The list itself must exist (:class:`UnknownList`)."""
        self._follow_loop()
        stored = allow_list(list_name)
        await self._catalog.meta(list_name)
        return await self.add(stored, entries, bands=bands)

    async def remove_allowed(self, list_name: str, ahash: int, phash: int | None = None) -> int:
        """Remove allow entries of ``list_name`` (as :meth:`remove`); 0 if it has none."""
        try:
            return await self.remove(allow_list(list_name), ahash, phash)
        except UnknownList:
            return 0

    async def allowed_entries(self, list_name: str) -> AsyncIterator[Entry]:
        """Every allow entry of ``list_name`` (none if it has no allow-list)."""
        try:
            async for entry in self.entries(allow_list(list_name)):
                yield entry
        except UnknownList:
            return

    async def allow_lists(self) -> dict[str, ListInfo]:
        """Each allow-list by the name of the list it belongs to (its ``name`` is the stored
        one, ``NAME/allow``)."""
        return {
            owner: info
            for info in await self._every_list()
            if (owner := owner_of(info.name)) is not None
        }

    async def lookup_allowed(
        self, list_name: str, frames: Sequence[FrameHash], policy: AllowPolicy
    ) -> Match | None:
        """The allow entry of ``list_name`` nearest to the frames that may suppress the list's
        matches: confirmed (pHash within ``confirm_radius``) and within the list's
        ``reject_radius``, with its ``dihedral`` setting; None if there is none.

        A list without an allow-list has no allow entries: None, not an error. Any other
        failure (the store is down) raises: the caller treats it as the list's own failure.
        """
        try:
            found = await self.lookup(
                allow_list(list_name),
                frames,
                radius=policy.reject_radius,
                confirm_radius=policy.confirm_radius,
                dihedral=policy.dihedral,
                limit=1,
            )
        except UnknownList:
            return None
        return found[0] if found and found[0].confirmed else None

    async def _has_allow_list(self, list_name: str) -> bool:
        """Whether ``list_name`` has an allow-list, or one whose drop did not finish."""
        return await self._has_list(allow_list(list_name)) or await writes.unfinished_drop(
            self._client, allow_list(list_name)
        )

    async def _has_list(self, stored_name: str) -> bool:
        async with translated():
            return bool(await self._client.exists(keys(stored_name).meta))

    # --- checks ------------------------------------------------------------------------------

    async def check_eviction(self, *, allow_eviction: bool = False) -> str | None:
        """Refuse a Redis that may evict guard's keys; return a warning to show, if any.

        ``allkeys-*`` policies evict band sets when memory runs short, and a blocklist that
        silently loses entries fails open unnoticed. ``noeviction`` (Redis's default) and
        ``volatile-*`` are safe: guard never sets a TTL. A managed Redis that refuses CONFIG
        gets a warning, not a refusal. Raises :class:`EvictionUnsafe` unless ``allow_eviction``.
        """
        self._follow_loop()
        return await integrity.check_eviction(self._client, allow_eviction=allow_eviction)

    async def check_meta(self, list_name: str) -> None:
        """Raise unless the list's metadata is readable and made for this guard's hashes
        (:class:`UnknownList` if it does not exist, :class:`StoreInconsistent` if it existed
        when this store last read it, :class:`StoreError` if it is damaged)."""
        self._follow_loop()
        self._catalog.cached.pop(list_name, None)
        try:
            meta = await self._catalog.meta(list_name)
        except (KeyError, ValueError, TypeError) as error:
            raise StoreError(
                f"list {list_name!r} has unreadable metadata ({type(error).__name__}: {error}): "
                "re-load it"
            ) from error
        if len(meta.layout.bands) not in BAND_COUNTS:
            raise StoreError(f"list {list_name!r} has {len(meta.layout.bands)} bands")

    async def verify(self, list_name: str) -> VerifyReport:
        """Prove a list whole: every aHash of its entry records is in exactly its band sets, the
        band sets hold nothing else, the meta count equals the entries, and the snapshot (if any)
        holds exactly one record per entry. Reads in batches (SCAN, HGETALL, SSCAN); holds
        8 bytes per distinct aHash and one snapshot record per entry. A list being written
        meanwhile may show transient mismatches.
        """
        self._follow_loop()
        # A list whose first load did not finish is verified too (reported incomplete).
        meta = await self._catalog.read(list_name) or await self._catalog.meta(list_name)
        return await integrity.verify(self._client, list_name, meta)

    # --- the decision stream -----------------------------------------------------------------

    async def append_events(
        self, stream: str, records: Sequence[Mapping[str, str]], *, max_length: int
    ) -> None:
        """Append decision records to ``stream`` in one round trip, keeping about
        ``max_length`` (see :func:`guard.store.stream.append`)."""
        self._follow_loop()
        async with translated():
            await stream_calls.append(self._client, stream, records, max_length)

    async def latest_events(
        self, stream: str, count: int, *, before: str | None = None
    ) -> list[StreamEntry]:
        """Up to ``count`` records before the id ``before`` (default: the newest), newest first."""
        self._follow_loop()
        async with translated():
            return await stream_calls.latest(self._client, stream, count, before)

    async def events_after(
        self, stream: str, last_id: str, count: int, *, wait: float | None = None
    ) -> list[StreamEntry]:
        """Up to ``count`` records after the id ``last_id``, oldest first; with ``wait``, wait up
        to that many seconds for one (XREAD BLOCK).

        The wait is cut to half the socket timeout: redis-py's asyncio client times out a
        blocking read like any other, so a follower asks again rather than waits longer.
        """
        self._follow_loop()
        block_ms = None
        if wait is not None:
            timeout = socket_timeout_of(self._client)
            limit = wait if timeout is None else min(wait, timeout / 2)
            block_ms = max(1, int(limit * 1000))
        async with translated():
            return await stream_calls.after(self._client, stream, last_id, count, block_ms)

    # --- the review page (guard.review) ------------------------------------------------------

    async def entries_page(
        self, list_name: str, cursor: int = 0, count: int = 50
    ) -> tuple[int, list[Entry]]:
        """One page of a list's entries (whole buckets from bucket ``cursor`` until they hold
        ``count``: a few more at most) and the cursor of the next page (0: the last page).
        Costs the page, never the whole list."""
        self._follow_loop()
        meta = await self._catalog.meta(list_name)
        if meta.records != COMPACT:  # an older guard's JSON records: HSCAN's own cursor
            async with translated():
                following, fields = await self._client.hscan(
                    keys(list_name).entries, cursor, count=count
                )
            assert isinstance(fields, dict)
            page = [
                entry
                for field, value in fields.items()
                for entry in entries_from_json(from_signed(int(field)), value)
            ]
            return int(following), page
        records: list[tuple[bytes, bytes]] = []
        step = 16  # buckets per round trip: doubled while they hold too few entries
        async with translated():
            while cursor < BUCKETS and len(records) < count:
                for bucket in await bucket_records(self._client, list_name, cursor, step):
                    cursor += 1
                    records += bucket
                    if len(records) >= count:
                        break
                step = min(step * 2, BUCKETS_PER_READ)
            labels = await self._labels.resolve(
                self._client, list_name, meta.incarnation, records
            )
        page = [entry_from_record(field, record, labels) for field, record in records]
        return (cursor if cursor < BUCKETS else 0), page

    async def entries_of(self, list_name: str, ahash: int) -> list[Entry]:
        """The list's entries with this aHash (one round trip, or two for a new label)."""
        self._follow_loop()
        meta = await self._catalog.meta(list_name)
        async with translated():
            found = await read_entries(self._client, self._labels, list_name, meta, [ahash])
        return found.get(ahash, [])

    async def mode_overrides(self) -> dict[str, str]:
        """Lists whose mode ("enforce" or "shadow") was switched on the review page, overriding
        the config's ``mode`` (guard.review.modes applies them)."""
        self._follow_loop()
        async with translated():
            found = await self._client.hgetall(MODES_KEY)
        return {text(name): text(mode) for name, mode in found.items()}

    async def set_mode(self, list_name: str, mode: str | None) -> None:
        """Override the list's mode ("enforce" or "shadow"); None: the config's mode again."""
        self._follow_loop()
        async with translated():
            if mode is None:
                await self._client.hdel(MODES_KEY, list_name)
            else:
                await self._client.hset(MODES_KEY, list_name, mode)

    async def keep_pictures(self, key: str, images: Sequence[bytes], ttl: int) -> None:
        """Keep images under ``key`` for ``ttl`` seconds (the review page's quarantine), in one
        transaction: they are all there with their expiry, or none is."""
        self._follow_loop()
        async with translated():
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={str(n): image for n, image in enumerate(images)})
            pipe.expire(key, ttl)
            await pipe.execute()

    async def kept_pictures(self, key: str) -> list[bytes]:
        """The images kept under ``key``, in order (none if expired or never kept)."""
        self._follow_loop()
        async with translated():
            found = await self._client.hgetall(key)
        return [
            value if isinstance(value, bytes) else value.encode()
            for _, value in sorted(found.items(), key=lambda item: int(item[0]))
        ]
