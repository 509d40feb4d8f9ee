"""`option tcpka` / `clitcpka` / `srvtcpka`, `option nolinger`, `option
dontlog-normal` and `option log-separate-errors` on loopback, with the real
haproxy 2.6 as the oracle: each test runs the same haproxy.cfg text under
`haproxy -db` and under `keeplb lb`, drives both with the same blocking
client and server sockets, and expects the same outcome (the expected values
below are what haproxy 2.6.12 did).

SO_KEEPALIVE on the proxy's own sockets is read from outside with `ss -tnoe`
(`timer:(keepalive,...)`); nolinger shows as a RST (ECONNRESET) on the peer
instead of a FIN (an empty read)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lbhelpers import UdpLog, free_port  # noqa: E402
from test_lblog import normalize  # noqa: E402

from keeplb.config.haproxy import parse_text  # noqa: E402
from keeplb.lb.log import (  # noqa: E402
    LOG_ERR,
    LOG_INFO,
    SessionLog,
    session_error,
    session_level,
    should_log_session,
)
from keeplb.lb.proxy import tcp_keepalive  # noqa: E402

LO = "127.0.0.1"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SS = shutil.which("ss")
IMPLS = ["haproxy", "keeplb"]


def _listening(ports: set[int]) -> bool:
    """All `ports` are in LISTEN state on 127.0.0.1 (read from /proc, so that
    waiting for the proxy makes no connection it would log)."""
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            host, port = fields[1].split(":")
            if fields[3] == "0A" and host == "0100007F":
                found.add(int(port, 16))
    return ports <= found


@contextlib.contextmanager
def proxy(impl: str, cfg: str, tmp_path: Path, ports: set[int]) -> Iterator[None]:
    """`cfg` served by haproxy or by keeplb until the block ends."""
    if impl == "haproxy" and not os.path.exists(HAPROXY):
        pytest.skip("haproxy is not installed")
    path = tmp_path / f"{impl}.cfg"
    path.write_text(cfg)
    cmd = [HAPROXY, "-f", str(path), "-db"] if impl == "haproxy" else \
        [sys.executable, "-m", "keeplb", "lb", "-f", str(path)]
    with open(tmp_path / f"{impl}.out", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _listening(ports):
            assert proc.poll() is None, (tmp_path / f"{impl}.out").read_text()
            assert time.monotonic() < deadline, f"{impl} did not listen on {ports}"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def tcp_server() -> Iterator[socket.socket]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((LO, 0))
    srv.listen(16)
    srv.settimeout(5)
    try:
        yield srv
    finally:
        srv.close()


def _pair(port: int, srv: socket.socket) -> tuple[socket.socket, socket.socket]:
    """A client connected through the proxy and the server's end of the
    relayed connection, after one byte each way."""
    c = socket.create_connection((LO, port), timeout=5)
    c.settimeout(3)
    a, _ = srv.accept()
    a.settimeout(3)
    c.sendall(b"ping")
    assert a.recv(10) == b"ping"
    a.sendall(b"pong")
    assert c.recv(10) == b"pong"
    return c, a


def _ending(s: socket.socket) -> str:
    """How the peer ended: 'FIN' (an empty read) or 'RST' (ECONNRESET)."""
    try:
        data = s.recv(100)
    except ConnectionResetError:
        return "RST"
    except TimeoutError:
        return "nothing"
    return "FIN" if data == b"" else f"data {data!r}"


BASE = """
global
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
{defaults}
frontend f
    bind 127.0.0.1:{port}
{frontend}
    default_backend b
backend b
{backend}
    server s1 127.0.0.1:{srv}
