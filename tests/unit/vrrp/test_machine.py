"""The VRRP machine driven by hand: RFC 5798 §6.4 decisions and keepalived's words."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.config.model import GlobalDefs, VirtualAddress, VrrpInstance, VrrpStateName
from keeplb.vrrp.machine import (
    Action,
    AddVips,
    AdvertisementReceived,
    Event,
    FaultCleared,
    FaultRaised,
    ForceBackup,
    ForceMaster,
    InstanceParams,
    LogLine,
    Notify,
    PriorityChanged,
    Reload,
    RemoveVips,
    SendAdvertisement,
    SendGratuitousArp,
    Shutdown,
    Startup,
    State,
    Transition,
    VrrpMachine,
)
from keeplb.vrrp.packet import Advertisement

V4 = ipaddress.IPv4Address
OURS = V4("10.77.0.2")
PEER_LOW, PEER_HIGH = V4("10.77.0.1"), V4("10.77.0.3")
VIP = (ipaddress.ip_interface("10.77.0.10/24"),)


def params(**kw: object) -> InstanceParams:
    base = InstanceParams(
        name="haproxy-vip",
        vrid=60,
        version=2,
        priority=100,
        advert_int_cs=100,
        primary_address=OURS,
        vips=VIP,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def adv(priority: int, interval_cs: int = 100, version: int = 2) -> Advertisement:
    return Advertisement(version, 60, priority, interval_cs, (V4("10.77.0.10"),))


def logs(actions: list[Action]) -> list[str]:
    return [a.text for a in actions if isinstance(a, LogLine)]


def backup(p: InstanceParams | None = None) -> VrrpMachine:
    m = VrrpMachine(p or params())
    m.handle(Startup(), 0.0)
    assert m.state is State.BACKUP
    return m


def master(p: InstanceParams | None = None) -> VrrpMachine:
    m = backup(p)
    m.handle_timeout(100.0)
    assert m.state is State.MASTER
    return m


# ------------------------------------------------------------------ startup


def test_owner_goes_straight_to_master() -> None:
    m = VrrpMachine(params(priority=255))
    actions = m.handle(Startup(), 5.0)
    assert actions == [
        SendAdvertisement(255),
        LogLine("(haproxy-vip) Entering MASTER STATE"),
        Transition(State.INITIALIZE, State.MASTER),
        AddVips(),
        SendGratuitousArp(),
        Notify(State.MASTER, 255),
    ]
    assert m.next_deadline() == pytest.approx(6.0)


@pytest.mark.parametrize("initial", ["MASTER", "BACKUP", None])
def test_others_start_in_backup_like_keepalived(initial: str | None) -> None:
    m = VrrpMachine(params(initial_state=initial))
    actions = m.handle(Startup(), 10.0)
    assert logs(actions) == ["(haproxy-vip) Entering BACKUP STATE (init)"]
    assert Notify(State.BACKUP, 100) in actions
    assert m.next_deadline() == pytest.approx(10.0 + 3 + 156 / 256)


def test_backup_times_out_to_master() -> None:
    m = backup()
    assert m.handle_timeout(1.0) == []  # early: nothing
    actions = m.handle_timeout(3.61)
    assert logs(actions) == [
        "(haproxy-vip) Receive advertisement timeout",
        "(haproxy-vip) Entering MASTER STATE",
    ]
    assert actions[1] == SendAdvertisement(100)  # before the VIPs and GARPs
    assert actions.index(SendAdvertisement(100)) < actions.index(AddVips())
    assert m.master_address == OURS
    # RFC 5798 §6.4.3: Adver_Timer fires every Advertisement_Interval
    assert m.handle_timeout(4.61) == [SendAdvertisement(100)]
    assert m.next_deadline() == pytest.approx(5.61)


def test_startup_while_faulted_enters_fault() -> None:
    m = VrrpMachine(params())
    assert m.handle(FaultRaised("eth0 down"), 0.0) == []
    actions = m.handle(Startup(), 0.0)
    assert m.state is State.FAULT and logs(actions) == ["(haproxy-vip) Entering FAULT STATE"]
    assert m.next_deadline() is None


# ------------------------------------------------------------------ backup


def test_backup_resets_timer_on_higher_or_equal_advert() -> None:
    m = backup()
    for prio in (100, 150):
        assert m.handle(AdvertisementReceived(adv(prio), PEER_HIGH), 2.0) == []
        assert m.next_deadline() == pytest.approx(2.0 + 3 + 156 / 256)
    assert m.master_address == PEER_HIGH and m.master_priority == 150


def test_v3_backup_learns_master_adver_interval() -> None:
    m = backup(params(version=3))
    m.handle(AdvertisementReceived(adv(150, 250, 3), PEER_HIGH), 2.0)
    assert m.master_adver_int_cs == 250
    assert m.next_deadline() == pytest.approx(2.0 + 7.5 + 156 * 2.5 / 256)
    v2 = backup()
    v2.handle(AdvertisementReceived(adv(150, 100), PEER_HIGH), 2.0)
    assert v2.master_adver_int_cs == 100


def test_backup_priority_zero_waits_skew_time_only() -> None:
    m = backup()
    actions = m.handle(AdvertisementReceived(adv(0), PEER_HIGH), 2.0)
    assert logs(actions) == ["(haproxy-vip) Backup received priority 0 advertisement"]
    assert m.next_deadline() == pytest.approx(2.0 + 156 / 256)


def test_backup_discards_lower_priority_and_preempts() -> None:
    m = backup()
    deadline = m.next_deadline()
    actions = m.handle(AdvertisementReceived(adv(90), PEER_HIGH), 2.0)
    assert logs(actions) == [
        "(haproxy-vip) received lower priority (90) advert from 10.77.0.3 - discarding"
    ]
    assert m.next_deadline() == deadline  # the down timer keeps running


def test_nopreempt_backup_follows_a_lower_master() -> None:
    m = backup(params(nopreempt=True))
    assert m.handle(AdvertisementReceived(adv(90), PEER_HIGH), 2.0) == []
    assert m.next_deadline() == pytest.approx(2.0 + 3 + 156 / 256)


def test_preempt_delay_holds_back_then_preempts() -> None:
    m = backup(params(preempt_delay_cs=1000))
    for t in (1.0, 2.0, 10.0):  # within 10 s of the first lower advert: follow it
        assert m.handle(AdvertisementReceived(adv(90), PEER_HIGH), t) == []
    actions = m.handle(AdvertisementReceived(adv(90), PEER_HIGH), 11.5)
    assert "discarding" in logs(actions)[0]
    assert m.next_deadline() == pytest.approx(10.0 + 3 + 156 / 256)


def test_priority_change_moves_the_down_timer() -> None:
    m = backup()
    before = m.next_deadline()
    assert before is not None
    actions = m.handle(PriorityChanged(102), 1.0)
    assert logs(actions) == ["(haproxy-vip) Changing effective priority from 100 to 102"]
    assert m.next_deadline() == pytest.approx(before - 2 / 256)
    assert m.handle(PriorityChanged(102), 1.0) == []
    m.handle(PriorityChanged(400), 1.0)
    assert m.effective_priority == 254  # clamped; only an owner has 255


# ------------------------------------------------------------------ master


def test_master_backs_down_to_higher_priority() -> None:
    m = master()
    actions = m.handle(AdvertisementReceived(adv(110), PEER_HIGH), 101.0)
    assert actions == [
        LogLine(
            "(haproxy-vip) Master received advert from 10.77.0.3 with higher priority 110, ours 100"
        ),
        LogLine("(haproxy-vip) Entering BACKUP STATE"),
        Transition(State.MASTER, State.BACKUP),
        RemoveVips(),
        Notify(State.BACKUP, 100),
    ]
    assert m.master_address == PEER_HIGH
    assert m.next_deadline() == pytest.approx(101.0 + 3 + 156 / 256)


def test_master_answers_lower_priority_at_once() -> None:
    m = master()
    actions = m.handle(AdvertisementReceived(adv(90), PEER_HIGH), 100.5)
    assert actions == [
        LogLine(
            "(haproxy-vip) Received advert from 10.77.0.3 with lower priority 90, ours 100, forcing new election"
        ),
        SendAdvertisement(100),
    ]
    assert m.state is State.MASTER
    quiet = master(params(lower_prio_no_advert=True))
    assert SendAdvertisement(100) not in quiet.handle(
        AdvertisementReceived(adv(90), PEER_HIGH), 100.5
    )


def test_equal_priority_higher_address_wins() -> None:
    m = master()
    assert m.handle(AdvertisementReceived(adv(100), PEER_LOW), 100.5)[-1] == SendAdvertisement(100)
    assert m.state is State.MASTER
    actions = m.handle(AdvertisementReceived(adv(100), PEER_HIGH), 100.6)
    assert logs(actions)[0] == (
        "(haproxy-vip) Master received advert from 10.77.0.3 with same priority 100 but higher IP address than ours"
    )
    assert m.state is State.BACKUP


def test_master_priority_zero_resends_and_resets_timer() -> None:
    m = master()
    actions = m.handle(AdvertisementReceived(adv(0), PEER_HIGH), 100.5)
    assert actions[0] == SendAdvertisement(100)
    assert m.next_deadline() == pytest.approx(101.5)


def test_v3_master_learns_interval_when_backing_down() -> None:
    m = master(params(version=3))
    m.handle(AdvertisementReceived(adv(200, 300, 3), PEER_HIGH), 101.0)
    assert m.master_adver_int_cs == 300


def test_two_owners_conflict_reduces_ours() -> None:
    m = VrrpMachine(params(priority=255))
    m.handle(Startup(), 0.0)
    actions = m.handle(AdvertisementReceived(adv(255), PEER_LOW), 0.5)
    assert "CONFIGURATION ERROR" in logs(actions)[0]
    assert m.effective_priority == 254 and m.state is State.BACKUP


# ------------------------------------------------------------------ fault, shutdown


def test_fault_from_master_and_back() -> None:
    m = master()
    actions = m.handle(FaultRaised("eth0 down"), 101.0)
    assert actions == [
        LogLine("(haproxy-vip) Entering FAULT STATE"),
        Transition(State.MASTER, State.FAULT),
        SendAdvertisement(0),
        RemoveVips(),
        Notify(State.FAULT, 100),
    ]
    assert m.next_deadline() is None
    assert m.handle(AdvertisementReceived(adv(90), PEER_HIGH), 102.0) == []
    assert m.handle(FaultRaised("chk down"), 102.0) == []
    assert m.handle(FaultCleared("eth0 down"), 103.0) == []  # one fault left
    actions = m.handle(FaultCleared("chk down"), 104.0)
    assert logs(actions) == ["(haproxy-vip) Entering BACKUP STATE"]
    assert m.state is State.BACKUP
    assert m.next_deadline() == pytest.approx(104.0 + 3 + 156 / 256)


def test_shutdown_master_sends_priority_zero() -> None:
    m = master()
    actions = m.handle(Shutdown(), 101.0)
    assert actions == [
        SendAdvertisement(0),
        LogLine("(haproxy-vip) sent 0 priority"),
        RemoveVips(),
        Transition(State.MASTER, State.STOP),
        Notify(State.STOP, 100),
    ]
    assert m.next_deadline() is None
    assert m.handle(Startup(), 200.0)[0] == LogLine("(haproxy-vip) Entering BACKUP STATE (init)")


def test_reload_keeps_tracker_offset() -> None:
    m = master()
    m.handle(PriorityChanged(102), 101.0)
    m.handle(Reload(params(priority=150)), 101.5)
    assert m.state is State.MASTER and m.effective_priority == 152


def test_from_config_seed_instance() -> None:
    inst = VrrpInstance(
        name="haproxy-vip",
        state=VrrpStateName.BACKUP,
        interface="eth0",
        virtual_router_id=60,
        priority=100,
        advert_int=1.0,
        auth_type="PASS",
        auth_pass="1111",
        unicast_src_ip=V4("172.16.0.2"),
        unicast_peers=[V4("172.16.0.3")],
        virtual_ipaddresses=[VirtualAddress(ipaddress.ip_interface("172.16.0.10/24"))],
    )
    p = InstanceParams.from_config(inst, GlobalDefs())
    assert (p.vrid, p.version, p.priority, p.advert_int_cs) == (60, 2, 100, 100)
    assert p.primary_address == V4("172.16.0.2") and p.initial_state == "BACKUP"
    assert not p.address_owner and len(p.vips) == 1
    inst.virtual_ipaddresses = [VirtualAddress(ipaddress.ip_interface("fd00::10/64"))]
    assert InstanceParams.from_config(inst, GlobalDefs()).version == 3


# ------------------------------------------------------------------ every (state, event)

# (state, event type) -> states the machine may be in afterwards. Anything not
# listed must leave the state unchanged.
ALLOWED: dict[tuple[State, type], set[State]] = {
    (State.INITIALIZE, Startup): {State.BACKUP, State.MASTER, State.FAULT},
    (State.STOP, Startup): {State.BACKUP, State.MASTER, State.FAULT},
    (State.BACKUP, Shutdown): {State.STOP},
    (State.MASTER, Shutdown): {State.STOP},
    (State.FAULT, Shutdown): {State.STOP},
    (State.MASTER, AdvertisementReceived): {State.MASTER, State.BACKUP},
    (State.BACKUP, FaultRaised): {State.FAULT},
    (State.MASTER, FaultRaised): {State.FAULT},
    (State.FAULT, FaultCleared): {State.FAULT, State.BACKUP},
    (State.BACKUP, ForceMaster): {State.MASTER},
    (State.MASTER, ForceBackup): {State.BACKUP},
}


def machine_in(state: State, p: InstanceParams) -> VrrpMachine:
    m = VrrpMachine(p)
    if state is State.INITIALIZE:
        return m
    m.handle(Startup(), 90.0 if state is State.MASTER else 100.5)
    if state is State.MASTER:
        m.handle_timeout(100.5)
    elif state is State.FAULT:
        m.handle(FaultRaised("link"), 100.5)
    elif state is State.STOP:
        m.handle(Shutdown(), 100.5)
    assert m.state is state
    return m


events = st.one_of(
    st.just(Startup()),
    st.just(Shutdown()),
    st.builds(
        AdvertisementReceived,
        st.builds(adv, st.integers(0, 255), st.sampled_from([100, 200])),
        st.sampled_from([PEER_LOW, OURS, PEER_HIGH]),
    ),
    st.builds(PriorityChanged, st.integers(-300, 300)),
    st.builds(FaultRaised, st.sampled_from(["link", "chk"])),
    st.builds(FaultCleared, st.sampled_from(["", "link", "chk"])),
    st.builds(Reload, st.builds(params, priority=st.integers(1, 255))),
    st.just(ForceMaster()),
    st.just(ForceBackup()),
)


@given(
    st.sampled_from(list(State)),
    events,
    st.integers(1, 254),
    st.sampled_from([2, 3]),
)
def test_every_state_event_pair(state: State, event: Event, prio: int, version: int) -> None:
    m = machine_in(state, params(priority=prio, version=version))
    actions = m.handle(event, 101.0)
    assert m.state in ALLOWED.get((state, type(event)), {state})
    transitions = [a for a in actions if isinstance(a, Transition)]
    if m.state is state:
        assert transitions == []
    else:
        assert transitions == [Transition(state, m.state)]
    # the addresses follow MASTER exactly
    if AddVips() in actions:
        assert m.state is State.MASTER
    if RemoveVips() in actions:
        assert state is State.MASTER and m.state is not State.MASTER
    if state is State.MASTER and m.state is not State.MASTER:
        assert RemoveVips() in actions
    # one timer per running instance, none otherwise
    running = m.state in (State.BACKUP, State.MASTER)
    assert (m.next_deadline() is not None) == running
    assert 1 <= m.effective_priority <= 255
    assert m.handle_timeout(101.0) == []  # every timer is armed in the future


def test_higher_prio_send_advert_answers_before_backing_down() -> None:
    m = master(params(higher_prio_send_advert=True))
    actions = m.handle(AdvertisementReceived(adv(110), PEER_HIGH), 101.0)
    assert actions[0] == SendAdvertisement(100) and m.state is State.BACKUP


def test_own_address_in_an_equal_advert_is_reported() -> None:
    m = master()
    actions = m.handle(AdvertisementReceived(adv(100), OURS), 101.0)
    assert logs(actions) == [
        "(haproxy-vip) WARNING - equal priority advert received from remote host with our IP address."
    ]
    assert m.state is State.MASTER


def test_reload_of_the_interval_rearms_the_master_timer() -> None:
    m = master()
    m.handle(Reload(params(advert_int_cs=300)), 100.5)
    assert m.next_deadline() == pytest.approx(103.5)
