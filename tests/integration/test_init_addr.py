"""`init-addr` at start, against haproxy 2.6 on the same config (loopback only).

`no-such-host.invalid` never resolves (RFC 6761 reserves .invalid)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lbhelpers import Echo, free_port, request
from tests.integration.test_stats import haproxy_query as query

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CFG = """\
global
    stats socket {sock} level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 5s
    timeout server 5s
listen px
    bind 127.0.0.1:{port}
    balance roundrobin
    server s1 no-such-host.invalid:{be} init-addr none
    server s2 no-such-host.invalid:{be} init-addr libc,127.0.0.1
    server s3 localhost:{be} init-addr none,libc
"""


def statuses(sock: Path) -> dict[str, str]:
    rows = [line.split(",") for line in query(sock, "show stat").splitlines()[1:] if line]
    return {r[1]: r[17] for r in rows if r[1].startswith("s")}


def state(sock: Path) -> dict[str, tuple[str, str, str]]:
    """srv_name -> (srv_addr, srv_op_state, srv_admin_state)."""
    lines = [line.split() for line in query(sock, "show servers state").splitlines()[2:]]
    return {f[3]: (f[4], f[5], f[6]) for f in lines if len(f) > 6}


@pytest.fixture
def backend() -> Iterator[Echo]:
    e = Echo(b"be")
    yield e
    e.close()


def start(cmd: list[str], sock: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            stop(p)
            pytest.fail(f"{cmd[0]} did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.mark.parametrize("tool", ["haproxy", "keeplb"])
def test_init_addr_methods_as_haproxy(tool: str, tmp_path: Path, backend: Echo) -> None:
    if tool == "haproxy" and not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    sock, port = tmp_path / "stats.sock", free_port()
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(CFG.format(sock=sock, port=port, be=backend.port))
    cmd = ([HAPROXY, "-db", "-f", str(cfg)] if tool == "haproxy"
           else [sys.executable, "-m", "keeplb", "lb", "-f", str(cfg)])
    log = tmp_path / "out.log"
    p = start(cmd, sock, log)
    try:
        # none: no address, in resolution maintenance; libc failing falls back to
        # the literal; `none` first wins over a name that would resolve.
        assert statuses(sock) == {"s1": "MAINT (resolution)", "s2": "no check",
                                  "s3": "MAINT (resolution)"}
        st = state(sock)
        assert st["s1"] == ("-", "0", "32") and st["s3"] == ("-", "0", "32")
        assert st["s2"] == ("127.0.0.1", "2", "0")
        assert "'server px/s2' : could not resolve address 'no-such-host.invalid', " \
               "falling back to configured address." in log.read_text()
        # No address family to update: haproxy's answer, word for word.
        assert query(sock, "set server px/s1 addr 127.0.0.1") == (
            "Update for the current server address family is only supported through "
            "configuration file by 'stats socket command'\n\n")
        if tool == "haproxy":
            # haproxy 2.6 then has s1 READY with no address (its connections fail
            # after the connect retries), and `state ready` does the same; keeplb
            # keeps such a server in maintenance until a reload gives it an address.
            return
        assert statuses(sock)["s1"] == "MAINT (resolution)"
        assert query(sock, "set server px/s1 state ready").strip() == ""
        assert statuses(sock)["s1"] == "MAINT (resolution)"
        assert {request(port) for _ in range(4)} == {b"be"}
    finally:
        stop(p)


def test_unresolvable_name_without_fallback_stops_the_start(tmp_path: Path) -> None:
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(CFG.format(sock=tmp_path / "s.sock", port=free_port(), be=1)
                   .replace(" init-addr libc,127.0.0.1", ""))
    p = subprocess.run([sys.executable, "-m", "keeplb", "lb", "-f", str(cfg)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "'server px/s2' : could not resolve address 'no-such-host.invalid'." in p.stderr
    assert "Traceback" not in p.stderr
