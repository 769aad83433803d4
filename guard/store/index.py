"""A lookup through the Redis band index: one SUNION over every probed bucket (one round trip per
list, which also checks the incarnation the layout came from), then one read for the candidates
within the radius, if there are any (their entry records). Exact, for any list size; the mirror
is faster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis

from guard.bands import BandLayout, band_key
from guard.hashing import TRANSFORMS, FrameHash
from guard.mirror import CONFIRMED, CONTRADICTED, UNCONFIRMABLE, popcount
from guard.spelling import from_signed, hamming
from guard.store.connection import Gone, Recreated, translated
from guard.store.entry_reads import Labels, read_entries
from guard.store.records import ListMeta, keys, text
from guard.types import Entry, Match, Transform

T = TypeVar("T")

Query = tuple[int, int, Transform, int]  # (aHash, pHash, transform, frame) of one query variant

#: Query hashes (one frame's 8 flips and rotations) up to which a lookup's CPU work runs inline;
#: more (the frames of an animation) run in a worker thread.
INLINE_QUERIES = len(TRANSFORMS)
#: Band keys per SUNION: an animation probes millions of keys, and one command that large would
#: hold Redis (single-threaded) for everyone.
SUNION_KEYS = 10_000


async def run(off_loop: bool, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, in a worker thread when ``off_loop``."""
    return await asyncio.to_thread(function, *args) if off_loop else function(*args)


async def lookup(
    client: aioredis.Redis,
    labels: Labels,
    list_name: str,
    meta: ListMeta,
    queries: Sequence[Query],
    radius: int,
    confirm_radius: int,
    limit: int | None,
) -> list[Match]:
    """Matches from the Redis index, best first. Raises :class:`Gone` if the list has no
    metadata, :class:`Recreated` if it is not the incarnation ``meta`` describes."""
    many = len(queries) > INLINE_QUERIES
    probes = await run(many, probe_keys, list_name, meta.layout, queries, radius)
    names = keys(list_name)
    async with translated():
        pipe = client.pipeline(transaction=False)
        pipe.exists(names.meta)
        pipe.hget(names.meta, "incarnation")
        for start in range(0, len(probes), SUNION_KEYS):
            # Not pipe.sunion(): redis-py's cluster pipeline refuses that method by name (it
            # cannot know the keys share a slot); the command itself is fine, they do.
            pipe.execute_command("SUNION", *probes[start : start + SUNION_KEYS])
        exists, incarnation, *unions = await pipe.execute()
    if not exists:
        raise Gone(list_name)
    if text(incarnation or b"") != meta.incarnation:
        raise Recreated  # the probes followed the layout of a list that is gone
    members: set[bytes] = set().union(*unions)
    found = await run(many, near, members, queries, radius)
    if not found:
        return []
    async with translated():
        entries = await read_entries(client, labels, list_name, meta, found)
    return matches(list_name, entries.values(), queries, radius, confirm_radius)[:limit]


def probe_keys(
    list_name: str, layout: BandLayout, queries: Sequence[Query], radius: int
) -> list[str]:
    """The band keys a lookup reads, each once."""
    return list(
        {
            band_key(list_name, band, value)
            for ahash in {query[0] for query in queries}
            for band, value in layout.probes(ahash, radius)
        }
    )


def near(members: set[bytes], queries: Sequence[Query], radius: int) -> list[int]:
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


def matches(
    list_name: str,
    found: Iterable[list[Entry]],
    queries: Sequence[Query],
    radius: int,
    confirm_radius: int,
) -> list[Match]:
    """Matches for the entries of the near aHashes, best first (an aHash removed between the
    two round trips of a Redis-index lookup has none)."""
    result = []
    for entries in found:
        for entry in entries:
            result.append(best_match(list_name, entry, queries, radius, confirm_radius))
    result.sort(key=lambda m: (tier_of(m), m.distance, m.phash_distance or 0))
    return result


def queries_of(frames: Sequence[FrameHash], dihedral: bool) -> list[Query]:
    """The query variants of ``frames`` (with their flips and rotations if ``dihedral``)."""
    transforms: Sequence[Transform] = list(TRANSFORMS) if dihedral else ["identity"]
    return [(*frame.variant(t), t, frame.frame) for frame in frames for t in transforms]


def matches_among(
    list_name: str,
    entries: Iterable[Entry],
    queries: Sequence[Query],
    radius: int,
    confirm_radius: int,
) -> list[Match]:
    """Matches among ``entries`` by brute force (a list's few disabled entries), best first."""
    result = [
        best_match(list_name, entry, queries, radius, confirm_radius)
        for entry in entries
        if any(hamming(entry.ahash, query[0]) <= radius for query in queries)
    ]
    result.sort(key=lambda m: (tier_of(m), m.distance, m.phash_distance or 0))
    return result


def tier_of(match: Match) -> int:
    """The match's confirmation tier (:data:`guard.mirror.CONFIRMED` and the others, in their
    order)."""
    if match.confirmed:
        return CONFIRMED
    return UNCONFIRMABLE if match.phash_distance is None else CONTRADICTED


def best_match(
    list_name: str, entry: Entry, queries: Sequence[Query], radius: int, confirm_radius: int
) -> Match:
    """The query variant that matches ``entry`` best: confirmed first, then nearest."""

    def score(query: Query) -> tuple[bool, int, int]:
        phash_distance = 0 if entry.phash is None else hamming(entry.phash, query[1])
        return (phash_distance > confirm_radius, hamming(entry.ahash, query[0]), phash_distance)

    best = min((q for q in queries if hamming(entry.ahash, q[0]) <= radius), key=score)
    contradicted, distance, phash_distance = score(best)
    return Match(
        list=list_name,
        entry=entry,
        distance=distance,
        phash_distance=None if entry.phash is None else phash_distance,
        confirmed=entry.phash is not None and not contradicted,
        transform=best[2],
        frame=best[3],
    )
