"""Candidates, policies and the figures decided from them: recall, false-positive rate, recommend.

Every edit (and every original, for false positives) is looked up once at the widest radius with
dihedral variants and no pHash filter. Each candidate carries its aHash and pHash distance to every
variant of the query, so every policy reported (any radius up to :data:`MAX_RADIUS`, confirmation
on or off, dihedral on or off, trimmed or not) is decided from those candidates exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from guard.config import Config
from guard.hashing import FrameHash, hamming

#: The widest radius evaluated (real-photo aHashes are too correlated above it: docs/hash.md).
MAX_RADIUS = 12
RADII = tuple(range(MAX_RADIUS + 1))


@dataclass(frozen=True)
class Policy:
    radius: int
    confirm_radius: int | None  # None: no pHash confirmation
    dihedral: bool
    trimmed: bool


@dataclass(frozen=True)
class Candidate:
    """A stored original near a query: its distances to every (frame, transform) of the query."""

    source: str
    # (is identity, aHash distance, pHash distance) per query frame and dihedral transform.
    distances: tuple[tuple[bool, int, int], ...]

    def hits(self, policy: Policy) -> bool:
        return any(
            (identity or policy.dihedral)
            and d <= policy.radius
            and (policy.confirm_radius is None or p <= policy.confirm_radius)
            for identity, d, p in self.distances
        )


@dataclass(frozen=True)
class Query:
    """One looked-up image: an edit of ``original``, or the original itself (edit "original")."""

    original: str
    edit: str
    group: str
    trimmed: bool
    candidates: tuple[Candidate, ...]


@dataclass
class Evaluation:
    """Everything ``guard eval`` measured; :mod:`guard.evaluation.report` summarises it."""

    folder: str
    originals: int
    skipped: list[tuple[str, str]]
    queries: list[Query]
    pairwise_ahash: list[int]
    pairwise_phash: list[int]


Variants = Sequence[tuple[bool, int, int]]  # (is identity, aHash, pHash) per frame and transform


def query_variants(frames: Sequence[FrameHash]) -> Variants:
    """Every dihedral variant of every query frame, computed once per query."""
    return [
        (transform == "identity", ahash, phash)
        for frame in frames
        for transform, (ahash, phash) in frame.variants().items()
    ]


def candidate_for(source: str, ahash: int, phash: int | None, variants: Variants) -> Candidate:
    distances = tuple(
        (identity, hamming(ahash, v_ahash), 0 if phash is None else hamming(phash, v_phash))
        for identity, v_ahash, v_phash in variants
    )
    return Candidate(source, distances)


def recall(queries: Iterable[Query], policy: Policy, edit: str | None = None) -> float | None:
    """Share of edits (of one kind, if named) whose own original matches under ``policy``."""
    relevant = [
        q
        for q in queries
        if q.edit != "original" and q.trimmed == policy.trimmed and edit in (None, q.edit)
    ]
    if not relevant:
        return None
    found = sum(
        any(c.source == q.original and c.hits(policy) for c in q.candidates) for q in relevant
    )
    return found / len(relevant)


def false_positive_rate(queries: Iterable[Query], policy: Policy) -> float | None:
    """Share of originals that match some *other* original under ``policy`` (query FP rate)."""
    relevant = [q for q in queries if q.edit == "original" and q.trimmed == policy.trimmed]
    if not relevant:
        return None
    wrong = sum(
        any(c.source != q.original and c.hits(policy) for c in q.candidates) for q in relevant
    )
    return wrong / len(relevant)


def configured_policy(config: Config) -> Policy:
    policy = config.defaults
    return Policy(policy.reject_radius, policy.confirm_radius, policy.dihedral, True)


def at_radius(base: Policy, radius: int, *, confirm: bool = True) -> Policy:
    """``base`` (trimmed) at another radius, with or without its pHash confirmation."""
    return Policy(radius, base.confirm_radius if confirm else None, base.dihedral, True)


def feature_policies(config: Config) -> dict[str, Policy]:
    """The configured policy, and the same with each of guard's three defences switched off."""
    base = configured_policy(config)
    return {
        "guard": base,
        "no pHash confirmation": Policy(base.radius, None, base.dihedral, True),
        "no dihedral": Policy(base.radius, base.confirm_radius, False, True),
        "no border trim": Policy(base.radius, base.confirm_radius, base.dihedral, False),
    }


@dataclass(frozen=True)
class Recommendation:
    """The radii :func:`recommend` found for a false-positive budget (JSON: ``recommended``)."""

    reject_radius: int | None
    flag_radius: int | None
    max_fpr: float
    recall_at_reject: float | None
    caveat: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "reject_radius": self.reject_radius,
            "flag_radius": self.flag_radius,
            "max_fpr": self.max_fpr,
            "recall_at_reject": self.recall_at_reject,
            "caveat": self.caveat,
        }


def recommend(evaluation: Evaluation, config: Config, max_fpr: float) -> Recommendation:
    """The widest reject radius whose observed query FP rate stays within ``max_fpr`` (and a flag
    radius within ten times that: flags are reviewed, not blocked), at the configured confirmation.

    With n originals and no false positive seen, the true rate is only known to be below 3/n
    (95%, the rule of three): the result says when the set is too small to show ``max_fpr``.
    """
    base = configured_policy(config)

    def fpr(radius: int) -> float:
        return false_positive_rate(evaluation.queries, at_radius(base, radius)) or 0.0

    reject = max((r for r in RADII if fpr(r) <= max_fpr), default=None)
    flag = max(
        (r for r in RADII if fpr(r) <= 10 * max_fpr and (reject is None or r >= reject)),
        default=None,
    )
    rate = recall(evaluation.queries, at_radius(base, reject)) if reject is not None else None
    bound = 3 / evaluation.originals if evaluation.originals else None
    caveat = None
    if bound is not None and bound > max_fpr:
        caveat = (
            f"{evaluation.originals} originals can only show a false-positive rate below "
            f"{bound:.2%} (95%, none observed); showing {max_fpr:g} needs at least "
            f"{round(3 / max_fpr)} originals"
        )
    return Recommendation(reject, flag, max_fpr, rate, caveat)
