"""Bad packets at a running keeplb, and a partition between two masters."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from tests.netns.vrrp.conftest import REPO, VrrpLab, holders, instance_conf, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.100"

# Run inside the attacker's namespace: each case is an advertisement that
# would win (priority 254) if it were accepted.
INJECT = r"""
import ipaddress, socket, sys
sys.path.insert(0, %(repo)r)
from keeplb.vrrp import packet
src = ipaddress.ip_address("10.77.0.2")
dst = ipaddress.ip_address("224.0.0.18")
vip = ipaddress.ip_address("10.77.0.100")
def adv(**kw):
    base = dict(version=2, vrid=60, priority=254, max_adver_int_cs=100,
                addresses=(vip,), auth_type=packet.AUTH_PASS, auth_data=b"1111")
    base.update(kw)
    return packet.encode(packet.Advertisement(**base), family=4, src=src, dst=dst)
good = adv()
cases = [
    ("ttl", good, 64),
    ("checksum", good[:6] + bytes([good[6] ^ 0xFF]) + good[7:], 255),
    ("vrid", adv(vrid=61), 255),
    ("truncated", good[:5], 255),
    ("auth", adv(auth_data=b"wrong"), 255),
    ("version", bytes([0x51]) + good[1:], 255),
    ("version", packet.encode(packet.Advertisement(3, 60, 254, 100, (vip,)),
                              family=4, src=src, dst=dst), 255),
    ("length", good + b"\0\0\0\0", 255),
]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.77.0.2"))
for _ in range(3):
    for name, buf, ttl in cases:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        s.sendto(buf, (str(dst), 0))
print("sent")
"""


def test_bad_packets_are_dropped_counted_and_change_nothing(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    k = vlab.daemon("keeplb", a, instance_conf(priority=100, advert_int=1))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 6), vlab.logs()
    before = k.status()
    res = b.run([sys.executable, "-c", INJECT % {"repo": str(REPO)}], timeout=20)
    assert res.returncode == 0 and "sent" in res.stdout, res.stderr

    def counted() -> bool:
        st = k.status()
        drops = {**st["drops"]}
        return all(drops.get(r, 0) >= 3 for r in ("ttl", "checksum", "vrid", "truncated", "auth", "length")) \
            and drops.get("version", 0) >= 6

    assert wait_for(counted, 5, 0.2), k.status()
    st = k.status()
    inst = st["instances"][0]
    assert k.alive()
    assert inst["state"] == "MASTER"
    assert inst["transition_log"] == before["instances"][0]["transition_log"]
    assert inst["transitions"] == before["instances"][0]["transitions"]
    assert inst["counters"]["adverts_received"] == 0
    # Per-instance counts: everything but the foreign VRID is charged to 'vi'.
    assert inst["drops"].get("auth", 0) >= 3 and "vrid" not in inst["drops"], inst
    assert holders([a, b], VIP) == ["a"]
    # keepalived.stats carries the same counters in keepalived's layout.
    import signal as _signal

    k.signal(_signal.SIGUSR2)
    stats = k.workdir / "keepalived.stats"
    assert wait_for(stats.exists, 3)
    text = stats.read_text()
    assert "VRRP Instance: vi" in text and "    TTL: " in text
    assert "    TTL: 0" not in text
    # A log line per reason, not per packet.
    assert k.log().count("dropping advertisement") <= 8, k.log()


def test_partition_two_masters_then_one_after_heal(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    advert = 0.5
    conf: dict[str, Any] = {"version": 3, "advert_int": advert}
    vlab.daemon("keeplb", a, instance_conf(priority=150, **conf))
    vlab.daemon("keepalived", b, instance_conf(priority=100, **conf))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 5), vlab.logs()
    vlab.lab.partition([a], [b])
    assert wait_for(lambda: holders([a, b], VIP) == ["a", "b"], 4), vlab.logs()
    vlab.lab.heal()
    healed = time.monotonic()
    # Within three advertisement intervals (plus the time to read two namespaces).
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 3 * advert + 0.5), vlab.logs()
    assert time.monotonic() - healed < 3 * advert + 0.5
    time.sleep(advert * 2)
    assert holders([a, b], VIP) == ["a"], vlab.logs()
