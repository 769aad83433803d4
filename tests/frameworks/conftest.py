"""Fixtures for the end-to-end tests: the test Redis server with the `spam` list loaded, and the
config the examples run with (the YAML block of docs/frameworks.md, pointed at that server).

``tests/frameworks`` is a package (it has an ``__init__.py``) so that this file imports as
``frameworks.conftest`` and does not shadow ``tests/conftest.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from conftest import run

from guard import hash_file
from guard.store import Store
from guard.types import Entry

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "frameworks.md"


def guide_config() -> str:
    """The config of docs/frameworks.md: the YAML block after ``<!-- example-config -->``."""
    found = re.search(r"<!-- example-config -->\s*```yaml\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert found, "docs/frameworks.md has no example-config YAML block"
    return found.group(1)


#: A photo the `spam` list holds a near miss of: uploads of it are flagged, not rejected.
FLAGGED = ROOT / "tests" / "data" / "kitten.jpg"
#: 10 bits: over the default reject_radius (8), within flag_radius (12).
NEAR_MISS_BITS = 0b1111111111 << 20


def load_spam(url: str) -> None:
    """Empty the server, then list `blocklists/spam/` and a near miss of :data:`FLAGGED`."""

    async def load() -> None:
        async with Store.from_url(url) as store:
            spam = sorted((ROOT / "blocklists" / "spam").glob("*.jpg"))
            entries = [Entry(h.ahash, h.phash, p.name) for p in spam for h in [hash_file(p)]]
            near = hash_file(FLAGGED)
            entries.append(Entry(near.ahash ^ NEAR_MISS_BITS, near.phash, "near-kitten.jpg"))
            await store.add("spam", entries)

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    run(load())


@pytest.fixture(scope="module")
def e2e_config(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file: the guide's routes and lists, on the test Redis server holding `spam`."""
    load_spam(redis_server)
    path = tmp_path_factory.mktemp("e2e") / "guard.yaml"
    path.write_text(guide_config() + f"redis:\n  url: {redis_server}\n")
    return path
