"""keeplb.lb.fdsock: the C build and its Python twin behave alike, on real
loopback sockets (results are counts or -errno, never exceptions)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from keeplb.lb import fdsock, native

C = native.load_c_extension("keeplb.lb._fdsock")
IMPLS = {"python": SimpleNamespace(**fdsock.PYTHON)}
if C is not None:
    IMPLS["c"] = SimpleNamespace(**{n: getattr(C, n) for n in fdsock.FUNCTIONS})


@pytest.fixture(params=sorted(IMPLS))
def fs(request: pytest.FixtureRequest) -> Any:
    return IMPLS[request.param]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)  # as keeplb's listeners
    yield s
    s.close()


def _accept(fs: Any, lfd: int) -> tuple[int, Any]:
    deadline = time.monotonic() + 2
    while True:
        fd, addr = fs.accept(lfd)
        if fd != -errno.EAGAIN or time.monotonic() > deadline:
            return fd, addr
        time.sleep(0.005)


def _recv(fs: Any, fd: int, size: int = 1024) -> bytes:
    buf = bytearray(size)
    deadline = time.monotonic() + 2
    while True:
        n = fs.recv_into(fd, buf, 0)
        if n != -errno.EAGAIN or time.monotonic() > deadline:
            return bytes(buf[:n]) if n >= 0 else b"error %d" % n
        time.sleep(0.005)


def _opt(fd: int, level: int, name: int) -> int:
    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.getsockopt(level, name)
    finally:
        s.close()


def test_the_build_is_used_when_present() -> None:
    assert fdsock.IMPLEMENTATION == ("c" if C is not None else "python")


def test_connect_accept_send_recv_shutdown_close(fs: Any, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert fs.accept(listener.fileno()) == (-errno.EAGAIN, None)
    c = fs.connect(socket.AF_INET, "127.0.0.1", port, 0)
    assert c >= 0
    s, addr = _accept(fs, listener.fileno())
    assert s >= 0
    assert addr == fs.getpeername(s) == fs.getsockname(c)
    assert addr[0] == "127.0.0.1" and isinstance(addr[1], int)
    assert fs.getsockname(s) == ("127.0.0.1", port) == fs.getpeername(c)
    for fd in (c, s):
        assert not os.get_blocking(fd)
        assert _opt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY)
    buf = bytearray(16)
    assert fs.recv_into(s, buf, 0) == -errno.EAGAIN
    assert fs.send(c, b"hello", 0) == 5
    assert fs.send(c, memoryview(b"xxworld")[2:], 0) == 5
    assert fs.send(c, bytearray(b"!"), socket.MSG_MORE) == 1
    assert fs.set_nodelay(c) == 0  # pushes the corked byte
    assert _recv(fs, s) == b"helloworld!"
    assert fs.shutdown_wr(c) == 0
    assert _recv(fs, s) == b""  # the FIN
    assert fs.so_error(s) == 0
    assert fs.close(c) == 0
    assert fs.close(c) == -errno.EBADF
    assert fs.close(s) == 0


def test_bytes_arrive_in_order(fs: Any, listener: socket.socket) -> None:
    c = fs.connect(socket.AF_INET, "127.0.0.1", listener.getsockname()[1], 0)
    s, _ = _accept(fs, listener.fileno())
    try:
        assert fs.send(c, b"abc", 0) == 3
        assert fs.send(c, memoryview(b"..def")[2:], 0) == 3
        got = b""
        deadline = time.monotonic() + 2
        while len(got) < 6 and time.monotonic() < deadline:
            got += _recv(fs, s)
        assert got == b"abcdef"
    finally:
        fs.close(c)
        fs.close(s)


def test_errors_are_negative_errno(fs: Any) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    fd = fs.connect(socket.AF_INET, "127.0.0.1", port, 0)
    if fd >= 0:  # in progress: the error comes with the first event
        deadline = time.monotonic() + 2
        while fs.so_error(fd) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        fs.close(fd)
    else:
        assert fd == -errno.ECONNREFUSED
    assert fs.connect(socket.AF_INET, "not-an-address", 80, 0) == -errno.EINVAL
    assert fs.connect(socket.AF_INET6, "127.0.0.1", 80, 0) == -errno.EINVAL
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert fs.accept(udp.fileno())[0] in (-errno.EOPNOTSUPP, -errno.EINVAL)
    finally:
        udp.close()
    assert fs.recv_into(10**6, bytearray(4), 0) == -errno.EBADF
    assert fs.send(10**6, b"x", 0) == -errno.EBADF
    assert fs.getpeername(10**6) is None


def test_sending_to_a_closed_peer_fails_without_sigpipe(fs: Any, listener: socket.socket) -> None:
    c = fs.connect(socket.AF_INET, "127.0.0.1", listener.getsockname()[1], 0)
    s, _ = _accept(fs, listener.fileno())
    fs.close(s)
    results = set()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        n = fs.send(c, b"x" * 1000, 0)
        results.add(n)
        if n < 0:
            break
        time.sleep(0.01)
    fs.close(c)
    assert min(results) in (-errno.EPIPE, -errno.ECONNRESET)


def test_ipv6(fs: Any) -> None:
    lst = socket.socket(socket.AF_INET6)
    try:
        lst.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    lst.listen(4)
    lst.setblocking(False)
    try:
        c = fs.connect(socket.AF_INET6, "::1", lst.getsockname()[1], 0)
        s, addr = _accept(fs, lst.fileno())
        assert addr == fs.getsockname(c)
        assert addr[0] == "::1" and len(addr) == 4
        assert fs.send(c, b"six", 0) == 3
        assert _recv(fs, s) == b"six"
        fs.close(c)
        fs.close(s)
    finally:
        lst.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_unix(fs: Any, tmp_path: Any, abstract: bool) -> None:
    path = f"\0keeplb-test-{os.getpid()}" if abstract else str(tmp_path / "u.sock")
    lst = socket.socket(socket.AF_UNIX)
    lst.bind(path)
    lst.listen(4)
    lst.setblocking(False)
    try:
        c = fs.connect(socket.AF_UNIX, path, 0, 0)
        assert c >= 0
        s, _ = _accept(fs, lst.fileno())
        assert s >= 0
        assert fs.getsockname(s) == lst.getsockname()
        assert fs.send(c, b"unix", 0) == 4
        assert _recv(fs, s) == b"unix"
        fs.close(c)
        fs.close(s)
    finally:
        lst.close()


def test_keepalive_and_nolinger(fs: Any, listener: socket.socket) -> None:
    """set_keepalive: SO_KEEPALIVE on (`option tcpka`); set_nolinger: SO_LINGER
    on, 0 s (`option nolinger`): a FIN still goes with shutdown_wr."""
    c = fs.connect(socket.AF_INET, "127.0.0.1", listener.getsockname()[1], 0)
    s, _ = _accept(fs, listener.fileno())
    try:
        assert not _opt(c, socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert fs.set_keepalive(c) == 0
        assert _opt(c, socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert fs.set_nolinger(s) == 0
        s_obj = socket.socket(fileno=os.dup(s))
        try:
            assert s_obj.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8) == \
                struct.pack("ii", 1, 0)
        finally:
            s_obj.close()
        assert fs.send(s, b"bye", 0) == 3
        assert fs.shutdown_wr(s) == 0
        assert _recv(fs, c) == b"bye"
        assert _recv(fs, c) == b""  # shutdown_wr: a FIN, not a RST
    finally:
        fs.close(c)
        fs.close(s)
    assert fs.set_keepalive(10**6) == -errno.EBADF
    assert fs.set_nolinger(10**6) == -errno.EBADF


def test_nolinger_close_resets(fs: Any, listener: socket.socket) -> None:
    """close() after set_nolinger sends a RST, no FIN: the peer reads ECONNRESET."""
    c = fs.connect(socket.AF_INET, "127.0.0.1", listener.getsockname()[1], 0)
    s, _ = _accept(fs, listener.fileno())
    try:
        assert fs.set_nolinger(s) == 0
        assert fs.close(s) == 0
        assert _recv(fs, c) == b"error %d" % -errno.ECONNRESET
    finally:
        fs.close(c)
