"""False rejects and flags per innocent upload at list sizes 1e4, 1e5 and 1e6.

    python bench/false_positives.py [--photos FOLDER] [--quick] [--json]

The photo folder's MANIFEST.csv (columns file, source) splits it into two unrelated collections
by source (a source's photos, and the quadrant crops of them, stay on one side): the first is
listed, the second queried, with guard.evaluation.unrelated (non-overlapping windows on 16 grids,
each as it is and mildly edited; every pair decided as the middleware decides). Prints each rule's
rate per pair (observed, 95% photo-bootstrap bound, tail fit) and per upload, with the ratio to
the baseline: the built-in default policy.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

from machine import arguments, describe, load_average, machine_line  # bench/machine.py

from guard.config import DEFAULT_POLICY
from guard.evaluation import IMAGE_SUFFIXES, unrelated

#: Sources listed (the rest are queried): wallpapers and test suites on one side, samples of
#: other libraries on the other. No photo of one side shows a scene of the other.
LISTED_SOURCES = (
    "Debian lomiri-wallpapers",
    "Kodak Lossless True Color Image Suite",
    "Debian mate-backgrounds",
    "github idealo/imagededup",
)

BASELINE = "default reject"


def rules() -> dict[str, tuple[int, int]]:
    policy = DEFAULT_POLICY
    return {
        BASELINE: (policy.reject_radius, policy.confirm_radius),
        "default flag": (policy.flag_radius, policy.confirm_radius),
        "stricter pHash": (policy.reject_radius, 8),
        "strictest pHash": (policy.reject_radius, 6),
        "both stricter": (6, 8),
    }


def split(photos: Path, work: Path, quick: bool) -> tuple[Path, Path]:
    """Two folders of links: the listed collection and the queried one."""
    manifest = photos / "MANIFEST.csv"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} is missing: it names each photo's source")
    listed, queried = work / "listed", work / "queried"
    listed.mkdir()
    queried.mkdir()
    with manifest.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    for index, row in enumerate(rows):
        if quick and index % 4:
            continue
        side = listed if row["source"].startswith(LISTED_SOURCES) else queried
        (side / row["file"]).symlink_to((photos / row["file"]).resolve())
    return listed, queried


def main() -> None:
    parser = arguments(
        __doc__.splitlines()[0],
        photos="photos with a MANIFEST.csv naming each one's source",
        quick="every 4th photo only (a few seconds)",
    )
    parser.add_argument("--workers", type=int, default=2, help="hashing processes (default 2)")
    args = parser.parse_args()
    started, load = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as temporary:
        listed, queried = split(Path(args.photos), Path(temporary), args.quick)
        report = unrelated.measure(
            listed, queried, rules(), suffixes=IMAGE_SUFFIXES, workers=args.workers
        )
    seconds = time.perf_counter() - started
    machine = describe() | {"load": [load, load_average()], "seconds": round(seconds, 1)}
    if args.json:
        json.dump({"machine": machine, "report": report.to_json()}, sys.stdout, indent=2)
        print()
        return
    baseline = report.rules[BASELINE][2]
    print(machine_line(machine) + f"; load {load} -> {load_average()}; {seconds:.0f} s")
    print()
    print(unrelated.format_report(report))
    print()
    print("| rule | per-pair estimate | x baseline |")
    print("|---|---:|---:|")
    for name, (_, _, rate) in report.rules.items():
        times = rate.estimate / baseline.estimate if baseline.estimate else float("nan")
        print(f"| {name} | {rate.estimate:.2g} | {times:.3g} |")


if __name__ == "__main__":
    main()
