"""Socket calls on bare file descriptors, for the relay's Streams.

Every function returns a plain int, -errno when the call failed (never an
exception for a failed system call), so that the hot path tests a number
instead of catching BlockingIOError, and a relayed connection needs no
socket object. Every socket made here is non-blocking and close-on-exec.

keeplb/lb/_fdsock.c implements the same functions in C (built by
tools/build_native.py, with the relay): through the socket module a new
connection cost two socket objects, each validated by a getsockname() call,
and a method lookup plus argument parsing per call. The Python versions
below run where it is not built and are the reference for its behaviour
(tests/unit/test_fdsock.py runs both).
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

IMPLEMENTATION = "python"

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
_TCP = (socket.AF_INET, socket.AF_INET6)
_LINGER_RESET = struct.pack("ii", 1, 0)


def _err(exc: OSError) -> int:
    return -(exc.errno or errno.EIO)


def _on(fd: int, call: Callable[[_socket.socket], Any]) -> Any:
    """call(a socket object on `fd`), or -errno; the fd stays open."""
    try:
        s = _socket.socket(fileno=fd)
    except OSError as exc:
        return _err(exc)
    try:
        return call(s)
    except OSError as exc:
        return _err(exc)
    finally:
        s.detach()


def accept(lfd: int) -> tuple[int, Any]:
    """(fd, peer address) of a new connection, or (-errno, None)."""
    got = _on(lfd, lambda s: s._accept())  # type: ignore[attr-defined]
    if isinstance(got, int):
        return got, None
    fd, addr = got
    os.set_blocking(fd, False)
    _on(fd, lambda s: s.setsockopt(*_NODELAY) if s.family in _TCP else None)
    return fd, addr


def recv_into(fd: int, buf: bytearray, flags: int) -> int:
    """Bytes read into `buf` (0: the peer's FIN), or -errno."""
    return int(_on(fd, lambda s: s.recv_into(buf, 0, flags)))


def send(fd: int, data: bytes | bytearray | memoryview, flags: int) -> int:
    """Bytes sent, or -errno."""
    return int(_on(fd, lambda s: s.send(data, flags | socket.MSG_NOSIGNAL)))


def connect(family: int, host: str, port: int, scope_id: int) -> int:
    """A new socket's fd, connected or connecting, or -errno."""
    try:
        s = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    except OSError as exc:
        return _err(exc)
    try:
        if family != socket.AF_UNIX:
            s.setsockopt(*_NODELAY)
        address: Any = host
        if family == socket.AF_INET:
            socket.inet_pton(family, host)
            address = (host, port)
        elif family == socket.AF_INET6:
            socket.inet_pton(family, host)
            address = (host, port, 0, scope_id)
        err = s.connect_ex(address)
    except OSError as exc:
        s.close()
        return _err(exc) if exc.errno else -errno.EINVAL
    if err and err not in (errno.EINPROGRESS, errno.EAGAIN):
        s.close()
        return -err
    return s.detach()


def close(fd: int) -> int:
    try:
        os.close(fd)
    except OSError as exc:
        return _err(exc)
    return 0


def reset(fd: int) -> int:
    """Close `fd` with a single RST, no FIN (SO_LINGER on, 0 s), as haproxy
    closes a connection a `tcp-request connection` rule rejects. Not on the
    relay's path, so not in the C build."""
    set_nolinger(fd)
    return close(fd)


def shutdown_wr(fd: int) -> int:
    return int(_on(fd, lambda s: s.shutdown(socket.SHUT_WR)) or 0)


def set_nodelay(fd: int) -> int:
    """TCP_NODELAY on: also sends at once what MSG_MORE held back."""
    return int(_on(fd, lambda s: s.setsockopt(*_NODELAY)) or 0)


def set_keepalive(fd: int) -> int:
    """SO_KEEPALIVE on (`option clitcpka` / `srvtcpka` / `tcpka`): the kernel
    probes an idle connection, with its own timers."""
    return int(_on(fd, lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)) or 0)


def set_nolinger(fd: int) -> int:
    """SO_LINGER on, 0 s (`option nolinger`): close() then sends a RST and drops
    unsent data, instead of a FIN; shutdown_wr() still sends a FIN."""
    return int(_on(fd, lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              _LINGER_RESET)) or 0)


def so_error(fd: int) -> int:
    """The socket's pending error (SO_ERROR), 0 if none."""
    return abs(int(_on(fd, lambda s: s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))))


def getsockname(fd: int) -> Any:
    """The local address, or None."""
    got = _on(fd, lambda s: s.getsockname())
    return None if isinstance(got, int) else got


def getpeername(fd: int) -> Any:
    """The peer's address, or None."""
    got = _on(fd, lambda s: s.getpeername())
    return None if isinstance(got, int) else got


FUNCTIONS = ("accept", "recv_into", "send", "connect", "close", "shutdown_wr",
             "set_nodelay", "set_keepalive", "set_nolinger", "so_error", "getsockname",
             "getpeername")
# The Python versions, also once the C ones replace them (for the tests).
PYTHON: dict[str, Any] = {name: globals()[name] for name in FUNCTIONS}


def _use_c() -> None:
    """Replace the functions above with the C build's, if it is there and current."""
    global IMPLEMENTATION
    from keeplb.lb import native

    c = native.load_c_extension("keeplb.lb._fdsock")
    if c is None:
        return
    for name in FUNCTIONS:
        globals()[name] = getattr(c, name)
    IMPLEMENTATION = "c"


_use_c()
