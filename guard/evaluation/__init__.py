"""Accuracy: how many evasive edits guard still catches, and how often it matches the wrong image.

``guard eval FOLDER`` runs this; it is a tool, never on the request path: nothing that ``import
guard`` or the middleware loads imports this package (guard/cli.py imports it inside the command).

* :mod:`~guard.evaluation.edits`: the evasive edits made of every original (deterministic);
* :mod:`~guard.evaluation.scoring`: candidates, policies, recall, false-positive rate, recommend;
* :mod:`~guard.evaluation.run`: :func:`evaluate`: hash (in a process pool), index, look up;
* :mod:`~guard.evaluation.report`: the typed :class:`Summary`, its table, JSON and chart.
"""

from __future__ import annotations

from guard.evaluation.edits import EDITS, Edit, Editor, edit_bytes
from guard.evaluation.report import (
    LABELS,
    Distribution,
    RecallRow,
    Skipped,
    Summary,
    format_table,
    summary,
    write_chart,
)
from guard.evaluation.run import IMAGE_SUFFIXES, evaluate
from guard.evaluation.scoring import (
    MAX_RADIUS,
    RADII,
    Candidate,
    Evaluation,
    Policy,
    Query,
    Recommendation,
    candidate_for,
    configured_policy,
    false_positive_rate,
    feature_policies,
    query_variants,
    recall,
    recommend,
)

__all__ = [
    "EDITS",
    "IMAGE_SUFFIXES",
    "LABELS",
    "MAX_RADIUS",
    "RADII",
    "Candidate",
    "Distribution",
    "Edit",
    "Editor",
    "Evaluation",
    "Policy",
    "Query",
    "RecallRow",
    "Recommendation",
    "Skipped",
    "Summary",
    "candidate_for",
    "configured_policy",
    "edit_bytes",
    "evaluate",
    "false_positive_rate",
    "feature_policies",
    "format_table",
    "query_variants",
    "recall",
    "recommend",
    "summary",
    "write_chart",
]
