"""The distribution's name, its one version string, the public names, the files a
release carries."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import guard

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "asgi-imageguard"

# The public API: a name added to or dropped from guard.__all__ is a decision, made here too.
PUBLIC = [
    "HASH_VERSION",
    "AddResult",
    "Config",
    "ConfigError",
    "Decision",
    "Entry",
    "FormatNotAllowed",
    "FrameHash",
    "GuardError",
    "GuardMiddleware",
    "HttpSettings",
    "ImageError",
    "ImageHashes",
    "ImageLimits",
    "InvalidHash",
    "ListInfo",
    "ListPolicy",
    "LowInformationEntry",
    "Match",
    "NotAnImage",
    "Route",
    "StatusCodes",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TooManyFrames",
    "TooManyPixels",
    "UndecodableImage",
    "UnknownList",
    "Verdict",
    "decide",
    "from_hex",
    "from_signed",
    "hamming",
    "hash_bytes",
    "hash_file",
    "is_low_information",
    "load_config",
    "metrics_app",
    "permute",
    "review_app",
    "sniff_format",
    "to_hex",
    "to_signed",
]


def pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def test_the_distribution_is_named_asgi_imageguard_in_the_metadata() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert project["name"] == DISTRIBUTION
    metadata = importlib.metadata.metadata(DISTRIBUTION)
    assert metadata["Name"] == DISTRIBUTION
    # The import name stays guard, and so does the command.
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["guard"] == "guard.cli:main"


def test_extras_name_the_distribution_itself() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    extras = project["optional-dependencies"]
    # "guard[...]" would install another project from PyPI.
    assert not re.search(r"(?<![-\w])guard\[", repr(extras))
    assert f"{DISTRIBUTION}[embedded]" in extras["example"]
    assert any(requirement.startswith("matplotlib") for requirement in extras["chart"])
    assert any(requirement.startswith("pytest-cov") for requirement in extras["test"])


def test_one_version_string_the_metadata_the_module_and_the_command_agree() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    assert "version" not in project and project["dynamic"] == ["version"]
    setuptools = pyproject()["tool"]["setuptools"]  # type: ignore[index]
    assert setuptools["dynamic"]["version"] == {"attr": "guard.__version__"}
    source = (ROOT / "guard" / "__init__.py").read_text()
    assert len(re.findall(r'^__version__ = "[^"]+"$', source, re.M)) == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+", guard.__version__)
    installed = importlib.metadata.version(DISTRIBUTION)
    assert installed == guard.__version__, "reinstall: pip install -e '.[test]'"
    completed = subprocess.run(
        [sys.executable, "-m", "guard", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout == f"guard {guard.__version__}\n"


def test_the_wheel_carries_every_package_and_data_file_under_guard() -> None:
    """[tool.setuptools] lists its packages by hand: a new subpackage (or a Lua script, a
    py.typed) left out of it would be missing from a non-editable install only."""
    setuptools = pyproject()["tool"]["setuptools"]  # type: ignore[index]
    packages = set(setuptools["packages"])
    package_data: dict[str, list[str]] = setuptools.get("package-data", {})
    source = ROOT / "guard"
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in source.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= packages  # a data folder may be listed too (a namespace package)
    for package in packages:
        assert ROOT.joinpath(*package.split(".")).is_dir(), package
    for path in source.rglob("*"):
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        # The deepest package holding the file, and the file's path inside it.
        owner = max(
            (p for p in packages if path.is_relative_to(ROOT.joinpath(*p.split(".")))),
            key=len,
        )
        inside = path.relative_to(ROOT.joinpath(*owner.split(".")))
        patterns = package_data.get(owner, [])
        assert any(inside.match(pattern) for pattern in patterns), (str(path), owner, patterns)


def test_the_changelog_names_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in changelog
    assert f"## {guard.__version__} - " in changelog
    assert "keepachangelog.com" in changelog


def test_the_license_is_mit_and_the_metadata_says_so() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n\nCopyright (c) 2026 guard contributors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in license_text
    metadata = importlib.metadata.metadata(DISTRIBUTION)
    assert "MIT" in (metadata.get("License") or metadata.get("License-Expression") or "")


def test_all_is_pinned_sorted_and_every_name_imports() -> None:
    assert guard.__all__ == PUBLIC
    assert sorted(PUBLIC, key=lambda name: (not name.isupper(), name)) == PUBLIC
    assert len(set(PUBLIC)) == len(PUBLIC)
    fresh = importlib.import_module("guard")
    for name in PUBLIC:
        assert getattr(fresh, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from guard import *", namespace)  # every name of __all__, the lazy ones included
    assert set(PUBLIC) <= set(namespace)
