"""The compiled loops of guard.rank_compiled (numba), in a module of their own: imported, and
so is numba, only by the background thread guard.rank_compiled.warm starts. Coverage cannot
trace compiled code; the oracle tests (tests/test_mirror.py, test_rank_compiled.py) run it."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils as _cgutils
from numba.extending import intrinsic

from guard.rank_compiled import _AHEAD, _BLOCK, _CHUNK, _GATHER, _SPARSE, POSITION_BITS

# numba's decorators, as opaque to mypy as the loops they compile are.
_jit: Any = numba.njit
_intrinsic: Any = intrinsic
cgutils: Any = _cgutils
_U = np.uint64
_NONE = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_POSITION_MASK = np.uint64((1 << POSITION_BITS) - 1)

@_intrinsic  # type: ignore[untyped-decorator]
def _popcount(typingctx: Any, value: Any) -> Any:
    """The CPU's population count (numba has none for integers)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen

@_intrinsic  # type: ignore[untyped-decorator]
def _prefetch(typingctx: Any, array: Any, index: Any) -> Any:
    """Ask the CPU to load ``array[index]`` into its cache, without waiting for it."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        kind = signature.args[0]
        view = context.make_array(kind)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, kind, view, [args[1]])
        byte, word = ir.IntType(8).as_pointer(), ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte, word, word, word]),
            "llvm.prefetch.p0i8",
        )
        # read, keep in every cache level, data
        builder.call(function, [builder.bitcast(pointer, byte), word(0), word(3), word(1)])
        return context.get_dummy_value()

    return types.void(array, types.intp), codegen

@_jit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def _key(distance: Any, phash_distance: Any, has: Any, confirm: Any, position: Any) -> Any:
    # guard.mirror's score: tier << 14 | aHash distance << 7 | pHash distance.
    if has:
        tier = _U(0) if phash_distance <= confirm else _U(2)
    else:
        tier, phash_distance = _U(1), _U(0)
    score = (tier << _U(14)) | (distance << _U(7)) | phash_distance
    return (score << _U(POSITION_BITS)) | position

@_jit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def _offer(keys: Any, which: Any, filled: Any, key: Any, query: Any) -> Any:
    """Keep ``key`` among the best ``len(keys)`` distinct entries (ascending); called only
    for a key below the current bound. An entry met again with a better key moves up."""
    size = len(keys)
    position = key & _POSITION_MASK
    for at in range(filled):
        if (keys[at] & _POSITION_MASK) == position:
            if keys[at] <= key:  # an earlier query scored it as well or better
                return filled
            for later in range(at, filled - 1):
                keys[later] = keys[later + 1]
                which[later] = which[later + 1]
            filled -= 1
            break
    at = filled if filled < size else size - 1
    while at > 0 and keys[at - 1] > key:
        keys[at] = keys[at - 1]
        which[at] = which[at - 1]
        at -= 1
    keys[at] = key
    which[at] = query
    return filled + 1 if filled < size else size

@_jit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def _band_value(query: Any, bits: Any, start: Any, end: Any) -> Any:
    value = np.int64(0)
    for k in range(start, end):  # bit 0 is the hash's most significant
        value = (value << 1) | np.int64((query >> _U(63 - bits[k])) & _U(1))
    return value

@_jit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def _runs(
    offsets: Any,
    bits: Any,
    band_starts: Any,
    tables: Any,
    mask_starts: Any,
    masks: Any,
    queries: Any,
) -> Any:
    """The probed runs of each query (query after query, band after band): their starts and
    ends in the index, and the hashes they hold in all and in the longest run."""
    probes = mask_starts[-1]  # per query
    starts = np.empty(len(queries) * probes, dtype=np.int64)
    ends = np.empty(len(queries) * probes, dtype=np.int64)
    total = np.int64(0)
    longest = np.int64(0)
    for j in range(len(queries)):
        for i in range(len(band_starts) - 1):
            value = _band_value(queries[j], bits, band_starts[i], band_starts[i + 1])
            for m in range(mask_starts[i], mask_starts[i + 1]):
                at = tables[i] + (value ^ masks[m])
                start, end = np.int64(offsets[at]), np.int64(offsets[at + 1])
                starts[j * probes + m], ends[j * probes + m] = start, end
                total += end - start
                longest = max(longest, end - start)
    return starts, ends, total, longest


@_jit(nogil=True, cache=True)  # type: ignore[untyped-decorator]
def _best(
    hashes: Any,
    order: Any,
    source: Any,
    phashes: Any,
    has_phash: Any,
    all_phash: Any,
    offsets: Any,
    bits: Any,
    band_starts: Any,
    tables: Any,
    mask_starts: Any,
    masks: Any,
    queries: Any,
    query_phashes: Any,
    radius: Any,
    confirm_radius: Any,
    scan_share: Any,
    keys: Any,
    which: Any,
) -> Any:
    probes = mask_starts[-1]  # per query
    starts, ends, total, longest = _runs(
        offsets, bits, band_starts, tables, mask_starts, masks, queries
    )
    if total > scan_share * len(source) * len(queries):
        found = _scan(
            source,
            phashes,
            has_phash,
            all_phash,
            queries,
            query_phashes,
            radius,
            confirm_radius,
            keys,
            which,
        )
        return found, True
    limit, confirm = _U(radius), _U(confirm_radius)
    # The hashes within the radius, gathered over many runs before their pHashes are
    # read: those reads land anywhere in a big list, and in one loop the CPU overlaps them.
    capacity = max(_GATHER, longest)
    near = np.empty(capacity, dtype=np.int64)
    near_distances = np.empty(capacity, dtype=np.uint64)
    near_positions = np.empty(capacity, dtype=np.int64)
    near_phashes = np.empty(capacity, dtype=np.uint64)
    state = np.empty(2, dtype=np.uint64)  # filled, bound
    state[0], state[1] = 0, _NONE
    runs = len(starts)
    for j in range(len(queries)):
        query = queries[j]
        gathered = 0
        for run in range(j * probes, (j + 1) * probes):
            # Runs lie anywhere in the index: ask for the next ones' first hashes early,
            # so that their cache misses overlap (a big list's index is not in the cache).
            if run + _AHEAD < runs and starts[run + _AHEAD] < ends[run + _AHEAD]:
                _prefetch(hashes, starts[run + _AHEAD])
            # How many of the run's hashes are within the radius (in vector lanes); most
            # runs have none. Then which, without a branch per hash (in a crowded run
            # about every other one is, and a guessed branch would miss often).
            count = 0
            for index in range(starts[run], ends[run]):
                count += _popcount(hashes[index] ^ query) <= limit
            if not count:
                continue
            if gathered + count > capacity:
                _rank_gathered(
                    near,
                    near_distances,
                    near_positions,
                    near_phashes,
                    gathered,
                    order,
                    phashes,
                    has_phash,
                    all_phash,
                    query_phashes[j],
                    confirm,
                    j,
                    keys,
                    which,
                    state,
                )
                gathered = 0
            if count * _SPARSE < ends[run] - starts[run]:  # a few: a branch guesses well
                for index in range(starts[run], ends[run]):
                    distance = _popcount(hashes[index] ^ query)
                    if distance <= limit:
                        near[gathered] = index
                        near_distances[gathered] = distance
                        gathered += 1
            else:
                for index in range(starts[run], ends[run]):
                    distance = _popcount(hashes[index] ^ query)
                    near[gathered] = index
                    near_distances[gathered] = distance
                    gathered += distance <= limit
        _rank_gathered(
            near,
            near_distances,
            near_positions,
            near_phashes,
            gathered,
            order,
            phashes,
            has_phash,
            all_phash,
            query_phashes[j],
            confirm,
            j,
            keys,
            which,
            state,
        )
    filled = np.int64(state[0])
    return filled, False

@_jit(inline="always", cache=True)  # type: ignore[untyped-decorator]
def _rank_gathered(
    near: Any,
    near_distances: Any,
    near_positions: Any,
    near_phashes: Any,
    gathered: Any,
    order: Any,
    phashes: Any,
    has_phash: Any,
    all_phash: Any,
    query_phash: Any,
    confirm: Any,
    query: Any,
    keys: Any,
    which: Any,
    state: Any,
) -> None:
    """Score the gathered hashes of one query and offer those below the bound (``state``:
    how many keys are kept, and the bound)."""
    for k in range(gathered):
        position = order[near[k]]
        near_positions[k] = position
        near_phashes[k] = phashes[position]
    filled, bound = np.int64(state[0]), state[1]
    for k in range(gathered):
        position = near_positions[k]
        key = _key(
            near_distances[k],
            _popcount(near_phashes[k] ^ query_phash),
            all_phash or has_phash[position],
            confirm,
            _U(position),
        )
        if key < bound:
            filled = _offer(keys, which, filled, key, query)
            if filled == len(keys):
                bound = keys[filled - 1]
    state[0], state[1] = filled, bound

@_jit(nogil=True, cache=True)  # type: ignore[untyped-decorator]
def _scan(
    source: Any,
    phashes: Any,
    has_phash: Any,
    all_phash: Any,
    queries: Any,
    query_phashes: Any,
    radius: Any,
    confirm_radius: Any,
    keys: Any,
    which: Any,
) -> Any:
    """Every entry against every query, a cache-sized chunk at a time: each entry's
    nearest query distance (8 queries at a time held in registers, so that the loop runs
    in vector lanes), then the entries within the radius copied side by side and scored
    against each query (again in vector lanes), then offered."""
    size, count = len(source), len(queries)
    blocks = (count + _BLOCK - 1) // _BLOCK
    padded = np.empty(blocks * _BLOCK, dtype=np.uint64)
    padded[:count] = queries
    padded[count:] = queries[0]  # a repeat changes no minimum
    nearest = np.empty(_CHUNK, dtype=np.uint64)
    where = np.empty(_CHUNK, dtype=np.int64)
    near = np.empty(_CHUNK, dtype=np.uint64)
    near_phash = np.empty(_CHUNK, dtype=np.uint64)
    near_has = np.empty(_CHUNK, dtype=np.uint64)  # 1 if the entry has a pHash
    best = np.empty(_CHUNK, dtype=np.uint64)
    limit, confirm = _U(radius), _U(confirm_radius)
    bound = _NONE
    filled = 0
    for begin in range(0, size, _CHUNK):
        width = min(size, begin + _CHUNK) - begin
        for i in range(width):
            nearest[i] = _U(64)
        for block in range(blocks):
            at = block * _BLOCK
            q0, q1, q2, q3 = padded[at], padded[at + 1], padded[at + 2], padded[at + 3]
            q4, q5, q6, q7 = padded[at + 4], padded[at + 5], padded[at + 6], padded[at + 7]
            for i in range(width):
                value = source[begin + i]
                low = min(
                    min(_popcount(value ^ q0), _popcount(value ^ q1)),
                    min(_popcount(value ^ q2), _popcount(value ^ q3)),
                )
                high = min(
                    min(_popcount(value ^ q4), _popcount(value ^ q5)),
                    min(_popcount(value ^ q6), _popcount(value ^ q7)),
                )
                nearest[i] = min(nearest[i], min(low, high))
        # The entries within the radius, side by side (without a branch per entry: in a
        # crowded list a guessed one would miss often).
        found = 0
        for i in range(width):
            where[found] = begin + i
            found += nearest[i] <= limit
        for k in range(found):
            position = where[k]
            near[k] = source[position]
            near_phash[k] = phashes[position]
            near_has[k] = _U(all_phash or has_phash[position])
            best[k] = _NONE
        for j in range(count):
            query, query_phash = queries[j], query_phashes[j]
            for k in range(found):
                # score << 16 | query: the minimum is the best score, then the first query.
                # Arithmetic, not branches, so that the loop runs in vector lanes: an entry
                # without a pHash is tier 1 at pHash distance 0.
                distance = _popcount(near[k] ^ query)
                has = near_has[k]
                phash_distance = _popcount(near_phash[k] ^ query_phash) * has
                tier = _U(1) - has + has * (_U(phash_distance > confirm) << _U(1))
                score = (tier << _U(14)) | (distance << _U(7)) | phash_distance
                ranked = (score << _U(16)) | _U(j)
                best[k] = min(best[k], ranked if distance <= limit else _NONE)
        for k in range(found):
            key = ((best[k] >> _U(16)) << _U(POSITION_BITS)) | _U(where[k])
            if key < bound:
                filled = _offer(keys, which, filled, key, np.int64(best[k] & _U(0xFFFF)))
                if filled == len(keys):
                    bound = keys[filled - 1]
    return filled

@_jit(nogil=True, cache=True)  # type: ignore[untyped-decorator]
def _pairs_within(
    hashes: Any,
    order: Any,
    offsets: Any,
    bits: Any,
    band_starts: Any,
    tables: Any,
    mask_starts: Any,
    masks: Any,
    queries: Any,
    radius: Any,
    other: Any,
    other_queries: Any,
    other_radius: Any,
    positions: Any,
    which: Any,
) -> Any:
    """Every (entry, query) pair within ``radius`` of the index's hashes (probed, as _best
    probes) and within ``other_radius`` of the entry's ``other`` hash: written to
    ``positions``/``which`` while they have room (a pair met on two bands twice); returns how
    many there are."""
    probes = mask_starts[-1]  # per query
    runs = len(queries) * probes
    starts, ends, _, _ = _runs(offsets, bits, band_starts, tables, mask_starts, masks, queries)
    limit, other_limit = _U(radius), _U(other_radius)
    room = len(positions)
    found = 0
    for j in range(len(queries)):
        query, other_query = queries[j], other_queries[j]
        for run in range(j * probes, (j + 1) * probes):
            if run + _AHEAD < runs and starts[run + _AHEAD] < ends[run + _AHEAD]:
                _prefetch(hashes, starts[run + _AHEAD])
            for index in range(starts[run], ends[run]):
                if _popcount(hashes[index] ^ query) <= limit:
                    position = order[index]
                    if _popcount(other[position] ^ other_query) <= other_limit:
                        if found < room:
                            positions[found] = position
                            which[found] = j
                        found += 1
    return found


@_jit(nogil=True, cache=True)  # type: ignore[untyped-decorator]
def _probed(
    offsets: Any,
    bits: Any,
    band_starts: Any,
    tables: Any,
    mask_starts: Any,
    masks: Any,
    queries: Any,
) -> Any:
    """How many hashes the probed runs of ``queries`` hold (what _best would test)."""
    return _runs(offsets, bits, band_starts, tables, mask_starts, masks, queries)[2]
