"""False positives at scale (guard.evaluation.unrelated): the pair counts against a brute-force
loop, the tail fit against a known distribution, the bounds, the windows, and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from conftest import DATA
from PIL import Image

from guard import list_scale
from guard.cli import main
from guard.evaluation import unrelated
from guard.evaluation.unrelated import (
    BINS,
    MIN_WINDOW_SIDE,
    PairCounts,
    PhotoSamples,
    _tail_fit,
    count_pairs,
    rate,
    windows,
)


def _photo(rng: random.Random, name: str, images: int, centres: list[int]) -> PhotoSamples:
    """Random images near a few shared centres, so that many pairs fall within the radii."""

    def near(centre: int, flips: int) -> int:
        for _ in range(flips):
            centre ^= 1 << rng.randrange(64)
        return centre

    ahashes = [
        [near(rng.choice(centres), rng.randint(0, 14)) for _ in range(8)] for _ in range(images)
    ]
    phashes = [
        [near(rng.choice(centres), rng.randint(0, 20)) for _ in range(8)] for _ in range(images)
    ]
    return PhotoSamples(name, np.array(ahashes, np.uint64), np.array(phashes, np.uint64))


def _brute_force(
    queries: list[PhotoSamples], listed: list[PhotoSamples], radius: int
) -> np.ndarray:
    histogram = np.zeros((len(queries), len(listed), BINS), np.int64)
    for qi, query in enumerate(queries):
        for li, entry in enumerate(listed):
            for a, p in zip(query.ahashes.tolist(), query.phashes.tolist(), strict=True):
                listed_a, listed_p = entry.ahashes[:, 0].tolist(), entry.phashes[:, 0].tolist()
                for la, lp in zip(listed_a, listed_p, strict=True):
                    within = [
                        (pv ^ lp).bit_count()
                        for av, pv in zip(a, p, strict=True)
                        if (av ^ la).bit_count() <= radius
                    ]
                    if within:
                        histogram[qi, li, min(within)] += 1
    return histogram


@pytest.mark.parametrize("seed", range(6))
def test_pair_counts_equal_a_brute_force_loop(seed: int) -> None:
    rng = random.Random(seed)
    centres = [rng.getrandbits(64) for _ in range(3)]
    queries = [_photo(rng, f"q{i}", rng.randint(1, 9), centres) for i in range(4)]
    listed = [_photo(rng, f"l{i}", rng.randint(1, 9), centres) for i in range(3)]
    queries.append(PhotoSamples("empty", np.empty((0, 8), np.uint64), np.empty((0, 8), np.uint64)))
    counts = count_pairs(queries, listed, [8, 12], chunk=rng.choice([1, 5, 512]))
    queries = queries[:-1]  # a photo without images is left out
    assert counts.query_photos == tuple(q.name for q in queries)
    assert counts.pairs.tolist() == [[len(q) * len(e) for e in listed] for q in queries]
    for radius in (8, 12):
        expected = _brute_force(queries, listed, radius)
        assert expected.sum() > 0  # the case has pairs within the radius
        assert np.array_equal(counts.histograms[radius], expected)


def _counts_from(histogram: np.ndarray, pairs: np.ndarray) -> PairCounts:
    rows, columns = pairs.shape
    names = tuple(map(str, range(rows))), tuple(map(str, range(columns)))
    return PairCounts(*names, pairs, {8: histogram})


def test_the_tail_fit_recovers_a_known_gaussian_tail() -> None:
    # m ~ Normal(30, 4) over 1e8 pairs: counts of 20 or more reach down to m = 10 only; the fit
    # must extrapolate P(m <= 4) (about 1e-10, not one pair in this sample) within a factor of 2.
    normal, total = NormalDist(30, 4), 1e8
    cumulative = np.floor([total * normal.cdf(x + 0.5) for x in range(BINS)])
    assert cumulative[4] < 1 and cumulative[10] >= 20
    truth = normal.cdf(4.5)
    fitted = _tail_fit(cumulative, total, 4)
    assert fitted is not None and truth / 2 < fitted < truth * 2
    # Where nothing is counted, nothing is fitted.
    assert _tail_fit(np.zeros(BINS), total, 4) is None


def test_rate_observed_bound_and_per_upload() -> None:
    rng = np.random.default_rng(1)
    pairs = np.full((30, 40), 10_000, np.int64)
    histogram = rng.poisson(0.2, size=(30, 40, BINS)).astype(np.int64)
    result = rate(_counts_from(histogram, pairs), 8, 12)
    passing = int(histogram[:, :, :13].sum())
    assert result.passing == passing
    assert result.observed == pytest.approx(passing / pairs.sum())
    assert result.bound > result.observed  # the 95th percentile of a resample of photos
    assert result.per_upload(10_000) == pytest.approx(1 - (1 - result.estimate) ** 10_000)
    assert result.per_upload(10_000) < result.per_upload(1_000_000) <= 1
    assert result.per_upload(10_000, bound=True) >= result.per_upload(10_000)
    at = result.entries_at(0.01)
    assert at is not None and result.per_upload(at) >= 0.01 > result.per_upload(at - 1)
    bound_at = result.entries_at(0.01, bound=True)
    assert bound_at is not None and bound_at <= at


def test_with_nothing_observed_the_bound_is_at_least_the_rule_of_three() -> None:
    pairs = np.full((5, 5), 1000, np.int64)
    histogram = np.zeros((5, 5, BINS), np.int64)
    histogram[:, :, 40] = 3  # every pair far beyond the confirmation radius
    result = rate(_counts_from(histogram, pairs), 8, 12)
    assert result.passing == 0 and result.observed == 0
    assert result.bound == pytest.approx(3 / pairs.sum())
    assert result.entries_at(0.01) is None  # nothing counted, nothing fitted: no size to name
    assert result.entries_at(0.01, bound=True) == list_scale.entries_for(0.01, result.bound)


def test_windows_are_distinct_tiles_of_each_grid() -> None:
    image = Image.new("RGB", (400, 200))
    tiles = list(windows(image))
    # Grids whose tiles keep both sides >= MIN_WINDOW_SIDE (48): columns 1-4 (400/4 = 100) and
    # rows 1-4 (200/4 = 50): all 16 grids, 1+2+3+4 columns times 1+2+3+4 rows.
    assert len(tiles) == 10 * 10
    assert tiles[0].size == (400, 200)
    assert all(min(t.size) >= MIN_WINDOW_SIDE for t in tiles)
    small = Image.new("RGB", (120, 100))
    assert all(min(t.size) >= MIN_WINDOW_SIDE for t in windows(small))
    assert len(list(windows(small))) == 1 + 2 + 2 + 4  # grids 1x1, 2x1, 1x2, 2x2


def _folder(tmp_path: Path, name: str, files: list[str]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in files:
        (folder / file).write_bytes((DATA / file).read_bytes())
    return folder


def test_eval_unrelated_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listed = _folder(tmp_path, "listed", ["thorn-image2.jpg", "thorn-image5.jpg"])
    queried = _folder(tmp_path, "queried", ["threatexchange-labelme-q0122.jpg", "kitten.jpg"])
    code = main(["eval", str(listed), "--unrelated", str(queried), "--json", "--workers", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (report["listed_photos"], report["query_photos"]) == (2, 2)
    assert report["pairs"] == report["listed_images"] * report["query_images"] > 1000
    assert set(report["rules"]) == {"reject", "flag"}
    reject, flag = report["rules"]["reject"], report["rules"]["flag"]
    assert (reject["ahash_radius"], reject["phash_radius"]) == (8, 12)
    assert flag["pairs_passing"] >= reject["pairs_passing"]  # a wider radius acts on more
    assert set(reject["per_upload"]) == {"10000", "100000", "1000000"}
    # The list size at which the rule acts on 1% of uploads: the bound's is never the larger.
    assert reject["entries_for_1_percent_bound"] >= 1
    if reject["entries_for_1_percent"] is not None:
        assert reject["entries_for_1_percent"] >= reject["entries_for_1_percent_bound"]
    code = main(["eval", str(listed), "--unrelated", str(queried), "--workers", "1"])
    table = capsys.readouterr().out
    assert code == 0 and "| reject: aHash <= 8, pHash <= 12 |" in table


def test_eval_unrelated_refuses_the_same_folder_and_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = _folder(tmp_path, "listed", ["thorn-image2.jpg"])
    assert main(["eval", str(listed), "--unrelated", str(listed)]) == 2
    assert "another folder" in capsys.readouterr().err
    assert main(["eval", str(listed), "--unrelated", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_sampling_a_photo_is_reproducible() -> None:
    """The estimate is reproducible only if the sampling is: same photo, same images."""
    path = str(DATA / "thorn-image7.jpg")
    first, second = unrelated.sample_photo(path), unrelated.sample_photo(path)
    assert first.error is None and len(first) > 50
    assert np.array_equal(first.ahashes, second.ahashes)
    assert np.array_equal(first.phashes, second.phashes)
    # Variant 0 is the image as it is; the others are its flips and rotations.
    assert (first.ahashes[:, 0] != first.ahashes[:, 1]).any()


def test_the_per_pair_table_pools_runs_and_floors_at_the_rule_of_three() -> None:
    rng = np.random.default_rng(7)
    runs = []
    for shape in ((3, 4), (4, 3)):  # both directions of a split: different photo counts
        pairs = rng.integers(1_000, 5_000, size=shape).astype(np.int64)
        near = np.zeros((*shape, BINS), np.int64)
        near[:, :, 20:] = rng.poisson(0.5, size=(*shape, BINS - 20))
        wider = near.copy()
        wider[:, :, 10:] += rng.poisson(0.3, size=(*shape, BINS - 10))
        names = tuple(map(str, range(shape[0]))), tuple(map(str, range(shape[1])))
        runs.append(PairCounts(*names, pairs, {4: near, 8: wider}))
    table = unrelated.per_pair_table(runs, [4, 8])
    total = sum(int(run.pairs.sum()) for run in runs)
    floor = 3 / total
    for row, radius in enumerate((4, 8)):
        for confirm in range(BINS):
            counted = sum(int(run.histograms[radius][:, :, : confirm + 1].sum()) for run in runs)
            assert table[row, confirm] == pytest.approx(max(counted / total, floor))
    assert table[0, 19] == pytest.approx(floor)  # nothing counted below 20 at radius 4
    assert table[1, 30] > table[0, 30] > floor  # the wider radius acts on more pairs
