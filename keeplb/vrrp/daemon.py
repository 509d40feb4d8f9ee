"""The VRRP daemon: asyncio glue between the network, the trackers and one
VrrpMachine per vrrp_instance.

Path of a packet (uvicorn's H11Protocol shape): VrrpSocket reader ->
packet.decode -> packet.validate -> machine.handle -> execute the actions.
Each machine's next_deadline() drives exactly one loop timer; nothing polls.
The shell decides nothing: every state change comes from the machine, every
priority from track.effective_priority.

Sync groups follow keepalived's vrrp_sync.c: a member becomes MASTER only
when every member wants to (machine.sync_can_goto_master), then takes the
others along; a member backing down takes the masters along; a member in
FAULT takes the group to FAULT. The group's own track_* entries act on every
member with their weights; a member's own weighted scripts and files are
dropped, as keepalived 2.2.7 drops them (Instance._build_trackers).
static_ipaddress / static_routes are set at start and removed at stop,
whatever the state; virtual_routes follow the VIPs.

Signals, as keepalived: SIGTERM/SIGINT stop (priority-0 advert, VIPs removed),
a second SIGINT forces the exit; SIGHUP reloads (a bad file is refused and
the running config stays); SIGUSR1 writes keepalived.data and
keeplb-vrrp.json, SIGUSR2 keepalived.stats, into $KEEPLB_VRRP_STATE_DIR
(default /tmp, where keepalived writes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import logging.handlers
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from keeplb.config.model import (
    GlobalDefs,
    IPAddress,
    KeepalivedConfig,
    TrackRef,
    VirtualAddress,
    VirtualRoute,
    VrrpInstance,
    VrrpScript,
    VrrpSyncGroup,
)
from keeplb.errors import KeeplbError, MalformedPacket, NetlinkOpError
from keeplb.vrrp import packet
from keeplb.vrrp.machine import (
    Action,
    AddVips,
    AdvertisementReceived,
    Event,
    FaultCleared,
    FaultRaised,
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
    WantMaster,
    sync_can_goto_master,
    sync_followers,
)
from keeplb.vrrp.net import (
    AddressManager,
    LinkMonitor,
    Received,
    VrrpSocket,
    route_spec,
    send_gratuitous_arp,
    send_unsolicited_na,
)
from keeplb.vrrp.scripts import (
    FileWatcher,
    NotifyFifo,
    NotifyRunner,
    ScriptIdentity,
    ScriptRunner,
    fifo_line,
    resolve_identity,
)
from keeplb.vrrp.track import FileTracker, Tracker, TrackKind, effective_priority

__all__ = ["Instance", "VrrpDaemon", "main", "parse_config", "print_status", "run"]

log = logging.getLogger("keeplb.vrrp")

STATE_DIR_ENV = "KEEPLB_VRRP_STATE_DIR"
DROP_LOG_INTERVAL = 60.0  # seconds between two log lines for one drop reason
STOP_TIMEOUT = 5.0  # seconds the shutdown may take before giving up on netlink
ADDRESS_WAIT = 5.0  # seconds to wait at startup for a usable source address
TRANSITIONS_KEPT = 50

# Fault reasons the daemon gives the machine; the machine only needs them distinct.
FAULT_TRACK = "track"
FAULT_LB = "track_lb"
FAULT_SYNC = "sync group"


def state_dir() -> str:
    return os.environ.get(STATE_DIR_ENV) or "/tmp"


def _strip_spans(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_spans(v) for k, v in value.items() if k != "span"}
    if isinstance(value, list | tuple):
        return [_strip_spans(v) for v in value]
    return value


def fingerprint(inst: VrrpInstance) -> str:
    """The instance's configuration without source locations: equal means unchanged."""
    return repr(_strip_spans(dataclasses.asdict(inst)))


@dataclasses.dataclass
class Counters:
    """Per-instance counters, named as in keepalived.stats."""

    adverts_sent: int = 0
    adverts_received: int = 0
    pri_zero_sent: int = 0
    pri_zero_received: int = 0
    became_master: int = 0
    released_master: int = 0
    transitions: int = 0
    drops: Counter[str] = dataclasses.field(default_factory=Counter)


