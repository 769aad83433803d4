"""The accuracy harness itself: deterministic edits, and correct counting on known cases."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from conftest import DATA, LOCAL_PHOTOS, data_file, photo, run
from PIL import Image

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
from guard.evaluation.edits import SCREEN
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


def _edited(name: str, image: Image.Image) -> Image.Image:
    edit = next(e for e in EDITS if e.name == name)
    return Image.open(io.BytesIO(edit_bytes(image, "a.jpg", edit))).convert("RGB")


def test_geometric_edits_do_what_their_names_say() -> None:
    image = photo(LOCAL_PHOTOS[2])
    w, h = image.size
    assert _edited("crop-5%-each-border", image).size == (
        w - 2 * round(w * 0.05),
        h - 2 * round(h * 0.05),
    )
    band = _edited("caption-band", image)
    assert band.width == w and band.height == h + max(12, h // 6)  # added, not drawn over
    assert _edited("caption-over-image", image).size == (w, h)  # drawn over the picture
    black_corners = []
    for degrees in (2, 5, 10):
        rotated = np.asarray(_edited(f"rotate-{degrees}deg", image).convert("L"))
        assert rotated.shape == (h, w)
        black_corners.append((rotated[: h // 10, : w // 10] < 16).mean())
    # Same size, the uncovered corners black: more of them the larger the angle.
    assert 0 < black_corners[0] < black_corners[1] < black_corners[2]
    chat = _edited("chat-screenshot", image)
    assert chat.size == SCREEN
    # The photo is a minority of the capture: most of its pixels are the app's.
    assert (np.asarray(chat.convert("L")) > 235).mean() > 0.4


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
