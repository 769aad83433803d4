"""Mirrors shared by the processes of one machine: one copy of a list's mirror per machine, not
one per worker.

The first process to build a list's mirror at an (incarnation, version) writes it to a file in a
directory private to the user, on shared memory where the machine has it (``$XDG_RUNTIME_DIR``,
else ``/dev/shm``, else the temporary directory); every other process that needs the same mirror
maps that file read-only instead of reading the snapshot from Redis and building the index again.
The mapped pages are the kernel's, so the workers of a machine hold one copy between them (at a
million entries about 66 MB, instead of 66 MB per worker), and a worker that starts after the
first has its mirror in milliseconds. Changes made since are laid over it per worker, as over
any mirror (guard.mirror_patch).

A file holds the mirror pickled (protocol 5) with its numpy arrays out of band, each at an
aligned offset, so the arrays are views of the mapping: nothing is copied. Files are named by a
digest of guard's mirror code (another guard, in a rolling upgrade, never reads them), the
store's location and the list, then the incarnation and version (a file always holds what the
snapshot held at that version); written under a temporary name and renamed (no reader sees half
a file); and removed once another version of the list has been published for
:data:`KEEP_SECONDS` (a process that mapped a removed file keeps its mapping). The directory must
be the user's own and closed to others (``0700``), and so must each file: anything else is not
read (a file is a pickle), and mirrors are then built per process, as without sharing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import mmap
import os
import pickle
import shutil
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import guard.bands
import guard.mih
import guard.mirror
from guard.mirror import Mirror

logger = logging.getLogger("guard")

MAGIC = b"guard-mirror-1\n\x00"
#: Seconds a list's older files stay after a newer one is published.
KEEP_SECONDS = 60.0
#: Seconds a file stays after it was last published or opened: shared memory is memory, and a
#: one-off command (``guard check``) must not leave a list's copy behind for good. A process
#: that mapped a removed file keeps its mapping; the next one builds and publishes again.
IDLE_SECONDS = 600.0
_ALIGN = 64
_HEADER = struct.Struct("<QQ")  # the pickle's length, the number of buffers
_BUFFER = struct.Struct("<QQ")  # a buffer's offset and length


def default_directory() -> Path:
    """The user's private directory for shared mirrors, on shared memory where there is some
    (``GUARD_MIRROR_DIR`` names another)."""
    if os.environ.get("GUARD_MIRROR_DIR"):
        return Path(os.environ["GUARD_MIRROR_DIR"])
    for base in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm", tempfile.gettempdir()):
        if base and os.path.isdir(base) and os.access(base, os.W_OK):
            return Path(base) / f"guard-mirrors-{os.getuid()}"
    return Path(tempfile.gettempdir()) / f"guard-mirrors-{os.getuid()}"


def _private(info: os.stat_result, kind: int) -> bool:
    return (
        stat.S_IFMT(info.st_mode) == kind
        and info.st_uid == os.getuid()
        and not info.st_mode & 0o077
    )


class SharedMirrors:
    """The shared mirror files of one store (its location names them)."""

    def __init__(self, directory: Path, location: Callable[[], str]) -> None:
        self.directory = directory
        self._location = location  # the store's address (read when first needed)
        self._usable: bool | None = None  # checked once, on first use

    def _ready(self) -> bool:
        if self._usable is None:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._usable = _private(os.lstat(self.directory), stat.S_IFDIR)
            except OSError:
                self._usable = False
            if not self._usable:
                logger.warning(
                    "guard: %s is not a directory of this user's own, closed to others: "
                    "each process builds its own mirrors (redis.mirror_shared)",
                    self.directory,
                )
        return self._usable

    def _prefix(self, list_name: str) -> str:
        named = f"{_code_digest()}\0{self._location()}\0{list_name}"
        return hashlib.sha256(named.encode()).hexdigest()[:32]

    def path(self, list_name: str, incarnation: str, version: int) -> Path:
        tag = hashlib.sha256(incarnation.encode()).hexdigest()[:16]
        return self.directory / f"{self._prefix(list_name)}-{tag}-{version}.mirror"

    def open(self, list_name: str, incarnation: str, version: int) -> Mirror | None:
        """The mirror published for this (incarnation, version), mapped; None if there is none
        (or it cannot be trusted or read: then the caller builds its own)."""
        if not incarnation or not self._ready():
            return None  # a list made before incarnations: versions alone do not name it
        path = self.path(list_name, incarnation, version)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            if not _private(os.fstat(descriptor), stat.S_IFREG):
                return None
            mapping = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(descriptor)
        try:
            mirror = _unpack(memoryview(mapping))
        except Exception:  # noqa: BLE001 - a damaged file is not an error: build the mirror
            logger.warning("guard: ignoring an unreadable shared mirror file %s", path)
            return None
        if (mirror.incarnation, mirror.version) != (incarnation, version):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # in use: not idle
        return mirror

    def publish(self, list_name: str, mirror: Mirror) -> None:
        """Write ``mirror`` for the other processes (if no one has yet), and remove the list's
        files older than :data:`KEEP_SECONDS`. Best effort: a full disk only costs sharing."""
        if not mirror.incarnation or not self._ready():
            return
        path = self.path(list_name, mirror.incarnation, mirror.version)
        if not path.exists():
            try:
                data = _pack(mirror)
                if shutil.disk_usage(self.directory).free < 2 * sum(len(p) for p in data):
                    return
                handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".part")
                try:
                    with os.fdopen(handle, "wb") as stream:
                        for part in data:
                            stream.write(part)
                    os.replace(temporary, path)
                except BaseException:
                    Path(temporary).unlink(missing_ok=True)
                    raise
            except OSError as error:
                logger.warning("guard: cannot share the mirror of %r: %s", list_name, error)
                return
        self._remove_old(list_name, keep=path)

    def _remove_old(self, list_name: str, keep: Path) -> None:
        """Remove this list's other files older than KEEP_SECONDS, and any list's files idle
        for IDLE_SECONDS."""
        now = time.time()
        mine = f"{self._prefix(list_name)}-"
        for old in self.directory.glob("*.mirror"):
            cutoff = now - (KEEP_SECONDS if old.name.startswith(mine) else IDLE_SECONDS)
            with contextlib.suppress(OSError):  # another process removed it first
                if old != keep and old.stat().st_mtime < cutoff:
                    old.unlink()


@functools.cache
def _code_digest() -> str:
    """A digest of the code a pickled mirror needs: processes running another guard (a rolling
    upgrade) never read each other's files."""
    digest = hashlib.sha256()
    for module in (guard.mirror, guard.mih, guard.bands):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()


