"""SimNet: VRRP machines on a simulated multicast segment, in virtual time.

Every SendAdvertisement a machine returns is encoded with the real codec,
carried to every other started router in the same partition after `latency`
seconds (unless dropped), decoded and validated there, and handed to that
router's machine as AdvertisementReceived. Machine deadlines are honoured in
time order, so a test runs minutes of VRRP in milliseconds.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from keeplb.errors import MalformedPacket
from keeplb.testing.clock import FakeClock
from keeplb.vrrp import packet
from keeplb.vrrp.machine import (
    Action,
    AddVips,
    AdvertisementReceived,
    Event,
    InstanceParams,
    RemoveVips,
    SendAdvertisement,
    Shutdown,
    Startup,
    State,
    Transition,
    VrrpMachine,
)
from keeplb.vrrp.packet import IPAddress

MCAST4 = ipaddress.IPv4Address("224.0.0.18")
MCAST6 = ipaddress.IPv6Address("ff02::12")


def vip_addresses(params: InstanceParams) -> tuple[IPAddress, ...]:
    """The bare addresses of params.vips (VirtualAddress, ip_interface or ip_address)."""
    out: list[IPAddress] = []
    for vip in params.vips:
        inner = getattr(vip, "address", vip)
        ip = getattr(inner, "ip", inner)
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            out.append(ip)
    return tuple(out)


@dataclass
class Router:
    """One simulated host: a machine plus what the shell would have done."""

    name: str
    machine: VrrpMachine
    auth_pass: bytes = b""
    started: bool = False
    holds_vips: bool = False
    log: list[tuple[float, Action]] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.machine.state


@dataclass(frozen=True, slots=True)
class Delivery:
    """One advert on the wire, as the simulation recorded it."""

    time: float
    src: str
    dst: str
    priority: int
    dropped: str | None = None  # why, when it was not delivered


class SimNet:
    """N routers sharing a segment. See the module docstring."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        latency: float = 0.001,
        jitter: float = 0.0,
        drop_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.clock = clock or FakeClock()
        self.latency = latency
        self.jitter = jitter
        self.drop_rate = drop_rate
        self.routers: dict[str, Router] = {}
        self.deliveries: list[Delivery] = []
        self.transitions: list[tuple[float, str, State, State]] = []
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._group: dict[str, int] = {}

    # ------------------------------------------------------------ setup

    def add(self, params: InstanceParams, *, auth_pass: bytes = b"") -> Router:
        """Add a router (not started). Names must be unique."""
        if params.name in self.routers:
            raise ValueError(f"router {params.name} already exists")
        router = Router(params.name, VrrpMachine(params), auth_pass=auth_pass)
        self.routers[params.name] = router
        self._group[params.name] = 0
        return router

    def start(self, name: str, at: float | None = None) -> None:
        """Deliver Startup to `name` now, or at time `at`."""
        self.inject(name, Startup(), at)

    def stop(self, name: str, at: float | None = None) -> None:
        """Deliver Shutdown to `name` now, or at time `at`."""
        self.inject(name, Shutdown(), at)

    def inject(self, name: str, event: Event, at: float | None = None) -> None:
        """Deliver any event to one router's machine, now or at time `at`."""
        when = self.clock.now if at is None else at
        self._schedule(when, lambda: self._feed(name, event))
        if at is None:
            self._drain_now()

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the segment: routers talk only within their group; unnamed ones form one more."""
        for name in self._group:
            self._group[name] = 0
        for i, group in enumerate(groups, start=1):
            for name in group:
                self._group[name] = i

    def heal(self) -> None:
        """One segment again."""
        for name in self._group:
            self._group[name] = 0

    # ------------------------------------------------------------ running

    def run_for(self, seconds: float) -> None:
        self.run_until(self.clock.now + seconds)

    def run_until(self, when: float, *, max_steps: int = 1_000_000) -> None:
        """Process deliveries and machine deadlines in time order up to `when`."""
        for _ in range(max_steps):
            step = self._next_time()
            if step is None or step > when:
                break
            self.clock.jump_to(max(step, self.clock.now))
            self._drain_now()
        else:
            raise RuntimeError(f"simulation did not reach t={when} in {max_steps} steps")
        self.clock.jump_to(max(when, self.clock.now))

    def masters(self) -> list[str]:
        return sorted(n for n, r in self.routers.items() if r.state is State.MASTER)

    def vip_holders(self) -> list[str]:
        return sorted(n for n, r in self.routers.items() if r.holds_vips)

    def states(self) -> dict[str, State]:
        return {n: r.state for n, r in self.routers.items()}

    # ------------------------------------------------------------ internals

    def _schedule(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), fn))

    def _next_time(self) -> float | None:
        times = [self._queue[0][0]] if self._queue else []
        for router in self.routers.values():
            deadline = router.machine.next_deadline()
            if deadline is not None:
                times.append(deadline)
        return min(times) if times else None

    def _drain_now(self) -> None:
        now = self.clock.now
        # Bounded: every callback and timeout moves its deadline past `now`.
        for _ in range(100_000):
            if self._queue and self._queue[0][0] <= now:
                _, _, fn = heapq.heappop(self._queue)
                fn()
                continue
            due = [
                r
                for r in self.routers.values()
                if (d := r.machine.next_deadline()) is not None and d <= now
            ]
            if not due:
                return
            for router in due:
                self._execute(router, router.machine.handle_timeout(now))
        raise RuntimeError(f"simulation livelock at t={now}")

    def _feed(self, name: str, event: Event) -> None:
        router = self.routers[name]
        if isinstance(event, Startup):
            router.started = True
        actions = router.machine.handle(event, self.clock.now)
        self._execute(router, actions)
        if isinstance(event, Shutdown):
            router.started = False

    def _execute(self, router: Router, actions: list[Action]) -> None:
        now = self.clock.now
        for action in actions:
            router.log.append((now, action))
            if isinstance(action, SendAdvertisement):
                self._broadcast(router, action.priority)
            elif isinstance(action, AddVips):
                router.holds_vips = True
            elif isinstance(action, RemoveVips):
                router.holds_vips = False
            elif isinstance(action, Transition):
                self.transitions.append((now, router.name, action.old, action.new))

    def _broadcast(self, sender: Router, priority: int) -> None:
        params = sender.machine.params
        src = params.primary_address
        if src is None:
            raise ValueError(f"router {params.name} needs a primary_address in a SimNet")
        family = src.version
        dst = MCAST4 if family == 4 else MCAST6
        adv = packet.Advertisement(
            version=params.version,
            vrid=params.vrid,
            priority=priority,
            max_adver_int_cs=params.advert_int_cs,
            addresses=vip_addresses(params),
            auth_type=packet.AUTH_PASS if sender.auth_pass else packet.AUTH_NONE,
            auth_data=sender.auth_pass,
        )
        wire = packet.encode(adv, family=family, src=src, dst=dst)
        now = self.clock.now
        for name, peer in self.routers.items():
            if peer is sender:
                continue
            if self._group[name] != self._group[sender.name]:
                self.deliveries.append(Delivery(now, sender.name, name, priority, "partition"))
                continue
            if self.drop_rate and self._rng.random() < self.drop_rate:
                self.deliveries.append(Delivery(now, sender.name, name, priority, "loss"))
                continue
            delay = self.latency + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)
            self.deliveries.append(Delivery(now, sender.name, name, priority))
            self._schedule(now + delay, self._receiver(peer, wire, family, src, dst))

    def _receiver(
        self, peer: Router, wire: bytes, family: int, src: IPAddress, dst: IPAddress
    ) -> Callable[[], None]:
        def receive() -> None:
            if not peer.started:
                return
            p = peer.machine.params
            try:
                adv = packet.decode(wire, family=family, src=src, dst=dst, ttl=packet.VRRP_TTL)
                packet.validate(
                    adv,
                    vrid=p.vrid,
                    version=p.version,
                    auth_type=packet.AUTH_PASS if peer.auth_pass else packet.AUTH_NONE,
                    auth_pass=packet.pad_auth_pass(peer.auth_pass),
                    adver_int_cs=p.advert_int_cs,
                    addresses=vip_addresses(p),
                    skip_check_adv_addr=False,
                )
            except MalformedPacket as exc:
                self.deliveries.append(
                    Delivery(self.clock.now, str(src), peer.name, -1, exc.reason.value)
                )
                return
            self._execute(
                peer, peer.machine.handle(AdvertisementReceived(adv, src), self.clock.now)
            )

        return receive
