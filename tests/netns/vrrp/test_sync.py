"""vrrp_sync_group across two hosts, with real keepalived 2.2.7 on the other side.

keepalived's rules (vrrp_sync.c): a member becomes MASTER only when every
member of its group wants to ("prefer backup state to avoid thrashing"), and
then takes the others along; a member in FAULT takes the group to FAULT.
The priorities below disagree on purpose (v1 prefers b, v2 prefers a), so an
instance deciding alone would split the pair of addresses across the hosts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns.vrrp.conftest import VrrpLab, holders, instance_conf, wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

V1, V2 = "10.77.0.101", "10.77.0.102"
GROUP = "vrrp_sync_group G {\n  group {\n    v1\n    v2\n  }\n}\n"


def _conf(p1: int, p2: int, track: Path | None = None) -> str:
    fast: dict[str, Any] = {"version": 3, "advert_int": 0.2}
    head, extra = GROUP, ""
    if track is not None:
        head = f"vrrp_track_file tf {{\n  file {track}\n  weight 0\n}}\n" + GROUP
        extra = "  track_file {\n    tf\n  }"
    return (
        head
        + instance_conf(name="v1", vrid=61, priority=p1, vips=[f"{V1}/24"], extra=extra, **fast)
        + instance_conf(name="v2", vrid=62, priority=p2, vips=[f"{V2}/24"], **fast)
    )


@pytest.mark.parametrize("kind_a,kind_b", [("keeplb", "keepalived"), ("keepalived", "keeplb")])
def test_sync_group_moves_together_and_never_splits(
    vlab: VrrpLab, tmp_path: Path, kind_a: str, kind_b: str
) -> None:
    a = vlab.host("a", "10.77.0.1/24")
    b = vlab.host("b", "10.77.0.2/24")
    tf = tmp_path / "tf"
    tf.write_text("0\n")

    def where() -> tuple[list[str], list[str]]:
        return holders([a, b], V1), holders([a, b], V2)

    da = vlab.daemon(kind_a, a, _conf(150, 150, tf))
    assert wait_for(lambda: where() == (["a"], ["a"]), 5), vlab.logs()
    # b's v1 (200) would preempt a's v1 (150), but b's v2 (100) wants BACKUP:
    # the group stays BACKUP on b and both addresses stay on a.
    db = vlab.daemon(kind_b, b, _conf(200, 100))
    assert wait_for(lambda: db.log().count("Entering BACKUP STATE") >= 2, 4), db.log()
    time.sleep(1.5)  # two Master_Down_Intervals of b's v1
    assert where() == (["a"], ["a"]), vlab.logs()
    # a's v1 fails: a's group goes to FAULT and b's group takes both addresses.
    tf.write_text("1\n")
    assert wait_for(lambda: where() == (["b"], ["b"]), 4), vlab.logs()
    # a's v1 recovers: a's v2 (150) would preempt b's v2 (100), but a's v1 sees
    # b's 200 and wants BACKUP, so the group stays BACKUP on a.
    tf.write_text("0\n")
    assert wait_for(lambda: "Entering BACKUP STATE" in da.log().split("FAULT STATE")[-1], 4), da.log()
    time.sleep(1.5)
    assert where() == (["b"], ["b"]), vlab.logs()
    keeplb = da if kind_a == "keeplb" else db
    st = {i["name"]: i for i in keeplb.status()["instances"]}
    assert {n: i["state"] for n, i in st.items()} == (
        {"v1": "BACKUP", "v2": "BACKUP"} if kind_a == "keeplb" else {"v1": "MASTER", "v2": "MASTER"}
    ), st
    assert "VRRP_Group(G) Syncing instances to" in keeplb.log()
