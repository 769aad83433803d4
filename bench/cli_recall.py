"""What the default policy catches and wrongly blocks, measured through the real CLI.

    python bench/cli_recall.py [PHOTOS]        (default: ../shared/data/photos)

In a temporary folder, on the embedded Redis, with the built-in defaults:
1. `guard load PHOTOS --list photos`, twice (the second run must add 0);
2. `guard check` on JPEG quality-50 copies and on half-size copies of every photo;
3. with the even-numbered photos listed (`guard load even`), `guard check` on the odd-numbered ones.
Prints the verdict counts of each step.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import DEFAULT_PHOTOS, photos_folder  # bench/machine.py
from PIL import Image


def guard(work: Path, *argv: str) -> object:
    completed = subprocess.run(
        [sys.executable, "-m", "guard", *argv, "--json", "--data-dir", str(work / ".guard")],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode not in (0, 1):
        raise SystemExit(f"guard {' '.join(argv)} failed: {completed.stderr}")
    return json.loads(completed.stdout)


def verdicts(reports: object) -> dict[str, int]:
    assert isinstance(reports, list)
    return dict(collections.Counter(report["verdict"] for report in reports))


def main(photos: str = DEFAULT_PHOTOS) -> None:
    source = Path(photos).resolve()
    files = sorted(source.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in ("q50", "half", "even", "odd"):
            (work / name).mkdir()
        for index, path in enumerate(files):
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            image.save(work / "q50" / path.name, "JPEG", quality=50)
            half = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
            half.save(work / "half" / path.name, "JPEG", quality=85)
            (work / ("even" if index % 2 == 0 else "odd") / path.name).symlink_to(path)

        first = guard(work, "load", str(source), "--list", "photos")
        second = guard(work, "load", str(source), "--list", "photos")
        assert isinstance(first, dict) and isinstance(second, dict)
        print(f"{len(files)} photos in {source}")
        print(
            f"load:        added {first['added']}, present {first['present']}, skipped "
            f"{[s['file'] for s in first['skipped'] if s['file'].endswith('.jpg')]}"
        )
        print(f"load again:  added {second['added']}, present {second['present']}")
        for name in ("q50", "half"):
            reports = guard(
                work, "check", *map(str, sorted((work / name).iterdir())), "--list", "photos"
            )
            print(f"check {name:5}: {verdicts(reports)}")
        guard(work, "load", str(work / "even"))
        reports = guard(
            work, "check", *map(str, sorted((work / "odd").iterdir())), "--list", "even"
        )
        print(f"odd photos against the even list: {verdicts(reports)}")


if __name__ == "__main__":
    main(photos_folder(__doc__.splitlines()[0]))
