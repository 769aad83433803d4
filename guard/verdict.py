"""Pure decisions: which matches make an upload rejected, flagged or allowed.

Only confirmed matches count (a 64-bit aHash alone collides on unrelated photos with the same
layout); a match within a list's reject radius rejects, within its flag radius flags. The strictest
outcome over every list and every image wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from guard.config import ListPolicy
from guard.store import Match

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
