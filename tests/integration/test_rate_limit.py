"""`maxconnrate` / `set rate-limit connections global`, `maxsessrate` / `set
rate-limit sessions global` and a frontend's `rate-limit sessions` (loopback
only): past the rate, accepting stops and the clients wait in the backlog, as in
haproxy (run on the same files where it serves as the oracle)."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
IMPLS = ["keeplb", pytest.param("haproxy", marks=pytest.mark.skipif(
    not os.path.exists(HAPROXY), reason="haproxy is not installed"))]


def start(impl: str, cfg: Path, sock: Path) -> subprocess.Popen[bytes]:
    """keeplb, or the real haproxy 2.6 on the same file as the oracle."""
    if impl == "keeplb":
        return start_keeplb(cfg, sock)
    p = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return p


def session_cfg(tmp_path: Path, rate: int, rules: str = "") -> tuple[Path, Path, int, Echo]:
    be = Echo(b"be")
    sock, port = tmp_path / "stats.sock", free_port()
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(CFG.format(sock=sock, port=port, be=be.port)
                   # haproxy starts a thread per CPU by default, whose accepts race
                   # past the limit by a few: one thread, as keeplb's one worker
                   .replace("    maxconnrate 10\n", f"    maxsessrate {rate}\n    nbthread 1\n")
                   .replace("    bind 127.0.0.1", f"{rules}    bind 127.0.0.1"))
    return cfg, sock, port, be


@pytest.mark.parametrize("impl", IMPLS)
def test_session_rate_is_limited_and_can_be_lifted(impl: str, tmp_path: Path) -> None:
    """Global `maxsessrate 10`: the shape of the maxconnrate test, the same
    for keeplb and haproxy; `set rate-limit sessions global 0` lifts it."""
    cfg, sock, port, be = session_cfg(tmp_path, 10)
    p = start(impl, cfg, sock)
    try:
        assert show_info(sock)["SessRateLimit"] == "10"
        times = served_over_time(port, 25, 8.0)
        assert len(times) == 25, times
        assert sum(t < 0.5 for t in times) <= 20, times
        assert times[-1] >= 1.2, times
        info = show_info(sock)
        assert int(info["SessRate"]) > 0, info["SessRate"]
        assert 5 <= int(info["MaxSessRate"]) <= 12, info["MaxSessRate"]
        assert info["ConnRateLimit"] == "0"
        assert query(sock, "set rate-limit sessions global 0").strip() == ""
        assert show_info(sock)["SessRateLimit"] == "0"
        # no wait: haproxy dequeues the limited listeners at once, keeplb too
        times = served_over_time(port, 25, 5.0)
        assert len(times) == 25 and times[-1] < 0.8, times
        assert query(sock, "set rate-limit sessions global 3").strip() == ""
        assert show_info(sock)["SessRateLimit"] == "3"
        assert query(sock, "clear counters").strip() == ""  # resets sps_max and cps_max
        info = show_info(sock)
        assert (info["MaxSessRate"], info["MaxConnRate"]) == ("0", "0"), info
    finally:
        p.terminate()
        p.wait(10)
        be.close()


def rejected_from(port: int, source: str, n: int, within: float) -> int:
    """Opens `n` connections from `source` one after the other; how many the
    balancer closed (a `tcp-request connection reject`) within `within` s."""
    t0, closed = time.monotonic(), 0
    for _ in range(n):
        with socket.socket() as c:
            c.settimeout(max(0.1, within - (time.monotonic() - t0)))
            c.bind((source, 0))
            try:
                c.connect(("127.0.0.1", port))
                closed += c.recv(16) == b""
            except (ConnectionResetError, ConnectionRefusedError):
                closed += 1
            except TimeoutError:
                break
    return closed


@pytest.mark.parametrize("impl", IMPLS)
def test_rejected_connections_are_not_sessions(impl: str, tmp_path: Path) -> None:
    """A connection a `tcp-request connection` rule rejects counts in ConnRate
    but is no session: it neither shows in SessRate nor uses the maxsessrate
    budget, so the clients let in right after are served at once."""
    cfg, sock, port, be = session_cfg(
        tmp_path, 5, "    tcp-request connection reject if { src 127.0.0.2 }\n")
    p = start(impl, cfg, sock)
    try:
        assert rejected_from(port, "127.0.0.2", 20, 5.0) == 20
        times = served_over_time(port, 4, 5.0)
        assert len(times) == 4 and times[-1] < 0.5, times
        info = show_info(sock)
        # the counts truncate where a second ends between the connections
        assert int(info["MaxConnRate"]) >= 15, info
        assert 2 <= int(info["MaxSessRate"]) <= 4, info
    finally:
        p.terminate()
        p.wait(10)
        be.close()
