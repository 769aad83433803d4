"""Pure decisions: which matches make an upload rejected, flagged or allowed, and which HTTP
status each refusal gets (the only module that knows statuses).

Only confirmed matches count (a 64-bit aHash alone collides on unrelated photos with the same
layout); a match within a list's reject radius rejects, within its flag radius flags. The strictest
outcome over every list and every image wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    UnsupportedEncoding,
)
from guard.types import Match

Action = Literal["reject", "flag", "allow"]
_SEVERITY: dict[Action, int] = {"allow": 0, "flag": 1, "reject": 2}


@dataclass(frozen=True)
class Verdict:
    action: Action
    match: Match | None = None  # the match that decided it (None for allow)


def action_for(match: Match, policy: ListPolicy) -> Action:
    """What one match means under its list's policy."""
    if not match.confirmed:
        return "allow"
    if match.distance <= policy.reject_radius:
        return "reject"
    if match.distance <= policy.flag_radius:
        return "flag"
    return "allow"


def decide(matches: Iterable[Match], policy_of: Callable[[str], ListPolicy]) -> Verdict:
    """The strictest verdict over ``matches``; ties go to the nearest match."""
    best = Verdict("allow")
    for match in matches:
        action = action_for(match, policy_of(match.list))
        if action == "allow":
            continue
        stricter = _SEVERITY[action] > _SEVERITY[best.action]
        nearer = (
            action == best.action
            and best.match is not None
            and match.distance < best.match.distance
        )
        if stricter or nearer:
            best = Verdict(action, match)
    return best


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
