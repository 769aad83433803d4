"""Real uvicorn servers for the examples, and a raw-socket HTTP client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: framework -> the uvicorn target of its example.
APPS = {
    "django": "examples.django_app.asgi:application",
    "quart": "examples.quart_app:app",
    "litestar": "examples.litestar_app:app",
    "starlette": "examples.starlette_app:app",
    "fastapi": "examples.fastapi_app:app",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(
    name: str, target: str, env: dict[str, str | None], log_dir: Path, *options: str
) -> Server:
    """``uvicorn target`` on 127.0.0.1 and a free port, in its own process group (started,
    not yet listening: see :func:`wait_listening`). ``env`` adds to this process's environment;
    a None value removes the variable."""
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for key, value in env.items():
        if value is None:
            environment.pop(key, None)
        else:
            environment[key] = value
    log = log_dir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1"]
            + ["--port", str(port), "--log-level", "info", "--no-access-log", *options],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, port, process, log)


def wait_listening(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start-up:\n{server.output()}")
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                stop(server)
                raise RuntimeError(f"{server.name} is not listening:\n{server.output()}") from None
            time.sleep(0.05)


def stop(server: Server, timeout: float = 15.0) -> int:
    """SIGTERM (uvicorn's graceful shutdown, which runs the lifespan shutdown), then SIGKILL to
    the whole process group if it lingers. Returns the exit status."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=5)
    return int(server.process.returncode)


@dataclass(frozen=True)
class Response:
    status: int | None  # None: the connection closed without a status line
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, request: bytes, timeout: float = 30.0) -> Response:
    """Send ``request`` as exact bytes and read the answer until the server closes."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        # Answered (and closed) before the body was all sent: read what came.
        with contextlib.suppress(OSError):
            connection.sendall(request)
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return parse(bytes(received))


def parse(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Response(None, {}, raw)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Response(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
