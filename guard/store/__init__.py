"""guard's lists in Redis: one :class:`Store` over a small package.

- records: key names, entry and metadata records (the data model is described there)
- connection: client settings that survive a restart, Redis errors as guard's, embedded lease
- catalog: the metadata of the lists a store has read (re-created and vanished lists)
- writes: adds and removals through the Lua scripts in ``scripts/``, and drops
- index: lookups through the Redis band index (SUNION over the probed buckets)
- mirror_cache: lookups through the worker-local mirrors (guard.mirror) while they are current
- integrity: verify a list, refuse a Redis that may evict it
- store: the :class:`Store` composed of the above; opening: :func:`open_store` from a config

A list's version restarts at 1 whenever the list is made again (``guard drop`` and a new load,
FLUSHALL, a restart without persistence, a restore of a backup taken before the list was
re-created): the incarnation (a random id the add script writes with a list's first entries)
tells those lists apart, so a worker's copy or cached layout of an earlier list is never taken
for the current one. A list created before incarnations existed has none (read as ""): it works
as before, and gets one at its next ``add`` (even one that adds nothing); each worker then sees a
new incarnation and reloads. One case stays out of reach: a backup of the *same* incarnation
restored and then written until its version is back at the value a worker holds, with no lookup
by that worker in between. A lookup that finds another incarnation than the one it knew forgets
the list's cached metadata and mirror and runs again on the new list.
"""

from __future__ import annotations

# INTSET_ENTRIES: band sets stay compact intsets up to this many members (Redis's default, 512,
# turns the hot buckets of real photo hashes into hash tables: 75 instead of 54 bytes per entry at
# 1e6, bench/lookup.py). Set on the embedded Redis; recommended for any other (README).
from guard.embedded import INTSET_ENTRIES
from guard.mirror import Mirror
from guard.store.connection import HEALTH_CHECK_SECONDS, ListExists, client_options
from guard.store.index import INLINE_QUERIES, SUNION_KEYS
from guard.store.integrity import VerifyReport
from guard.store.mirror_cache import DEFAULT_MIRROR, MirrorSettings
from guard.store.opening import StoreSettings, open_store, store_settings
from guard.store.store import LookupPolicy, Store
from guard.store.writes import WRITE_BATCH, RenameIncomplete

__all__ = [
    "DEFAULT_MIRROR",
    "HEALTH_CHECK_SECONDS",
    "INLINE_QUERIES",
    "INTSET_ENTRIES",
    "SUNION_KEYS",
    "WRITE_BATCH",
    "ListExists",
    "LookupPolicy",
    "Mirror",
    "MirrorSettings",
    "RenameIncomplete",
    "Store",
    "StoreSettings",
    "VerifyReport",
    "client_options",
    "open_store",
    "store_settings",
]
