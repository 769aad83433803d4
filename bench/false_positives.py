"""False rejects and flags per innocent upload at list sizes 1e4, 1e5 and 1e6.

    python bench/false_positives.py [--photos FOLDER] [--quick] [--json]
    python bench/false_positives.py --write-reference guard/reference_rates.py
    python bench/false_positives.py --from-reference

The photo folder's MANIFEST.csv (columns file, source) splits it into two unrelated collections
by source (a source's photos, and the quadrant crops of them, stay on one side): the first is
listed, the second queried, with guard.evaluation.unrelated (non-overlapping windows on 16 grids,
each as it is and mildly edited; every pair decided as the middleware decides). Prints each rule's
rate per pair (observed, 95% photo-bootstrap bound, tail fit) and per upload, with the ratio to
the baseline: the built-in default policy.

--write-reference measures both directions of the split (each collection listed once) and writes
the per-pair rate of every rule (aHash radius 0-12, pHash radius 0-64) as the module guard's
list-size estimates read (guard/list_scale.py). --from-reference prints, from that module alone
(no photos), the share of innocent uploads each rule above acts on per list size, and the list
size at which it reaches the 1% that `guard load` and start-up warn at.
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from machine import arguments, describe, load_average, machine_line  # bench/machine.py

from guard import list_scale
from guard.config import DEFAULT_POLICY, MAX_RADIUS
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


def write_reference(listed: Path, queried: Path, workers: int, target: Path) -> str:
    """Measure every rule both ways round and write the table as a Python module; a summary."""
    samples = [
        unrelated.sample_folder(folder, IMAGE_SUFFIXES, workers) for folder in (listed, queried)
    ]
    radii = list(range(MAX_RADIUS + 1))
    counts = [
        unrelated.count_pairs(samples[1], samples[0], radii),
        unrelated.count_pairs(samples[0], samples[1], radii),
    ]
    table = unrelated.per_pair_table(counts, radii)
    pairs = sum(run.total_pairs for run in counts)
    photos = sum(1 for side in samples for photo in side if len(photo))
    rows = []
    for row in table:
        numbers = ", ".join(f"{value:.3g}" for value in row)
        rows.append(textwrap.fill(numbers, 92, initial_indent=" " * 8, subsequent_indent=" " * 8))
    body = ",\n".join(f"    (\n{row},\n    )" for row in rows)
    target.write_text(
        f'''"""The share of unrelated (upload, entry) pairs each rule acts on: guard's reference
measurement, read by guard/list_scale.py. Generated; do not edit. Regenerate with

    python bench/false_positives.py --photos PHOTOS --write-reference guard/reference_rates.py

{photos} real photographs in two unrelated collections, each photo cut into its non-overlapping
windows on 16 grids (each as it is and mildly edited); every window of one collection listed and
every window of the other queried, both ways round: {pairs:.3g} pairs, each decided as the
middleware decides (dihedral variants on).
"""

#: Unrelated (upload, entry) pairs measured.
PAIRS = {pairs}

#: PER_PAIR[R][C]: the share of pairs the rule "aHash within R (any dihedral variant), pHash
#: within C" acts on, for R = 0..{MAX_RADIUS} and C = 0..64 (unrelated.per_pair_table).
PER_PAIR: tuple[tuple[float, ...], ...] = (
{body},
)
'''
    )
    default = table[DEFAULT_POLICY.reject_radius, DEFAULT_POLICY.confirm_radius]
    return f"wrote {target}: {pairs:.3g} pairs from {photos} photos; default reject {default:.2g}"


def reference_table() -> str:
    """Per list size, the share of innocent uploads each rule of :func:`rules` acts on."""
    sizes = (1_000, 10_000, 100_000, 1_000_000)
    lines = [
        "| rule | per pair | " + " | ".join(f"{n:,} entries" for n in sizes) + " | 1% at |",
        "|---|---:|" + "---:|" * (len(sizes) + 1),
    ]
    for name, (radius, confirm) in rules().items():
        rate = list_scale.per_pair(radius, confirm)
        shares = [list_scale.share_of_uploads(rate, n) for n in sizes]
        warned_at = list_scale.entries_for(list_scale.WARN_SHARE, rate)
        lines.append(
            f"| {name}: aHash <= {radius}, pHash <= {confirm} | {rate:.2g} | "
            + " | ".join(f"{100 * share:.3g}%" for share in shares)
            + f" | {warned_at:,} entries |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = arguments(
        __doc__.splitlines()[0],
        photos="photos with a MANIFEST.csv naming each one's source",
        quick="every 4th photo only (a few seconds)",
    )
    parser.add_argument("--workers", type=int, default=2, help="hashing processes (default 2)")
    parser.add_argument(
        "--write-reference",
        type=Path,
        metavar="MODULE",
        help="write every rule's per-pair rate, measured both ways round, to this Python module",
    )
    parser.add_argument(
        "--from-reference",
        action="store_true",
        help="print each rule's share of innocent uploads rejected per list size, from "
        "guard/reference_rates.py (no photos needed)",
    )
    args = parser.parse_args()
    if args.from_reference:
        print(reference_table())
        return
    started, load = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as temporary:
        listed, queried = split(Path(args.photos), Path(temporary), args.quick)
        if args.write_reference:
            print(write_reference(listed, queried, args.workers, args.write_reference))
            return
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
