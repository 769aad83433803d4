"""Accuracy: how many evasive edits guard still catches, and how often it matches the wrong image.

``guard eval FOLDER`` runs this. Every original in the folder is edited the ways people edit images
to slip past moderation (a fixed, deterministic set), originals and edits are hashed with guard's
real pipeline (with and without border trimming), the originals are indexed in the real store, and
each edit (and each original, for false positives) is looked up once at radius 12 with dihedral
variants and no pHash filter. Every policy we report (any radius up to 12, confirmation on or off,
dihedral on or off) is then decided from those candidates, exactly: a candidate carries its aHash and
pHash distance to every variant of the query.
"""

from __future__ import annotations

import io
import os
import random
import statistics
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from guard.config import Config
from guard.errors import ImageError
from guard.hashing import FrameHash, ImageHashes, hamming, hash_bytes
from guard.store import Store
from guard.types import Entry

#: The widest radius evaluated (DESIGN.md: real-photo aHashes are too correlated above it).
MAX_RADIUS = 12
RADII = tuple(range(MAX_RADIUS + 1))
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"})

Editor = Callable[[Image.Image, random.Random], Image.Image]


# --- the edits ---------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _crop_share(image: Image.Image, rng: random.Random, share: float) -> Image.Image:
    """Cut ``share`` of the width and of the height, split at random between the two sides."""
    w, h = image.size
    cut_w, cut_h = round(w * share), round(h * share)
    left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
    return image.crop((left, top, w - (cut_w - left), h - (cut_h - top)))


