"""``guard eval``'s summary, typed: printed as a markdown table, as JSON (``--json``), charted."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from guard.config import Config
from guard.evaluation.edits import EDITS
from guard.evaluation.scoring import (
    RADII,
    Evaluation,
    Policy,
    Recommendation,
    at_radius,
    false_positive_rate,
    feature_policies,
    recall,
    recommend,
)

#: The policies of every summary, in table order: :func:`feature_policies`' labels.
LABELS = ("guard", "no pHash confirmation", "no dihedral", "no border trim")


@dataclass(frozen=True)
class RecallRow:
    """One edit's recall under each policy label, and under the configured policy per radius."""

    edit: str
    group: str
    by_policy: Mapping[str, float | None]  # LABELS -> recall
    by_radius: tuple[float | None, ...]  # RADII -> recall

    def to_json(self) -> dict[str, Any]:
        return {
            "edit": self.edit,
            "group": self.group,
            **self.by_policy,
            "by_radius": list(self.by_radius),
        }


@dataclass(frozen=True)
class Distribution:
    """Hamming distances between every two distinct originals."""

    pairs: int
    min: int
    p1: float
    p5: float
    median: float
    within_8: int
    within_12: int

    @classmethod
    def of(cls, values: list[int]) -> Distribution | None:
        if not values:
            return None
        quantiles = np.percentile(values, [1, 5, 50])
        return cls(
            pairs=len(values),
            min=min(values),
            p1=float(quantiles[0]),
            p5=float(quantiles[1]),
            median=float(quantiles[2]),
            within_8=sum(v <= 8 for v in values),
            within_12=sum(v <= 12 for v in values),
        )


