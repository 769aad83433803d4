"""Pure decisions: which matches make an upload rejected, flagged or allowed, and which HTTP
status each refusal gets (the only module that knows statuses).

Only confirmed matches count (a 64-bit aHash alone collides on unrelated photos with the same
layout); a match within a list's reject radius rejects, within its flag radius flags. A list in
shadow mode (or the share of an enforce-mode list's matches outside its ``enforce_ratio``) only
shadow-rejects or shadow-flags: the app is called, told so, and the decision logged and counted.
The strictest outcome over every list and every image wins, an enforced one over any shadow one.
A list's allow entry nearer to the upload than a listed entry suppresses that match (see
:func:`suppresses`), before any of this: the suppression is recorded as "allowed".
:func:`judge` is the whole verdict on one request, lookup failures included, so the middleware
only does I/O around it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from guard.config import HttpSettings, ListPolicy, StatusCodes
from guard.errors import (
    BodyTimeout,
    BodyTooLarge,
    FormatNotAllowed,
    GuardError,
    ImageError,
    MalformedBody,
    NotAnImage,
    StoreError,
    TooManyFrames,
    TooManyPixels,
    UnknownList,
    UnsupportedEncoding,
)
from guard.types import Decision, Match

#: What a match means under its list's radii.
Action = Literal["reject", "flag", "allow"]
#: What a match does once the list's mode and enforce_ratio are applied.
Effect = Literal["reject", "flag", "shadow-reject", "shadow-flag", "allow"]
#: An enforced reject or flag outranks every shadow one; among each, reject outranks flag.
_SEVERITY: dict[Effect, int] = {
    "allow": 0,
    "shadow-flag": 1,
    "shadow-reject": 2,
    "flag": 3,
    "reject": 4,
}


@dataclass(frozen=True)
class Suppression:
    """A list's match that one of its allow entries suppressed (recorded as "allowed")."""

    match: Match  # the upload's match to the listed entry
    allowed_by: Match  # the upload's match to the allow entry nearer to it


@dataclass(frozen=True)
class Verdict:
    action: Effect
    match: Match | None = None  # the match that decided it (None for allow)
    #: Each list whose best match an allow entry suppressed (the match, and by what).
    allowed: tuple[Suppression, ...] = ()


def action_for(match: Match, policy: ListPolicy) -> Action:
    """What one match means under its list's policy.

    An entry without a pHash (imported from another tool) is matched on the aHash alone, which
    unrelated photos with the same layout share (about 1 pair in 100 within 8 bits, see
    docs/accuracy.md): it can flag an upload for a person to look at, never reject it.
    """
    if match.phash_distance is None:
        return "flag" if match.distance <= policy.flag_radius else "allow"
    if not match.confirmed:
        return "allow"
    if match.distance <= policy.reject_radius:
        return "reject"
    if match.distance <= policy.flag_radius:
        return "flag"
    return "allow"


def suppresses(allow: Match, match: Match, policy: ListPolicy) -> bool:
    """Whether the upload's match to an allow entry (``allow``) suppresses its match to a listed
    entry (``match``) of the same list: the rule, safe against abuse.

    ``allow`` must be a confirmed match within the list's reject radius (aHash within
    ``reject_radius``, pHash within ``confirm_radius``, the list's ``dihedral`` setting: what
    :meth:`guard.store.Store.lookup_allowed` returns), and the upload strictly nearer to the
    allow entry than to the listed one: a smaller aHash distance, or the same aHash distance and
    a smaller pHash distance (for a listed entry without a pHash: a smaller aHash distance).
    So allowing an innocent photo that collided with a listed one lets that photo through, but
    never the listed image itself (nearer to its own entry, at distance 0) nor its near copies.
    """
    if not allow.confirmed or allow.phash_distance is None:
        return False
    if allow.distance > policy.reject_radius or allow.phash_distance > policy.confirm_radius:
        return False
    if match.phash_distance is None:
        return allow.distance < match.distance
    return (allow.distance, allow.phash_distance) < (match.distance, match.phash_distance)