class Instance:
    """One vrrp_instance at runtime: its machine, its timer, its VIPs, its trackers."""

    def __init__(self, daemon: VrrpDaemon, cfg: VrrpInstance) -> None:
        self.daemon = daemon
        self.cfg = cfg
        self.name = cfg.name
        self.family = cfg.family
        gd = daemon.cfg.global_defs
        self.params = dataclasses.replace(
            InstanceParams.from_config(cfg, gd), synced=bool(daemon.groups_of(cfg.name))
        )
        self.version = self.params.version
        self.vrid = self.params.vrid
        self.ifname = cfg.interface or ""
        self.ifindex: int | None = None
        self.src: IPAddress | None = cfg.unicast_src_ip or cfg.mcast_src_ip
        self.peers: list[IPAddress] = [p for p in cfg.unicast_peers if p.version == self.family]
        self.vip_addresses: tuple[IPAddress, ...] = tuple(
            v.address.ip for v in cfg.virtual_ipaddresses if v.address.version == self.family
        )
        self.auth_type = packet.auth_type_code(cfg.auth_type) if self.version == 2 else 0
        self.auth_pass = packet.pad_auth_pass(cfg.auth_pass)
        self.machine = VrrpMachine(self.params)
        self.counters = Counters()
        self.transitions: list[dict[str, Any]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.socket: VrrpSocket | None = None
        self.trackers: list[Tracker | FileTracker] = []
        self.script_trackers: dict[str, list[Tracker]] = {}
        self.iface_trackers: dict[str, list[Tracker]] = {}
        self.file_trackers: dict[str, list[FileTracker]] = {}
        self.addr_lock = asyncio.Lock()
        self.addr_tasks: set[asyncio.Task[None]] = set()
        self.garp_task: asyncio.Task[None] | None = None
        self.lb_up: bool = True
        self._drop_logged: dict[str, float] = {}
        self._build_trackers()

    # ------------------------------------------------------------ setup

    def _build_trackers(self) -> None:
        """One tracker per (instance or sync group) track_* entry, as keepalived 2.2.7.

        A sync group's own track_script/track_interface/track_file act on
        every member with their configured weights (a weight-0 failure faults
        the member, and through it the group). The member's own trackers are
        what keepalived restricts in a group (scripts and files, see
        _sync_own_file_weight).
        """
        cfg, kcfg = self.cfg, self.daemon.cfg
        groups = self.daemon.groups_of(self.name)
        synced = bool(groups)  # a synced member's own trackers get keepalived's sync rules
        scripts = [(ref, True) for ref in cfg.track_scripts]
        ifaces = [(ref, True) for ref in cfg.track_interfaces]
        files = [(ref, True) for ref in cfg.track_files]
        for group in groups:
            scripts += [(ref, False) for ref in group.track_scripts]
            ifaces += [(ref, False) for ref in group.track_interfaces]
            files += [(ref, False) for ref in group.track_files]
        for ref, mine in scripts:
            script = kcfg.scripts.get(ref.name)
            if script is None:
                log.warning("(%s) track_script %s not found, ignoring", self.name, ref.name)
                continue
            if self.daemon.script_identity(script) is None:
                # keepalived drops a script whose user or group does not exist.
                log.warning("(%s) track_script %s cannot run as '%s', ignoring", self.name,
                            ref.name, script.user or kcfg.global_defs.script_user)
                continue
            weight = ref.weight if ref.weight is not None else script.weight
            if mine and synced and weight:
                log.warning("(%s) ignoring tracked script %s with weights due to SYNC group",
                            self.name, ref.name)
                continue
            t = Tracker(
                ref.name,
                weight=weight,
                reverse=ref.reverse or script.weight_reverse,
                rise=script.rise,
                fall=script.fall,
                kind=TrackKind.SCRIPT,
                init_fail=script.init_fail,
            )
            self.trackers.append(t)
            self.script_trackers.setdefault(ref.name, []).append(t)
        for ref, mine in ifaces:
            if mine and synced and ref.weight:
                # keepalived 2.2.7 logs this yet keeps applying the weight
                # (checked: the priority still moves with the link).
                log.warning("(%s) ignoring %s tracked interface weight due to SYNC group",
                            self.name, ref.name)
            t = Tracker(ref.name, weight=ref.weight or 0, reverse=ref.reverse,
                        kind=TrackKind.INTERFACE)
            self.trackers.append(t)
            self.iface_trackers.setdefault(ref.name, []).append(t)
        for ref, mine in files:
            fdef = kcfg.track_files.get(ref.name)
            if fdef is None:
                log.warning("(%s) track_file %s not found, ignoring", self.name, ref.name)
                continue
            fweight = ref.weight if ref.weight is not None else fdef.weight
            if mine and synced:
                sync_weight = self._sync_own_file_weight(ref, fdef.weight)
                if sync_weight is None:
                    continue
                fweight = sync_weight
            ft = FileTracker(ref.name, weight=fweight, reverse=ref.reverse or fdef.weight_reverse)
            self.trackers.append(ft)
            self.file_trackers.setdefault(ref.name, []).append(ft)

    def _sync_own_file_weight(self, ref: TrackRef, block_weight: int) -> int | None:
        """The weight of a synced member's own track_file entry; None: dropped.

        keepalived 2.2.7, checked against the binary: a weight given explicitly
        (on the entry, or other than the default 1 in the track_file block)
        drops the entry ("ignoring tracked file x with weight N"); the default
        weight becomes 0 ("... specify weight 0"), so a non-zero value faults.
        The model cannot tell 'weight 1' written out from the default: both
        take the second path.
        """
        explicit = ref.weight if ref.weight is not None else (
            block_weight if block_weight != 1 else None
        )
        if explicit is None:
            log.warning("(%s) ignoring weight from tracked file %s due to SYNC group. "
                        "specify weight 0", self.name, ref.name)
            return 0
        if explicit:
            log.warning("(%s) ignoring tracked file %s with weight %d due to SYNC group",
                        self.name, ref.name, explicit)
            return None
        return 0

    async def setup(self) -> None:
        """Resolves the interface and source address and joins the VRRP socket."""
        am = self.daemon.addresses
        if not self.ifname:
            log.error("(%s) no interface configured, instance disabled", self.name)
            self.machine.faults.add("no interface")
            return
        self.ifindex = await am.ifindex(self.ifname)
        if self.ifindex is None:
            log.error("(%s) interface %s does not exist", self.name, self.ifname)
            self.machine.faults.add(f"interface {self.ifname} missing")
            return
        if self.src is None or (self.family == 6 and not self.src.is_link_local):
            self.src = await self._wait_source_address()
        if self.src is not None and self.params.primary_address is None:
            self.params = dataclasses.replace(self.params, primary_address=self.src)
            self.machine.params = self.params
        if not await am.link_up(self.ifindex) and not self.cfg.dont_track_primary:
            self.machine.faults.add(self._link_fault(self.ifname))
        self.socket = self.daemon.socket_for(self.family, self.ifname, self.ifindex)

    async def _wait_source_address(self) -> IPAddress | None:
        # A fresh IPv6 link-local is tentative for a second or two (DAD).
        assert self.ifindex is not None
        exclude = set(self.daemon.all_vips())
        deadline = time.monotonic() + ADDRESS_WAIT
        while True:
            addr = await self.daemon.addresses.primary_address(self.ifindex, self.family, exclude)
            if addr is not None or time.monotonic() > deadline:
                if addr is None:
                    log.warning("(%s) no IPv%d source address on %s", self.name, self.family, self.ifname)
                return addr
            await asyncio.sleep(0.1)

    @staticmethod
    def _link_fault(ifname: str) -> str:
        return f"interface {ifname} down"

    # ------------------------------------------------------------ machine IO

    def start(self) -> None:
        self.update_priority(feed=False)
        if not self.params.address_owner and self.ifindex is not None:
            # keepalived clears VIPs a crashed predecessor left behind before
            # it starts as backup, so two hosts never answer for one address.
            self.addr_op(add=False)
        self.feed(Startup())

    def feed(self, event: Event) -> None:
        """Hands one event to the machine and executes what it returns."""
        loop = asyncio.get_running_loop()
        before = self.machine.faults.copy()
        actions = self.machine.handle(event, loop.time())
        self.execute(actions)
        self.rearm()
        if before != self.machine.faults:
            self.daemon.sync_update(self)

    def rearm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = self.machine.next_deadline()
        if deadline is not None:
            self.timer = asyncio.get_running_loop().call_at(deadline, self._timeout)

    def _timeout(self) -> None:
        self.timer = None
        actions = self.machine.handle_timeout(asyncio.get_running_loop().time())
        self.execute(actions)
        self.rearm()

    def execute(self, actions: list[Action]) -> None:
        moves: list[tuple[State, State]] = []
        want_master = False
        for action in actions:
            if isinstance(action, SendAdvertisement):
                self.send_advert(action.priority)
            elif isinstance(action, AddVips):
                self.addr_op(add=True)
            elif isinstance(action, RemoveVips):
                self.addr_op(add=False)
            elif isinstance(action, SendGratuitousArp):
                self.start_garp()
            elif isinstance(action, Notify):
                self.daemon.notify_instance(self, action.state, action.priority)
                # After the instance's own notify, as keepalived orders them.
                self.daemon.group_state_changed(self)
            elif isinstance(action, LogLine):
                log.info("%s", action.text)
            elif isinstance(action, Transition):
                self.on_transition(action.old, action.new)
                moves.append((action.old, action.new))
            elif isinstance(action, WantMaster):
                want_master = True
        # The group acts after this member's own actions, as keepalived syncs
        # the others once the member's transition is complete.
        for old, new in moves:
            self.daemon.sync_follow(self, old, new)
        if want_master:
            self.daemon.sync_want_master(self)

    def on_transition(self, old: State, new: State) -> None:
        self.counters.transitions += 1
        if new is State.MASTER:
            self.counters.became_master += 1
        if old is State.MASTER:
            self.counters.released_master += 1
            self.stop_garp()
        self.transitions.append({"time": time.time(), "from": old.value, "to": new.value})
        del self.transitions[:-TRANSITIONS_KEPT]
        self.daemon.publish_status()

    # ------------------------------------------------------------ packets

    def send_advert(self, priority: int) -> None:
        if self.socket is None:
            return
        src = self.src
        group = ipaddress.ip_address(self.socket.group)
        targets = self.peers or [group]
        adv = packet.Advertisement(
            self.version,
            self.vrid,
            priority,
            self.params.advert_int_cs,
            self.vip_addresses,
            self.auth_type,
            self.auth_pass.rstrip(b"\0") if self.auth_type else b"",
        )
        for dst in targets:
            if src is None:
                log.warning("(%s) no source address, advertisement not sent", self.name)
                return
            try:
                buf = packet.encode(adv, family=self.family, src=src, dst=dst)
            except ValueError as e:
                log.error("(%s) cannot build an advertisement: %s", self.name, e)
                return
            if self.socket.send(buf, dst, src):
                self.counters.adverts_sent += 1
                if priority == 0:
                    self.counters.pri_zero_sent += 1

    def on_advert(self, adv: packet.Advertisement, src: IPAddress) -> None:
        self.counters.adverts_received += 1
        if adv.priority == 0:
            self.counters.pri_zero_received += 1
        self.feed(AdvertisementReceived(adv, src))

    def count_drop(self, e: MalformedPacket, src: IPAddress | None) -> None:
        reason = e.reason.value
        self.counters.drops[reason] += 1
        now = time.monotonic()
        last = self._drop_logged.get(reason)
        if last is None or now - last >= DROP_LOG_INTERVAL:
            self._drop_logged[reason] = now
            log.warning("(%s) dropping advertisement from %s: %s", self.name, src, e)

    # ------------------------------------------------------------ addresses

    def addr_op(self, *, add: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._addr_op(add))
        self.addr_tasks.add(task)
        task.add_done_callback(self.addr_tasks.discard)

    async def _addr_op(self, add: bool) -> None:
        # One lock per instance keeps add/remove in the order the machine asked.
        async with self.addr_lock:
            verb = "setting" if add else "removing"
            if not add and self.cfg.virtual_routes:
                # keepalived removes the routes first: they may use the VIPs as source.
                log.info("(%s) %s Virtual Routes", self.name, verb)
                await self.daemon.route_op(self.cfg.virtual_routes, add=False, who=self.name)
            log.info("(%s) %s VIPs.", self.name, verb)
            await self.daemon.address_op(self.cfg.virtual_ipaddresses, add, self.ifname, self.name)
            if self.cfg.virtual_ipaddresses_excluded:
                # Excluded addresses follow the master like the others but are not advertised.
                log.info("(%s) %s E-VIPs.", self.name, verb)
                await self.daemon.address_op(
                    self.cfg.virtual_ipaddresses_excluded, add, self.ifname, self.name
                )
            if add and self.cfg.virtual_routes:
                log.info("(%s) %s Virtual Routes", self.name, verb)
                await self.daemon.route_op(self.cfg.virtual_routes, add=True, who=self.name)

    async def addresses_settled(self) -> None:
        if self.addr_tasks:
            await asyncio.wait(list(self.addr_tasks), timeout=STOP_TIMEOUT)

    # ------------------------------------------------------------ gratuitous ARP

    def start_garp(self) -> None:
        self.stop_garp()
        self.garp_task = asyncio.get_running_loop().create_task(self._garp())

    def stop_garp(self) -> None:
        if self.garp_task is not None:
            self.garp_task.cancel()
            self.garp_task = None

    def _garp_settings(self) -> tuple[float, int, float, int, float]:
        gd, c = self.daemon.cfg.global_defs, self.cfg
        delay = c.garp_master_delay if c.garp_master_delay is not None else gd.vrrp_garp_master_delay
        repeat = c.garp_master_repeat if c.garp_master_repeat is not None else gd.vrrp_garp_master_repeat
        refresh = (
            c.garp_master_refresh if c.garp_master_refresh is not None else gd.vrrp_garp_master_refresh
        )
        refresh_repeat = (
            c.garp_master_refresh_repeat
            if c.garp_master_refresh_repeat is not None
            else gd.vrrp_garp_master_refresh_repeat
        )
        interval = gd.vrrp_gna_interval if self.family == 6 else gd.vrrp_garp_interval
        return delay, max(1, repeat), refresh, max(1, refresh_repeat), interval

    async def _garp(self) -> None:
        delay, repeat, refresh, refresh_repeat, interval = self._garp_settings()
        # The addresses must be on the interface before the world is told about them.
        async with self.addr_lock:
            pass
        for vip in [*self.cfg.virtual_ipaddresses, *self.cfg.virtual_ipaddresses_excluded]:
            what = "Unsolicited Neighbour Adverts" if vip.address.version == 6 else "gratuitous ARPs"
            log.info("(%s) Sending/queueing %s on %s for %s", self.name, what,
                     vip.dev or self.ifname, vip.address.ip)
        await self._garp_batch(repeat, interval)
        if delay > 0:
            await asyncio.sleep(delay)
            await self._garp_batch(repeat, interval)
        while refresh > 0:
            await asyncio.sleep(refresh)
            await self._garp_batch(refresh_repeat, interval)

    async def _garp_targets(self) -> list[tuple[str, int, list[IPAddress]]]:
        """(interface, index, addresses) to announce: the VIPs and, as keepalived
        does, the excluded ones (virtual_ipaddress_excluded), each on its own dev."""
        by_dev: dict[str, list[IPAddress]] = {}
        for vip in [*self.cfg.virtual_ipaddresses, *self.cfg.virtual_ipaddresses_excluded]:
            by_dev.setdefault(vip.dev or self.ifname, []).append(vip.address.ip)
        out = []
        for dev, addrs in by_dev.items():
            index = self.ifindex if dev == self.ifname else await self.daemon.addresses.ifindex(dev)
            if index is not None:
                out.append((dev, index, addrs))
        return out

    async def _garp_batch(self, count: int, interval: float) -> None:
        if self.ifindex is None:
            return
        targets = await self._garp_targets()
        for i in range(count):
            if self.machine.state is not State.MASTER:
                return
            for dev, index, addrs in targets:
                send_gratuitous_arp(dev, [a for a in addrs if isinstance(a, ipaddress.IPv4Address)])
                send_unsolicited_na(dev, index, [a for a in addrs if isinstance(a, ipaddress.IPv6Address)])
            if interval > 0 and i + 1 < count:
                await asyncio.sleep(interval)

    # ------------------------------------------------------------ trackers

    def update_priority(self, *, feed: bool = True) -> None:
        """Recomputes effective priority and tracker fault, and tells the machine."""
        # The balancer's own fault is FAULT_LB, raised and cleared by on_lb_health;
        # folding it in here would leave FAULT_TRACK set after the balancer is back.
        prio, fault = effective_priority(self.cfg.priority, self.trackers)
        events: list[Event] = []
        if prio != self.machine.effective_priority:
            events.append(PriorityChanged(prio))
        if fault and FAULT_TRACK not in self.machine.faults:
            events.append(FaultRaised(FAULT_TRACK))
        elif not fault and FAULT_TRACK in self.machine.faults:
            events.append(FaultCleared(FAULT_TRACK))
        for ev in events:
            if feed:
                self.feed(ev)
            else:
                self.machine.handle(ev, asyncio.get_running_loop().time())
        if events:
            self.daemon.publish_status()

    def on_link(self, ifname: str, up: bool) -> None:
        if ifname == self.ifname and not self.cfg.dont_track_primary:
            reason = self._link_fault(ifname)
            self.feed(FaultCleared(reason) if up else FaultRaised(reason))
        changed = False
        for t in self.iface_trackers.get(ifname, []):
            changed |= t.on_result(up)
        if changed:
            self.update_priority()

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        m = self.machine
        return {
            "name": self.name,
            "state": m.state.value,
            "interface": self.ifname,
            "vrid": self.vrid,
            "version": self.version,
            "family": self.family,
            "base_priority": self.cfg.priority,
            "effective_priority": m.effective_priority,
            "master_address": str(m.master_address) if m.master_address else None,
            "master_priority": m.master_priority,
            "source_address": str(self.src) if self.src else None,
            "advert_int": self.params.advert_int_cs / 100,
            "virtual_ipaddresses": [str(v.address) for v in self.cfg.virtual_ipaddresses],
            "unicast_peers": [str(p) for p in self.peers],
            "faults": sorted(m.faults),
            "counters": {
                "adverts_sent": self.counters.adverts_sent,
                "adverts_received": self.counters.adverts_received,
                "pri_zero_sent": self.counters.pri_zero_sent,
                "pri_zero_received": self.counters.pri_zero_received,
                "became_master": self.counters.became_master,
                "released_master": self.counters.released_master,
            },
            # Flat counters in the shape keeplb.vrrp.metrics reads.
            "adverts_sent": self.counters.adverts_sent,
            "adverts_received": self.counters.adverts_received,
            "transitions": self.counters.transitions,
            "drops": dict(self.counters.drops),
            "transition_log": list(self.transitions),
            "trackers": [
                {
                    "name": t.name,
                    "kind": t.kind.value if isinstance(t, Tracker) else "file",
                    "weight": t.weight,
                    "ok": t.ok if isinstance(t, Tracker) else None,
                    "value": t.value if isinstance(t, FileTracker) else None,
                }
                for t in self.trackers
            ],
        }

    async def stop(self) -> None:
        """Shutdown: priority-0 advert and VIPs removed (by the machine), notify_stop."""
        self.stop_garp()
        self.feed(Shutdown())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        await self.addresses_settled()


class VrrpDaemon:
    """All instances of one keepalived.conf, the sockets they share, and their inputs."""

    def __init__(
        self, cfg: KeepalivedConfig, config_path: str, defines: Sequence[str] = ()
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.defines = tuple(defines)
        self.addresses = AddressManager()
        self.sockets: dict[tuple[int, str], VrrpSocket] = {}
        self.instances: dict[str, Instance] = {}
        self.by_vrid: dict[tuple[int, str, int], Instance] = {}
        self.drops: Counter[str] = Counter()
        self._drop_logged: dict[str, float] = {}
        self.scripts: dict[str, ScriptRunner] = {}
        self.script_trackers: dict[str, Tracker] = {}
        self.files: dict[str, FileWatcher] = {}
        self.notifier = self._notifier(cfg)
        self.fifo: NotifyFifo | None = None
        self.link_monitor = LinkMonitor(self.on_link)
        self.group_states: dict[str, str] = {}
        self.started = time.time()
        self.reloads = 0
        self.accepted_errors: set[str] = set()

    # ------------------------------------------------------------ addresses and routes

    async def address_op(
        self, vips: Sequence[VirtualAddress], add: bool, default_dev: str, who: str
    ) -> None:
        """Adds or removes `vips`, each on its `dev` or `default_dev`; errors are logged."""
        for vip in vips:
            dev = vip.dev or default_dev
            index = await self.addresses.ifindex(dev) if dev else None
            if index is None:
                log.error("(%s) cannot %s %s: no interface %s", who,
                          "add" if add else "remove", vip.address, dev)
                continue
            try:
                if add:
                    await self.addresses.add(index, vip)
                else:
                    await self.addresses.delete(index, vip)
            except NetlinkOpError as e:
                log.error("(%s) %s", who, e)

    async def route_op(self, routes: Sequence[VirtualRoute], *, add: bool, who: str) -> None:
        """Adds or removes `routes` (proto keepalived, as keepalived marks them)."""
        for route in routes:
            spec = route_spec(route)
            if spec is None:
                log.error("(%s) route '%s' has no destination, ignored", who, " ".join(route.words))
                continue
            if add and spec.ignored:
                log.warning("(%s) route %s: %s not supported by keeplb, ignored",
                            who, spec.dst, ", ".join(spec.ignored))
            try:
                await self.addresses.route("add" if add else "del", spec)
            except NetlinkOpError as e:
                log.error("(%s) %s", who, e)

    async def static_op(self, cfg: KeepalivedConfig, *, add: bool) -> None:
        """static_ipaddress / static_routes: set at start whatever the VRRP state,
        removed at stop (keepalived 2.2.7 does both; checked against it)."""
        if not add:
            await self.route_op(cfg.static_routes, add=False, who="static")
        await self.address_op(cfg.static_ipaddresses, add, "", "static")
        if add:
            await self.route_op(cfg.static_routes, add=True, who="static")

    # ------------------------------------------------------------ lookups

    @staticmethod
    def _notifier(cfg: KeepalivedConfig) -> NotifyRunner:
        gd = cfg.global_defs
        identity = resolve_identity(None, default_user=gd.script_user,
                                    default_group=gd.script_group,
                                    script_security=gd.enable_script_security)
        return NotifyRunner(identity=identity, runnable=identity is not None)

    def script_identity(self, script: VrrpScript) -> ScriptIdentity | None:
        """Who `script` runs as (its own user, script_user, keepalived_script, us)."""
        gd = self.cfg.global_defs
        return resolve_identity(script.user, script.group, default_user=gd.script_user,
                                default_group=gd.script_group,
                                script_security=gd.enable_script_security)

    def groups_of(self, name: str) -> list[VrrpSyncGroup]:
        return [g for g in self.cfg.sync_groups if name in g.group]

    def all_vips(self) -> list[IPAddress]:
        return [v.address.ip for i in self.cfg.instances for v in i.virtual_ipaddresses]

    def socket_for(self, family: int, ifname: str, ifindex: int) -> VrrpSocket:
        key = (family, ifname)
        sock = self.sockets.get(key)
        if sock is None:
            gd = self.cfg.global_defs
            group = gd.vrrp_mcast_group4 if family == 4 else gd.vrrp_mcast_group6
            sock = VrrpSocket(family, ifname, ifindex, on_packet=self.on_packet, mcast_group=group)
            sock.open(asyncio.get_running_loop())
            self.sockets[key] = sock
        return sock

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Opens sockets, starts trackers and instances. Raises KeeplbError when none can run."""
        # Before any state change, so a reader may attach from the start.
        self._open_fifo()
        await self.static_op(self.cfg, add=True)
        await self._add_instances(self.cfg.instances)
        initial = {}
        for inst in self.instances.values():
            for ifname in [inst.ifname, *inst.iface_trackers]:
                index = await self.addresses.ifindex(ifname) if ifname else None
                initial[ifname] = bool(index is not None and await self.addresses.link_up(index))
        try:
            await self.link_monitor.start(initial)
        except OSError as e:
            log.warning("cannot watch link state: %s", e)
        for inst in self.instances.values():
            for ifname, trackers in inst.iface_trackers.items():
                for t in trackers:
                    t.on_result(initial.get(ifname, False))
        self._start_trackers()
        for inst in self.instances.values():
            inst.start()

    async def _add_instances(self, configs: list[VrrpInstance]) -> list[Instance]:
        made = []
        for icfg in configs:
            inst = Instance(self, icfg)
            try:
                await inst.setup()
            except OSError as e:
                raise KeeplbError(f"({icfg.name}) cannot open the VRRP socket: {e}") from e
            self.instances[inst.name] = inst
            if inst.ifname:
                self.by_vrid[(inst.family, inst.ifname, inst.vrid)] = inst
            made.append(inst)
        return made

    def _start_trackers(self) -> None:
        used_scripts = {n for i in self.instances.values() for n in i.script_trackers}
        for name in sorted(used_scripts):
            if name in self.scripts:
                continue
            script = self.cfg.scripts[name]
            self.script_trackers[name] = Tracker(
                name, rise=script.rise, fall=script.fall, init_fail=script.init_fail
            )
            runner = ScriptRunner(script, self.on_script_result,
                                  identity=self.script_identity(script))
            self.scripts[name] = runner
            runner.start()
        used_files = {n for i in self.instances.values() for n in i.file_trackers}
        for name in sorted(used_files):
            if name in self.files:
                continue
            watcher = FileWatcher(self.cfg.track_files[name], self.on_file_value)
            self.files[name] = watcher
            watcher.start()

    async def _stop_trackers(self, keep: set[str] | None = None) -> None:
        for name in list(self.scripts):
            if keep is not None and name in keep:
                continue
            await self.scripts.pop(name).stop()
            self.script_trackers.pop(name, None)
        for name in list(self.files):
            if keep is not None and name in keep:
                continue
            await self.files.pop(name).stop()

    async def stop(self) -> None:
        log.info("Stopping")
        await self._stop_trackers()
        for inst in self.instances.values():
            await inst.stop()
        await self.link_monitor.stop()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        await self.static_op(self.cfg, add=False)
        await self.notifier.drain()
        self._close_fifo()
        await self.addresses.close()
        log.info("Stopped")

    # ------------------------------------------------------------ inputs

    def on_packet(self, pkt: Received) -> None:
        """Every datagram of every VRRP socket: decode, find the instance, validate, feed."""
        payload = pkt.payload
        vrid = payload[1] if len(payload) >= 2 else -1
        inst = self.by_vrid.get((pkt.family, pkt.ifname, vrid))
        # keepalived checks the TTL of multicast adverts only: unicast may be routed.
        ttl = pkt.ttl if pkt.dst.is_multicast else None
        try:
            adv = packet.decode(payload, family=pkt.family, src=pkt.src, dst=pkt.dst, ttl=ttl)
            if inst is None:
                raise MalformedPacket(packet.DropReason.VRID, f"VRID {vrid} is not configured here")
            gd = self.cfg.global_defs
            packet.validate(
                adv,
                vrid=inst.vrid,
                version=inst.version,
                auth_type=inst.auth_type,
                auth_pass=inst.auth_pass,
                adver_int_cs=inst.params.advert_int_cs,
                addresses=inst.vip_addresses,
                skip_check_adv_addr=gd.vrrp_skip_check_adv_addr
                and pkt.src == inst.machine.master_address,
            )
            if gd.vrrp_check_unicast_src and inst.peers and pkt.src not in inst.peers:
                # keepalived's vrrp_check_packet: with check_unicast_src only the
                # configured peers may speak to a unicast instance.
                raise MalformedPacket(
                    packet.DropReason.UNICAST_SRC,
                    f"unicast source address {pkt.src} not a unicast peer",
                )
        except MalformedPacket as e:
            if inst is not None:
                inst.count_drop(e, pkt.src)
            self._count_drop(e, pkt.src)
            return
        inst.on_advert(adv, pkt.src)

    def _count_drop(self, e: MalformedPacket, src: IPAddress) -> None:
        reason = e.reason.value
        self.drops[reason] += 1
        if e.reason is packet.DropReason.VRID:
            now = time.monotonic()
            last = self._drop_logged.get(reason)
            if last is None or now - last >= DROP_LOG_INTERVAL:
                self._drop_logged[reason] = now
                log.warning("dropping advertisement from %s: %s", src, e)

    def on_script_result(self, name: str, ok: bool, detail: str) -> None:
        master = self.script_trackers.get(name)
        if master is not None and master.on_result(ok):
            if ok:
                log.info("VRRP_Script(%s) succeeded", name)
            else:
                log.info("VRRP_Script(%s) failed (%s)", name, detail)
        for inst in self.instances.values():
            changed = False
            for t in inst.script_trackers.get(name, []):
                changed |= t.on_result(ok)
            if changed:
                inst.update_priority()

    def on_file_value(self, name: str, value: int) -> None:
        log.info("Tracked file %s now has value %d", name, value)
        for inst in self.instances.values():
            changed = False
            for t in inst.file_trackers.get(name, []):
                changed |= t.on_value(value)
            if changed:
                inst.update_priority()

    def on_link(self, ifname: str, up: bool) -> None:
        log.info("Netlink reports %s %s", ifname, "up" if up else "down")
        for inst in list(self.instances.values()):
            inst.on_link(ifname, up)

    def on_lb_health(self, item: bool | dict[str, Any]) -> None:
        """One report from the local load balancer (`keeplb run`).

        `True`/`False`: the whole balancer can / cannot serve. A dict
        `{"lb": bool, "backends": {name: bool}}`: instances with `track_lb`
        naming backends need all of those up; `track_lb` None needs `lb`.
        An instance that cannot be served enters FAULT, as with a weight-0 script.
        """
        for inst in self.instances.values():
            wanted = inst.cfg.track_lb
            if wanted == []:
                continue
            if isinstance(item, bool):
                up = item
            elif wanted is None:
                up = bool(item.get("lb", False))
            else:
                backends = item.get("backends") or {}
                up = all(bool(backends.get(b, False)) for b in wanted)
            if up == inst.lb_up:
                continue
            inst.lb_up = up
            log.info("(%s) local load balancer %s", inst.name, "can serve" if up else "cannot serve")
            inst.feed(FaultCleared(FAULT_LB) if up else FaultRaised(FAULT_LB))

    # ------------------------------------------------------------ sync groups

    def sync_update(self, changed: Instance) -> None:
        """keepalived's sync groups: one member in FAULT puts the whole group in FAULT."""
        for group in self.groups_of(changed.name):
            members = [self.instances[n] for n in group.group if n in self.instances]
            own_fault = any(m.machine.faults - {FAULT_SYNC} for m in members)
            for m in members:
                has = FAULT_SYNC in m.machine.faults
                if own_fault and not has and not (m.machine.faults - {FAULT_SYNC}):
                    m.feed(FaultRaised(FAULT_SYNC))
                elif (not own_fault or m.machine.faults - {FAULT_SYNC}) and has:
                    m.feed(FaultCleared(FAULT_SYNC))

    def _members(self, group: VrrpSyncGroup) -> list[Instance]:
        return [self.instances[n] for n in group.group if n in self.instances]

    def sync_want_master(self, inst: Instance) -> None:
        """A held member's Master_Down_Timer fired: it goes (and takes the group)
        only when every member of each of its groups is MASTER or wants to be."""
        for group in self.groups_of(inst.name):
            members = [m.machine for m in self._members(group)]
            if not sync_can_goto_master(members, inst.machine):
                return
        if inst.machine.state is State.BACKUP:
            inst.feed(ForceMaster())

    def sync_follow(self, inst: Instance, old: State, new: State) -> None:
        """After `inst` moved old -> new, moves the rest of its sync groups along."""
        for group in self.groups_of(inst.name):
            members = self._members(group)
            by_machine = {id(m.machine): m for m in members}
            follow = sync_followers([m.machine for m in members], inst.machine, old, new)
            # group_state_changed logs "Syncing instances to ..." once all arrived.
            for machine, event in follow:
                by_machine[id(machine)].feed(event)

    def group_state_changed(self, inst: Instance) -> None:
        for group in self.groups_of(inst.name):
            members = [self.instances[n] for n in group.group if n in self.instances]
            states = {m.machine.state for m in members}
            if len(states) != 1:
                continue
            state = states.pop()
            if self.group_states.get(group.name) == state.value:
                continue
            self.group_states[group.name] = state.value
            log.info("VRRP_Group(%s) Syncing instances to %s state", group.name, state.value)
            self._run_notify(
                group.notify, group.notify_master, group.notify_backup, group.notify_fault,
                group.notify_stop, "GROUP", group.name, state, 0,
            )

    # ------------------------------------------------------------ notify

    def notify_instance(self, inst: Instance, state: State, priority: int) -> None:
        c = inst.cfg
        self._run_notify(
            c.notify, c.notify_master, c.notify_backup, c.notify_fault, c.notify_stop,
            "INSTANCE", inst.name, state, priority,
        )

    def _run_notify(
        self,
        notify: str | None,
        master: str | None,
        backup: str | None,
        fault: str | None,
        stop: str | None,
        kind: str,
        name: str,
        state: State,
        priority: int,
    ) -> None:
        """Runs the state's own script (notify_master...: no extra arguments), then
        `notify` with `INSTANCE|GROUP name state priority`, and writes the FIFO
        line. A sync group has no priority: keepalived 2.2.7 passes 0 as the
        fourth argument (seen by running it, tests/netns/vrrp/test_notify_args.py)."""
        specific = {State.MASTER: master, State.BACKUP: backup, State.FAULT: fault, State.STOP: stop}
        script = specific.get(state)
        if script:
            self.notifier.run(script)
        if notify:
            self.notifier.run(notify, [kind, name, state.value, str(priority)])
        # After the scripts, in keepalived's order (send_*_notifies).
        self._write_fifo(fifo_line(kind, name, state.value, priority))

    def _open_fifo(self) -> None:
        """vrrp_notify_fifo: created if missing and held open (see NotifyFifo)."""
        path = self.cfg.global_defs.vrrp_notify_fifo
        if self.fifo is not None and self.fifo.path == path:
            return
        self._close_fifo()
        if path:
            self.fifo = NotifyFifo(path)
            self.fifo.open()

    def _close_fifo(self) -> None:
        if self.fifo is not None:
            self.fifo.close()
            self.fifo = None

    def _write_fifo(self, line: str) -> None:
        """One line per state change, as keepalived writes it; opens the FIFO
        on first use when the daemon was not started through start()."""
        self._open_fifo()
        if self.fifo is not None:
            self.fifo.write(line)

    # ------------------------------------------------------------ reload

    async def reload(self, new: KeepalivedConfig) -> None:
        """Switches to `new` (already parsed without errors).

        Unchanged instances keep their state and addresses; instances whose
        interface, VRID, family and addresses are unchanged get Reload(params)
        and keep their state too; others are stopped and started again.
        """
        old_cfg = self.cfg
        self.cfg = new
        await self._reload_statics(old_cfg, new)
        fresh = self._notifier(new)  # script_user may have changed; running scripts finish as they are
        self.notifier.identity, self.notifier.runnable = fresh.identity, fresh.runnable
        self._open_fifo()
        new_by_name = {i.name: i for i in new.instances}
        keep_scripts: set[str] = set()
        for name, s in new.scripts.items():
            old = old_cfg.scripts.get(name)
            if old is not None and repr(_strip_spans(dataclasses.asdict(old))) == repr(
                _strip_spans(dataclasses.asdict(s))
            ) and self.scripts.get(name) is not None and (
                self.scripts[name].identity == self.script_identity(s)
            ):
                # Same script, same user (script_user may have changed): kept running.
                keep_scripts.add(name)
        keep_scripts |= {n for n, f in new.track_files.items() if old_cfg.track_files.get(n) == f}
        await self._stop_trackers(keep_scripts)
        restart: list[VrrpInstance] = []
        for name, inst in list(self.instances.items()):
            icfg = new_by_name.get(name)
            if icfg is not None and fingerprint(icfg) == fingerprint(inst.cfg):
                self._rebuild_trackers(inst, icfg)
                continue
            if icfg is not None and self._same_identity(inst.cfg, icfg):
                inst.cfg = icfg
                params = dataclasses.replace(
                    InstanceParams.from_config(icfg, new.global_defs, inst.src),
                    synced=bool(self.groups_of(name)),
                )
                inst.params = params
                inst.auth_type = packet.auth_type_code(icfg.auth_type) if inst.version == 2 else 0
                inst.auth_pass = packet.pad_auth_pass(icfg.auth_pass)
                inst.peers = [p for p in icfg.unicast_peers if p.version == inst.family]
                self._rebuild_trackers(inst, icfg)
                inst.feed(Reload(params))
                continue
            await inst.stop()
            del self.instances[name]
            self.by_vrid.pop((inst.family, inst.ifname, inst.vrid), None)
            if icfg is not None:
                restart.append(icfg)
        added = [i for i in new.instances if i.name not in self.instances and i not in restart]
        made = await self._add_instances(restart + added)
        self._start_trackers()
        for inst in made:
            inst.start()
        for inst in self.instances.values():
            inst.update_priority()
        self.reloads += 1

    async def _reload_statics(self, old: KeepalivedConfig, new: KeepalivedConfig) -> None:
        # keepalived's clear_diff_static_*: drop what the new file no longer has,
        # then (idempotently) set everything it lists.
        kept_addrs = {repr(_strip_spans(dataclasses.asdict(a))) for a in new.static_ipaddresses}
        kept_routes = {r.words for r in new.static_routes}
        gone = KeepalivedConfig(
            static_ipaddresses=[a for a in old.static_ipaddresses
                                if repr(_strip_spans(dataclasses.asdict(a))) not in kept_addrs],
            static_routes=[r for r in old.static_routes if r.words not in kept_routes],
        )
        await self.static_op(gone, add=False)
        await self.static_op(new, add=True)

    @staticmethod
    def _same_identity(a: VrrpInstance, b: VrrpInstance) -> bool:
        return (
            a.interface == b.interface
            and a.virtual_router_id == b.virtual_router_id
            and a.family == b.family
            and (a.version or 0) == (b.version or 0)
            and fingerprint_vips(a) == fingerprint_vips(b)
        )

    def _rebuild_trackers(self, inst: Instance, icfg: VrrpInstance) -> None:
        # Tracker objects hold rise/fall history: rebuilt only for scripts that changed.
        old_scripts, old_ifaces = inst.script_trackers, inst.iface_trackers
        inst.cfg = icfg
        inst.trackers, inst.script_trackers, inst.iface_trackers, inst.file_trackers = [], {}, {}, {}
        inst._build_trackers()
        for name, trackers in inst.script_trackers.items():
            prev = old_scripts.get(name)
            if prev and name in self.scripts:
                for t in trackers:
                    t.ok, t.health = prev[0].ok, prev[0].health
        # A link's state and a kept file's value are not re-reported after a
        # reload: carry them over, or a down tracked interface would read as up.
        for name, trackers in inst.iface_trackers.items():
            prev = old_ifaces.get(name)
            if prev:
                for t in trackers:
                    t.ok, t.health = prev[0].ok, prev[0].health
        for name, ftrackers in inst.file_trackers.items():
            watcher = self.files.get(name)
            if watcher is not None and watcher.value is not None:
                for ft in ftrackers:
                    ft.on_value(watcher.value)

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The daemon's state as JSON-able data (what SIGUSR1 writes to keeplb-vrrp.json)."""
        return {
            "pid": os.getpid(),
            "config": self.config_path,
            "started": self.started,
            "reloads": self.reloads,
            "drops": dict(self.drops),
            "instances": [i.status() for i in self.instances.values()],
            "sync_groups": {g.name: self.group_states.get(g.name) for g in self.cfg.sync_groups},
            "scripts": {
                n: {"ok": t.ok} for n, t in self.script_trackers.items()
            },
        }

    def publish_status(self) -> None:
        """keeplb-vrrp.json, rewritten at every state or priority change, so that
        `keeplb vrrp status` and the balancer's /metrics read the current state
        without a signal. A failure to write is logged once and never stops VRRP."""
        try:
            _write_atomic(os.path.join(state_dir(), "keeplb-vrrp.json"),
                          json.dumps(self.status(), indent=1) + "\n")
        except OSError as e:
            if not getattr(self, "_publish_failed", False):
                log.warning("cannot write the status file: %s", e)
                self._publish_failed = True

    def write_data(self, directory: str | None = None) -> None:
        """SIGUSR1: keepalived.data (keepalived's layout) and keeplb-vrrp.json."""
        d = directory or state_dir()
        st = self.status()
        _write_atomic(os.path.join(d, "keeplb-vrrp.json"), json.dumps(st, indent=1) + "\n")
        _write_atomic(os.path.join(d, "keepalived.data"), render_data(st, self.cfg.global_defs))

    def write_stats(self, directory: str | None = None) -> None:
        """SIGUSR2: keepalived.stats, keepalived's layout."""
        d = directory or state_dir()
        _write_atomic(os.path.join(d, "keepalived.stats"), render_stats(self.status()))


def fingerprint_vips(inst: VrrpInstance) -> str:
    return repr(_strip_spans([dataclasses.asdict(v) for v in inst.virtual_ipaddresses]))


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)


def render_data(st: dict[str, Any], gd: GlobalDefs) -> str:
    """keepalived.data: the sections and 'Key = value' lines keepalived 2.2 writes."""
    lines = [
        "------< Global definitions >------",
        f" Router ID = {gd.router_id or os.uname().nodename}",
        f" Default interface = {'eth0'}",
        f" Gratuitous ARP repeat = {gd.vrrp_garp_master_repeat}",
        f" Gratuitous ARP refresh = {gd.vrrp_garp_master_refresh:g}",
        f" VRRP IPv4 mcast group = {gd.vrrp_mcast_group4}",
        f" VRRP IPv6 mcast group = {gd.vrrp_mcast_group6}",
        f" VRRP skip check advert addresses = {'true' if gd.vrrp_skip_check_adv_addr else 'false'}",
        "------< VRRP Topology >------",
    ]
    for i in st["instances"]:
        lines += [
            f" VRRP Instance = {i['name']}",
            f"   VRRP Version = {i['version']}",
            f"   State = {i['state']}",
            f"   Master router = {i['master_address'] or '(none)'}",
            f"   Master priority = {i['master_priority']}",
            f"   Interface = {i['interface']}",
            f"   Using src_ip = {i['source_address']}",
            f"   Virtual Router ID = {i['vrid']}",
            f"   Priority = {i['base_priority']}",
            f"   Effective priority = {i['effective_priority']}",
            f"   Advert interval = {i['advert_int']:g} sec",
        ]
        if i["unicast_peers"]:
            lines.append(f"   Unicast Peer = {len(i['unicast_peers'])}")
            lines += [f"     {p}" for p in i["unicast_peers"]]
        lines.append(f"   Virtual IP = {len(i['virtual_ipaddresses'])}")
        lines += [f"     {v} dev {i['interface']} scope global" for v in i["virtual_ipaddresses"]]
        for t in i["trackers"]:
            lines.append(f"   Tracked {t['kind']} = {t['name']} weight {t['weight']}")
    return "\n".join(lines) + "\n"


def render_stats(st: dict[str, Any]) -> str:
    """keepalived.stats: per-instance advert, packet error and priority-zero counters."""
    out: list[str] = []
    for i in st["instances"]:
        c, d = i["counters"], i["drops"]
        out += [
            f"VRRP Instance: {i['name']}",
            "  Advertisements:",
            f"    Received: {c['adverts_received']}",
            f"    Sent: {c['adverts_sent']}",
            f"  Became master: {c['became_master']}",
            f"  Released master: {c['released_master']}",
            "  Packet Errors:",
            f"    Length: {d.get('length', 0) + d.get('truncated', 0)}",
            f"    TTL: {d.get('ttl', 0)}",
            f"    Invalid Type: {d.get('type', 0)}",
            f"    Advertisement Interval: {d.get('interval', 0)}",
            f"    Address List: {d.get('addr_list', 0) + d.get('addr_count', 0)}",
            "  Authentication Errors:",
            f"    Invalid Type: {d.get('auth_type', 0)}",
            "    Type Mismatch: 0",
            f"    Failure: {d.get('auth', 0)}",
            "  Priority Zero:",
            f"    Received: {c['pri_zero_received']}",
            f"    Sent: {c['pri_zero_sent']}",
        ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------


def parse_config(
    path: str, *, defines: Sequence[str] = (), log_warnings: bool = True
) -> tuple[KeepalivedConfig | None, list[str], set[str]]:
    """(config, error lines, error messages); config is None when it cannot run.

    keepalived runs a file that `keepalived -t` reports errors for (exit 5/6:
    the faulty line is skipped or the instance dropped) and refuses only one it
    cannot read to the end; keeplb does the same, logging every error.
    """
    from keeplb.config import keepalived

    try:
        cfg, diags = keepalived.parse(path, defines=list(defines))
    except OSError as e:
        return None, [f"{path}: error: {e}"], set()
    if log_warnings:
        for d in diags.warnings:
            log.warning("%s", d)
    errors = [str(d) for d in diags.errors]
    messages = {d.message for d in diags.errors}
    if getattr(diags, "aborted", False) or not cfg.instances:
        if not cfg.instances and not errors:
            errors.append(f"{path}: error: no vrrp_instance to run")
        return None, errors, messages
    return cfg, errors, messages


async def run(
    cfg: KeepalivedConfig,
    config_path: str,
    stop: asyncio.Event,
    lb_health: asyncio.Queue[bool | dict[str, Any]] | None = None,
    defines: Sequence[str] = (),
) -> int:
    """Runs the VRRP instances of `cfg` until `stop` is set; returns an exit status.

    Installs SIGHUP/SIGUSR1/SIGUSR2 handlers when running in the main thread
    (SIGTERM/SIGINT are the caller's: they must set `stop`). Items on
    `lb_health` are the local balancer's health (see VrrpDaemon.on_lb_health).
    """
    loop = asyncio.get_running_loop()
    daemon = VrrpDaemon(cfg, config_path, defines)
    if os.path.exists(config_path):
        daemon.accepted_errors = parse_config(config_path, defines=defines, log_warnings=False)[2]
    reload_requested = asyncio.Event()
    installed: list[int] = []
    handlers: dict[int, Callable[[], None]] = {
        signal.SIGHUP: reload_requested.set,
        signal.SIGUSR1: daemon.write_data,
        signal.SIGUSR2: daemon.write_stats,
    }
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (RuntimeError, ValueError, NotImplementedError):
            pass
    tasks: list[asyncio.Task[None]] = []
    try:
        delay = cfg.global_defs.vrrp_startup_delay
        if delay > 0:
            log.info("Delaying startup for %g seconds", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return 0
        try:
            await daemon.start()
        except (KeeplbError, OSError) as e:
            log.error("%s", e)
            await daemon.stop()
            return 3
        if lb_health is not None:
            tasks.append(loop.create_task(_consume_lb_health(daemon, lb_health)))
        tasks.append(loop.create_task(_reloader(daemon, reload_requested)))
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sig in installed:
            loop.remove_signal_handler(sig)
    try:
        await asyncio.wait_for(daemon.stop(), STOP_TIMEOUT * 2)
    except TimeoutError:
        log.error("stop timed out; some addresses may be left")
    return 0


async def _consume_lb_health(daemon: VrrpDaemon, queue: asyncio.Queue[bool | dict[str, Any]]) -> None:
    while True:
        item = await queue.get()
        daemon.on_lb_health(item)


async def _reloader(daemon: VrrpDaemon, requested: asyncio.Event) -> None:
    while True:
        await requested.wait()
        requested.clear()
        log.info("Reloading")
        new, errors, messages = parse_config(daemon.config_path, defines=daemon.defines)
        # A reload must not make things worse: an error the running file did
        # not have (a dropped instance, a lost address) refuses the new file.
        fresh = messages - daemon.accepted_errors
        if new is None or fresh:
            for line in errors:
                log.error("%s", line)
            log.error("Reload of %s refused, keeping the running configuration", daemon.config_path)
            continue
        try:
            await daemon.reload(new)
        except KeeplbError as e:
            log.error("Reload failed: %s", e)
            continue
        except Exception as e:  # noqa: BLE001 - this task must outlive any reload
            # Without it the next SIGHUP would find no reloader left.
            log.error("Reload failed: %s: %s", type(e).__name__, e)
            continue
        log.info("Reload finished")


def _lb_health_reader(fd: int, queue: asyncio.Queue[bool | dict[str, Any]]) -> Callable[[], None]:
    """A reader callback for the supervisor's pipe: one JSON object per line."""
    buf = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(fd)
            return
        buf.extend(chunk)
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            try:
                item = json.loads(line)
            except ValueError:
                log.warning("lb health: not JSON: %r", line[:80])
                continue
            if isinstance(item, bool | dict):
                queue.put_nowait(item)

    return readable


def setup_logging(*, console: bool) -> None:
    """keepalived's log format on stderr, or syslog (daemon facility) otherwise."""
    logger = logging.getLogger("keeplb.vrrp")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler: logging.Handler
    if console:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s: %(message)s", "%a %b %d %H:%M:%S %Y"))
    else:
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
        except OSError:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"Keepalived_vrrp[{os.getpid()}]: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def main(
    config_path: str,
    *,
    foreground: bool,
    pidfile: str | None,
    check_only: bool = False,
    log_console: bool = True,
    lb_health_fd: int | None = None,
    defines: Sequence[str] = (),
) -> int:
    """`keeplb vrrp`: parse, optionally detach, run until SIGTERM/SIGINT; the exit status.

    0 after a clean stop, 1 for a bad configuration, 3 when the instances
    could not start.
    """
    setup_logging(console=log_console)
    from keeplb.proc.title import set_title

    set_title("vrrp")
    cfg, errors, _ = parse_config(config_path, defines=defines)
    for line in errors:
        log.error("%s", line)
    if cfg is None:
        return 1
    if check_only:
        return 0
    if not foreground:
        from keeplb.proc.daemonize import daemonize

        daemonize()
        setup_logging(console=False)
    if pidfile:
        from keeplb.proc.pidfile import write_pidfile

        write_pidfile(pidfile)
    # The stock asyncio loop, not uvloop: uvloop refuses AF_NETLINK datagram
    # endpoints, which pyroute2's AsyncIPRoute needs; a VRRP process handles a
    # few packets a second, so nothing is lost.
    try:
        return asyncio.run(_serve(cfg, config_path, lb_health_fd, defines))
    finally:
        if pidfile:
            from keeplb.proc.pidfile import remove_pidfile

            remove_pidfile(pidfile)


async def _serve(
    cfg: KeepalivedConfig, config_path: str, lb_health_fd: int | None, defines: Sequence[str]
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()

    def on_sigint() -> None:
        if stop.is_set() and main_task is not None:
            main_task.cancel()  # second Ctrl-C: do not wait for the clean stop
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    queue: asyncio.Queue[bool | dict[str, Any]] | None = None
    if lb_health_fd is not None:
        queue = asyncio.Queue()
        os.set_blocking(lb_health_fd, False)
        loop.add_reader(lb_health_fd, _lb_health_reader(lb_health_fd, queue))
    log.info("Starting VRRP child process, pid=%d", os.getpid())
    try:
        return await run(cfg, config_path, stop, queue, defines)
    except asyncio.CancelledError:
        return 130


def print_status(status_file: str) -> int:
    """`keeplb vrrp status`: a table of the instances in a status JSON file.

    Any file may be named with --status-file: one that is not the daemon's
    JSON gets one line naming it and exit status 1, never a codec message."""
    try:
        with open(status_file, "rb") as f:
            # bounded: the daemon's file is a few kB, /dev/zero never ends
            raw = f.read(1 << 24)
    except OSError as e:
        hint = "(send SIGUSR1 to the daemon to write it)\n" if isinstance(e, FileNotFoundError) else ""
        sys.stderr.write(f"{status_file}: cannot read status: {e.strerror or e}\n{hint}")
        return 1
    why = None
    try:
        st = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        why = "not UTF-8 text"
    except json.JSONDecodeError as e:
        why = f"not JSON: {e.msg} at line {e.lineno} column {e.colno}"
    except (ValueError, RecursionError):
        why = "not JSON"
    instances: list[dict[str, Any]] = []
    if why is None:
        found = st.get("instances", []) if isinstance(st, dict) else None
        if isinstance(found, list) and all(isinstance(i, dict) for i in found):
            instances = found
        else:
            why = "no list of instances in it"
    if why is not None:
        sys.stderr.write(f"{status_file}: cannot read status: not a keeplb status file ({why})\n")
        return 1

    def count(value: object) -> int:
        # a hand-edited or older file may hold anything where a number belongs
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    rows = [("INSTANCE", "STATE", "PRIO", "EFF", "MASTER", "SENT", "RECV", "DROPS")]
    for i in instances:
        counters: dict[str, Any] = c if isinstance(c := i.get("counters"), dict) else {}
        drops: dict[str, Any] = d if isinstance(d := i.get("drops"), dict) else {}
        rows.append((
            str(i.get("name")), str(i.get("state")), str(i.get("base_priority")),
            str(i.get("effective_priority")), str(i.get("master_address") or "-"),
            str(count(counters.get("adverts_sent", 0))),
            str(count(counters.get("adverts_received", 0))),
            str(sum(count(v) for v in drops.values())),
        ))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return 0

