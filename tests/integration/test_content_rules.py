"""`tcp-request inspect-delay` + `tcp-request content` + SNI use_backend, with the
real haproxy 2.6 as the oracle: the same config (only the ports differ) served
by both, the same clients against each, and each client must land on the same
backend (or be rejected) with both. 127.0.0.1 only.

The TLS clients are ClientHellos made by Python's ssl module (MemoryBIO,
server_hostname set): sent as they are, the backend answers its name and
echoes them, so the test also sees that the inspected bytes reach the server
first, whole and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from lbhelpers import terminate  # noqa: E402
from test_proxy import LO, TIMEOUT, Backend, free_port, run, running, stats_cmd  # noqa: E402

from keeplb.config.haproxy import parse_text  # noqa: E402

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

DELAY_S = 1.0


def client_hello(server_hostname: str) -> bytes:
    """The first flight of a TLS client asking for `server_hostname`."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def config(port: int, api: int, other: int, sock: Path, timeout_client: str = "10s") -> str:
    return f"""\
global
    stats socket {sock} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client {timeout_client}
    timeout server 10s
frontend tls
    bind 127.0.0.1:{port}
    tcp-request inspect-delay {int(DELAY_S * 1000)}ms
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    tcp-request content reject if {{ req.payload(0,4) -m bin 47455420 }}
    use_backend api if {{ req.ssl_sni -i api.example }}
    use_backend api if {{ req.ssl_sni -m end .api.example }}
    default_backend other
backend api
    server a 127.0.0.1:{api}
backend other
    server o 127.0.0.1:{other}
"""


# (name, pieces to send, pause between pieces in seconds)
CLIENTS: list[tuple[str, list[bytes], float]] = [
    ("sni api", [client_hello("api.example")], 0),
    ("sni API, -i", [client_hello("API.Example")], 0),
    ("sni suffix", [client_hello("v1.api.example")], 0),
    ("sni other", [client_hello("www.example")], 0),
    ("plain text", [b"hello there\n"], 0),
    ("http GET: rejected", [b"GET / HTTP/1.0\r\n\r\n"], 0),
    ("silent until inspect-delay expires", [], 0),
    ("hello in two pieces", [client_hello("api.example")[:7],
                             client_hello("api.example")[7:]], 0.1),
    ("hello split inside the name", [client_hello("api.example")[:60],
                                     client_hello("api.example")[60:]], 0.1),
]


async def outcome(port: int, pieces: list[bytes], pause: float) -> str:
    """The backend that answered (and whether it got every byte back in order),
    or 'rejected'."""
    r, w = await asyncio.wait_for(asyncio.open_connection(LO, port), TIMEOUT)
    sent = b"".join(pieces)
    try:
        for i, p in enumerate(pieces):
            if i:
                await asyncio.sleep(pause)
            w.write(p)
            await w.drain()
        line = await asyncio.wait_for(r.readline(), DELAY_S + TIMEOUT)
        if not line:
            return "rejected"
        echo = await asyncio.wait_for(r.readexactly(len(sent)), TIMEOUT) if sent else b""
        return line.decode().strip() + ("" if echo == sent else " (bytes lost or reordered)")
    except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError):
        return "rejected"
    finally:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()


def dreq(csv: str) -> str:
    lines = csv.splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "tls" and row.get("svname") == "FRONTEND":
            return row["dreq"]
    raise AssertionError(csv)


async def wait_port(port: int) -> None:
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection(LO, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        return
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.parametrize("timeout_client", ["10s", "500ms"])
def test_sni_routing_same_as_haproxy(tmp_path: Any, timeout_client: str) -> None:
    """With `timeout client` shorter than the inspect-delay, a client that stays
    silent (or sends too little for the rules) is closed at the client timeout."""

    async def body() -> None:
        api = await Backend("api").start()
        other = await Backend("other").start()
        h_port, k_port = free_port(), free_port()
        h_sock, k_sock = tmp_path / "h.sock", tmp_path / "k.sock"
        h_cfg = tmp_path / "haproxy.cfg"
        h_cfg.write_text(config(h_port, api.port, other.port, h_sock, timeout_client))
        proc = subprocess.Popen([str(HAPROXY), "-db", "-f", str(h_cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_port(h_port)
            cfg, diags = parse_text(config(k_port, api.port, other.port, k_sock, timeout_client))
            assert not diags.has_errors and not diags.warnings, [str(d) for d in diags]
            async with running(cfg):
                await wait_port(k_port)  # the probe is a silent client: counted by neither
                got = await asyncio.gather(
                    *(outcome(h_port, pieces, pause) for _, pieces, pause in CLIENTS),
                    *(outcome(k_port, pieces, pause) for _, pieces, pause in CLIENTS))
                h_got, k_got = got[: len(CLIENTS)], got[len(CLIENTS):]
                table = {name: (h, k) for (name, _, _), h, k in zip(CLIENTS, h_got, k_got,
                                                                     strict=True)}
                assert h_got == k_got, table
                # the oracle itself behaves as documented, so the comparison means something
                assert table["sni api"][0] == "api" and table["sni other"][0] == "other", table
                assert table["http GET: rejected"][0] == "rejected", table
                if timeout_client == "10s":
                    assert table["hello in two pieces"][0] == "api", table
                    assert table["silent until inspect-delay expires"][0] == "other", table
                else:
                    assert table["silent until inspect-delay expires"][0] == "rejected", table
                assert dreq(await stats_cmd(str(k_sock), "show stat")) == \
                    dreq(await stats_cmd(str(h_sock), "show stat")) == "1"
        finally:
            terminate(proc)
            for b in (api, other):
                if b.server is not None:
                    b.server.close()

    run(body)
