"""Simulated segments of VRRP routers: elections, failover, partitions, trackers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeplb.testing import FakeClock, SimNet
from keeplb.vrrp.machine import FaultCleared, FaultRaised, InstanceParams, PriorityChanged, State
from keeplb.vrrp.track import Tracker, effective_priority

VIP = (ipaddress.ip_interface("10.77.0.10/24"),)


def router(i: int, priority: int, **kw: object) -> InstanceParams:
    return InstanceParams(
        name=f"r{i}",
        vrid=60,
        version=kw.pop("version", 2),  # type: ignore[arg-type]
        priority=priority,
        advert_int_cs=kw.pop("advert_int_cs", 100),  # type: ignore[arg-type]
        primary_address=ipaddress.IPv4Address(f"10.77.0.{i + 2}"),
        vips=VIP,
        **kw,  # type: ignore[arg-type]
    )


def net_of(*prios: int, **kw: object) -> SimNet:
    net = SimNet(FakeClock())
    for i, prio in enumerate(prios):
        net.add(router(i, prio, **kw))
        net.start(f"r{i}")
    return net


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 255), st.floats(0, 5)), min_size=2, max_size=5),
    st.sampled_from([2, 3]),
    st.data(),
)
def test_routers_converge_to_one_master(
    routers: list[tuple[int, float]], version: int, data: st.DataObject
) -> None:
    owners = [p for p, _ in routers if p == 255]
    if len(owners) > 1:
        routers = [(p if p < 255 else 254, t) for p, t in routers]  # one owner at most per VRID
    net = SimNet(FakeClock(), latency=0.002, jitter=0.003, seed=len(routers))
    intervals = []
    for i, (prio, start) in enumerate(routers):
        adv_cs = 100 if version == 2 else data.draw(st.integers(20, 300))
        intervals.append(adv_cs)
        net.add(router(i, prio, version=version, advert_int_cs=adv_cs))
        net.start(f"r{i}", at=start)
    # the last one to start needs one Master_Down_Interval, plus one round of adverts
    net.run_until(max(t for _, t in routers) + 4 * max(intervals) / 100 + 1.5)
    masters = net.masters()
    assert len(masters) == 1
    assert net.vip_holders() == masters
    # the highest priority wins; between equals, whoever got there first stays
    # (RFC 5798 §6.4.2: a backup does not preempt an equal priority)
    prios = {f"r{i}": p for i, (p, _) in enumerate(routers)}
    assert prios[masters[0]] == max(prios.values())
    assert all(s is State.BACKUP for n, s in net.states().items() if n != masters[0])


def test_preemption_by_a_higher_router_started_later() -> None:
    net = net_of(100)
    net.run_for(5)
    net.add(router(1, 150))
    net.start("r1")
    net.run_for(5)
    assert net.masters() == ["r1"]
    took_over = [t for t, n, _, new in net.transitions if n == "r1" and new is State.MASTER][0]
    assert took_over - 5 < 3 + 106 / 256 + 0.01  # one Master_Down_Interval
    assert any(
        "received lower priority (100) advert from 10.77.0.2 - discarding" in getattr(a, "text", "")
        for _, a in net.routers["r1"].log
    )


def test_nopreempt_keeps_the_lower_master() -> None:
    net = net_of(100)
    net.run_for(5)
    net.add(router(1, 150, nopreempt=True, initial_state="BACKUP"))
    net.start("r1")
    net.run_for(30)
    assert net.masters() == ["r0"]


def test_preempt_delay() -> None:
    net = net_of(100)
    net.run_for(5)
    net.add(router(1, 150, preempt_delay_cs=1000))
    net.start("r1")
    net.run_for(30)
    assert net.masters() == ["r1"]
    took_over = [t for t, n, _, new in net.transitions if n == "r1" and new is State.MASTER][0]
    assert took_over >= 15  # not before the 10 s delay


def test_priority_zero_handover_after_skew_time() -> None:
    net = net_of(110, 100)
    net.run_for(5)
    assert net.masters() == ["r0"]
    net.stop("r0")
    stop = net.clock.now
    net.run_for(3)
    assert net.masters() == ["r1"]
    took_over = [t for t, n, _, new in net.transitions if n == "r1" and new is State.MASTER][0]
    assert took_over - stop < 156 / 256 + 0.01  # Skew_Time, not Master_Down_Interval


def test_partition_gives_two_masters_and_heals_within_three_intervals() -> None:
    net = net_of(150, 100, 50, version=3, advert_int_cs=50)
    net.run_for(5)
    assert net.masters() == ["r0"]
    net.partition(["r0"], ["r1", "r2"])
    net.run_for(5)
    assert net.masters() == ["r0", "r1"]
    assert sorted(net.vip_holders()) == ["r0", "r1"]
    net.heal()
    healed = net.clock.now
    net.run_for(3 * 0.5)
    assert net.masters() == ["r0"]
    back = [t for t, n, old, new in net.transitions if n == "r1" and old is State.MASTER]
    assert back and back[-1] - healed <= 3 * 0.5


def test_loss_then_recovery() -> None:
    net = net_of(200, 150, 100)
    net.drop_rate = 0.3
    net.run_for(60)
    net.drop_rate = 0.0
    net.run_for(5)
    assert net.masters() == ["r0"]
    assert any(d.dropped == "loss" for d in net.deliveries)


def test_fault_hands_over_and_recovers() -> None:
    net = net_of(150, 100)
    net.run_for(5)
    net.inject("r0", FaultRaised("eth0"))
    net.run_for(2)
    assert net.masters() == ["r1"] and net.states()["r0"] is State.FAULT
    net.inject("r0", FaultCleared())
    net.run_for(6)
    assert net.masters() == ["r0"]


def test_mismatched_password_is_dropped_and_both_become_master() -> None:
    net = SimNet(FakeClock())
    net.add(router(0, 150), auth_pass=b"1111")
    net.add(router(1, 100), auth_pass=b"2222")
    net.start("r0")
    net.start("r1")
    net.run_for(6)
    assert net.masters() == ["r0", "r1"]
    assert any(d.dropped == "auth" for d in net.deliveries)


def _seed_net(prio_a: int, prio_b: int) -> tuple[SimNet, Tracker, Tracker]:
    """Two hosts as in the seed keepalived.conf: chk_haproxy weight 2."""
    net = SimNet(FakeClock())
    trackers = (Tracker("chk_haproxy", weight=2), Tracker("chk_haproxy", weight=2))
    for i, (prio, tracker) in enumerate(zip((prio_a, prio_b), trackers, strict=True)):
        net.add(router(i, prio, initial_state="BACKUP"))
        net.start(f"r{i}")
        tracker.on_result(True)
        net.inject(f"r{i}", PriorityChanged(effective_priority(prio, [tracker])[0]))
    net.run_for(5)
    return net, trackers[0], trackers[1]


def test_seed_pattern_failing_script_loses_the_vip() -> None:
    net, a, b = _seed_net(100, 100)
    assert net.masters() == ["r1"]  # 102 each: the higher address wins
    b.on_result(False)  # haproxy dies on r1
    net.inject("r1", PriorityChanged(effective_priority(100, [b])[0]))
    net.run_for(6)
    assert net.masters() == ["r0"]
    assert net.vip_holders() == ["r0"]


def test_weight_smaller_than_priority_gap_moves_nothing() -> None:
    net, a, b = _seed_net(110, 100)
    assert net.masters() == ["r0"]
    a.on_result(False)  # 112 -> 110, still above 102
    net.inject("r0", PriorityChanged(effective_priority(110, [a])[0]))
    net.run_for(30)
    assert net.masters() == ["r0"]
    assert [n for _, n, _, new in net.transitions if new is State.MASTER] == ["r0"]


def test_equal_priorities_started_together_elect_the_highest_address() -> None:
    net = net_of(100, 100, 100)
    net.run_for(6)
    assert net.masters() == ["r2"]
    assert net.vip_holders() == ["r2"]


def test_ipv6_v3_segment() -> None:
    net = SimNet(FakeClock())
    for i, prio in enumerate((100, 200)):
        net.add(
            InstanceParams(
                name=f"r{i}",
                vrid=7,
                version=3,
                priority=prio,
                advert_int_cs=50,
                primary_address=ipaddress.IPv6Address(f"fe80::{i + 2}"),
                vips=(ipaddress.ip_interface("fd77::10/64"),),
            )
        )
        net.start(f"r{i}")
    net.run_for(3)
    assert net.masters() == ["r1"]
    assert not [d for d in net.deliveries if d.dropped]


def test_fake_clock_is_monotonic() -> None:
    clock = FakeClock(5)
    assert clock() == 5.0 and clock.advance(1.5) == 6.5 and clock.jump_to(7) == 7.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.jump_to(6)
