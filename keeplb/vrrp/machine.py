"""The VRRP state machine of one instance (RFC 5798 §6), sans-IO.

One `VrrpMachine` per vrrp_instance. The shell feeds it events with the
current monotonic time and executes the actions it returns, in order; it
arms one timer at `next_deadline()` and calls `handle_timeout(now)` when it
fires (keepalived's single `sands` per instance). The machine never reads a
clock, never touches a socket and never raises on an event: an event that
means nothing in the current state returns no action and leaves the state as
it was (h11's rule, minus the exception: a VRRP peer's packet is not ours to
refuse loudly).

v2 and v3 differ only through InstanceParams.version: v3 learns
Master_Adver_Interval from the master's adverts, v2 keeps its own; the skew
formula lives in timers.py.

Where RFC 5798 leaves room, keeplb does what keepalived 2.2.7 does, and log
lines carry keepalived's wording so existing greps keep working.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from keeplb.vrrp import timers
from keeplb.vrrp.packet import Advertisement

if TYPE_CHECKING:
    from keeplb.config.model import GlobalDefs, VrrpInstance

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIO_STOP = 0
PRIO_OWNER = 255


class State(Enum):
    """Instance states; the values are the words keepalived's notify scripts get."""

    INITIALIZE = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOP = "STOP"  # after Shutdown; keepalived's notify_stop


@dataclass(frozen=True, slots=True)
class InstanceParams:
    """What the machine needs from a vrrp_instance, already resolved.

    `priority` is the configured (base) priority; `advert_int_cs` the interval
    this router sends with, in centiseconds (a v2 interval is a whole number of
    seconds). `primary_address` is the source address of our adverts, used to
    break priority ties (the higher address wins, RFC 5798 §6.4.3).
    """

    name: str
    vrid: int
    version: int = 2
    priority: int = 100
    advert_int_cs: int = 100
    primary_address: IPAddress | None = None
    initial_state: str | None = None  # 'MASTER' | 'BACKUP' | None, as configured
    nopreempt: bool = False
    preempt_delay_cs: int = 0
    accept: bool = False
    vips: tuple[object, ...] = ()  # VirtualAddress or ip_interface; the shell uses them
    lower_prio_no_advert: bool = False
    higher_prio_send_advert: bool = False
    synced: bool = False  # member of a vrrp_sync_group: BACKUP -> MASTER waits for the group

    @property
    def address_owner(self) -> bool:
        """Priority 255: the router owns the virtual addresses (RFC 5798 §6.1)."""
        return self.priority == PRIO_OWNER

    @classmethod
    def from_config(
        cls,
        inst: VrrpInstance,
        global_defs: GlobalDefs | None = None,
        primary_address: IPAddress | None = None,
    ) -> InstanceParams:
        """Build the parameters of a parsed vrrp_instance.

        `primary_address` defaults to unicast_src_ip / mcast_src_ip; the shell
        passes the interface's first address when neither is configured.
        """
        version = inst.version or (global_defs.vrrp_version if global_defs else 2)
        if inst.family == 6:
            version = 3  # keepalived: IPv6 needs VRRPv3
        return cls(
            name=inst.name,
            vrid=inst.virtual_router_id or 0,
            version=version,
            priority=inst.priority,
            advert_int_cs=timers.wire_interval_cs(inst.advert_int, version=version),
            primary_address=primary_address or inst.unicast_src_ip or inst.mcast_src_ip,
            initial_state=inst.state.value if inst.state else None,
            nopreempt=inst.nopreempt,
            preempt_delay_cs=timers.seconds_to_cs(inst.preempt_delay),
            accept=bool(inst.accept),
            vips=tuple(inst.virtual_ipaddresses),
            lower_prio_no_advert=bool(global_defs and global_defs.vrrp_lower_prio_no_advert),
            higher_prio_send_advert=bool(global_defs and global_defs.vrrp_higher_prio_send_advert),
        )


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Startup:
    """The instance starts (RFC 5798 §6.4.1)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The instance stops: a master sends priority 0 and releases the addresses."""


@dataclass(frozen=True, slots=True)
class AdvertisementReceived:
    """A decoded and validated advertisement for this instance, from `src`."""

    adv: Advertisement
    src: IPAddress


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """Trackers changed the effective priority (track.effective_priority's result)."""

    effective: int


@dataclass(frozen=True, slots=True)
class FaultRaised:
    """Interface down or a weight-0 tracker failing; `reason` names it."""

    reason: str


