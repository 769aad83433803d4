"""One mirror per machine (guard.store.shared_mirrors), on a real Redis: a second process maps
the mirror the first published instead of reading the snapshot and building it; the mapped copy
answers exactly as a built one; changes are laid over it; and a file or directory that is not the
user's own and closed, or a damaged file, is never read (each process builds its own)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
from conftest import run
from test_changes import _entries as random_entries
from test_changes import _entry
from test_store_oracle import _flip, _frame

from guard.mirror import Mirror
from guard.store import MirrorSettings, Store
from guard.store import shared_mirrors as shared_module
from guard.store.records import keys
from guard.store.shared_mirrors import SharedMirrors
from guard.types import Entry

pytestmark = pytest.mark.every_redis


def _entries(seed: int, count: int) -> list[Entry]:
    return random_entries(random.Random(seed), count)


def _settings(directory: Path) -> MirrorSettings:
    return MirrorSettings(shared_directory=directory)


def test_a_second_worker_maps_the_published_mirror(redis_url: str, tmp_path: Path) -> None:
    listed = _entries(1, 2000)
    rng = random.Random(2)
    directory = tmp_path / "mirrors"

    async def body() -> None:
        settings = _settings(directory)
        async with (
            Store.from_url(redis_url, mirror=settings) as first,
            Store.from_url(redis_url, mirror=settings) as second,
        ):
            await first.add("spam", listed)
            built = await first.refresh_mirror("spam")
            assert built is not None and not built.base.ahashes.flags.writeable  # mapped too
            assert len(list(directory.glob("*.mirror"))) == 1
            # Without the snapshot, only the published file can give the second its mirror.
            redis.Redis.from_url(redis_url).delete(keys("spam").snap)
            mapped = await second.refresh_mirror("spam")
            assert mapped is not None and not mapped.base.ahashes.flags.writeable
            for entry in rng.sample(listed, 50):
                query = _frame(_flip(entry.ahash, rng, rng.randint(0, 6)))
                one = await first.lookup("spam", [query], radius=8, dihedral=True)
                other = await second.lookup("spam", [query], radius=8, dihedral=True)
                assert one == other and entry.source in [m.entry.source for m in other]
            # A change is laid over the mapped copy.
            new = _entry(rng, "new")
            await first.add("spam", [new])
            found = await second.lookup("spam", [_frame(new.ahash)], radius=0)
            assert [m.entry.source for m in found] == ["new"]
            assert second._mirrors["spam"].base is mapped.base

    run(body())


def test_a_mirror_is_shared_across_processes(redis_url: str, tmp_path: Path) -> None:
    """Another Python process (a server worker) opens the file this one published."""
    listed = _entries(3, 500)
    directory = tmp_path / "mirrors"

    async def body() -> None:
        async with Store.from_url(redis_url, mirror=_settings(directory)) as store:
            await store.add("spam", listed)
            assert await store.refresh_mirror("spam") is not None

    run(body())
    redis.Redis.from_url(redis_url).delete(keys("spam").snap)
    script = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from guard.store import MirrorSettings, Store

        async def main():
            settings = MirrorSettings(shared_directory=Path({str(directory)!r}))
            async with Store.from_url({redis_url!r}, mirror=settings) as store:
                mirror = await store.refresh_mirror("spam")
                print(len(mirror), mirror.base.ahashes.flags.writeable)

        asyncio.run(main())
        """
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(root)},
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["500", "False"]


def _published(tmp_path: Path) -> tuple[SharedMirrors, Mirror]:
    from guard.bands import default_layout
    from guard.mirror import snapshot_record

    records = b"".join(snapshot_record(e.ahash, e.phash) for e in _entries(4, 100))
    mirror = Mirror.from_snapshot(records, default_layout(4), 7, "abc")
    shared = SharedMirrors(tmp_path / "mirrors", lambda: "redis://x")
    shared.publish("spam", mirror)
    return shared, mirror


def test_the_file_gives_back_the_same_mirror(tmp_path: Path) -> None:
    shared, mirror = _published(tmp_path)
    opened = shared.open("spam", "abc", 7)
    assert opened is not None
    assert (opened.version, opened.incarnation, len(opened)) == (7, "abc", 100)
    assert (opened.ahashes == mirror.ahashes).all() and (opened.phashes == mirror.phashes).all()
    assert shared.open("spam", "abc", 8) is None  # another version: not published
    assert shared.open("spam", "other", 7) is None  # another incarnation


