"""guard.rank_compiled: how guard.mirror uses it (its answers are oracle-tested in
tests/test_mirror.py and tests/test_mirror_patch.py, on this path and the numpy one).

A lookup with a small limit goes to the compiled loops when numba is installed; a mirror mapped
read-only from a shared file ranks there too, without compiling anything during the lookup.
"""

from __future__ import annotations

import logging
import pickle
import random
import threading
from typing import Any

import numpy as np
import pytest
from test_mirror import _oracle

from guard import mih, rank_compiled
from guard import mirror as mirror_module
from guard.bands import default_layout
from guard.mirror import Mirror

pytestmark = pytest.mark.skipif(not rank_compiled.AVAILABLE, reason="numba is not installed")


@pytest.fixture(autouse=True)
def compiled() -> None:
    """The loops ready: a mirror only starts compiling them, in the background."""
    rank_compiled.warm(wait=True)


def _mirror(size: int, seed: int) -> Mirror:
    generator = np.random.default_rng(seed)
    centre = int(generator.integers(0, 2**63))
    flips = generator.random((size, 64)) < 0.08  # a crowd around one hash
    masks = np.packbits(flips, axis=1).view(">u8")[:, 0].astype(np.uint64)
    ahashes = np.uint64(centre) ^ masks
    phashes = generator.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
    has_phash = generator.random(size) < 0.8
    return Mirror(ahashes, phashes, has_phash, default_layout(4), version=1)


def _rows(mirror: Mirror, queries: list[tuple[int, int]], limit: int | None) -> list[Any]:
    ranked = mirror.rank(queries, 12, 12, limit)
    return list(
        zip(
            ranked.positions.tolist(),
            ranked.query.tolist(),
            ranked.distance.tolist(),
            ranked.phash_distance.tolist(),
            ranked.confirmed.tolist(),
            strict=True,
        )
    )


def _queries(mirror: Mirror, rng: random.Random) -> list[tuple[int, int]]:
    ahash = int(mirror.ahashes[rng.randrange(len(mirror))])
    return [(ahash ^ (1 << rng.randrange(64)), rng.getrandbits(64)) for _ in range(8)]


def test_a_limited_lookup_ranks_in_the_compiled_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = _mirror(3000, 1)
    queries = _queries(mirror, random.Random(1))
    calls: list[int] = []
    real = rank_compiled.best

    def spy(*args: Any, **options: Any) -> tuple[int, bool]:
        calls.append(len(args[-2]))  # the keys it fills: one per wanted entry
        return real(*args, **options)

    monkeypatch.setattr(rank_compiled, "best", spy)
    compiled = [_rows(mirror, queries, limit) for limit in (1, 5)]
    assert calls == [1, 5]
    _rows(mirror, queries, None)  # every match: numpy
    monkeypatch.setattr(mirror_module, "COMPILED_LIMIT", 4)
    _rows(mirror, queries, 5)  # wider than the compiled loops take: numpy
    assert calls == [1, 5]
    monkeypatch.setattr(mirror_module, "COMPILED", False)
    assert [_rows(mirror, queries, limit) for limit in (1, 5)] == compiled
    assert len(compiled[1]) == 5  # the crowd was near enough to fill the limit


def test_a_mirror_mapped_read_only_ranks_without_compiling() -> None:
    """As guard.store.shared_mirrors maps it: pickle protocol 5, every array out of band and
    read-only. The loops for such arrays were compiled when the first mirror was built."""
    built = _mirror(2000, 2)
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(built, protocol=5, buffer_callback=buffers.append)
    mapped = pickle.loads(meta, buffers=[memoryview(b.raw()).toreadonly() for b in buffers])
    assert not mapped.ahashes.flags.writeable and not mapped._index.hashes.flags.writeable
    compiled_before = len(rank_compiled._kernels._best.signatures)
    rng = random.Random(2)
    for _ in range(20):
        queries = _queries(built, rng)
        assert _rows(mapped, queries, 1) == _rows(built, queries, 1)
        assert _rows(mapped, queries, 3) == _rows(built, queries, 3)
    assert len(rank_compiled._kernels._best.signatures) == compiled_before


