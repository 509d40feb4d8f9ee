"""`tcp-request connection accept|reject` through real loopback sockets.

What haproxy 2.6 does, seen on loopback with the same kind of config: a
rejected client is reset at once (one RST: its read fails with ECONNRESET),
never reaches a server and is not logged; the frontend counts it in `dcon`
and `conn_tot` but not in `stot`, and `show info` in CumConns but not in
CumReq. Clients bind 127.0.0.2 / 127.0.0.3 to differ from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from lbhelpers import UdpLog  # noqa: E402
from test_proxy import (  # noqa: E402
    LO,
    TIMEOUT,
    Backend,
    free_port,
    run,
    running,
    sessions_end,
    stats_cmd,
)

from keeplb.config.haproxy import parse_text  # noqa: E402
from keeplb.config.model import HaproxyConfig  # noqa: E402
from keeplb.lb import metrics  # noqa: E402


def lb_config(port: int, srv_port: int, rules: str, sock: Path, log_port: int) -> HaproxyConfig:
    cfg, diags = parse_text(f"""\
global
    stats socket {sock} level admin
    log 127.0.0.1:{log_port} local0
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen l
    bind 127.0.0.1:{port}
{rules}
    server s1 127.0.0.1:{srv_port}
""")
    assert not diags.has_errors and not diags.warnings, [str(d) for d in diags]
    return cfg


async def attempt(port: int, src: str) -> str:
    """What a client bound to `src` sees: the server's first line, 'reset' or 'closed'."""
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(LO, port, local_addr=(src, 0)), TIMEOUT)
    except ConnectionResetError:
        return "reset"  # the RST came before the connection was reported
    try:
        line = await asyncio.wait_for(r.readline(), TIMEOUT)
    except ConnectionResetError:
        return "reset"
    finally:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()
    return line.decode().strip() if line else "closed"


def frontend_row(csv: str, name: str) -> dict[str, str]:
    lines = csv.splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == name and row.get("svname") == "FRONTEND":
            return row
    raise AssertionError(f"no FRONTEND row for {name}:\n{csv}")


def info(text: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def scenario(tmp_path: Path, rules: str, clients: list[str]) -> dict[str, object]:
    """Run keeplb with `rules`, send one client from each address in turn; return
    what each saw, the server's accept count, the stats, the logs and /metrics."""
    out: dict[str, object] = {}
    log = UdpLog()

    async def body() -> None:
        b = await Backend("s1").start()
        port = free_port()
        sock = tmp_path / "stats.sock"
        try:
            async with running(lb_config(port, b.port, rules, sock, log.port)) as lb:
                out["seen"] = [await attempt(port, src) for src in clients]
                await sessions_end(lb, TIMEOUT)
                out["accepted"] = b.accepted
                out["fe"] = frontend_row(await stats_cmd(str(sock), "show stat"), "l")
                out["info"] = info(await stats_cmd(str(sock), "show info"))
                out["metrics"] = metrics.render_metrics(lb.runtime).decode()
                loop = asyncio.get_running_loop()
                out["logs"] = await loop.run_in_executor(None, log.lines)
        finally:
            await b.stop()

    try:
        run(body)
    finally:
        log.close()
    return out


def test_a_rejected_client_is_reset_counted_and_not_logged(tmp_path: Path) -> None:
    out = scenario(tmp_path, "    tcp-request connection reject if { src 127.0.0.2 }",
                   ["127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2", "127.0.0.2"])
    assert out["seen"] == ["s1", "reset", "s1", "reset", "reset"]
    assert out["accepted"] == 2  # the rejected ones never reached the server
    fe = out["fe"]
    assert isinstance(fe, dict)
    assert (fe["dcon"], fe["stot"], fe["conn_tot"], fe["scur"]) == ("3", "2", "5", "0")
    inf = out["info"]
    assert isinstance(inf, dict)
    assert (inf["CumConns"], inf["CumReq"], inf["CurrConns"]) == ("5", "2", "0")
    assert 'haproxy_frontend_denied_connections_total{proxy="l"} 3.0' in str(out["metrics"])
    logs = out["logs"]
    assert isinstance(logs, list) and len(logs) == 2, logs
    assert all("127.0.0.1:" in line and "127.0.0.2" not in line for line in logs), logs


def test_unless(tmp_path: Path) -> None:
    out = scenario(tmp_path, "    tcp-request connection reject unless { src 127.0.0.1 }",
                   ["127.0.0.2", "127.0.0.1", "127.0.0.3"])
    assert out["seen"] == ["reset", "s1", "reset"]
    assert out["accepted"] == 1


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    rules = """\
    acl lab src 127.0.0.3
    tcp-request connection accept if lab
    tcp-request connection reject if { src 127.0.0.0/8 }"""
    out = scenario(tmp_path, rules, ["127.0.0.3", "127.0.0.1", "127.0.0.2"])
    assert out["seen"] == ["s1", "reset", "reset"]
    assert out["accepted"] == 1
    fe = out["fe"]
    assert isinstance(fe, dict) and (fe["dcon"], fe["stot"]) == ("2", "1")
