"""keeplb with keeplb: the same scenarios without keepalived in the room."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns.vrrp.conftest import VrrpLab, holders, instance_conf, script_conf, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

VIP = "10.77.0.100"


def test_v3_unicast_election_crash_and_rejoin(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    common: dict[str, Any] = {"version": 3, "advert_int": 0.2}
    ka = vlab.daemon("keeplb", a, instance_conf(priority=150, unicast_src="10.77.0.1",
                                                peers=["10.77.0.2"], **common))
    kb = vlab.daemon("keeplb", b, instance_conf(priority=100, unicast_src="10.77.0.2",
                                                peers=["10.77.0.1"], **common))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 4), vlab.logs()
    sb = kb.status()["instances"][0]
    assert sb["state"] == "BACKUP" and sb["master_address"] == "10.77.0.1", sb
    a.link_down()
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 3), vlab.logs()
    a.link_up()
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 3), vlab.logs()
    assert ka.status()["instances"][0]["drops"] == {}


def test_v2_multicast_equal_priorities_one_master_then_clean_stop(vlab: VrrpLab) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    daemons = {"a": vlab.daemon("keeplb", a, instance_conf(priority=100)),
               "b": vlab.daemon("keeplb", b, instance_conf(priority=100))}
    assert wait_for(lambda: len(holders([a, b], VIP)) == 1, 8), vlab.logs()
    time.sleep(1.5)  # a second master would show up within an advert interval
    first = holders([a, b], VIP)
    assert len(first) == 1, vlab.logs()
    other = "b" if first == ["a"] else "a"
    assert daemons[first[0]].stop() == 0
    assert wait_for(lambda: holders([a, b], VIP) == [other], 2.5), vlab.logs()


def test_classic_mistake_weight_smaller_than_gap_keeps_the_vip(vlab: VrrpLab, tmp_path: Path) -> None:
    """Priorities 150/100 with weight 2: a dead service on the master moves nothing."""
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    up = {h: tmp_path / f"up-{h}" for h in ("a", "b")}
    for f in up.values():
        f.write_text("1\n")

    def conf(host: str, prio: int) -> str:
        return script_conf("chk", f"/usr/bin/test -f {up[host]}") + instance_conf(
            priority=prio, version=3, advert_int=0.2, track_scripts=["chk"]
        )

    ka = vlab.daemon("keeplb", a, conf("a", 150))
    vlab.daemon("keeplb", b, conf("b", 100))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 4), vlab.logs()
    assert wait_for(lambda: ka.status()["instances"][0]["effective_priority"] == 152, 3)
    up["a"].unlink()
    # The failure is seen (152 -> 150) but 150 still beats 102: the VIP stays.
    assert wait_for(lambda: ka.status()["instances"][0]["effective_priority"] == 150, 3), ka.log()
    time.sleep(1.0)
    assert holders([a, b], VIP) == ["a"], vlab.logs()
    assert "VRRP_Script(chk) failed" in ka.log()


def test_track_interface_weight_moves_the_vip(vlab: VrrpLab) -> None:
    """track_interface with a weight: a link going down lowers the priority below the peer's."""
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    tracked = "  track_interface {\n    lo weight -60\n  }"
    ka = vlab.daemon("keeplb", a, instance_conf(priority=150, version=3, advert_int=0.2, extra=tracked))
    vlab.daemon("keeplb", b, instance_conf(priority=100, version=3, advert_int=0.2))
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 4), vlab.logs()
    # `lo` of a's own namespace: taking it down touches nothing outside the test.
    assert a.run(["ip", "link", "set", "lo", "down"]).returncode == 0
    assert wait_for(lambda: holders([a, b], VIP) == ["b"], 3), vlab.logs()
    assert ka.status()["instances"][0]["effective_priority"] == 90
    assert a.run(["ip", "link", "set", "lo", "up"]).returncode == 0
    assert wait_for(lambda: holders([a, b], VIP) == ["a"], 3), vlab.logs()
