"""The Redis band index: the only module that imports redis.

Data model; every key of a list shares the hash tag ``{<list>}``:

    guard:{<list>}:meta          HASH    hash_version, bands, layout (JSON), created, entries,
                                         incarnation
    guard:{<list>}:b<i>:<value>  SET     aHashes as signed int64 decimals (Redis intsets)
    guard:{<list>}:entries       HASH    aHash (signed decimal) -> JSON list of its entries
    guard:{<list>}:ver           STRING  INCR on every change
    guard:{<list>}:snap          STRING  17 bytes per entry: aHash, pHash, has-pHash (guard.mirror)
    guard:lists                  SET     list names

Writes go through Lua scripts, so an entry is added or removed with its band members, its
``entries`` record, its snapshot record and the version counter at once: no reader sees half an
entry, and an interrupted load leaves whole entries only. The add script also creates the list:
its metadata is written with its first entries, with a random ``incarnation`` (16 hex digits).

A list's version restarts at 1 whenever the list is made again (``guard drop`` and a new load,
FLUSHALL, a restart without persistence, a restore of a backup taken before the list was
re-created): the incarnation tells those lists apart, so a worker's copy or cached layout of an
earlier list is never taken for the current one. A list created before incarnations existed has
none (read as ""): it works as before, and gets one at its next ``add`` (even one that adds
nothing); each worker then sees a new incarnation and reloads. One case stays out of reach: a
backup of the *same* incarnation restored and then written until its version is back at the
value a worker holds, with no lookup by that worker in between.

A lookup goes through the worker-local mirror of the list when one is loaded (a numpy band index
of the snapshot at a known incarnation and version: one MULTI round trip checks both and fetches
the records to return), else through the Redis index: one SUNION over every probed bucket (one
round trip per list, which also checks the incarnation the layout came from), then one HMGET for
the candidates within the radius, if there are any. A lookup that finds another incarnation than
the one it knew forgets the list's cached metadata and mirror and runs again on the new list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import secrets
import time
import weakref
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from guard import embedded
from guard.bands import (
    BAND_COUNTS,
    LISTS_KEY,
    BandLayout,
    band_key,
    default_layout,
    list_key,
    validate_list_name,
)
from guard.config import EMBEDDED_FILE, default_data_dir
from guard.errors import (
    EvictionUnsafe,
    LowInformationEntry,
    StoreError,
    StoreInconsistent,
    StoreUnavailable,
    UnknownList,
)
from guard.hashing import (
    HASH_VERSION,
    TRANSFORMS,
    FrameHash,
    from_hex,
    from_signed,
    hamming,
    is_low_information,
    to_hex,
    to_signed,
)
from guard.mirror import (
    RECORD_SIZE,
    Mirror,
    Ranked,
    band_values_of,
    popcount,
    snapshot_record,
)
from guard.types import AddResult, Entry, ListInfo, Match, Transform

logger = logging.getLogger("guard")

# Entries per Lua call: big enough to amortise round trips, small enough not to block Redis long.
WRITE_BATCH = 500
# Band sets stay compact intsets up to this many members (Redis's default, 512, turns the hot
# buckets of real photo hashes into hash tables: 75 instead of 54 bytes per entry at 1e6,
# bench/lookup.py). Set on the embedded Redis; recommended for any other (README, operations).
INTSET_ENTRIES = 4096

StoreT = TypeVar("StoreT", bound="Store")
T = TypeVar("T")
ConnectionT = TypeVar("ConnectionT", bound=aioredis.connection.AbstractConnection)


class LookupPolicy(Protocol):
    """What a lookup needs from a list's policy (guard.config.ListPolicy has it)."""

    @property
    def flag_radius(self) -> int: ...
    @property
    def confirm_radius(self) -> int: ...
    @property
    def dihedral(self) -> bool: ...


# KEYS: entries, ver, meta, snap, then `bands` band keys per entry. ARGV: bands, layout JSON,
# hash version, created, a fresh incarnation, then per entry: field (signed aHash), pHash hex,
# entry JSON, its snapshot record. Creates the list's metadata if it has none (so a list is born
# with its first entries, never half made), and gives an incarnation to a list that has none
# (made before incarnations existed). Returns {added, present, the list's incarnation}.
_ADD_SCRIPT = """
local bands = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[3], 'hash_version', ARGV[3], 'bands', ARGV[1], 'layout', ARGV[2],
    'created', ARGV[4], 'entries', 0, 'incarnation', ARGV[5])
elseif redis.call('HGET', KEYS[3], 'bands') ~= ARGV[1]
    or redis.call('HGET', KEYS[3], 'layout') ~= ARGV[2]
    or redis.call('HGET', KEYS[3], 'hash_version') ~= ARGV[3] then
  return redis.error_reply('guard: list metadata changed (band count changed, or re-created)')
else
  redis.call('HSETNX', KEYS[3], 'incarnation', ARGV[5])
end
local added, present = 0, 0
local count = (#ARGV - 5) / 4
for i = 0, count - 1 do
  local at = 6 + 4 * i
  local field, phash, entry, record = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local stored = redis.call('HGET', KEYS[1], field)
  local entries = {}
  if stored then entries = cjson.decode(stored) end
  local found = false
  for _, existing in ipairs(entries) do
    if existing['phash'] == phash then found = true break end
  end
  if found then
    present = present + 1
  else
    table.insert(entries, cjson.decode(entry))
    redis.call('HSET', KEYS[1], field, cjson.encode(entries))
    redis.call('APPEND', KEYS[4], record)
    for b = 1, bands do redis.call('SADD', KEYS[4 + i * bands + b], field) end
    added = added + 1
  end
end
if added > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('HINCRBY', KEYS[3], 'entries', added)
end
return {added, present, redis.call('HGET', KEYS[3], 'incarnation')}
"""

