"""`keeplb run` on two balancers against keepalived 2.2.7 + haproxy 2.6, the seed's way.

In network namespaces on a private bridge (10.77.0.0/24): balancers lb1 and
lb2 (both priority 100, state BACKUP, no nopreempt, as in the seed), VIP
10.77.0.10, three backends api1..api3 on :6443, one client opening a new
connection to VIP:6443 every 10 ms.  Both sides run the seed's two files
moved into the lab (keeplb.lab.topology; check timers inter/downinter 1s
instead of 10s/5s so a dead backend is seen in seconds):

* keepalived + haproxy: the seed's ``chk_haproxy`` (interval 2, weight 2).
  ``killall -0 haproxy`` is replaced by ``kill -0 $(cat <this host's
  haproxy.pid>)``: namespaces share one PID namespace, so killall would see
  the other balancer's haproxy and never fail;
* ``keeplb run -f haproxy.cfg -k keepalived.conf``: the same files; the
  balancer's health reaches VRRP through a pipe besides the script.

Faults on whichever balancer is master:

* ``lb-stop``:  the load balancer process is stopped (SIGTERM);
* ``backends``: every backend becomes unreachable *from the master only*
  (bridge-port isolation of the master and the backends; lb2 and the
  client still reach everything).  The seed's check cannot see this.

Printed: seconds until the address is on the other balancer alone, and the
longest gap between two successful client connections, side by side.

    .venv/bin/python bench/run_failover.py [--only keeplb|keepalived] [--cases lb-stop,backends]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lab import (  # noqa: E402
    HAPROXY,
    PY,
    LabError,
    Proc,
    Testbed,
    Vrrp,
    fmt_s,
    keepalived_conf,
    keeplb_works,
    longest_gap,
    ratio,
    seed_haproxy_cfg,
    wait_for,
    write_check_script,
)

IMPLS = ("keepalived", "keeplb")
CASES = ("lb-stop", "backends")
BACKENDS3 = {"api1": "10.77.0.4", "api2": "10.77.0.5", "api3": "10.77.0.6"}
MOVE_TIMEOUT_S = 12.0
VERBOSE = bool(os.environ.get("KEEPLB_BENCH_VERBOSE"))
SEED_VRRP = Vrrp(2, 1.0)


@dataclass
class Result:
    impl: str
    case: str
    master: str = ""
    vip_move: float | None = None
    gap: float | None = None
    recovered: bool = False
    seconds: float = 0.0
    error: str = ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def balancer_pid(tb: Testbed, lb: str, run: Proc | None) -> int | None:
    """The PID of ``lb``'s load balancer: its pidfile, or else the ``keeplb
    lb`` child of the ``keeplb run`` supervisor we started."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((tb.dir(lb) / "haproxy.pid").read_text().split()[0])
        if _pid_alive(pid):
            return pid
    if run is not None:
        for child in _children(run.popen.pid):
            argv = _cmdline(child)
            # setproctitle turns the child's command line into "keeplb: lb".
            if ("keeplb" in argv and "lb" in argv) or argv[0].startswith("keeplb: lb"):
                return child
    return None


def setup_pair(tb: Testbed, impl: str) -> dict[str, Proc]:
    """Write the seed-shaped files on both balancers and start ``impl``
    there; returns the processes we started (the ``keeplb run`` supervisors,
    or keepalived; haproxy daemonizes and is found by its pidfile)."""
    procs: dict[str, Proc] = {}
    for lb in ("lb1", "lb2"):
        d = tb.dir(lb)
        cfg = d / "haproxy.cfg"
        cfg.write_text(seed_haproxy_cfg(d))
        chk = write_check_script(d)
        conf_text = keepalived_conf(lb, SEED_VRRP, priority=100, state="BACKUP",
                                    script=str(chk), script_interval=2, weight=2)
        if impl == "keepalived":
            res = tb.hosts[lb].run([HAPROXY, "-f", str(cfg)], timeout=20)
            if res.returncode != 0:
                raise RuntimeError(f"haproxy on {lb} exited {res.returncode}: {res.stderr.strip()[-300:]}")
            procs[lb] = tb.start_vrrp("keepalived", lb, conf_text)
        else:
            conf = d / "keepalived.conf"
            conf.write_text(conf_text)
            procs[lb] = tb.start(lb, [PY, "-m", "keeplb", "run", "-f", str(cfg), "-k", str(conf)],
                                 "keeplb-run.log")
    return procs


def wait_single_holder(tb: Testbed, timeout: float) -> str | None:
    if wait_for(lambda: len(tb.holders()) == 1, timeout, 0.05):
        h = tb.holders()
        return h[0] if len(h) == 1 else None
    return None


def stop_balancer(tb: Testbed, lb: str, run: Proc | None) -> bool:
    pid = balancer_pid(tb, lb, run)
    if pid is None:
        return False
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    return wait_for(lambda: not _pid_alive(pid), 3.0)


def run_case(impl: str, case: str) -> Result:
    """One fault ``case`` on the master, with ``impl`` on both balancers."""
    res = Result(impl, case)
    t_begin = time.monotonic()
    try:
        _run_case(res)
    finally:
        res.seconds = time.monotonic() - t_begin
    return res


