"""The decision stream: every recorded decision appended to a bounded Redis Stream.

Writing: :class:`EventStream` is an observer. ``decided()`` only puts the record on a bounded
in-memory queue; a background task on the running event loop drains it in batches, one
pipelined round trip each (``XADD ... MAXLEN ~ operations.events_max_length``). A request never
waits for the stream and never fails because of it: when the queue is full, or Redis still
fails after a short retry, records are dropped and counted (:attr:`EventStream.dropped`),
and logged at most once a minute.

Reading: :func:`read_events` (``guard events``) yields the stream's records as :class:`Event`;
:func:`parse_since` reads ``--since``.

A record holds the :class:`guard.types.DecisionRecord`'s fields as text, without image bytes or
any hash of the upload (the reason is in DecisionRecord's docstring), plus :data:`SCHEMA`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from guard.config import OperationsSettings
from guard.observers import Observer
from guard.store import Store
from guard.store.stream import previous_id
from guard.types import DecisionRecord

logger = logging.getLogger("guard")

#: The record layout's version, written with every record as the field ``schema``.
SCHEMA = "1"
#: Records waiting to be written, at most; more are dropped (and counted).
QUEUE_LIMIT = 10_000
#: Records per round trip.
BATCH = 200
#: Seconds slept before each retry of a failed batch: then it is dropped.
RETRY_DELAYS = (0.1, 0.5)
#: Seconds after a batch is dropped for a failing Redis during which records are dropped
#: without asking Redis: a struggling server gets no extra connections from the stream (the
#: circuit breaker spares it the lookups' the same way).
REST_SECONDS = 5.0
#: Seconds :meth:`EventStream.aclose` (or a closing event loop) waits for the last records.
CLOSE_SECONDS = 2.0
#: Seconds between two log lines about dropped records.
DROP_LOG_INTERVAL = 60.0
#: Records read back beyond a cut-off batch's size, to find which of it the stream holds.
_SETTLE_MARGIN = 1000

#: Fields read back as numbers, and as lists.
_INT_FIELDS = ("images", "distance", "phash_distance", "schema")
_LIST_FIELDS = ("unchecked_lists",)


def encode(record: DecisionRecord) -> dict[str, str]:
    """The stream fields of ``record``: every field as text, None left out, tuples
    comma-joined (empty ones left out), plus the schema version."""
    fields = {"schema": SCHEMA}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            fields[field.name] = ",".join(value)
        elif isinstance(value, float):
            fields[field.name] = repr(value)
        else:
            fields[field.name] = str(value)
    return fields


class EventStream(Observer):
    """Queues each decision record; a background task appends them to the stream.

    The task starts on the event loop of the first record, and again on a new loop (Starlette's
    TestClient runs each request on its own): when a loop ends, its task writes what is queued
    within :data:`CLOSE_SECONDS`. ``store`` is awaited for every batch, so the store may be
    opened lazily (and reopened after :meth:`aclose`).
    """

    def __init__(
        self,
        store: Callable[[], Awaitable[Store]],
        settings: OperationsSettings,
        *,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._store = store
        self.settings = settings
        self.queue_limit = queue_limit
        #: Records written, and records lost (queue full, or Redis failing after the retries).
        self.written = 0
        self.dropped = 0
        self._queue: deque[dict[str, str]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._uncertain: list[dict[str, str]] = []
        self._rest_until = 0.0
        self._dropped_logged = 0
        self._logged_at: float | None = None

    @property
    def queued(self) -> int:
        """Records waiting to be written."""
        return len(self._queue)

    def decided(self, record: DecisionRecord) -> None:
        """Queue ``record`` (never blocks, never raises into the request)."""
        if len(self._queue) >= self.queue_limit:
            self._drop(1, f"the queue holds {self.queue_limit} records")
            return
        self._queue.append(encode(record))
        self._start_writer()

    async def aclose(self) -> None:
        """Write what is queued (within a bounded time) and stop the writer."""
        task, self._task = self._task, None
        loop = asyncio.get_running_loop()
        if task is not None and not task.done() and task.get_loop() is loop:
            self._stopping = True
            if self._wake is not None:
                self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_SECONDS)
            except Exception:  # noqa: BLE001 - closing never fails (a timeout included)
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            finally:
                self._stopping = False
        elif self._queue or self._uncertain:
            # Queued on a loop that is gone (or none ran): write from this one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write_queued(retry=False), CLOSE_SECONDS)
        unwritten = len(self._queue) + len(self._uncertain)
        if unwritten:
            self._drop(unwritten, "the stream was closed before they were written")
            self._queue.clear()
            self._uncertain = []
        self._log_drops(final=True)

    # --- the writer --------------------------------------------------------------------------

    def _start_writer(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop here: the next writer, or aclose(), writes it
        task = self._task
        if task is not None and not task.done() and task.get_loop() is loop:
            if self._wake is not None:
                self._wake.set()
            return
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._write_forever(self._wake), name="guard-events")

    async def _write_forever(self, wake: asyncio.Event) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    wake.clear()
                    await wake.wait()
                await self._write_queued(retry=True)
        except asyncio.CancelledError:
            # The loop is ending (asyncio.run, TestClient's portal): one bounded last write.
            if not self._stopping and (self._queue or self._uncertain):
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(self._write_queued(retry=False), CLOSE_SECONDS)
            raise

    async def _write_queued(self, *, retry: bool) -> None:
        """Write every queued record, a batch per round trip."""
        await self._settle_uncertain()
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                await self._write(batch, retry)
            except asyncio.CancelledError:
                self._uncertain = batch  # cut off mid-write (a loop ending): maybe written
                raise

    async def _settle_uncertain(self) -> None:
        """Queue again the records of a write cut off mid-way that the stream does not hold
        (its newest records are read back): none is lost, none written twice."""
        batch, self._uncertain = self._uncertain, []
        if not batch:
            return
        if self._resting():
            return self._drop(len(batch), "Redis failed moments ago")
        try:
            store = await self._store()
            newest = await store.latest_events(
                self.settings.events_stream, len(batch) + _SETTLE_MARGIN
            )
        except Exception as error:  # noqa: BLE001 - the stream never fails anything
            self._rest_until = time.monotonic() + REST_SECONDS
            self._drop(len(batch), f"{type(error).__name__}: {error}")
            return
        held = {_identity(fields) for _, fields in newest}
        missing = [r for r in batch if _identity(r) not in held]
        self.written += len(batch) - len(missing)
        self._queue.extendleft(reversed(missing))

    async def _write(self, batch: list[dict[str, str]], retry: bool) -> None:
        if self._resting():
            return self._drop(len(batch), "Redis failed moments ago")
        delays = RETRY_DELAYS if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                store = await self._store()
                await store.append_events(
                    self.settings.events_stream, batch, max_length=self.settings.events_max_length
                )
            except Exception as error:  # noqa: BLE001 - the stream never fails anything
                if attempt == len(delays):
                    self._rest_until = time.monotonic() + REST_SECONDS
                    self._drop(len(batch), f"{type(error).__name__}: {error}")
                    return
                await asyncio.sleep(delays[attempt])
            else:
                self.written += len(batch)
                return

    def _resting(self) -> bool:
        return time.monotonic() < self._rest_until

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._log_drops(reason=reason)

    def _log_drops(self, *, reason: str = "", final: bool = False) -> None:
        """Say how many records were lost, at most once per :data:`DROP_LOG_INTERVAL` (and once
        more on close, for those not said yet)."""
        unsaid = self.dropped - self._dropped_logged
        if not unsaid:
            return
        now = time.monotonic()
        if not final and self._logged_at is not None and now - self._logged_at < DROP_LOG_INTERVAL:
            return
        self._logged_at, self._dropped_logged = now, self.dropped
        logger.warning(
            "guard: decision stream %s: %d records dropped%s (%d in all; requests are unaffected)",
            self.settings.events_stream,
            unsaid,
            f", last because {reason}" if reason else "",
            self.dropped,
        )


def _identity(fields: Mapping[str, str]) -> tuple[str | None, ...]:
    """What tells one record from another (a client may send the same request id twice)."""
    return tuple(fields.get(name) for name in ("request_id", "time", "action", "route"))


# --- reading -----------------------------------------------------------------------------------

#: Records per read.
_PAGE = 500
#: Seconds one blocking read waits (the store cuts it below its socket timeout).
_FOLLOW_WAIT = 5.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_STREAM_ID = re.compile(r"\d+-\d+")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Event:
    """One record read back: its stream id and its fields as written."""

    id: str
    fields: Mapping[str, str]

    def as_json(self) -> dict[str, Any]:
        """The record with its id, numbers as numbers and lists as lists (``--json``)."""
        value: dict[str, Any] = {"id": self.id}
        for name, text in self.fields.items():
            if name in _INT_FIELDS and text.lstrip("-").isdigit():
                value[name] = int(text)
            elif name == "time":
                value[name] = _number(text)
            elif name in _LIST_FIELDS:
                value[name] = text.split(",") if text else []
            else:
                value[name] = text
        return value

    @property
    def time(self) -> float:
        """When guard decided (seconds since the epoch); else when the record was written."""
        decided = _number(self.fields.get("time", ""))
        if isinstance(decided, float):
            return decided
        return int(self.id.split("-")[0]) / 1000

    def line(self) -> str:
        """One readable line: time (UTC), action, then what matched, where, for whom."""
        fields = self.fields
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        parts = [stamp.replace("+00:00", "Z"), f"{fields.get('action', '?'):<13}"]
        for label, name in (
            ("list", "list"),
            ("distance", "distance"),
            ("phash", "phash_distance"),
            ("transform", "transform"),
            ("source", "source"),
            ("allowed_by", "allowed_by"),
            ("unchecked", "unchecked_lists"),
        ):
            if name in fields:
                parts.append(f"{label}={_shown(fields[name])}")
        route = f"{fields.get('method', '')} {fields.get('route', '')}".strip()
        parts.append(f"route={_shown(route)}")
        if "client" in fields:
            parts.append(f"client={_shown(fields['client'])}")
        parts.append(f"request={fields.get('request_id', '?')}")
        return " ".join(parts)

    def matches(self, lists: Collection[str], actions: Collection[str]) -> bool:
        """Whether the record names one of ``lists`` (its match, or a list it left unchecked)
        and has one of ``actions``; an empty filter passes everything."""
        if actions and self.fields.get("action") not in actions:
            return False
        if not lists:
            return True
        named = {self.fields.get("list"), *self.fields.get("unchecked_lists", "").split(",")}
        return not named.isdisjoint(lists)


def parse_since(text: str, now: float | None = None) -> str:
    """The stream id to read after for ``--since``: a duration back from now (``90s``, ``10m``,
    ``2h``, ``1d``, ``1w``), an ISO 8601 time (UTC unless it names a zone), or a stream id
    (``1712345678901-0``: the records after it, to resume where a reader stopped).

    Raises ValueError with a message naming the accepted forms.
    """
    value = text.strip()
    if _STREAM_ID.fullmatch(value):
        return value
    duration = _DURATION.fullmatch(value)
    if duration:
        seconds = float(duration[1]) * _UNITS[duration[2]]
        start = (time.time() if now is None else now) - seconds
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"--since {text!r}: expected a duration (10m, 2h, 1d), an ISO 8601 time "
                "(2026-12-07T09:30:00Z) or a stream id (1712345678901-0)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        start = moment.timestamp()
    milliseconds = max(0, int(start * 1000))
    return previous_id(f"{milliseconds}-0") or "0-0"


async def read_events(
    store: Store,
    stream: str,
    *,
    last: int = 20,
    since: str | None = None,
    follow: bool = False,
    lists: Collection[str] = (),
    actions: Collection[str] = (),
) -> AsyncIterator[Event]:
    """The stream's records, oldest first: the ``last`` ones that pass the filters, or with
    ``since`` (a stream id from :func:`parse_since`) every one after it; with ``follow``, then
    each new one as it is written, until cancelled."""
    if since is None:
        cursor, newest = await _latest(store, stream, last, lists, actions)
        for event in newest:
            yield event
    else:
        cursor = since
        while True:
            page = await store.events_after(stream, cursor, _PAGE)
            for stream_id, fields in page:
                cursor = stream_id
                event = Event(stream_id, fields)
                if event.matches(lists, actions):
                    yield event
            if len(page) < _PAGE:
                break
    while follow:
        for stream_id, fields in await store.events_after(stream, cursor, _PAGE, wait=_FOLLOW_WAIT):
            cursor = stream_id
            event = Event(stream_id, fields)
            if event.matches(lists, actions):
                yield event


async def _latest(
    store: Store, stream: str, count: int, lists: Collection[str], actions: Collection[str]
) -> tuple[str, list[Event]]:
    """The newest id in the stream ("0-0" if none), and the last ``count`` records passing the
    filters, oldest first (reading back a page at a time while the filters skip records)."""
    found: list[Event] = []
    newest = "0-0"
    if count == 0:  # only where the stream ends (``guard events --follow --last 0``)
        page = await store.latest_events(stream, 1)
        return (page[0][0] if page else newest), found
    before: str | None = None
    while len(found) < count:
        page = await store.latest_events(stream, _PAGE, before=before)
        if not page:
            break
        if before is None:
            newest = page[0][0]
        for stream_id, fields in page:
            event = Event(stream_id, fields)
            if event.matches(lists, actions):
                found.append(event)
                if len(found) == count:
                    break
        before = page[-1][0]
        if len(page) < _PAGE:
            break
    return newest, found[::-1]


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _shown(value: str) -> str:
    """A field as it reads on one line: quoted when it holds a space or is empty."""
    return json.dumps(value) if not value or any(c.isspace() for c in value) else value