# KEYS: entries, ver, meta, snap, band keys of the aHash. ARGV: field, pHash hex or '' for every
# entry, the aHash as 8 big-endian bytes, the layout the band keys follow (refused if the list
# was re-created with another).
_REMOVE_SCRIPT = """
local layout = redis.call('HGET', KEYS[3], 'layout')
if layout and layout ~= ARGV[4] then
  return redis.error_reply('guard: list metadata changed (re-created with another layout)')
end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then return 0 end
local kept, removed = {}, {}
for _, existing in ipairs(cjson.decode(stored)) do
  if ARGV[2] == '' or existing['phash'] == ARGV[2] then
    table.insert(removed, existing)
  else
    table.insert(kept, existing)
  end
end
if #removed == 0 then return 0 end
if #kept == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  for k = 5, #KEYS do redis.call('SREM', KEYS[k], ARGV[1]) end
else
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(kept))
end
-- Splice each removed entry's record out of the snapshot (records are RECORD_SIZE bytes long:
-- a match only counts on a record boundary).
local snap = redis.call('GET', KEYS[4])
if snap then
  for _, entry in ipairs(removed) do
    local record = ARGV[3] .. string.rep(string.char(0), 8) .. string.char(0)
    if entry['phash'] ~= '' then
      local phash = string.gsub(entry['phash'], '..', function(pair)
        return string.char(tonumber(pair, 16))
      end)
      record = ARGV[3] .. phash .. string.char(1)
    end
    local at = string.find(snap, record, 1, true)
    while at and (at - 1) % RECORD_SIZE ~= 0 do at = string.find(snap, record, at + 1, true) end
    if at then snap = string.sub(snap, 1, at - 1) .. string.sub(snap, at + RECORD_SIZE) end
  end
  redis.call('SET', KEYS[4], snap)
end
redis.call('INCR', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'entries', -#removed)
return #removed
""".replace("RECORD_SIZE", str(RECORD_SIZE))


def _phash_text(phash: int | None) -> str:
    return "" if phash is None else to_hex(phash)


def _packed(ahash: int) -> bytes:
    return ahash.to_bytes(8, "big")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _keys(list_name: str) -> tuple[str, str, str]:
    return list_key(list_name, "entries"), list_key(list_name, "ver"), list_key(list_name, "meta")


def _entry_json(entry: Entry) -> str:
    return json.dumps(
        {
            "phash": _phash_text(entry.phash),
            "source": entry.source,
            "label": entry.label,
            "added_at": entry.added_at,
        },
        separators=(",", ":"),
    )


def _entries_from_json(ahash: int, text: bytes | str) -> list[Entry]:
    return [
        Entry(
            ahash=ahash,
            phash=from_hex(item["phash"]) if item["phash"] else None,
            source=item.get("source") or "",
            label=item.get("label"),
            added_at=item.get("added_at"),
        )
        for item in json.loads(text)
    ]


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


#: Seconds a pooled connection may sit idle before its next command is preceded by a PING (a
#: connection that a restart, a proxy or a firewall closed meanwhile is replaced, not used).
HEALTH_CHECK_SECONDS = 30


class _RetryIfDead(Retry):
    """One immediate retry, on a freshly opened connection, of a command whose connection was
    open and turned out dead (Redis restarted; a proxy or a firewall cut it).

    Never a retry of a connection attempt (a server that refuses or resets is asked once per
    command: the circuit breaker counts on it) nor of a timeout (a silent server already took
    a socket timeout). No backoff: the retry costs at most one more socket timeout.
    """

    def __init__(self, connection: aioredis.connection.AbstractConnection) -> None:
        super().__init__(NoBackoff(), 1, (RedisConnectionError,))
        self._connection = weakref.ref(connection)

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Awaitable[Any]],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        connection = self._connection()
        # Open and already answered on this socket: a fresh connection that fails (refused,
        # reset during its handshake, or its first health check) is not retried.
        was_open = (
            connection is not None
            and connection.is_connected
            and getattr(connection, "answered_on", None) is getattr(connection, "_reader", 0)
        )
        counted = bool(kwargs.get("with_failure_count", args[1] if len(args) > 1 else False))
        try:
            return await do()
        except RedisConnectionError as error:
            await (fail(error, 1) if counted else fail(error))  # closes the dead connection
            if not was_open:
                raise
        try:
            return await do()
        except RedisConnectionError as error:
            await (fail(error, 2) if counted else fail(error))
            raise


def _guarded(base: type[ConnectionT]) -> type[ConnectionT]:
    """``base`` with :class:`_RetryIfDead` as each connection's retry policy."""

    class Guarded(base):  # type: ignore[valid-type,misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.retry = _RetryIfDead(self)
            self.answered_on: object = None  # the socket reader that last gave an answer

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            response = await super().read_response(*args, **kwargs)
            self.answered_on = self._reader
            return response

    Guarded.__name__ = Guarded.__qualname__ = f"Guard{base.__name__}"
    return Guarded


_CONNECTION_CLASSES = {
    "unix": _guarded(aioredis.UnixDomainSocketConnection),
    "rediss": _guarded(aioredis.SSLConnection),
    "redis": _guarded(aioredis.Connection),
}


