"""What every benchmark shares: the machine it ran on (printed with every table: the machines are
shared and differ), its common options (--photos, --reps, --quick, --json), and the median, ratio
and number formatting of its tables."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The project's photos, relative to the repository (where the benchmarks are run from).
DEFAULT_PHOTOS = "../shared/data/photos"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or "unknown" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None where it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(*, cpu_count: bool = False) -> dict[str, Any]:
    """The start of every benchmark's ``machine``: nproc (the cores this process may use), with
    ``cpu_count`` also os.cpu_count(), the CPU model and the Python version."""
    info: dict[str, Any] = {"nproc": len(os.sched_getaffinity(0))}
    if cpu_count:
        info["cpu_count"] = os.cpu_count()
    info |= {"cpu": cpu_model(), "python": platform.python_version()}
    return info


def machine_line(info: dict[str, Any]) -> str:
    """The markdown line that opens every report: ``- machine: nproc N, CPU``."""
    count = f" (os.cpu_count {info['cpu_count']})" if "cpu_count" in info else ""
    return f"- machine: nproc {info['nproc']}{count}, {info['cpu']}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared: recorded at start and end)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def arguments(
    description: str,
    *,
    photos: str | None = None,
    reps: tuple[int, int] | None = None,
    quick: str | None = None,
) -> argparse.ArgumentParser:
    """A parser with the options benchmarks share, in this order: --photos (with its help text),
    --reps (default, and default with --quick: read with :func:`repetitions`), --quick (with its
    help text) and --json. A benchmark adds its own options after them."""
    parser = argparse.ArgumentParser(description=description)
    if photos is not None:
        parser.add_argument("--photos", default=DEFAULT_PHOTOS, help=photos)
    if reps is not None:
        full, short = reps
        parser.add_argument(
            "--reps", type=int, default=None, help=f"repetitions (default {full}; quick {short})"
        )
        parser.set_defaults(reps_defaults=reps)
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    return parser


def photos_folder(description: str, argv: list[str] | None = None) -> str:
    """The one argument of the small scripts: an optional FOLDER of photos (DEFAULT_PHOTOS)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "folder", nargs="?", default=DEFAULT_PHOTOS, help=f"photos (default {DEFAULT_PHOTOS})"
    )
    folder: str = parser.parse_args(argv).folder
    return folder


def repetitions(args: argparse.Namespace) -> int:
    """--reps, else the default for the run (--quick or not); at least 1."""
    full, short = args.reps_defaults
    reps: int = args.reps if args.reps is not None else (short if args.quick else full)
    if reps < 1:
        raise SystemExit("--reps must be at least 1")
    return reps


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values present (None where there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(top: float | None, bottom: float | None) -> float | None:
    """top / bottom, or None where either is missing or bottom is 0."""
    return top / bottom if top is not None and bottom else None


def number(value: float | None, spec: str) -> str:
    """A table cell: ``value`` formatted with ``spec``, empty where it is missing."""
    return "" if value is None else format(value, spec)


def before_and_now(
    rows: list[tuple[str, int, dict[str, Any]]], sizes: Iterable[int]
) -> Iterable[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(size, the baseline's row, this checkout's row) for each size, from the rows of a
    benchmark run with ``--before`` (each row: checkout name "before" or "this", size, row)."""
    found = {(name, size): row for name, size, row in rows}
    for size in sizes:
        yield size, found["before", size], found["this", size]
