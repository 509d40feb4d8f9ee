"""`log-format` against haproxy 2.6: the same config file, run by haproxy and
then by keeplb on the same loopback ports, the same clients, and the syslog
lines compared field by field (timers, ephemeral ports and dates masked);
and `haproxy -c` against keeplb's check on formats haproxy refuses."""

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
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lbhelpers import UdpLog  # noqa: E402
from test_lblog import _client_sessions  # noqa: E402
from test_proxy import LO, Backend, free_port, run, running  # noqa: E402

from keeplb.config.haproxy import parse  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")

# Every variable haproxy 2.6 accepts in TCP mode, one per '|'-separated field,
# and the flags keeplb renders: quoting (%o and per variable), hexadecimal, '-M'.
VARIABLES = ("ci cp fi fp bi bp si sp t T Tl Ts ms pid H ft f b s Tw Tc Tt Td Th Tu B U ts "
             "tsc ac fc bc sc rc sq bq lc rt ID ST hr hrl hs hsl sslc sslv").split()
FORMAT = ("[" + "|".join("%" + v for v in VARIABLES) + "] %{+X}ci:%{+X}fp %{+X}Ts/%{+X}ms "
          "%{+X}pid %{+X}rt %{+Q}o %ci %{-Q}cp %ft %{+E}s %ID %{-M}sslc %b%%  x%-y %[src]")

TIMER = {"Tw", "Tc", "Tt", "Td", "Tu"}
EPHEMERAL = {"cp", "bp"}  # the client's and the server connection's source ports
DATES = {"t": r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3}",
         "T": r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000",
         "Tl": r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}",
         "Ts": r"\d{10}", "ms": r"\d{3}"}