"""


def _indent(text: str) -> str:
    return "\n".join(f"    {x}" for x in text.split("\n") if x)


# --------------------------------------------------------------------------
# option tcpka / clitcpka / srvtcpka
# --------------------------------------------------------------------------

KEEPALIVE_CASES = [
    # (defaults, frontend, backend) -> (client side, server side), as haproxy 2.6.12
    (("", "", ""), (False, False)),
    (("", "option tcpka", ""), (True, False)),  # a frontend's tcpka: client side only
    (("", "", "option tcpka"), (False, True)),  # a backend's: server side only
    (("option tcpka", "", ""), (True, True)),
    (("", "option clitcpka", "option srvtcpka"), (True, True)),
    (("option tcpka", "no option clitcpka", ""), (False, True)),
    (("option tcpka", "", "no option srvtcpka"), (True, False)),
    (("no option clitcpka", "option tcpka", "no option srvtcpka"), (True, False)),
    (("no option clitcpka", "option tcpka\nno option clitcpka\noption tcpka", ""), (True, False)),
    (("option clitcpka\noption srvtcpka", "no option clitcpka", "no option srvtcpka"),
     (False, False)),
]


def _keepalive_timers(port: int, c: socket.socket, a: socket.socket) -> tuple[bool, bool]:
    """Whether the proxy's accepted socket (local port `port`, peer `c`) and its
    socket to the server (peer `a`) have a keepalive timer, from `ss -tnoe`."""
    out = subprocess.run([SS or "ss", "-Htnoe", "state", "established"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    sides: dict[str, bool] = {}
    def text(address: tuple[str, int]) -> str:
        return f"{address[0]}:{address[1]}"
    client_end, server_end = text(c.getsockname()), text(a.getpeername())
    for line in out.splitlines():
        fields = line.split()
        local, peer = fields[2], fields[3]
        if local == f"{LO}:{port}" and peer == client_end:
            sides["client"] = "timer:(keepalive" in line
        if local == server_end and peer == text(a.getsockname()):
            sides["server"] = "timer:(keepalive" in line
    assert set(sides) == {"client", "server"}, out
    return sides["client"], sides["server"]


@pytest.mark.skipif(SS is None, reason="ss (iproute2) is not installed")
@pytest.mark.parametrize("impl", IMPLS)
def test_keepalive_on_the_sides_haproxy_sets_it(impl: str, tmp_path: Path) -> None:
    with tcp_server() as srv:
        got = []
        for (defaults, fe, be), _ in KEEPALIVE_CASES:
            port = free_port()
            cfg = BASE.format(defaults=_indent(defaults), frontend=_indent(fe),
                              backend=_indent(be), port=port, srv=srv.getsockname()[1])
            with proxy(impl, cfg, tmp_path, {port}):
                c, a = _pair(port, srv)
                try:
                    got.append(_keepalive_timers(port, c, a))
                finally:
                    c.close()
                    a.close()
    assert got == [want for _, want in KEEPALIVE_CASES]


def test_keepalive_options_resolve_as_haproxy_sets_its_flags() -> None:
    """tcp_keepalive() on the parsed sections, for the cases above; also: the
    options are supported (no warning)."""
    for (defaults, fe, be), want in KEEPALIVE_CASES:
        cfg, diags = parse_text(BASE.format(defaults=_indent(defaults), frontend=_indent(fe),
                                            backend=_indent(be), port=1, srv=2))
        assert not [d for d in diags if "keeplb" in d.message], [str(d) for d in diags]
        front, back = cfg.proxies
        assert (tcp_keepalive(front, "clitcpka"), tcp_keepalive(back, "srvtcpka")) == want


def test_keepalive_option_set_again_after_tcpka_in_defaults() -> None:
    cfg, _ = parse_text(BASE.format(defaults=_indent("no option clitcpka\noption tcpka"),
                                    frontend=_indent("no option clitcpka"), backend="",
                                    port=1, srv=2))
    assert not tcp_keepalive(cfg.proxies[0], "clitcpka")  # haproxy 2.6: off


# --------------------------------------------------------------------------
# option nolinger
# --------------------------------------------------------------------------

def _server_closes(c: socket.socket, a: socket.socket) -> str:
    a.close()
    return _ending(c)


def _client_closes(c: socket.socket, a: socket.socket) -> str:
    c.close()
    return _ending(a)


def _client_shuts_then_server_closes(c: socket.socket, a: socket.socket) -> str:
    c.shutdown(socket.SHUT_WR)
    server_saw = _ending(a)
    a.close()
    return f"server {server_saw}, client {_ending(c)}"


def _server_shuts_then_client_closes(c: socket.socket, a: socket.socket) -> str:
    a.shutdown(socket.SHUT_WR)
    client_saw = _ending(c)
    c.close()
    return f"client {client_saw}, server {_ending(a)}"


SCENARIOS: list[Callable[[socket.socket, socket.socket], str]] = [
    _server_closes, _client_closes, _client_shuts_then_server_closes,
    _server_shuts_then_client_closes]

# where `option nolinger` is -> what the peers saw in each scenario, as haproxy 2.6.12:
# in a frontend the client's socket closes with a RST (a half-close is still a FIN);
# in a backend a client's FIN is not passed on: the server connection is reset at
# once, unless the server had shut its side first.
NOLINGER = {
    "none": ["FIN", "FIN", "server FIN, client FIN", "client FIN, server FIN"],
    "frontend": ["FIN", "FIN", "server FIN, client RST", "client FIN, server FIN"],
    "backend": ["FIN", "RST", "server RST, client FIN", "client FIN, server FIN"],
    "listen": ["FIN", "RST", "server RST, client RST", "client FIN, server FIN"],
}

LISTEN = """
global
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
listen l
    bind 127.0.0.1:{port}
    option nolinger
    server s1 127.0.0.1:{srv}