def _caption(image: Image.Image, rng: random.Random) -> Image.Image:
    out = image.copy()
    w, h = out.size
    bar = max(12, h // 8)
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, h - bar, w, h), fill=(0, 0, 0))
    draw.text(
        (w // 20, h - bar + bar // 6),
        rng.choice(["WHEN YOU SEE IT", "MONDAY MOOD", "SO TRUE"]),
        fill=(255, 255, 255),
        font=_font(bar * 2 // 3),
    )
    return out


def _watermark(image: Image.Image, rng: random.Random) -> Image.Image:
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = base.size
    draw.text(
        (w // 10, h // 2 - h // 12),
        "© stockphotos " + str(rng.randint(10, 99)),
        fill=(255, 255, 255, 110),
        font=_font(h // 8),
    )
    return Image.alpha_composite(base, layer).convert("RGB")


def _logo(image: Image.Image, rng: random.Random) -> Image.Image:
    out = image.copy()
    w, h = out.size
    side = max(8, min(w, h) // 6)
    x, y = rng.choice([(w - side - w // 40, h // 40), (w // 40, h - side - h // 40)])
    draw = ImageDraw.Draw(out)
    draw.rounded_rectangle((x, y, x + side, y + side), radius=side // 5, fill=(230, 40, 40))
    draw.text((x + side // 5, y + side // 4), "TV", fill=(255, 255, 255), font=_font(side // 2))
    return out


def _noise(image: Image.Image, rng: random.Random) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + np.random.default_rng(rng.getrandbits(32)).normal(0, 8, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _gamma(image: Image.Image, rng: random.Random) -> Image.Image:
    table = [round(255 * (i / 255) ** 0.7) for i in range(256)]
    return image.point(table * 3)


def _letterbox(image: Image.Image, rng: random.Random) -> Image.Image:
    w, h = image.size
    bar = h // 8
    out = Image.new("RGB", (w, h + 2 * bar), (0, 0, 0))
    out.paste(image, (0, bar))
    return out


def _screenshot(image: Image.Image, rng: random.Random) -> Image.Image:
    """The photo shown smaller inside a browser-like window: the 'screenshot of it' evasion."""
    w, h = image.size
    shown = image.resize((w * 7 // 10, h * 7 // 10), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (w, h), (236, 236, 236))
    ImageDraw.Draw(out).rectangle((0, 0, w, h // 12), fill=(50, 50, 60))
    out.paste(shown, ((w - shown.width) // 2, h // 12 + (h - h // 12 - shown.height) // 2))
    return out


def _combo(image: Image.Image, rng: random.Random) -> Image.Image:
    return _crop_share(ImageOps.mirror(image), rng, 0.05)


@dataclass(frozen=True)
class Edit:
    name: str
    group: str
    apply: Editor
    save_as: str = "JPEG"
    quality: int = 90


EDITS: tuple[Edit, ...] = (
    Edit("jpeg-q30", "re-encode", lambda im, r: im, quality=30),
    Edit("jpeg-q50", "re-encode", lambda im, r: im, quality=50),
    Edit("jpeg-q75", "re-encode", lambda im, r: im, quality=75),
    Edit(
        "resize-50%",
        "resize",
        lambda im, r: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    ),
    Edit(
        "resize-200%",
        "resize",
        lambda im, r: im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC),
    ),
    Edit("png", "format", lambda im, r: im, save_as="PNG"),
    Edit("webp", "format", lambda im, r: im, save_as="WEBP", quality=80),
    Edit("brightness+25%", "tone", lambda im, r: ImageEnhance.Brightness(im).enhance(1.25)),
    Edit("contrast+30%", "tone", lambda im, r: ImageEnhance.Contrast(im).enhance(1.3)),
    Edit("saturation+50%", "tone", lambda im, r: ImageEnhance.Color(im).enhance(1.5)),
    Edit("gamma-0.7", "tone", _gamma),
    Edit("greyscale", "tone", lambda im, r: ImageOps.grayscale(im).convert("RGB")),
    Edit("blur", "filter", lambda im, r: im.filter(ImageFilter.GaussianBlur(2))),
    Edit("noise", "filter", _noise),
    Edit("caption", "overlay", _caption),
    Edit("watermark", "overlay", _watermark),
    Edit("corner-logo", "overlay", _logo),
    Edit("crop-5%", "crop", lambda im, r: _crop_share(im, r, 0.05)),
    Edit("crop-10%", "crop", lambda im, r: _crop_share(im, r, 0.10)),
    Edit("crop-20%", "crop", lambda im, r: _crop_share(im, r, 0.20)),
    Edit("centre-crop-80%", "crop", lambda im, r: _crop_share(im, random.Random(0), 0.20)),
    Edit("letterbox", "border", _letterbox),
    Edit(
        "padding",
        "border",
        lambda im, r: ImageOps.expand(im, border=max(1, im.width // 12), fill="white"),
    ),
    Edit("flip-horizontal", "flip", lambda im, r: ImageOps.mirror(im)),
    Edit("flip-vertical", "flip", lambda im, r: ImageOps.flip(im)),
    Edit("rotate-90", "rotate-90", lambda im, r: im.transpose(Image.Transpose.ROTATE_90)),
    Edit("rotate-180", "rotate-90", lambda im, r: im.transpose(Image.Transpose.ROTATE_180)),
    Edit("rotate-270", "rotate-90", lambda im, r: im.transpose(Image.Transpose.ROTATE_270)),
    Edit(
        "rotate-5deg",
        "small-rotation",
        lambda im, r: im.rotate(5, resample=Image.Resampling.BICUBIC),
    ),
    Edit("screenshot", "screenshot", _screenshot),
    Edit("mirror+crop+q60", "combination", _combo, quality=60),
)


def edit_bytes(image: Image.Image, original_name: str, edit: Edit) -> bytes:
    """One edit of one original, encoded: deterministic for a given name (seeded from it)."""
    rng = random.Random(f"{original_name}/{edit.name}")
    edited = edit.apply(image, rng).convert("RGB")
    buffer = io.BytesIO()
    if edit.save_as == "PNG":
        edited.save(buffer, "PNG")
    else:
        edited.save(buffer, edit.save_as, quality=edit.quality)
    return buffer.getvalue()


# --- candidates and policies -------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A stored original near a query: its distances to every (frame, transform) of the query."""

    source: str
    # (is identity, aHash distance, pHash distance) per query frame and dihedral transform.
    distances: tuple[tuple[bool, int, int], ...]

    def hits(self, policy: Policy) -> bool:
        return any(
            (identity or policy.dihedral)
            and d <= policy.radius
            and (policy.confirm_radius is None or p <= policy.confirm_radius)
            for identity, d, p in self.distances
        )


@dataclass(frozen=True)
class Query:
    """One looked-up image: an edit of ``original``, or the original itself (edit "original")."""

    original: str
    edit: str
    group: str
    trimmed: bool
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class Policy:
    radius: int
    confirm_radius: int | None  # None: no pHash confirmation
    dihedral: bool
    trimmed: bool


Variants = Sequence[tuple[bool, int, int]]  # (is identity, aHash, pHash) per frame and transform


def query_variants(frames: Sequence[FrameHash]) -> Variants:
    """Every dihedral variant of every query frame, computed once per query."""
    return [
        (transform == "identity", ahash, phash)
        for frame in frames
        for transform, (ahash, phash) in frame.variants().items()
    ]


def candidate_for(source: str, ahash: int, phash: int | None, variants: Variants) -> Candidate:
    distances = tuple(
        (identity, hamming(ahash, v_ahash), 0 if phash is None else hamming(phash, v_phash))
        for identity, v_ahash, v_phash in variants
    )
    return Candidate(source, distances)


def recall(queries: Iterable[Query], policy: Policy, edit: str | None = None) -> float | None:
    """Share of edits (of one kind, if named) whose own original matches under ``policy``."""
    relevant = [
        q
        for q in queries
        if q.edit != "original" and q.trimmed == policy.trimmed and edit in (None, q.edit)
    ]
    if not relevant:
        return None
    found = sum(
        any(c.source == q.original and c.hits(policy) for c in q.candidates) for q in relevant
    )
    return found / len(relevant)


def false_positive_rate(queries: Iterable[Query], policy: Policy) -> float | None:
    """Share of originals that match some *other* original under ``policy`` (query FP rate)."""
    relevant = [q for q in queries if q.edit == "original" and q.trimmed == policy.trimmed]
    if not relevant:
        return None
    wrong = sum(
        any(c.source != q.original and c.hits(policy) for c in q.candidates) for q in relevant
    )
    return wrong / len(relevant)


# --- running it --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hashed:
    name: str
    original: tuple[ImageHashes, ImageHashes] | None  # (trimmed, untrimmed)
    edits: tuple[tuple[str, str, ImageHashes, ImageHashes], ...]
    error: str | None = None


def _hash_one(path: str, name: str, edits: tuple[str, ...]) -> _Hashed:
    """Hash an original and its edits, with and without trimming (runs in worker processes)."""
    try:
        data = Path(path).read_bytes()
        original = (hash_bytes(data), hash_bytes(data, trim=False))
        if original[0].low_information:
            return _Hashed(name, None, (), "low-information image")
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (ImageError, OSError) as error:
        return _Hashed(name, None, (), str(error))
    hashed, failed = [], []
    for edit in EDITS:
        if edit.name in edits:
            encoded = edit_bytes(image, name, edit)
            try:
                hashed.append(
                    (edit.name, edit.group, hash_bytes(encoded), hash_bytes(encoded, trim=False))
                )
            except ImageError as error:  # e.g. resize-200% of a large photo passes the pixel cap
                failed.append(f"{edit.name}: {error}")
    return _Hashed(name, original, tuple(hashed), "; ".join(failed) or None)


@dataclass
class Evaluation:
    """Everything ``guard eval`` measured, and the summaries built from it."""

    folder: str
    originals: int
    skipped: list[tuple[str, str]]
    queries: list[Query]
    pairwise_ahash: list[int]
    pairwise_phash: list[int]


async def evaluate(
    folder: str | os.PathLike[str],
    store: Store,
    config: Config,
    *,
    edits: Sequence[str] | None = None,
    limit: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Hash, edit, index and look up; the caller summarises. ``limit`` takes every k-th original."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if limit is not None and len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    chosen = tuple(edits) if edits else tuple(edit.name for edit in EDITS)
    hashed: list[_Hashed] = []
    paths = [str(p) for p in files]
    names = [p.relative_to(folder).as_posix() for p in files]
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_hash_one, paths, names, [chosen] * len(paths))
            for done, item in enumerate(results, 1):
                hashed.append(item)
                if progress:
                    progress(done, len(paths))
    else:
        for done, (path, name) in enumerate(zip(paths, names), 1):
            hashed.append(_hash_one(path, name, chosen))
            if progress:
                progress(done, len(paths))
    good = [h for h in hashed if h.original is not None]
    skipped = [(h.name, h.error or "") for h in hashed if h.error]

    bands = config.defaults.bands
    run_id = uuid.uuid4().hex[:8]
    lists = {True: f"eval-{run_id}-trim", False: f"eval-{run_id}-notrim"}
    queries: list[Query] = []
    try:
        for trimmed, list_name in lists.items():
            index = 0 if trimmed else 1
            # Originals with identical hashes (the same picture in two files) are one entry: its
            # edits and its own lookup count the first file of the group as their original.
            canonical: dict[tuple[int, int], str] = {}
            own: dict[str, str] = {}
            for item in good:
                assert item.original is not None
                key = (item.original[index].ahash, item.original[index].phash)
                own[item.name] = canonical.setdefault(key, item.name)
            entries = [Entry(key[0], key[1], name) for key, name in canonical.items()]
            await store.add(list_name, entries, bands=bands)
            stored = {e.source for e in entries}
            for item in good:
                assert item.original is not None
                jobs = [("original", "original", item.original[index])]
                jobs += [(name, group, pair[index]) for name, group, *pair in item.edits]
                for edit_name, group, hashes in jobs:
                    frames = [f for f in hashes.frames if not f.low_information]
                    matches = await store.lookup(
                        list_name, frames, radius=MAX_RADIUS, dihedral=True
                    )
                    variants = query_variants(frames)
                    candidates = tuple(
                        candidate_for(m.entry.source, m.entry.ahash, m.entry.phash, variants)
                        for m in matches
                        if m.entry.source in stored
                    )
                    queries.append(Query(own[item.name], edit_name, group, trimmed, candidates))
    finally:
        for list_name in lists.values():
            await store.drop(list_name)

    pairwise_a, pairwise_p = [], []
    for i, a in enumerate(good):
        for b in good[i + 1 :]:
            assert a.original and b.original
            pairwise_a.append(hamming(a.original[0].ahash, b.original[0].ahash))
            pairwise_p.append(hamming(a.original[0].phash, b.original[0].phash))
    return Evaluation(str(folder), len(good), skipped, queries, pairwise_a, pairwise_p)


# --- summaries ---------------------------------------------------------------------------------


def configured_policy(config: Config) -> Policy:
    policy = config.defaults
    return Policy(policy.reject_radius, policy.confirm_radius, policy.dihedral, True)


def feature_policies(config: Config) -> dict[str, Policy]:
    """The configured policy, and the same with each of guard's three defences switched off."""
    base = configured_policy(config)
    return {
        "guard": base,
        "no pHash confirmation": Policy(base.radius, None, base.dihedral, True),
        "no dihedral": Policy(base.radius, base.confirm_radius, False, True),
        "no border trim": Policy(base.radius, base.confirm_radius, base.dihedral, False),
    }


def recommend(
    evaluation: Evaluation, config: Config, max_fpr: float
) -> dict[str, int | float | str | None]:
    """The widest reject radius whose observed query FP rate stays within ``max_fpr`` (and a flag
    radius within ten times that: flags are reviewed, not blocked), at the configured confirmation.

    With n originals and no false positive seen, the true rate is only known to be below 3/n
    (95%, the rule of three): the result says when the set is too small to show ``max_fpr``.
    """
    base = configured_policy(config)

    def fpr(radius: int) -> float:
        rate = false_positive_rate(
            evaluation.queries, Policy(radius, base.confirm_radius, base.dihedral, True)
        )
        return rate or 0.0

    reject = max((r for r in RADII if fpr(r) <= max_fpr), default=None)
    flag = max(
        (r for r in RADII if fpr(r) <= 10 * max_fpr and (reject is None or r >= reject)),
        default=None,
    )
    rate = (
        recall(evaluation.queries, Policy(reject, base.confirm_radius, base.dihedral, True))
        if reject is not None
        else None
    )
    bound = 3 / evaluation.originals if evaluation.originals else None
    caveat = None
    if bound is not None and bound > max_fpr:
        caveat = (
            f"{evaluation.originals} originals can only show a false-positive rate below {bound:.2%} "
            f"(95%, none observed); showing {max_fpr:g} needs at least {round(3 / max_fpr)} originals"
        )
    return {
        "reject_radius": reject,
        "flag_radius": flag,
        "max_fpr": max_fpr,
        "recall_at_reject": rate,
        "caveat": caveat,
    }


def summary(evaluation: Evaluation, config: Config, max_fpr: float) -> dict[str, object]:
    """Plain data for --json and for the tables."""
    policies = feature_policies(config)
    base = policies["guard"]
    edit_names = [e.name for e in EDITS if any(q.edit == e.name for q in evaluation.queries)]
    groups = {e.name: e.group for e in EDITS}
    rows = []
    for name in edit_names:
        row: dict[str, object] = {"edit": name, "group": groups[name]}
        for label, policy in policies.items():
            row[label] = recall(evaluation.queries, policy, name)
        row["by_radius"] = [
            recall(evaluation.queries, Policy(r, base.confirm_radius, base.dihedral, True), name)
            for r in RADII
        ]
        rows.append(row)
    fp = {
        label: false_positive_rate(evaluation.queries, policy) for label, policy in policies.items()
    }
    fp_by_radius = [
        false_positive_rate(evaluation.queries, Policy(r, base.confirm_radius, base.dihedral, True))
        for r in RADII
    ]
    fp_unconfirmed_by_radius = [
        false_positive_rate(evaluation.queries, Policy(r, None, base.dihedral, True)) for r in RADII
    ]

    def distribution(values: list[int]) -> dict[str, float | int]:
        if not values:
            return {}
        quantiles = np.percentile(values, [1, 5, 50])
        return {
            "pairs": len(values),
            "min": min(values),
            "p1": float(quantiles[0]),
            "p5": float(quantiles[1]),
            "median": float(quantiles[2]),
            "within_8": sum(v <= 8 for v in values),
            "within_12": sum(v <= 12 for v in values),
        }

    return {
        "folder": evaluation.folder,
        "originals": evaluation.originals,
        "skipped": [{"file": f, "reason": r} for f, r in evaluation.skipped],
        "policy": asdict(base),
        "recall": rows,
        "false_positive_rate": fp,
        "false_positive_rate_by_radius": fp_by_radius,
        "false_positive_rate_by_radius_without_confirmation": fp_unconfirmed_by_radius,
        "pairwise_ahash": distribution(evaluation.pairwise_ahash),
        "pairwise_phash": distribution(evaluation.pairwise_phash),
        "recommended": recommend(evaluation, config, max_fpr),
        "mean_recall": {label: _mean([r[label] for r in rows]) for label in policies},
    }


def _mean(values: Iterable[object]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return statistics.fmean(numbers) if numbers else None


def format_table(report: dict[str, object]) -> str:
    """The terminal table: recall per edit under the policy and with each feature off, then FPs."""
    policy = report["policy"]
    assert isinstance(policy, dict)
    labels = ["guard", "no pHash confirmation", "no dihedral", "no border trim"]
    head = (
        f"{report['originals']} originals in {report['folder']}; policy: reject radius {policy['radius']}, "
        f"pHash confirmation {policy['confirm_radius']}, dihedral {'on' if policy['dihedral'] else 'off'}, trim on"
    )
    lines = [head, "", "recall per edit (share of edits whose original is matched):", ""]
    lines.append(
        "| group | edit | guard | no pHash | no dihedral | no trim | r=0 | r=4 | r=8 | r=12 |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = report["recall"]
    assert isinstance(rows, list)
    for row in rows:
        cells = [_pct(row[label]) for label in labels]
        sweep = [_pct(row["by_radius"][r]) for r in (0, 4, 8, 12)]
        lines.append(f"| {row['group']} | {row['edit']} | " + " | ".join(cells + sweep) + " |")
    mean = report["mean_recall"]
    assert isinstance(mean, dict)
    lines.append(
        "| **all** | mean | " + " | ".join(_pct(mean[label]) for label in labels) + " | | | | |"
    )
    fp = report["false_positive_rate"]
    assert isinstance(fp, dict)
    lines += ["", "query false-positive rate (originals matching another original):", ""]
    lines.append("| guard | no pHash | no dihedral | no trim |")
    lines.append("|---:|---:|---:|---:|")
    lines.append("| " + " | ".join(_pct(fp[label], 2) for label in labels) + " |")
    by_radius = report["false_positive_rate_by_radius"]
    unconfirmed = report["false_positive_rate_by_radius_without_confirmation"]
    assert isinstance(by_radius, list) and isinstance(unconfirmed, list)
    lines += [
        "",
        "| radius | " + " | ".join(str(r) for r in RADII) + " |",
        "|---|" + "---:|" * len(RADII),
    ]
    lines.append("| FP rate | " + " | ".join(_pct(v, 1) for v in by_radius) + " |")
    lines.append("| FP rate, no pHash | " + " | ".join(_pct(v, 1) for v in unconfirmed) + " |")
    for key, title in (("pairwise_ahash", "aHash"), ("pairwise_phash", "pHash")):
        stats = report[key]
        if isinstance(stats, dict) and stats:
            lines.append(
                f"\npairwise {title} distance between distinct originals: {stats['pairs']} pairs, "
                f"min {stats['min']}, 1st percentile {stats['p1']:g}, 5th {stats['p5']:g}, "
                f"median {stats['median']:g}; within 8: {stats['within_8']}, within 12: {stats['within_12']}"
            )
    recommended = report["recommended"]
    assert isinstance(recommended, dict)
    lines.append(
        f"\nrecommended for a query FP rate <= {recommended['max_fpr']:g}: reject_radius "
        f"{recommended['reject_radius']}, flag_radius {recommended['flag_radius']} "
        f"(mean recall at that reject radius {_pct(recommended['recall_at_reject'])})"
    )
    if recommended.get("caveat"):
        lines.append(f"caveat: {recommended['caveat']}")
    skipped = report["skipped"]
    if isinstance(skipped, list) and skipped:
        lines.append("skipped: " + ", ".join(f"{s['file']} ({s['reason']})" for s in skipped))
    return "\n".join(lines)


def _pct(value: object, digits: int = 0) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return f"{100 * value:.{digits}f}%"


def write_chart(report: dict[str, object], path: str) -> bool:
    """A bar chart of recall per edit (guard vs each feature off), if matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report["recall"]
    assert isinstance(rows, list)
    labels = ["guard", "no pHash confirmation", "no dihedral", "no border trim"]
    x = np.arange(len(rows))
    figure, axes = plt.subplots(figsize=(max(8, len(rows) * 0.45), 4.5))
    for offset, label in enumerate(labels):
        values = [100 * (row[label] or 0) for row in rows]
        axes.bar(x + (offset - 1.5) * 0.2, values, width=0.2, label=label)
    axes.set_xticks(x, [row["edit"] for row in rows], rotation=70, ha="right", fontsize=8)
    axes.set_ylabel("recall %")
    axes.set_ylim(0, 105)
    axes.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.13))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
