"""The whole verdict as a pure function (guard.verdict.judge), table by table, without a store.

The statuses are all set away from their defaults, so each mapping is told apart from the others
and from a hard-coded default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

import guard
from guard.config import HttpSettings, ListPolicy, StatusCodes
from guard.errors import (
    BodyTimeout,
    BodyTooLarge,
    ConfigError,
    EvictionUnsafe,
    FormatNotAllowed,
    GuardError,
    MalformedBody,
    NotAnImage,
    StoreError,
    StoreInconsistent,
    StoreUnavailable,
    TooManyFrames,
    TooManyPixels,
    UndecodableImage,
    UnknownList,
    UnsupportedEncoding,
)
from guard.types import Decision, Entry, Match
from guard.verdict import Outcome, Refusal, judge, refusal_for, refuses, rollout_point

STATUSES = StatusCodes(
    reject=451,
    too_large=414,
    unsupported=416,
    undecodable=424,
    malformed=412,
    timeout=504,
    unavailable=599,
)
HTTP = HttpSettings(statuses=STATUSES, retry_after=7)
POLICIES = {
    "hard": ListPolicy(),  # reject within 8, flag within 12, fail closed, required
    "soft": ListPolicy(reject_radius=2, flag_radius=8),
    "open": ListPolicy(fail_open=True),
    "optional": ListPolicy(required=False),
    "optional_open": ListPolicy(required=False, fail_open=True),
}
UNAVAILABLE = Refusal(599, {"error": "blocklist store unavailable"}, (("retry-after", "7"),))


def policy_of(name: str) -> ListPolicy:
    return POLICIES[name]


def match(name: str, distance: int, *, confirmed: bool = True, source: str = "") -> Match:
    return Match(
        name,
        Entry(ahash=1, phash=2, source=source or f"{name}-{distance}.jpg"),
        distance,
        phash_distance=3,
        confirmed=confirmed,
        transform="identity",
        frame=0,
    )


def rejected(m: Match) -> Outcome:
    return Outcome(Refusal(451, {"error": "upload rejected", "list": m.list}), m)


def flagged(m: Match, images: int = 3, unchecked: tuple[str, ...] = ()) -> Outcome:
    decision = Decision("flag", images, m.list, m.distance, m.entry.source, unchecked)
    return Outcome(decision, m, unchecked)


ALLOWED = Outcome(Decision("allow", images=3))


# --- one match under each list's policy ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "distance", "confirmed", "action"),
    [
        ("hard", 0, True, "reject"),
        ("hard", 8, True, "reject"),  # the reject radius is inclusive
        ("hard", 9, True, "flag"),
        ("hard", 12, True, "flag"),  # so is the flag radius
        ("hard", 13, True, "allow"),
        ("soft", 2, True, "reject"),
        ("soft", 3, True, "flag"),
        ("soft", 8, True, "flag"),
        ("soft", 9, True, "allow"),
        # Unconfirmed (the pHash disagrees): an aHash collision, never acted on.
        ("hard", 0, False, "allow"),
        ("soft", 5, False, "allow"),
    ],
)
def test_one_match_by_its_lists_policy(
    name: str, distance: int, confirmed: bool, action: str
) -> None:
    m = match(name, distance, confirmed=confirmed)
    expected = {"reject": rejected(m), "flag": flagged(m), "allow": ALLOWED}[action]
    assert judge(3, [m], {}, policy_of, HTTP) == expected


def unconfirmable(name: str, distance: int) -> Match:
    """A match with an entry imported without a pHash (imagehash hex): nothing confirms it."""
    entry = Entry(ahash=1, phash=None, source=f"{name}-{distance}.txt")
    return Match(name, entry, distance, None, False, "identity", 0)


@pytest.mark.parametrize(
    ("name", "distance", "action"),
    [
        ("hard", 0, "flag"),  # identical aHash: still only a flag
        ("hard", 8, "flag"),
        ("hard", 12, "flag"),
        ("hard", 13, "allow"),
        ("soft", 0, "flag"),
        ("soft", 8, "flag"),
        ("soft", 9, "allow"),
    ],
)
def test_an_entry_without_a_phash_flags_at_most(name: str, distance: int, action: str) -> None:
    m = unconfirmable(name, distance)
    expected = flagged(m) if action == "flag" else ALLOWED
    assert judge(3, [m], {}, policy_of, HTTP) == expected


def test_a_confirmed_reject_beats_an_unconfirmable_nearer_match() -> None:
    near, confirmed = unconfirmable("hard", 0), match("hard", 7)
    assert judge(3, [near, confirmed], {}, policy_of, HTTP) == rejected(confirmed)


def test_no_images_and_no_matches_allow_with_the_image_count() -> None:
    assert judge(0, [], {}, policy_of, HTTP) == Outcome(Decision("allow", images=0))
    assert judge(5, (), {}, policy_of, HTTP) == Outcome(Decision("allow", images=5))


def test_a_rejection_names_only_the_list() -> None:
    """No distance, hash or source in the answer: no oracle for someone tuning an evasion."""
    answer = judge(1, [match("hard", 4, source="secret.jpg")], {}, policy_of, HTTP).answer
    assert answer == Refusal(451, {"error": "upload rejected", "list": "hard"})


# --- several matches: the strictest wins, then the nearest ---------------------------------------


@pytest.mark.parametrize(
    ("matches", "winner"),
    [
        # A reject beats a nearer flag, in either order.
        ([match("hard", 10), match("soft", 1)], 1),
        ([match("soft", 1), match("hard", 10)], 0),
        ([match("soft", 3), match("hard", 8)], 1),  # flag at 3 (soft) < reject at 8 (hard)
        # A flag beats an allow (out of radius, or unconfirmed).
        ([match("hard", 30), match("hard", 0, confirmed=False), match("soft", 7)], 2),
        # Same action: the nearest match decides.
        ([match("hard", 5), match("soft", 2), match("hard", 3)], 1),
        ([match("hard", 11), match("hard", 9), match("soft", 6)], 2),
        ([match("hard", 9), match("hard", 11)], 0),
        # Equally near: the first found.
        ([match("hard", 4, source="a"), match("hard", 4, source="b")], 0),
        ([match("soft", 6, source="b"), match("soft", 6, source="a")], 0),
    ],
)
def test_the_strictest_then_the_nearest_match_decides(matches: list[Match], winner: int) -> None:
    outcome = judge(3, matches, {}, policy_of, HTTP)
    m = matches[winner]
    assert outcome.match is m
    assert outcome == (rejected(m) if isinstance(outcome.answer, Refusal) else flagged(m))


# --- lists that could not be checked --------------------------------------------------------------

DOWN = StoreUnavailable("connection refused")
MISSING = UnknownList("no list")
GONE = StoreInconsistent("list vanished")


@pytest.mark.parametrize(
    ("name", "error", "expected"),
    [
        # Fail closed (the default): the request is refused as unavailable, whatever the error.
        ("hard", DOWN, "refused"),
        ("hard", MISSING, "refused"),
        ("hard", GONE, "refused"),
        ("hard", EvictionUnsafe("allkeys-lru"), "refused"),
        ("hard", StoreError("refused command"), "refused"),
        # Fail open: the upload reaches the app, marked unchecked.
        ("open", DOWN, "unchecked"),
        ("open", MISSING, "unchecked"),
        ("open", GONE, "unchecked"),
        # An optional list never loaded matches nothing; one that vanished is data loss.
        ("optional", MISSING, "allowed"),
        ("optional_open", MISSING, "allowed"),
        ("optional", DOWN, "refused"),
        ("optional", GONE, "refused"),
        ("optional_open", GONE, "unchecked"),
        ("optional_open", DOWN, "unchecked"),
    ],
)
def test_a_failed_list_follows_its_policy(name: str, error: StoreError, expected: str) -> None:
    outcomes = {
        "refused": Outcome(UNAVAILABLE),
        "unchecked": Outcome(Decision("unchecked", 3, unchecked_lists=(name,)), None, (name,)),
        "allowed": ALLOWED,
    }
    assert judge(3, [], {name: error}, policy_of, HTTP) == outcomes[expected]
    # The lookup loop stops at a list that alone refuses: the same rule as the verdict's.
    assert refuses(error, POLICIES[name]) is (expected == "refused")


def test_a_fail_closed_failure_outranks_every_match() -> None:
    """A store that could not answer for one list is not trusted for the request."""
    for matches in ([match("hard", 0)], [match("soft", 5)], [match("hard", 40)]):
        assert judge(3, matches, {"hard": DOWN}, policy_of, HTTP) == Outcome(UNAVAILABLE)
    outcome = judge(3, [match("soft", 0)], {"open": DOWN, "hard": DOWN}, policy_of, HTTP)
    assert outcome == Outcome(UNAVAILABLE)  # nothing counted as passed unchecked


def test_unchecked_lists_ride_along_a_flag_but_not_a_reject() -> None:
    failures: dict[str, StoreError] = {"open": DOWN, "optional_open": GONE}
    flag = match("soft", 5)
    assert judge(3, [flag], failures, policy_of, HTTP) == flagged(
        flag, unchecked=("open", "optional_open")
    )
    reject = match("soft", 1)
    assert judge(3, [reject], failures, policy_of, HTTP) == rejected(reject)
    ignored = {"optional": MISSING, "open": DOWN}
    assert judge(3, [], ignored, policy_of, HTTP).unchecked == ("open",)


def test_a_late_decision_gives_each_list_its_policy() -> None:
    """The decision deadline: every list of the route is unchecked, as when the store is down."""
    late = StoreUnavailable("no decision within decision_timeout=2s")
    all_open = judge(0, (), dict.fromkeys(["open", "optional_open"], late), policy_of, HTTP)
    assert all_open == Outcome(
        Decision("unchecked", 0, unchecked_lists=("open", "optional_open")),
        None,
        ("open", "optional_open"),
    )
    mixed = judge(0, (), dict.fromkeys(["open", "hard"], late), policy_of, HTTP)
    assert mixed == Outcome(UNAVAILABLE)


# --- every error's status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (StoreUnavailable("down"), 599, "blocklist store unavailable"),
        (UnknownList("spam"), 599, "blocklist store unavailable"),
        (EvictionUnsafe("allkeys-lru"), 599, "blocklist store unavailable"),
        (BodyTooLarge("over max_body_bytes"), 414, "over max_body_bytes"),
        (TooManyPixels(10**9, 50_000_000), 414, None),
        (TooManyFrames("301 frames", limit="max_frames", maximum=300), 414, None),
        (FormatNotAllowed("TIFF", frozenset({"PNG"})), 416, None),
        (NotAnImage("not an image"), 416, "not an image"),
        (UnsupportedEncoding("Content-Encoding gzip"), 416, "Content-Encoding gzip"),
        (UndecodableImage("truncated"), 424, "image could not be decoded"),
        (MalformedBody("missing boundary"), 412, "missing boundary"),
        (BodyTimeout("body_timeout=30s"), 504, "body_timeout=30s"),
        (GuardError("a bug"), 500, "internal error"),
        (ConfigError("late config trouble"), 500, "internal error"),
    ],
)
def test_each_error_maps_to_its_status(error: GuardError, status: int, body: str | None) -> None:
    refusal = refusal_for(error, HTTP)
    assert refusal.status == status
    assert refusal.body == {"error": body if body is not None else str(error)}
    retry = (("retry-after", "7"),) if isinstance(error, StoreError) else ()
    assert refusal.headers == retry


def test_decision_is_importable_from_where_apps_import_it() -> None:
    from guard import middleware

    assert guard.Decision is middleware.Decision is Decision


# --- shadow mode and enforce_ratio -----------------------------------------------------------

SHADOW_POLICIES = {
    **POLICIES,
    "shadow": ListPolicy(mode="shadow"),  # radii as "hard": reject within 8, flag within 12
    "shadow_soft": ListPolicy(reject_radius=2, flag_radius=8, mode="shadow"),
    "none": ListPolicy(enforce_ratio=0.0),  # enforce mode, but no match enforced
    "shadow_open": ListPolicy(mode="shadow", fail_open=True),
}


def shadow_policy_of(name: str) -> ListPolicy:
    return SHADOW_POLICIES[name]


def shadowed(m: Match, action: str, unchecked: tuple[str, ...] = ()) -> Outcome:
    decision = Decision(
        action,  # type: ignore[arg-type]
        3,
        m.list,
        m.distance,
        m.entry.source,
        unchecked,
    )
    return Outcome(decision, m, unchecked)


@pytest.mark.parametrize(
    ("name", "distance", "confirmed", "expected"),
    [
        ("shadow", 0, True, "shadow-reject"),
        ("shadow", 8, True, "shadow-reject"),
        ("shadow", 9, True, "shadow-flag"),
        ("shadow", 12, True, "shadow-flag"),
        ("shadow", 13, True, "allow"),  # out of radius: nothing to shadow
        ("shadow", 0, False, "allow"),  # unconfirmed: nothing to shadow either
        ("shadow_soft", 3, True, "shadow-flag"),
        ("none", 0, True, "shadow-reject"),  # enforce_ratio 0: every match only shadowed
        ("none", 10, True, "shadow-flag"),
    ],
)
def test_a_shadow_list_decides_as_usual_and_never_acts(
    name: str, distance: int, confirmed: bool, expected: str
) -> None:
    m = match(name, distance, confirmed=confirmed)
    outcome = judge(3, [m], {}, shadow_policy_of, HTTP)
    assert outcome == (ALLOWED if expected == "allow" else shadowed(m, expected))
    assert outcome.action == expected
    assert not isinstance(outcome.answer, Refusal)


def test_an_unconfirmable_entry_on_a_shadow_list_shadow_flags_at_most() -> None:
    m = unconfirmable("shadow", 0)
    assert judge(3, [m], {}, shadow_policy_of, HTTP) == shadowed(m, "shadow-flag")


@pytest.mark.parametrize(
    ("matches", "winner", "action"),
    [
        # An enforced reject or flag from another list wins over any shadow outcome, in any order.
        ([match("shadow", 0), match("hard", 8)], 1, "reject"),
        ([match("hard", 8), match("shadow", 0)], 0, "reject"),
        ([match("shadow", 0), match("hard", 12)], 1, "flag"),  # a real flag beats a shadow reject
        ([match("hard", 11), match("shadow", 1)], 0, "flag"),
        ([match("none", 0), match("soft", 7)], 1, "flag"),
        # An out-of-radius or unconfirmed enforced match does not beat a shadow one.
        ([match("hard", 13), match("shadow", 5)], 1, "shadow-reject"),
        ([match("hard", 0, confirmed=False), match("shadow", 10)], 1, "shadow-flag"),
        # Among shadow outcomes: the strictest, then the nearest, then the first found.
        ([match("shadow", 10), match("shadow_soft", 2)], 1, "shadow-reject"),
        ([match("shadow", 1), match("none", 11)], 0, "shadow-reject"),
        ([match("shadow", 6), match("none", 3)], 1, "shadow-reject"),
        ([match("shadow", 11), match("shadow_soft", 4), match("none", 9)], 1, "shadow-flag"),
        ([match("shadow", 4, source="a"), match("none", 4, source="b")], 0, "shadow-reject"),
    ],
)
def test_enforced_outcomes_outrank_shadow_ones(
    matches: list[Match], winner: int, action: str
) -> None:
    outcome = judge(3, matches, {}, shadow_policy_of, HTTP)
    m = matches[winner]
    assert outcome.match is m and outcome.action == action
    expected = {"reject": rejected(m), "flag": flagged(m)}.get(action) or shadowed(m, action)
    assert outcome == expected


def test_failed_lists_follow_their_policy_whatever_the_mode() -> None:
    """A shadow list fails closed as an enforced one does: the mode shadows matches, not outages
    (a store that cannot answer is not trusted for the request)."""
    assert judge(3, [match("hard", 20)], {"shadow": DOWN}, shadow_policy_of, HTTP) == Outcome(
        UNAVAILABLE
    )
    m = match("shadow", 2)
    outcome = judge(3, [m], {"shadow_open": DOWN}, shadow_policy_of, HTTP)
    assert outcome == shadowed(m, "shadow-reject", ("shadow_open",))


#: rollout_point of _synthetic(1), computed once: a change to the hash fails here.
ROLLOUT_POINT_OF_1 = 0.12836075432685934


def _synthetic(index: int) -> Match:
    """A distinct confirmed match within the reject radius (as many uploads of many images)."""
    entry = Entry(ahash=(index * 0x9E3779B97F4A7C15) % 2**64, phash=index, source=f"{index}.jpg")
    return Match("rollout", entry, index % 9, index % 13, True, "identity", 0)


def _rollout(ratio: float) -> Callable[[str], ListPolicy]:
    policy = ListPolicy(enforce_ratio=ratio)
    return lambda name: policy


def test_enforce_ratio_enforces_its_share_of_matches() -> None:
    matches = [_synthetic(i) for i in range(10_000)]
    for ratio in (0.3, 0.05, 0.9):
        actions = [judge(1, [m], {}, _rollout(ratio), HTTP).action for m in matches]
        assert set(actions) == {"reject", "shadow-reject"}
        share = actions.count("reject") / len(actions)
        assert abs(share - ratio) <= 0.02, (ratio, share)
    for ratio, only in ((0.0, "shadow-reject"), (1.0, "reject")):
        assert {judge(1, [m], {}, _rollout(ratio), HTTP).action for m in matches} == {only}


def test_enforce_ratio_is_deterministic_per_upload_and_only_grows() -> None:
    """The same match (the same upload against the same entry) gets the same answer on every
    call, from every equal policy: no randomness, nothing kept between calls. An upload enforced
    at 0.3 is still enforced at 0.5."""
    matches = [_synthetic(i) for i in range(2_000)]
    first = [judge(1, [m], {}, _rollout(0.3), HTTP).action for m in matches]
    again = [judge(1, [m], {}, _rollout(0.3), HTTP).action for m in reversed(matches)]
    assert first == again[::-1]
    copies = [
        dataclasses.replace(m, list="renamed", entry=dataclasses.replace(m.entry, source=""))
        for m in matches
    ]
    assert [judge(1, [m], {}, _rollout(0.3), HTTP).action for m in copies] == first
    wider = [judge(1, [m], {}, _rollout(0.5), HTTP).action for m in matches]
    assert all(w == "reject" for f, w in zip(first, wider, strict=True) if f == "reject")
    assert wider.count("reject") > first.count("reject")
    # A pinned value: the hash is part of the contract (workers on two versions must agree).
    assert rollout_point(_synthetic(1)) == pytest.approx(ROLLOUT_POINT_OF_1)


def test_enforce_ratio_splits_flags_as_it_splits_rejects() -> None:
    matches = [dataclasses.replace(_synthetic(i), distance=10) for i in range(4_000)]
    actions = [judge(1, [m], {}, _rollout(0.3), HTTP).action for m in matches]
    assert set(actions) == {"flag", "shadow-flag"}
    assert abs(actions.count("flag") / len(actions) - 0.3) <= 0.03


def test_enforce_ratio_is_ignored_in_shadow_mode() -> None:
    policy = ListPolicy(mode="shadow", enforce_ratio=1.0)
    matches = [_synthetic(i) for i in range(500)]
    assert {judge(1, [m], {}, lambda name: policy, HTTP).action for m in matches} == {
        "shadow-reject"
    }


def test_a_lists_nearest_match_alone_meets_its_ratio() -> None:
    """`guard check` passes every match of a list, the middleware only the list's best: both
    must give the answer of the best one, whatever the ratio would make of the others."""
    shadowed_near = next(
        m
        for m in (dataclasses.replace(_synthetic(i), distance=1) for i in range(100))
        if rollout_point(m) >= 0.5
    )
    enforced_far = next(
        m
        for m in (dataclasses.replace(_synthetic(i), distance=6) for i in range(100))
        if rollout_point(m) < 0.5
    )
    for matches in ([shadowed_near, enforced_far], [enforced_far, shadowed_near]):
        outcome = judge(1, matches, {}, _rollout(0.5), HTTP)
        assert (outcome.action, outcome.match) == ("shadow-reject", shadowed_near)
    # A reject outranks a flag within the list before the ratio is drawn, as before.
    enforced_flag = next(
        m
        for m in (dataclasses.replace(_synthetic(i), distance=10) for i in range(100))
        if rollout_point(m) < 0.5
    )
    outcome = judge(1, [enforced_flag, shadowed_near], {}, _rollout(0.5), HTTP)
    assert (outcome.action, outcome.match) == ("shadow-reject", shadowed_near)
