"""docs/frameworks.md shows the examples as they are: every Python snippet is an excerpt of an
example file (which test_e2e.py runs), and its YAML block is the config the tests serve them
with."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from frameworks.conftest import GUIDE, guide_config
from guard.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [
    ROOT / "examples" / "django_app" / "asgi.py",
    ROOT / "examples" / "django_app" / "views.py",
    ROOT / "examples" / "fastapi_app.py",
    ROOT / "examples" / "starlette_app.py",
    ROOT / "examples" / "litestar_app.py",
    ROOT / "examples" / "quart_app.py",
]


def test_every_python_snippet_is_an_excerpt_of_an_example() -> None:
    sources = [path.read_text() for path in EXAMPLES]
    snippets = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(snippets) >= 10
    for snippet in snippets:
        assert any(snippet in source for source in sources), f"not in any example:\n{snippet}"


def test_the_example_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "guard.yaml"
    path.write_text(guide_config())
    config = load_config(path)
    assert [route.path for route in config.routes] == ["/upload", "/upload-bytes", "/raw", "/json"]
    assert yaml.safe_load(guide_config())["routes"][3]["json_fields"] == ["image"]
