"""False positives at list scale: how often an innocent upload is rejected or flagged by a list
of N entries, estimated from very many unrelated (upload, entry) pairs.

A few hundred photos cannot show a rate of one in a billion, and the rate per upload grows with
the list: ``1 - (1 - p)**N`` for a per-pair rate ``p``. So every photo of two unrelated
collections is cut into many distinct images: its non-overlapping windows on 16 grids (1x1 to
4x4), each as it is and once mildly edited. Every image of one collection is listed, every image
of the other is a query, and every (query, listed) pair is decided exactly as the middleware
decides it (any dihedral variant of the query within the radius whose pHash also agrees), so no
window is ever compared with its own photo.

Per pair, what decides is ``m_R``: the smallest pHash distance over the query's variants within
aHash radius ``R`` of the entry. A rule ``(R, C)`` rejects (or flags) a pair when
``m_R <= C``. The counts are kept per (query photo, listed photo), which gives three figures:

- **observed**: the share of pairs with ``m_R <= C``;
- **95% bound**: the 95th percentile of that share over a bootstrap that resamples photos on
  both sides (windows of one photo are not independent samples);
- **tail fit**: where too few pairs pass to be counted, the lower tail of ``P(m_R <= x)`` is fitted
  (probit-linear in ``x``, weighted by counts) and extrapolated to ``C``; the fit is repeated on
  every bootstrap sample for its own bound. It assumes the tail keeps its Gaussian shape below the
  counted range: a bound on sampling, not on that assumption.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from guard.errors import ImageError
from guard.hashing import TRANSFORMS, hash_bytes
from guard.list_scale import WARN_SHARE, entries_for, share_of_uploads
from guard.mirror import popcount

#: Grids each photo is cut into (columns, rows): every window of a grid is a distinct image.
GRIDS: tuple[tuple[int, int], ...] = tuple((c, r) for c in range(1, 5) for r in range(1, 5))
#: Windows smaller than this (pixels, either side) are skipped: too small to be an upload.
MIN_WINDOW_SIDE = 48
#: List sizes the per-upload rates are given for.
LIST_SIZES = (10_000, 100_000, 1_000_000)
#: Bins of m_R: pHash distances 0..64; pairs with no variant within R are not counted in any.
BINS = 65
#: Resamples of the photo bootstrap.
BOOTSTRAP = 400
#: The tail fit uses the distances whose cumulative count is at least this (a rate from fewer
#: pairs is noise) and whose cumulative share is at most TAIL_SHARE (the tail, not the bulk).
MIN_TAIL_COUNT = 20
TAIL_SHARE = 1e-3

Hashes = npt.NDArray[np.uint64]


#: The mild edit each window also gets: (name, the change, the JPEG quality it is saved at).
MILD_EDITS: tuple[tuple[str, Callable[[Image.Image], Image.Image], int], ...] = (
    ("brightness+20%", lambda im: ImageEnhance.Brightness(im).enhance(1.2), 90),
    ("blur", lambda im: im.filter(ImageFilter.GaussianBlur(1.5)), 90),
    ("contrast-20%", lambda im: ImageEnhance.Contrast(im).enhance(0.8), 90),
    ("mirror", ImageOps.mirror, 90),
    ("jpeg-q40", lambda im: im, 40),  # the edit is the encoding
)


def windows(image: Image.Image) -> Iterator[Image.Image]:
    """The non-overlapping windows of ``image`` on every grid of :data:`GRIDS` (the whole image
    is the 1x1 grid's), skipping those under :data:`MIN_WINDOW_SIDE`."""
    width, height = image.size
    for columns, rows in GRIDS:
        w, h = width // columns, height // rows
        if min(w, h) < MIN_WINDOW_SIDE:
            continue
        for row in range(rows):
            for column in range(columns):
                yield image.crop((column * w, row * h, (column + 1) * w, (row + 1) * h))


def _encode(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@dataclass(frozen=True)
class PhotoSamples:
    """The images cut from one photo: their aHash and pHash, for each dihedral variant."""

    name: str
    ahashes: Hashes  # (images, 8): variant 0 is the image as it is
    phashes: Hashes
    error: str | None = None

    def __len__(self) -> int:
        return len(self.ahashes)


def sample_photo(path: str) -> PhotoSamples:
    """Cut one photo into windows, each as it is and once mildly edited, and hash them all with
    guard's pipeline (JPEG-encoded first, as an upload would be). Runs in worker processes."""
    name = Path(path).name
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError) as error:
        return PhotoSamples(
            name, np.empty((0, 8), np.uint64), np.empty((0, 8), np.uint64), str(error)
        )
    rng = random.Random(name)
    ahashes, phashes = [], []
    for index, window in enumerate(windows(image)):
        _, edit, quality = MILD_EDITS[(index + rng.randrange(len(MILD_EDITS))) % len(MILD_EDITS)]
        for data in (_encode(window, 90), _encode(edit(window), quality)):
            try:
                hashed = hash_bytes(data)
            except ImageError:
                continue
            if hashed.low_information:
                continue  # not an entry guard would list, nor an upload it would act on
            variants = hashed.primary.variants()
            ahashes.append([variants[t][0] for t in TRANSFORMS])
            phashes.append([variants[t][1] for t in TRANSFORMS])
    return PhotoSamples(
        name,
        np.array(ahashes, dtype=np.uint64).reshape(-1, 8),
        np.array(phashes, dtype=np.uint64).reshape(-1, 8),
    )


@dataclass(frozen=True)
class PairCounts:
    """Counts per (query photo, listed photo): the pairs, and per aHash radius R the histogram of
    m_R over pairs (pairs with no variant within R are in no bin)."""

    query_photos: tuple[str, ...]
    listed_photos: tuple[str, ...]
    pairs: npt.NDArray[np.int64]  # (query photos, listed photos)
    histograms: dict[int, npt.NDArray[np.int64]]  # R -> (query photos, listed photos, BINS)

    @property
    def total_pairs(self) -> int:
        return int(self.pairs.sum())


def count_pairs(
    queries: Sequence[PhotoSamples],
    listed: Sequence[PhotoSamples],
    radii: Sequence[int],
    *,
    chunk: int = 512,
) -> PairCounts:
    """Decide every (query image, listed image) pair once, vectorised over the listed side."""
    queries = [photo for photo in queries if len(photo)]
    listed = [photo for photo in listed if len(photo)]
    q_a = np.concatenate([photo.ahashes for photo in queries])
    q_p = np.concatenate([photo.phashes for photo in queries])
    q_photo = np.repeat(np.arange(len(queries)), [len(photo) for photo in queries])
    l_a = np.concatenate([photo.ahashes[:, 0] for photo in listed])  # listed as they are
    l_p = np.concatenate([photo.phashes[:, 0] for photo in listed])
    l_photo = np.repeat(np.arange(len(listed)), [len(photo) for photo in listed])
    shape = (len(queries), len(listed), BINS)
    histograms = {radius: np.zeros(shape, dtype=np.int64) for radius in radii}
    far = np.uint8(BINS)  # "no variant within R"
    for start in range(0, len(q_a), chunk):
        stop = min(start + chunk, len(q_a))
        best = {radius: np.full((stop - start, len(l_a)), far, dtype=np.uint8) for radius in radii}
        for variant in range(len(TRANSFORMS)):
            a = popcount(q_a[start:stop, variant, None] ^ l_a[None, :])
            p = popcount(q_p[start:stop, variant, None] ^ l_p[None, :])
            for radius in radii:
                np.minimum(best[radius], np.where(a <= radius, p, far), out=best[radius])
        for radius in radii:
            rows, columns = np.nonzero(best[radius] < far)
            cell = (q_photo[start + rows] * len(listed) + l_photo[columns]) * BINS
            flat = np.bincount(cell + best[radius][rows, columns], minlength=int(np.prod(shape)))
            histograms[radius] += flat.reshape(shape)
    sizes = ([len(photo) for photo in queries], [len(photo) for photo in listed])
    return PairCounts(
        tuple(photo.name for photo in queries),
        tuple(photo.name for photo in listed),
        np.outer(*sizes).astype(np.int64),
        histograms,
    )


@dataclass(frozen=True)
class Rate:
    """One rule's false-positive rate per (upload, entry) pair."""

    passing: int  # pairs the rule acts on
    observed: float
    bound: float  # 95th percentile over the photo bootstrap
    fitted: float | None  # the tail fit's extrapolation, when it had enough points
    fitted_bound: float | None

    @property
    def estimate(self) -> float:
        """The figure to trust: the larger of the observed share and the tail fit (a fit never
        talks a count down, and where nothing was counted it is all there is)."""
        if self.fitted is None:
            return self.observed
        return max(self.observed, self.fitted)

    @property
    def estimate_bound(self) -> float:
        if self.fitted_bound is None:
            return self.bound
        return max(self.bound, self.fitted_bound)

    def per_upload(self, entries: int, *, bound: bool = False) -> float:
        """The share of innocent uploads a list of ``entries`` such entries acts on."""
        return share_of_uploads(self.estimate_bound if bound else self.estimate, entries)

    def entries_at(self, share: float, *, bound: bool = False) -> int | None:
        """The smallest list of such entries that acts on ``share`` of innocent uploads (the
        size ``guard load`` and start-up warn at, for 1%); None where nothing was counted."""
        p = self.estimate_bound if bound else self.estimate
        return entries_for(share, p) if p > 0 else None


def _tail_fit(cumulative: npt.NDArray[np.float64], total: float, threshold: int) -> float | None:
    """P(m <= threshold) from a probit-linear fit of the counted lower tail, or None."""
    share = cumulative / total
    usable = (cumulative >= MIN_TAIL_COUNT) & (share <= TAIL_SHARE)
    x = np.flatnonzero(usable)
    if len(x) < 3:
        return None
    normal = NormalDist()
    z = np.array([normal.inv_cdf(float(s)) for s in share[x]])
    weights = np.sqrt(cumulative[x])
    slope, intercept = np.polyfit(x.astype(float), z, 1, w=weights)
    if slope <= 0:
        return None
    return normal.cdf(float(intercept + slope * threshold))


def rate(counts: PairCounts, radius: int, confirm: int, *, seed: int = 0) -> Rate:
    """The per-pair rate of the rule 'aHash within ``radius`` and pHash within ``confirm``'."""
    histogram = counts.histograms[radius]
    passing_cells = histogram[:, :, : confirm + 1].sum(axis=2)
    cumulative_cells = np.cumsum(histogram, axis=2)
    total = counts.total_pairs
    passing = int(passing_cells.sum())
    fitted = _tail_fit(cumulative_cells.sum(axis=(0, 1)).astype(float), total, confirm)
    rng = np.random.default_rng(seed)
    n_q, n_l = counts.pairs.shape
    boots, fits = [], []
    for _ in range(BOOTSTRAP):
        wq = np.bincount(rng.integers(0, n_q, n_q), minlength=n_q).astype(float)
        wl = np.bincount(rng.integers(0, n_l, n_l), minlength=n_l).astype(float)
        pairs = wq @ counts.pairs @ wl
        boots.append(wq @ passing_cells @ wl / pairs)
        if fitted is not None:
            cumulative = np.einsum("i,ijk,j->k", wq, cumulative_cells, wl)
            refit = _tail_fit(cumulative, pairs, confirm)
            if refit is not None:
                fits.append(refit)
    return Rate(
        passing=passing,
        observed=passing / total,
        # With nothing observed the bootstrap says 0: then at least the rule of three on the
        # pairs (as if independent; the tail fit is the figure to read in that regime).
        bound=max(float(np.percentile(boots, 95)), 0.0 if passing else 3 / total),
        fitted=fitted,
        fitted_bound=float(np.percentile(fits, 95)) if fits else None,
    )


def per_pair_table(counts: Sequence[PairCounts], radii: Sequence[int]) -> npt.NDArray[np.float64]:
    """The per-pair rate of every rule (R, C) for R in ``radii`` and C = 0..64, pooled over
    several runs (both directions of a split, say): the table guard's list-size estimates read.

    Each figure is the counted share, but never below the rule of three (3 / pairs: what a count
    of zero cannot rule out), so the table never says a rule is safer than the data can show.
    No tail fit: over the whole (R, C) range its probit line extrapolates where it was never
    meant to (at R = 0 every count is in the "tail").
    """
    total = sum(run.total_pairs for run in counts)
    table = np.zeros((len(radii), BINS))
    for row, radius in enumerate(radii):
        pooled = np.sum([run.histograms[radius].sum(axis=(0, 1)) for run in counts], axis=0)
        table[row] = np.cumsum(pooled) / total
    return np.maximum(table, 3 / total)


@dataclass(frozen=True)
class UnrelatedReport:
    """False-positive rates per rule, from one run over two unrelated collections."""

    query_photos: int
    listed_photos: int
    query_images: int
    listed_images: int
    pairs: int
    rules: dict[str, tuple[int, int, Rate]] = field(default_factory=dict)  # name -> (R, C, rate)
    skipped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "query_photos": self.query_photos,
            "listed_photos": self.listed_photos,
            "query_images": self.query_images,
            "listed_images": self.listed_images,
            "pairs": self.pairs,
            "rules": {
                name: {
                    "ahash_radius": radius,
                    "phash_radius": confirm,
                    "pairs_passing": r.passing,
                    "per_pair": r.observed,
                    "per_pair_bound": r.bound,
                    "per_pair_fitted": r.fitted,
                    "per_pair_fitted_bound": r.fitted_bound,
                    "per_upload": {str(n): r.per_upload(n) for n in LIST_SIZES},
                    "per_upload_bound": {str(n): r.per_upload(n, bound=True) for n in LIST_SIZES},
                    "entries_for_1_percent": r.entries_at(WARN_SHARE),
                    "entries_for_1_percent_bound": r.entries_at(WARN_SHARE, bound=True),
                }
                for name, (radius, confirm, r) in self.rules.items()
            },
            "skipped": list(self.skipped),
        }