@dataclass(frozen=True, slots=True)
class FaultCleared:
    """The fault `reason` is gone; an empty reason clears every fault."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ForceMaster:
    """The sync group moves this member to MASTER (keepalived's vrrp_sync_master)."""


@dataclass(frozen=True, slots=True)
class ForceBackup:
    """The sync group moves this member to BACKUP (keepalived's vrrp_sync_backup)."""


@dataclass(frozen=True, slots=True)
class Reload:
    """New parameters for the same instance (SIGHUP); state is kept."""

    params: InstanceParams


Event = (
    Startup
    | Shutdown
    | AdvertisementReceived
    | PriorityChanged
    | FaultRaised
    | FaultCleared
    | ForceMaster
    | ForceBackup
    | Reload
)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class SendAdvertisement:
    """Send one advertisement with `priority` (0 means 'I am leaving')."""

    priority: int


@dataclass(frozen=True, slots=True)
class AddVips:
    """Add the virtual addresses (and routes) to the interface."""


@dataclass(frozen=True, slots=True)
class RemoveVips:
    """Remove the virtual addresses (and routes)."""


@dataclass(frozen=True, slots=True)
class SendGratuitousArp:
    """Announce the addresses (gratuitous ARP / unsolicited NA); the shell repeats
    them per garp_master_delay / garp_master_repeat / garp_master_refresh."""


@dataclass(frozen=True, slots=True)
class WantMaster:
    """A sync group member would become MASTER; the group decides (see sync_can_goto_master)."""


@dataclass(frozen=True, slots=True)
class Notify:
    """Run the notify scripts for `state` (notify_master, ..., notify with 'INSTANCE')."""

    state: State
    priority: int


@dataclass(frozen=True, slots=True)
class LogLine:
    """A log line in keepalived's words, e.g. '(haproxy-vip) Entering MASTER STATE'."""

    text: str


@dataclass(frozen=True, slots=True)
class Transition:
    """The state changed; for metrics and timelines."""

    old: State
    new: State


Action = (
    SendAdvertisement
    | AddVips
    | RemoveVips
    | SendGratuitousArp
    | Notify
    | LogLine
    | Transition
    | WantMaster
)


def _addr_cmp(a: IPAddress | None, b: IPAddress | None) -> int:
    """-1/0/1 comparing two addresses; 0 when either is unknown or families differ."""
    if a is None or b is None or a.version != b.version:
        return 0
    x, y = int(a), int(b)
    return (x > y) - (x < y)


def clamp_priority(total: int, *, owner: bool) -> int:
    """keepalived's vrrp_set_effective_priority: owners stay 255, others 1..254."""
    if owner:
        return PRIO_OWNER
    return max(1, min(PRIO_OWNER - 1, total))


@dataclass
class VrrpMachine:
    """RFC 5798 §6 for one instance. See the module docstring for the contract."""

    params: InstanceParams
    state: State = State.INITIALIZE
    effective_priority: int = 0
    master_adver_int_cs: int = 0
    master_address: IPAddress | None = None
    master_priority: int = 0
    faults: set[str] = field(default_factory=set)
    wants_master: bool = False  # keepalived's wantstate == MASTER while held in BACKUP
    _deadline: float | None = field(default=None, init=False, repr=False)
    _preempt_until: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.effective_priority:
            self.effective_priority = self.params.priority
        if not self.master_adver_int_cs:
            self.master_adver_int_cs = self.params.advert_int_cs

    # ------------------------------------------------------------ API

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event at monotonic time `now`; returns the actions to execute in order.

        Events that mean nothing in the current state return [] and change
        nothing (e.g. an advert while in FAULT, Startup while running).
        """
        handler = _HANDLERS.get((self.state, type(event)))
        if handler is None:
            return []
        return handler(self, event, now)

    def next_deadline(self) -> float | None:
        """When handle_timeout must be called next (Adver_Timer or Master_Down_Timer)."""
        return self._deadline

    def handle_timeout(self, now: float) -> list[Action]:
        """The timer armed at next_deadline() fired; early or spurious calls do nothing."""
        if self._deadline is None or now < self._deadline:
            return []
        if self.state is State.BACKUP:
            if self.params.synced:
                # keepalived's vrrp_state_goto_master: a sync group member only
                # goes when every member wants to ("prefer backup state to avoid
                # thrashing"); meanwhile it waits another Master_Down_Interval.
                first = not self.wants_master
                self.wants_master = True
                self._arm_master_down(now)
                log = [self._log("Receive advertisement timeout")] if first else []
                return [*log, WantMaster()]
            # RFC 5798 §6.4.2: Master_Down_Timer fired -> transition to Master.
            return [self._log("Receive advertisement timeout"), *self._become_master(now)]
        if self.state is State.MASTER:
            # RFC 5798 §6.4.3: Adver_Timer fired -> send an ADVERTISEMENT, reset the timer.
            self._deadline = now + self._adver_int_s()
            return [SendAdvertisement(self.effective_priority)]
        self._deadline = None
        return []

    @property
    def name(self) -> str:
        return self.params.name

    def master_down_interval_cs(self) -> int:
        """Master_Down_Interval now, from the learnt Master_Adver_Interval."""
        return timers.master_down_interval(
            self.effective_priority, self.master_adver_int_cs, version=self.params.version
        )

    def skew_time_cs(self) -> int:
        """Skew_Time now, for this router's effective priority."""
        return timers.skew_time(
            self.effective_priority, self.master_adver_int_cs, version=self.params.version
        )

    # ------------------------------------------------------------ helpers

    def _adver_int_s(self) -> float:
        return timers.cs_to_seconds(self.params.advert_int_cs)

    def _master_down_s(self) -> float:
        return timers.master_down_seconds(
            self.effective_priority, self.master_adver_int_cs, version=self.params.version
        )

    def _log(self, text: str) -> LogLine:
        return LogLine(f"({self.params.name}) {text}")

    def _arm_master_down(self, now: float) -> None:
        self._deadline = now + self._master_down_s()

    def _enter(self, new: State, log: str) -> list[Action]:
        old, self.state = self.state, new
        self.wants_master = new is State.MASTER
        return [self._log(log), Transition(old, new)]

    def _become_master(self, now: float) -> list[Action]:
        # keepalived's vrrp_state_master_tx: the advert goes first so the old
        # master drops the addresses before our gratuitous ARPs go out.
        actions: list[Action] = [SendAdvertisement(self.effective_priority)]
        actions += self._enter(State.MASTER, "Entering MASTER STATE")
        actions += [AddVips(), SendGratuitousArp(), Notify(State.MASTER, self.effective_priority)]
        self.master_address = self.params.primary_address
        self.master_priority = self.effective_priority
        self._preempt_until = None
        self._deadline = now + self._adver_int_s()
        return actions

    def _become_backup(self, now: float, log: str = "Entering BACKUP STATE") -> list[Action]:
        was_master = self.state is State.MASTER
        actions = self._enter(State.BACKUP, log)
        if was_master:
            actions.append(RemoveVips())
        actions.append(Notify(State.BACKUP, self.effective_priority))
        self._preempt_until = None
        self._arm_master_down(now)
        return actions

    def _become_fault(self) -> list[Action]:
        was_master = self.state is State.MASTER
        actions = self._enter(State.FAULT, "Entering FAULT STATE")
        if was_master:
            # keepalived's vrrp_state_leave_master: priority 0 so a backup takes
            # over after Skew_Time instead of Master_Down_Interval.
            actions += [SendAdvertisement(PRIO_STOP), RemoveVips()]
        actions.append(Notify(State.FAULT, self.effective_priority))
        self.master_adver_int_cs = self.params.advert_int_cs
        self._deadline = None
        return actions

    # ------------------------------------------------------------ handlers

    def _on_startup(self, event: Startup, now: float) -> list[Action]:
        self.master_adver_int_cs = self.params.advert_int_cs
        self.master_address = None
        self.master_priority = 0
        if self.faults:
            return self._become_fault()
        if self.params.address_owner:
            # RFC 5798 §6.4.1: the owner (priority 255) goes straight to Master.
            return self._become_master(now)
        # RFC 5798 §6.4.1 otherwise -> Backup with Master_Down_Timer. keepalived
        # 2.2 does this for `state MASTER` too: only the owner skips the election.
        return self._become_backup(now, "Entering BACKUP STATE (init)")

    def _on_shutdown(self, event: Shutdown, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.state is State.MASTER:
            # RFC 5798 §6.4.3 Shutdown: cancel Adver_Timer, send priority 0.
            actions += [SendAdvertisement(PRIO_STOP), self._log("sent 0 priority"), RemoveVips()]
        old, self.state = self.state, State.STOP
        self.wants_master = False
        actions += [Transition(old, State.STOP), Notify(State.STOP, self.effective_priority)]
        self._deadline = None
        self._preempt_until = None
        return actions

    def _on_advert_backup(self, event: AdvertisementReceived, now: float) -> list[Action]:
        adv = event.adv
        if adv.priority == PRIO_STOP:
            # RFC 5798 §6.4.2: priority 0 -> Master_Down_Timer = Skew_Time.
            self._deadline = now + timers.skew_time_seconds(
                self.effective_priority, self.master_adver_int_cs, version=self.params.version
            )
            return [self._log("Backup received priority 0 advertisement")]
        delaying = self.params.preempt_delay_cs > 0 and (
            self._preempt_until is None or self._preempt_until > now
        )
        if self.params.nopreempt or adv.priority >= self.effective_priority or delaying:
            # RFC 5798 §6.4.2: not preempting -> learn Master_Adver_Interval (v3)
            # and reset Master_Down_Timer.
            if self.params.version == 3:
                self.master_adver_int_cs = adv.max_adver_int_cs
            self.master_address = event.src
            self.master_priority = adv.priority
            self.wants_master = False
            self._arm_master_down(now)
            if self.params.preempt_delay_cs > 0:
                if adv.priority >= self.effective_priority:
                    self._preempt_until = None
                elif self._preempt_until is None:
                    self._preempt_until = now + timers.cs_to_seconds(self.params.preempt_delay_cs)
            return []
        # RFC 5798 §6.4.2: lower priority and Preempt_Mode -> discard the
        # advert; Master_Down_Timer keeps running and we take over.
        self.master_address = event.src
        return [
            self._log(
                f"received lower priority ({adv.priority}) advert from {event.src} - discarding"
            )
        ]

    def _on_advert_master(self, event: AdvertisementReceived, now: float) -> list[Action]:
        adv, src = event.adv, event.src
        ours = self.effective_priority
        cmp = _addr_cmp(src, self.params.primary_address)
        actions: list[Action] = []
        if adv.priority == PRIO_STOP:
            # RFC 5798 §6.4.3: priority 0 -> send an ADVERTISEMENT, reset Adver_Timer.
            self._deadline = now + self._adver_int_s()
            return [SendAdvertisement(ours), self._log("Master received priority 0 message")]
        if self.params.higher_prio_send_advert and (
            adv.priority > ours or (adv.priority == ours and cmp > 0)
        ):
            actions.append(SendAdvertisement(ours))
        if adv.priority == ours:
            if cmp == 0 and src == self.params.primary_address:
                actions.append(
                    self._log(
                        "WARNING - equal priority advert received from remote host with our IP address."
                    )
                )
            elif ours == PRIO_OWNER:
                actions.append(
                    self._log(
                        "CONFIGURATION ERROR: local instance and a remote instance are both "
                        "configured as address owner, please fix - reducing local priority"
                    )
                )
                self.effective_priority = ours = PRIO_OWNER - 1
        if adv.priority < ours or (adv.priority == ours and cmp < 0):
            # RFC 5798 §6.4.3: lower priority (or equal with a lower address) ->
            # discard. keepalived also advertises at once so the other backs down.
            suffix = "" if self.params.lower_prio_no_advert else ", forcing new election"
            actions.append(
                self._log(
                    f"Received advert from {src} with lower priority {adv.priority}, ours {ours}{suffix}"
                )
            )
            if not self.params.lower_prio_no_advert:
                actions.append(SendAdvertisement(ours))
            return actions
        if adv.priority > ours or (adv.priority == ours and cmp > 0):
            # RFC 5798 §6.4.3: higher priority, or equal with a higher address ->
            # cancel Adver_Timer, learn Master_Adver_Interval, go to Backup.
            if adv.priority > ours:
                text = f"Master received advert from {src} with higher priority {adv.priority}, ours {ours}"
            else:
                text = (
                    f"Master received advert from {src} with same priority {adv.priority} "
                    "but higher IP address than ours"
                )
            actions.append(self._log(text))
            if self.params.version == 3:
                self.master_adver_int_cs = adv.max_adver_int_cs
            self.master_address = src
            self.master_priority = adv.priority
            actions += self._become_backup(now)
        return actions

    def _on_priority(self, event: PriorityChanged, now: float) -> list[Action]:
        new = clamp_priority(event.effective, owner=self.params.address_owner)
        old = self.effective_priority
        if new == old:
            return []
        old_down = self._master_down_s()
        self.effective_priority = new
        if self.state is State.BACKUP and self._deadline is not None:
            # keepalived's vrrp_set_effective_priority: move the running
            # Master_Down_Timer by the change of the skew.
            self._deadline += self._master_down_s() - old_down
        return [self._log(f"Changing effective priority from {old} to {new}")]

    def _on_fault_raised(self, event: FaultRaised, now: float) -> list[Action]:
        first = not self.faults
        self.faults.add(event.reason)
        if not first or self.state in (State.FAULT, State.INITIALIZE, State.STOP):
            return []
        return self._become_fault()

    def _on_fault_cleared(self, event: FaultCleared, now: float) -> list[Action]:
        if event.reason:
            self.faults.discard(event.reason)
        else:
            self.faults.clear()
        if self.faults or self.state is not State.FAULT:
            return []
        # keepalived's vrrp_state_leave_fault: back to BACKUP with the configured
        # interval, then the normal election.
        self.master_adver_int_cs = self.params.advert_int_cs
        return self._become_backup(now)

    def _on_force_master(self, event: ForceMaster, now: float) -> list[Action]:
        # keepalived's vrrp_sync_master -> vrrp_state_goto_master for each member.
        return self._become_master(now)

    def _on_force_backup(self, event: ForceBackup, now: float) -> list[Action]:
        # keepalived's vrrp_sync_backup -> vrrp_state_leave_master(isync, false):
        # no priority-0 advert, the member's own peer keeps its timers.
        return self._become_backup(now)

    def _on_reload(self, event: Reload, now: float) -> list[Action]:
        old = self.params
        delta = self.effective_priority - old.priority
        self.params = event.params
        if event.params.version == 2 or self.state is not State.BACKUP:
            self.master_adver_int_cs = event.params.advert_int_cs
        if event.params.address_owner or old.address_owner:
            self.effective_priority = event.params.priority
        else:
            self.effective_priority = clamp_priority(event.params.priority + delta, owner=False)
        if self.state is State.MASTER and old.advert_int_cs != event.params.advert_int_cs:
            self._deadline = now + self._adver_int_s()
        return []


_Handler = Callable[[VrrpMachine, object, float], list[Action]]

_ANY_STATE = tuple(State)
_RUNNING = (State.BACKUP, State.MASTER, State.FAULT)

# (state, event type) -> handler; a missing pair is an event with no effect.
_HANDLERS: dict[tuple[State, type], _Handler] = {}


def _table(states: tuple[State, ...], event: type, handler: Callable[..., list[Action]]) -> None:
    for state in states:
        _HANDLERS[(state, event)] = handler


_table((State.INITIALIZE, State.STOP), Startup, VrrpMachine._on_startup)
_table(_RUNNING, Shutdown, VrrpMachine._on_shutdown)
_table((State.BACKUP,), AdvertisementReceived, VrrpMachine._on_advert_backup)
_table((State.MASTER,), AdvertisementReceived, VrrpMachine._on_advert_master)
_table(_ANY_STATE, PriorityChanged, VrrpMachine._on_priority)
_table(_ANY_STATE, FaultRaised, VrrpMachine._on_fault_raised)
_table(_ANY_STATE, FaultCleared, VrrpMachine._on_fault_cleared)
_table(_ANY_STATE, Reload, VrrpMachine._on_reload)
_table((State.BACKUP,), ForceMaster, VrrpMachine._on_force_master)
_table((State.MASTER,), ForceBackup, VrrpMachine._on_force_backup)


# ---------------------------------------------------------------- sync groups


def sync_can_goto_master(members: Sequence[VrrpMachine], candidate: VrrpMachine) -> bool:
    """keepalived's vrrp_sync_can_goto_master: `candidate` may become MASTER only
    when every other member of its sync group is MASTER or wants to be."""
    return all(
        m.state is State.MASTER or m.wants_master for m in members if m is not candidate
    )


def sync_followers(
    members: Sequence[VrrpMachine], changed: VrrpMachine, old: State, new: State
) -> list[tuple[VrrpMachine, Event]]:
    """The events a member's transition old -> new sends to the rest of its group.

    keepalived's vrrp_sync.c: entering MASTER takes every BACKUP member along
    (vrrp_sync_master); leaving MASTER for BACKUP takes every MASTER member
    along (vrrp_sync_backup). FAULT is the shell's FAULT_SYNC fault.
    """
    if new is State.MASTER:
        return [(m, ForceMaster()) for m in members if m is not changed and m.state is State.BACKUP]
    if old is State.MASTER and new is State.BACKUP:
        return [(m, ForceBackup()) for m in members if m is not changed and m.state is State.MASTER]
    return []
