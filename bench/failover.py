"""Failover gap: a keeplb pair against a keepalived pair, same config, same run.

In network namespaces (root): two balancer hosts lb1 (priority 150) and lb2
(100) each run a trivial TCP service on :8080 and a VRRP daemon floating
10.77.0.100; a client host connects to VIP:8080 every 10 ms. Midway through,
the master fails, either as a crash (its link goes down, nothing is said) or
as a clean stop (SIGTERM: priority-0 advertisement). Reported: the longest
gap between two successful connections, for both implementations, and the
ratio keeplb / keepalived.

    .venv/bin/python bench/failover.py [--version 2|3] [--advert-int 1] [--only keeplb|keepalived]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from keeplb.lab.netns import Host, Lab  # noqa: E402

VIP = "10.77.0.100"
PORT = 8080

SERVER = r"""
import asyncio
async def handle(r, w):
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", @PORT@)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
""".replace("@PORT@", str(PORT))

# Bounded: `duration` seconds of attempts at most every `interval` seconds.
CLIENT = r"""
import json, socket, sys, time
vip, port, duration, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ok = []
start = time.monotonic()
end = start + duration
while time.monotonic() < end:
    t = time.monotonic()
    try:
        with socket.create_connection((vip, port), timeout=0.05):
            ok.append(t - start)
    except OSError:
        pass
    time.sleep(max(0.0, interval - (time.monotonic() - t)))
gaps = [b - a for a, b in zip(ok, ok[1:])]
print(json.dumps({"ok": len(ok), "max_gap": max(gaps) if gaps else duration,
                  "first": ok[0] if ok else None}))
"""


def conf(router: str, priority: int, version: int, advert_int: float) -> str:
    auth = "  authentication {\n    auth_type PASS\n    auth_pass 1111\n  }\n" if version == 2 else ""
    return (
        f"global_defs {{\n  router_id {router}\n  vrrp_garp_master_delay 0\n}}\n"
        "vrrp_instance haproxy-vip {\n  state BACKUP\n  interface eth0\n"
        f"  virtual_router_id 60\n  priority {priority}\n  advert_int {advert_int:g}\n"
        f"  version {version}\n{auth}  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    )


def start_vrrp(kind: str, host: Host, workdir: Path, text: str) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "keepalived.conf"
    cfg.write_text(text)
    log = open(workdir / "vrrp.log", "ab")  # noqa: SIM115 - handed to the child
    if kind == "keepalived":
        argv = ["/usr/sbin/keepalived", "-n", "-l", "-D", "-f", str(cfg), "--vrrp",
                "-p", str(workdir / "ka.pid"), "-r", str(workdir / "vrrp.pid")]
        env = None
    else:
        argv = [sys.executable, "-m", "keeplb", "vrrp", "-n", "-l", "-f", str(cfg)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), KEEPLB_VRRP_STATE_DIR=str(workdir))
    try:
        return host.popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()


def wait_vip(host: Host, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(a.split("/")[0] == VIP for a in host.addresses()):
            return True
        time.sleep(0.05)
    return False


def run_one(kind: str, mode: str, version: int, advert_int: float, tmp: Path) -> dict[str, object]:
    """One pair, one failover; the client's measurements plus who held the VIP after."""
    with Lab(prefix="klb", subnet="10.77.0.0/24") as lab:
        lb1 = lab.add_host("lb1", "10.77.0.1/24")
        lb2 = lab.add_host("lb2", "10.77.0.2/24")
        client = lab.add_host("client", "10.77.0.10/24")
        for h in (lb1, lb2):
            h.popen([sys.executable, "-c", SERVER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        work = tmp / f"{kind}-{mode}"
        p1 = start_vrrp(kind, lb1, work / "lb1", conf("lb1", 150, version, advert_int))
        start_vrrp(kind, lb2, work / "lb2", conf("lb2", 100, version, advert_int))
        if not wait_vip(lb1, 10 * advert_int + 5):
            return {"error": "lb1 never became master"}
        before = 2.0
        duration = before + 6 * advert_int + 3.0
        cl = client.popen(
            [sys.executable, "-c", CLIENT, VIP, str(PORT), str(duration), "0.01"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        time.sleep(before)
        if mode == "crash":
            lb1.link_down()
        else:
            lb1.stop(p1, grace=5)
        out, _ = cl.communicate(timeout=duration + 30)
        result: dict[str, object] = json.loads(out or b"{}")
        result["vip_on_lb2"] = wait_vip(lb2, 1)
        return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", type=int, choices=[2, 3], default=2)
    ap.add_argument("--advert-int", type=float, default=1.0)
    ap.add_argument("--only", choices=["keeplb", "keepalived"])
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("bench/failover.py needs root (network namespaces)\n")
        return 1
    kinds = [args.only] if args.only else ["keeplb", "keepalived"]
    results: dict[tuple[str, str], dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="keeplb-failover-") as tmp:
        for mode in ("crash", "stop"):
            for kind in kinds:
                results[(kind, mode)] = run_one(kind, mode, args.version, args.advert_int, Path(tmp))
    print(f"VRRPv{args.version}, advert_int {args.advert_int:g}s, client connects every 10 ms")
    print(f"{'mode':<6} {'implementation':<11} {'longest gap':>12} {'connects':>9} {'VIP moved':>10}")
    for (kind, mode), r in results.items():
        if "error" in r:
            print(f"{mode:<6} {kind:<11} error: {r['error']}")
            continue
        gap = float(r["max_gap"])  # type: ignore[arg-type]
        print(f"{mode:<6} {kind:<11} {gap * 1000:>10.0f}ms {r['ok']!s:>9} {r['vip_on_lb2']!s:>10}")
    if len(kinds) == 2:
        for mode in ("crash", "stop"):
            a, b = results.get(("keeplb", mode), {}), results.get(("keepalived", mode), {})
            if "max_gap" in a and "max_gap" in b and float(b["max_gap"]) > 0:  # type: ignore[arg-type]
                ratio = float(a["max_gap"]) / float(b["max_gap"])  # type: ignore[arg-type]
                print(f"{mode}: keeplb / keepalived gap ratio = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