def _photos(folder: str | os.PathLike[str], suffixes: frozenset[str]) -> list[str]:
    return sorted(
        str(p) for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes
    )


def sample_folder(
    folder: str | os.PathLike[str], suffixes: frozenset[str], workers: int
) -> list[PhotoSamples]:
    paths = _photos(folder, suffixes)
    if workers <= 1:
        return [sample_photo(p) for p in paths]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(sample_photo, paths, chunksize=2))


def measure(
    listed_folder: str | os.PathLike[str],
    query_folder: str | os.PathLike[str],
    rules: dict[str, tuple[int, int]],
    *,
    suffixes: frozenset[str],
    workers: int = 1,
) -> UnrelatedReport:
    """Sample both folders, decide every pair, and estimate each rule's rate (name -> (R, C))."""
    listed = sample_folder(listed_folder, suffixes, workers)
    queries = sample_folder(query_folder, suffixes, workers)
    skipped = tuple(f"{s.name}: {s.error}" for s in listed + queries if s.error)
    counts = count_pairs(queries, listed, sorted({radius for radius, _ in rules.values()}))
    return UnrelatedReport(
        query_photos=len(counts.query_photos),
        listed_photos=len(counts.listed_photos),
        query_images=sum(len(photo) for photo in queries),
        listed_images=sum(len(photo) for photo in listed),
        pairs=counts.total_pairs,
        rules={
            name: (radius, confirm, rate(counts, radius, confirm))
            for name, (radius, confirm) in rules.items()
        },
        skipped=skipped,
    )


