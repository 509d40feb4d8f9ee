"""New connections per second only: keeplb vs haproxy 2.6, one connection per
request (wrk with `Connection: close`), same pinning as lbbench.py (balancer on
CPU 0, backend and wrk on CPU 1). Loopback only, bounded by --duration.

    .venv/bin/python bench/connbench.py [--duration 5] [--conns 50] [--rounds 2]
        [--only keeplb] [--profile out.svg]

--profile runs py-spy (if installed in the venv) on keeplb during its first run
and writes a flame graph, to see where the set-up path spends its time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lbbench import (  # noqa: E402
    HAPROXY,
    LB_CFG,
    LO,
    ROOT,
    SMALL_BACKEND_CFG,
    WRK,
    free_port,
    proc,
    relay_mode,
    wait_port,
    wrk,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=("keeplb", "haproxy"))
    ap.add_argument("--profile", help="py-spy flame graph of keeplb's first run")
    args = ap.parse_args(argv)
    for tool in (HAPROXY, WRK):
        if not os.path.exists(tool):
            print(f"connbench: {tool} is not installed", file=sys.stderr)
            return 2
    names = [args.only] if args.only else ["haproxy", "keeplb"]
    tmp = tempfile.mkdtemp(prefix="klb-connbench-")
    try:
        small_be = free_port()
        with open(os.path.join(tmp, "backend.cfg"), "w") as fh:
            fh.write(SMALL_BACKEND_CFG.format(port=small_be))
        env = dict(os.environ, PYTHONPATH=ROOT)
        with proc([HAPROXY, "-f", os.path.join(tmp, "backend.cfg"), "-db"], cpu=1), \
                contextlib.ExitStack() as stack:
            wait_port(small_be)
            lbs: dict[str, tuple[int, int]] = {}
            for name in names:
                port, big = free_port(), free_port()
                path = os.path.join(tmp, f"{name}.cfg")
                with open(path, "w") as fh:
                    fh.write(LB_CFG.format(small=port, big=big, small_be=small_be,
                                           big_be=free_port(), threads=1))
                cmd = ([HAPROXY, "-f", path, "-db"] if name == "haproxy"
                       else [sys.executable, "-m", "keeplb", "lb", "-f", path])
                p = stack.enter_context(proc(cmd, cpu=0, env=env))
                wait_port(port)
                lbs[name] = (p.pid, port)
            best = dict.fromkeys(names, 0.0)
            for name in names:
                wrk(f"http://{LO}:{lbs[name][1]}/", 1, args.conns, ["-H", "Connection: close"])
            for rnd in range(args.rounds):
                for name in names if rnd % 2 == 0 else names[::-1]:
                    pid, port = lbs[name]
                    spy = None
                    if args.profile and name == "keeplb" and rnd == 0:
                        spy = subprocess.Popen(
                            [os.path.join(os.path.dirname(sys.executable), "py-spy"),
                             "record", "-p", str(pid), "-d", str(args.duration), "-r", "250",
                             "-o", args.profile, "-f", "raw" if args.profile.endswith(".txt")
                             else "flamegraph"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    r = wrk(f"http://{LO}:{port}/", args.duration, args.conns,
                            ["-H", "Connection: close"])
                    if spy is not None:
                        spy.wait(30)
                    best[name] = max(best[name], r.get("rps", 0.0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name in names:
        print(f"{name:8} new connections/s {best[name]:10.1f}")
    if len(names) == 2 and best["haproxy"]:
        print(f"keeplb/haproxy {best['keeplb'] / best['haproxy']:.2f}")
    print(f"keeplb's relay: {relay_mode()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
