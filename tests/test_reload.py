"""Hot reload: a changed config file applies to the next request, a bad one is refused and the
running config stays, SIGHUP reloads at once."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from asgi_driver import Recorder, call, multipart
from conftest import run
from test_middleware import BLOCKED, jpeg, loaded  # noqa: F401

from guard.middleware import GuardMiddleware
from guard.store import Store

pytestmark = pytest.mark.every_redis


def write_config(
    path: Path, mode: str = "enforce", *, extra: str = "", reload: bool = True
) -> None:
    path.write_text(
        f"""
lists:
  spam:
    mode: {mode}
routes:
  - path: /upload
    lists: [spam]
operations:
  events: false
  reload: {str(reload).lower()}
{extra}
""",
        encoding="utf-8",
    )


def bump_mtime(path: Path, seconds: int = 5) -> None:
    """Make the change visible whatever the file system's timestamp resolution."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 1_000_000_000))


def make_guard(config_path: Path, redis_url: str) -> tuple[GuardMiddleware, Recorder]:
    app = Recorder()
    guard = GuardMiddleware(app, config=config_path, store=Store.from_url(redis_url))
    assert guard.reloader is not None
    now = [0.0]
    guard.reloader._clock = lambda: now[0]  # type: ignore[method-assign]
    guard.reloader._next_poll = 0.0
    guard._test_clock = now  # type: ignore[attr-defined]
    return guard, app


def tick(guard: GuardMiddleware, seconds: float = 1.0) -> None:
    guard._test_clock[0] += seconds  # type: ignore[attr-defined]


def upload(guard: GuardMiddleware) -> Any:
    return run(call(guard, multipart(("b.jpg", jpeg(BLOCKED)))))


def test_a_changed_file_applies_to_the_next_request(
    loaded: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "guard.yaml"
    write_config(path, "enforce")
    guard, app = make_guard(path, loaded)
    assert upload(guard).status == 403
    write_config(path, "shadow")
    bump_mtime(path)
    # Within the second since the last look the file is not read again...
    tick(guard, 0.5)
    assert upload(guard).status == 403
    # ...after it, it is: the listed image now passes as a shadow-reject.
    tick(guard, 0.6)
    with caplog.at_level(logging.INFO, logger="guard"):
        result = upload(guard)
    assert result.status == 200 and app.states[-1].action == "shadow-reject"
    assert guard.config.policy("spam").mode == "shadow"
    assert guard.supervisor.config is guard.config
    assert guard.reloader is not None and guard.reloader.applied == 1
    assert any("config reloaded" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("lists: [not, a, mapping]\n", "lists: must be a mapping"),
        ("routes:\n  - path: /upload\n    lists: [spam]\n  bad indent\n", "invalid YAML"),
        ("defaults:\n  reject_radius: 40\n", "defaults.reject_radius"),
        ("redis:\n  socket_timeout: 2.0\nroutes: []\n", "the redis section changed"),
        ("operations:\n  refusal_page: missing.html\n", "operations.refusal_page"),
    ],
)
def test_a_bad_new_file_is_refused_and_the_running_config_stays(
    loaded: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: str,
    reason: str,
) -> None:
    path = tmp_path / "guard.yaml"
    write_config(path, "enforce")
    guard, _ = make_guard(path, loaded)
    before = guard.config
    path.write_text(content, encoding="utf-8")
    bump_mtime(path)
    tick(guard)
    with caplog.at_level(logging.ERROR, logger="guard"):
        assert upload(guard).status == 403  # still enforced
    assert guard.config is before
    [error] = [r for r in caplog.records if "config not reloaded" in r.getMessage()]
    assert error.levelno == logging.ERROR and reason in error.getMessage()
    # The same bad file is not read again on every request...
    caplog.clear()
    tick(guard)
    with caplog.at_level(logging.ERROR, logger="guard"):
        upload(guard)
    assert not [r for r in caplog.records if "config not reloaded" in r.getMessage()]
    # ...and a fixed one applies.
    write_config(path, "shadow")
    bump_mtime(path, 10)
    tick(guard)
    assert upload(guard).status == 200
    assert guard.reloader is not None and (guard.reloader.refused, guard.reloader.applied) == (1, 1)


def test_a_deleted_file_keeps_the_running_config(loaded: str, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "guard.yaml"
    write_config(path)
    guard, _ = make_guard(path, loaded)
    path.unlink()
    tick(guard)
    assert upload(guard).status == 403
    assert guard.reloader is not None and guard.reloader.refused == 1


def test_reload_off_in_the_new_file_stops_watching(loaded: str, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "guard.yaml"
    write_config(path)
    guard, _ = make_guard(path, loaded)
    write_config(path, "shadow", reload=False)
    bump_mtime(path)
    tick(guard)
    assert upload(guard).status == 200  # the new file applied...
    assert guard.reloader is None  # ...and said to stop watching
    write_config(path, "enforce")
    bump_mtime(path, 10)
    assert upload(guard).status == 200


def test_a_config_object_is_not_watched(loaded: str) -> None:  # noqa: F811
    from test_middleware import make_config

    assert GuardMiddleware(Recorder(), config=make_config()).reloader is None


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_reloads_at_once_and_is_given_back(loaded: str, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "guard.yaml"
    write_config(path, "enforce")
    previous = signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        guard, _ = make_guard(path, loaded)

        async def scenario() -> tuple[int, str, int]:
            await guard.startup()
            before = (await call(guard, multipart(("b.jpg", jpeg(BLOCKED))))).status
            write_config(path, "shadow")
            # The test's clock stands still: no poll looks at the file; only the signal can.
            assert guard.reloader is not None
            # Installed by start-up (else the signal below would end the test run).
            assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL
            os.kill(os.getpid(), signal.SIGHUP)
            with anyio.fail_after(5):
                while guard.reloader.applied == 0:
                    await anyio.sleep(0.01)
            upload_status = (await call(guard, multipart(("b.jpg", jpeg(BLOCKED))))).status
            mode = guard.config.policy("spam").mode
            await guard.aclose()
            return before, mode, upload_status

        before, mode, after = anyio.run(scenario)
        assert (before, mode, after) == (403, "shadow", 200)
        # Given back at shutdown: the default handler again.
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sighup_taken_by_someone_else_is_left_alone(loaded: str, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "guard.yaml"
    write_config(path)
    seen: list[int] = []
    previous = signal.signal(signal.SIGHUP, lambda number, frame: seen.append(number))
    try:
        guard, _ = make_guard(path, loaded)

        async def scenario() -> bool:
            assert guard.reloader is not None
            return guard.reloader.install_sighup()

        assert anyio.run(scenario) is False
        os.kill(os.getpid(), signal.SIGHUP)
        assert seen == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, previous)
