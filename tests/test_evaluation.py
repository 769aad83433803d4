"""The accuracy harness itself: deterministic edits, and correct counting on known cases."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import DATA, LOCAL_PHOTOS, data_file, photo, run

from guard.cli import main
from guard.evaluation import (
    EDITS,
    Candidate,
    Policy,
    Query,
    edit_bytes,
    false_positive_rate,
    recall,
)
from guard.store import Store


@pytest.mark.parametrize("edit", EDITS, ids=[e.name for e in EDITS])
def test_edits_are_deterministic_and_change_the_image(edit: object) -> None:
    image = photo(LOCAL_PHOTOS[2])
    first = edit_bytes(image, "a.jpg", edit)  # type: ignore[arg-type]
    assert first == edit_bytes(image, "a.jpg", edit)  # type: ignore[arg-type]
    assert (
        hashlib.sha256(first).digest()
        != hashlib.sha256(data_file(LOCAL_PHOTOS[2]).read_bytes()).digest()
    )


def test_random_edits_depend_on_the_original_name() -> None:
    crop = next(e for e in EDITS if e.name == "crop-10%")
    image = photo(LOCAL_PHOTOS[2])
    assert len({edit_bytes(image, f"{i}.jpg", crop) for i in range(6)}) > 1


def _candidate(
    source: str, identity: tuple[int, int], flipped: tuple[int, int] | None = None
) -> Candidate:
    distances = [(True, *identity)] + ([(False, *flipped)] if flipped else [])
    return Candidate(source, tuple(distances))


# Three edits of original "a" and two originals queried for false positives, hand-set distances.
QUERIES = [
    Query("a", "jpeg", "re-encode", True, (_candidate("a", (2, 4)),)),
    Query("a", "jpeg", "re-encode", True, (_candidate("a", (7, 20)), _candidate("b", (5, 3)))),
    Query("a", "mirror", "flip", True, (_candidate("a", (30, 30), flipped=(1, 2)),)),
    Query("a", "original", "original", True, (_candidate("a", (0, 0)), _candidate("b", (6, 18)))),
    Query("b", "original", "original", True, (_candidate("b", (0, 0)), _candidate("a", (6, 10)))),
    Query("a", "jpeg", "re-encode", False, ()),  # the untrimmed run found nothing
]


@pytest.mark.parametrize(
    ("policy", "edit", "expected"),
    [
        (Policy(8, 12, True, True), None, 2 / 3),  # the q(7, 20) edit fails confirmation
        (Policy(8, None, True, True), None, 3 / 3),
        (Policy(8, 12, False, True), None, 1 / 3),  # the mirror needs the dihedral variant
        (Policy(1, None, True, True), None, 1 / 3),  # only the flipped one is within 1
        (Policy(8, 12, True, True), "jpeg", 1 / 2),
        (Policy(8, 12, True, False), None, 0.0),
    ],
)
def test_recall_counts_only_the_right_original(
    policy: Policy, edit: str | None, expected: float
) -> None:
    assert recall(QUERIES, policy, edit) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (Policy(8, 12, True, True), 1 / 2),  # b matches a at (6, 10); a's match of b fails pHash
        (Policy(8, None, True, True), 2 / 2),
        (Policy(5, None, True, True), 0.0),
        (Policy(8, 8, True, True), 0.0),
    ],
)
def test_false_positive_rate_counts_other_originals(policy: Policy, expected: float) -> None:
    assert false_positive_rate(QUERIES, policy) == pytest.approx(expected)


def test_eval_command_on_real_photos_and_store(
    redis_url: str, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end on the copied photos: JSON shape, sane figures, the temporary lists dropped."""
    folder = tmp_path / "originals"  # type: ignore[operator]
    folder.mkdir()
    for name in LOCAL_PHOTOS[:4]:
        (folder / name.split("/")[-1]).write_bytes((DATA / name.split("/")[-1]).read_bytes())
    # The same picture twice: one entry, and neither copy is the other's false positive.
    (folder / "duplicate.jpg").write_bytes((DATA / LOCAL_PHOTOS[0].split("/")[-1]).read_bytes())
    code = main(["eval", str(folder), "--json", "--workers", "1", "--redis-url", redis_url])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["originals"] == 5
    rows = {row["edit"]: row for row in report["recall"]}
    assert set(rows) == {e.name for e in EDITS}
    assert rows["jpeg-q75"]["guard"] == 1.0 and rows["flip-horizontal"]["guard"] == 1.0
    assert rows["flip-horizontal"]["no dihedral"] == 0.0
    assert report["false_positive_rate"]["guard"] == 0.0

    async def lists() -> list[str]:
        async with Store.from_url(redis_url) as store:
            return [info.name for info in await store.lists()]

    assert run(lists()) == []