CFG = """
global
    log 127.0.0.1:{log} local0
defaults
    mode tcp
    log global
    option tcplog
    log-format "{fmt}"
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


def _probe(port: int) -> None:
    """One connection that reads nothing: haproxy's readiness probe, made in
    the keeplb run too so that both count the same sessions (%rt, %lc)."""
    for _ in range(100):
        try:
            socket.create_connection((LO, port), timeout=1).close()
            time.sleep(0.2)  # its session ends before the next begins (%ac, %fc...)
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the proxy never listened")


def _haproxy_run(path: str, ports: tuple[int, int, int], log: UdpLog) -> list[str]:
    proc = subprocess.Popen([HAPROXY, "-f", path, "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _probe(ports[1])
        _client_sessions(*ports)
        return log.lines()
    finally:
        proc.terminate()
        proc.wait(10)


def _keeplb_run(path: str, ports: tuple[int, int, int], log: UdpLog) -> list[str]:
    cfg, diags = parse([path], env={})
    assert not diags.has_errors, [str(d) for d in diags]
    # haproxy's warning, and keeplb's for the sample expression it logs as '-'
    assert [d.message for d in diags.warnings] == [
        "'log-format' overrides previous 'option tcplog' in 'defaults' section"] + [
        "sample expression '%[src]' in 'log-format' is not supported by keeplb; it is "
        "logged as '-'"] * 3
    lines: list[str] = []

    async def body() -> None:
        async with running(cfg):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _probe, ports[1])
            await loop.run_in_executor(None, _client_sessions, *ports)
            lines.extend(await loop.run_in_executor(None, log.lines))

    run(body)
    return lines


def _both_runs() -> tuple[list[str], list[str]]:
    """haproxy's lines and keeplb's, for the same config file and ports."""
    out: dict[str, list[str]] = {}

    async def body() -> None:
        b = await Backend("s1").start()
        try:
            loop = asyncio.get_running_loop()
            ports = (free_port(), free_port(), free_port())
            path = f"/tmp/klb-logformat-{os.getpid()}.cfg"
            for name, fn in (("haproxy", _haproxy_run), ("keeplb", _keeplb_run)):
                log = UdpLog()
                try:
                    with open(path, "w") as f:
                        f.write(CFG.format(log=log.port, fmt=FORMAT, port=ports[0],
                                           port2=ports[1], port3=ports[2], srv=b.port))
                    out[name] = await loop.run_in_executor(None, _run_in_thread, fn, path,
                                                           ports, log)
                finally:
                    log.close()
                    os.unlink(path)
        finally:
            await b.stop()

    run(body)
    return out["haproxy"], out["keeplb"]


def _run_in_thread(fn: Callable[[str, tuple[int, int, int], UdpLog], list[str]], path: str,
                   ports: tuple[int, int, int], log: UdpLog) -> list[str]:
    return fn(path, ports, log)


_HEADER = re.compile(r"^<134>\w{3} [ \d]\d \d\d:\d\d:\d\d haproxy\[(\d+)\]: \[(.*)\] (.*)\n$")


def _fields(line: str) -> tuple[dict[str, str], str, str]:
    """The variables of one session line by name, the rest of the line, and the
    pid of the syslog header."""
    m = _HEADER.match(line)
    assert m, line
    values = m.group(2).split("|")
    assert len(values) == len(VARIABLES), line
    return dict(zip(VARIABLES, values, strict=True)), m.group(3), m.group(1)


def _masked(line: str) -> tuple[list[str], str]:
    """What must be equal between haproxy and keeplb: each field, with timers
    reduced to their sign, dates to their shape and ephemeral ports to theirs."""
    fields, rest, pid = _fields(line)
    out: list[str] = []
    for name, value in fields.items():
        if name in TIMER:
            assert re.fullmatch(r"-1|\d+", value), (name, value)
            value = "T" if value != "-1" else "-1"
        elif name in EPHEMERAL:
            assert re.fullmatch(r"-|\d+", value), (name, value)
            value = "P" if value != "-" else "-"
        elif name in DATES:
            assert re.fullmatch(DATES[name], value), (name, value)
            value = "D"
        elif name == "pid":
            assert value == pid, (value, pid)  # %pid is the process that logs
            value = "PID"
        out.append(f"{name}={value}")
    # the second part: hex client address and frontend port, hex date, pid and
    # counter, quoting, escaping, '-M', '%%', the dropped '%', the expression
    m = re.fullmatch(r"7F000001:([0-9A-F]{4}) ([0-9A-F]{8})/([0-9A-F]{2,3}) ([0-9A-F]{4,}) "
                     r'([0-9A-F]{4}) "127\.0\.0\.1" (\d+) "(\w+)" "(.*)" "" "" "(\w+)"% x-y "(.*)"',
                     rest)
    assert m, rest
    assert int(m.group(1), 16) == int(fields["fp"])
    assert int(m.group(2), 16) == int(fields["Ts"]) and int(m.group(3), 16) == int(fields["ms"])
    assert int(m.group(4), 16) == int(pid) and int(m.group(5), 16) == int(fields["rt"])
    assert m.group(6) == fields["cp"] and m.group(7) == fields["ft"]
    assert m.group(8) == fields["s"] and m.group(9) == fields["b"]
    return out, m.group(10)


def test_log_format_lines_match_haproxy_field_by_field() -> None:
    theirs, ours = _both_runs()
    theirs = [x for x in theirs if "[" in x and "|" in x]  # session lines only
    ours = [x for x in ours if "[" in x and "|" in x]
    # the probe, the exchange, the silent connection, no server, and the two of
    # the queue (the served one ends last): six sessions each
    assert len(theirs) == len(ours) == 6, (theirs, ours)

    def key(line: str) -> tuple[int, int]:
        f, _, _ = _fields(line)
        return int(f["rt"]), int(f["lc"])

    theirs.sort(key=key)
    ours.sort(key=key)
    for h, k in zip(theirs, ours, strict=True):
        h_fields, h_expr = _masked(h)
        k_fields, k_expr = _masked(k)
        assert k_fields == h_fields, (h, k)
        # haproxy evaluates the sample expression, keeplb logs it as missing
        assert (h_expr, k_expr) == ("127.0.0.1", "")
    # what the sessions were: the termination states and servers, as both agree
    states = [(_fields(x)[0]["f"], _fields(x)[0]["s"], _fields(x)[0]["ts"]) for x in ours]
    assert sorted(states) == sorted([("fe2", "<NOSRV>", "SC"), ("fe", "s1", "--"),
                                     ("fe", "s1", "--"), ("fe2", "<NOSRV>", "SC"),
                                     ("fe3", "s3", "--"), ("fe3", "<NOSRV>", "sQ")]), states


# --------------------------------------------------------------- haproxy -c

BAD_FORMATS = [
    "%zz",                      # unknown variable
    "%ci %{+Q",                 # unterminated %{...}
    "%{+Q}",                    # flags without a variable
    "%ci%",                     # a trailing '%'
    "a %1",                     # '%' then a digit
    "%r",                       # HTTP only
    "%{+Q}[",                   # an empty sample expression
    "%[src",                    # no ']'
    "%[src x]",
    "%[nosuch] %ci",
    "%[src,]",
    "%[src(",
    "%[src,lower(]",
    "%{+Q}9",
]


def _haproxy_check(path: Path) -> tuple[int, list[str]]:
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)
    found = re.findall(r"\[(?:ALERT|WARNING)\].*?\[[^\]]*:(\d+)\]: failed to parse log-format : "
                       r"(.*)\.$", proc.stderr, re.M)
    return proc.returncode, [f"{line}: {msg}" for line, msg in found]


@pytest.mark.parametrize("fmt", BAD_FORMATS)
def test_bad_formats_rejected_as_haproxy_rejects_them(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text("defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
                    f"    timeout server 1s\n    log-format \"{fmt}\"\nlisten fe\n"
                    "    bind 127.0.0.1:1\n    log 127.0.0.1:514 local0\n"
                    "    server s1 127.0.0.1:2\n")
    rc, theirs = _haproxy_check(path)
    assert rc == 1 and len(theirs) == 1, theirs
    _, diags = parse([str(path)], env={})
    ours = [f"{d.span.line if d.span else 0}: {d.message.removeprefix('failed to parse log-format : ')}"
            for d in diags.errors]
    assert ours == theirs
