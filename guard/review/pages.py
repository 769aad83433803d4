"""What each page shows, read from the store: small pages, never a whole list or stream.

A list's entries are read one HSCAN page at a time (a search scans a bounded number of entries
per page and says where to go on); the decisions are read back from the stream's end a page at
a time. The check of an image goes through the middleware's own lookups
(:meth:`guard.supervision.StoreSupervisor.look_up`) and verdict (:func:`guard.verdict.judge`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from guard.config import Config, ListPolicy, Route
from guard.errors import StoreError
from guard.events import Event
from guard.hashing import FrameHash, ImageHashes, from_hex
from guard.list_scale import ScaleEstimate, estimate, rejects_too_many
from guard.store import Store
from guard.store.allow import owner_of
from guard.supervision import StoreSupervisor
from guard.types import Entry, ListInfo, Match
from guard.verdict import judge

#: Entries (or decisions) on one page.
PAGE = 50
#: Entries one search reads at most before it shows what it found and offers to go on.
SEARCH_BUDGET = 20_000
#: Stream records one decisions page reads at most while filters skip records.
DECISIONS_BUDGET = 5_000
_HEX_HASH = re.compile(r"[0-9a-fA-F]{16}")


@dataclass(frozen=True)
class ListRow:
    """One row of the Lists page."""

    name: str
    info: ListInfo | None  # None: the config names it, the store does not have it
    policy: ListPolicy
    mode: str  # in force (switched or the config's)
    switched: bool
    allow_entries: int
    routes: tuple[str, ...]
    #: The share of innocent uploads its radii would reject and flag at its size (None: not in
    #: the store), from guard's reference measurement (guard.list_scale).
    scale: ScaleEstimate | None = None

    @property
    def rejects_too_many(self) -> bool:
        """In the mode in force, rejecting 1% of innocent uploads or more (as start-up warns)."""
        return self.scale is not None and rejects_too_many(
            self.scale, self.mode, self.policy.enforce_ratio
        )


async def list_rows(store: Store, config: Config, modes: dict[str, str]) -> list[ListRow]:
    infos = {info.name: info for info in await store.lists()}
    allowed = await store.allow_lists()
    names = sorted(set(infos) | set(config.lists) | {n for r in config.routes for n in r.lists})
    rows = []
    for name in names:
        policy = config.policy(name)
        switched = modes.get(name) in ("enforce", "shadow")
        rows.append(
            ListRow(
                name=name,
                info=infos.get(name),
                policy=policy,
                mode=modes[name] if switched else policy.mode,
                switched=switched,
                allow_entries=allowed[name].entries if name in allowed else 0,
                routes=tuple(r.path for r in config.routes if name in r.lists),
                scale=estimate(policy, infos[name].entries) if name in infos else None,
            )
        )
    return rows


@dataclass(frozen=True)
class EntriesPage:
    entries: list[Entry]
    next_cursor: int  # 0: nothing after this page
    scanned: int  # entries read for this page (a search reads more than it shows)


async def entries_page(store: Store, list_name: str, query: str, cursor: int) -> EntriesPage:
    """A page of the list's entries from ``cursor``; with ``query``, the entries whose aHash
    (16 hex digits) is it, or whose source or label holds it (case-insensitive)."""
    query = query.strip()
    if _HEX_HASH.fullmatch(query):
        found = await store.entries_of(list_name, from_hex(query))
        return EntriesPage(found, 0, len(found))
    if not query:
        cursor, entries = await store.entries_page(list_name, cursor, PAGE)
        return EntriesPage(entries, cursor, len(entries))
    needle = query.casefold()
    found, scanned = [], 0
    while True:
        cursor, entries = await store.entries_page(list_name, cursor, 1000)
        scanned += len(entries)
        found += [e for e in entries if needle in f"{e.source}\0{e.label or ''}".casefold()]
        if cursor == 0 or len(found) >= PAGE or scanned >= SEARCH_BUDGET:
            return EntriesPage(found, cursor, scanned)


@dataclass(frozen=True)
class DecisionsPage:
    events: list[Event]
    before: str | None  # the id to read on from (older records), None: the stream's start


async def decisions_page(
    store: Store, stream: str, lists: Sequence[str], actions: Sequence[str], before: str | None
) -> DecisionsPage:
    """Up to :data:`PAGE` records passing the filters, newest first, from before ``before``."""
    found: list[Event] = []
    read = 0
    size = PAGE  # a page unfiltered; more at a time while filters skip records
    while len(found) < PAGE and read < DECISIONS_BUDGET:
        batch = await store.latest_events(stream, size, before=before)
        for stream_id, fields in batch:
            read += 1
            before = stream_id
            event = Event(stream_id, fields)
            if event.matches(lists, actions):
                found.append(event)
                if len(found) == PAGE:
                    break
        if len(batch) < size and len(found) < PAGE:
            return DecisionsPage(found, None)
        size = min(size * 4, 1000)
    return DecisionsPage(found, before)


@dataclass(frozen=True)
class ListCheck:
    """One list's verdict on an image and its nearest entries."""

    name: str
    action: str  # as the middleware would decide with this list alone
    nearest: list[Match]
    allowed_by: Match | None
    error: str | None = None


@dataclass(frozen=True)
class CheckResult:
    action: str  # the verdict with every list at once
    lists: list[ListCheck]
    frames: list[FrameHash]
    low_information: int  # frames too plain to look up (the middleware skips them too)
    problems: list[str] = field(default_factory=list)


async def check_image(
    store: Store, config: Config, hashes: ImageHashes, names: Sequence[str]
) -> CheckResult:
    """The image's verdict in each list and in all of them, as the middleware decides it."""
    frames = [f for f in hashes.frames if not f.low_information]
    skipped = len(hashes.frames) - len(frames)

    async def opened() -> Store:
        return store

    supervisor = StoreSupervisor(config, opened, lambda: store.location)
    supervisor.report_interval = float("inf")  # the page shows errors; the log need not
    checks = []
    for name in names:
        policy = config.policy(name)
        route = Route(path="/", lists=(name,))
        try:
            found = await supervisor.look_up(route, frames) if frames else None
            nearest = await store.lookup_under(name, frames, policy, limit=5) if frames else []
        except StoreError as error:
            checks.append(ListCheck(name, "error", [], None, str(error)))
            continue
        if found is None:
            checks.append(ListCheck(name, "allow", [], None))
            continue
        failure = found.failures.get(name)
        outcome = judge(1, found.matches, found.failures, config.policy, config.http, found.allowed)
        allowed_by = next((m for (n, _), m in found.allowed.items() if n == name), None)
        checks.append(
            ListCheck(name, outcome.action, nearest, allowed_by, str(failure) if failure else None)
        )
    action = "allow"
    if frames and names:
        every = await supervisor.look_up(Route(path="/", lists=tuple(names)), frames)
        action = judge(
            1, every.matches, every.failures, config.policy, config.http, every.allowed
        ).action
    return CheckResult(action, checks, frames, skipped)


def checkable(rows: Sequence[ListRow]) -> list[str]:
    """The lists a check looks in: every list the store holds (not allow-lists)."""
    return [row.name for row in rows if row.info is not None and owner_of(row.name) is None]
