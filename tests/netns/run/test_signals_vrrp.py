"""Rule 3 of the house for `keeplb vrrp` and `keeplb run`: SIGHUP while the
instance is becoming master, SIGUSR1/SIGUSR2 dumps over and over, and a
reload of a config that became a directory or vanished never cost the
address: the master still holds it (exactly once), the refusal is logged,
and SIGTERM stops cleanly (exit 0, VIP removed, the peer takes over).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeplb.lab.netns import Host, Lab
from tests.netns.vrrp.conftest import REPO, VrrpLab, holders, instance_conf, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.100"


@pytest.fixture
def vl(lab: Lab, tmp_path: Path) -> Iterator[VrrpLab]:
    v = VrrpLab(lab, tmp_path)
    try:
        yield v
    finally:
        v.close()


def vip_count(host: Host) -> int:
    return sum(1 for a in host.addresses() if a.split("/")[0] == VIP)


def pester(pid: int, seconds: float) -> int:
    """SIGHUP, SIGUSR1, SIGUSR2 in turn every 30 ms for `seconds`; the count sent."""
    sigs = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        os.kill(pid, sigs[sent % 3])
        sent += 1
        time.sleep(0.03)
    return sent


def refusals(text: str) -> int:
    return text.count("refused, keeping the running configuration")


def test_vrrp_keeps_the_address_through_signals_and_a_vanished_config(vl: VrrpLab) -> None:
    a = vl.host("a", "10.77.0.1/24")
    b = vl.host("b", "10.77.0.2/24")
    peer = vl.daemon("keepalived", b, instance_conf(priority=50, advert_int=1))
    k = vl.daemon("keeplb", a, instance_conf(priority=100, advert_int=1))
    assert k.proc is not None
    # Wait for the handlers (the status file appears on the first publish),
    # then pester it all through BACKUP -> MASTER (about 3 s at advert_int 1).
    status = k.workdir / "keeplb-vrrp.json"
    assert wait_for(status.exists, 10.0), vl.logs()
    pester(k.proc.pid, 4.0)
    assert k.alive(), vl.logs()
    assert "Reload finished" in k.log(), k.log()  # the SIGHUPs did reach it
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 8.0), vl.logs()
    assert vip_count(a) == 1, a.addresses()
    st = k.status()
    assert [i["state"] for i in st["instances"]] == ["MASTER"], st
    assert (k.workdir / "keepalived.stats").exists()
    assert (k.workdir / "keepalived.data").exists()

    # The config becomes a directory, then disappears: each SIGHUP is refused
    # and logged; the instance stays master with the same address.
    backup = k.conf.with_suffix(".bak")
    shutil.move(k.conf, backup)
    k.conf.mkdir()
    k.signal(signal.SIGHUP)
    assert wait_for(lambda: refusals(k.log()) >= 1, 5.0), k.log()
    k.conf.rmdir()
    k.signal(signal.SIGHUP)
    assert wait_for(lambda: refusals(k.log()) >= 2, 5.0), k.log()
    time.sleep(1.5)  # a few advertisements: a lost master would show by now
    assert k.alive(), k.log()
    assert holders([a, b], VIP) == ["a"] and vip_count(a) == 1, vl.logs()
    assert [i["state"] for i in k.status()["instances"]] == ["MASTER"]

    shutil.move(backup, k.conf)
    assert k.stop() == 0, k.log()
    assert VIP not in [x.split("/")[0] for x in a.addresses()]
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 5.0), vl.logs()
    assert peer.alive()
    assert "Traceback" not in k.log(), k.log()


ECHO = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
while True:
    c, _ = s.accept()
    with c:
        c.sendall(b"api")
"""

CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], 8443), timeout=2) as c:
    c.settimeout(2)
    sys.stdout.write(c.recv(64).decode())
"""


def haproxy_cfg(path: Path) -> Path:
    path.write_text(
        "global\n"
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 5s\n"
        "    timeout server 5s\n"
        "frontend fe\n    bind 0.0.0.0:8443\n    default_backend be\n"
        "backend be\n    server api 10.77.0.3:8080 check inter 500\n"
    )
    return path


def through(client: Host, addr: str) -> bool:
    res = client.run([sys.executable, "-c", CLIENT, addr], timeout=10)
    return res.returncode == 0 and res.stdout == "api"


def children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for c in map(int, kids):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def test_run_survives_signal_storms_and_stops_cleanly(lab: Lab, tmp_path: Path) -> None:
    a = lab.add_host("a", "10.77.0.1/24")
    api = lab.add_host("api", "10.77.0.3/24")
    client = lab.add_host("c", "10.77.0.9/24")
    api.popen([sys.executable, "-c", ECHO])
    cfg = haproxy_cfg(tmp_path / "haproxy.cfg")
    conf = tmp_path / "keepalived.conf"
    conf.write_text("global_defs {\n  router_id a\n}\n" + instance_conf(priority=100))
    out = open(tmp_path / "run.log", "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, PYTHONPATH=str(REPO), KEEPLB_VRRP_STATE_DIR=str(tmp_path))
    try:
        run = a.popen([sys.executable, "-m", "keeplb", "run", "-f", str(cfg), "-k", str(conf)],
                      stdout=out, stderr=subprocess.STDOUT, env=env)
    finally:
        out.close()

    def log() -> str:
        return (tmp_path / "run.log").read_text(errors="replace")

    # Signals while the children are still importing: the supervisor holds
    # them back until each child handles them, so nothing is restarted.
    assert wait_for(lambda: bool(descendants(run.pid)), 10.0, 0.005), log()
    pester(run.pid, 0.5)
    assert wait_for(lambda: vip_count(a) == 1 and through(client, VIP), 15.0, 0.2), log()
    kids = children(run.pid)
    assert len(kids) == 2, log()
    pester(run.pid, 1.5)
    assert run.poll() is None, log()
    # Nothing may have been restarted: the same two children (VRRP, and the
    # balancer's master, whose workers a SIGHUP-driven reload replaces) serve
    # the same address.
    time.sleep(1.0)
    assert children(run.pid) == kids, log()
    assert "child process(" not in log(), log()  # no child exited and was respawned
    assert vip_count(a) == 1 and through(client, VIP), log()

    seen = descendants(run.pid)
    a.stop(run, grace=15.0)
    assert run.returncode == 0, log()
    assert vip_count(a) == 0
    assert wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in seen), 5.0)
    assert "Traceback" not in log(), log()
