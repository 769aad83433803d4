"""guard sees what the app sees: every body, every framework parser, one invariant.

For every crafted body (corpus.py) and a few hundred mutated ones (hypothesis, fixed seed): either
guard refuses the body, or every value a framework hands its app (files, text fields, the raw
body, JSON images) that Pillow can open was hashed by guard. Run with ``-s`` for the summary of
bodies x parsers; ``tools/differential.py`` prints the same table on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from .corpus import Case, corpus, mutants
from .parsers import (
    ADAPTERS,
    GuardView,
    Tally,
    check,
    close,
    describe,
    guard_view,
    naive_guard,
    pixels,
)

#: Slow (every parser over a corpus and its mutants): not in the fast path, -m 'not slow'.
pytestmark = pytest.mark.slow

#: Bodies x parsers of this run, judged against the real guard (printed at the end with -s).
SUMMARY = Tally()
MUTANTS = 400


@pytest.fixture(scope="module", autouse=True)
def _print_summary() -> Iterator[None]:
    yield
    close()
    print("\ndifferential parsers: bodies x parsers")
    print(SUMMARY.table())


def _failures(case: Case, view: GuardView, tally: Tally | None = SUMMARY) -> list[str]:
    failures = []
    for adapter in ADAPTERS:
        outcome = check(adapter, case.body, case.content_type, view)
        if tally is not None:
            tally.add(case.id, outcome)
        if outcome.violated:
            seen = ", ".join(describe(value) for value in outcome.unhashed)
            form = f" (form refused: {outcome.parsed.refused})" if outcome.parsed.refused else ""
            failures.append(f"{adapter.name} hands the app unhashed {seen}{form}")
    return failures


def _assert_invariant(case: Case) -> None:
    view = guard_view(case.body, case.content_type)
    failures = _failures(case, view)
    assert not failures, (
        f"{case.id}: guard accepted the body and hashed "
        f"{[describe(image) for image in view.images]}, but\n  " + "\n  ".join(failures)
    )


@pytest.mark.parametrize("case", corpus(), ids=lambda case: case.id)
def test_every_parser_sees_only_what_guard_hashed(case: Case) -> None:
    _assert_invariant(case)


@settings(
    derandomize=True,
    max_examples=MUTANTS,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing body is printed as is
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutants())
def test_mutated_bodies(case: Case) -> None:
    _assert_invariant(case)


CONTROLS = [case for case in corpus() if case.control]
CLASSES = {"control", "framing", "content-type", "part-headers", "formats", "json", "urlencoded"}
CLASSES |= {"msgpack", "polyglot"}


@pytest.mark.parametrize("case", CONTROLS, ids=lambda case: case.id)
def test_controls_are_accepted_and_every_parser_hands_over_the_image(case: Case) -> None:
    view = guard_view(case.body, case.content_type)
    assert view.refused is None, f"guard refused a body as clients send it: {view.refused}"
    assert case.image in view.images
    assert pixels(case.image) is not None
    for adapter in ADAPTERS:
        parsed = adapter.examine(case.body, case.content_type)
        assert parsed.refused is None, f"{adapter.name} refused the control: {parsed.refused}"
        assert case.image in parsed.values, f"{adapter.name} did not hand the app the image"


def test_corpus_covers_every_class_and_ids_are_unique() -> None:
    cases = corpus()
    assert len({case.id for case in cases}) == len(cases)
    assert {case.cls for case in cases} == CLASSES
    for case in cases:
        assert pixels(case.image) is not None, f"{case.id}: its image does not open"


def test_a_guard_that_finds_no_image_is_caught() -> None:
    """The suite can fail: a guard that hashes nothing violates the invariant on every control,
    for every parser, and on bodies of every class."""
    tally = Tally()
    caught = set()
    for case in corpus():
        if _failures(case, naive_guard(case.body, case.content_type), tally):
            caught.add(case.cls)
    for case in CONTROLS:
        for adapter in ADAPTERS:
            assert check(adapter, case.body, case.content_type, GuardView(None)).violated
    assert all(row["violations"] > 0 for row in tally.rows.values())
    assert caught == CLASSES


def test_a_guard_that_hashes_another_picture_is_caught() -> None:
    """The pixel comparison does not wave through a different image."""
    case = CONTROLS[0]
    other = next(c.image for c in corpus() if c.image != case.image and c.id.startswith("format-"))
    assert check(ADAPTERS[0], case.body, case.content_type, GuardView(None, (other,))).violated


def test_the_same_pixels_in_another_format_count_as_hashed() -> None:
    from .corpus import images

    body = images()["bmp"]
    view = GuardView(None, (images()["png"],))  # lossless: the same pixels
    for adapter in ADAPTERS:
        assert not check(adapter, body, "image/bmp", view).violated
