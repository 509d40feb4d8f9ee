"""Zero-downtime reload: keeplb lb -W against haproxy -W, same config, same load, same run.

Loopback only. A backend process serves deterministic bytes; the load is a
bounded stream of new connections (default 300/s) plus a few long transfers
checked byte for byte (sha256); meanwhile the master gets SIGUSR2 N times
(default 100). Reported: connections attempted, failed connections,
truncated or corrupted transfers, for both, side by side.

    .venv/bin/python bench/reload.py [--reloads 100] [--rate 300] [--only keeplb|haproxy]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pattern(n: int) -> bytes:
    block = bytes(range(256)) * 256  # 64 KiB
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


BACKEND_CODE = r"""
import asyncio, sys
BLOCK = bytes(range(256)) * 256
async def handle(r, w):
    try:
        line = await r.readline()
        n = int(line.strip() or b"0")
        sent = 0
        while sent < n:
            chunk = BLOCK[: min(len(BLOCK), n - sent)]
            w.write(chunk)
            sent += len(chunk)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""


@dataclass
class Result:
    name: str
    attempted: int = 0
    failed: int = 0
    long_ok: int = 0
    long_bad: int = 0
    reloads_sent: int = 0
    first_errors: list[str] | None = None


async def one_request(port: int, size: int, timeout: float) -> bytes:
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        w.write(f"{size}\n".encode())
        await w.drain()
        data = await asyncio.wait_for(r.readexactly(size), timeout)
        return data
    finally:
        w.close()


async def load(port: int, rate: int, duration: float, res: Result) -> None:
    expected = pattern(1024)
    tasks: set[asyncio.Task[None]] = set()
    errors: list[str] = []

    async def shot() -> None:
        try:
            data = await one_request(port, 1024, 10)
            if data != expected:
                raise ValueError("corrupted")
        except Exception as e:  # noqa: BLE001 - every failure is counted
            res.failed += 1
            if len(errors) < 5:
                errors.append(f"{type(e).__name__}: {e}")

    start = time.monotonic()
    interval = 1.0 / rate
    n = 0
    while (now := time.monotonic()) - start < duration:
        target = start + n * interval
        if now < target:
            await asyncio.sleep(target - now)
        t = asyncio.create_task(shot())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
        res.attempted += 1
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    res.first_errors = errors


async def long_transfers(port: int, size: int, count: int, duration: float, res: Result) -> None:
    digest = hashlib.sha256(pattern(size)).hexdigest()
    end = time.monotonic() + duration

    async def one() -> None:
        while time.monotonic() < end:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                w.write(f"{size}\n".encode())
                await w.drain()
                h = hashlib.sha256()
                got = 0
                # Read slowly so that the transfer spans several reloads.
                while got < size:
                    chunk = await asyncio.wait_for(r.read(65536), 10)
                    if not chunk:
                        break
                    h.update(chunk)
                    got += len(chunk)
                    await asyncio.sleep(0.002)
                w.close()
                if got == size and h.hexdigest() == digest:
                    res.long_ok += 1
                else:
                    res.long_bad += 1
            except Exception:  # noqa: BLE001 - counted as a cut transfer
                res.long_bad += 1

    await asyncio.gather(*(one() for _ in range(count)))


def write_config(path: str, port: int, backend_port: int, impl: str) -> None:
    with open(path, "w") as f:
        f.write(f"""global
    maxconn 4000
    hard-stop-after 30s
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:{backend_port}
""")


async def run_one(impl: str, reloads: int, rate: int, workdir: str) -> Result:
    res = Result(impl)
    port, bport = free_port(), free_port()
    cfg = os.path.join(workdir, f"{impl}.cfg")
    write_config(cfg, port, bport, impl)
    backend = subprocess.Popen([sys.executable, "-c", BACKEND_CODE, str(bport)])
    if impl == "haproxy":
        argv = ["haproxy", "-W", "-f", cfg]
    else:
        argv = [os.path.join(ROOT, ".venv", "bin", "keeplb"), "lb", "-W", "-f", cfg]
        if not os.path.exists(argv[0]):
            argv = [sys.executable, "-m", "keeplb", "lb", "-W", "-f", cfg]
    master = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(
        os.path.join(workdir, f"{impl}.log"), "w"))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                await one_request(port, 16, 1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"{impl} did not come up; see {workdir}/{impl}.log")
        spacing = 0.25
        duration = reloads * spacing + 3

        async def reloader() -> None:
            await asyncio.sleep(1.5)
            for _ in range(reloads):
                master.send_signal(signal.SIGUSR2)
                res.reloads_sent += 1
                await asyncio.sleep(spacing)

        await asyncio.gather(load(port, rate, duration, res),
                             long_transfers(port, 8 * 1024 * 1024, 4, duration, res), reloader())
    finally:
        master.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            master.wait(15)
        if master.poll() is None:
            master.kill()
        backend.kill()
        backend.wait()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=100)
    ap.add_argument("--rate", type=int, default=300)
    ap.add_argument("--only", choices=["keeplb", "haproxy"])
    args = ap.parse_args()
    impls = [args.only] if args.only else ["keeplb", "haproxy"]
    if "haproxy" in impls and not shutil.which("haproxy"):
        print("haproxy not installed: run `make deps` first", file=sys.stderr)
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="keeplb-reload-") as wd:
        for impl in impls:
            results.append(asyncio.run(run_one(impl, args.reloads, args.rate, wd)))
    print(f"{'impl':8} {'reloads':>8} {'conns':>8} {'failed':>7} {'long ok':>8} {'long cut':>9}")
    for r in results:
        print(f"{r.name:8} {r.reloads_sent:8} {r.attempted:8} {r.failed:7} {r.long_ok:8} {r.long_bad:9}")
        for e in r.first_errors or []:
            print(f"    e.g. {e}")
    return 0 if all(r.failed == 0 and r.long_bad == 0 for r in results) else 2


if __name__ == "__main__":
    raise SystemExit(main())
