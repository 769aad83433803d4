"""``uvicorn`` as bench/middleware.py runs it: the uvicorn command line, with one fix for W > 1.

    python bench/_serve.py [uvicorn options]     (same options as ``python -m uvicorn``)

With ``--workers`` above 1, uvicorn's supervisor binds the listening socket itself with ``proto``
left at 0; accepted sockets inherit it, and asyncio turns on TCP_NODELAY only where ``proto`` is
IPPROTO_TCP. Nagle's algorithm then holds back each response body until the client ACKs the head,
and the client delays that ACK: about 40 ms per keep-alive request, for the bare app and the
guarded one alike, which would drown what guard costs (uvicorn issue Kludex/uvicorn#3149, fix
proposed in #3155). This wrapper applies that fix: the bound socket is re-wrapped with
``proto=IPPROTO_TCP``. ``GUARD_BENCH_STOCK_UVICORN=1`` leaves uvicorn as it is.
"""

from __future__ import annotations

import os
import socket

import uvicorn
from uvicorn.config import Config


def _bind_socket_tcp(self: Config) -> socket.socket:
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        # The same file descriptor, now reporting IPPROTO_TCP to asyncio.
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        sock.set_inheritable(True)
    return sock


_bind_socket = Config.bind_socket
if os.environ.get("GUARD_BENCH_STOCK_UVICORN") != "1":
    Config.bind_socket = _bind_socket_tcp  # type: ignore[method-assign]

if __name__ == "__main__":
    uvicorn.main()