def rollout_point(match: Match) -> float:
    """Where ``match`` falls in [0, 1) for ``enforce_ratio``: enforced when below the ratio.

    A hash of what the upload and the entry determine (the entry's hashes, and the distances and
    the dihedral variant by which the upload matched it), never random(): a retried upload, or
    the same one on another worker or host, gets the same treatment, so a user cannot retry
    until it passes and an operator sees one answer per upload. Raising the ratio only adds
    enforced uploads. The list's name and the entry's source are left out: renaming a list or
    relabelling an entry does not reshuffle the rollout.
    """
    key = (
        f"{match.entry.ahash:016x}:{match.entry.phash if match.entry.phash is not None else '-'}:"
        f"{match.distance}:{match.phash_distance}:{match.transform}"
    )
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"guard-rollout").digest()
    return int.from_bytes(digest, "big") / 2**64


def effect_of(match: Match, policy: ListPolicy) -> Effect:
    """What one match does under its list's policy: :func:`action_for`'s reject or flag,
    enforced, or in shadow mode (or outside ``enforce_ratio``) only its shadow."""
    return _effect(action_for(match, policy), match, policy)


def _effect(action: Action, match: Match, policy: ListPolicy) -> Effect:
    if action == "allow":
        return "allow"
    enforced = policy.mode == "enforce" and (
        policy.enforce_ratio >= 1 or rollout_point(match) < policy.enforce_ratio
    )
    if enforced:
        return action
    return "shadow-reject" if action == "reject" else "shadow-flag"


def _outranks(action: Effect, match: Match, best: Effect, best_match: Match | None) -> bool:
    """Stricter, or as strict and nearer (equally near: the one found first stays)."""
    if _SEVERITY[action] != _SEVERITY[best]:
        return _SEVERITY[action] > _SEVERITY[best]
    return best_match is not None and match.distance < best_match.distance


#: Each list's allow entry nearest to one frame of the upload, by (list, the frame's index).
AllowedBy = Mapping[tuple[str, int], Match]


def decide(
    matches: Iterable[Match],
    policy_of: Callable[[str], ListPolicy],
    allowed: AllowedBy | None = None,
) -> Verdict:
    """The strictest verdict over ``matches`` (enforced before shadow); ties go to the nearest
    match, then to the one found first.

    Each list is decided by its own best match (strictest by its radii, then nearest), and only
    that match meets the list's mode and ``enforce_ratio``: the middleware fetches one match a
    list, and ``guard check`` every match, and both must give the same answer. (Were every match
    drawn separately, a far entry could enforce what the list's nearest one only shadows.)

    ``allowed``: each list's allow entry nearest to each frame (if it has one), by the list and
    the frame's index (``Match.frame``). A match it :func:`suppresses` (the same list, the same
    frame) counts for nothing, whatever the list's mode; the list's other matches still count,
    and so do other frames': one frame an allow entry is near lets no other frame through (an
    approved image beside a listed one, in one request or one animation). A list whose best
    match was suppressed is in ``Verdict.allowed``.
    """
    allowed = allowed or {}
    best_of: dict[str, tuple[Action, Match, int]] = {}
    # Each list's best match, suppressed or not, and the allow entry that suppressed it.
    overall: dict[str, tuple[Action, Match, Match | None]] = {}
    for order, match in enumerate(matches):
        policy = policy_of(match.list)
        action = action_for(match, policy)
        if action == "allow":
            continue
        allow = allowed.get((match.list, match.frame))
        by = allow if allow is not None and suppresses(allow, match, policy) else None
        first = overall.get(match.list)
        if first is None or _outranks(action, match, first[0], first[1]):
            overall[match.list] = (action, match, by)
        if by is not None:
            continue
        current = best_of.get(match.list)
        if current is None or _outranks(action, match, current[0], current[1]):
            best_of[match.list] = (action, match, order)
    best = Verdict("allow")
    # In the order each list's best match was found: on a tie, the one found first stays.
    for action, match, _ in sorted(best_of.values(), key=lambda item: item[2]):
        effect = _effect(action, match, policy_of(match.list))
        if _outranks(effect, match, best.action, best.match):
            best = Verdict(effect, match)
    suppressed = tuple(Suppression(m, by) for _, m, by in overall.values() if by is not None)
    return Verdict(best.action, best.match, suppressed)


@dataclass(frozen=True)
class Refusal:
    """The HTTP answer guard gives instead of calling the app."""

    status: int
    body: dict[str, str]
    headers: tuple[tuple[str, str], ...] = ()


def rejection(list_name: str, statuses: StatusCodes) -> Refusal:
    """A confirmed match within a reject radius. No hash or distance: no oracle for evaders."""
    return Refusal(statuses.reject, {"error": "upload rejected", "list": list_name})


