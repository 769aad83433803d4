"""The share of innocent uploads a list rejects and flags at its size (guard.list_scale): the
arithmetic, the shipped reference table's shape, and where guard says it (the CLI, start-up)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pytest
from conftest import photo_folder, run

from guard import GuardMiddleware, list_scale
from guard.cli import main
from guard.config import DEFAULT_POLICY, MAX_RADIUS, Config, ListPolicy, Route
from guard.list_scale import WARN_SHARE, estimate, per_pair, share_of_uploads, warning
from guard.reference_rates import PAIRS, PER_PAIR
from guard.store import Store

#: A policy loose enough that a handful of entries rejects more than WARN_SHARE of uploads.
LOOSE = ListPolicy(reject_radius=12, flag_radius=12, confirm_radius=40)


def test_share_of_uploads_is_one_minus_the_chance_of_missing_every_entry() -> None:
    for rate in (1e-9, 7.3e-6, 0.01, 0.5):
        for entries in (1, 10, 10_000, 1_000_000):
            assert share_of_uploads(rate, entries) == pytest.approx(1 - (1 - rate) ** entries)
    assert share_of_uploads(7.3e-6, 0) == 0
    assert share_of_uploads(1.0, 5) == 1 and share_of_uploads(1.0, 0) == 0
    # Tiny rates keep their precision (1 - (1 - p)**N loses it in floating point).
    assert share_of_uploads(1e-12, 1) == pytest.approx(1e-12, rel=1e-9)


def test_the_reference_table_covers_every_policy_and_is_monotone() -> None:
    assert len(PER_PAIR) == MAX_RADIUS + 1
    assert all(len(row) == 65 for row in PER_PAIR)  # pHash radius 0..64
    assert PAIRS >= 1e8  # the documented measurement, not a quick run
    floor = 3 / PAIRS
    for radius, row in enumerate(PER_PAIR):
        assert all(floor * 0.99 <= value <= 1 for value in row)
        assert list(row) == sorted(row)  # a wider pHash radius acts on more pairs
        if radius:
            assert all(a >= b for a, b in zip(row, PER_PAIR[radius - 1], strict=True))


def test_estimate_reads_the_policys_radii_and_grows_with_the_list() -> None:
    policy = DEFAULT_POLICY
    reject = per_pair(policy.reject_radius, policy.confirm_radius)
    acted = per_pair(policy.flag_radius, policy.confirm_radius)
    assert acted >= reject
    for entries in (10, 10_000, 1_000_000):
        scale = estimate(policy, entries)
        assert scale.per_pair_reject == reject
        assert scale.rejected == pytest.approx(1 - (1 - reject) ** entries)
        assert scale.flagged == pytest.approx(
            max(share_of_uploads(acted, entries) - scale.rejected, 0), abs=1e-12
        )
    assert estimate(policy, 10_000).rejected < estimate(policy, 100_000).rejected
    stricter = dataclasses.replace(policy, confirm_radius=6)
    if per_pair(policy.reject_radius, 6) < reject:
        assert estimate(stricter, 10_000).rejected < estimate(policy, 10_000).rejected
    same = dataclasses.replace(policy, flag_radius=policy.reject_radius)
    assert estimate(same, 10_000).flagged == 0


def test_warning_only_for_an_enforcing_list_over_the_threshold() -> None:
    policy = DEFAULT_POLICY
    rate = per_pair(policy.reject_radius, policy.confirm_radius)
    entries = list_scale.entries_for(WARN_SHARE, rate)
    assert entries > 10  # the defaults warn at a real list size, not at once
    text = warning("spam", policy, entries)
    assert text is not None
    assert f"'spam' holds {entries} entries" in text and "confirm_radius 12" in text
    assert "about 1% of innocent uploads rejected" in text and "lists.spam.mode: shadow" in text
    assert warning("spam", policy, entries - 1) is None  # just under the threshold
    assert warning("spam", dataclasses.replace(policy, mode="shadow"), 100 * entries) is None
    # Half its would-be rejects enforced: the warning waits for twice the share.
    half = dataclasses.replace(policy, enforce_ratio=0.5)
    assert warning("spam", half, entries) is None
    twice = list_scale.entries_for(2 * WARN_SHARE, rate)
    assert warning("spam", half, twice - 1) is None and warning("spam", half, twice) is not None


def test_describe_rounds_and_says_none_and_tiny() -> None:
    assert list_scale.describe(estimate(DEFAULT_POLICY, 0)).startswith("no upload rejected")
    tiny = list_scale.describe(estimate(DEFAULT_POLICY, 1))
    assert tiny.startswith("under 0.01% of innocent uploads rejected")
    scale = list_scale.ScaleEstimate(10, 1e-3, 0.0734, 0.25)
    assert list_scale.describe(scale) == (
        "about 7.3% of innocent uploads rejected, about 25% more flagged"
    )
    assert list_scale.describe(dataclasses.replace(scale, flagged=0)).endswith("none flagged")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return photo_folder(tmp_path / "spam", 5)


def test_cli_lists_shows_the_estimate_and_load_warns_past_the_threshold(
    folder: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["load", str(folder), "--redis-url", redis_url])
    out, err = capsys.readouterr()
    assert code == 0 and "warning" not in err  # 5 entries at the defaults: far under 1%
    assert main(["lists", "--redis-url", redis_url]) == 0
    out, _ = capsys.readouterr()
    assert "spam: 5 entries" in out
    assert "at this size, under 0.01% of innocent uploads rejected" in out
    assert "reject_radius 8, confirm_radius 12; enforce mode" in out

    config = tmp_path / "loose.yaml"
    config.write_text(
        "lists:\n  spam:\n    reject_radius: 12\n    flag_radius: 12\n    confirm_radius: 40\n"
    )
    code = main(["load", str(folder), "--redis-url", redis_url, "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0 and "already present 5" in out
    expected = estimate(LOOSE, 5)
    assert expected.rejected >= WARN_SHARE
    assert err.startswith("warning: list 'spam' holds 5 entries")
    assert "guard eval --unrelated" in err
    assert main(["lists", "--json", "--redis-url", redis_url, "--config", str(config)]) == 0
    [info] = json.loads(capsys.readouterr().out)
    assert math.isclose(info["innocent_uploads_rejected"], expected.rejected)
    assert math.isclose(info["innocent_uploads_flagged"], expected.flagged)

    shadow = tmp_path / "shadow.yaml"
    shadow.write_text(config.read_text() + "    mode: shadow\n")
    main(["load", str(folder), "--redis-url", redis_url, "--config", str(shadow)])
    assert "warning" not in capsys.readouterr().err  # shadow mode refuses no one


@pytest.mark.parametrize("mode", ["enforce", "shadow"])
def test_start_up_warns_of_an_enforcing_list_past_the_threshold(
    mode: str, folder: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["load", str(folder), "--redis-url", redis_url]) == 0
    routes = (Route(path="/upload", lists=("spam",)),)
    config = Config(lists={"spam": dataclasses.replace(LOOSE, mode=mode)}, routes=routes)
    guard = GuardMiddleware(lambda *_: None, config=config, store=Store.from_url(redis_url))
    with caplog.at_level(logging.WARNING, logger="guard"):
        assert run(guard.startup()) is None  # a warning, never a refusal to start
    run(guard.aclose())
    texts = [r.getMessage() for r in caplog.records if "innocent uploads" in r.getMessage()]
    if mode == "shadow":
        assert texts == []
    else:
        [text] = texts
        assert text.startswith("guard: start-up: list 'spam' holds 5 entries")


def test_entries_for_is_the_smallest_list_reaching_the_share() -> None:
    for rate in (7.5e-6, 1e-3, 0.3):
        for share in (0.001, 0.01, 0.5):
            n = list_scale.entries_for(share, rate)
            assert share_of_uploads(rate, n) >= share
            assert n == 1 or share_of_uploads(rate, n - 1) < share