@dataclass(frozen=True)
class Skipped:
    file: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What ``guard eval`` prints; :meth:`to_json` is the ``--json`` output."""

    folder: str
    originals: int
    skipped: tuple[Skipped, ...]
    policy: Policy
    recall: tuple[RecallRow, ...]
    false_positive_rate: Mapping[str, float | None]  # LABELS -> rate
    false_positive_rate_by_radius: tuple[float | None, ...]
    false_positive_rate_by_radius_without_confirmation: tuple[float | None, ...]
    pairwise_ahash: Distribution | None
    pairwise_phash: Distribution | None
    recommended: Recommendation
    mean_recall: Mapping[str, float | None]  # LABELS -> mean over edits

    def to_json(self) -> dict[str, Any]:
        def distribution(value: Distribution | None) -> dict[str, Any]:
            return asdict(value) if value else {}

        return {
            "folder": self.folder,
            "originals": self.originals,
            "skipped": [asdict(s) for s in self.skipped],
            "policy": asdict(self.policy),
            "recall": [row.to_json() for row in self.recall],
            "false_positive_rate": dict(self.false_positive_rate),
            "false_positive_rate_by_radius": list(self.false_positive_rate_by_radius),
            "false_positive_rate_by_radius_without_confirmation": list(
                self.false_positive_rate_by_radius_without_confirmation
            ),
            "pairwise_ahash": distribution(self.pairwise_ahash),
            "pairwise_phash": distribution(self.pairwise_phash),
            "recommended": self.recommended.to_json(),
            "mean_recall": dict(self.mean_recall),
        }


def _recall_rows(evaluation: Evaluation, policies: dict[str, Policy]) -> tuple[RecallRow, ...]:
    """A row per edit that was made, in EDITS order."""
    queries, base = evaluation.queries, policies["guard"]
    made = {q.edit for q in queries}
    return tuple(
        RecallRow(
            edit=e.name,
            group=e.group,
            by_policy={label: recall(queries, p, e.name) for label, p in policies.items()},
            by_radius=tuple(recall(queries, at_radius(base, r), e.name) for r in RADII),
        )
        for e in EDITS
        if e.name in made
    )


def _mean(values: Iterable[float | None]) -> float | None:
    numbers = [v for v in values if v is not None]
    return statistics.fmean(numbers) if numbers else None


def summary(evaluation: Evaluation, config: Config, max_fpr: float) -> Summary:
    """The figures for --json and for the tables."""
    policies = feature_policies(config)
    base = policies["guard"]
    queries = evaluation.queries
    rows = _recall_rows(evaluation, policies)
    return Summary(
        folder=evaluation.folder,
        originals=evaluation.originals,
        skipped=tuple(Skipped(f, r) for f, r in evaluation.skipped),
        policy=base,
        recall=rows,
        false_positive_rate={
            label: false_positive_rate(queries, policy) for label, policy in policies.items()
        },
        false_positive_rate_by_radius=tuple(
            false_positive_rate(queries, at_radius(base, r)) for r in RADII
        ),
        false_positive_rate_by_radius_without_confirmation=tuple(
            false_positive_rate(queries, at_radius(base, r, confirm=False)) for r in RADII
        ),
        pairwise_ahash=Distribution.of(evaluation.pairwise_ahash),
        pairwise_phash=Distribution.of(evaluation.pairwise_phash),
        recommended=recommend(evaluation, config, max_fpr),
        mean_recall={label: _mean(row.by_policy[label] for row in rows) for label in policies},
    )


def _pct(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f}%"


def format_table(report: Summary) -> str:
    """The terminal table: recall per edit under the policy and with each feature off, then FPs."""
    policy = report.policy
    head = (
        f"{report.originals} originals in {report.folder}; policy: reject radius {policy.radius}, "
        f"pHash confirmation {policy.confirm_radius}, "
        f"dihedral {'on' if policy.dihedral else 'off'}, trim on"
    )
    lines = [head, "", "recall per edit (share of edits whose original is matched):", ""]
    lines.append(
        "| group | edit | guard | no pHash | no dihedral | no trim | r=0 | r=4 | r=8 | r=12 |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in report.recall:
        cells = [_pct(row.by_policy[label]) for label in LABELS]
        sweep = [_pct(row.by_radius[r]) for r in (0, 4, 8, 12)]
        lines.append(f"| {row.group} | {row.edit} | " + " | ".join(cells + sweep) + " |")
    mean = report.mean_recall
    lines.append(
        "| **all** | mean | " + " | ".join(_pct(mean[label]) for label in LABELS) + " | | | | |"
    )
    fp = report.false_positive_rate
    lines += ["", "query false-positive rate (originals matching another original):", ""]
    lines.append("| guard | no pHash | no dihedral | no trim |")
    lines.append("|---:|---:|---:|---:|")
    lines.append("| " + " | ".join(_pct(fp[label], 2) for label in LABELS) + " |")
    lines += [
        "",
        "| radius | " + " | ".join(str(r) for r in RADII) + " |",
        "|---|" + "---:|" * len(RADII),
    ]
    by_radius = report.false_positive_rate_by_radius
    unconfirmed = report.false_positive_rate_by_radius_without_confirmation
    lines.append("| FP rate | " + " | ".join(_pct(v, 1) for v in by_radius) + " |")
    lines.append("| FP rate, no pHash | " + " | ".join(_pct(v, 1) for v in unconfirmed) + " |")
    for stats, title in ((report.pairwise_ahash, "aHash"), (report.pairwise_phash, "pHash")):
        if stats:
            lines.append(
                f"\npairwise {title} distance between distinct originals: {stats.pairs} pairs, "
                f"min {stats.min}, 1st percentile {stats.p1:g}, 5th {stats.p5:g}, "
                f"median {stats.median:g}; within 8: {stats.within_8}, within 12: {stats.within_12}"
            )
    recommended = report.recommended
    lines.append(
        f"\nrecommended for a query FP rate <= {recommended.max_fpr:g}: reject_radius "
        f"{recommended.reject_radius}, flag_radius {recommended.flag_radius} "
        f"(mean recall at that reject radius {_pct(recommended.recall_at_reject)})"
    )
    if recommended.caveat:
        lines.append(f"caveat: {recommended.caveat}")
    if report.skipped:
        lines.append("skipped: " + ", ".join(f"{s.file} ({s.reason})" for s in report.skipped))
    return "\n".join(lines)


def write_chart(report: Summary, path: str) -> bool:
    """A bar chart of recall per edit (guard vs each feature off), if matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report.recall
    x = np.arange(len(rows))
    figure, axes = plt.subplots(figsize=(max(8, len(rows) * 0.45), 4.5))
    for offset, label in enumerate(LABELS):
        values = [100 * (row.by_policy[label] or 0) for row in rows]
        axes.bar(x + (offset - 1.5) * 0.2, values, width=0.2, label=label)
    axes.set_xticks(x, [row.edit for row in rows], rotation=70, ha="right", fontsize=8)
    axes.set_ylabel("recall %")
    axes.set_ylim(0, 105)
    axes.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.13))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