def test_a_mapped_mirror_answers_crowded_queries_by_its_phash_index_without_compiling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pHash index's loop (guard.mirror's way for a crowded query) on read-only arrays too,
    with the numpy answer; forced on a small list, with room for one pair at first."""
    monkeypatch.setattr(rank_compiled, "_PAIRS_ROOM", 1)
    monkeypatch.setattr(mirror_module, "CONFIRM_INDEX_FROM", 0)
    monkeypatch.setattr(mirror_module, "ROUTE_FACTOR", 0.0)
    generator = np.random.default_rng(4)
    built = _mirror(3000, 4)
    built = Mirror(built.ahashes, built.phashes, np.ones(3000, bool), default_layout(4), 1)
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(built, protocol=5, buffer_callback=buffers.append)
    mapped = pickle.loads(meta, buffers=[memoryview(b.raw()).toreadonly() for b in buffers])
    assert not mapped._confirm_index.hashes.flags.writeable
    kernels = rank_compiled._kernels
    compiled_before = len(kernels._pairs_within.signatures), len(kernels._best.signatures)
    calls = 0
    real = rank_compiled.pairs_within

    def counted(*args: Any, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **options)

    monkeypatch.setattr(rank_compiled, "pairs_within", counted)
    rng = random.Random(4)
    for turn in range(20):
        queries = _queries(built, rng)
        if turn % 2:  # an upload whose pHash is near an entry's: confirmed matches
            near = int(built.phashes[rng.randrange(3000)])
            queries = [(a, near ^ int(generator.integers(0, 16))) for a, _ in queries]
        monkeypatch.setattr(mirror_module, "COMPILED", True)
        compiled = [_rows(mapped, queries, limit) for limit in (1, 3)]
        monkeypatch.setattr(mirror_module, "COMPILED", False)
        assert compiled == [_rows(built, queries, limit) for limit in (1, 3)]
    assert calls >= 40
    assert (len(kernels._pairs_within.signatures), len(kernels._best.signatures)) == compiled_before


def test_the_probed_count_is_what_the_index_would_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """rank_compiled.probed (which decides whether a crowded query goes by the pHash index)
    counts the hashes of the probed runs as guard.mih does."""
    monkeypatch.setattr(mih, "SCAN_SHARE", float("inf"))  # always probe: count every run
    rng = random.Random(6)
    for seed in range(6):
        mirror = _mirror(rng.choice([500, 5000]), 20 + seed)
        index = mirror._index
        for radius in (0, 3, 8, 12):
            queries = np.array([a for a, _ in _queries(mirror, rng)], dtype=np.uint64)
            counted = rank_compiled.probed(index.offsets, index.plan(radius), queries)
            assert counted == index.candidates(queries, radius) > 0


@pytest.mark.parametrize("route", [False, True])
def test_a_lookup_split_over_two_threads_equals_the_oracle(
    monkeypatch: pytest.MonkeyPatch, route: bool
) -> None:
    """A big list ranks the two halves of a query's variants at once (rank_compiled.SPLIT_FROM,
    forced here): the merged best few, the crowded query's pHash index included, are the
    oracle's; each half ran on its own thread."""
    monkeypatch.setattr(rank_compiled, "SPLIT_FROM", 0)
    monkeypatch.setattr(mirror_module, "CONFIRM_INDEX_FROM", 0)
    monkeypatch.setattr(mirror_module, "ROUTE_FACTOR", 0.0 if route else float("inf"))
    threads: list[str] = []
    real = rank_compiled._in_helper

    def watched(function: Any, *args: Any) -> Any:
        def run(*inner: Any) -> Any:
            threads.append(threading.current_thread().name)
            return function(*inner)

        return real(run, *args)

    monkeypatch.setattr(rank_compiled, "_in_helper", watched)
    rng = random.Random(5)
    for seed in range(12):
        built = _mirror(3000, 10 + seed)
        mirror = Mirror(built.ahashes, built.phashes, np.ones(3000, bool), default_layout(4), 1)
        ahashes = [int(a) for a in mirror.ahashes]
        phashes: list[int | None] = [int(p) for p in mirror.phashes]
        for turn in range(6):
            queries = _queries(mirror, rng)[: rng.randint(1, 8)]
            if turn % 2:  # pHashes near an entry's: confirmed matches, in both halves
                near = int(mirror.phashes[rng.randrange(3000)])
                queries = [(a, near ^ (1 << rng.randrange(64))) for a, _ in queries]
            for limit in (1, 3, 5):
                expected = _oracle(ahashes, phashes, queries, 12, 12, limit)
                assert _rows(mirror, queries, limit) == expected, (seed, turn, limit)
    assert threads and set(threads) == {threads[0]} and threads[0].startswith("guard-rank")


