"""Mirror.rank's best few matches in one compiled loop (numba: the optional ``fast`` extra).

Why: the middleware asks a list for its best match only, but in numpy even that costs passes
over large temporaries for every candidate (the probed runs expanded, gathered, deduplicated,
then a score per query and match), and a crowded upload has a million candidates and a hundred
thousand matches. Here one loop walks the probed runs of guard.mih's index (or, when they would
hold more than a pass over the list costs, every entry), scores each (query, entry) pair within
the radius as it meets it, with the score of guard.mirror, and keeps only the best ``limit``
distinct entries: no temporaries, and no deduplication (a pair met twice scores the same).

Everything is exact: the answer is the first ``limit`` of Mirror.rank's full order, which the
oracle tests check on both this path and the numpy one. Without numba, :data:`AVAILABLE` is
False and guard.mirror ranks in numpy. The loops are compiled once per machine (numba's cache,
next to this file or in ``NUMBA_CACHE_DIR``) and loaded by :func:`warm`, which guard calls when
it builds or maps a mirror: in a background thread, because a first compilation takes seconds
(7-10 s here) and neither a worker's start nor a request may wait for it. Until the loops are
ready (:func:`ready`), numpy ranks.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

#: Whether the compiled loops can run here (numba installed). numba itself is imported only by
#: the background thread :func:`warm` starts (guard._rank_kernels): it costs every process that
#: imports guard about 0.16 s otherwise, a command that never ranks included.
AVAILABLE = importlib.util.find_spec("numba") is not None

#: The compiled loop scans every entry when the probed runs hold more than this share of
#: entries x queries (where probing started to cost more than the scan in bench/lookup.py
#: --in-process at 1e6; docs/performance.md).
SCAN_SHARE = 0.06
#: Where a result key keeps the entry's position: below this many bits (the score above them).
POSITION_BITS = 40
#: How many runs ahead the loop asks for a run's hashes.
_AHEAD = 8
#: A run with fewer than one hash in this many within the radius is sifted with a branch.
_SPARSE = 16
#: Hashes within the radius gathered before their pHashes are read.
_GATHER = 4096
#: Pairs pairs_within makes room for at first (a listed photo's crops can give hundreds near an
#: upload, and more than fit costs a second pass).
_PAIRS_ROOM = 8192
#: Queries a scan ranks at most (it packs a query's index in 16 bits).
MAX_QUERIES = 1 << 16
#: The widest query block the scan compares an entry with at once (its inner loop is unrolled).
_BLOCK = 8
#: Entries per step of a scan (their nearest distances stay in the CPU's cache).
_CHUNK = 4096

#: A list of at least this many entries ranks a lookup's query variants in two halves at once, on
#: two threads (the loops release the GIL): a big list's lookup is bound by memory latency, which
#: a second core halves; below it, handing half over costs more than it saves.
SPLIT_FROM = 2_000_000

logger = logging.getLogger("guard")
_started = False
_ready = threading.Event()
_kernels: Any = None  # guard._rank_kernels, once warm() imported it
_warm_lock = threading.Lock()


def warm(*, wait: bool = False) -> None:
    """Start compiling the loops (or loading them from numba's cache), once per process, in a
    background thread, for every kind of array a mirror hands them: positions as int32 or
    int64, arrays of a mirror built here (writable) or mapped from a shared file (read-only).
    If numba fails to, guard says so once and ranks in numpy (:data:`AVAILABLE` turns False).
    ``wait``: return only once they are ready or have failed (benchmarks, tests)."""
    global _started
    if not AVAILABLE and not _started:
        return
    with _warm_lock:
        if not _started:
            _started = True
            threading.Thread(target=_warm_now, name="guard-compile", daemon=True).start()
    if wait:
        _ready.wait()


def ready() -> bool:
    """Whether the compiled loops can rank now."""
    return AVAILABLE and _ready.is_set()


def _warm_now() -> None:
    global AVAILABLE
    try:
        _compile()
    except Exception as error:  # a broken numba must not stop guard: numpy ranks the same
        logger.warning("numba could not compile guard's ranking loops, so numpy ranks: %s", error)
        AVAILABLE = False
    finally:
        _ready.set()


def _compile() -> None:
    """Import the loops and run them once on tiny arrays of every kind, which compiles them."""
    global _kernels
    from guard import _rank_kernels

    _kernels = _rank_kernels
    plan = [np.zeros(2, dtype=np.int64) for _ in range(5)]
    for fixed in plan:
        fixed.flags.writeable = False
    for position_type in (np.int32, np.int64):
        for writable in (True, False):
            arrays: list[npt.NDArray[Any]] = [
                np.zeros(2, dtype=np.uint64),
                np.zeros(2, dtype=position_type),
                np.zeros(2, dtype=np.uint64),
                np.zeros(2, dtype=np.uint64),
                np.zeros(2, dtype=np.bool_),
                np.zeros(3, dtype=position_type),
            ]
            for array in arrays:
                array.flags.writeable = writable
            _kernels._probed(arrays[5], *plan, np.zeros(1, dtype=np.uint64))
            _kernels._pairs_within(
                arrays[0],
                arrays[1],
                arrays[5],
                *plan,
                np.zeros(1, dtype=np.uint64),
                1,
                arrays[2],
                np.zeros(1, dtype=np.uint64),
                1,
                np.empty(1, dtype=np.int64),
                np.empty(1, dtype=np.int64),
            )
            _kernels._best(  # compiles the scan too (a callee)
                *arrays[:5],
                True,
                arrays[5],
                *plan,
                np.zeros(1, dtype=np.uint64),
                np.zeros(1, dtype=np.uint64),
                1,
                1,
                1.0,
                np.empty(1, dtype=np.uint64),
                np.empty(1, dtype=np.int64),
            )


_helper: ThreadPoolExecutor | None = None
_helper_pid = 0
_helper_lock = threading.Lock()


def _in_helper(function: Any, *args: Any) -> Future[Any] | None:
    """``function(*args)`` started on this process's helper thread (a forked worker gets its
    own), or None on a machine with one core."""
    global _helper, _helper_pid
    if (os.cpu_count() or 1) < 2:
        return None
    with _helper_lock:
        if _helper is None or _helper_pid != os.getpid():
            _helper = ThreadPoolExecutor(1, thread_name_prefix="guard-rank")
            _helper_pid = os.getpid()
        return _helper.submit(function, *args)


def best(
    hashes: npt.NDArray[np.uint64],
    order: npt.NDArray[Any],
    source: npt.NDArray[np.uint64],
    phashes: npt.NDArray[np.uint64],
    has_phash: npt.NDArray[np.bool_],
    all_phash: bool,
    offsets: npt.NDArray[Any],
    bits: npt.NDArray[np.int64],
    band_starts: npt.NDArray[np.int64],
    tables: npt.NDArray[np.int64],
    mask_starts: npt.NDArray[np.int64],
    masks: npt.NDArray[np.int64],
    queries: npt.NDArray[np.uint64],
    query_phashes: npt.NDArray[np.uint64],
    radius: int,
    confirm_radius: int,
    scan_share: float,
    keys: npt.NDArray[np.uint64],
    which: npt.NDArray[np.int64],
    split: bool = False,
) -> tuple[int, bool]:
    """Fill ``keys`` (score << POSITION_BITS | position, ascending) and ``which`` (the first
    query with that score) with the best ``len(keys)`` entries; return how many were found and
    whether it scanned. ``hashes``, ``order`` and ``offsets`` are the index's band-ordered
    hashes, their positions and the run offsets (guard.mih), ``source`` the hashes by position;
    ``bits`` the bands' bit positions
    (band i is ``bits[band_starts[i]:band_starts[i + 1]]``), ``tables`` where each band's
    offsets start, ``masks[mask_starts[i]:mask_starts[i + 1]]`` the XORs band i probes
    (none for a skipped band). ``phashes``/``has_phash`` are by position. ``split``: rank
    the two halves of the queries at once (see :data:`SPLIT_FROM`)."""
    fixed = (hashes, order, source, phashes, has_phash, all_phash, offsets)
    plan = (bits, band_starts, tables, mask_starts, masks)
    half = len(queries) // 2
    helper = None
    if split and half:
        more_keys, more_which = np.empty_like(keys), np.empty_like(which)
        helper = _in_helper(
            _kernels._best,
            *fixed,
            *plan,
            queries[half:],
            query_phashes[half:],
            radius,
            confirm_radius,
            scan_share,
            more_keys,
            more_which,
        )
    if helper is None:
        found, scanned = _kernels._best(
            *fixed,
            *plan,
            queries,
            query_phashes,
            radius,
            confirm_radius,
            scan_share,
            keys,
            which,
        )
        return int(found), bool(scanned)
    found, scanned = _kernels._best(
        *fixed,
        *plan,
        queries[:half],
        query_phashes[:half],
        radius,
        confirm_radius,
        scan_share,
        keys,
        which,
    )
    more_found, more_scanned = helper.result()
    # Each half's best few by its queries; an entry's key is its best over both.
    merged = np.concatenate([keys[:found], more_keys[:more_found]])
    queried = np.concatenate([which[:found], more_which[:more_found] + half])
    by_key = np.lexsort((queried, merged))  # a tie: the first query
    merged, queried = merged[by_key], queried[by_key]
    _, first = np.unique(merged & np.uint64((1 << POSITION_BITS) - 1), return_index=True)
    kept = np.sort(first)[: len(keys)]
    keys[: len(kept)], which[: len(kept)] = merged[kept], queried[kept]
    return len(kept), bool(scanned or more_scanned)


def probed(
    offsets: npt.NDArray[Any],
    plan: tuple[npt.NDArray[np.int64], ...],
    queries: npt.NDArray[np.uint64],
) -> int:
    """How many hashes :func:`best` would test when it probes an index for ``queries`` (its
    run ``offsets`` and the probe ``plan`` of a radius)."""
    return int(_kernels._probed(offsets, *plan, queries))


def pairs_within(
    hashes: npt.NDArray[np.uint64],
    order: npt.NDArray[Any],
    offsets: npt.NDArray[Any],
    plan: tuple[npt.NDArray[np.int64], ...],
    queries: npt.NDArray[np.uint64],
    radius: int,
    other: npt.NDArray[np.uint64],
    other_queries: npt.NDArray[np.uint64],
    other_radius: int,
    split: bool = False,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every (position, query) pair within ``radius`` on an index's hashes (``hashes``,
    ``order``, ``offsets`` and a probe ``plan`` for ``radius``, as :func:`best` takes them) and
    within ``other_radius`` of the query's other hash on ``other`` (by position); a pair found
    on two bands comes twice. ``split``: the two halves of the queries at once (see
    :data:`SPLIT_FROM`)."""
    half = len(queries) // 2
    helper = None
    if split and half:
        helper = _in_helper(
            pairs_within,
            hashes,
            order,
            offsets,
            plan,
            queries[half:],
            radius,
            other,
            other_queries[half:],
            other_radius,
        )
    if helper is not None:
        positions, which = pairs_within(
            hashes,
            order,
            offsets,
            plan,
            queries[:half],
            radius,
            other,
            other_queries[:half],
            other_radius,
        )
        more_positions, more_which = helper.result()
        return (
            np.concatenate([positions, more_positions]),
            np.concatenate([which, more_which + half]),
        )
    room = _PAIRS_ROOM
    while True:
        positions = np.empty(room, dtype=np.int64)
        which = np.empty(room, dtype=np.int64)
        found = int(
            _kernels._pairs_within(
                hashes,
                order,
                offsets,
                *plan,
                queries,
                radius,
                other,
                other_queries,
                other_radius,
                positions,
                which,
            )
        )
        if found <= room:
            return positions[:found], which[:found]
        room = found
