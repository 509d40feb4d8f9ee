"""What a master puts on the host besides the VIPs, and what stays whatever the
state: static_ipaddress / static_routes, virtual_routes, the excluded
addresses and their gratuitous ARPs. Each scenario runs against keepalived
2.2.7 first, so the assertions are keepalived's behaviour, then keeplb.
Also: vrrp_check_unicast_src, and VRRPv3 at advert_int 0.1 with keepalived.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from keeplb.lab.netns import Host
from tests.netns.vrrp.conftest import VrrpLab, has_vip, holders, instance_conf, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP, EVIP, STATIC = "10.77.0.100", "10.77.0.200", "10.77.1.1"
STATIC_NET, VROUTE_NET = "10.78.0.0/24", "10.79.0.0/24"

# Records the sender of every gratuitous ARP (sender IP == target IP) for a bounded time.
ARP_SNIFFER = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0x0806))
s.settimeout(0.2)
print("ready", flush=True)
seen = set()
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        f = s.recv(128)
    except TimeoutError:
        continue
    arp = f[14:42]
    if len(arp) == 28 and arp[14:18] == arp[24:28]:
        ip = socket.inet_ntoa(arp[14:18])
        if ip not in seen:
            seen.add(ip)
            print(ip, flush=True)
"""


def _routes(host: Host) -> str:
    return host.run(["ip", "-4", "route", "show", "proto", "keepalived"]).stdout


@pytest.mark.parametrize("kind", ["keepalived", "keeplb"])
def test_static_and_virtual_routes_excluded_addresses(vlab: VrrpLab, kind: str) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    sniffer = b.popen([sys.executable, "-c", ARP_SNIFFER, "4"], stdout=subprocess.PIPE, text=True)
    assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "ready"
    extra = (
        "  virtual_ipaddress_excluded {\n    10.77.0.200/24\n  }\n"
        f"  virtual_routes {{\n    {VROUTE_NET} via 10.77.0.254 dev eth0\n  }}"
    )
    statics = (
        f"static_ipaddress {{\n  {STATIC}/24 dev eth0\n}}\n"
        f"static_routes {{\n  {STATIC_NET} via 10.77.0.254 dev eth0\n}}\n"
    )
    fast: dict[str, Any] = {"version": 3, "advert_int": 0.2}
    da = vlab.daemon(kind, a, statics + instance_conf(priority=150, extra=extra, **fast))
    assert wait_for(lambda: has_vip(a, VIP) and has_vip(a, EVIP), 4), vlab.logs()
    assert wait_for(lambda: VROUTE_NET in _routes(a), 2), _routes(a)
    assert has_vip(a, STATIC) and STATIC_NET in _routes(a)
    out, _ = sniffer.communicate(timeout=10)
    # Gratuitous ARPs announce the excluded address too.
    assert {VIP, EVIP} <= set(out.split()), out
    # A higher priority takes over: the VIPs and virtual routes leave a, statics stay.
    vlab.daemon("keeplb", b, instance_conf(priority=200, extra=extra, **fast))
    assert wait_for(lambda: holders([a, b], VIP) == ["b"] and not has_vip(a, EVIP), 4), vlab.logs()
    assert wait_for(lambda: VROUTE_NET not in _routes(a), 2), _routes(a)
    assert VROUTE_NET in _routes(b)
    assert has_vip(a, STATIC) and STATIC_NET in _routes(a)
    # Stopping removes the static address and route too.
    assert da.stop() == 0
    assert not has_vip(a, STATIC) and STATIC_NET not in _routes(a), _routes(a)


def test_check_unicast_src_drops_strangers(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    fast: dict[str, Any] = {"version": 3, "advert_int": 0.2}
    # a's only peer is 10.77.0.3; b (not a peer) speaks to a with a higher priority.
    k = vlab.daemon("keeplb", a, instance_conf(priority=100, unicast_src="10.77.0.1",
                                               peers=["10.77.0.3"], **fast),
                    global_extra="  vrrp_check_unicast_src")
    assert wait_for(lambda: has_vip(a, VIP), 4), k.log()
    vlab.daemon("keepalived", b, instance_conf(priority=200, unicast_src="10.77.0.2",
                                               peers=["10.77.0.1"], **fast))
    assert wait_for(lambda: has_vip(b, VIP), 4), vlab.logs()
    time.sleep(1.0)
    st = k.status()["instances"][0]
    assert st["state"] == "MASTER" and has_vip(a, VIP), vlab.logs()
    assert st["drops"].get("unicast_src", 0) >= 3, st
    assert k.log().count("unicast source address 10.77.0.2 not a unicast peer") == 1, k.log()


def test_v3_advert_int_centiseconds_with_keepalived(vlab: VrrpLab) -> None:
    """advert_int 0.1: both sides agree on 10 cs adverts and on who is master."""
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    fast: dict[str, Any] = {"version": 3, "advert_int": 0.1}
    k = vlab.daemon("keeplb", a, instance_conf(priority=150, **fast))
    assert wait_for(lambda: has_vip(a, VIP), 4), k.log()
    ka = vlab.daemon("keepalived", b, instance_conf(priority=100, **fast))
    assert wait_for(lambda: "Entering BACKUP STATE" in ka.log(), 4), ka.log()
    time.sleep(1.0)  # 10 adverts: a late or misread one would flap keepalived to MASTER
    st = k.status()["instances"][0]
    assert st["advert_int"] == 0.1 and st["state"] == "MASTER", st
    assert holders([a, b], VIP) == ["a"] and "Entering MASTER STATE" not in ka.log(), vlab.logs()
    assert st["drops"] == {}, st
    # A crash: keepalived takes over after 3 x 0.1 s + skew, not after seconds.
    k.kill()
    t0 = time.monotonic()
    assert wait_for(lambda: has_vip(b, VIP), 2), vlab.logs()
    assert time.monotonic() - t0 < 1.0
    # keeplb comes back and preempts keepalived's master at 0.1 s adverts.
    a.run(["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
    k.start()
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 4), vlab.logs()
