"""Fault injection for the store tests: a TCP proxy with switchable faults, and a real
redis-server on a TCP port that can be stopped and restarted on the same port.

In the spirit of redis-py's ``tests/test_asyncio/test_cwe_404.py`` DelayProxy, but thread based,
so it serves asyncio tests and subprocesses (``guard load``) alike.
"""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis
from conftest import start_redis

Mode = Literal["pass", "blackhole", "slow", "reset"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket | None
    sent_up: int = 0
    closed: bool = False


@dataclass
class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream``, with faults switched at runtime.

    ``mode``: "pass" forwards; "blackhole" accepts and never answers (and stops answering on
    existing connections); "slow" delays every chunk by ``delay`` seconds; "reset" accepts and
    closes at once. :meth:`refuse` closes the listener (connection refused) and :meth:`listen`
    reopens it on the same port; :meth:`drop` closes every current connection (a server restart
    or kill); :meth:`drop_after` closes a connection once this many more bytes went upstream.
    ``accepted`` counts connection attempts that reached the proxy.
    """

    upstream: tuple[str, int]
    port: int = 0
    mode: Mode = "pass"
    delay: float = 0.0
    accepted: int = 0
    _listener: socket.socket | None = None
    _pairs: list[_Pair] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _drop_at: int | None = None  # total upstream bytes (all connections) at which to cut
    _sent_closed: int = 0  # upstream bytes of connections already closed
    _mode_after_cut: Mode | None = None

    def start(self) -> FaultProxy:
        self.listen()
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """Close the listener: new connections are refused by the kernel (not counted)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the
            # socket listening until that accept() returned.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def drop(self) -> None:
        """Close every current connection, as a restarted or killed server would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._close(pair)

    def drop_after(self, more_bytes: int, *, then: Mode | None = None) -> None:
        """Cut every connection once ``more_bytes`` more bytes have gone upstream (in total);
        then switch to mode ``then`` if given (``"reset"``: the server is gone, so a client's
        retry on a new connection fails too)."""
        with self._lock:
            self._drop_at = self._sent_total() + more_bytes
            self._mode_after_cut = then

    @property
    def sent_upstream(self) -> int:
        with self._lock:
            return self._sent_total()

    def _sent_total(self) -> int:
        return self._sent_closed + sum(p.sent_up for p in self._pairs)

    def close(self) -> None:
        self._stop.set()
        self.refuse()
        self.drop()

    # --- threads ---------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed (refuse)
            self.accepted += 1
            if self.mode == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
                client.close()
                continue
            upstream = None
            if self.mode != "blackhole":
                try:
                    upstream = socket.create_connection(self.upstream, timeout=2)
                except OSError:
                    client.close()
                    continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        try:
            while not pair.closed and not self._stop.is_set():
                sockets = [pair.client] + ([pair.upstream] if pair.upstream else [])
                readable, _, _ = select.select(sockets, [], [], 0.05)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        self._close(pair)
                        return
                    if self.mode == "blackhole":
                        continue  # swallowed: the other side waits forever
                    if self.mode == "slow":
                        time.sleep(self.delay)
                    if source is pair.client:
                        if self._cut(pair, len(data)):
                            return
                        assert pair.upstream is not None
                        pair.upstream.sendall(data)
                    else:
                        pair.client.sendall(data)
        except OSError:
            self._close(pair)

    def _cut(self, pair: _Pair, size: int) -> bool:
        with self._lock:
            pair.sent_up += size
            cut = self._drop_at is not None and self._sent_total() >= self._drop_at
            if cut:
                self._drop_at = None
                if self._mode_after_cut is not None:
                    self.mode, self._mode_after_cut = self._mode_after_cut, None
        if cut:
            self.drop()
        return cut

    def _close(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        with self._lock:
            self._sent_closed += pair.sent_up
            if pair in self._pairs:
                self._pairs.remove(pair)
        for sock in (pair.client, pair.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()


@dataclass
class RedisProcess:
    """A real redis-server on 127.0.0.1:``port`` (no persistence), restartable on that port."""

    executable: str
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        self.process = start_redis(
            self.executable,
            self.folder,
            ["--port", str(self.port), "--bind", "127.0.0.1"],
            redis.Redis(port=self.port, socket_timeout=1),
        )
        return self

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)
