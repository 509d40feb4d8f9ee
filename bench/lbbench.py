"""keeplb vs haproxy 2.6 on the same config, the same backends, the same load,
in the same run, at equal cores: each load balancer is pinned to CPU 0, the
backends and the load generator share CPU 1.

    .venv/bin/python bench/lbbench.py [--duration 5] [--conns 50] [--idle 2000] [--threads N]
        [--cpu-map] [--splice]

--threads N: `nbthread N` in both balancers' config (haproxy: N threads; keeplb:
N worker processes under a master), both pinned to CPUs 0..N-1; the RSS
figure then counts keeplb's workers together. --cpu-map (with --threads):
`cpu-map auto:1/1-N 0-(N-1)` in both configs, so each haproxy thread and each
keeplb worker has a CPU of its own instead of the scheduler's placement.
--splice: both balancers with
`option splice-auto` (zero-copy for bulk transfers).

Figures (each for haproxy and keeplb, then keeplb/haproxy):
- keep-alive req/s and p99 latency: wrk, HTTP/1.1 keep-alive through the TCP relay
- new connections/s: wrk with `Connection: close`, one connection per request
- bulk MB/s: 10 MB objects over keep-alive
- RSS per 1,000 idle connections: VmRSS growth while holding --idle connections

The small-response backend is a second haproxy in http mode (`http-request
return`), fast enough not to be the bottleneck; the 10 MB backend is a uvloop
server writing one preallocated object. Loopback only; every run is bounded
by --duration, the whole bench by about 3 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

LO = "127.0.0.1"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 10 * 1024 * 1024

BIG_SERVER = r"""
import asyncio, sys, uvloop
size = int(sys.argv[2])
head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n" % size
body = b"x" * size
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = b""
    def data_received(self, d):
        self.buf += d
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.t.write(head); self.t.write(body)
async def main():
    srv = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]),
                                                          backlog=4096)
    print("ready", flush=True)
    await srv.serve_forever()
uvloop.run(main())
"""

SMALL_BACKEND_CFG = """
global
    maxconn 8000
    nbthread 1
defaults
    mode http
    timeout client 120s
    timeout server 120s
    timeout connect 5s
    timeout http-keep-alive 120s
frontend small
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "ok"
"""

LB_CFG = """
global
    maxconn 8000
    nbthread {threads}
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
listen small
    bind 127.0.0.1:{small}
    balance roundrobin
    server s1 127.0.0.1:{small_be}
listen big
    bind 127.0.0.1:{big}
    balance roundrobin
    server b1 127.0.0.1:{big_be}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return int(s.getsockname()[1])


def pin(cpu: int | set[int]) -> None:
    cpus = cpu if isinstance(cpu, set) else {cpu}
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {c % (os.cpu_count() or 1) for c in cpus})


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((LO, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def proc(argv: list[str], cpu: int | set[int], env: dict[str, str] | None = None
         ) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         preexec_fn=lambda: pin(cpu), env=env)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class Figures:
    keepalive_rps: float = 0.0
    p99_ms: float = 0.0
    newconn_rps: float = 0.0
    bulk_mbps: float = 0.0
    rss_per_1000_kb: float = 0.0


def _unit_ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[u]


def _size_mb(value: str) -> float:
    m = re.match(r"([\d.]+)([KMGT]?B)", value)
    if not m:
        return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return v * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024, "TB": 2**20}[u]


def wrk(url: str, duration: int, conns: int, extra: list[str] | None = None
        ) -> dict[str, float]:
    argv = [WRK, "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s",
            *(extra or []), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30,
                         preexec_fn=lambda: pin(1)).stdout
    res: dict[str, float] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"Transfer/sec:\s+(\S+)", out):
        res["mbps"] = _size_mb(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        res["p99"] = _unit_ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        res["bad"] = float(m.group(1))
    return res


def rss_kb(pid: int) -> int:
    """VmRSS of `pid` plus its children's (keeplb's workers with --threads)."""
    total = 0
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            total += sum(rss_kb(int(c)) for c in f.read().split())
    return total


def idle_rss(pid: int, port: int, n: int) -> float:
    """VmRSS growth of `pid` per 1,000 idle connections through it."""
    time.sleep(0.3)
    before = rss_kb(pid)
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((LO, port), timeout=5))
        time.sleep(1.0)
        after = rss_kb(pid)
    finally:
        for s in socks:
            s.close()
    return (after - before) * 1000 / n


