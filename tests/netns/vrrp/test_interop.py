"""keeplb against real keepalived 2.2.7 as its peer, in network namespaces.

After every step the VIP is on exactly one host, read from the kernel of
each namespace, never from the daemons' own claims.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns.vrrp.conftest import (
    VrrpLab,
    holders,
    instance_conf,
    script_conf,
    wait_for,
    wait_ipv6_ready,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.100"
VIP6 = "fd77::100"


def test_v2_multicast_preempt_clean_stop_and_rejoin(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    vlab.daemon("keepalived", b, instance_conf(priority=100))
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 6), vlab.logs()
    # A higher priority joining preempts keepalived's master.
    k = vlab.daemon("keeplb", a, instance_conf(priority=150))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 6), vlab.logs()
    assert k.status()["instances"][0]["state"] == "MASTER"
    # Clean stop: priority 0 hands over after Skew_Time, well before Master_Down_Interval.
    assert k.stop() == 0
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 2.5), vlab.logs()
    assert "(vi) sent 0 priority" in k.log()
    assert "(vi) Backup received priority 0 advertisement" in vlab.daemons[0].log()
    # Rejoin: keeplb comes back and takes the address again.
    k.start()
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 6), vlab.logs()
    assert "Entering MASTER STATE" in k.log()


def test_v3_unicast_master_link_down_and_back(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    common: dict[str, Any] = {"version": 3, "advert_int": 0.2}
    k = vlab.daemon("keeplb", a, instance_conf(priority=150, unicast_src="10.77.0.1",
                                               peers=["10.77.0.2"], **common))
    vlab.daemon("keepalived", b, instance_conf(priority=100, unicast_src="10.77.0.2",
                                               peers=["10.77.0.1"], **common))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 5), vlab.logs()
    # The master's cable is pulled: keepalived takes over, keeplb goes to FAULT and drops the VIP.
    a.link_down()
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 3), vlab.logs()
    assert wait_for(lambda: "(vi) Entering FAULT STATE" in k.log(), 2), k.log()
    a.link_up()
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 4), vlab.logs()
    st = k.status()["instances"][0]
    states = [t["to"] for t in st["transition_log"]]
    assert states[-3:] == ["FAULT", "BACKUP", "MASTER"], st
    assert st["drops"] == {}, st


def test_v3_ipv6_multicast_election_and_stop(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    assert wait_ipv6_ready(a) and wait_ipv6_ready(b)
    conf: dict[str, Any] = {"version": 3, "advert_int": 0.2, "vips": [f"{VIP6}/64"]}
    vlab.daemon("keepalived", b, instance_conf(priority=100, **conf))
    k = vlab.daemon("keeplb", a, instance_conf(priority=200, **conf))
    assert wait_for(lambda: holders([a, b], VIP6) == ["a"], 5), vlab.logs()
    st = k.status()["instances"][0]
    assert st["family"] == 6 and st["source_address"].startswith("fe80:"), st
    assert st["counters"]["adverts_received"] >= 1, st  # keepalived's v3 adverts passed decode
    assert k.stop() == 0
    assert wait_for(lambda: holders([a, b], VIP6) == ["b"], 2), vlab.logs()


def test_nopreempt_keeps_the_running_master(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    conf: dict[str, Any] = {"version": 3, "advert_int": 0.2, "nopreempt": True}
    vlab.daemon("keeplb", a, instance_conf(priority=100, **conf))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 3), vlab.logs()
    ka = vlab.daemon("keepalived", b, instance_conf(priority=200, **conf))
    assert wait_for(lambda: "Entering BACKUP STATE" in ka.log(), 3), ka.log()
    # Several Master_Down_Intervals later the lower-priority master still holds it.
    time.sleep(1.5)
    assert holders([a, b], VIP) == ["a"], vlab.logs()


def test_seed_pattern_service_death_moves_the_vip(vlab: VrrpLab, tmp_path: Path) -> None:
    """The article's setup: equal priorities 100, track_script weight 2, unicast, v2 PASS."""
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    flags = {h: tmp_path / f"service-up-{h}" for h in ("a", "b")}
    for f in flags.values():
        f.write_text("1\n")

    def conf(me: str, peer: str, host: str) -> str:
        return script_conf("chk_haproxy", f"/usr/bin/test -f {flags[host]}", interval=1) + instance_conf(
            name="haproxy-vip", priority=100, unicast_src=me, peers=[peer],
            track_scripts=["chk_haproxy"],
        )

    k = vlab.daemon("keeplb", a, conf("10.77.0.1", "10.77.0.2", "a"))
    vlab.daemon("keepalived", b, conf("10.77.0.2", "10.77.0.1", "b"))
    assert wait_for(lambda: len(holders([a, b], VIP)) == 1, 8), vlab.logs()
    time.sleep(1.5)  # both scripts have reported: both at 102
    first = holders([a, b], VIP)
    assert len(first) == 1, vlab.logs()
    st = k.status()["instances"][0]
    assert st["effective_priority"] == 102, st
    # The service on the master dies: its priority falls to 100, the other (102) preempts.
    flags[first[0]].unlink()
    other = "b" if first == ["a"] else "a"
    assert wait_for(lambda: holders([a, b], VIP) == [other], 8), vlab.logs()
    assert "Changing effective priority from 102 to 100" in (k.log() + vlab.daemons[1].log())


def test_sighup_reload_keeps_state_refuses_bad_file_and_applies_priority(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    conf: dict[str, Any] = {"version": 3, "advert_int": 0.2}
    k = vlab.daemon("keeplb", a, instance_conf(priority=150, **conf))
    vlab.daemon("keepalived", b, instance_conf(priority=100, **conf))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 5), vlab.logs()
    n = k.status()["instances"][0]["transitions"]
    # Same file again: the master keeps its state and its address.
    k.signal(signal.SIGHUP)
    assert wait_for(lambda: k.log().count("Reload finished") == 1, 3), k.log()
    time.sleep(0.5)
    assert holders([a, b], VIP) == ["a"]
    assert k.status()["instances"][0]["transitions"] == n
    # A broken file is refused and the daemon goes on as master.
    good = k.conf.read_text()
    k.conf.write_text(good + "vrrp_instance broken {\n  virtual_router_id 999\n")
    k.signal(signal.SIGHUP)
    assert wait_for(lambda: "refused" in k.log(), 3), k.log()
    assert k.alive() and holders([a, b], VIP) == ["a"]
    # A lower priority takes effect: keepalived (100) preempts keeplb (50).
    k.conf.write_text(good.replace("priority 150", "priority 50"))
    k.signal(signal.SIGHUP)
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 4), vlab.logs()
    assert k.status()["instances"][0]["base_priority"] == 50
