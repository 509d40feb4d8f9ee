"""The lab's client: one new connection to VIP:6443 every ``interval`` seconds.

Each attempt is TCP connect + TLS + ``GET /`` + the answer (the backend's
name), under one deadline.  Attempts overlap: a slow one (a VIP whose owner
just died) never delays the next, so the record shows exactly when new
connections started to fail and when they came back.

The run is bounded: it stops by itself after ``--duration`` seconds, at most
``--max-inflight`` attempts run at once, and SIGTERM stops it early.  One JSON
line per finished attempt goes to stdout::

    {"t": 1234.567, "d": 0.004, "ok": true, "srv": "api2"}
    {"t": 1234.577, "d": 2.0, "ok": false, "err": "timeout"}

``t`` is ``time.monotonic()`` at the start of the attempt; Linux's monotonic
clock is shared by all processes, so the demo can line it up with its own
events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Attempt", "main", "parse_line", "run"]


@dataclass(frozen=True)
class Attempt:
    """One finished client attempt."""

    t: float
    d: float
    ok: bool
    srv: str = ""
    err: str = ""


def parse_line(line: str) -> Attempt | None:
    """Decode one line of the client's output; None for anything else."""
    try:
        obj = json.loads(line)
        return Attempt(float(obj["t"]), float(obj["d"]), bool(obj["ok"]), str(obj.get("srv", "")), str(obj.get("err", "")))
    except (ValueError, KeyError, TypeError):
        return None


async def _attempt(host: str, port: int, ctx: ssl.SSLContext | None, timeout: float) -> Attempt:
    t0 = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host if ctx else None
            )
            writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            # The server closes after one answer: read to EOF, bounded.
            data = b""
            while len(data) < 65536:
                more = await reader.read(4096)
                if not more:
                    break
                data += more
    except TimeoutError:
        return Attempt(t0, time.monotonic() - t0, False, err="timeout")
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return Attempt(t0, time.monotonic() - t0, False, err=type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 0.5)
    d = time.monotonic() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return Attempt(t0, d, False, err=(head.split(b"\r\n", 1)[0].decode(errors="replace") or "empty"))
    return Attempt(t0, d, True, srv=body.decode(errors="replace").strip()[:32])


async def run(
    host: str,
    port: int,
    *,
    ctx: ssl.SSLContext | None,
    interval: float,
    duration: float,
    timeout: float,
    max_inflight: int,
) -> int:
    """Start an attempt every ``interval`` s for ``duration`` s; print each
    result as a JSON line.  Returns the number of failed attempts."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sem = asyncio.Semaphore(max_inflight)
    failures = 0
    out = sys.stdout

    async def one() -> None:
        nonlocal failures
        try:
            a = await _attempt(host, port, ctx, timeout)
        finally:
            sem.release()
        failures += not a.ok
        rec: dict[str, object] = {"t": round(a.t, 4), "d": round(a.d, 4), "ok": a.ok}
        rec["srv" if a.ok else "err"] = a.srv if a.ok else a.err
        out.write(json.dumps(rec) + "\n")

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.05)
            out.flush()

    tasks: set[asyncio.Task[None]] = set()
    ftask = asyncio.create_task(flusher())
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        next_at = start + n * interval
        if next_at - start >= duration:
            break
        delay = next_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                break
        n += 1
        if sem.locked():
            # Too many attempts hang; skipping one is recorded as a failure.
            out.write(json.dumps({"t": round(time.monotonic(), 4), "d": 0.0, "ok": False, "err": "inflight"}) + "\n")
            failures += 1
            continue
        await sem.acquire()
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 1)
    ftask.cancel()
    out.write(json.dumps({"end": True, "attempts": n, "failures": failures}) + "\n")
    out.flush()
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="keeplb.lab.client", description=__doc__)
    p.add_argument("target", help="HOST:PORT, e.g. 10.77.0.10:6443")
    p.add_argument("--ca", type=Path, help="CA file: speak TLS and verify the server with it")
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--max-inflight", type=int, default=400)
    args = p.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit() or args.interval <= 0 or args.duration <= 0:
        p.error("need HOST:PORT, a positive --interval and --duration")
    ctx: ssl.SSLContext | None = None
    if args.ca:
        ctx = ssl.create_default_context(cafile=str(args.ca))
    asyncio.run(
        run(
            host,
            int(port),
            ctx=ctx,
            interval=args.interval,
            duration=args.duration,
            timeout=args.timeout,
            max_inflight=args.max_inflight,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