def measure(lbs: dict[str, tuple[int, dict[str, int]]], args: argparse.Namespace
            ) -> dict[str, Figures]:
    """Every figure for every balancer, interleaved (A B B A ...) over --rounds
    rounds so that background load hits both alike; the best round counts."""
    figs = {name: Figures(p99_ms=float("inf")) for name in lbs}
    names = list(lbs)
    for _, ports in lbs.values():
        wrk(f"http://{LO}:{ports['small']}/", 1, args.conns)  # warm-up
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            _, ports = lbs[name]
            f = figs[name]
            base = f"http://{LO}:{ports['small']}/"
            r = wrk(base, args.duration, args.conns)
            f.keepalive_rps = max(f.keepalive_rps, r.get("rps", 0.0))
            f.p99_ms = min(f.p99_ms, r.get("p99", float("inf")))
        for name in order:
            _, ports = lbs[name]
            base = f"http://{LO}:{ports['small']}/"
            r = wrk(base, args.duration, args.conns, ["-H", "Connection: close"])
            figs[name].newconn_rps = max(figs[name].newconn_rps, r.get("rps", 0.0))
        for name in order:
            _, ports = lbs[name]
            r = wrk(f"http://{LO}:{ports['big']}/", args.duration, 4)
            figs[name].bulk_mbps = max(figs[name].bulk_mbps, r.get("mbps", 0.0))
        print(f"  round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    for name, (pid, ports) in lbs.items():
        figs[name].rss_per_1000_kb = idle_rss(pid, ports["small"], args.idle)
    return figs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--conns", type=int, default=50, help="wrk connections")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections for the RSS figure")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best counts")
    ap.add_argument("--threads", type=int, default=1,
                    help="nbthread for both balancers (keeplb: worker processes)")
    ap.add_argument("--splice", action="store_true",
                    help="`option splice-auto` in both configs (and maxpipes 1000, which "
                         "haproxy needs to start within the fd limit)")
    ap.add_argument("--cpu-map", action="store_true",
                    help="with --threads N: `cpu-map auto:1/1-N 0-(N-1)` in both configs (thread "
                         "or worker i on CPU i-1)")
    args = ap.parse_args(argv)
    for tool in (HAPROXY, WRK):
        if not os.path.exists(tool):
            print(f"lbbench: {tool} is not installed", file=sys.stderr)
            return 2
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 1000)),
                                                hard))
    tmp = tempfile.mkdtemp(prefix="klb-bench-")
    small_be, big_be = free_port(), free_port()
    with open(os.path.join(tmp, "backend.cfg"), "w") as fh:
        fh.write(SMALL_BACKEND_CFG.format(port=small_be))
    env = dict(os.environ, PYTHONPATH=ROOT)
    with proc([HAPROXY, "-f", os.path.join(tmp, "backend.cfg"), "-db"], cpu=1), \
            proc([sys.executable, "-c", BIG_SERVER, str(big_be), str(BIG)], cpu=1):
        wait_port(small_be)
        wait_port(big_be)
        with contextlib.ExitStack() as stack:
            lbs: dict[str, tuple[int, dict[str, int]]] = {}
            for name in ("haproxy", "keeplb"):
                ports = {"small": free_port(), "big": free_port()}
                path = os.path.join(tmp, f"{name}.cfg")
                text = LB_CFG.format(small=ports["small"], big=ports["big"],
                                     small_be=small_be, big_be=big_be, threads=args.threads)
                if args.splice:
                    text = text.replace("defaults\n", "defaults\n    option splice-auto\n")
                    text = text.replace("    nbthread", "    maxpipes 1000\n    nbthread")
                if args.cpu_map and args.threads > 1:
                    text = text.replace(
                        "    nbthread", f"    cpu-map auto:1/1-{args.threads} 0-{args.threads - 1}"
                        "\n    nbthread")
                with open(path, "w") as fh:
                    fh.write(text)
                cmd = ([HAPROXY, "-f", path, "-db"] if name == "haproxy"
                       else [sys.executable, "-m", "keeplb", "lb", "-f", path])
                cpus = set(range(args.threads)) if args.threads > 1 else 0
                p = stack.enter_context(proc(cmd, cpu=cpus, env=env))
                wait_port(ports["small"])
                wait_port(ports["big"])
                lbs[name] = (p.pid, ports)
            results = measure(lbs, args)
    shutil.rmtree(tmp, ignore_errors=True)
    h, k = results["haproxy"], results["keeplb"]
    rows = [
        ("keep-alive req/s", h.keepalive_rps, k.keepalive_rps, True),
        ("p99 latency ms (keep-alive)", h.p99_ms, k.p99_ms, False),
        ("new connections/s", h.newconn_rps, k.newconn_rps, True),
        ("bulk MB/s (10 MB objects)", h.bulk_mbps, k.bulk_mbps, True),
        ("RSS KB per 1,000 idle conns", h.rss_per_1000_kb, k.rss_per_1000_kb, False),
    ]
    print(f"{'figure':32} {'haproxy':>12} {'keeplb':>12} {'keeplb/haproxy':>15}")
    for label, hv, kv, _higher_better in rows:
        ratio = kv / hv if hv else float("nan")
        print(f"{label:32} {hv:12.1f} {kv:12.1f} {ratio:15.2f}")
    print(f"(nbthread {args.threads}; both balancers on CPU 0..{args.threads - 1}, one measured at a time; best of {args.rounds} "
          f"interleaved rounds of {args.duration}s; {args.conns} wrk connections; "
          f"{args.idle} idle connections)")
    print(f"keeplb's relay: {relay_mode()}" + ("; option splice-auto" if args.splice else "")
          + (f"; cpu-map auto:1/1-{args.threads} 0-{args.threads - 1}"
             if args.cpu_map and args.threads > 1 else ""))
    return 0


def relay_mode() -> str:
    """How the keeplb under test runs its relay (tools/build_native.py)."""
    sys.path.insert(0, ROOT)
    from keeplb.lb import native

    calls = ("socket calls in C (keeplb/lb/_fdsock.c)"
             if native.load_c_extension("keeplb.lb._fdsock") is not None
             else "socket calls in Python (no current build of keeplb/lb/_fdsock.c)")
    if native.compiled_files() and not native.stale():
        return f"compiled with mypyc, {calls}"
    return f"interpreted (no current build: `make native`), {calls}"


if __name__ == "__main__":
    sys.exit(main())
