"""haproxy's log lines, byte for byte where they do not depend on time, ports or pid:
keeplb and a real haproxy 2.6 run the same config on loopback, see the same
client, and send syslog to UDP sockets this test reads."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lbhelpers import UdpLog  # noqa: E402
from test_proxy import (  # noqa: E402
    LO,
    Backend,
    config,
    free_port,
    listen,
    run,
    running,
    server,
)

from keeplb.config.model import LogTarget  # noqa: E402
from keeplb.lb.log import (  # noqa: E402
    SessionLog,
    accept_date,
    format_tcplog,
    rfc3164_header,
    should_log_session,
)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def test_tcplog_format_fields() -> None:
    wall = time.mktime((2026, 11, 25, 11, 29, 25, 0, 0, -1)) + 0.516
    s = SessionLog("127.0.0.1", 58322, wall, "fe", "be", "<NOSRV>", 503, -1, 502, 0, 0, "sQ",
                   2, 2, 1, 0, 0, False, 0, 1)
    assert format_tcplog(s) == ("127.0.0.1:58322 [25/Nov/2026:11:29:25.516] fe be/<NOSRV> "
                                "503/-1/502 0 sQ 2/2/1/0/0 0/1")
    assert accept_date(wall) == "25/Nov/2026:11:29:25.516"
    assert rfc3164_header(134, wall, "haproxy", 42) == "<134>Nov 25 11:29:25 haproxy[42]: "
    r = SessionLog("::1", 1, wall, "fe", "be", "s1", 0, 0, 1, 0, 0, "--", 1, 1, 0, 0, 1, True,
                   0, 0)
    assert " 1/1/0/0/+1 " in format_tcplog(r)
    assert format_tcplog(r).startswith("::1:1 [")
    assert not should_log_session(r, dontlognull=True)
    assert should_log_session(r, dontlognull=False)
    assert not should_log_session(replace_term(r, "SC"), dontlognull=True)


def replace_term(s: SessionLog, term: str) -> SessionLog:
    from dataclasses import replace
    return replace(s, termination=term)


def normalize(line: str) -> str:
    """Hide what legitimately differs between two runs: syslog time and pid, the
    client port, the accept date and the millisecond timers."""
    line = re.sub(r"^<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d (\S+)\[\d+\]: ", r"<\1>DATE \2[PID]: ",
                  line)
    line = re.sub(r"127\.0\.0\.1:\d+ \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\]",
                  "127.0.0.1:PORT [ACCEPT]", line)
    line = re.sub(r" (-?\d+)/(-?\d+)/(-?\d+) ",
                  lambda m: " " + "/".join("T" if int(g) >= 0 else "-1" for g in m.groups())
                  + " ", line)
    return line


HAPROXY_CFG = """
global
    log 127.0.0.1:{log} local0
defaults
    mode tcp
    log global
    option tcplog
    {dontlognull}
    timeout connect 1s
    timeout client 5s
    timeout server 5s
listen fe
    bind 127.0.0.1:{port}
    server s1 127.0.0.1:{srv}
listen fe2
    bind 127.0.0.1:{port2}
    server s2 127.0.0.1:{srv} disabled
listen fe3
    bind 127.0.0.1:{port3}
    timeout queue 300
    server s3 127.0.0.1:{srv} maxconn 1
