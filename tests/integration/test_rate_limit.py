"""`maxconnrate` and `set rate-limit connections global` (loopback only): past
the rate, accepting stops and the clients wait in the backlog, as in haproxy."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.lbhelpers import Echo, free_port
from tests.integration.test_stats import haproxy_query as query

CFG = """\
global
    maxconnrate 10
    stats socket {sock} level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s
listen px
    bind 127.0.0.1:{port}
    server s1 127.0.0.1:{be}
"""


def served_over_time(port: int, n: int, within: float) -> list[float]:
    """Opens `n` connections at once; when each got the server's name (seconds
    from the start), for those served within `within` seconds."""
    t0 = time.monotonic()
    conns = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        conns.append(c)
    when: dict[socket.socket, float] = {}
    try:
        while len(when) < n and time.monotonic() - t0 < within:
            pending = [c for c in conns if c not in when]
            readable, _, _ = select.select(pending, [], [], 0.05)
            for c in readable:
                try:
                    if c.recv(16):
                        when[c] = time.monotonic() - t0
                except OSError:
                    when[c] = float("inf")
    finally:
        for c in conns:
            c.close()
    return sorted(t for t in when.values() if t != float("inf"))


def start_keeplb(cfg: Path, sock: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-m", "keeplb", "lb", "-f", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return p


def show_info(sock: Path) -> dict[str, str]:
    lines = query(sock, "show info").splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_connection_rate_is_limited_and_can_be_lifted(tmp_path: Path) -> None:
    be = Echo(b"be")
    sock, port = tmp_path / "stats.sock", free_port()
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(CFG.format(sock=sock, port=port, be=be.port))
    p = start_keeplb(cfg, sock)
    try:
        assert show_info(sock)["ConnRateLimit"] == "10"
        times = served_over_time(port, 25, 8.0)
        # 10 per second over a sliding second (haproxy's freq_ctr: this second's
        # count plus the share of the previous one still inside the last second):
        # 25 connections take well over a second, and none is lost.
        assert len(times) == 25, times
        assert sum(t < 0.5 for t in times) <= 20, times
        assert times[-1] >= 1.2, times
        info = show_info(sock)
        assert 5 <= int(info["MaxConnRate"]) <= 12, info["MaxConnRate"]
        assert query(sock, "set rate-limit connections global 0").strip() == ""
        assert show_info(sock)["ConnRateLimit"] == "0"
        time.sleep(1.2)  # let a pending resume fire
        times = served_over_time(port, 25, 5.0)
        assert len(times) == 25 and times[-1] < 0.8, times
    finally:
        p.terminate()
        p.wait(10)
        be.close()


def test_frontend_session_rate_is_limited(tmp_path: Path) -> None:
    """`rate-limit sessions 10` on the frontend: the same shape, and the stats
    show the limit (rate_lim) and the highest rate seen (rate_max)."""
    be = Echo(b"be")
    sock, port = tmp_path / "stats.sock", free_port()
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(CFG.format(sock=sock, port=port, be=be.port)
                   .replace("    maxconnrate 10\n", "")
                   .replace("    bind 127.0.0.1", "    rate-limit sessions 10\n    bind 127.0.0.1"))
    p = start_keeplb(cfg, sock)
    try:
        times = served_over_time(port, 25, 8.0)
        assert len(times) == 25, times
        assert sum(t < 0.5 for t in times) <= 20, times
        assert times[-1] >= 1.2, times
        rows = [line.split(",") for line in query(sock, "show stat").splitlines()]
        head = rows[0]
        fe = dict(zip(head, next(r for r in rows if r[:2] == ["px", "FRONTEND"]), strict=False))
        assert fe["rate_lim"] == "10"
        assert 5 <= int(fe["rate_max"]) <= 12, fe["rate_max"]
    finally:
        p.terminate()
        p.wait(10)
        be.close()