"""


@pytest.mark.parametrize("where", sorted(NOLINGER))
@pytest.mark.parametrize("impl", IMPLS)
def test_nolinger_resets_where_haproxy_resets(impl: str, where: str, tmp_path: Path) -> None:
    port = free_port()
    with tcp_server() as srv:
        if where == "listen":
            cfg = LISTEN.format(port=port, srv=srv.getsockname()[1])
        else:
            cfg = BASE.format(defaults="", port=port, srv=srv.getsockname()[1],
                              frontend="    option nolinger" if where == "frontend" else "",
                              backend="    option nolinger" if where == "backend" else "")
        got = []
        with proxy(impl, cfg, tmp_path, {port}):
            for scenario in SCENARIOS:
                c, a = _pair(port, srv)
                try:
                    got.append(scenario(c, a))
                finally:
                    c.close()
                    a.close()
    assert got == NOLINGER[where]


@pytest.mark.parametrize("impl", IMPLS)
def test_nolinger_in_a_backend_resets_the_server_on_a_timeout(impl: str, tmp_path: Path) -> None:
    """`timeout client` expires: with `option nolinger` in the backend the server
    connection is reset (haproxy 2.6: RST), the client's still gets a FIN."""
    port = free_port()
    with tcp_server() as srv:
        cfg = BASE.format(defaults="", port=port, srv=srv.getsockname()[1], frontend="",
                          backend="    option nolinger").replace("client 5s", "client 300ms")
        with proxy(impl, cfg, tmp_path, {port}):
            c, a = _pair(port, srv)
            try:
                assert (_ending(a), _ending(c)) == ("RST", "FIN")
            finally:
                c.close()
                a.close()


# --------------------------------------------------------------------------
# option dontlog-normal, option log-separate-errors
# --------------------------------------------------------------------------

LOG_CFG = """
global
    log 127.0.0.1:{log} local0
    log 127.0.0.1:{errlog} local0 err
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 1s
    timeout client 5s
    timeout server 5s
listen quiet
    bind 127.0.0.1:{p_quiet}
    option dontlog-normal
    retries 1
    server s1 127.0.0.1:{srv}
listen quiet_refused
    bind 127.0.0.1:{p_quiet_refused}
    option dontlog-normal
    retries 1
    server s1 127.0.0.1:{dead}
listen quiet_redispatched
    bind 127.0.0.1:{p_quiet_redispatched}
    option dontlog-normal
    option redispatch
    retries 1
    server s1 127.0.0.1:{dead}
    server s2 127.0.0.1:{srv}
listen split
    bind 127.0.0.1:{p_split}
    option log-separate-errors
    server s1 127.0.0.1:{srv}
listen split_refused
    bind 127.0.0.1:{p_split_refused}
    option log-separate-errors
    retries 1
    server s1 127.0.0.1:{dead}
listen plain_refused
    bind 127.0.0.1:{p_plain_refused}
    retries 1
    server s1 127.0.0.1:{dead}
"""
LOG_PROXIES = ("quiet", "quiet_refused", "quiet_redispatched", "split", "split_refused",
               "plain_refused")