def test_damaged_or_foreign_files_are_not_read(tmp_path: Path) -> None:
    shared, _ = _published(tmp_path)
    path = shared.path("spam", "abc", 7)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert shared.open("spam", "abc", 7) is None
    path.write_bytes(b"not a mirror at all")
    assert shared.open("spam", "abc", 7) is None
    path.write_bytes(data)
    assert shared.open("spam", "abc", 7) is not None
    path.chmod(0o644)  # readable by others: could have been written by them
    assert shared.open("spam", "abc", 7) is None


def test_a_directory_open_to_others_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    shared = SharedMirrors(directory, lambda: "redis://x")
    from guard.bands import default_layout

    shared.publish("spam", Mirror.from_snapshot(b"", default_layout(4), 1, "abc"))
    assert list(directory.iterdir()) == []
    assert shared.open("spam", "abc", 1) is None


def test_older_files_of_a_list_are_removed_after_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, mirror = _published(tmp_path)
    old = shared.path("spam", "abc", 7)
    from guard.bands import default_layout

    newer = Mirror.from_snapshot(b"", default_layout(4), 8, "abc")
    shared.publish("spam", newer)
    assert old.exists()  # a process may be about to open it
    later = shared_module.time.time() + shared_module.KEEP_SECONDS + 1
    monkeypatch.setattr(shared_module.time, "time", lambda: later)
    shared.publish("spam", newer)
    assert not old.exists() and shared.path("spam", "abc", 8).exists()
    assert mirror.version == 7


def test_a_mirror_merged_with_its_changes_is_shared_too(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guard import mirror_patch

    monkeypatch.setattr(mirror_patch, "COMPACT_ENTRIES", 10)
    listed = _entries(5, 100)
    more = _entries(6, 20)
    directory = tmp_path / "mirrors"

    async def body() -> None:
        settings = _settings(directory)
        async with (
            Store.from_url(redis_url, mirror=settings) as operator,
            Store.from_url(redis_url, mirror=settings) as first,
            Store.from_url(redis_url, mirror=settings) as second,
        ):
            await operator.add("spam", listed)
            loaded = await first.refresh_mirror("spam")
            assert loaded is not None and await second.refresh_mirror("spam") is not None
            await operator.add("spam", more)  # past COMPACT_ENTRIES: merged into a new mirror
            for worker in (first, second):
                found = await worker.lookup("spam", [_frame(more[3].ahash)], radius=0)
                assert [m.entry.source for m in found] == [more[3].source]
            one, other = first._mirrors["spam"], second._mirrors["spam"]
            assert one.base is not loaded.base and len(one.added) == 0
            assert not one.base.ahashes.flags.writeable and not other.base.ahashes.flags.writeable
            version = await operator.version("spam")
            assert shared_path(directory, redis_url, version).exists()

    def shared_path(directory: Path, url: str, version: int) -> Path:
        files = sorted(directory.glob(f"*-{version}.mirror"))
        return files[0] if files else directory / "missing"

    run(body())


def test_another_guard_never_reads_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, _ = _published(tmp_path)
    assert shared.open("spam", "abc", 7) is not None
    monkeypatch.setattr(shared_module, "_code_digest", lambda: "another guard's mirror code")
    assert shared.open("spam", "abc", 7) is None


def test_files_nobody_opened_for_a_while_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, _ = _published(tmp_path)
    idle = shared.path("spam", "abc", 7)
    from guard.bands import default_layout

    other = Mirror.from_snapshot(b"", default_layout(4), 1, "xyz")
    later = shared_module.time.time() + shared_module.IDLE_SECONDS / 2
    monkeypatch.setattr(shared_module.time, "time", lambda: later)
    shared.publish("ham", other)
    assert idle.exists()  # not idle long enough
    os.utime(idle, (1, 1))
    assert shared.open("spam", "abc", 7) is not None
    assert idle.stat().st_mtime > 1  # opening it marks it in use
    os.utime(idle, (later - shared_module.IDLE_SECONDS - 1,) * 2)  # as if last opened long ago
    shared.publish("ham", other)
    assert not idle.exists() and shared.path("ham", "xyz", 1).exists()