def _run_case(res: Result) -> None:
    impl, case = res.impl, res.case
    with Testbed(backends=dict(BACKENDS3)) as tb:
        tb.start_backends()
        for h in BACKENDS3:
            if not tb.wait_listening(h):
                res.error = f"backend {h} does not listen"
                return
        try:
            procs = setup_pair(tb, impl)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            res.error = str(exc)
            return
        master = wait_single_holder(tb, 12.0)
        if master is None:
            dead = [lb for lb, p in procs.items() if not p.alive()]
            res.error = (f"no single VIP holder (holders {tb.holders()}, exited: {dead or 'none'}); "
                         f"lb1 log: {procs['lb1'].tail(300)!r}")
            return
        other = "lb2" if master == "lb1" else "lb1"
        res.master = master
        if not (tb.wait_listening("lb1") and tb.wait_listening("lb2")):
            res.error = "a balancer does not listen on :6443"
            return
        # Let both balancers see their servers UP and VRRP settle after the election.
        time.sleep(2.5)
        t0 = tb.start_client_before_fault()
        if t0 is None:
            res.error = "the client never reached VIP:6443 before the fault"
            return
        t_fault = time.monotonic()
        if case == "lb-stop":
            run = procs[master] if impl == "keeplb" else None
            if not stop_balancer(tb, master, run):
                res.error = f"no balancer process found on {master}"
        else:
            tb.isolate([master, *BACKENDS3])
        t_fault = (t_fault + time.monotonic()) / 2
        if wait_for(lambda: tb.holders() == [other], MOVE_TIMEOUT_S):
            t_move = time.monotonic()
            res.vip_move = t_move - t_fault
            wait_for(lambda: tb.client_ok_since(t_move), 3.0)
        elif not res.error:
            res.error = f"VIP not on {other} alone after {MOVE_TIMEOUT_S:g}s (holders {tb.holders()})"
        if res.error and VERBOSE:
            for lb, p in procs.items():
                sys.stderr.write(f"==== {impl} on {lb} (t_fault={t_fault:.3f})\n{p.tail(2500)}\n")
        time.sleep(0.3)
        t_end = time.monotonic()
        attempts = tb.stop_client()
        first_ok = min((a.t + a.d for a in attempts if a.ok), default=t0)
        res.gap, res.recovered = longest_gap(attempts, first_ok, t_end)


def print_table(results: list[Result], impls: list[str]) -> None:
    by = {(r.impl, r.case): r for r in results}
    w = sys.stdout.write
    head = f"{'fault on the master':<22}"
    for i in impls:
        head += f" {i + ' move':>16} {i + ' gap':>15}"
    if len(impls) == 2:
        head += f" {'gap ratio':>10}"
    w(head + "\n" + "-" * len(head) + "\n")
    notes: list[str] = []
    for case in dict.fromkeys(r.case for r in results):
        row = f"{case:<22}"
        got = [by.get((i, case)) for i in impls]
        for r in got:
            gap = fmt_s(r.gap if r else None)
            if r is not None and r.gap is not None and not r.recovered:
                gap = ">" + gap
            row += f" {fmt_s(r.vip_move if r else None):>16} {gap:>15}"
            if r is not None and r.error:
                notes.append(f"  {r.impl} {case}: {r.error}")
        if len(impls) == 2:
            a, b = got[1], got[0]
            ok = all(r is not None and r.recovered and not r.error for r in (a, b))
            row += f" {ratio(a.gap, b.gap) if ok and a and b else '-':>10}"
        w(row + "\n")
    w("move = seconds from the fault until the other balancer alone holds the VIP ('-': it did not\n"
      f"within {MOVE_TIMEOUT_S:g} s); gap = longest time between two successful client connections\n"
      "('>': the client was still failing when the run ended).\n"
      "keepalived side: seed chk_haproxy as `kill -0 $(cat this-host/haproxy.pid)` (interval 2, weight 2).\n")
    if notes:
        # A VIP that does not move under keepalived for dead backends is the
        # finding itself (the seed's check only asks whether haproxy runs).
        w("notes:\n" + "\n".join(notes) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=IMPLS)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of lb-stop,backends")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")
    cases = [c for c in args.cases.split(",") if c]
    if any(c not in CASES for c in cases):
        p.error("--cases takes lb-stop,backends")
    impls = [args.only] if args.only else list(IMPLS)
    why_not = keeplb_works("run") if "keeplb" in impls else None
    results: list[Result] = []
    t_all = time.monotonic()
    try:
        for case in cases:
            for impl in impls:
                if impl == "keeplb" and why_not:
                    results.append(Result(impl, case, error=why_not))
                    continue
                try:
                    r = run_case(impl, case)
                except (LabError, OSError) as exc:
                    r = Result(impl, case, error=f"{type(exc).__name__}: {exc}")
                results.append(r)
                sys.stderr.write(f"{impl:<10} {case:<9} master {r.master or '-'} move {fmt_s(r.vip_move)} "
                                 f"gap {fmt_s(r.gap)} ({r.seconds:.1f}s){' ' + r.error if r.error else ''}\n")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; partial table:\n")
    print_table(results, impls)
    sys.stdout.write(f"total {time.monotonic() - t_all:.1f}s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
