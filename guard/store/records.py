"""How a list is laid out in Redis: key names, entry records, list metadata. No I/O.

Every key of a list shares the hash tag ``{<list>}`` (so a Lua script may touch them all):

    guard:{<list>}:meta          HASH    hash_version, bands, layout (JSON), created, entries
                                         (enabled ones: those in the index), disabled (absent: 0),
                                         incarnation, pending (only while `guard rename` copies
                                         into the list: "rename from <old> (<token>)")
    guard:{<list>}:b<i>:<value>  SET     aHashes as signed int64 decimals (Redis intsets)
    guard:{<list>}:e:<bucket>    HASH    the entry records of the aHashes in one of 65,536 buckets
                                         (entry_bucket): field: the entry's aHash and pHash, 8
                                         big-endian bytes each (the aHash alone for an entry
                                         without a pHash); value: its label id (decimal, empty
                                         for none), ":", the second it was added (4 bytes), its
                                         source (UTF-8). Small hashes: Redis keeps each one as a
                                         packed listpack (about 47 bytes per entry at 1e6)
    guard:{<list>}:labels        HASH    the list's labels, each kept once: "=<label>" -> id and
                                         "<id>" -> label (ids count up in meta's `labels`)
    guard:{<list>}:ver           STRING  INCR on every change
    guard:{<list>}:snap          STRING  17 bytes per entry: aHash, pHash, has-pHash (guard.mirror)
    guard:{<list>}:snapdel       STRING  the snapshot's tombstones: records removed since it was
                                         last compacted (guard.store.snapshot)
    guard:{<list>}:changes       STREAM  the last minutes of changes to the index, one item per
                                         version: v, add, del (snapshot records): workers'
                                         mirrors catch up from it (guard.store.changes)
    guard:{<list>}:off           HASH    the list's disabled entries (`guard disable`), fields and
                                         values as the entry records', in one hash (a list holds
                                         few): kept, in no band set, entry bucket or snapshot, so
                                         no lookup path can match them
    guard:{<list>}:dropped       STRING  drop marker: "dropping <incarnation>" from the first
                                         step of a drop until its last; "dropped <incarnation>"
                                         after a drop that keeps it (until the list is re-created)
    guard:lists                  SET     list names

A list written by an older guard (before compact records) keeps its entries as JSON
(``guard:{<list>}:entries`` and ``:disabled``: signed aHash -> JSON list of its entries); its
meta has no ``records`` field.
Readers read both layouts; the write scripts refuse such a list until ``guard upgrade`` moves
its entries to compact records in place (guard.store.upgrade).

A list's ``pending`` note is also "first load" while the add that creates it runs (cleared
after its last batch): lookups treat such a list as not there yet (its ``required`` setting
decides), so a first load that fails half way is never enforced as the whole list.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from guard.bands import BandLayout, default_layout, list_key
from guard.hashing import HASH_VERSION
from guard.spelling import from_hex, to_hex
from guard.types import Entry

#: The ``pending`` note of a list whose first load has not finished (an add creating it).
LOADING = "first load"
#: meta's ``records`` for a list whose entries are compact records in buckets (absent: JSON).
COMPACT = "2"
#: Entry records are spread over 2**BUCKET_BITS hashes: a few to a hundred entries each from
#: 1e5 to 6e6 entries, under Redis's listpack limit (hash-max-listpack-entries, 128).
BUCKET_BITS = 16
#: An entry record's added-at: whole seconds, 4 bytes, big-endian (until 2106).
_ADDED_AT = struct.Struct(">I")


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


def entry_bucket(ahash: int) -> int:
    """The bucket of an aHash's entry records: its four 16-bit words XORed, so that similar
    aHashes (which share leading bits) spread evenly."""
    return (ahash ^ ahash >> 16 ^ ahash >> 32 ^ ahash >> 48) & ((1 << BUCKET_BITS) - 1)


def entry_buckets(ahashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """:func:`entry_bucket` of each of an array of aHashes."""
    folded: npt.NDArray[np.uint64] = ahashes ^ (ahashes >> np.uint64(16))
    folded ^= ahashes >> np.uint64(32)
    folded ^= ahashes >> np.uint64(48)
    folded &= np.uint64((1 << BUCKET_BITS) - 1)
    return folded


def bucket_key(list_name: str, ahash: int) -> str:
    """The hash holding the entry records of ``ahash``."""
    return bucket_key_at(list_name, entry_bucket(ahash))


def bucket_key_at(list_name: str, bucket: int) -> str:
    return list_key(list_name, f"e:{bucket:04x}")


def off_key(list_name: str) -> str:
    """The hash of a list's disabled entries, laid out as the entry records (one hash: a list
    holds few, and ``guard check`` reads them all for every image it checks)."""
    return list_key(list_name, "off")


def labels_key(list_name: str) -> str:
    """The hash of a list's interned labels."""
    return list_key(list_name, "labels")


def entry_field(ahash: int, phash: int | None) -> bytes:
    """An entry record's field: its aHash and pHash, or its aHash alone (no pHash)."""
    return packed(ahash) + (b"" if phash is None else phash.to_bytes(8, "big"))


def field_hashes(field: bytes) -> tuple[int, int | None]:
    """The (aHash, pHash) an entry record's field names."""
    ahash = int.from_bytes(field[:8], "big")
    return ahash, int.from_bytes(field[8:16], "big") if len(field) == 16 else None


def record_tail(entry: Entry) -> bytes:
    """An entry record's value after its label id (the add script interns the label)."""
    added_at = 0 if entry.added_at is None else int(entry.added_at)
    # surrogatepass: a path guard could not decode (os.fsdecode's surrogates) round-trips.
    source = entry.source.encode("utf-8", "surrogatepass")
    return _ADDED_AT.pack(max(0, min(added_at, 2**32 - 1))) + source


def record_label_id(record: bytes) -> int | None:
    """The label id an entry record names (None: no label)."""
    head = record[: record.index(b":")]
    return int(head) if head else None


def entry_from_record(field: bytes, record: bytes, labels: Mapping[int, str]) -> Entry:
    """The entry an entry record holds, its label looked up in ``labels`` (id -> label)."""
    head, _, tail = record.partition(b":")
    ahash, phash = field_hashes(field)
    return Entry(
        ahash=ahash,
        phash=phash,
        source=_source_text(tail[_ADDED_AT.size :]),
        label=labels.get(int(head)) if head else None,
        added_at=float(_ADDED_AT.unpack_from(tail)[0]),
    )


def _source_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:  # not written by guard: show what can be read
        return raw.decode("utf-8", "replace")


def changes_key(list_name: str) -> str:
    """The stream of a list's recent changes (guard.store.changes)."""
    return list_key(list_name, "changes")


def disabled_key(list_name: str) -> str:
    """The JSON hash of the disabled entries of a list an older guard wrote (see above)."""
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
    """One entry of an older guard's JSON record of its aHash (the aHash is the field)."""
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
    """The entries an older guard's JSON record of an aHash holds."""
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
    #: How its entries are kept: :data:`COMPACT`, or "" (JSON: written by an older guard).
    records: str = COMPACT

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
            records=text(raw.get(b"records", b"")),
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