def refusal_for(error: GuardError, settings: HttpSettings) -> Refusal:
    """The one place that maps guard's errors to HTTP statuses (each a setting)."""
    statuses = settings.statuses
    if isinstance(error, StoreError):
        return Refusal(
            statuses.unavailable,
            {"error": "blocklist store unavailable"},
            (("retry-after", str(settings.retry_after)),),
        )
    if isinstance(error, (BodyTooLarge, TooManyPixels, TooManyFrames)):
        return Refusal(statuses.too_large, {"error": str(error)})
    if isinstance(error, (FormatNotAllowed, NotAnImage, UnsupportedEncoding)):
        return Refusal(statuses.unsupported, {"error": str(error)})
    if isinstance(error, ImageError):
        return Refusal(statuses.undecodable, {"error": "image could not be decoded"})
    if isinstance(error, MalformedBody):
        return Refusal(statuses.malformed, {"error": str(error)})
    if isinstance(error, BodyTimeout):
        return Refusal(statuses.timeout, {"error": str(error)})
    return Refusal(500, {"error": "internal error"})


@dataclass(frozen=True)
class Outcome:
    """The whole verdict on one request: the answer, and what the middleware logs and counts."""

    answer: Decision | Refusal
    #: The match that rejected, flagged, shadow-rejected or shadow-flagged the request (logged
    #: with its details), else None.
    match: Match | None = None
    #: Fail-open lists whose lookup failed while the request still reaches the app: counted in
    #: ``counters.unchecked`` and logged. Empty when the request is refused.
    unchecked: tuple[str, ...] = ()
    #: The lists whose best match an allow entry suppressed: each recorded as "allowed".
    allowed: tuple[Suppression, ...] = ()

    @property
    def action(self) -> str:
        """What the match did ("reject", "flag", "shadow-reject", "shadow-flag"), as logged;
        else the decision's action, or "refuse" for a refusal no match caused."""
        if isinstance(self.answer, Refusal):
            return "reject" if self.match is not None else "refuse"
        return self.answer.action


def refuses(error: StoreError, policy: ListPolicy) -> bool:
    """Whether one list's failed lookup alone refuses the request (so the rest need not run):
    a fail-closed list that could not be checked, unless it is an optional list never loaded."""
    return not policy.fail_open and not _ignored(error, policy)


def _ignored(error: StoreError, policy: ListPolicy) -> bool:
    """An optional list (``required: false``) that was never loaded matches nothing."""
    return isinstance(error, UnknownList) and not policy.required


def judge(
    images: int,
    matches: Iterable[Match],
    failures: Mapping[str, StoreError],
    policy_of: Callable[[str], ListPolicy],
    settings: HttpSettings,
    allowed: AllowedBy | None = None,
) -> Outcome:
    """The verdict on one request from its lookups: ``images`` found, the ``matches`` of every
    list looked up, and the lists whose lookup failed (by name, in route order); ``allowed``:
    the allow entry nearest to each frame, by list and frame (see :func:`decide`).

    A failed list refuses the request as unavailable if it fails closed (before any match: a
    store that cannot answer for one list is not trusted for the request), passes unchecked if it
    fails open, and is ignored if it is an optional list never loaded. Then the strictest match
    wins (:func:`decide`): a reject refuses; a flag, a shadow-reject or a shadow-flag reaches the
    app with the fail-open lists that went unchecked.
    """
    unchecked: list[str] = []
    for name, error in failures.items():
        policy = policy_of(name)
        if refuses(error, policy):
            return Outcome(refusal_for(error, settings))
        if not _ignored(error, policy):
            unchecked.append(name)
    verdict = decide(matches, policy_of, allowed)
    match, suppressed = verdict.match, verdict.allowed
    if verdict.action == "reject" and match is not None:
        return Outcome(rejection(match.list, settings.statuses), match, allowed=suppressed)
    if verdict.action != "allow" and verdict.action != "reject" and match is not None:
        flagged = Decision(
            verdict.action, images, match.list, match.distance, match.entry.source, tuple(unchecked)
        )
        return Outcome(flagged, match, tuple(unchecked), suppressed)
    if unchecked:
        return Outcome(
            Decision("unchecked", images, unchecked_lists=tuple(unchecked)),
            None,
            tuple(unchecked),
            suppressed,
        )
    return Outcome(Decision("allow", images=images), allowed=suppressed)
