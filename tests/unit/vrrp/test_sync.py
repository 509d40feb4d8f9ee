"""Sync groups in the pure core: keepalived's vrrp_sync.c rules, driven by hand."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from keeplb.config.model import (
    KeepalivedConfig,
    TrackFileDef,
    TrackRef,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
)
from keeplb.vrrp.daemon import Instance, VrrpDaemon
from keeplb.vrrp.machine import (
    AddVips,
    AdvertisementReceived,
    ForceBackup,
    ForceMaster,
    InstanceParams,
    RemoveVips,
    SendAdvertisement,
    Startup,
    State,
    VrrpMachine,
    WantMaster,
    sync_can_goto_master,
    sync_followers,
)
from keeplb.vrrp.packet import Advertisement

OURS = ipaddress.IPv4Address("10.77.0.2")
PEER = ipaddress.IPv4Address("10.77.0.3")


def member(name: str, vrid: int, priority: int = 100, synced: bool = True) -> VrrpMachine:
    return VrrpMachine(
        InstanceParams(name=name, vrid=vrid, version=3, priority=priority, advert_int_cs=20,
                       primary_address=OURS, synced=synced)
    )


def advert(vrid: int, priority: int) -> AdvertisementReceived:
    return AdvertisementReceived(Advertisement(3, vrid, priority, 20, ()), PEER)


def test_a_member_waits_for_the_group_before_master() -> None:
    v1, v2 = member("v1", 61), member("v2", 62)
    v1.handle(Startup(), 0.0)
    v2.handle(Startup(), 0.0)
    # v2 hears a live master: it wants BACKUP.
    v2.handle(advert(62, 200), 0.5)
    deadline = v1.next_deadline()
    assert deadline is not None
    actions = v1.handle_timeout(deadline)
    # keepalived's vrrp_state_goto_master: held in BACKUP, timer re-armed, nothing sent.
    assert v1.state is State.BACKUP and v1.wants_master
    assert WantMaster() in actions and AddVips() not in actions
    assert not any(isinstance(a, SendAdvertisement) for a in actions)
    assert (v1.next_deadline() or 0) > deadline
    assert not sync_can_goto_master([v1, v2], v1)
    # The next expiry asks again but logs the timeout once.
    again = v1.handle_timeout(v1.next_deadline() or 0)
    assert again == [WantMaster()]
    # v2's master goes silent: v2 wants MASTER too, now the group may go.
    v2.handle_timeout(v2.next_deadline() or 0)
    assert v2.wants_master and sync_can_goto_master([v1, v2], v2)
    # A live master's advert withdraws the wish (keepalived's wantstate BACKUP).
    v2.handle(advert(62, 200), 5.0)
    assert not v2.wants_master and not sync_can_goto_master([v1, v2], v1)


def test_unsynced_instances_still_take_over_alone() -> None:
    m = member("v1", 61, synced=False)
    m.handle(Startup(), 0.0)
    actions = m.handle_timeout(m.next_deadline() or 0)
    assert m.state is State.MASTER and WantMaster() not in actions


def test_master_takes_the_backups_along_and_backup_takes_the_masters() -> None:
    v1, v2, v3 = member("v1", 61), member("v2", 62), member("v3", 63)
    for m in (v1, v2, v3):
        m.handle(Startup(), 0.0)
    v3.handle(advert(63, 50), 0.1)
    actions = v1.handle(ForceMaster(), 1.0)
    assert v1.state is State.MASTER and AddVips() in actions
    follow = sync_followers([v1, v2, v3], v1, State.BACKUP, State.MASTER)
    assert follow == [(v2, ForceMaster()), (v3, ForceMaster())]
    for m, ev in follow:
        m.handle(ev, 1.0)
    assert {m.state for m in (v1, v2, v3)} == {State.MASTER}
    # v2 hears a higher priority: it backs down, and vrrp_sync_backup takes v1 and v3.
    before = v2.state
    v2.handle(advert(62, 250), 2.0)
    follow = sync_followers([v1, v2, v3], v2, before, v2.state)
    assert follow == [(v1, ForceBackup()), (v3, ForceBackup())]
    actions = v1.handle(ForceBackup(), 2.0)
    assert v1.state is State.BACKUP and RemoveVips() in actions
    # vrrp_state_leave_master(isync, false): no priority-0 advert for the followers.
    assert SendAdvertisement(0) not in actions
    # FAULT and other moves are the shell's FAULT_SYNC business, not a follow.
    assert sync_followers([v1, v2, v3], v3, State.MASTER, State.FAULT) == []


def test_a_members_own_weighted_trackers_in_a_sync_group(caplog: pytest.LogCaptureFixture) -> None:
    """keepalived 2.2.7 (checked in a namespace): a synced member's own track_file
    with a weight is dropped ('(v1) ignoring tracked file tf with weight 5 due
    to SYNC group'), one with the default weight becomes weight 0 ('... specify
    weight 0'), a weighted script is dropped, and a weighted interface is
    logged as ignored yet keeps moving the priority."""
    cfg = KeepalivedConfig(
        track_files={
            "tf": TrackFileDef(name="tf", file="/nonexistent", weight=5),
            "td": TrackFileDef(name="td", file="/nonexistent"),
        },
        scripts={"chk": VrrpScript("chk", script="/bin/true", weight=4)},
        instances=[
            VrrpInstance(name="v1", interface="eth0", virtual_router_id=61,
                         track_files=[TrackRef("tf"), TrackRef("td")],
                         track_interfaces=[TrackRef("eth1", 10)],
                         track_scripts=[TrackRef("chk")]),
            VrrpInstance(name="v2", interface="eth0", virtual_router_id=62,
                         track_files=[TrackRef("tf")]),
        ],
        sync_groups=[VrrpSyncGroup(name="G", group=["v1", "v3"])],
    )
    daemon = VrrpDaemon(cfg, "keepalived.conf")
    with caplog.at_level(logging.WARNING, logger="keeplb.vrrp"):
        v1, v2 = Instance(daemon, cfg.instances[0]), Instance(daemon, cfg.instances[1])
    assert v1.params.synced and not v2.params.synced
    assert [(t.name, t.weight) for t in v1.trackers] == [("eth1", 10), ("td", 0)]
    assert [t.weight for t in v2.trackers] == [5]
    assert "(v1) ignoring tracked file tf with weight 5 due to SYNC group" in caplog.text
    assert "(v1) ignoring weight from tracked file td due to SYNC group. specify weight 0" in caplog.text
    assert "(v1) ignoring tracked script chk with weights due to SYNC group" in caplog.text
    assert "(v1) ignoring eth1 tracked interface weight due to SYNC group" in caplog.text
