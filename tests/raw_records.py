"""Entry records read from Redis directly, by key pattern (the oracle's view of a list, with
no guard code between): guard.store.records lays them out. An older guard's JSON records
(signed aHash -> JSON list of entries) count too."""

from __future__ import annotations

import json

import redis

from guard.spelling import from_hex, from_signed
from guard.store.records import field_hashes


def raw_records(
    client: redis.Redis, list_name: str, *, disabled: bool = False
) -> list[tuple[int, int | None]]:
    """Every (aHash, pHash) of the list's entry records (or its disabled ones)."""
    pattern = f"guard:{{{list_name}}}:{'off' if disabled else 'e:*'}"
    compact = [
        field_hashes(field)
        for key in client.scan_iter(match=pattern, count=1000)
        for field in client.hkeys(key)
    ]
    old = f"guard:{{{list_name}}}:{'disabled' if disabled else 'entries'}"
    return compact + [
        (from_signed(int(field)), from_hex(item["phash"]) if item["phash"] else None)
        for field, value in client.hgetall(old).items()
        for item in json.loads(value)
    ]


def raw_count(url: str, list_name: str, *, disabled: bool = False) -> int:
    """How many entry records (or disabled ones) the list holds in Redis."""
    client = redis.Redis.from_url(url)
    try:
        return len(raw_records(client, list_name, disabled=disabled))
    finally:
        client.close()


def raw_buckets(client: redis.Redis, list_name: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every entry bucket of the list with its fields and records, as Redis holds them."""
    pattern = f"guard:{{{list_name}}}:e:*"
    return {key: client.hgetall(key) for key in client.scan_iter(match=pattern, count=1000)}
