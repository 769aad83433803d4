"""`guard load` on a hostile folder (hostile case H39) and hostile or mistaken config (H40).

The CLI runs in-process (``guard.cli.main``) against the session's real Redis server, except for
Ctrl-C, which interrupts a real ``python -m guard load`` process group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from asgi_driver import Recorder
from conftest import LOCAL_PHOTOS, data_file, encode, photo, run
from PIL import Image
from raw_records import raw_records

import guard.store
from guard import hash_file
from guard.bands import BandLayout, band_key, list_key
from guard.cli import main
from guard.config import MAX_CONFIG_BYTES, load_config, resolve_redis_url
from guard.errors import ConfigError, ImageError
from guard.hashing import hash_bytes, to_signed
from guard.middleware import GuardMiddleware
from guard.store import Store

#: Slow (the CLI in child processes, interrupted loads): not in the fast path.
pytestmark = pytest.mark.slow

GiB = 1024**3


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def whole_entries(redis_url: str, name: str) -> set[int]:
    """The list's aHashes, after checking that each is whole: in every band set it belongs to,
    no band set holds anything else, and the meta count agrees."""
    client = redis.Redis.from_url(redis_url)
    try:
        meta = client.hgetall(list_key(name, "meta"))
        layout = BandLayout(tuple(tuple(band) for band in json.loads(meta[b"layout"])))
        records = raw_records(client, name)
        hashes = {ahash for ahash, _ in records}
        for ahash in hashes:
            for band, value in enumerate(layout.values(ahash)):
                assert client.sismember(band_key(name, band, value), to_signed(ahash))
        members = sum(
            client.scard(key) for key in client.scan_iter(match=list_key(name, "b*"), count=1000)
        )
        assert members == len(layout.bands) * len(hashes)
        assert int(meta[b"entries"]) == len(records)
        return hashes
    finally:
        client.close()


# --- H39: a hostile blocklist folder ------------------------------------------------------------


def _exif_rotated(name: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = photo(name).transpose(Image.Transpose.ROTATE_90)
    return encode(turned, "JPEG", quality=92, exif=exif)


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A blocklist folder with every kind of trouble, and a photo outside it that links reach."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(data_file(LOCAL_PHOTOS[3]).read_bytes())
    folder = tmp_path / "spam"
    (folder / "sub").mkdir(parents=True)
    for name in LOCAL_PHOTOS[:3]:
        (folder / Path(name).name).write_bytes(data_file(name).read_bytes())
    first = Path(LOCAL_PHOTOS[0]).name
    (folder / "copy-of-first.jpg").write_bytes(data_file(LOCAL_PHOTOS[0]).read_bytes())
    (folder / "sub" / "link-in.jpg").symlink_to(Path("..") / first)
    (folder / "link-out.jpg").symlink_to(outside / "secret.jpg")
    (folder / "outdir").symlink_to(outside, target_is_directory=True)
    truncated = data_file(LOCAL_PHOTOS[1]).read_bytes()
    (folder / "corrupt.jpg").write_bytes(truncated[: len(truncated) // 2])
    (folder / "notes.txt").write_text("just notes\n")
    (folder / "fake.png").write_text("<html>not a png</html>")
    with (folder / "huge.png").open("wb") as sparse:
        sparse.write(b"\x89PNG\r\n\x1a\n")
        sparse.truncate(3 * GiB)  # sparse: no disk, but 3 GiB to anything that reads it all
    (folder / "rotated.jpg").write_bytes(_exif_rotated(LOCAL_PHOTOS[4]))
    frames = [photo(name).resize((320, 240)) for name in LOCAL_PHOTOS[5:7]]
    (folder / "anim.gif").write_bytes(
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    )
    Image.new("RGB", (200, 150), (30, 120, 200)).save(folder / "flat.png")
    (folder / ".hidden.jpg").write_bytes(data_file(LOCAL_PHOTOS[3]).read_bytes())
    return folder


REFUSED = {
    "corrupt.jpg": "(Pillow's message, see _decode_error)",
    "fake.png": "not an image: the bytes match no known image format",
    "flat.png": "low-information image (flat, nearly flat or tiny): it would match any such image",
    "huge.png": f"file is {3 * GiB} bytes, over the limit max_file_bytes=100000000",
    "link-out.jpg": "symlink leading out of the folder",
    "notes.txt": "not an image: the bytes match no known image format",
}


def _decode_error(path: Path) -> str:
    """Pillow's own words for a truncated file (the byte count in them varies by version)."""
    with pytest.raises(ImageError) as raised:
        hash_file(path)
    reason = str(raised.value)
    assert reason.startswith("cannot decode JPEG image: image file is truncated")
    return reason


