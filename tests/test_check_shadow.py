"""`guard check` says what a list in shadow mode, or under an enforce_ratio, would do.

In-process against the session's real Redis server, as tests/test_cli_lists.py runs the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import LOCAL_PHOTOS, data_file

from guard.cli import main

LISTED = LOCAL_PHOTOS[0]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


@pytest.fixture
def image(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """One photo, loaded into the lists `spam` and `ham` of the test's Redis."""
    target = tmp_path / "photo" / Path(LISTED).name
    target.parent.mkdir()
    shutil.copy(data_file(LISTED), target)
    for name in ("spam", "ham"):
        assert (
            cli(capsys, "load", str(target.parent), "--list", name, "--redis-url", redis_url)[0]
            == 0
        )
    return target


def config(tmp_path: Path, lists: str) -> str:
    path = tmp_path / "guard.yaml"
    path.write_text(f"lists: {lists}\n")
    return str(path)


@pytest.mark.parametrize(
    ("lists", "verdict", "actions", "code"),
    [
        ("{spam: {}, ham: {}}", "reject", {"spam": "reject", "ham": "reject"}, 1),
        ("{spam: {mode: shadow}, ham: {mode: shadow}}", "shadow-reject", None, 0),
        ("{spam: {mode: shadow}, ham: {}}", "reject", {"spam": "shadow-reject"}, 1),
        ("{spam: {enforce_ratio: 0}, ham: {mode: shadow}}", "shadow-reject", None, 0),
    ],
)
def test_check_says_what_each_list_would_do(
    image: Path,
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    lists: str,
    verdict: str,
    actions: dict[str, str] | None,
    code: int,
) -> None:
    cfg = config(tmp_path, lists)
    status, out = cli(
        capsys, "--config", cfg, "check", str(image), "--json", "--redis-url", redis_url
    )
    [report] = json.loads(out)
    assert (status, report["verdict"]) == (code, verdict)  # a shadow verdict fails no script
    by_list = {m["list"]: m for m in report["matches"]}
    assert set(by_list) == {"spam", "ham"}
    for name, match in by_list.items():
        expected = (actions or {}).get(name, "shadow-reject" if actions is None else "reject")
        assert match["action"] == expected
        assert match["mode"] in ("enforce", "shadow")


def test_check_prints_the_shadow_verdict_and_why(
    image: Path, tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, "{spam: {mode: shadow}, ham: {mode: enforce, enforce_ratio: 0}}")
    status, out = cli(capsys, "--config", cfg, "check", str(image), "--redis-url", redis_url)
    assert status == 0
    first, *matches = out.splitlines()
    assert first.startswith("SHADOW-REJECT ")
    assert any(
        line.strip().startswith("spam:") and line.endswith("-> SHADOW-REJECT (mode shadow)")
        for line in matches
    )
    assert any(
        line.strip().startswith("ham:") and line.endswith("-> SHADOW-REJECT (enforce_ratio 0)")
        for line in matches
    )
    cfg = config(tmp_path, "{spam: {}, ham: {}}")
    _, out = cli(capsys, "--config", cfg, "check", str(image), "--redis-url", redis_url)
    assert out.startswith("REJECT ") and "->" not in out  # enforced lists print as before
