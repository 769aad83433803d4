"""What a list's size costs in false positives: the share of innocent uploads a list of N entries
would reject and flag, from guard's reference measurement of unrelated pairs.

Every entry is one more chance for an innocent upload to collide with it: at a per-pair rate ``p``
a list of ``N`` entries acts on ``1 - (1 - p)**N`` of innocent uploads. The per-pair rates are
measured on real photographs (:mod:`guard.reference_rates`); a list of different images has its
own (``guard eval --unrelated`` measures them). The figures are for dihedral matching on (fewer
collide without it), and count every entry as confirmable (entries imported without a pHash never
reject, and flag more often).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from guard.config import ListPolicy
from guard.reference_rates import PER_PAIR

#: At this estimated share of innocent uploads rejected, loading a list and starting the
#: middleware warn: one innocent upload in a hundred refused is more than any list is worth
#: without a person reviewing them.
WARN_SHARE = 0.01


def per_pair(ahash_radius: int, phash_radius: int) -> float:
    """The reference share of unrelated (upload, entry) pairs the rule acts on."""
    return PER_PAIR[ahash_radius][phash_radius]


def share_of_uploads(rate: float, entries: int) -> float:
    """The share of innocent uploads that collide with at least one of ``entries`` entries."""
    if rate >= 1:
        return 1.0 if entries else 0.0
    return -math.expm1(entries * math.log1p(-rate))


def entries_for(share: float, rate: float) -> int:
    """The smallest list at which ``share`` of innocent uploads collide, at a per-pair rate."""
    if rate >= 1:
        return 1
    return max(1, math.ceil(math.log1p(-share) / math.log1p(-rate)))


@dataclass(frozen=True)
class ScaleEstimate:
    """The share of innocent uploads a list of ``entries`` entries would reject and flag."""

    entries: int
    per_pair_reject: float
    rejected: float
    flagged: float  # flagged and not rejected


def estimate(policy: ListPolicy, entries: int) -> ScaleEstimate:
    """What the policy's radii would do to innocent uploads at this list size."""
    reject = per_pair(policy.reject_radius, policy.confirm_radius)
    acted_on = share_of_uploads(per_pair(policy.flag_radius, policy.confirm_radius), entries)
    rejected = share_of_uploads(reject, entries)
    return ScaleEstimate(entries, reject, rejected, max(acted_on - rejected, 0.0))


def describe(scale: ScaleEstimate) -> str:
    """'about 7% of innocent uploads rejected, about 7% more flagged' (the shares, rounded)."""
    if not scale.entries:
        return "no upload rejected or flagged (no entries)"
    flagged = f"{_about(scale.flagged)} more flagged" if scale.flagged else "none flagged"
    return f"{_about(scale.rejected)} of innocent uploads rejected, {flagged}"


def compact(scale: ScaleEstimate) -> str:
    """'about 7.3% rejected, about 7.5% flagged': for a table cell."""
    return f"{_about(scale.rejected)} rejected, {_about(scale.flagged)} flagged"


def rejects_too_many(scale: ScaleEstimate, mode: str, enforce_ratio: float) -> bool:
    """Whether a list in this mode enforces rejects on WARN_SHARE of innocent uploads or more
    (shadow mode refuses no one; a small enforce_ratio few)."""
    return mode == "enforce" and scale.rejected * enforce_ratio >= WARN_SHARE


def warning(name: str, policy: ListPolicy, entries: int) -> str | None:
    """The warning for an enforcing list whose size makes false rejects common; None if not."""
    scale = estimate(policy, entries)
    if not rejects_too_many(scale, policy.mode, policy.enforce_ratio):
        return None
    return (
        f"list {name!r} holds {entries} entries: at reject_radius {policy.reject_radius} and "
        f"confirm_radius {policy.confirm_radius}, unrelated photos collide at about "
        f"{scale.per_pair_reject:.2g} per (upload, entry) pair in guard's reference measurement, "
        f"so {describe(scale)}. Run it in shadow mode with a person reviewing "
        f"(lists.{name}.mode: shadow), tighten its radii or keep it small; guard eval "
        "--unrelated measures your own images (docs/accuracy.md#false-positives-at-list-scale)"
    )


def _about(share: float) -> str:
    if share < 0.0001:
        return "under 0.01%"
    percent = 100 * share
    return f"about {percent:.2g}%" if percent < 10 else f"about {percent:.0f}%"
