"""A stand-in kube-apiserver for the lab: HTTPS on :6443.

``GET /readyz`` answers ``ok``; any other path answers the server's name, so
the client can tell which backend served it.  One request per connection
(``Connection: close``), as the demo's client opens a new connection for each.

Run inside a lab host::

    python -m keeplb.lab.backend --name api1 --cert api.pem --key api.key
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

__all__ = ["make_certs", "main", "serve"]

_MAX_HEAD = 8192


def make_certs(directory: Path, hostnames: list[str]) -> tuple[Path, Path, Path]:
    """Write a throw-away CA and one server certificate for ``hostnames``
    (names or IP addresses) into ``directory``.  Returns (ca, cert, key)."""
    import trustme  # only the lab needs it; imported here to keep import time low

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="keeplb lab")
    leaf = ca.issue_cert(*hostnames)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "api.pem", directory / "api.key"
    ca.cert_pem.write_to_path(str(ca_path))
    leaf.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _handle(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        parts = head.split(b"\r\n", 1)[0].split()
        path = parts[1] if len(parts) >= 2 else b""
        if path == b"/readyz":
            writer.write(_response("200 OK", b"ok"))
        elif parts and parts[0] in (b"GET", b"HEAD"):
            writer.write(_response("200 OK", name.encode()))
        else:
            writer.write(_response("400 Bad Request", b"bad request"))
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout=2)


async def serve(name: str, host: str, port: int, ctx: ssl.SSLContext | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(
        lambda r, w: _handle(name, r, w), host, port, ssl=ctx, limit=_MAX_HEAD, backlog=1024
    )
    async with server:
        # The lab waits for this line before it starts the balancers, so their
        # first health checks do not race the server's start.
        sys.stdout.write(f"{name} listening on {host}:{port}\n")
        sys.stdout.flush()
        await stop.wait()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="keeplb.lab.backend", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    args = p.parse_args(argv)
    ctx: ssl.SSLContext | None = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    try:
        _run(serve(args.name, args.host, args.port, ctx))
    except OSError as exc:
        p.exit(1, f"keeplb.lab.backend: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