def client_options(url: str, socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
    """The redis-py settings guard's clients use (redis-py 5.x to 8.x): keyword arguments of
    ``redis.asyncio.Redis.from_url(url, ...)`` (a unix socket: ``unix:///path/to/socket``).

    - Explicit socket and connect timeouts: redis-py's defaults wait ~a minute on a silent
      server.
    - RESP2 (``protocol=2``): redis-py 8 speaks RESP3 by default with "maintenance
      notifications" on, and a pooled connection's pending data may then be read as
      notifications instead of making the pool replace the connection (seen in production:
      one failed request per pooled connection after a restart). RESP2 turns them off on
      every redis-py version (``maint_notifications_config`` does not exist before 6.x).
    - ``health_check_interval``: a connection idle for :data:`HEALTH_CHECK_SECONDS` is PINGed
      before use (and replaced if the PING meets a closed connection).
    - One immediate retry on a fresh connection when an open connection is found dead
      (:class:`_RetryIfDead`): a connection whose close the client has not yet seen (a
      restarted container or host, a proxy) fails its first command, with RESP2 or not, and
      this retry is what answers it (20 of 50 lookups failed without it on redis-py 8.2 in
      tests/hostile/test_store_faults.py). A command is re-sent at most once, so an ``add``
      cut after Redis ran it runs again (idempotent: nothing is added twice, but it reports
      the entries as present) and a ``remove`` may report 0.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else "unix"
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "protocol": 2,
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "connection_class": _CONNECTION_CLASSES.get(scheme, _CONNECTION_CLASSES["redis"]),
        "retry": Retry(NoBackoff(), 1, (RedisConnectionError,)),
        # redis-py 5.x retries only the errors listed here too.
        "retry_on_error": [RedisConnectionError],
    }


@dataclass(frozen=True)
class _ListMeta:
    layout: BandLayout
    hash_version: str
    created: float
    #: Which creation of the list this is (a random id written with its first entries; "" for a
    #: list created before incarnations existed, until its next add gives it one).
    incarnation: str
    layout_text: str  # the layout as stored (the add script compares it)


#: How the add and remove scripts refuse to write through metadata that is no longer the list's.
_RECREATED_REPLY = "guard: list metadata changed"


class _Recreated(StoreError):
    """The list was re-created since this store read its metadata: the scripts refused to
    write through it, or a lookup met another incarnation. Callers read the list again, once
    (:meth:`Store._on_current_list`); a second one reaches the caller as a StoreError."""

    def __init__(self, message: str = "the list was re-created while guard read it: try again"):
        super().__init__(message)


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
    ) -> None:
        self._client = client
        self._on_close = on_close
        self._location: str | None = None  # set by embedded(): the file, not its private socket
        self._meta: dict[str, _ListMeta] = {}
        #: Lists this store has read: one that disappears is data loss, not "no such list" (H37).
        self._seen: set[str] = set()
        self._mirror = mirror
        self._mirrors: dict[str, Mirror] = {}
        self._mirror_tried: dict[str, float] = {}  # list -> monotonic time of the last refresh
        self._refreshes: dict[str, asyncio.Task[Mirror | None]] = {}
        self._snapshot_warned: set[str] = set()  # lists whose snapshot disagrees: said once
        self._add = client.register_script(_ADD_SCRIPT)
        self._remove = client.register_script(_REMOVE_SCRIPT)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        mirror: MirrorSettings | None = DEFAULT_MIRROR,
    ) -> Store:
        """A store on a Redis server (``redis://``, ``rediss://`` or ``unix://`` URL).

        Both timeouts are explicit: redis-py's defaults wait about a minute on a silent server.
        The connections follow :func:`client_options`: they survive a restart of Redis.
        """
        try:
            client = aioredis.Redis.from_url(
                url, **client_options(url, socket_timeout, connect_timeout)
            )
        except ValueError as error:
            raise StoreUnavailable(f"invalid Redis URL {url!r}: {error}") from error
        return cls(client, mirror=mirror)

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
        lease = _lease_embedded(Path(path) if path is not None else None)
        url = f"unix://{lease.socket}"
        # The same settings as any Redis: the shared server can restart under a running worker.
        client = aioredis.Redis.from_url(
            url, **client_options(url, socket_timeout, connect_timeout)
        )

        async def stop() -> None:
            await asyncio.to_thread(lease.release)

        store = cls(client, on_close=stop, mirror=mirror)
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

    async def close(self) -> None:
        for task in self._refreshes.values():
            task.cancel()
        await asyncio.gather(*self._refreshes.values(), return_exceptions=True)
        self._refreshes.clear()
        await self._client.aclose()
        if self._on_close is not None:
            await self._on_close()

    async def __aenter__(self: StoreT) -> StoreT:  # noqa: PYI019 - typing.Self needs 3.11
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- lists -------------------------------------------------------------------------------

    async def lists(self) -> list[ListInfo]:
        """Every list with its size and settings, sorted by name."""
        async with _translated():
            names = sorted(_text(n) for n in await self._client.smembers(LISTS_KEY))
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                _, ver, meta = _keys(name)
                pipe.hgetall(meta)
                pipe.get(ver)
            replies = await pipe.execute()
        infos = []
        for name, meta, version in zip(names, replies[::2], replies[1::2]):
            if not meta:
                continue  # listed but never created (an interrupted first load): nothing in it
            infos.append(
                ListInfo(
                    name=name,
                    entries=int(meta.get(b"entries", 0)),
                    bands=int(meta[b"bands"]),
                    hash_version=_text(meta[b"hash_version"]),
                    created=float(meta[b"created"]),
                    version=int(version or 0),
                )
            )
        return infos

    async def _list_meta(self, list_name: str) -> _ListMeta:
        """The list's metadata (cached until the list is seen re-created or gone).

        :class:`UnknownList` if there is none, :class:`StoreInconsistent` if this store had read
        the list before (it vanished).
        """
        cached = self._meta.get(list_name)
        if cached is not None:
            return cached
        meta = await self._read_meta(list_name)
        if meta is None and list_name in self._seen:
            raise self._vanished(list_name)
        if meta is None:
            raise UnknownList(f"no list named {list_name!r}")
        return meta

    async def _read_meta(self, list_name: str) -> _ListMeta | None:
        """Read the list's metadata from Redis (None if it has none) and cache it."""
        validate_list_name(list_name)
        _, _, meta_key = _keys(list_name)
        async with _translated():
            raw = await self._client.hgetall(meta_key)
        if not raw:
            return None
        meta = _ListMeta(
            layout=BandLayout(tuple(tuple(band) for band in json.loads(raw[b"layout"]))),
            hash_version=_text(raw[b"hash_version"]),
            created=float(raw[b"created"]),
            incarnation=_text(raw.get(b"incarnation", b"")),
            layout_text=_text(raw[b"layout"]),
        )
        if meta.hash_version != HASH_VERSION:
            raise StoreError(
                f"list {list_name!r} holds {meta.hash_version} hashes; this guard computes "
                f"{HASH_VERSION}: re-load the list from its images"
            )
        self._meta[list_name] = meta
        self._seen.add(list_name)
        return meta

    def _forget(self, list_name: str) -> None:
        """Drop what this store holds about a list that was re-created or has gone."""
        self._meta.pop(list_name, None)
        self._mirrors.pop(list_name, None)

    # --- writes ------------------------------------------------------------------------------

    async def add(self, list_name: str, entries: Iterable[Entry], *, bands: int = 4) -> AddResult:
        """Add entries (idempotent: an entry with the same aHash and pHash is already present).

        The list is created with ``bands`` bands if it does not exist; an existing list keeps its
        own. Low-information aHashes are refused before anything is written.
        """
        batch = list(entries)
        for entry in batch:
            if is_low_information(entry.ahash):
                raise LowInformationEntry(
                    f"{entry.source or to_hex(entry.ahash)}: low-information hash "
                    f"{to_hex(entry.ahash)} (a flat or near-flat image) cannot be listed"
                )
        if bands not in BAND_COUNTS:
            raise ValueError(f"bands must be one of {BAND_COUNTS}, got {bands}")
        validate_list_name(list_name)
        meta = self._meta.get(list_name) or await self._read_meta(list_name)
        if meta is None:
            layout = default_layout(bands)
            meta = _ListMeta(
                layout=layout,
                hash_version=HASH_VERSION,
                created=time.time(),
                incarnation="",  # the add script makes one
                layout_text=json.dumps([list(band) for band in layout.bands]),
            )
        added = present = 0
        now = time.time()
        batches = [batch[i : i + WRITE_BATCH] for i in range(0, len(batch), WRITE_BATCH)] or [[]]
        for number, chunk in enumerate(batches):
            try:
                done, already, meta = await self._add_batch(list_name, meta, chunk, now)
            except _Recreated:
                if number > 0:
                    raise
                # Our cached metadata is stale (the list was dropped and re-created with other
                # settings, or changed by hand): read it again, once.
                self._forget(list_name)
                fresh = await self._read_meta(list_name)
                if fresh is None:
                    raise
                meta = fresh
                done, already, meta = await self._add_batch(list_name, meta, chunk, now)
            added += done
            present += already
        async with _translated():
            await self._client.sadd(LISTS_KEY, list_name)
        self._seen.add(list_name)
        return AddResult(added=added, present=present)

    async def _add_batch(
        self, list_name: str, meta: _ListMeta, batch: Sequence[Entry], now: float
    ) -> tuple[int, int, _ListMeta]:
        """One call of the add script: (added, present, the metadata with the list's
        incarnation as the script found or made it)."""
        entries_key, ver_key, meta_key = _keys(list_name)
        keys = [entries_key, ver_key, meta_key, list_key(list_name, "snap")]
        args: list[str | int | bytes] = [
            len(meta.layout.bands),
            meta.layout_text,
            meta.hash_version,
            repr(now),  # `created`, if this call creates the list
            secrets.token_hex(8),
        ]
        for entry in batch:
            if entry.added_at is None:
                entry = Entry(entry.ahash, entry.phash, entry.source, entry.label, now)
            keys += [
                band_key(list_name, i, v) for i, v in enumerate(meta.layout.values(entry.ahash))
            ]
            args += [
                to_signed(entry.ahash),
                _phash_text(entry.phash),
                _entry_json(entry),
                snapshot_record(entry.ahash, entry.phash),
            ]
        async with _translated():
            done, already, incarnation = await self._add(keys=keys, args=args)
        incarnation = _text(incarnation or b"")
        if incarnation != meta.incarnation:
            meta = dataclasses.replace(meta, incarnation=incarnation)
        self._meta[list_name] = meta
        return int(done), int(already), meta

    async def remove(self, list_name: str, ahash: int, phash: int | None = None) -> int:
        """Remove the entries with this aHash (only the one with this pHash, if given).

        Returns how many entries were removed (0 if none matched).
        """
        entries_key, ver_key, meta_key = _keys(list_name)

        async def remove(meta: _ListMeta) -> int:
            bands = [band_key(list_name, i, v) for i, v in enumerate(meta.layout.values(ahash))]
            async with _translated():
                removed = await self._remove(
                    keys=[entries_key, ver_key, meta_key, list_key(list_name, "snap"), *bands],
                    args=[
                        to_signed(ahash),
                        "" if phash is None else to_hex(phash),
                        _packed(ahash),
                        meta.layout_text,
                    ],
                )
            return int(removed)

        return await self._on_current_list(list_name, remove)

    async def _on_current_list(
        self, list_name: str, work: Callable[[_ListMeta], Awaitable[T]]
    ) -> T:
        """``work(meta)``; if the list turns out re-created since this store read it (dropped,
        flushed or lost in a restart, and loaded again: layout, hash version and entries may
        all differ), ``work`` again, once, on the list as it is now."""
        try:
            return await work(await self._list_meta(list_name))
        except _Recreated:
            self._forget(list_name)
        return await work(await self._list_meta(list_name))

    async def drop(self, list_name: str) -> int:
        """Delete a whole list (every key under its hash tag). Returns the number of keys deleted.

        Not atomic: a reader may see the list shrink while it goes. Meant for temporary lists
        (``guard eval``) and for removing a list for good.
        """
        validate_list_name(list_name)
        deleted = 0
        async with _translated():
            await self._client.srem(LISTS_KEY, list_name)
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=list_key(list_name, "*"), count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._client.delete(*batch)
                    batch = []
            if batch:
                deleted += await self._client.delete(*batch)
        self._forget(list_name)
        self._seen.discard(list_name)  # gone on purpose
        return deleted

    # --- reads -------------------------------------------------------------------------------

    async def version(self, list_name: str) -> int:
        """The list's change counter: it moves on every add or remove that changed something."""
        _, ver_key, _ = _keys(list_name)
        async with _translated():
            return int(await self._client.get(ver_key) or 0)

    async def entries(self, list_name: str) -> AsyncIterator[Entry]:
        """Every entry of a list (for export), in no particular order."""
        await self._list_meta(list_name)
        entries_key, _, _ = _keys(list_name)
        async with _translated():
            async for field, value in self._client.hscan_iter(entries_key, count=1000):
                for entry in _entries_from_json(from_signed(int(field)), value):
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
        Each match says whether its pHash confirms it; the best match per entry comes first,
        confirmed before unconfirmed, then by distance. ``limit`` keeps only the best ones (the
        first decides a list's verdict): with the mirror, the others are never fetched.
        """
        transforms: Sequence[Transform] = list(TRANSFORMS) if dihedral else ["identity"]
        queries: list[_Query] = [
            (*frame.variant(t), t, frame.frame) for frame in frames for t in transforms
        ]
        return await self._on_current_list(
            list_name,
            lambda meta: self._lookup(list_name, meta, queries, radius, confirm_radius, limit),
        )

    async def _lookup(
        self,
        list_name: str,
        meta: _ListMeta,
        queries: Sequence[_Query],
        radius: int,
        confirm_radius: int,
        limit: int | None,
    ) -> list[Match]:
        """One lookup against the list as ``meta`` describes it; raises :class:`_Recreated` if
        Redis holds another incarnation of the list."""
        # An animation's hundreds of frames make a lookup seconds of CPU: never on the event loop.
        many = len(queries) > INLINE_QUERIES
        mirror = self._mirror_for(list_name, meta)
        if mirror is not None:
            pairs = [(q[0], q[1]) for q in queries]
            ranked = await _run(many, mirror.rank, pairs, radius, confirm_radius, limit)
            mirrored = await self._fetch_ranked(list_name, meta, mirror, ranked, queries, limit)
            if mirrored is not None:
                return mirrored
        probe_keys = await _run(many, _probe_keys, list_name, meta.layout, queries, radius)
        entries_key, _, meta_key = _keys(list_name)
        async with _translated():
            pipe = self._client.pipeline(transaction=False)
            pipe.exists(meta_key)
            pipe.hget(meta_key, "incarnation")
            for start in range(0, len(probe_keys), SUNION_KEYS):
                pipe.sunion(probe_keys[start : start + SUNION_KEYS])
            exists, incarnation, *unions = await pipe.execute()
        if not exists:
            raise self._vanished(list_name)
        if _text(incarnation or b"") != meta.incarnation:
            raise _Recreated  # the probes followed the layout of a list that is gone
        members: set[bytes] = set().union(*unions)
        near = await _run(many, _near, members, queries, radius)
        if not near:
            return []
        async with _translated():
            records = await self._client.hmget(entries_key, [to_signed(h) for h in near])
        return _matches(list_name, zip(near, records), queries, radius, confirm_radius)[:limit]

    # --- the worker-local mirror ---------------------------------------------------------------

    async def refresh_mirror(self, list_name: str) -> Mirror | None:
        """Load the list's mirror now (lookups otherwise load it in the background on first use).

        None when the mirror is off, the list has more than ``max_entries`` entries, or its
        snapshot does not agree with its entries (a list written by an older guard: lookups then
        stay on the Redis index, which is always exact).
        """
        if self._mirror is None:
            return None
        meta = await self._list_meta(list_name)
        task = self._refreshes.get(list_name)
        if task is None:
            task = self._start_refresh(list_name, meta)
        return await asyncio.shield(task)

    def _vanished(self, list_name: str) -> StoreInconsistent:
        """A list this store had read is gone (a restart without persistence, FLUSHDB, an
        eviction): an error, never "no match" (reliability H37)."""
        self._forget(list_name)
        return StoreInconsistent(
            f"list {list_name!r} has vanished from Redis (restarted without persistence, "
            f"flushed or evicted?): re-load it (guard load ... --list {list_name})"
        )

    def _mirror_for(self, list_name: str, meta: _ListMeta) -> Mirror | None:
        """The list's mirror if one is loaded; else start loading one (at most once per
        ``retry_seconds``) and answer from the Redis index meanwhile."""
        if self._mirror is None:
            return None
        mirror = self._mirrors.get(list_name)
        if mirror is not None:
            return mirror
        last = self._mirror_tried.get(list_name)
        if list_name not in self._refreshes and (
            last is None or time.monotonic() - last >= self._mirror.retry_seconds
        ):
            self._start_refresh(list_name, meta)
        return None

    def _start_refresh(self, list_name: str, meta: _ListMeta) -> asyncio.Task[Mirror | None]:
        self._mirror_tried[list_name] = time.monotonic()
        task = asyncio.ensure_future(self._load_mirror(list_name, meta))
        self._refreshes[list_name] = task
        task.add_done_callback(lambda _: self._refreshes.pop(list_name, None))
        return task

    async def _read_together(self, reads: Callable[[Any], object]) -> list[Any]:
        """Run ``reads`` (queued on a pipeline) in one MULTI: one consistent (incarnation,
        version) with the records read.

        A Redis over ``maxmemory`` refuses every command queued in a MULTI, reads included
        (Redis 6 and 7): lookups would then fail until memory is freed. So under OOM the reads
        run again as a plain pipeline. A full ``noeviction`` Redis refuses the writes that could
        come between them, except removals, which at worst take a record away: the answer then
        skips that entry, as it skips one removed between two round trips.
        """
        pipe = self._client.pipeline(transaction=True)
        reads(pipe)
        try:
            return list(await pipe.execute())
        except ResponseError as error:
            # redis-py turns "-OOM ..." into OutOfMemoryError and drops the "OOM" from the text.
            if not isinstance(error, OutOfMemoryError) and "maxmemory" not in str(error):
                raise
        pipe = self._client.pipeline(transaction=False)
        reads(pipe)
        return list(await pipe.execute())

    async def _load_mirror(self, list_name: str, meta: _ListMeta) -> Mirror | None:
        _, ver_key, meta_key = _keys(list_name)
        assert self._mirror is not None
        try:
            async with _translated():
                size = int(await self._client.hget(meta_key, "entries") or 0)
                if size > self._mirror.max_entries:
                    return None
                version, incarnation, snapshot, size = await self._read_together(
                    lambda pipe: (
                        pipe.get(ver_key),
                        pipe.hget(meta_key, "incarnation"),
                        pipe.get(list_key(list_name, "snap")),
                        pipe.hget(meta_key, "entries"),
                    )
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
            _text(incarnation or b""),
        )
        self._mirrors[list_name] = mirror
        return mirror

    async def _fetch_ranked(
        self,
        list_name: str,
        meta: _ListMeta,
        mirror: Mirror,
        ranked: Ranked,
        queries: Sequence[_Query],
        limit: int | None,
    ) -> list[Match] | None:
        """Matches for the mirror's best entries, or None if the mirror is stale (then a
        reload starts, as often as ``retry_seconds`` allows).

        The incarnation and version check and the entries' records come in one MULTI, so the
        answer is exact for the (incarnation, version) the mirror holds, or not used at all.
        Raises :class:`_Recreated` if the list is not the incarnation ``meta`` describes.
        """
        chosen = range(len(ranked) if limit is None else min(limit, len(ranked)))
        fields = list(dict.fromkeys(int(mirror.ahashes[ranked.positions[i]]) for i in chosen))
        entries_key, ver_key, meta_key = _keys(list_name)

        def reads(pipe: Any) -> None:
            pipe.exists(meta_key)
            pipe.hget(meta_key, "incarnation")
            pipe.get(ver_key)
            if fields:
                pipe.hmget(entries_key, [to_signed(h) for h in fields])

        async with _translated():
            exists, incarnation, *replies = await self._read_together(reads)
        if not exists:
            raise self._vanished(list_name)
        incarnation = _text(incarnation or b"")
        if incarnation != meta.incarnation:
            raise _Recreated
        if (incarnation, int(replies[0] or 0)) != (mirror.incarnation, mirror.version):
            if self._mirrors.get(list_name) is mirror:
                del self._mirrors[list_name]
            self._mirror_for(list_name, meta)  # reload it (rate-limited)
            return None
        records = {
            ahash: _entries_from_json(ahash, record)
            for ahash, record in zip(fields, replies[1] if fields else [])
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

    async def check_eviction(self, *, allow_eviction: bool = False) -> str | None:
        """Refuse a Redis that may evict guard's keys; return a warning to show, if any.

        ``allkeys-*`` policies evict band sets when memory runs short, and a blocklist that
        silently loses entries fails open unnoticed. ``noeviction`` (Redis's default) and
        ``volatile-*`` are safe: guard never sets a TTL. A managed Redis that refuses CONFIG
        gets a warning, not a refusal. Raises :class:`EvictionUnsafe` unless ``allow_eviction``.
        """
        try:
            async with _translated():
                reply = await self._client.config_get("maxmemory-policy")
        except StoreUnavailable:
            raise
        except StoreError as error:
            return f"cannot read Redis's maxmemory-policy ({error}): make sure it is noeviction"
        # Keys come back as bytes (decode_responses is off); the typing says str.
        values: dict[Any, Any] = dict(reply)
        policy = _text(values.get(b"maxmemory-policy") or values.get("maxmemory-policy") or "")
        if not policy.startswith("allkeys-"):
            return None
        message = (
            f"Redis's maxmemory-policy is {policy}: it may evict guard's lists when memory runs "
            "short, and uploads would then pass unchecked. Set maxmemory-policy to noeviction "
            "(or a volatile-* policy: guard sets no TTLs)"
        )
        if not allow_eviction:
            raise EvictionUnsafe(message + ", or set redis.allow_eviction: true to run anyway")
        return message

    async def check_meta(self, list_name: str) -> None:
        """Raise unless the list's metadata is readable and made for this guard's hashes
        (:class:`UnknownList` if it does not exist, :class:`StoreInconsistent` if it existed
        when this store last read it, :class:`StoreError` if it is damaged)."""
        self._meta.pop(list_name, None)
        try:
            meta = await self._list_meta(list_name)
        except (KeyError, ValueError, TypeError) as error:
            raise StoreError(
                f"list {list_name!r} has unreadable metadata ({type(error).__name__}: {error}): "
                "re-load it"
            ) from error
        if len(meta.layout.bands) not in BAND_COUNTS:
            raise StoreError(f"list {list_name!r} has {len(meta.layout.bands)} bands")

    async def verify(self, list_name: str) -> VerifyReport:
        """Prove a list whole: every aHash of ``entries`` is in exactly its band sets, the band
        sets hold nothing else, the meta count equals the entries, and the snapshot (if any)
        holds exactly one record per entry. Reads in batches (SCAN, HSCAN, SSCAN); holds
        8 bytes per distinct aHash and one snapshot record per entry. A list being written
        meanwhile may show transient mismatches.
        """
        meta = await self._list_meta(list_name)
        entries_key, _, meta_key = _keys(list_name)
        counted = 0
        fields = array("q")
        records = bytearray()  # what the snapshot must hold: one record per entry
        async with _translated():
            meta_entries = int(await self._client.hget(meta_key, "entries") or 0)
            async for field, value in self._client.hscan_iter(entries_key, count=1000):
                fields.append(int(field))
                for entry in _entries_from_json(from_signed(int(field)), value):
                    records += snapshot_record(entry.ahash, entry.phash)
                    counted += 1
        hashes = np.sort(np.frombuffer(fields.tobytes(), dtype=np.int64).view(np.uint64))
        bands = len(meta.layout.bands)
        expected = np.array(band_values_of(hashes, meta.layout))
        found = np.zeros((bands, len(hashes)), dtype=bool)
        stray = 0
        examples: list[str] = []
        band_pattern = re.compile(rb"b(\d+):(\d+)")
        prefix = list_key(list_name, "").encode()
        async with _translated():
            async for key in self._client.scan_iter(match=list_key(list_name, "b*"), count=1000):
                parsed = band_pattern.fullmatch(key[len(prefix) :])
                if parsed is None:
                    continue
                band, value = int(parsed[1]), int(parsed[2])
                async for member in self._client.sscan_iter(key, count=1000):
                    ahash = from_signed(int(member))
                    at = int(np.searchsorted(hashes, np.uint64(ahash)))
                    known = at < len(hashes) and int(hashes[at]) == ahash
                    if known and band < bands and int(expected[band, at]) == value:
                        found[band, at] = True
                        continue
                    stray += 1
                    if len(examples) < 10:
                        examples.append(f"stray {to_hex(ahash)} in {_text(key)}")
        missing = int(found.size - found.sum())
        for band, at in zip(*np.nonzero(~found)):
            if len(examples) >= 10:
                break
            examples.append(f"missing {to_hex(int(hashes[at]))} from band {int(band)}")
        snapshot, snap_missing, snap_stray = await self._verify_snapshot(list_name, bytes(records))
        return VerifyReport(
            list=list_name,
            entries=counted,
            meta_entries=meta_entries,
            hashes=len(hashes),
            bands=bands,
            missing=missing,
            stray=stray,
            snapshot=snapshot,
            snapshot_missing=snap_missing,
            snapshot_stray=snap_stray,
            examples=tuple(examples),
        )

    async def _verify_snapshot(
        self, list_name: str, expected: bytes
    ) -> tuple[int | None, int, int]:
        """(records in the snapshot or None if there is none, missing records, stray records)."""
        async with _translated():
            packed = await self._client.get(list_key(list_name, "snap"))
        if not isinstance(packed, bytes):
            return None, 0, 0
        whole = len(packed) - len(packed) % RECORD_SIZE
        record = np.dtype(f"V{RECORD_SIZE}")
        snap = np.frombuffer(packed[:whole], dtype=record)
        want = np.unique(np.frombuffer(expected, dtype=record))
        distinct = np.unique(snap)
        # Duplicates and a torn tail are stray too: the snapshot must be exactly the entries.
        stray = int(np.setdiff1d(distinct, want).size) + len(snap) - len(distinct)
        stray += 1 if whole != len(packed) else 0
        return len(snap), int(np.setdiff1d(want, distinct).size), stray


_Query = tuple[int, int, Transform, int]  # (aHash, pHash, transform, frame) of one query variant


#: Query hashes (one frame's 8 flips and rotations) up to which a lookup's CPU work runs inline;
#: more (the frames of an animation) run in a worker thread.
INLINE_QUERIES = len(TRANSFORMS)
#: Band keys per SUNION: an animation probes millions of keys, and one command that large would
#: hold Redis (single-threaded) for everyone.
SUNION_KEYS = 10_000


async def _run(off_loop: bool, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, in a worker thread when ``off_loop``."""
    return await asyncio.to_thread(function, *args) if off_loop else function(*args)


def _probe_keys(
    list_name: str, layout: BandLayout, queries: Sequence[_Query], radius: int
) -> list[str]:
    """The band keys a lookup reads, each once."""
    return list(
        {
            band_key(list_name, band, value)
            for ahash in {query[0] for query in queries}
            for band, value in layout.probes(ahash, radius)
        }
    )


def _near(members: set[bytes], queries: Sequence[_Query], radius: int) -> list[int]:
    """The candidates within ``radius`` of some query (numpy: thousands of queries x tens of
    thousands of candidates is a matrix, not a Python loop)."""
    if not members:
        return []
    candidates = np.fromiter(
        (from_signed(int(member)) for member in members), dtype=np.uint64, count=len(members)
    )
    wanted = np.unique(np.array([query[0] for query in queries], dtype=np.uint64))
    keep = np.zeros(len(candidates), dtype=bool)
    for start in range(0, len(wanted), 16):
        block = wanted[start : start + 16]
        keep |= (popcount(candidates[:, None] ^ block[None, :]) <= radius).any(axis=1)
    return [int(value) for value in candidates[keep]]


def _matches(
    list_name: str,
    found: Iterable[tuple[int, bytes | str | None]],
    queries: Sequence[_Query],
    radius: int,
    confirm_radius: int,
) -> list[Match]:
    """Matches for the near aHashes and their entry records, best first."""
    matches = []
    for ahash, record in found:
        if record is None:
            continue  # removed between the two round trips of a Redis-index lookup
        for entry in _entries_from_json(ahash, record):
            matches.append(_best_match(list_name, entry, queries, radius, confirm_radius))
    matches.sort(key=lambda m: (not m.confirmed, m.distance, m.phash_distance or 0))
    return matches


def _best_match(
    list_name: str, entry: Entry, queries: Sequence[_Query], radius: int, confirm_radius: int
) -> Match:
    """The query variant that matches ``entry`` best: confirmed first, then nearest."""

    def score(query: _Query) -> tuple[bool, int, int]:
        phash_distance = 0 if entry.phash is None else hamming(entry.phash, query[1])
        return (phash_distance > confirm_radius, hamming(entry.ahash, query[0]), phash_distance)

    best = min((q for q in queries if hamming(entry.ahash, q[0]) <= radius), key=score)
    unconfirmed, distance, phash_distance = score(best)
    return Match(
        list=list_name,
        entry=entry,
        distance=distance,
        phash_distance=None if entry.phash is None else phash_distance,
        confirmed=not unconfirmed,
        transform=best[2],
        frame=best[3],
    )


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Redis exceptions in, guard exceptions out (the message says what to check)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise StoreUnavailable(f"Redis is unavailable: {error}") from error
    except ResponseError as error:
        if _RECREATED_REPLY in str(error):
            raise _Recreated(f"Redis refused a command: {error}") from error
        raise StoreError(f"Redis refused a command: {error}") from error
    except RedisError as error:
        raise StoreError(f"Redis error: {error}") from error


def _lease_embedded(path: Path | None) -> embedded.Lease:
    """Find or start the embedded server for ``path`` and lease it (guard/embedded.py)."""
    if path is None:
        path = default_data_dir() / EMBEDDED_FILE
    try:
        return embedded.acquire(path.absolute())
    except (OSError, RuntimeError, ValueError) as error:
        raise StoreUnavailable(
            f"cannot start the embedded Redis at {path.absolute()}: {error}"
        ) from error


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Store.verify` found in one list (``ok`` when everything agrees)."""

    list: str
    entries: int  # entries in `entries` (an aHash may hold several)
    meta_entries: int  # the count kept in `meta`
    hashes: int  # distinct aHashes in `entries`
    bands: int
    missing: int  # (aHash, band) pairs whose band set lacks the aHash
    stray: int  # band-set members not in `entries`, or in a set their band value does not name
    snapshot: int | None  # records in the packed `snap` key; None: the list has no snapshot
    snapshot_missing: int  # entries of `entries` without their snapshot record
    snapshot_stray: int  # snapshot records that are no entry (and duplicates, a torn tail)
    examples: tuple[str, ...] = ()  # up to 10 mismatches, for the operator

    @property
    def ok(self) -> bool:
        return (
            self.entries == self.meta_entries
            and self.missing == 0
            and self.stray == 0
            and self.snapshot_missing == 0
            and self.snapshot_stray == 0
        )

    @property
    def findings(self) -> tuple[str, ...]:
        """Each mismatch in words ("no snapshot" is a finding, not an error)."""
        found = []
        if self.entries != self.meta_entries:
            found.append(f"meta counts {self.meta_entries} entries, `entries` holds {self.entries}")
        if self.missing:
            found.append(f"{self.missing} band memberships missing")
        if self.stray:
            found.append(f"{self.stray} stray band members")
        if self.snapshot is None:
            found.append("no snapshot")
        elif self.snapshot_missing or self.snapshot_stray:
            found.append(f"snapshot: {self.snapshot_missing} missing, {self.snapshot_stray} stray")
        return tuple(found)
