"""`keeplb run`: one /metrics scrape shows the balancer's servers and the VRRP side.

One balancer host in a lab namespace runs `keeplb run` with a prometheus
exporter frontend. The scrape parses with prometheus-client's parser; a
server going down and up shows in haproxy_server_status, and the VRRP
instance's state changes (MASTER, then FAULT when its only backend is DOWN,
since `keeplb run` tracks the balancer) show in keeplb_vrrp_state.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keeplb.lab.netns import Host, Lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

BACKEND = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
while True:
    c, _ = s.accept(); c.close()
"""

SCRAPE = r"""
import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:8405/metrics", timeout=8).read().decode())
"""


def scrape(host: Host) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = host.run([sys.executable, "-c", SCRAPE], timeout=15)
    assert r.returncode == 0, r.stderr
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(r.stdout):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    return m.get((name, want))


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except (AssertionError, subprocess.TimeoutExpired):
            pass  # a scrape that failed under load is tried again
        time.sleep(0.2)
    return False


def test_metrics_show_server_status_and_vrrp_state(lab: Lab, tmp_path: Path) -> None:
    lb = lab.add_host("lb1", "10.77.0.2/24")
    haproxy = tmp_path / "haproxy.cfg"
    haproxy.write_text(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n"
        "frontend fe\n    bind *:6443\n    default_backend be\n"
        "frontend metrics\n    mode http\n    bind 127.0.0.1:8405\n"
        "    http-request use-service prometheus-exporter if { path /metrics }\n"
        "backend be\n    default-server inter 200ms rise 1 fall 1\n"
        "    server s1 127.0.0.1:7001 check\n"
    )
    keepalived = tmp_path / "keepalived.conf"
    keepalived.write_text(
        "global_defs {\n    router_id lb1\n}\n"
        "vrrp_instance vip {\n    state BACKUP\n    interface eth0\n    virtual_router_id 61\n"
        "    priority 100\n    advert_int 1\n"
        "    virtual_ipaddress {\n        10.77.0.10/24\n    }\n}\n"
    )
    backend = lb.popen([sys.executable, "-c", BACKEND, "7001"])
    log = open(tmp_path / "run.log", "wb")
    try:
        run = lb.popen([sys.executable, "-m", "keeplb", "run", "-f", str(haproxy), "-k", str(keepalived)],
                       stdout=log, stderr=subprocess.STDOUT,
                       env={"KEEPLB_VRRP_STATE_DIR": str(tmp_path), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

        def master() -> bool:
            m = scrape(lb)
            return (sample(m, "keeplb_vrrp_state", instance="vip", state="MASTER") == 1.0
                    and sample(m, "haproxy_server_status", proxy="be", server="s1", state="UP") == 1.0)

        assert wait_until(master, 40), (tmp_path / "run.log").read_text()
        assert "10.77.0.10" in " ".join(lb.addresses())

        lb.stop(backend)

        def down_and_fault() -> bool:
            m = scrape(lb)
            return (sample(m, "haproxy_server_status", proxy="be", server="s1", state="DOWN") == 1.0
                    and sample(m, "keeplb_vrrp_state", instance="vip", state="FAULT") == 1.0)

        assert wait_until(down_and_fault, 30), (tmp_path / "run.log").read_text()
        assert "10.77.0.10" not in " ".join(lb.addresses())

        backend = lb.popen([sys.executable, "-c", BACKEND, "7001"])
        assert wait_until(master, 40), (tmp_path / "run.log").read_text()
        lb.stop(run)
    finally:
        log.close()
