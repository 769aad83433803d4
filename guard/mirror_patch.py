"""A loaded mirror plus the changes made to its list since: pure, no Redis.

A list's change log (guard.store.changes) says, per version, which snapshot records a change
added to the index and which it took out. Building a :class:`guard.mirror.Mirror` again for each
of them would cost the whole list every time (about a second per million entries, in every
worker). A :class:`PatchedMirror` keeps the mirror it was loaded as and lays the changes over it:
the entries added since, in a small mirror of their own, and a mask of the loaded entries removed
since. A lookup asks both and merges the answers in the order a single mirror would give. Once
the changes grow past a share of the list, the two are merged into one mirror again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from guard.mirror import CONFIRMED, CONTRADICTED, RECORD, UNCONFIRMABLE, Mirror, Ranked

#: Merge the changes into a new mirror once they hold more than this many entries, or this
#: share of the loaded ones: a lookup then pays for two small indexes instead of one big one.
COMPACT_ENTRIES = 4096
COMPACT_SHARE = 1 / 16


def _records(mirror: Mirror, keep: npt.NDArray[np.bool_] | None = None) -> bytes:
    """The snapshot records of a mirror's entries (only those ``keep`` marks, if given)."""
    records = np.empty(len(mirror), dtype=RECORD)
    records["ahash"] = mirror.ahashes
    records["phash"] = mirror.phashes
    records["has_phash"] = mirror.has_phash
    return (records if keep is None else records[keep]).tobytes()


class PatchedMirror:
    """A mirror at the (incarnation, version) of its list's last applied change."""

    def __init__(
        self,
        base: Mirror,
        *,
        version: int,
        added: Mirror | None = None,
        removed: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        self.base = base
        self.version = version
        self.added = added if added is not None else Mirror.from_snapshot(b"", base.layout, 0)
        self.removed = removed if removed is not None else np.zeros(len(base), dtype=bool)
        self._removed_count = int(self.removed.sum())

    @property
    def incarnation(self) -> str:
        return self.base.incarnation

    def __len__(self) -> int:
        return len(self.base) - self._removed_count + len(self.added)

    def hashes_at(self, position: int) -> tuple[int, int | None]:
        """(aHash, pHash or None) of the entry at ``position`` of :meth:`rank`'s answer."""
        mirror, at = self._locate(position)
        return int(mirror.ahashes[at]), int(mirror.phashes[at]) if mirror.has_phash[at] else None

    def _locate(self, position: int) -> tuple[Mirror, int]:
        if position < len(self.base):
            return self.base, position
        return self.added, position - len(self.base)

    def rank(
        self,
        queries: list[tuple[int, int]],
        radius: int,
        confirm_radius: int,
        limit: int | None = None,
    ) -> Ranked:
        """:meth:`guard.mirror.Mirror.rank` over the list as it is now: positions below
        ``len(self.base)`` are the loaded mirror's, the others the added entries'."""
        wider = None if limit is None else limit + self._removed_count
        loaded = self.base.rank(queries, radius, confirm_radius, wider)
        if self._removed_count:
            loaded = loaded.subset(~self.removed[loaded.positions])
        if not len(self.added):
            return loaded if limit is None else loaded.subset(slice(0, limit))
        new = self.added.rank(queries, radius, confirm_radius, limit)
        merged = loaded.then(replace(new, positions=new.positions + len(self.base)))
        has_phash = np.concatenate(
            [self.base.has_phash[loaded.positions], self.added.has_phash[new.positions]]
        )
        tier = np.where(
            merged.confirmed, CONFIRMED, np.where(has_phash, CONTRADICTED, UNCONFIRMABLE)
        )
        # Mirror.rank's order: tier, then aHash distance, then pHash distance.
        order = np.lexsort((merged.phash_distance, merged.distance, tier))
        return merged.subset(order if limit is None else order[:limit])

    def patched(self, changes: Sequence[tuple[bytes, bytes]], version: int) -> PatchedMirror:
        """This mirror with ``changes`` (each: the records added, the records removed; in log
        order) applied, at ``version``."""
        added = np.frombuffer(_records(self.added), dtype=RECORD)
        removed = self.removed.copy()
        for new, gone in changes:
            if gone:
                added, removed = self._remove(np.frombuffer(gone, dtype=RECORD), added, removed)
            if new:
                # (concatenate would turn the big-endian records into native ones)
                added = np.concatenate([added, np.frombuffer(new, dtype=RECORD)]).astype(RECORD)
        if len(added) > max(COMPACT_ENTRIES, COMPACT_SHARE * len(self.base)):
            merged = _records(self.base, ~removed) + added.tobytes()
            base = Mirror.from_snapshot(merged, self.base.layout, version, self.incarnation)
            return PatchedMirror(base, version=version)
        return PatchedMirror(
            self.base,
            version=version,
            added=Mirror.from_snapshot(added.tobytes(), self.base.layout, version),
            removed=removed,
        )

    def _remove(
        self,
        gone: npt.NDArray[np.void],
        added: npt.NDArray[np.void],
        removed: npt.NDArray[np.bool_],
    ) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_]]:
        """Take the ``gone`` records out: from the entries added since the load if there, else
        from the loaded ones (a record is one entry: a list never holds it twice)."""
        in_added = np.isin(_as_bytes(added), _as_bytes(gone))
        left = gone[~np.isin(_as_bytes(gone), _as_bytes(added[in_added]))]
        keys = {(int(r["ahash"]), int(r["phash"]), int(r["has_phash"])) for r in left}
        if keys:
            wanted = np.array(sorted({a for a, _, _ in keys}), dtype=np.uint64)
            for at in np.flatnonzero(np.isin(self.base.ahashes, wanted) & ~removed):
                key = (
                    int(self.base.ahashes[at]),
                    int(self.base.phashes[at]),
                    int(self.base.has_phash[at]),
                )
                if key in keys:
                    removed[at] = True
        return added[~in_added], removed


def _as_bytes(records: npt.NDArray[np.void]) -> npt.NDArray[np.void]:
    """Each record as one opaque value, so that whole records compare (and sort) at once."""
    return np.ascontiguousarray(records).view(np.dtype((np.void, RECORD.itemsize)))