@pytest.mark.parametrize("share", [float("inf"), -1.0])  # the probed runs, then the scan
def test_a_list_crowded_past_the_loops_buffers_equals_the_oracle(
    monkeypatch: pytest.MonkeyPatch, share: float
) -> None:
    """Thousands of entries within the radius of each query: more than the runs loop gathers
    before it ranks them (4096) and more than a scan's chunk (4096 entries)."""
    monkeypatch.setattr(rank_compiled, "SCAN_SHARE", share)
    mirror = _mirror(14_000, 3)
    ahashes = [int(a) for a in mirror.ahashes]
    phashes = [int(p) if h else None for p, h in zip(mirror.phashes, mirror.has_phash, strict=True)]
    rng = random.Random(3)
    for _ in range(3):
        queries = _queries(mirror, rng)
        for limit in (1, 4):
            expected = _oracle(ahashes, phashes, queries, 12, 12, None)
            assert len(expected) > 5000  # crowded indeed
            assert _rows(mirror, queries, limit) == expected[:limit]


def test_a_mirror_does_not_wait_for_the_loops_and_numpy_ranks_until_they_are_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first compilation takes seconds: building a mirror only starts it in the background,
    and lookups meanwhile rank in numpy, with the same answers."""
    gate = threading.Event()
    compiling = threading.Event()
    real = rank_compiled._compile

    def slow() -> None:
        compiling.set()
        assert gate.wait(30)
        real()

    monkeypatch.setattr(rank_compiled, "_started", False)
    monkeypatch.setattr(rank_compiled, "_ready", threading.Event())
    monkeypatch.setattr(rank_compiled, "_compile", slow)
    monkeypatch.setattr(mirror_module, "COMPILE_FROM", 3000)
    calls: list[int] = []
    best = rank_compiled.best
    monkeypatch.setattr(
        rank_compiled, "best", lambda *args, **options: calls.append(1) or best(*args, **options)
    )
    mirror = _mirror(3000, 5)  # returns while the loops are still compiling
    assert compiling.wait(30) and not rank_compiled.ready()
    queries = _queries(mirror, random.Random(5))
    before = _rows(mirror, queries, 3)
    assert calls == []  # numpy ranked
    gate.set()
    rank_compiled.warm(wait=True)
    assert rank_compiled.ready() and _rows(mirror, queries, 3) == before and calls == [1]


def test_only_a_big_mirror_starts_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    monkeypatch.setattr(rank_compiled, "warm", lambda: started.append(1))
    monkeypatch.setattr(mirror_module, "COMPILE_FROM", 3000)
    _mirror(2999, 6)
    assert started == []
    mirror = _mirror(3000, 6)
    assert started == [1]
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(mirror, protocol=5, buffer_callback=buffers.append)
    pickle.loads(meta, buffers=buffers)  # a shared copy mapped by another worker
    assert started == [1, 1]


def test_loops_that_fail_to_compile_leave_ranking_to_numpy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rank_compiled, "_started", False)
    monkeypatch.setattr(rank_compiled, "_ready", threading.Event())
    monkeypatch.setattr(rank_compiled, "AVAILABLE", True)

    def broken() -> None:
        raise RuntimeError("no LLVM here")

    def never(*args: Any) -> tuple[int, bool]:
        raise AssertionError("the compiled loops ran")

    monkeypatch.setattr(rank_compiled, "_compile", broken)
    monkeypatch.setattr(mirror_module, "COMPILE_FROM", 3000)
    with caplog.at_level(logging.WARNING, logger="guard"):
        mirror = _mirror(3000, 4)  # building a mirror starts compiling the loops
        rank_compiled.warm(wait=True)
    assert not rank_compiled.AVAILABLE and not rank_compiled.ready()
    assert "numba could not compile guard's ranking loops, so numpy ranks: no LLVM here" in (
        caplog.text
    )
    monkeypatch.setattr(rank_compiled, "best", never)
    queries = _queries(mirror, random.Random(4))
    got = _rows(mirror, queries, 3)
    ahashes = [int(a) for a in mirror.ahashes]
    phashes = [int(p) if h else None for p, h in zip(mirror.phashes, mirror.has_phash, strict=True)]
    assert got == _oracle(ahashes, phashes, queries, 12, 12, 3) and len(got) == 3
