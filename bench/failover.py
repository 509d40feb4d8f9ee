"""VRRP failover: keeplb vrrp against keepalived 2.2.7, same config, same run.

In network namespaces on a private bridge (10.77.0.0/24): two balancers lb1
(priority 101, state MASTER) and lb2 (100) sharing VIP 10.77.0.10, one
backend (a small Python server on :6443), one client that opens a new
connection to VIP:6443 every 10 ms.  Both balancers forward VIP:6443 with the
*same haproxy 2.6* in every run, so the only thing that differs between the
two columns is the VRRP daemon.

Faults, each with VRRPv2 advert_int 1 and VRRPv3 advert_int 0.1:

* ``crash``: lb1's link goes down (cable pull: no priority-0 advertisement);
* ``stop``:  SIGTERM to the VRRP daemon on lb1 (clean stop: priority 0);
* ``track``: the tracked service fails: lb1's haproxy is stopped and the
  file its ``track_script`` tests (``test -f FILE``, weight 2 as in the seed)
  is removed at the same moment, so the script's result flips via a file.

Printed per case: seconds until lb2 holds the VIP, the longest gap between
two successful client connections, and keeplb/keepalived ratios.  Unicast
peers (the seed's unicast_src_ip/unicast_peer) unless ``--multicast``.
Each case runs < 20 s; the whole bench < 2 min (× ``--repeat``, 1 by
default); ``--quick`` runs only the ``crash`` case for each version.

"move" for ``stop`` starts at the SIGTERM, so it includes the daemon's own
shutdown work before its priority-0 advertisement; the client gap does not
(the old master keeps the address and serves until then).

    .venv/bin/python bench/failover.py [--quick] [--multicast] [--only keeplb|keepalived]
                                            [--cases crash,stop,track] [--versions 2,3] [--repeat N]
                                            [--json FILE]

Needs root (namespaces).  When ``keeplb vrrp`` fails, the reason is printed
in its column and the rest of the table still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _lab import (  # noqa: E402
    LabError,
    Testbed,
    Vrrp,
    fmt_s,
    keepalived_conf,
    keeplb_works,
    longest_gap,
    ratio,
    wait_for,
)

IMPLS = ("keepalived", "keeplb")
CASES = ("crash", "stop", "track")
VERSIONS = {2: Vrrp(2, 1.0), 3: Vrrp(3, 0.1)}
# keepalived 2.2.7 takes whole seconds only (1..4294) for a vrrp_script interval.
SCRIPT_INTERVAL_S = 1.0
MOVE_TIMEOUT_S = 8.0


@dataclass
class Result:
    impl: str
    case: str
    vrrp: str
    vip_move: float | None = None
    gap: float | None = None
    recovered: bool = False
    attempts: int = 0
    failed: int = 0
    seconds: float = 0.0
    error: str = ""


def run_case(impl: str, case: str, vrrp: Vrrp, backend: str = "api1") -> Result:
    """One failover of ``case`` with ``impl`` as the VRRP daemon on both balancers."""
    res = Result(impl, case, vrrp.label)
    t_begin = time.monotonic()
    try:
        _run_case(res, vrrp, backend)
    finally:
        res.seconds = time.monotonic() - t_begin
    return res


def _run_case(res: Result, vrrp: Vrrp, backend: str) -> None:
    impl, case = res.impl, res.case
    with Testbed(backends={backend: "10.77.0.4"}) as tb:
        tb.start_backends()
        haproxies = {lb: tb.start_haproxy(lb) for lb in ("lb1", "lb2")}
        for h in (backend, "lb1", "lb2"):
            if not tb.wait_listening(h):
                res.error = f"nothing listens on {h}:6443"
                return
        up = {lb: tb.dir(lb) / "service-up" for lb in ("lb1", "lb2")}
        vrrps = {}
        for lb, prio, state in (("lb1", 101, "MASTER"), ("lb2", 100, "BACKUP")):
            up[lb].write_text("1\n")
            conf = keepalived_conf(lb, vrrp, priority=prio, state=state,
                                   script=f"/usr/bin/test -f {up[lb]}",
                                   script_interval=SCRIPT_INTERVAL_S, weight=2)
            vrrps[lb] = tb.start_vrrp(impl, lb, conf)
        if not wait_for(lambda: tb.holders() == ["lb1"], 8 * vrrp.advert_int + 4, 0.05):
            dead = [lb for lb, p in vrrps.items() if not p.alive()]
            res.error = (f"VIP not on lb1 alone (holders {tb.holders()}); "
                         f"exited: {dead or 'none'}; lb1 log: {vrrps['lb1'].tail(300)!r}")
            return
        # Let lb2 hear a few advertisements, so it is a settled backup.
        time.sleep(max(0.5, 2 * vrrp.advert_int))
        t0 = tb.start_client_before_fault()
        if t0 is None:
            res.error = "the client never reached VIP:6443 before the fault"
            return
        t_fault = time.monotonic()
        if case == "crash":
            tb.hosts["lb1"].link_down()
        elif case == "stop":
            tb.stop(vrrps["lb1"])
        else:
            up["lb1"].unlink()
            tb.stop(haproxies["lb1"])
        t_fault = (t_fault + time.monotonic()) / 2
        if wait_for(lambda: "lb2" in tb.holders(), MOVE_TIMEOUT_S, 0.01):
            t_move = time.monotonic()
            res.vip_move = t_move - t_fault
            wait_for(lambda: tb.client_ok_since(t_move), 3.0, 0.01)
        else:
            res.error = f"VIP not on lb2 after {MOVE_TIMEOUT_S:g}s (holders {tb.holders()})"
        time.sleep(0.3)
        t_end = time.monotonic()
        attempts = tb.stop_client()
        first_ok = min((a.t + a.d for a in attempts if a.ok), default=t0)
        res.gap, res.recovered = longest_gap(attempts, first_ok, t_end)
        res.attempts = len(attempts)
        res.failed = sum(not a.ok for a in attempts)
        if not res.recovered and not res.error:
            res.error = "the client was not served again"


def median_of(runs: list[Result]) -> Result:
    """One row from repeated runs: the median move and gap of the runs that
    worked (a fault's phase against the advertisement timer varies the
    crash case by up to one interval); the first error when none worked."""
    good = [r for r in runs if not r.error and r.vip_move is not None and r.gap is not None]
    if not good:
        return runs[0]
    moves = [r.vip_move for r in good if r.vip_move is not None]
    gaps = [r.gap for r in good if r.gap is not None]
    bad = len(runs) - len(good)
    return replace(good[0], vip_move=statistics.median(moves), gap=statistics.median(gaps),
                   seconds=sum(r.seconds for r in runs),
                   error=f"{bad} of {len(runs)} runs failed: {runs[0].error or 'see above'}" if bad else "")


def print_table(results: list[Result], impls: list[str], out: object = sys.stdout) -> None:
    by = {(r.impl, r.case, r.vrrp): r for r in results}
    keys = list(dict.fromkeys((r.vrrp, r.case) for r in results))
    w = sys.stdout.write
    head = f"{'vrrp':<24} {'case':<6}"
    for i in impls:
        head += f" {i + ' move':>16} {i + ' gap':>15}"
    if len(impls) == 2:
        head += f" {'gap ratio':>10} {'move ratio':>10}"
    w(head + "\n")
    w("-" * len(head) + "\n")
    notes: list[str] = []
    for vlabel, case in keys:
        row = f"{vlabel:<24} {case:<6}"
        got = [by.get((i, case, vlabel)) for i in impls]
        for r in got:
            row += f" {fmt_s(r.vip_move if r else None):>16} {fmt_s(r.gap if r else None):>15}"
            if r is not None and r.error:
                notes.append(f"  {r.impl} {vlabel} {case}: {r.error}")
        if len(impls) == 2:
            a, b = got[1], got[0]  # keeplb / keepalived
            row += f" {ratio(a.gap if a else None, b.gap if b else None):>10}"
            row += f" {ratio(a.vip_move if a else None, b.vip_move if b else None):>10}"
        w(row + "\n")
    w("move = seconds from the fault until lb2 holds the VIP; gap = longest time between two\n"
      "successful client connections (one new connection every 10 ms). Same haproxy 2.6 forwards\n"
      "VIP:6443 on both balancers in every run; only the VRRP daemon differs.\n")
    if notes:
        w("problems:\n" + "\n".join(notes) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="only the crash case, for each version")
    p.add_argument("--multicast", action="store_true", help="multicast instead of unicast peers")
    p.add_argument("--only", choices=IMPLS, help="run one implementation only")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of crash,stop,track")
    p.add_argument("--versions", default="2,3", help="comma-separated subset of 2,3")
    p.add_argument("--repeat", type=int, default=1, choices=range(1, 6), metavar="N",
                   help="run each case N times (1-5) and report the medians")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")
    cases = ["crash"] if args.quick else [c for c in args.cases.split(",") if c]
    bad = [c for c in cases if c not in CASES]
    try:
        versions = [int(v) for v in args.versions.split(",") if v]
    except ValueError:
        versions = [0]
    if bad or any(v not in VERSIONS for v in versions):
        p.error("--cases takes crash,stop,track; --versions takes 2,3")
    impls = [args.only] if args.only else list(IMPLS)
    why_not = keeplb_works("vrrp") if "keeplb" in impls else None
    results: list[Result] = []
    t_all = time.monotonic()
    try:
        for v in versions:
            vrrp = Vrrp(VERSIONS[v].version, VERSIONS[v].advert_int, args.multicast)
            for case in cases:
                for impl in impls:
                    if impl == "keeplb" and why_not:
                        results.append(Result(impl, case, vrrp.label, error=why_not))
                        continue
                    runs = []
                    for _ in range(args.repeat):
                        try:
                            r = run_case(impl, case, vrrp)
                        except (LabError, OSError) as exc:
                            r = Result(impl, case, vrrp.label, error=f"{type(exc).__name__}: {exc}")
                        runs.append(r)
                        sys.stderr.write(f"{impl:<10} {vrrp.label:<24} {case:<6} move {fmt_s(r.vip_move)} "
                                         f"gap {fmt_s(r.gap)} ({r.seconds:.1f}s){' ' + r.error if r.error else ''}\n")
                    results.append(median_of(runs))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; partial table:\n")
    print_table(results, impls)
    sys.stdout.write(f"total {time.monotonic() - t_all:.1f}s\n")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 0 if all(not r.error for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
