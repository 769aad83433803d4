"""``guard eval``'s measurement: hash originals and edits, index the originals, look everything up.

Every original in the folder is edited (:mod:`guard.evaluation.edits`), originals and edits are
hashed with guard's real pipeline, with and without border trimming (in a process pool when asked),
the originals are indexed in the real store (two temporary lists, dropped afterwards), and each
edit (and each original, for false positives) is looked up once at radius :data:`MAX_RADIUS` with
dihedral variants and no pHash filter (:mod:`guard.evaluation.scoring` decides every policy).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from guard.config import Config
from guard.errors import ImageError
from guard.evaluation.edits import EDITS, edit_bytes
from guard.evaluation.scoring import (
    MAX_RADIUS,
    Evaluation,
    Query,
    candidate_for,
    query_variants,
)
from guard.hashing import ImageHashes, hamming, hash_bytes
from guard.store import Store
from guard.types import Entry

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Hashed:
    name: str
    original: tuple[ImageHashes, ImageHashes] | None  # (trimmed, untrimmed)
    edits: tuple[tuple[str, str, ImageHashes, ImageHashes], ...]
    error: str | None = None


def _hash_one(path: str, name: str, edits: tuple[str, ...]) -> _Hashed:
    """Hash an original and its edits, with and without trimming (runs in worker processes)."""
    try:
        data = Path(path).read_bytes()
        original = (hash_bytes(data), hash_bytes(data, trim=False))
        if original[0].low_information:
            return _Hashed(name, None, (), "low-information image")
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (ImageError, OSError) as error:
        return _Hashed(name, None, (), str(error))
    hashed, failed = [], []
    for edit in EDITS:
        if edit.name in edits:
            encoded = edit_bytes(image, name, edit)
            try:
                hashed.append(
                    (edit.name, edit.group, hash_bytes(encoded), hash_bytes(encoded, trim=False))
                )
            except ImageError as error:  # e.g. resize-200% of a large photo passes the pixel cap
                failed.append(f"{edit.name}: {error}")
    return _Hashed(name, original, tuple(hashed), "; ".join(failed) or None)


def _originals(folder: str | os.PathLike[str], limit: int | None) -> list[Path]:
    """The images in ``folder`` (recursively, sorted); with ``limit``, every k-th of them."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if limit is not None and len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def _hash_all(
    paths: list[str],
    names: list[str],
    chosen: tuple[str, ...],
    workers: int,
    progress: Progress | None,
) -> list[_Hashed]:
    """Every original and its chosen edits hashed, in a process pool when ``workers`` > 1."""
    hashed: list[_Hashed] = []
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_hash_one, paths, names, [chosen] * len(paths))
            for done, item in enumerate(results, 1):
                hashed.append(item)
                if progress:
                    progress(done, len(paths))
    else:
        for done, (path, name) in enumerate(zip(paths, names, strict=True), 1):
            hashed.append(_hash_one(path, name, chosen))
            if progress:
                progress(done, len(paths))
    return hashed


async def _index(
    store: Store, list_name: str, good: list[_Hashed], index: int, bands: int
) -> tuple[dict[str, str], set[str]]:
    """Add the originals (trimmed or untrimmed hashes, by ``index``) to ``list_name``.

    Originals with identical hashes (the same picture in two files) are one entry: its edits and
    its own lookup count the first file of the group as their original. Returns each original's
    canonical name and the sources stored.
    """
    canonical: dict[tuple[int, int], str] = {}
    own: dict[str, str] = {}
    for item in good:
        assert item.original is not None
        key = (item.original[index].ahash, item.original[index].phash)
        own[item.name] = canonical.setdefault(key, item.name)
    entries = [Entry(key[0], key[1], name) for key, name in canonical.items()]
    await store.add(list_name, entries, bands=bands)
    return own, {e.source for e in entries}


async def _look_up(
    store: Store,
    list_name: str,
    good: list[_Hashed],
    trimmed: bool,
    own: dict[str, str],
    stored: set[str],
) -> list[Query]:
    """Each original and each of its edits looked up once, widest radius, dihedral on."""
    index = 0 if trimmed else 1
    queries: list[Query] = []
    for item in good:
        assert item.original is not None
        jobs = [("original", "original", item.original[index])]
        jobs += [(name, group, pair[index]) for name, group, *pair in item.edits]
        for edit_name, group, hashes in jobs:
            frames = [f for f in hashes.frames if not f.low_information]
            matches = await store.lookup(list_name, frames, radius=MAX_RADIUS, dihedral=True)
            variants = query_variants(frames)
            candidates = tuple(
                candidate_for(m.entry.source, m.entry.ahash, m.entry.phash, variants)
                for m in matches
                if m.entry.source in stored
            )
            queries.append(Query(own[item.name], edit_name, group, trimmed, candidates))
    return queries


def _pairwise(good: list[_Hashed]) -> tuple[list[int], list[int]]:
    """aHash and pHash distances between every two distinct originals (trimmed hashes)."""
    pairwise_a, pairwise_p = [], []
    for i, a in enumerate(good):
        for b in good[i + 1 :]:
            assert a.original and b.original
            pairwise_a.append(hamming(a.original[0].ahash, b.original[0].ahash))
            pairwise_p.append(hamming(a.original[0].phash, b.original[0].phash))
    return pairwise_a, pairwise_p


async def evaluate(
    folder: str | os.PathLike[str],
    store: Store,
    config: Config,
    *,
    edits: Sequence[str] | None = None,
    limit: int | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> Evaluation:
    """Hash, edit, index and look up; the caller summarises. ``limit`` takes every k-th original."""
    files = _originals(folder, limit)
    chosen = tuple(edits) if edits else tuple(edit.name for edit in EDITS)
    paths = [str(p) for p in files]
    names = [p.relative_to(folder).as_posix() for p in files]
    hashed = _hash_all(paths, names, chosen, workers, progress)
    good = [h for h in hashed if h.original is not None]
    skipped = [(h.name, h.error or "") for h in hashed if h.error]

    run_id = uuid.uuid4().hex[:8]
    lists = {True: f"eval-{run_id}-trim", False: f"eval-{run_id}-notrim"}
    queries: list[Query] = []
    try:
        for trimmed, list_name in lists.items():
            index = 0 if trimmed else 1
            own, stored = await _index(store, list_name, good, index, config.defaults.bands)
            queries += await _look_up(store, list_name, good, trimmed, own, stored)
    finally:
        for list_name in lists.values():
            await store.drop(list_name)

    pairwise_a, pairwise_p = _pairwise(good)
    return Evaluation(str(folder), len(good), skipped, queries, pairwise_a, pairwise_p)
