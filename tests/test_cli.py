"""`guard hash`: output shapes and exit statuses, in-process and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import data_file

from guard import from_hex, hash_file, to_hex
from guard.cli import main


def test_hash_json_lists_every_file_with_hex_hashes(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(data_file("seed/star.png")), str(data_file("seed/analog-cats/cat.jpg"))]
    assert main(["hash", "--json", *files]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    for result, path in zip(results, files, strict=True):
        expected = hash_file(path)
        assert result["ahash"] == to_hex(expected.ahash) and len(result["ahash"]) == 16
        assert from_hex(result["phash"]) == expected.phash
        assert result["low_information"] is False
        assert len(result["frames"]) == 1


def test_a_bad_file_gets_an_error_and_exit_status_1(
    capsys: pytest.CaptureFixture[str], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    missing = str(tmp_path / "nope.png")
    files = [
        str(data_file("hard/not-an-image.jpg")),
        str(data_file("seed/star.png")),
        str(data_file("hard/truncated.jpg")),
        missing,
    ]
    assert main(["hash", "--json", *files]) == 1
    results = json.loads(capsys.readouterr().out)
    assert results[0] == {
        "file": files[0],
        "error": "not an image: the bytes match no known image format",
    }
    assert "ahash" in results[1] and "error" not in results[1]
    assert results[2]["error"].startswith("cannot decode JPEG image")
    assert results[3] == {"file": missing, "error": "No such file or directory"}


def test_text_output_and_errors_go_to_the_right_streams(capsys: pytest.CaptureFixture[str]) -> None:
    star = str(data_file("seed/star.png"))
    bad = str(data_file("hard/not-an-image.jpg"))
    assert main(["hash", star, bad]) == 1
    out, err = capsys.readouterr()
    assert out.split() == [to_hex(hash_file(star).ahash), to_hex(hash_file(star).phash), star]
    assert err.strip() == f"{bad}: error: not an image: the bytes match no known image format"


def test_flat_images_are_marked_low_information(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(data_file("hard/flat-white.jpg"))]) == 0
    assert "(low information)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["hash"], ["nonsense"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        code = main(argv)
        raise SystemExit(code)
    assert raised.value.code == 2


def test_python_dash_m_guard_runs_without_a_traceback() -> None:
    bomb = str(data_file("hard/bomb-20000x20000.png"))
    completed = subprocess.run(
        [sys.executable, "-m", "guard", "hash", "--json", bomb],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert "max_image_pixels=50000000" in json.loads(completed.stdout)[0]["error"]
