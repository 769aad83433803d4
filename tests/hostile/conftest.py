"""Helpers for the hostile-input tests (reliability.md cases H01-H40).

``tests/hostile`` is a package (it has an ``__init__.py``) so that this file imports as
``hostile.conftest`` and does not shadow ``tests/conftest.py``, which every test module imports as
``conftest``. Use: ``from hostile.conftest import assert_clean, SpoolDir``; the fixtures below
(``no_temp_files``, and ``loaded`` re-exported from test_middleware) need no import.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asgi_driver import Result
from test_middleware import loaded  # noqa: F401  (a fixture: the real Redis with lists loaded)

#: A refusal body is a one-line JSON object; anything longer is probably leaking something.
MAX_REFUSAL_BYTES = 300
_LEAKS = ("Traceback", 'File "', "guard/", ".py", "site-packages", "python_multipart", "PIL")
#: An exception class name (ValueError, MultipartParseError, DecompressionBombWarning, ...).
_EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b")
_GUARD_ERRORS = ("GuardError", "BodyTooLarge", "MalformedBody", "BodyTimeout", "NotAnImage")


def assert_clean(result: Result) -> None:
    """The response is a short JSON refusal with an "error" key, and leaks nothing internal."""
    assert result.status is not None, "no response was sent"
    text = result.body.decode("utf-8", "replace")
    assert len(result.body) <= MAX_REFUSAL_BYTES, f"refusal body too long: {text[:200]!r}"
    for leak in _LEAKS:
        assert leak not in text, f"response leaks {leak!r}: {text!r}"
    assert not _EXCEPTION_NAME.search(text), f"response names an exception: {text!r}"
    for name in _GUARD_ERRORS:
        assert name not in text, f"response names an exception: {text!r}"
    payload = json.loads(result.body)
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str), text
    assert result.headers.get("content-type") == "application/json"


@dataclass(frozen=True)
class SpoolDir:
    """The folder every temporary file of the test goes to (``tempfile.tempdir``)."""

    path: Path

    def open_files(self) -> list[str]:
        """Files of this process open in the folder, deleted or not.

        On Linux ``tempfile.TemporaryFile`` uses O_TMPFILE: the file never has a name in the
        folder, so an empty folder proves nothing; an open descriptor pointing into it does.
        """
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(self.path) + os.sep):
                found.append(target)
        return found


@pytest.fixture
def no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SpoolDir]:
    """Temporary files go to a fresh folder; afterwards it must be empty and none left open."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to see open temporary files")
    folder = tmp_path / "spool"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    spool = SpoolDir(folder)
    yield spool
    assert list(folder.iterdir()) == [], "temporary files left behind"
    assert spool.open_files() == [], "temporary files left open"