def format_report(report: UnrelatedReport) -> str:
    """The report as the table ``guard eval --unrelated`` prints."""

    def pct(value: float) -> str:
        return f"{100 * value:.3g}%"

    def size(entries: int | None) -> str:
        return "-" if entries is None else f"{entries:,}"

    lines = [
        f"{report.listed_images} listed images from {report.listed_photos} photos x "
        f"{report.query_images} query images from {report.query_photos} unrelated photos = "
        f"{report.pairs:.3g} pairs",
        "",
        "| rule | pairs acted on | per pair (95% bound) | tail fit (95% bound) | "
        + " | ".join(f"per upload at {n:.0e} (bound)" for n in LIST_SIZES)
        + " | 1% of uploads from (bound) |",
        "|---|---:|---:|---:|" + "---:|" * (len(LIST_SIZES) + 1),
    ]
    for name, (radius, confirm, r) in report.rules.items():
        fitted = "-" if r.fitted is None else f"{r.fitted:.2g} ({(r.fitted_bound or 0):.2g})"
        lines.append(
            f"| {name}: aHash <= {radius}, pHash <= {confirm} | {r.passing} | "
            f"{r.observed:.2g} ({r.bound:.2g}) | {fitted} | "
            + " | ".join(
                f"{pct(r.per_upload(n))} ({pct(r.per_upload(n, bound=True))})" for n in LIST_SIZES
            )
            + f" | {size(r.entries_at(WARN_SHARE))} ({size(r.entries_at(WARN_SHARE, bound=True))})"
            + " entries |"
        )
    if report.skipped:
        lines += ["", "skipped: " + "; ".join(report.skipped)]
    return "\n".join(lines)
