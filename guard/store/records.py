"""How a list is laid out in Redis: key names, entry records, list metadata. No I/O.

Every key of a list shares the hash tag ``{<list>}`` (so a Lua script may touch them all):

    guard:{<list>}:meta          HASH    hash_version, bands, layout (JSON), created, entries
                                         (enabled ones: those in the index), disabled (absent: 0),
                                         incarnation, pending (only while `guard rename` copies
                                         into the list: "rename from <old> (<token>)")
    guard:{<list>}:b<i>:<value>  SET     aHashes as signed int64 decimals (Redis intsets)
    guard:{<list>}:entries       HASH    aHash (signed decimal) -> JSON list of its entries
    guard:{<list>}:ver           STRING  INCR on every change
    guard:{<list>}:snap          STRING  17 bytes per entry: aHash, pHash, has-pHash (guard.mirror)
    guard:{<list>}:changes       STREAM  the last minutes of changes to the index, one item per
                                         version: v, add, del (snapshot records): workers'
                                         mirrors catch up from it (guard.store.changes)
    guard:{<list>}:disabled      HASH    aHash (signed decimal) -> JSON list of its disabled
                                         entries (`guard disable`): kept, in no band set, entries
                                         record or snapshot, so no lookup path can match them
    guard:{<list>}:dropped       STRING  drop marker: "dropping <incarnation>" from the first
                                         step of a drop until its last; "dropped <incarnation>"
                                         after a drop that keeps it (until the list is re-created)
    guard:lists                  SET     list names

A list's ``pending`` note is also "first load" while the add that creates it runs (cleared
after its last batch): lookups treat such a list as not there yet (its ``required`` setting
decides), so a first load that fails half way is never enforced as the whole list.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from guard.bands import BandLayout, default_layout, list_key
from guard.hashing import HASH_VERSION
from guard.spelling import from_hex, to_hex
from guard.types import Entry

#: The ``pending`` note of a list whose first load has not finished (an add creating it).
LOADING = "first load"


class ListKeys(NamedTuple):
    """The keys of one list that most commands touch."""

    entries: str
    ver: str
    meta: str
    snap: str


def keys(list_name: str) -> ListKeys:
    return ListKeys(
        list_key(list_name, "entries"),
        list_key(list_name, "ver"),
        list_key(list_name, "meta"),
        list_key(list_name, "snap"),
    )


def changes_key(list_name: str) -> str:
    """The stream of a list's recent changes (guard.store.changes)."""
    return list_key(list_name, "changes")


def disabled_key(list_name: str) -> str:
    """The hash of a list's disabled entries (laid out as ``entries``; out of the index)."""
    return list_key(list_name, "disabled")


def drop_marker(list_name: str) -> str:
    """The key that says a list was dropped on purpose (or is being dropped)."""
    return list_key(list_name, "dropped")


def text(value: bytes | str) -> str:
    """A reply as text (the client keeps bytes: decode_responses is off)."""
    return value.decode() if isinstance(value, bytes) else value


def phash_text(phash: int | None) -> str:
    """A pHash as the entry records and the scripts spell it ("" for none)."""
    return "" if phash is None else to_hex(phash)


def packed(ahash: int) -> bytes:
    """An aHash as its snapshot record starts."""
    return ahash.to_bytes(8, "big")


def entry_json(entry: Entry) -> str:
    """One entry of the ``entries`` record of its aHash (the aHash is the field)."""
    return json.dumps(
        {
            "phash": phash_text(entry.phash),
            "source": entry.source,
            "label": entry.label,
            "added_at": entry.added_at,
        },
        separators=(",", ":"),
    )


def entries_from_json(ahash: int, record: bytes | str) -> list[Entry]:
    """The entries an aHash's ``entries`` record holds."""
    return [
        Entry(
            ahash=ahash,
            phash=from_hex(item["phash"]) if item["phash"] else None,
            source=item.get("source") or "",
            label=item.get("label"),
            added_at=item.get("added_at"),
        )
        for item in json.loads(record)
    ]


@dataclass(frozen=True)
class ListMeta:
    """A list's ``meta`` hash, as read (or as the add script will create it)."""

    layout: BandLayout
    hash_version: str
    created: float
    #: Which creation of the list this is (a random id written with its first entries; "" for a
    #: list created before incarnations existed, until its next add gives it one).
    incarnation: str
    layout_text: str  # the layout as stored (the scripts compare it)
    #: Set while ``guard rename`` copies entries into this list (it is not whole yet).
    pending: str = ""

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> ListMeta:
        """From HGETALL's reply (KeyError, ValueError: damaged metadata)."""
        return cls(
            layout=BandLayout(tuple(tuple(band) for band in json.loads(raw[b"layout"]))),
            hash_version=text(raw[b"hash_version"]),
            created=float(raw[b"created"]),
            incarnation=text(raw.get(b"incarnation", b"")),
            layout_text=text(raw[b"layout"]),
            pending=text(raw.get(b"pending", b"")),
        )

    @classmethod
    def new(cls, bands: int) -> ListMeta:
        """The metadata of a list not created yet (the add script makes its incarnation)."""
        layout = default_layout(bands)
        return cls(
            layout=layout,
            hash_version=HASH_VERSION,
            created=time.time(),
            incarnation="",
            layout_text=json.dumps([list(band) for band in layout.bands]),
        )
