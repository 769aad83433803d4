"""Compact entry records (guard.store.records): pure, no Redis."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from guard.store.records import (
    BUCKET_BITS,
    entry_bucket,
    entry_buckets,
    entry_field,
    entry_from_record,
    field_hashes,
    record_label_id,
    record_tail,
)
from guard.types import Entry


def stored(entry: Entry, label_id: int | None) -> Entry:
    """The entry as the add script writes it (label id, ':', tail) and a reader reads it."""
    head = b"" if label_id is None else str(label_id).encode()
    record = head + b":" + record_tail(entry)
    assert record_label_id(record) == label_id
    labels = {} if label_id is None else {label_id: entry.label or ""}
    return entry_from_record(entry_field(entry.ahash, entry.phash), record, labels)


@pytest.mark.parametrize(
    "entry",
    [
        Entry(0xFFFF_0000_1234_5678, 0x0123_4567_89AB_CDEF, "IMG_0001.jpg", "spam", 1.7e9),
        Entry(1, None, "", None, 0.0),  # no pHash: the field is the aHash alone
        Entry(2**64 - 1, 0, "dir/sub dir/ü€😀.png", "a:b label", 4_000_000_000.0),
        Entry(5, 2**64 - 1, "bad-\udcff-name.jpg", "x", 12.0),  # os.fsdecode's surrogates
    ],
)
def test_an_entry_round_trips_through_its_record(entry: Entry) -> None:
    label_id = None if entry.label is None else 7
    assert stored(entry, label_id) == entry
    assert len(entry_field(entry.ahash, entry.phash)) == (8 if entry.phash is None else 16)
    assert field_hashes(entry_field(entry.ahash, entry.phash)) == (entry.ahash, entry.phash)


def test_added_at_is_kept_to_the_second_within_four_bytes() -> None:
    entry = Entry(9, 9, "a.jpg", None, 1_765_000_000.75)
    assert stored(entry, None).added_at == 1_765_000_000.0
    assert stored(Entry(9, 9, "a.jpg", None, -5.0), None).added_at == 0.0
    assert stored(Entry(9, 9, "a.jpg", None, 2.0**40), None).added_at == 2**32 - 1
    assert len(record_tail(Entry(9, 9, "", None, 1.0))) == 4


def test_an_unknown_label_id_reads_as_no_label() -> None:
    entry = Entry(3, 4, "a.jpg", "spam", 10.0)
    record = b"12:" + record_tail(entry)
    assert entry_from_record(entry_field(3, 4), record, {}).label is None


def test_buckets_spread_clustered_hashes_evenly() -> None:
    """Photo aHashes share leading bits; the XOR of the four words still spreads them: 200,000
    hashes that agree on their top 32 bits fill every bucket about evenly."""
    rng = random.Random(4)
    prefix = 0xFFFF_0F0F << 32
    counts = Counter(entry_bucket(prefix | rng.getrandbits(32)) for _ in range(200_000))
    mean = 200_000 / 2**BUCKET_BITS
    assert len(counts) > 0.9 * 2**BUCKET_BITS
    assert max(counts.values()) < mean + 8 * mean**0.5 + 5
    # and the top bits alone would not: every hash in one bucket
    assert len({(prefix | rng.getrandbits(32)) >> 48 for _ in range(1000)}) == 1


def test_the_array_form_of_a_bucket_is_the_same_bucket() -> None:
    """entry_buckets (the buckets a listing reads) folds as entry_bucket (where writes go)."""
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(10_000)] + [0, 2**64 - 1, 0xFFFF << 48]
    array = entry_buckets(np.array(hashes, dtype=np.uint64))
    assert [int(bucket) for bucket in array] == [entry_bucket(h) for h in hashes]