def _session(port: int, srv: socket.socket, served: bool) -> None:
    """One client: an exchange with the server, or (refused) an empty answer."""
    with socket.create_connection((LO, port), timeout=5) as c:
        c.settimeout(5)
        c.sendall(b"hi")
        if served:
            a, _ = srv.accept()
            with a:
                a.settimeout(3)
                assert a.recv(10) == b"hi"
                a.sendall(b"ho")
                assert c.recv(10) == b"ho"
                c.shutdown(socket.SHUT_WR)
                assert a.recv(10) == b""
        else:
            assert c.recv(10) == b""
    time.sleep(0.1)


def _log_lines(impl: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    log, errlog = UdpLog(), UdpLog()
    ports = {name: free_port() for name in LOG_PROXIES}
    try:
        with tcp_server() as srv:
            cfg = LOG_CFG.format(log=log.port, errlog=errlog.port, srv=srv.getsockname()[1],
                                 dead=free_port(), **{f"p_{k}": v for k, v in ports.items()})
            with proxy(impl, cfg, tmp_path, set(ports.values())):
                for name in LOG_PROXIES:
                    _session(ports[name], srv, "refused" not in name)
                lines, errors = log.lines(), errlog.lines()
    finally:
        log.close()
        errlog.close()

    def sessions(got: list[str]) -> list[str]:
        # the session lines only (haproxy also logs its start), in proxy order
        out = [re.sub(r" \d+/\d+/\d+/\d+/(\+?\d+) ", r" CONNS/\1 ", normalize(x))
               for x in got if "[ACCEPT]" in normalize(x)]
        return sorted(out, key=lambda x: LOG_PROXIES.index(x.split()[4]))
    return sessions(lines), sessions(errors)


@pytest.mark.parametrize("impl", IMPLS)
def test_dontlog_normal_and_log_separate_errors_as_haproxy(impl: str, tmp_path: Path) -> None:
    lines, errors = _log_lines(impl, tmp_path)
    head = "DATE haproxy[PID]: 127.0.0.1:PORT [ACCEPT]"
    assert lines == [
        # dontlog-normal: the normal session is not logged; a refused one is, and
        # so is one that ended normally after a redispatch
        f"<134>{head} quiet_refused quiet_refused/s1 T/-1/T 0 SC CONNS/1 0/0\n",
        f"<134>{head} quiet_redispatched quiet_redispatched/s2 T/T/T 2 -- CONNS/+1 0/0\n",
        # log-separate-errors: info for the normal session, err (3) for the failed one
        f"<134>{head} split split/s1 T/T/T 2 -- CONNS/0 0/0\n",
        f"<131>{head} split_refused split_refused/s1 T/-1/T 0 SC CONNS/1 0/0\n",
        f"<134>{head} plain_refused plain_refused/s1 T/-1/T 0 SC CONNS/1 0/0\n",
    ]
    # a `log ... err` target gets the raised line only
    assert errors == [lines[3]]


def test_session_error_follows_haproxy_strm_log() -> None:
    """What is an error for dontlog-normal and log-separate-errors (haproxy 2.6
    strm_log(): a redispatch, a termination state other than '-' and 'L', or a
    retry in a session that otherwise ended normally)."""
    ok = SessionLog(LO, 1, 0.0, "f", "b", "s1", 0, 0, 1, 2, 2, "--", 1, 1, 1, 1, 0, False, 0, 0)
    assert not session_error(ok)
    assert session_error(replace(ok, retries=1))
    assert session_error(replace(ok, retries=1, redispatched=True))
    for term in ("SC", "sC", "CD", "cD", "SD", "sQ", "PR", "RC", "IC", "DD", "KD", "UD"):
        assert session_error(replace(ok, termination=term)), term
    assert not session_error(replace(ok, termination="LR"))
    assert not session_error(replace(ok, termination="LR", retries=1))
    assert should_log_session(ok, False, False)
    assert not should_log_session(ok, False, dontlog_normal=True)
    assert should_log_session(replace(ok, termination="SC"), False, dontlog_normal=True)
    assert not should_log_session(replace(ok, termination="SC", bytes_in=0), True, True)
    assert session_level(ok, True) == LOG_INFO
    assert session_level(replace(ok, termination="SC"), False) == LOG_INFO
    assert session_level(replace(ok, termination="SC"), True) == LOG_ERR


def test_ending_tells_fin_from_rst() -> None:
    with tcp_server() as srv:
        c = socket.create_connection(srv.getsockname(), timeout=3)
        a, _ = srv.accept()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        a.close()
        assert _ending(c) == "RST"
        c.close()
