"""ACL pattern files (`-f FILE`), with the real haproxy 2.6 as the oracle: the
same files through `haproxy -c` and keeplb's check (same verdict, same error
text), and the same config served by both (a client from each address is
served or rejected alike, each port goes to the same backend). Clients bind
127.0.0.2 .. 127.0.0.5 to differ from 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lbhelpers import terminate  # noqa: E402
from test_proxy import Backend, free_port, run, running  # noqa: E402
from test_tcp_request import attempt  # noqa: E402

from keeplb.config.haproxy import parse_text  # noqa: E402
from keeplb.config.patterns import pattern_lines  # noqa: E402

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

HEAD = """\
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
"""

# (name, file text, the ACL line using it as {f}): haproxy's verdict decides
FILES = [
    ("addresses", "127.0.0.2\n10.0.0.0/8\n::1\n", "acl ok src -f {f}"),
    ("comment and blank lines", "#c\n\n \t\n127.0.0.2\n", "acl ok src -f {f}"),
    ("a comment after spaces is a pattern", "  # c\n", "acl ok src -f {f}"),
    ("spaces before a pattern", " \t127.0.0.2\n", "acl ok src -f {f}"),
    ("spaces after a pattern", "127.0.0.2 \n", "acl ok src -f {f}"),
    ("CRLF", "127.0.0.2\r\n127.0.0.3\r\n", "acl ok src -f {f}"),
    ("no final newline", "127.0.0.2", "acl ok src -f {f}"),
    ("empty", "", "acl ok src -f {f}"),
    ("a bad address on line 3", "127.0.0.2\n#\nnope\n", "acl ok src -f {f}"),
    ("with patterns on the line", "127.0.0.2\n", "acl ok src -f {f} 127.0.0.3"),
    ("a -f after a pattern is a pattern", "127.0.0.2\n", "acl ok src 127.0.0.3 -f {f}"),
    ("ports", "80\n443-444\n8000:8080\n", "acl ok dst_port -f {f}"),
    ("a bad port", "80\nabc\n", "acl ok dst_port -f {f}"),
    ("names with -i", "api.example.com\n", "acl ok req.ssl_sni -i -f {f}"),
    ("missing file", None, "acl ok src -f {f}"),
    ("anonymous", "127.0.0.2\n", "tcp-request connection reject if !{{ src -f {f} }}"),
    ("anonymous, missing file", None, "tcp-request connection reject if !{{ src -f {f} }}"),
]


def check_config(acl_line: str) -> str:
    return (f"{HEAD}frontend fe\n    bind 127.0.0.1:{free_port()}\n    {acl_line}\n"
            "    default_backend be\nbackend be\n    server s1 127.0.0.1:1\n")


def haproxy_errors(cfg: Path) -> tuple[int, list[str]]:
    done = subprocess.run([str(HAPROXY), "-c", "-f", str(cfg)], capture_output=True,
                          text=True, timeout=30)
    found = [line.split(" : ", 3)[-1].rstrip(".") for line in done.stderr.splitlines()
             if "[ALERT]" in line and "parsing [" in line]
    return done.returncode, found


@pytest.mark.parametrize(("name", "text", "acl_line"), FILES, ids=[f[0] for f in FILES])
def test_the_check_agrees_with_haproxy(tmp_path: Path, name: str, text: str | None,
                                       acl_line: str) -> None:
    patterns = tmp_path / "patterns.lst"
    if text is not None:
        patterns.write_text(text)
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(check_config(acl_line.format(f=patterns)))
    rc, h_errors = haproxy_errors(cfg)
    _, diags = parse_text(cfg.read_text(), str(cfg))
    k_errors = [d.message for d in diags.errors]
    assert (rc == 0) == (not k_errors), (h_errors, k_errors)
    for h, k in zip(h_errors, k_errors, strict=False):
        # haproxy's rule keyword and context differ ('tcp-request connection reject' :
        # error detected in frontend 'fe' while parsing 'if' condition); the cause is the same
        assert k.endswith(h.split(" : ")[-1]), (h, k)


def test_the_file_s_lines_are_haproxy_s() -> None:
    assert pattern_lines("#a\n b\n\tc\r\nd \n\n  #e\nf\rg\n") == [
        (2, "b"), (3, "c"), (4, "d "), (6, "#e"), (7, "f")]


def serve_config(port: int, ports: tuple[int, int], a: int, b: int, allow: Path,
                 port_file: Path) -> str:
    return (f"{HEAD}frontend fe\n    bind 127.0.0.1:{port}\n"
            f"    bind 127.0.0.1:{ports[0]}\n    bind 127.0.0.1:{ports[1]}\n"
            f"    acl allowed src -f {allow}\n"
            f"    tcp-request connection reject if !allowed\n"
            f"    tcp-request connection reject if {{ src -f {allow}.deny }}\n"
            f"    use_backend b if {{ dst_port -f {port_file} }}\n"
            "    default_backend a\n"
            f"backend a\n    server a 127.0.0.1:{a}\n"
            f"backend b\n    server b 127.0.0.1:{b}\n")


async def served(port: int, within: float = 10.0) -> None:
    """Waits until `port` serves a client from 127.0.0.2 (which the file allows)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            if await attempt(port, "127.0.0.2") == "a":
                return
        except OSError:
            pass
        assert asyncio.get_running_loop().time() < deadline, f"nothing serves on {port}"
        await asyncio.sleep(0.05)


def test_served_and_rejected_as_haproxy(tmp_path: Path) -> None:
    """127.0.0.2 and the /31 of .4 are allowed by the named ACL's file, .5 is
    then denied by an anonymous one's; ports from a file pick a backend."""
    allow = tmp_path / "allow.lst"
    allow.write_text("# allowed\n127.0.0.2\n 127.0.0.4/31\r\n")
    (tmp_path / "allow.lst.deny").write_text("127.0.0.5\n")
    clients = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.1"]

    async def body() -> None:
        a, b = await Backend("a").start(), await Backend("b").start()
        h_port, k_port = free_port(), free_port()
        h_ports, k_ports = (free_port(), free_port()), (free_port(), free_port())
        port_file = tmp_path / "ports.lst"
        port_file.write_text(f"{h_ports[1]}\n{k_ports[1]}\n")
        h_cfg = tmp_path / "haproxy.cfg"
        h_cfg.write_text(serve_config(h_port, h_ports, a.port, b.port, allow, port_file))
        proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(h_cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cfg, diags = parse_text(serve_config(k_port, k_ports, a.port, b.port, allow,
                                                 port_file))
            assert not diags.has_errors and not diags.warnings, [str(d) for d in diags]
            async with running(cfg):
                for port in (h_port, k_port):  # both serve an allowed client first
                    await served(port)
                seen = {}
                for who, port, others in (("haproxy", h_port, h_ports),
                                          ("keeplb", k_port, k_ports)):
                    seen[who] = [await attempt(port, src) for src in clients]
                    seen[who] += [await attempt(p, "127.0.0.2") for p in others]
                assert seen["haproxy"] == seen["keeplb"], seen
                assert seen["haproxy"] == ["a", "reset", "a", "reset", "reset", "a", "b"], seen
        finally:
            terminate(proc)
            for s in (a, b):
                if s.server is not None:
                    s.server.close()

    run(body)