"""


def _client_sessions(port: int, port2: int, port3: int) -> None:
    """The same client behaviour for both proxies: one normal exchange, one
    connection that sends nothing, one to a backend without a usable server,
    and one that times out in the queue behind another."""
    with socket.create_connection((LO, port), timeout=5) as c:
        c.sendall(b"hello\n")
        got = b""
        while len(got) < len(b"s1\nhello\n"):
            data = c.recv(100)
            if not data:
                break
            got += data
        assert got == b"s1\nhello\n"
    time.sleep(0.1)
    with socket.create_connection((LO, port), timeout=5) as c:
        assert c.recv(100) == b"s1\n"
    time.sleep(0.1)
    with socket.create_connection((LO, port2), timeout=5) as c:
        c.settimeout(5)
        assert c.recv(100) == b""
    time.sleep(0.1)
    with socket.create_connection((LO, port3), timeout=5) as first:
        first.sendall(b"x")
        got = b""
        while len(got) < len(b"s1\nx"):  # all of it: unread data would make a RST
            got += first.recv(100)
        assert got == b"s1\nx"
        with socket.create_connection((LO, port3), timeout=5) as queued:
            queued.sendall(b"y")
            queued.settimeout(5)
            assert queued.recv(100) == b""
    time.sleep(0.1)


def _haproxy_lines(srv_port: int, dontlognull: bool) -> list[str]:
    log = UdpLog()
    port, port2, port3 = free_port(), free_port(), free_port()
    path = f"/tmp/klb-lblog-{os.getpid()}.cfg"
    with open(path, "w") as f:
        f.write(HAPROXY_CFG.format(log=log.port, port=port, port2=port2, port3=port3,
                                   srv=srv_port,
                                   dontlognull="option dontlognull" if dontlognull else ""))
    proc = subprocess.Popen([HAPROXY, "-f", path, "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection((LO, port2), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        log.lines(0.3)  # drop the probe's line
        _client_sessions(port, port2, port3)
        return log.lines()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        os.unlink(path)


def _keeplb_lines(srv_port: int, dontlognull: bool) -> list[str]:
    log = UdpLog()
    port, port2, port3 = free_port(), free_port(), free_port()
    opts = {"tcplog": True, "dontlognull": dontlognull}
    cfg = config(listen("fe", port, [server("s1", srv_port)], options=opts,
                        log_global=True),
                 listen("fe2", port2, [server("s2", srv_port, disabled=True)], options=opts,
                        log_global=True),
                 listen("fe3", port3, [server("s3", srv_port, maxconn=1)], options=opts,
                        log_global=True, timeouts={"queue": 300}),
                 logs=[LogTarget(f"127.0.0.1:{log.port}", "local0")])
    lines: list[str] = []

    async def body() -> None:
        async with running(cfg):
            await asyncio.get_running_loop().run_in_executor(
                None, _client_sessions, port, port2, port3)
            lines.extend(await asyncio.get_running_loop().run_in_executor(None, log.lines))

    try:
        run(body)
    finally:
        log.close()
    return lines


def _with_backend(fn: Callable[[int, bool], list[str]], dontlognull: bool) -> list[str]:
    out: list[str] = []

    async def body() -> None:
        b = await Backend("s1").start()
        try:
            out.extend(await asyncio.get_running_loop().run_in_executor(
                None, fn, b.port, dontlognull))
        finally:
            await b.stop()

    run(body)
    return out


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
@pytest.mark.parametrize("dontlognull", [False, True])
def test_tcplog_lines_match_real_haproxy(dontlognull: bool) -> None:
    theirs = [normalize(x) for x in _with_backend(_haproxy_lines, dontlognull)]
    ours = [normalize(x) for x in _with_backend(_keeplb_lines, dontlognull)]
    # haproxy logs its own startup/stop lines too; compare the session lines.
    theirs = [x for x in theirs if "[ACCEPT]" in x]
    ours = [x for x in ours if "[ACCEPT]" in x]
    assert len(theirs) == (3 if dontlognull else 5), theirs
    assert ours == theirs


PLAIN_CFG = """
global
    log 127.0.0.1:{log} local0
defaults
    mode tcp
    log global
    timeout connect 1s
    timeout client 5s
    timeout server 5s
listen fe
    bind 127.0.0.1:{port}
    server s1 127.0.0.1:{srv}
"""


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
def test_without_tcplog_the_connect_line_matches_haproxy() -> None:
    def one_connection(port: int) -> None:
        socket.create_connection((LO, port), timeout=5).close()
        time.sleep(0.1)

    log = UdpLog()
    srv, port = free_port(), free_port()
    path = f"/tmp/klb-lblog-plain-{os.getpid()}.cfg"
    with open(path, "w") as f:
        f.write(PLAIN_CFG.format(log=log.port, port=port, srv=srv))
    proc = subprocess.Popen([HAPROXY, "-f", path, "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                one_connection(port)
                break
            except OSError:
                time.sleep(0.05)
        theirs = log.lines()
    finally:
        proc.terminate()
        proc.wait(10)
        os.unlink(path)
    port2 = free_port()
    cfg = config(listen("fe", port2, [server("s1", srv)], log_global=True),
                 logs=[LogTarget(f"127.0.0.1:{log.port}", "local0")])
    ours: list[str] = []

    async def body() -> None:
        async with running(cfg):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, one_connection, port2)
            ours.extend(await loop.run_in_executor(None, log.lines))

    try:
        run(body)
    finally:
        log.close()

    def norm(x: str) -> str:
        return re.sub(r":\d+", ":P", normalize(x))
    theirs = [norm(x) for x in theirs if "Connect from" in x][-1:]
    ours = [norm(x) for x in ours if "Connect from" in x]
    assert theirs == ours == ["<134>DATE haproxy[PID]: Connect from 127.0.0.1:P to "
                              "127.0.0.1:P (fe/TCP)\n"]