def test_H39_hostile_folder_report_exit_status_and_contents(
    hostile: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        code, out, err = cli(
            capsys, "load", str(hostile), "--workers", "1", "--redis-url", redis_url
        )
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1
    lines = out.splitlines()
    # 3 photos + the rotated one + 2 animation frames; the copy and the inner link are present.
    assert lines[0] == "spam: added 6, already present 2, skipped 6"
    refused = dict(REFUSED, **{"corrupt.jpg": _decode_error(hostile / "corrupt.jpg")})
    assert sorted(lines[1:]) == [f"  skipped {file}: {reason}" for file, reason in refused.items()]
    assert err == "guard: 6 file(s) refused; the rest was added (--skip-bad: exit 0)\n"
    assert elapsed < 30 and peak < 200 * 1024**2, (elapsed, peak)  # the 3 GiB file was not read
    hashes = whole_entries(redis_url, "spam")
    assert len(hashes) == 6
    secret = hash_file(hostile.parent / "outside" / "secret.jpg")
    upright = hash_bytes(encode(photo(LOCAL_PHOTOS[4]), "JPEG", quality=92))

    async def look() -> tuple[list[Any], list[Any]]:
        async with Store.from_url(redis_url) as store:
            return (
                await store.lookup("spam", secret.frames, radius=8),
                await store.lookup("spam", upright.frames, radius=2),
            )

    outside, rotated = run(look())
    assert outside == []  # neither the link nor the linked folder was followed out
    assert [m.entry.source for m in rotated] == ["rotated.jpg"]  # EXIF applied on load too

    code, out, err = cli(
        capsys,
        "load",
        str(hostile),
        "--json",
        "--skip-bad",
        "--workers",
        "1",
        "--redis-url",
        redis_url,
    )
    summary = json.loads(out)
    assert (code, summary["added"], summary["present"], err) == (0, 0, 8, "")
    assert {item["file"]: item["reason"] for item in summary["skipped"]} == refused


def test_H39_the_file_size_cap_is_a_setting(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "spam"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(data_file(LOCAL_PHOTOS[0]).read_bytes())
    size = (folder / "photo.jpg").stat().st_size
    config = tmp_path / "guard.yaml"
    config.write_text(f"limits: {{max_file_bytes: {size - 1}}}\n")
    code, out, _ = cli(
        capsys, "load", str(folder), "--config", str(config), "--redis-url", redis_url
    )
    assert code == 1
    assert out.splitlines()[1] == (
        f"  skipped photo.jpg: file is {size} bytes, over the limit max_file_bytes={size - 1}"
    )


def test_H39_interrupted_in_the_write_phase_leaves_whole_entries_and_a_rerun_completes(
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries go to Redis in atomic batches (Lua); Ctrl-C between two leaves the earlier batches
    whole and nothing of the rest. The same load again adds what is missing."""
    folder = _noise_folder(tmp_path, 30, size=(64, 48))
    monkeypatch.setattr(guard.store.writes, "WRITE_BATCH", 10)
    real_init = Store.__init__

    def interrupting_init(self: Store, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        add, calls = self._add, []

        async def add_then_interrupt(**kw: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return await add(**kw)

        self._add = add_then_interrupt  # type: ignore[method-assign]

    monkeypatch.setattr(Store, "__init__", interrupting_init)
    code, out, err = cli(capsys, "load", str(folder), "--workers", "1", "--redis-url", redis_url)
    assert (code, out, err) == (130, "", "guard: interrupted\n")
    assert len(whole_entries(redis_url, "noise")) == 20
    monkeypatch.setattr(Store, "__init__", real_init)
    code, out, _ = cli(capsys, "load", str(folder), "--workers", "1", "--redis-url", redis_url)
    assert (code, out) == (0, "noise: added 10, already present 20, skipped 0\n")
    assert len(whole_entries(redis_url, "noise")) == 30


def _noise_folder(tmp_path: Path, count: int, size: tuple[int, int]) -> Path:
    """``count`` distinct informative images: random 8x6 blocks scaled up."""
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(39)
    for i in range(count):
        cells = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(cells, "RGB").resize(size, Image.Resampling.NEAREST)
        image.save(folder / f"{i:04}.png")
    return folder


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


@pytest.fixture
def load_process(tmp_path: Path, redis_url: str) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    # Big enough that two workers need about two seconds (4.3 s on one thread here): at 640x480
    # an idle CI machine finished the load before the interrupt arrived.
    folder = _noise_folder(tmp_path, 400, size=(1280, 960))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # A test run started in the background (`cmd &`) ignores SIGINT, and a child inherits that:
    # Python then never installs its Ctrl-C handler. A handler (not "ignore") is reset to the
    # default at exec, so the load starts with Ctrl-C working.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guard",
            "load",
            str(folder),
            "--workers",
            "2",
            "--redis-url",
            redis_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    signal.signal(signal.SIGINT, previous)
    try:
        yield process, folder
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_H39_ctrl_c_halfway_exits_130_without_traceback_and_a_rerun_completes(
    load_process: tuple[subprocess.Popen[str], Path],
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to see the load's worker processes")
    process, folder = load_process
    deadline = time.monotonic() + 60
    while not _children(process.pid):  # the hashing pool has started
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    workers = _children(process.pid)
    time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert err.splitlines()[-1] == "guard: interrupted" and "Traceback" not in err, err
    for worker in workers:
        assert not Path(f"/proc/{worker}").exists() or "Z" in _state(worker)
    client = redis.Redis.from_url(redis_url)
    created = client.exists(list_key("noise", "meta"))
    client.close()
    if created:
        whole_entries(redis_url, "noise")  # interrupted while writing: whole entries only
    code, out, _ = cli(capsys, "load", str(folder), "--json", "--redis-url", redis_url)
    summary = json.loads(out)
    assert (code, summary["added"] + summary["present"], summary["skipped"]) == (0, 400, [])
    assert len(whole_entries(redis_url, "noise")) == 400


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "gone"


# --- H40: hostile or mistaken config ------------------------------------------------------------

PROBES = (
    "a lookup would probe {} Redis keys per query, over 10000 (use more bands or a smaller radius)"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "!!python/object/new:os.system [touch {marker}]",
            "invalid YAML at line 1, column 1: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/new:os.system'",
            id="H40-python-object-tag",
        ),
        pytest.param(
            "defaults: {radius: 8}",
            "defaults.radius: unknown key (allowed: bands, confirm_radius, dihedral, "
            "enforce_ratio, fail_open, flag_radius, mode, reject_radius, required)",
            id="H40-unknown-key",
        ),
        pytest.param(
            "defaults: {reject_radius: 8, flag_radius: 4}",
            "defaults.flag_radius: must be at least reject_radius (8), got 4",
            id="H40-flag-below-reject",
        ),
        pytest.param(
            "defaults: {reject_radius: 13, flag_radius: 13}",
            "defaults.reject_radius: must be an integer from 0 to 12, got 13",
            id="H40-radius-over-12",
        ),
        pytest.param(
            "defaults: {bands: 1}",
            "defaults.flag_radius: must be at most 2 with bands=1, got 12: "
            + PROBES.format(4211954943769),
            id="H40-radius-beyond-one-band",
        ),
        pytest.param(
            "lists: {spam: {bands: 2, flag_radius: 8}}",
            "lists.spam.flag_radius: must be at most 6 with bands=2, got 8: "
            + PROBES.format(46938),
            id="H40-radius-beyond-two-bands",
        ),
        # A float where an integer goes; ImageLimits' own check, named under limits.
        pytest.param(
            "defaults: {reject_radius: 8.0}",
            "defaults.reject_radius: must be an integer from 0 to 12, got 8.0",
            id="H40-float-radius",
        ),
        pytest.param(
            "limits: {max_frames: 0}",
            "limits.max_frames: must be at least 1, got 0",
            id="H40-no-frames",
        ),
        pytest.param(
            "redis: {url: ''}",
            "redis.url: must be null or a URL starting redis://, rediss://, unix://, "
            'redis+cluster:// or rediss+cluster://, got ""',
            id="H40-empty-redis-url",
        ),
    ],
)
def test_hostile_config_stops_the_cli_with_one_line_naming_the_key(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status 3, as documented for config and store failures (cli.py, README)."""
    marker = tmp_path / "pwned"
    config = tmp_path / "guard.yaml"
    config.write_text(text.replace("{marker}", str(marker)))
    code, out, err = cli(capsys, "lists", "--config", str(config), "--redis-url", "unix:///nowhere")
    assert (code, out, err) == (3, "", f"guard: {config}: {message}\n")
    assert not marker.exists()
    with pytest.raises(ConfigError) as raised:
        GuardMiddleware(Recorder(), config=config)  # the app does not start half-configured
    assert str(raised.value) == f"{config}: {message}"


def test_H40_a_1_gib_config_is_refused_before_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "guard.yaml"
    with config.open("wb") as sparse:
        sparse.write(b"defaults: {}\n#")
        sparse.truncate(GiB)
    message = f"the config file is {GiB} bytes, over the limit of {MAX_CONFIG_BYTES} bytes"
    tracemalloc.start()
    started = time.perf_counter()
    try:
        code, out, err = cli(capsys, "lists", "--config", str(config), "--redis-url", "unix:///x")
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (code, out, err) == (3, "", f"guard: {config}: {message}\n")
    assert elapsed < 0.5 and peak < 5 * 1024**2, (elapsed, peak)
    config.write_bytes(b"defaults: {}\n#" + b"x" * (MAX_CONFIG_BYTES - 14))  # exactly at the cap
    assert load_config(config).defaults.reject_radius == 8


def test_H40_no_redis_url_means_the_embedded_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documented default (config/guard.yaml, README): no URL anywhere is the embedded Redis at
    redis.embedded_path, not an error."""
    monkeypatch.delenv("GUARD_REDIS_URL", raising=False)
    config = tmp_path / "guard.yaml"
    config.write_text("redis: {embedded_path: /var/lib/guard/redis.db}\n")
    loaded = load_config(config)
    assert resolve_redis_url(loaded) is None
    assert loaded.redis.embedded_path == "/var/lib/guard/redis.db"