def _pack(mirror: Mirror) -> list[bytes | memoryview]:
    """The file's parts: header, buffer table, pickle, then each buffer at an aligned offset."""
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(mirror, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    start = len(MAGIC) + _HEADER.size + _BUFFER.size * len(raws) + len(meta)
    parts: list[bytes | memoryview] = []
    table = b""
    offset = start
    for raw in raws:
        offset += -offset % _ALIGN
        table += _BUFFER.pack(offset, raw.nbytes)
        offset += raw.nbytes
    parts += [MAGIC, _HEADER.pack(len(meta), len(raws)), table, meta]
    written = start
    for raw in raws:
        parts.append(b"\x00" * (-written % _ALIGN))
        written += -written % _ALIGN + raw.nbytes
        parts.append(raw)
    return parts


def _unpack(view: memoryview) -> Mirror:
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise ValueError("not a shared mirror file")
    at = len(MAGIC)
    meta_length, count = _HEADER.unpack_from(view, at)
    at += _HEADER.size
    spans = [_BUFFER.unpack_from(view, at + i * _BUFFER.size) for i in range(count)]
    at += _BUFFER.size * count
    meta = view[at : at + meta_length]
    buffers = []
    for offset, length in spans:
        if offset + length > len(view):
            raise ValueError("a truncated shared mirror file")
        buffers.append(view[offset : offset + length])
    mirror = pickle.loads(meta, buffers=buffers)
    if not isinstance(mirror, Mirror):
        raise ValueError("not a mirror")
    return mirror
