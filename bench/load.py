"""`guard load` throughput (images/s) on 1,000+ images: one hashing process against all cores.

    cd /work/main && PYTHONPATH=. python bench/load.py [--photos DIR] [--reps N] [--quick] [--json]

The corpus is written as JPEG files to a temporary folder, made from the photos in ``--photos``
(default ../shared/data/photos): each photo gives several deterministic variants (a crop of 75-100 %
of each side at a seeded position, scaled by 0.5-1.0 with LANCZOS, saved at JPEG quality 70-95),
1,020 files in all (``--quick``: 200 files, one repetition, under a minute). A variant whose
(aHash, pHash) pair repeats an earlier file's, or that is low-information, is re-drawn with the
next seed, so that every file is a distinct list entry and a load must add exactly one per file;
photos that are themselves low-information (guard would skip them) are left out.

Each run is ``guard load CORPUS --list bench --json --workers W`` in a subprocess, in a fresh
temporary working directory, so the embedded Redis (``.guard/redis.db`` there) starts empty;
``GUARD_REDIS_URL`` and ``GUARD_CONFIG`` are removed from its environment. Wall-clock time is
``time.perf_counter`` around the whole subprocess (interpreter start, hashing, starting the
embedded Redis, writing, saving and stopping it); the time to the JSON summary is also taken
(the subprocess runs unbuffered, and guard prints the summary before it stops the embedded Redis,
so that figure leaves the stop out). W is 1 and N = ``os.cpu_count()``, interleaved
(1, N, 1, N, ...), 3 repetitions each. After the last run, the same folder is loaded again in the
same working directory: that idempotent re-load must add 0. For context, two more figures: a load
of an empty folder (the fixed cost: interpreter, imports, embedded Redis start and stop), and the
time to hash every file in this process on one thread with ``guard.hash_file`` (hashing alone).

Printed: the machine, the corpus (files, median file size and pixel count), a markdown table with
median seconds, images/s and the speed-up of N workers over 1 (wall clock and to the summary),
the 1-worker load split into hashing, start, Redis stop and the rest (with the speed-up net of the
empty-folder load), and the checks (every
load's JSON says added == files, nothing present or skipped; the re-load adds 0). ``--json``
prints the same data as JSON. The exit status is 1 if a check failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import PIL
from machine import (  # bench/machine.py, next to this script
    arguments,
    describe,
    machine_line,
    median,
    number,
    ratio,
    repetitions,
)
from PIL import Image, features

from guard import hash_bytes, hash_file

FULL_FILES = 1020
QUICK_FILES = 200
SEED = 5
CROP_RANGE = (0.75, 1.0)  # fraction of each side kept
SCALE_RANGE = (0.5, 1.0)
QUALITY_RANGE = (70, 95)
MAX_ATTEMPTS = 20  # re-draws of one variant before giving up
LIST_NAME = "bench"
RUN_TIMEOUT = 900  # seconds, per guard subprocess
MIN_NET_S = 0.05  # below this, a load's time net of the fixed cost is noise


@dataclass(frozen=True)
class Corpus:
    folder: Path
    files: list[Path]
    sources: int
    left_out: int  # low-information photos not used
    redraws: int
    median_bytes: int
    median_pixels: int
    median_size: str  # "WxH" of the file with the median pixel count


@dataclass
class Run:
    """One `guard load` subprocess."""

    kind: str  # "load", "reload" or "empty"
    workers: int
    seconds: float  # wall clock, start to exit
    summary_s: float  # start to the JSON summary, printed before the embedded Redis is stopped
    added: int
    present: int
    skipped: int


@dataclass
class Row:
    measurement: str
    workers: int | None
    runs: int
    median_s: float  # wall clock
    images_per_s: float | None
    speedup_vs_1: float | None
    summary_s: float | None  # to the summary (the process still has to stop the embedded Redis)
    summary_images_per_s: float | None
    summary_speedup_vs_1: float | None
    all_s: list[float] = field(default_factory=list)


@dataclass
class Check:
    text: str
    ok: bool


# --- the corpus ------------------------------------------------------------------------------


def variant(image: Image.Image, rng: random.Random) -> bytes:
    """A seeded crop, scale and JPEG quality of ``image``."""
    width, height = image.size
    crop_w = round(width * rng.uniform(*CROP_RANGE))
    crop_h = round(height * rng.uniform(*CROP_RANGE))
    left = rng.randint(0, width - crop_w)
    top = rng.randint(0, height - crop_h)
    scale = rng.uniform(*SCALE_RANGE)
    size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
    cropped = image.crop((left, top, left + crop_w, top + crop_h))
    buffer = io.BytesIO()
    cropped.resize(size, Image.Resampling.LANCZOS).save(
        buffer, "JPEG", quality=rng.randint(*QUALITY_RANGE)
    )
    return buffer.getvalue()


def distinct_variant(image: Image.Image, key: str, seen: set[tuple[int, int]]) -> tuple[bytes, int]:
    """The first seeded variant that is informative and whose hash pair is new; and its re-draws."""
    for attempt in range(MAX_ATTEMPTS):
        data = variant(image, random.Random(f"{SEED}-{key}-{attempt}"))
        hashes = hash_bytes(data)
        pair = (hashes.ahash, hashes.phash)
        if not hashes.low_information and pair not in seen:
            seen.add(pair)
            return data, attempt
    raise SystemExit(f"{key}: no distinct informative variant in {MAX_ATTEMPTS} attempts")


def load_photos(folder: Path) -> tuple[list[tuple[str, Image.Image]], int]:
    """The photos as RGB images, without the low-information ones; and how many were left out."""
    photos = []
    paths = sorted(folder.glob("*.jpg"))
    for path in paths:
        if hash_file(path).low_information:  # guard would skip it, and its variants too
            continue
        with Image.open(path) as opened:
            photos.append((path.stem, opened.convert("RGB")))
    if not photos:
        raise SystemExit(f"no informative *.jpg photos in {folder}")
    return photos, len(paths) - len(photos)


def build_corpus(photos: Path, count: int, folder: Path) -> Corpus:
    """Write ``count`` variants, round-robin over the photos (variant 0 of each, then 1, ...)."""
    sources, left_out = load_photos(photos)
    folder.mkdir()
    seen: set[tuple[int, int]] = set()
    files: list[Path] = []
    redraws = 0
    sizes: list[tuple[int, int]] = []
    for index in range(count):
        number = index // len(sources)
        stem, image = sources[index % len(sources)]
        data, attempts = distinct_variant(image, f"{stem}-{number}", seen)
        redraws += attempts
        path = folder / f"{stem}-v{number}.jpg"
        path.write_bytes(data)
        with Image.open(io.BytesIO(data)) as written:
            sizes.append(written.size)
        files.append(path)
    by_pixels = sorted(sizes, key=lambda s: s[0] * s[1])
    middle = by_pixels[len(by_pixels) // 2]
    return Corpus(
        folder=folder,
        files=files,
        sources=min(count, len(sources)),
        left_out=left_out,
        redraws=redraws,
        median_bytes=int(statistics.median(p.stat().st_size for p in files)),
        median_pixels=int(statistics.median(w * h for w, h in sizes)),
        median_size=f"{middle[0]}x{middle[1]}",
    )


# --- the runs --------------------------------------------------------------------------------


def guard_env() -> dict[str, str]:
    """This environment without the settings that would point guard away from the embedded Redis."""
    return {k: v for k, v in os.environ.items() if k not in ("GUARD_REDIS_URL", "GUARD_CONFIG")}


def read_summary(stream: IO[str], start: float) -> tuple[str, float]:
    """The JSON summary on ``stream``, and the seconds from ``start`` to its last line."""
    lines = []
    for line in stream:
        lines.append(line)
        if line.rstrip("\n") == "}":  # the summary is one indented JSON object
            break
    return "".join(lines), time.perf_counter() - start


def guard_load(work: Path, folder: Path, workers: int, kind: str) -> Run:
    argv = [sys.executable, "-m", "guard", "load", str(folder), "--list", LIST_NAME, "--json"]
    argv += ["--workers", str(workers)]
    env = {**guard_env(), "PYTHONUNBUFFERED": "1"}  # the summary arrives when it is printed
    env["GUARD_HOME"] = str(work / ".guard")  # a store of this run's own, not the user's
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        with subprocess.Popen(
            argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        ) as process:
            assert process.stdout is not None
            text, summary_s = read_summary(process.stdout, start)
            returncode = process.wait(timeout=RUN_TIMEOUT)
        seconds = time.perf_counter() - start
        if returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {returncode}: {errors.read()}")
    summary = json.loads(text)
    return Run(
        kind,
        workers,
        seconds,
        summary_s,
        summary["added"],
        summary["present"],
        len(summary["skipped"]),
    )


def load_in_fresh_dir(folder: Path, workers: int, reload: bool) -> list[Run]:
    """One load in a new working directory (empty embedded Redis), then optionally a re-load."""
    with tempfile.TemporaryDirectory(prefix="guard-load-") as name:
        work = Path(name)
        runs = [guard_load(work, folder, workers, "load")]
        if reload:
            runs.append(guard_load(work, folder, workers, "reload"))
    return runs


def empty_load(root: Path, workers: int) -> Run:
    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guard-load-") as name:
        return guard_load(Path(name), empty, workers, "empty")


def time_loads(corpus: Corpus, root: Path, many: int, reps: int) -> list[Run]:
    """Interleaved loads (1, N, 1, N, ...), an empty-folder load per repetition, one re-load."""
    runs: list[Run] = []
    for rep in range(reps):
        for workers in (1, many):
            last = rep == reps - 1 and workers == many
            runs += load_in_fresh_dir(corpus.folder, workers, reload=last)
        runs.append(empty_load(root, 1))
    return runs


def time_hashing(files: list[Path], reps: int) -> list[float]:
    """Seconds to hash every file in this process, on one thread, per repetition."""
    hash_file(files[0])  # warm up imports
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for path in files:
            hash_file(path)
        times.append(time.perf_counter() - start)
    return times


# --- the results -----------------------------------------------------------------------------


def row(
    measurement: str,
    runs: list[Run],
    files: int | None,
    base: Row | None,
    hashing: list[float] | None = None,
) -> Row:
    """A table row from loads (or, with ``hashing``, from in-process hashing times)."""
    times = hashing if hashing is not None else [r.seconds for r in runs]
    middle = statistics.median(times)
    summary = median([r.summary_s for r in runs])
    return Row(
        measurement=measurement,
        workers=runs[0].workers if runs else None,
        runs=len(times),
        median_s=middle,
        images_per_s=ratio(files, middle),
        speedup_vs_1=ratio(base.median_s, middle) if base else None,
        summary_s=summary,
        summary_images_per_s=ratio(files, summary),
        summary_speedup_vs_1=ratio(base.summary_s, summary) if base else None,
        all_s=[round(t, 3) for t in times],
    )


def rows(runs: list[Run], hashing: list[float], files: int, many: int) -> list[Row]:
    def select(kind: str, workers: int) -> list[Run]:
        return [r for r in runs if r.kind == kind and r.workers == workers]

    one = row("guard load, empty list", select("load", 1), files, None)
    one.speedup_vs_1 = one.summary_speedup_vs_1 = 1.0
    return [
        one,
        row("guard load, empty list", select("load", many), files, one),
        row("idempotent re-load (adds 0)", select("reload", many), files, one),
        row("guard load of an empty folder (fixed cost)", select("empty", 1), None, None),
        row("hash_file in-process, 1 thread (hashing only)", [], files, None, hashing),
    ]


def breakdown(table: list[Row], many: int) -> dict[str, Any]:
    """The 1-worker load split into its parts; the speed-up net of the fixed cost."""
    one, n, empty, hashing = table[0], table[1], table[3], table[4].median_s
    assert one.summary_s is not None and n.summary_s is not None and empty.summary_s is not None
    start = empty.summary_s
    net_1, net_n = one.summary_s - start, n.summary_s - start
    return {
        "workers_n": many,
        "load_1_s": one.median_s,
        "hashing_s": hashing,
        "start_s": start,  # the empty-folder load to its summary: interpreter, imports, Redis start
        "stop_s": one.median_s - one.summary_s,  # summary to exit: stopping the embedded Redis
        "rest_s": one.summary_s - hashing - start,
        "net_1_s": net_1,
        "net_n_s": net_n,
        # None when the N-worker load is within noise of the empty-folder load
        "speedup_net_of_fixed": net_1 / net_n if net_n > MIN_NET_S else None,
    }


def checks(runs: list[Run], files: int) -> list[Check]:
    loads = [r for r in runs if r.kind == "load"]
    reloads = [r for r in runs if r.kind == "reload"]
    return [
        Check(
            f"every load ({len(loads)}) added {files}, with 0 present and 0 skipped",
            all((r.added, r.present, r.skipped) == (files, 0, 0) for r in loads),
        ),
        Check(
            f"the re-load added 0, with {files} present",
            all((r.added, r.present) == (0, files) for r in reloads) and bool(reloads),
        ),
    ]


def machine() -> dict[str, Any]:
    return describe(cpu_count=True) | {
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
    }


def corpus_json(corpus: Corpus, photos: Path) -> dict[str, Any]:
    return {
        "photos": str(photos),
        "files": len(corpus.files),
        "source_photos": corpus.sources,
        "low_information_photos_left_out": corpus.left_out,
        "redraws": corpus.redraws,
        "median_bytes": corpus.median_bytes,
        "median_pixels": corpus.median_pixels,
        "median_size": corpus.median_size,
        "variants": (
            f"crop {CROP_RANGE[0]:.0%}-{CROP_RANGE[1]:.0%} of each side at a seeded position, "
            f"scale {SCALE_RANGE[0]:g}-{SCALE_RANGE[1]:g} (LANCZOS), "
            f"JPEG quality {QUALITY_RANGE[0]}-{QUALITY_RANGE[1]}"
        ),
    }


# --- output ----------------------------------------------------------------------------------


def _share(part: float, whole: float) -> str:
    return f"{part:.2f} s ({part / whole:.0%})"


def breakdown_text(b: dict[str, Any]) -> list[str]:
    load = b["load_1_s"]
    speedup = b["speedup_net_of_fixed"]
    return [
        (
            f"- the 1-worker load, {load:.2f} s = start {_share(b['start_s'], load)} (the "
            "empty-folder load to its summary) + hashing "
            f"{_share(b['hashing_s'], load)} (in-process figure) + the rest "
            f"{_share(b['rest_s'], load)} (walking the folder, a fresh process's hashing "
            f"overhead, building entries, writing to Redis) + embedded Redis stop "
            f"{_share(b['stop_s'], load)} (summary to exit)"
        ),
        (
            "- to the summary, without the empty-folder load's: 1 worker "
            f"{b['net_1_s']:.2f} s, {b['workers_n']} workers {b['net_n_s']:.2f} s, "
            + (
                f"{speedup:.2f}x as fast"
                if speedup is not None
                else "speed-up not measurable (within noise)"
            )
        ),
    ]


def markdown(document: dict[str, Any]) -> str:
    m, c = document["machine"], document["corpus"]
    lines = [
        "# guard load benchmark",
        "",
        machine_line(m),
        f"- Python {m['python']}, Pillow {m['pillow']} (libjpeg-turbo {m['libjpeg_turbo']})",
        (
            f"- corpus: {c['files']} JPEG files from {c['source_photos']} photos in "
            f"{c['photos']} ({c['variants']}; {c['redraws']} re-draw(s) for distinct hashes; "
            f"{c['low_information_photos_left_out']} low-information photo(s) left out)"
        ),
        (
            f"- median file {c['median_bytes'] / 1000:.0f} KB, median "
            f"{c['median_pixels'] / 1e6:.2f} MP (about {c['median_size']})"
        ),
        (
            f"- {document['repetitions']} repetition(s), interleaved 1, N, 1, N, ...; each load "
            "in a fresh working directory (empty embedded Redis); median seconds of the wall "
            "clock around the subprocess, and to its JSON summary (printed before the embedded "
            "Redis is stopped); x1 = speed-up over 1 worker"
        ),
        "",
        "| measurement | workers | runs | wall s | images/s | x1 | to summary s | images/s | x1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['measurement']} | {r['workers'] if r['workers'] is not None else '-'} | "
        f"{r['runs']} | {r['median_s']:.2f} | {number(r['images_per_s'], '.0f')} | "
        f"{number(r['speedup_vs_1'], '.2f')} | {number(r['summary_s'], '.2f')} | "
        f"{number(r['summary_images_per_s'], '.0f')} | "
        f"{number(r['summary_speedup_vs_1'], '.2f')} |"
        for r in document["rows"]
    ]
    lines += ["", *breakdown_text(document["breakdown"]), "", "## Checks", ""]
    lines += [f"- {c['text']}: **{'ok' if c['ok'] else 'FAILED'}**" for c in document["checks"]]
    lines += [
        "",
        f"(run took {document['elapsed_s']:.0f} s, corpus built in {document['corpus_s']:.0f} s)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = arguments(
        __doc__.splitlines()[0],
        photos="folder of source *.jpg photos",
        reps=(3, 1),
        quick="200 files and one repetition",
    )
    return parser.parse_args(argv)


def run(photos: Path, count: int, reps: int) -> dict[str, Any]:
    start = time.perf_counter()
    many = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as name:
        root = Path(name)
        corpus = build_corpus(photos, count, root / "corpus")
        corpus_s = time.perf_counter() - start
        hashing = time_hashing(corpus.files, reps)
        runs = time_loads(corpus, root, many, reps)
    files = len(corpus.files)
    table = rows(runs, hashing, files, many)
    return {
        "machine": machine(),
        "corpus": corpus_json(corpus, photos),
        "repetitions": reps,
        "workers_n": many,
        "rows": [asdict(r) for r in table],
        "breakdown": breakdown(table, many),
        "checks": [asdict(c) for c in checks(runs, files)],
        "runs": [asdict(r) for r in runs],
        "corpus_s": round(corpus_s, 1),
        "elapsed_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reps = repetitions(args)
    document = run(Path(args.photos), QUICK_FILES if args.quick else FULL_FILES, reps)
    print(json.dumps(document, indent=2) if args.json else markdown(document))
    return 0 if all(c["ok"] for c in document["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
