"""The CLI's first-run traps, one test each (each failed before its fix)."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LOCAL_PHOTOS, data_file, photo_folder
from PIL import Image

import guard.cli
from guard.cli import main

#: Slow (the CLI in child processes, on folders, stdin and pipes): not in the fast path.
pytestmark = pytest.mark.slow


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spam(tmp_path: Path) -> Path:
    return photo_folder(tmp_path / "spam", 4)


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    path = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), "white").save(path)
    return path


def test_check_a_batch_with_a_flat_image_once_the_mirror_is_loaded(
    spam: Path, flat: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "load", str(spam), "--redis-url", redis_url)[0] == 0
    # The first lookups load the list's mirror in the background; the flat image comes after.
    photos = [str(data_file(name)) for name in LOCAL_PHOTOS]
    files = [*photos, str(flat), *photos, str(flat)]
    code, out, err = cli(capsys, "check", "--json", "--redis-url", redis_url, *files)
    assert code == 1, err  # the listed photos are rejected
    reports = json.loads(out)
    assert [r["file"] for r in reports] == files
    for report in (reports[len(photos)], reports[-1]):
        assert report["verdict"] == "allow"
        assert report["note"] == "low-information image: not checked"


def test_a_value_error_from_a_bug_is_an_internal_error_not_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, flat: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(path: str, limits: object) -> object:
        raise ValueError("attempt to get argmin of an empty sequence")

    monkeypatch.setattr(guard.cli, "_hash_path", broken)
    code, _, err = cli(capsys, "hash", str(flat))
    assert code == 70
    assert err.startswith("guard: internal error: ValueError: attempt to get argmin")


def test_a_bad_list_name_is_still_a_usage_error(
    spam: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "load", str(spam), "--list", "bad name!")
    assert code == 2
    assert err.startswith("guard: invalid list name 'bad name!'")


def test_export_into_a_pipe_closed_early_ends_quietly_with_141(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # More than a pipe's buffer of lines, so that export is still printing when head leaves.
    rng = random.Random(17)
    lines = []
    while len(lines) < 4000:
        ahash, phash = rng.getrandbits(64), rng.getrandbits(64)
        if 16 < ahash.bit_count() < 48:
            lines.append(f"{ahash:016x} {phash:016x} entry-{len(lines)}\n")
    listed = tmp_path / "many.txt"
    listed.write_text("".join(lines))
    assert cli(capsys, "import", str(listed), "--list", "many", "--redis-url", redis_url)[0] == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "guard", "export", "--list", "many", "--redis-url", redis_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # what `head -1` does
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, err
    assert len(first.split()) == 3
    assert err == ""


@pytest.mark.parametrize("path", [""])
def test_load_refuses_an_empty_path_instead_of_loading_the_current_folder(
    path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spam: Path
) -> None:
    monkeypatch.chdir(spam)  # were "" the current folder, this would load (and exit 0)
    code, out, err = cli(capsys, "load", path)
    assert (code, out) == (2, "")
    assert err.startswith("guard: load: PATH is empty: name a folder of images")


def test_load_accepts_a_single_image_file(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = data_file(LOCAL_PHOTOS[0])
    code, out, err = cli(capsys, "load", str(image), "--json", "--redis-url", redis_url)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["list"], summary["added"], summary["skipped"]) == (image.stem, 1, [])
    code, out, _ = cli(capsys, "check", "--json", "--redis-url", redis_url, str(image))
    assert code == 1 and json.loads(out)[0]["matches"][0]["source"] == image.name


def test_load_refuses_a_binary_file_that_is_no_image_naming_what_to_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(128, 256)) * 4)
    code, out, err = cli(capsys, "load", str(blob))
    assert (code, out) == (2, "")
    assert err.startswith(f"guard: {blob} is neither an image nor a list file")
    assert "load a folder of images, an image, or `guard export` output" in err


@pytest.mark.parametrize("workers", ["0", "-3", "many"])
def test_load_refuses_workers_below_one_naming_the_option_and_the_range(
    workers: str, spam: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["load", str(spam), "--workers", workers])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "argument --workers: must be" in err and "1 or more" in err


class Terminal(io.StringIO):
    """stdout and stderr of a terminal: one screen, where both streams land in order."""

    def isatty(self) -> bool:
        return True


def test_the_progress_line_is_ended_before_the_summary(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i, name in enumerate(LOCAL_PHOTOS + LOCAL_PHOTOS[:2]):
        shutil.copy(data_file(name), folder / f"{i}-{Path(name).name}")
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    assert main(["load", str(folder), "--workers", "1", "--redis-url", redis_url]) == 0
    text = screen.getvalue()
    assert text.endswith("\rhashing 9/9\nmany: added 7, already present 2, skipped 0\n"), text


def test_global_options_are_accepted_before_the_command_and_after_it(
    spam: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "--json", "--redis-url", redis_url, "load", str(spam))
    assert code == 0, err
    assert json.loads(out)["added"] == 4
    for argv in (
        ["--json", "--redis-url", redis_url, "lists"],
        ["--json", "lists", "--redis-url", redis_url],
        ["lists", "--json", "--redis-url", redis_url],
        ["--redis-url", "redis://127.0.0.1:1", "lists", "--json", "--redis-url", redis_url],
    ):
        code, out, err = cli(capsys, *argv)
        assert code == 0, (argv, err)
        assert [info["list"] for info in json.loads(out)] == ["spam"], argv
    config = tmp_path / "bad.yaml"
    config.write_text("nonsense: [\n")
    data = tmp_path / "data"
    for argv in (["--config", str(config), "lists"], ["lists", "--config", str(config)]):
        code, _, err = cli(capsys, *argv)
        assert code == 3 and str(config) in err, (argv, err)
    code, out, err = cli(capsys, "--data-dir", str(data), "lists")
    assert (code, out) == (0, "no lists\n"), err
    assert data.is_dir()


def test_check_takes_a_folder_recursively_and_an_image_on_stdin(
    spam: Path, flat: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "load", str(spam), "--redis-url", redis_url)[0] == 0
    folder = tmp_path / "uploads"
    (folder / "deeper").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    listed = data_file(LOCAL_PHOTOS[0])
    shutil.copy(listed, folder / "deeper" / "a.jpg")
    shutil.copy(data_file(LOCAL_PHOTOS[-1]), folder / "b.jpg")
    shutil.copy(listed, folder / ".hidden" / "c.jpg")
    shutil.copy(listed, folder / ".d.jpg")
    code, out, err = cli(capsys, "check", "--json", "--redis-url", redis_url, str(folder))
    assert code == 1, err
    verdicts = [(r["file"], r["verdict"]) for r in json.loads(out)]
    assert verdicts == [(str(folder / "b.jpg"), "allow"), (str(folder / "deeper/a.jpg"), "reject")]

    for image, expected in ((listed, 1), (data_file(LOCAL_PHOTOS[-1]), 0)):
        completed = subprocess.run(
            [sys.executable, "-m", "guard", "check", "--json", "--redis-url", redis_url, "-"],
            input=image.read_bytes(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == expected, completed.stderr
        [report] = json.loads(completed.stdout)
        assert report["file"] == "-"
        assert report["verdict"] == ("reject" if expected else "allow")

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "check", "--redis-url", redis_url, str(empty))
    assert code == 2 and "holds no file to check" in err
    code, _, err = cli(capsys, "check", "--redis-url", redis_url, "-", "-")
    assert code == 2 and "may be given once" in err
