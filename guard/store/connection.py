"""The Redis connection: client settings that survive a restart, guard's errors for Redis's,
and the lease on the embedded server."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from guard import embedded
from guard.config import EMBEDDED_FILE, default_data_dir
from guard.errors import StoreError, StoreUnavailable

T = TypeVar("T")
ConnectionT = TypeVar("ConnectionT", bound=aioredis.connection.AbstractConnection)

#: Seconds a pooled connection may sit idle before its next command is preceded by a PING (a
#: connection that a restart, a proxy or a firewall closed meanwhile is replaced, not used).
HEALTH_CHECK_SECONDS = 30


class RetryIfDead(Retry):
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
    """``base`` with :class:`RetryIfDead` as each connection's retry policy."""

    class Guarded(base):  # type: ignore[valid-type,misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.retry = RetryIfDead(self)
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
      (:class:`RetryIfDead`): a connection whose close the client has not yet seen (a
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


def client(url: str, socket_timeout: float, connect_timeout: float) -> aioredis.Redis:
    """A client with :func:`client_options` (no connection is made yet); a Redis Cluster's
    (:func:`cluster_client`) for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    if is_cluster_url(url):
        return cluster_client(url, socket_timeout, connect_timeout)
    return aioredis.Redis.from_url(url, **client_options(url, socket_timeout, connect_timeout))


#: URL schemes that name a Redis Cluster (any one node of it; the client finds the others).
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster_url(url: str) -> bool:
    return url.lower().startswith(CLUSTER_SCHEMES)


def cluster_client(url: str, socket_timeout: float, connect_timeout: float) -> aioredis.Redis:
    """redis-py's cluster client (``redis.asyncio.cluster.RedisCluster``) for a
    ``redis+cluster://HOST:PORT`` URL (``rediss+cluster://``: TLS), with the timeouts, RESP2 and
    health checks of :func:`client_options`.

    Its own retry policy replaces :class:`RetryIfDead`: a command that meets a dead connection,
    a timeout or a cluster that is down is retried after the client re-reads the slot map (a
    failover moved the slot), at most twice with no backoff, so a command costs at most three
    socket timeouts. The caller's deadline (the middleware's decision deadline) bounds it
    further. Typed as ``aioredis.Redis``: it offers every command guard sends, with the same
    replies (tests/test_cluster.py runs them all on a real cluster).
    """
    scheme, rest = url.split("://", 1)
    plain = f"{scheme.lower().removesuffix('+cluster')}://{rest}"
    options = client_options(plain, socket_timeout, connect_timeout)
    del options["connection_class"], options["retry_on_error"]
    options["retry"] = Retry(NoBackoff(), 2)
    cluster = RedisCluster.from_url(plain, **options)
    return cast(aioredis.Redis, cluster)


def socket_timeout_of(redis: aioredis.Redis) -> float | None:
    """The socket timeout a client was made with (a plain client's or a cluster client's)."""
    holder: Any = getattr(redis, "connection_pool", redis)  # a cluster client holds its own
    settings: dict[str, Any] = holder.connection_kwargs
    timeout = settings.get("socket_timeout")
    return None if timeout is None else float(timeout)


async def replicated(redis: aioredis.Redis, counter: str) -> None:
    """On a Redis Cluster, wait until a replica of the primary serving ``counter``'s slot has
    every write that primary acknowledged so far; raise StoreUnavailable if none confirms it
    within half the socket timeout. Nothing on a single Redis, or for a slot whose primary has
    no replica. ``counter`` is an integer key of the list (its ``ver``).

    WAIT only counts the writes of its own connection, and redis-py's cluster client takes a
    pooled connection per command: so ``INCRBY counter 0`` (a write that changes nothing) and
    ``WAIT 1 <ms>`` go together on one connection to that primary; the write's replication
    offset is after everything the primary acknowledged before it. A primary that no longer
    serves the slot (a failover) answers MOVED: the caller is told to run the load again.

    WAIT does not make Redis strongly consistent: a failover that promotes a replica which
    missed the write (one of several replicas, or one that failed meanwhile) may lose it.
    """
    if not isinstance(redis, RedisCluster):
        return
    cluster = cast(RedisCluster, redis)
    nodes = cluster.nodes_manager.slots_cache.get(cluster.keyslot(counter), [])
    if len(nodes) < 2:
        return
    primary = nodes[0]
    milliseconds = max(1, int((socket_timeout_of(redis) or 1.0) * 500))
    connection = primary.acquire_connection()
    try:
        await connection.send_packed_command(
            connection.pack_commands([("INCRBY", counter, 0), ("WAIT", 1, milliseconds)])
        )
        failure: RedisError | None = None
        try:
            await connection.read_response()
        except ResponseError as error:  # MOVED: the slot is served elsewhere now
            failure = error
        confirmed = await connection.read_response()
    except (RedisError, OSError) as error:
        await connection.disconnect()
        failure, confirmed = error, 0
    finally:
        primary.release(connection)
    if failure is not None or int(confirmed) < 1:
        raise StoreUnavailable(
            f"Redis Cluster: no replica of {primary.name} confirmed the write within "
            f"{milliseconds} ms ({failure or 'WAIT timed out'}); it may be on the primary only: "
            "run it again"
        )


def is_cluster(redis: aioredis.Redis) -> bool:
    return isinstance(redis, RedisCluster)


#: Read commands on keys of one slot, run in one step (a Redis Cluster's MULTI for guard's
#: reads: :func:`read_in_one_step`). ARGV: per key, its command, its argument count, arguments.
#: An HMGET of many fields goes in slices (Lua's unpack() stops at about 8000 values).
READ_SCRIPT = """
local out, at = {}, 1
for i = 1, #KEYS do
  local command, count = ARGV[at], tonumber(ARGV[at + 1])
  if command == 'HMGET' and count > 4000 then
    local values = {}
    for first = at + 2, at + 1 + count, 4000 do
      local last = math.min(first + 3999, at + 1 + count)
      for _, value in ipairs(redis.call('HMGET', KEYS[i], unpack(ARGV, first, last))) do
        values[#values + 1] = value
      end
    end
    out[i] = values
  else
    out[i] = redis.call(command, KEYS[i], unpack(ARGV, at + 2, at + 1 + count))
  end
  at = at + 2 + count
end
return out
"""


class _Queued:
    """Stands in for a pipeline: keeps the read commands queued on it (key first)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []

    def __getattr__(self, command: str) -> Callable[..., None]:
        def queue(key: str, *args: Any) -> None:
            flat = args[0] if len(args) == 1 and isinstance(args[0], list) else args
            self.keys.append(key)
            self.args += [command.upper(), len(flat), *flat]

        return queue


async def read_in_one_step(redis: aioredis.Redis, reads: Callable[[Any], object]) -> list[Any]:
    """Run ``reads`` (read commands queued as on a pipeline, each on a key of one slot) in one
    Lua call: atomic and one round trip, as a MULTI is on a single Redis. On a Redis Cluster,
    redis-py runs a transaction's queued commands through a thread each (18 ms a lookup here,
    against 0.8 for this)."""
    queued = _Queued()
    reads(queued)
    return list(await redis.register_script(READ_SCRIPT)(keys=queued.keys, args=queued.args))


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


def cluster_location(url: str) -> str:
    """A cluster URL for messages: scheme, host and port, never a password."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.hostname}:{parts.port or 6379}"


#: How the add and remove scripts refuse to write through metadata that is no longer the list's.
RECREATED_REPLY = "guard: list metadata changed"


class Recreated(StoreError):
    """The list was re-created since this store read its metadata: the scripts refused to
    write through it, or a lookup met another incarnation. Callers read the list again, once
    (:meth:`guard.store.catalog.Catalog.on_current`); a second one reaches the caller as a
    StoreError."""

    def __init__(self, message: str = "the list was re-created while guard read it: try again"):
        super().__init__(message)


#: How the add script refuses to create a list whose name is taken (a rename's new name).
EXISTS_REPLY = "guard: list exists already"


class ListExists(StoreError):
    """``guard rename`` found its new name taken."""


#: How the write scripts refuse a list whose entries are still in an older guard's JSON layout.
UPGRADE_REPLY = "guard: list needs upgrade"


class NeedsUpgrade(StoreError):
    """A list an older guard wrote is read, never changed, until ``guard upgrade`` moves its
    entries to compact records (guard.store.upgrade): an upgraded list cannot be read by
    workers that still run the older guard, so the operator chooses when."""

    def __init__(self, list_name: str) -> None:
        super().__init__(
            f"list {list_name!r} was written by an older guard: run `guard upgrade "
            f"{list_name}` once every worker runs this version (older ones cannot read an "
            "upgraded list), then try again"
        )


class Gone(StoreError):
    """A lookup found no metadata for a list it had read: the catalog turns it into
    :class:`guard.errors.StoreInconsistent` (it knows the list and forgets it)."""


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Redis exceptions in, guard exceptions out (the message says what to check)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as error:
        raise StoreUnavailable(f"Redis is unavailable: {error}") from error
    except (RedisClusterUnreachableError, SlotNotCoveredError, ClusterDownError) as error:
        # A Redis Cluster down, or failing over (no node serves the slot yet).
        raise StoreUnavailable(f"Redis Cluster is unavailable: {error}") from error
    except TryAgainError as error:  # a slot being moved between nodes: ask again later
        raise StoreUnavailable(f"Redis Cluster is moving a slot: {error}") from error
    except MovedError as error:
        raise StoreError(
            f"Redis answered MOVED {error}: the server is a Redis Cluster node, so use a "
            "redis+cluster:// (or rediss+cluster://) URL"
        ) from error
    except ResponseError as error:
        if RECREATED_REPLY in str(error):
            raise Recreated(f"Redis refused a command: {error}") from error
        if EXISTS_REPLY in str(error):
            raise ListExists(f"Redis refused a command: {error}") from error
        raise StoreError(f"Redis refused a command: {error}") from error
    except RedisError as error:
        raise StoreError(f"Redis error: {error}") from error
    except RedisClusterException as error:  # e.g. "Cluster mode is not enabled on this node"
        raise StoreError(
            f"Redis Cluster error: {error} (a single server takes a redis:// URL)"
        ) from error


@asynccontextmanager
async def refusing_old_records(list_name: str) -> AsyncIterator[None]:
    """:func:`translated`, and a write script's refusal of a list an older guard wrote as
    :class:`NeedsUpgrade`."""
    try:
        async with translated():
            yield
    except StoreError as error:
        if UPGRADE_REPLY in str(error):
            raise NeedsUpgrade(list_name) from error
        raise


def lease_embedded(path: Path | None) -> embedded.Lease:
    """Find or start the embedded server for ``path`` and lease it (guard/embedded.py)."""
    if path is None:
        path = default_data_dir() / EMBEDDED_FILE
    try:
        return embedded.acquire(path.absolute())
    except (OSError, RuntimeError, ValueError) as error:
        raise StoreUnavailable(
            f"cannot start the embedded Redis at {path.absolute()}: {error}"
        ) from error
