"""The relay: accept, pick a server, queue, connect, move bytes, time out, log.

This is the hot path. Bytes are moved by two protocols per session (client
side and server side, asyncio.Protocol's method names) over reactor.Stream
sockets in the loop's private epoll set (keeplb/lb/reactor.py); no Python
code runs per byte, and backpressure is the streams' pause_writing /
resume_writing turned into pause_reading / resume_reading of the peer, so a
slow side never makes keeplb buffer without bound.

Accepting stops at maxconn while the socket keeps listening, so further
connections wait in the kernel backlog. A session is a chain of callbacks
(route, pick, connect, retry); only waiting in a queue runs a coroutine.
Timeouts (connect, then idle) use one deadline per session, filed in a
coarse per-loop TimerWheel and re-armed lazily when it fires, instead of
one loop timer per session or per read. `make` compiles this module with
mypyc (tools/build_native.py); it runs as plain Python too.

Words follow haproxy: frontend, backend, server, queue, retries, redispatch,
termination state ('sQ', 'SC', 'cD', ...) as in the tcplog `%ts` field.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import itertools
import logging
import re
import socket
import sys
import termios
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from keeplb.config.haproxy import condition_acls, int_patterns, l4_unsupported
from keeplb.config.model import Acl, Condition, Mode, Proxy
from keeplb.lb import fdsock
from keeplb.lb.balance import Balancer
from keeplb.lb.health import BE_WEIGHT_SCALE, slowstart_weight
from keeplb.lb.log import (
    LOG_ALERT,
    LOG_EMERG,
    LOG_INFO,
    LOG_NOTICE,
    ProxyLog,
    SessionLog,
    format_tcplog,
    session_level,
    session_renderer,
    should_log_session,
)
from keeplb.lb.reactor import (
    Acceptor,
    Reactor,
    Stream,
    StreamProtocol,
    open_connection,
    reactor_of,
)
from keeplb.lb.rules import (
    ConnectionRules,
    ContentRules,
    address,
    compile_content_rules,
    compile_rules,
    condition_terms,
    holds,
)
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    Counters,
    FreqCtr,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)
from keeplb.lb.shared import SharedCounts

if TYPE_CHECKING:
    from keeplb.lb.runtime import RuntimeControl

_log = logging.getLogger("keeplb.lb")
_wall_clock: Final = time.time  # bound once: compiled, time.time() is a module lookup per call
_monotonic: Final = time.monotonic

# Large enough that bulk transfers move in big chunks, small enough that
# 10k sessions stay cheap (the kernel socket buffers hold the rest).
WRITE_HIGH_WATER: Final = 256 * 1024
WRITE_LOW_WATER: Final = 64 * 1024
# Client bytes kept while no server is connected yet (queue, connect, retries).
PRECONNECT_BUFFER: Final = 64 * 1024
# Without `timeout connect` haproxy waits as long as the kernel does (minutes);
# keeplb bounds it so that a black-holed server costs seconds, not minutes.
DEFAULT_TIMEOUT_CONNECT_MS: Final = 5000
ACCEPT_ERROR_PAUSE_S: Final = 0.1
AF_INET: Final = int(socket.AF_INET)
AF_INET6: Final = int(socket.AF_INET6)
AF_UNIX: Final = int(socket.AF_UNIX)
# tune.maxaccept: connections accepted in a row per listener before other
# work; as in haproxy divided by twice the number of processes sharing the
# listener (keeplb's nbthread workers are processes), so that they share.
# haproxy 2.6 defaults to 4; keeplb to 64: with 4, one event-loop pass per 4
# connections cost 15% of the new-connection rate (bench/connbench.py).
DEFAULT_MAXACCEPT: Final = 64


def maxaccept(tune: str | None, processes: int) -> int:
    try:
        n = int(tune) if tune is not None else DEFAULT_MAXACCEPT
    except ValueError:
        n = DEFAULT_MAXACCEPT
    if n <= 0:
        return 1 << 30  # haproxy: -1 means no limit
    return max(1, n // (2 * processes)) if processes > 1 else n


# Algorithms whose pick depends on the request only: a full server keeps the
# connection in its own queue instead of sending it elsewhere (haproxy).
DETERMINISTIC: Final = frozenset({"source", "hash", "uri", "url_param", "hdr", "rdp-cookie"})
KEYLESS: Final = frozenset({"roundrobin", "static-rr", "leastconn", "first", "random"})


# --------------------------------------------------------------------------
# haproxy's server state log lines
# --------------------------------------------------------------------------


def _reason(desc: str, code: int | None, info: str, duration_ms: int | None) -> str:
    text = f"reason: {desc}"
    if code is not None:
        text += f", code: {code}"
    if info:
        text += f', info: "{info}"'
    if duration_ms is not None:
        text += f", check duration: {duration_ms}ms"
    return text


def server_down_message(backend: str, server: str, backup: bool, desc: str, info: str,
                        duration_ms: int | None, code: int | None, active: int, backups: int,
                        sessions: int, requeued: int, queued: int) -> str:
    """haproxy 2.6's line when a check takes a server DOWN (counts exclude the server)."""
    who = "Backup Server" if backup else "Server"
    text = (f"{who} {backend}/{server} is DOWN, {_reason(desc, code, info, duration_ms)}. "
            f"{active} active and {backups} backup servers left.")
    if active == 0 and backups > 0:
        text += " Running on backup."
    return text + (f" {sessions} sessions active, {requeued} requeued, "
                   f"{queued} remaining in queue.")


def server_up_message(backend: str, server: str, backup: bool, desc: str, info: str,
                      duration_ms: int | None, code: int | None, active: int, backups: int,
                      requeued: int, be_queued: int) -> str:
    """haproxy 2.6's line when a check brings a server UP (counts include the server)."""
    who = "Backup Server" if backup else "Server"
    return (f"{who} {backend}/{server} is UP, {_reason(desc, code, info, duration_ms)}. "
            f"{active} active and {backups} backup servers online. "
            f"{requeued} sessions requeued, {be_queued} total in queue.")


def no_server_message(backend: str) -> str:
    return f"backend {backend} has no server available!"


# --------------------------------------------------------------------------
# ACLs for use_backend (layer-4 criteria only: this is a TCP relay)
# --------------------------------------------------------------------------

Matcher = Callable[[tuple[str, int], tuple[str, int]], bool]
"""(client address, local address) -> matches."""


def _port_matcher(values: Sequence[str], which: int) -> Matcher:
    """Ports as haproxy reads integer patterns: '443', '1:1023', '1024:', ':1023',
    'gt 1024', 'le 80 443' (config.haproxy.int_patterns; invalid ones never match,
    the config check has refused them)."""
    ranges = tuple((-1 if lo is None else lo, 1 << 30 if hi is None else hi)
                   for lo, hi in int_patterns(values)[0])
    def match(src: tuple[str, int], dst: tuple[str, int]) -> bool:
        port = (src, dst)[which][1]
        return any(lo <= port <= hi for lo, hi in ranges)
    return match


def _ip_matcher(values: Sequence[str], which: int) -> Matcher:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for v in values:
        try:
            nets.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            continue
    def match(src: tuple[str, int], dst: tuple[str, int]) -> bool:
        try:
            ip = ipaddress.ip_address((src, dst)[which][0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in nets)
    return match


def compile_acl(criterion: str, values: Sequence[str]) -> Matcher | None:
    """A matcher for a layer-4 criterion, or None when keeplb cannot evaluate it here."""
    if criterion == "always_true":
        return lambda s, d: True
    if criterion == "always_false":
        return lambda s, d: False
    if criterion in ("dst_port", "src_port"):
        return _port_matcher(values, 1 if criterion == "dst_port" else 0)
    if criterion in ("src", "dst"):
        return _ip_matcher(values, 0 if criterion == "src" else 1)
    return None


@dataclass(frozen=True, slots=True)
class Route:
    backend: str
    terms: tuple[tuple[tuple[bool, Matcher], ...], ...]  # OR of ANDs of (negated, matcher)
    negate: bool

    def matches(self, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        return holds(self.terms, self.negate, src, dst)


def _always(value: bool) -> Matcher:
    return lambda s, d: value


def _any_of(matchers: Sequence[Matcher]) -> Matcher:
    return lambda s, d: any(m(s, d) for m in matchers)


def _compile_expr(acl: Acl) -> Matcher | None:
    """One ACL expression (an `acl` line, or an anonymous ACL), or None when keeplb
    cannot evaluate it as haproxy does (config.haproxy.l4_unsupported)."""
    if l4_unsupported(acl) is not None:
        return None
    return compile_acl(acl.criterion, acl.values)


def compile_condition(cond: Condition | None, acls: Sequence[Acl]) -> tuple[
        tuple[tuple[tuple[bool, Matcher], ...], ...], bool] | None:
    """(terms, negate) for a condition, or None if it uses something keeplb cannot
    evaluate (config.haproxy.condition_unsupported says what; the config check
    warns that the rule is ignored). Only the ACLs the condition names matter: an
    `acl` on a layer-7 fetch elsewhere in the section does not. Called once per
    rule when a frontend is built."""
    if cond is None:
        return (((False, _always(True)),),), False
    named: dict[str, Matcher] = {}
    for name, exprs in condition_acls(cond, acls):
        if not name or name in named:
            continue
        ms: list[Matcher] = []
        for e in exprs:
            m = _compile_expr(e)
            if m is None:
                return None
            ms.append(m)
        if not ms:
            return None  # no such ACL (the config check refuses the file)
        # Several `acl` lines with one name are OR-ed (haproxy).
        named[name] = ms[0] if len(ms) == 1 else _any_of(ms)
    terms = condition_terms(cond, named, _compile_expr)
    return None if terms is None else (terms, cond.negate)


def _path_ok(criterion: str, values: Sequence[str], path: str) -> bool | None:
    if criterion == "path":
        return path in values
    if criterion == "path_beg":
        return any(path.startswith(v) for v in values)
    if criterion == "path_end":
        return any(path.endswith(v) for v in values)
    if criterion in ("always_true", "TRUE"):
        return True
    if criterion in ("always_false", "FALSE"):
        return False
    return None


def http_condition_matches(cond: Condition | None, acls: Sequence[Acl], path: str) -> bool:
    """An `if`/`unless` of a service rule on the request path (path, path_beg,
    path_end); anything else does not match."""
    if cond is None:
        return True
    named: dict[str, list[Acl]] = {}
    for acl in acls:
        named.setdefault(acl.name, []).append(acl)

    def term(word: str) -> bool:
        neg = word.startswith("!")
        word = word.lstrip("!")
        if word.startswith("{"):
            parts = word.strip("{} ").split()
            ok = bool(parts) and bool(_path_ok(parts[0], [p for p in parts[1:]
                                                           if not p.startswith("-")], path))
        else:
            ok = any(_path_ok(a.criterion, a.values, path) for a in named.get(word, ()))
        return ok != neg

    hit = any(all(term(w) for w in conj) for conj in cond.terms)
    return hit != cond.negate


# --------------------------------------------------------------------------
# Backends and servers
# --------------------------------------------------------------------------


def tcp_keepalive(p: Proxy, side: str) -> bool:
    """`option clitcpka` (side 'clitcpka': client connections of a frontend) or
    `option srvtcpka` (server connections of a backend), or `option tcpka` for
    both, as haproxy 2.6 sets them: tcpka sets both flags and `no option
    clitcpka` clears one, so of the two the later line wins. The options keep
    the order of their first line (the defaults section's first), which tells
    it; `no option tcpka` is refused by the parser, as by haproxy."""
    own = p.options.get(side)
    if own is None or own:
        return bool(own) or p.option("tcpka")
    if not p.option("tcpka"):
        return False
    names = list(p.options)
    return names.index("tcpka") > names.index(side)


def splice_options(p: Proxy) -> tuple[bool, bool]:
    """(request, response): which directions `option splice-*` lets splice."""
    auto = p.option("splice-auto")
    return auto or p.option("splice-request"), auto or p.option("splice-response")


class Pending:
    """A session waiting in a queue for a server slot."""

    __slots__ = ("session", "future", "seq", "done", "server")

    def __init__(self, session: Session, future: asyncio.Future[Slot], seq: int,
                 server: Slot | None) -> None:
        self.session = session
        self.future = future
        self.seq = seq
        self.done = False
        self.server = server  # None: in the backend queue


class Slot:
    """A server as the relay sees it: its runtime counters plus live sessions and queue."""

    __slots__ = ("rt", "name", "backend", "sessions", "queue", "queue_len", "ramp",
                 "shared", "served_i", "queued_i", "counted")

    def __init__(self, rt: ServerRuntime, backend: Backend) -> None:
        self.rt = rt
        self.name = rt.name  # a plain attribute: read several times per session
        self.backend = backend
        self.sessions: set[Session] = set()
        self.queue: deque[Pending] = deque()
        self.queue_len = 0
        self.ramp: asyncio.TimerHandle | None = None
        # nbthread with the master's table (keeplb.lb.shared): this server's
        # entries there, and the sessions this worker counted in it
        self.shared: SharedCounts | None = None
        self.served_i = self.queued_i = 0
        self.counted: set[Session] = set()

    @property
    def full(self) -> bool:
        """At the server's maxconn: with nbthread, the sessions of every worker
        (the master's table), or without a table this worker's part of it."""
        mc = self.rt.maxconn
        return mc > 0 and self._reached(mc, self.served_i, len(self.sessions))

    def queue_full(self) -> bool:
        """At the server's maxqueue (every worker's waiters, as `full`)."""
        mq = self.rt.maxqueue
        return mq > 0 and self._reached(mq, self.queued_i, self.queue_len)

    def _reached(self, limit: int, entry: int, here: int) -> bool:
        sh = self.shared
        if sh is not None:
            return sh.get(entry) >= limit
        return here >= self.backend.process.server_share(limit)


class Backend:
    """One backend: its servers, balancer, queue and counters."""

    def __init__(self, rt: BackendRuntime, balancer: Balancer, process: ProcessRuntime,
                 log: ProxyLog) -> None:
        self.rt = rt
        self.cfg: Proxy = rt.config
        self.balancer = balancer
        self.process = process
        self.log = log
        self.slots: dict[str, Slot] = {s.name: Slot(s, self) for s in rt.servers}
        self.full: set[str] = set()
        self.queue: deque[Pending] = deque()
        self.queue_len = 0
        self.sessions = 0
        self.deterministic = self.cfg.balance.algorithm.split("(")[0] in DETERMINISTIC
        # Only hashing balancers read the client address; the others skip inet_pton.
        self.needs_key = getattr(balancer, "algorithm", None) not in KEYLESS
        t = self.cfg.timeouts
        self.timeout_connect = t.get("connect", DEFAULT_TIMEOUT_CONNECT_MS) / 1000
        self.timeout_queue = t.get("queue", t.get("connect", DEFAULT_TIMEOUT_CONNECT_MS)) / 1000
        self.timeout_server = t.get("server")
        self.timeout_tunnel = t.get("tunnel")
        self.timeout_server_fin = t.get("server-fin")
        self.retries = self.cfg.retries if self.cfg.retries is not None else 3
        self.redispatch = self.cfg.option("redispatch")
        self.splice_request, self.splice_response = splice_options(self.cfg)
        # SO_KEEPALIVE on server connections (a syscall only where set)
        self.srvtcpka = tcp_keepalive(self.cfg, "srvtcpka")
        # `option nolinger`: the server connection is reset, not shut (Session._shut_server)
        self.nolinger = self.cfg.option("nolinger")
        self.on_health: Callable[[], None] | None = None
        self._was_up = rt.is_up
        # nbthread: the master's table of every worker's sessions and waiters
        # (keeplb.lb.shared); `wake` tells the other workers that a server of
        # this backend has a free slot while some of their clients wait
        self.shared: SharedCounts | None = None
        self.queue_i = 0
        self.wake: Callable[[str], None] | None = None
        sh = process.shared
        if isinstance(sh, SharedCounts):
            self.shared = sh
            self.queue_i = sh.index[(self.name, "")][0]
            for slot in self.slots.values():
                slot.shared = sh
                slot.served_i, slot.queued_i = sh.index[(self.name, slot.name)]

    @property
    def name(self) -> str:
        return self.rt.name

    # -- picking and queueing ------------------------------------------------

    def pick(self, key: bytes | None, avoid: str | None) -> tuple[Slot | None, bool]:
        """(server with a free slot, False), (full server or None, True) to queue, or
        (None, False) when no server is usable.

        haproxy skips saturated servers for the dynamic algorithms and queues in
        the backend when all are saturated; a hash-based pick stays with its
        server and waits in that server's queue.
        """
        bal = self.balancer
        name = bal.pick(key, avoid)
        if name is None:
            return None, bool(self.full and bal.usable())
        slot = self.slots[name]
        if not slot.full and not slot.queue_len:
            return slot, False
        if self.deterministic:
            return slot, True
        pool = bal.usable()
        for _ in range(2 * len(pool)):
            name = bal.pick(key, name)
            if name is None:
                break
            slot = self.slots[name]
            if not slot.full:
                return slot, False
        for name in pool:
            slot = self.slots[name]
            if not slot.full and name != avoid:
                return slot, False
        return None, True

    def take(self, slot: Slot, session: Session, force: bool = False) -> bool:
        """`session` now counts against `slot` (haproxy: srv->served++); False
        (nothing taken) when another worker took the last free slot since
        `slot.full` was read. `force`: even beyond maxconn (a retry on the
        server the session already had)."""
        sh = slot.shared
        if sh is not None and slot.rt.maxconn > 0:
            if not sh.try_take(slot.served_i, 0 if force else slot.rt.maxconn):
                return False
            slot.counted.add(session)
        slot.sessions.add(session)
        self.balancer.take_conn(slot.name)
        rt = slot.rt
        rt.counters.lbtot += 1
        rt.counters.session_started()
        if slot.full:
            self.full.add(slot.name)
        return True

    def release(self, slot: Slot, session: Session) -> None:
        """Called once when a session leaves its server; serves the oldest waiter."""
        if session not in slot.sessions:
            return
        slot.sessions.discard(session)
        self.balancer.drop_conn(slot.name)
        slot.rt.counters.session_ended()
        sh = slot.shared
        if sh is not None and session in slot.counted:
            slot.counted.discard(session)
            sh.add(slot.served_i, -1)
        if self.full and not slot.full:
            self.full.discard(slot.name)
        if slot.queue or self.queue:
            self.serve_queue(slot)
        if sh is not None and self.wake is not None and slot.rt.maxconn > 0 \
                and not slot.full and self._others_wait(sh, slot):
            self.wake(slot.name)

    def _others_wait(self, sh: SharedCounts, slot: Slot) -> bool:
        """Other workers' clients wait for `slot` (in its queue, or in the
        backend's while it may take them)."""
        return (sh.get(slot.queued_i) > sh.mine(slot.queued_i)
                or (slot.rt.usable and sh.get(self.queue_i) > sh.mine(self.queue_i)))

    def _count_waiter(self, p: Pending, delta: int) -> None:
        """`p` joins (+1) or leaves (-1) its queue in the master's table."""
        sh = self.shared
        if sh is not None:
            sh.add(self.queue_i if p.server is None else p.server.queued_i, delta)

    def recheck(self, slot: Slot | None) -> None:
        """Right after a session queued: a slot another worker freed while
        this one was deciding to queue (its `wake` read the queue before this
        waiter was counted) is taken now rather than at the next release."""
        if self.shared is None:
            return
        if slot is not None:
            self.serve_queue(slot)
        else:
            self.serve_all()

    def on_wake(self, server: str) -> None:
        """Another worker freed a slot of `server` (sync's `wake` line)."""
        slot = self.slots.get(server)
        if slot is not None and (slot.queue_len or self.queue_len):
            self.serve_queue(slot)

    def enqueue(self, session: Session, slot: Slot | None, seq: int) -> Pending:
        fut: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        p = Pending(session, fut, seq, slot)
        if slot is None:
            self.queue.append(p)
            self.queue_len += 1
            self.rt.queue_cur = self.queue_len
            self.rt.queue_max = max(self.rt.queue_max, self.queue_len)
        else:
            slot.queue.append(p)
            slot.queue_len += 1
            slot.rt.queue_cur = slot.queue_len
            slot.rt.queue_max = max(slot.rt.queue_max, slot.queue_len)
        self._count_waiter(p, 1)
        return p

    def dequeue(self, p: Pending) -> None:
        """Take `p` out of its queue's count (it stays in the deque, marked done)."""
        if p.done:
            return
        p.done = True
        if p.server is None:
            self.queue_len -= 1
            self.rt.queue_cur = self.queue_len
        else:
            p.server.queue_len -= 1
            p.server.rt.queue_cur = p.server.queue_len
        self._count_waiter(p, -1)

    @staticmethod
    def _head(q: deque[Pending]) -> Pending | None:
        while q and q[0].done:
            q.popleft()
        return q[0] if q else None

    def serve_queue(self, slot: Slot) -> None:
        """Give free slots of `slot` to the oldest waiters of its queue or the backend's."""
        while not slot.full:
            mine = self._head(slot.queue)
            theirs = self._head(self.queue) if slot.rt.usable else None
            if mine is None and theirs is None:
                return
            if mine is None or (theirs is not None and theirs.seq < mine.seq):
                p = theirs
                self.queue.popleft()
            else:
                p = mine
                slot.queue.popleft()
            assert p is not None
            self.dequeue(p)
            if p.future.done():
                continue  # its session gave up (cancelled) a moment ago
            if not self.take(slot, p.session):
                self._put_back(p, slot if p is mine else None)
                return  # another worker took the slot: this waiter stays first
            p.future.set_result(slot)

    def _put_back(self, p: Pending, slot: Slot | None) -> None:
        """`p` back at the head of the queue it was taken from."""
        p.done = False
        if slot is None:
            self.queue.appendleft(p)
            self.queue_len += 1
            self.rt.queue_cur = self.queue_len
        else:
            slot.queue.appendleft(p)
            slot.queue_len += 1
            slot.rt.queue_cur = slot.queue_len
        self._count_waiter(p, 1)

    def serve_all(self) -> None:
        for slot in self.slots.values():
            if slot.rt.usable:
                self.serve_queue(slot)

    # -- health transitions --------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(active, backup) servers that can take traffic, as haproxy's srv_act /
        srv_bck count them for the state-change lines (DRAIN and MAINT excluded)."""
        act = bck = 0
        for slot in self.slots.values():
            rt = slot.rt
            if rt.admin is AdminState.READY and rt.op is not OpState.STOPPED:
                if rt.backup:
                    bck += 1
                else:
                    act += 1
        return act, bck

    def _requeue(self, slot: Slot) -> int:
        """Waiters for `slot` go back to the backend queue (haproxy's
        pendconn_redistribute), keeping their place in arrival order."""
        moved = [p for p in slot.queue if not p.done]
        for p in moved:
            self.dequeue(p)
            p.done = False
            p.server = None
            self.queue_len += 1
            self._count_waiter(p, 1)
        slot.queue.clear()
        if moved:
            merged = sorted(itertools.chain(moved, (p for p in self.queue if not p.done)),
                            key=lambda p: p.seq)
            self.queue = deque(merged)
            self.rt.queue_cur = self.queue_len
        return len(moved)

    def _emit(self, level: int, msg: str) -> str:
        self.log.send(level, msg)
        _log.warning("%s", msg)
        return msg

    def server_down(self, rt: ServerRuntime, desc: str, info: str = "",
                    duration_ms: int | None = None, code: int | None = None,
                    from_cli: bool = False) -> str:
        """A check (or an operator) took `rt` down; returns the line it logged."""
        slot = self.slots[rt.name]
        self.balancer.set_down(rt.name)
        if slot.ramp is not None:
            slot.ramp.cancel()
            slot.ramp = None
        requeued = self._requeue(slot)
        act, bck = self.counts()
        if from_cli:
            who = "Backup Server" if rt.backup else "Server"
            msg = (f"{who} {self.name}/{rt.name} is DOWN, changed from CLI. {act} active and "
                   f"{bck} backup servers left.{' Running on backup.' if not act and bck else ''}"
                   f" {len(slot.sessions)} sessions active, {requeued} requeued, "
                   f"{slot.queue_len} remaining in queue.")
        else:
            msg = server_down_message(self.name, rt.name, rt.backup, desc, info, duration_ms,
                                      code, act, bck, len(slot.sessions), requeued,
                                      slot.queue_len)
        self._emit(LOG_ALERT, msg)
        if rt.config.options.on_marked_down == "shutdown-sessions":
            for sess in list(slot.sessions):
                sess.kill("D")
        self._after_change()
        return msg

    def admin_changed(self, rt: ServerRuntime, old: AdminState) -> str | None:
        """An operator moved `rt` from `old` to rt.admin (runtime API or stats page);
        updates the balancer and logs haproxy's line, which is returned."""
        slot = self.slots[rt.name]
        new = rt.admin
        if new is old:
            return None
        who = "Backup Server" if rt.backup else "Server"
        name = f"{who} {self.name}/{rt.name}"
        if new is AdminState.READY:
            if rt.op is not OpState.STOPPED:
                self.balancer.set_up(rt.name)
            leaving = "maintenance" if old is AdminState.MAINT else "drain"
            state = "UP/READY" if old is AdminState.MAINT else "UP"
            msg = self._emit(LOG_NOTICE, f"{name} is {state} (leaving forced {leaving}).")
            self.serve_all()
        else:
            self.balancer.set_down(rt.name)
            requeued = self._requeue(slot)
            act, bck = self.counts()
            backup_note = " Running on backup." if not act and bck else ""
            if new is AdminState.MAINT:
                msg = self._emit(LOG_ALERT, (
                    f"{name} is going DOWN for maintenance. {act} active and {bck} backup "
                    f"servers left.{backup_note} {len(slot.sessions)} sessions active, "
                    f"{requeued} requeued, {slot.queue_len} remaining in queue."))
            else:
                msg = self._emit(LOG_NOTICE, (
                    f"{name} enters drain state. {act} active and {bck} backup servers "
                    f"online.{backup_note} {requeued} sessions requeued, {self.queue_len} "
                    f"total in queue."))
        self._after_change()
        return msg

    def server_up(self, rt: ServerRuntime, desc: str, info: str = "",
                  duration_ms: int | None = None, code: int | None = None,
                  from_cli: bool = False) -> str:
        slot = self.slots[rt.name]
        if rt.admin is AdminState.READY:
            self.balancer.set_up(rt.name)
        slowstart = rt.config.options.slowstart or 0
        if slowstart > 0:
            self._ramp(slot, time.monotonic(), slowstart)
        else:
            self.balancer.update_weight(rt.name, rt.uweight * BE_WEIGHT_SCALE)
        act, bck = self.counts()
        if from_cli:
            who = "Backup Server" if rt.backup else "Server"
            msg = (f"{who} {self.name}/{rt.name} is UP, changed from CLI. {act} active and "
                   f"{bck} backup servers online. 0 sessions requeued, {self.queue_len} total "
                   f"in queue.")
        else:
            msg = server_up_message(self.name, rt.name, rt.backup, desc, info, duration_ms,
                                    code, act, bck, 0, self.queue_len)
        self._emit(LOG_NOTICE, msg)
        if not rt.backup and rt.config.options.on_marked_up == "shutdown-backup-sessions":
            for other in self.slots.values():
                if other.rt.backup:
                    for sess in list(other.sessions):
                        sess.kill("D")
        self.serve_all()
        self._after_change()
        return msg

    def _ramp(self, slot: Slot, since: float, slowstart_ms: int) -> None:
        """Raise the weight along the slowstart ramp (health.slowstart_weight), in
        haproxy's 1/16 steps, re-armed until the full weight is reached."""
        rt = slot.rt
        if rt.op is OpState.STOPPED:
            slot.ramp = None
            return
        elapsed = int((time.monotonic() - since) * 1000)
        weight = slowstart_weight(rt.uweight, elapsed, slowstart_ms, scale=BE_WEIGHT_SCALE)
        rt.eweight = max(1, -(-weight // BE_WEIGHT_SCALE)) if weight else 0
        self.balancer.update_weight(rt.name, weight)
        self.serve_queue(slot)
        # haproxy's last 1/16 step already gives the full weight (w = 16 once
        # elapsed >= 15/16 of slowstart): the ramp is over then.
        if elapsed >= slowstart_ms or weight >= rt.uweight * BE_WEIGHT_SCALE:
            slot.ramp = None
            if rt.op is OpState.STARTING:
                rt.op = OpState.RUNNING
            return
        step = max(0.05, slowstart_ms / BE_WEIGHT_SCALE / 1000)
        slot.ramp = asyncio.get_running_loop().call_later(
            step, self._ramp, slot, since, slowstart_ms)

    def _after_change(self) -> None:
        up = self.rt.is_up
        if self._was_up and not up:
            msg = no_server_message(self.name)
            self.log.send(LOG_EMERG, msg)
            _log.error("%s", msg)
        self._was_up = up
        self.rt.last_change = time.monotonic()
        if not up:
            # Waiters cannot be served by anyone now: fail them like haproxy's
            # queue timeout would, but at once.
            for q in (self.queue, *(s.queue for s in self.slots.values())):
                for p in list(q):
                    if not p.done and not p.future.done():
                        p.future.set_exception(_NoServer())
        if self.on_health is not None:
            self.on_health()


class _NoServer(Exception):
    pass


# --------------------------------------------------------------------------
# Frontends and listeners
# --------------------------------------------------------------------------


class RateGate:
    """A rate limit's wait: while `ctr` is at the limit, accepting stops (the
    clients wait in the backlog) and one timer calls `then` once it has dropped."""

    __slots__ = ("timer",)

    def __init__(self) -> None:
        self.timer: asyncio.TimerHandle | None = None

    def closed(self, ctr: FreqCtr, limit: int, then: Callable[[], None]) -> bool:
        delay = ctr.delay_below(limit, _monotonic())
        if delay <= 0.0:
            return False
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(delay, self._open, then)
        return True

    def _open(self, then: Callable[[], None]) -> None:
        self.timer = None
        then()


class Limits:
    """Process-wide accounting: global maxconn, connection and session rates,
    and the listeners they pause."""

    def __init__(self, process: ProcessRuntime) -> None:
        self.process = process
        self.frontends: list[Frontend] = []
        self.seq = itertools.count()
        self.uniq_id = 0  # the next session's number (haproxy's global.req_count)
        self.stopping = False
        self.sessions: set[Session] = set()
        self.conn_gate = RateGate()
        self.sess_gate = RateGate()

    @property
    def full(self) -> bool:
        p = self.process
        return p.maxconn > 0 and p.cur_conns >= p.share(p.maxconn)

    def conn_accepted(self, now: float) -> None:
        """A connection was accepted: ConnRate and MaxConnRate."""
        p = self.process
        r = p.conn_rate.add(now)
        if r > p.max_conn_rate:
            p.max_conn_rate = r

    def session_accepted(self, now: float) -> None:
        """A connection passed the `tcp-request connection` rules and became a
        session: ConnRate and SessRate (and their maxima). haproxy counts the
        session rate only once its accept handler has kept the connection."""
        self.conn_accepted(now)
        p = self.process
        r = p.sess_rate.add(now)
        if r > p.max_sess_rate:
            p.max_sess_rate = r

    def rate_limited(self) -> bool:
        """At `maxsessrate` / `set rate-limit sessions global` or `maxconnrate` /
        `set rate-limit connections global` (this worker's part of each), as
        haproxy's listener_accept() checks both before accepting."""
        p = self.process
        lim = p.rate_limits
        if not lim:
            return False
        limit = lim.get("sessions", 0)
        if limit > 0 and self.sess_gate.closed(p.sess_rate, p.server_share(limit),
                                               self.resume_paused):
            return True
        limit = lim.get("connections", 0)
        return limit > 0 and self.conn_gate.closed(p.conn_rate, p.server_share(limit),
                                                   self.resume_paused)

    def resume_paused(self) -> None:
        """Paused frontends that may accept again do (a session ended, a rate dropped)."""
        if not self.stopping:
            for fe in self.frontends:
                if fe.paused and fe.can_accept():
                    fe.resume()

    def session_ended(self) -> None:
        self.process.cur_conns -= 1
        self.resume_paused()


class Listener:
    """One listening socket, accepted from by the loop's Reactor. Reaching
    maxconn stops accepting while the socket keeps listening, so further
    connections wait in the kernel backlog as in haproxy; an accept error
    (EMFILE...) pauses accepting for a moment instead of spinning."""

    def __init__(self, sock: socket.socket, frontend: Frontend, key: str,
                 backlog: int = 1024, maxaccept: int = DEFAULT_MAXACCEPT) -> None:
        self.sock = sock
        self.frontend = frontend
        self.key = key
        self.backlog = backlog
        self.maxaccept = maxaccept
        self.acceptor: Acceptor | None = None
        self.want = False
        self._retry: asyncio.TimerHandle | None = None

    @property
    def reading(self) -> bool:
        return self.acceptor is not None and self.acceptor.active

    def start(self) -> None:
        self.want = True
        self._sync()

    def pause(self) -> None:
        self.want = False
        self._sync()

    def _sync(self) -> None:
        acc = self.acceptor
        if acc is None:
            if not self.want:
                return
            fe = self.frontend
            loop = fe.bind_loop(asyncio.get_running_loop())
            acc = self.acceptor = Acceptor(reactor_of(loop), self.sock, fe.accepted,
                                           self._failed, self.maxaccept)
        if self.want and self._retry is None:
            acc.start()
        else:
            acc.pause()

    def _failed(self, exc: OSError) -> None:
        _log.warning("%s: cannot accept on %s: %s; retrying", self.frontend.name, self.key,
                     exc.strerror)
        loop = self.frontend.loop
        if loop is not None and self._retry is None:
            self._retry = loop.call_later(ACCEPT_ERROR_PAUSE_S, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self._sync()

    def close(self) -> None:
        self.pause()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None


# haproxy 2.6's answer when an http frontend has nowhere to send a request.
NO_SERVER_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 107\r\n"
                 b"cache-control: no-cache\r\ncontent-type: text/html\r\n"
                 b"connection: close\r\n\r\n<html><body><h1>503 Service Unavailable</h1>\n"
                 b"No server is available to handle this request.\n</body></html>\n")


class Frontend:
    def __init__(self, rt: FrontendRuntime, limits: Limits, backends: dict[str, Backend],
                 log: ProxyLog) -> None:
        self.rt = rt
        self.cfg = rt.config
        self.limits = limits
        self.log = log
        self.listeners: list[Listener] = []
        self.paused = False
        self.routes: list[Route] = []
        self.default: Backend | None = None
        # `log-format`, else `option tcplog`/`httplog` (which keeplb logs in
        # tcplog's format); the config keeps only the last of them.
        self.log_format = session_renderer(self.cfg, log.pid) if log.enabled else None
        fmt = self.log_format.format if self.log_format is not None else None
        # what a format needs the relay to note: the address the client reached,
        # the source address of the server connection (one syscall each)
        self.log_dst = fmt is not None and fmt.uses("fi", "fp")
        self.log_source = fmt is not None and fmt.uses("bi", "bp")
        self.log_server = fmt is not None and fmt.uses("si", "sp")
        self.tcplog = (self.log_format is not None or self.cfg.option("tcplog")
                       or self.cfg.option("httplog"))
        self.connect_log = self.log.enabled and not self.tcplog
        self.dontlognull = self.cfg.option("dontlognull")
        self.rate_limit = self.cfg.rate_limit_sessions or 0  # `rate-limit sessions`
        self.sess_gate = RateGate()
        self.dontlog_normal = self.cfg.option("dontlog-normal")
        self.log_separate_errors = self.cfg.option("log-separate-errors")
        # Socket options of accepted TCP connections, as haproxy's session_accept_fd():
        # SO_KEEPALIVE, and SO_LINGER 0 s (every close of the client's socket is a RST).
        self.clitcpka = tcp_keepalive(self.cfg, "clitcpka")
        self.nolinger = self.cfg.option("nolinger")
        self.sockopts = self.clitcpka or self.nolinger
        self.splice_request, self.splice_response = splice_options(self.cfg)
        t = self.cfg.timeouts
        self.timeout_client = t.get("client")
        self.timeout_client_fin = t.get("client-fin")
        for ub in self.cfg.use_backends:
            # None: keeplb cannot evaluate the condition, or the name is dynamic
            # ('%[...]'); the config check has warned that the rule is ignored.
            compiled = compile_condition(ub.condition, self.cfg.acls)
            if compiled is not None and ub.backend in backends:
                self.routes.append(Route(ub.backend, compiled[0], compiled[1]))
        # `tcp-request connection` rules; None (no rule): accepted() tests only that
        self.conn_rules: ConnectionRules | None = compile_rules(self.cfg, compile_condition)
        # `tcp-request content` rules (and the use_backend rules as evaluated after
        # them); None (no rule): Session.start() tests only that
        self.content: ContentRules | None = compile_content_rules(self.cfg, _compile_expr,
                                                                  list(backends))
        if self.cfg.default_backend and self.cfg.default_backend in backends:
            self.default = backends[self.cfg.default_backend]
        elif self.cfg.kind.has_backend and self.cfg.name in backends:
            self.default = backends[self.cfg.name]
        self.backends = backends
        self.stats_page = self.cfg.stats if self.cfg.stats.enabled else None
        self.metrics_rules = [r for r in self.cfg.rules_of("http-request")
                              if r.action == "use-service" and r.args[:1] == ("prometheus-exporter",)]
        # haproxy answers these itself in an http frontend; keeplb's relay is TCP,
        # so such a frontend reads one request and answers it here.
        self.service = self.cfg.mode is Mode.HTTP and bool(self.stats_page or self.metrics_rules)
        self.runtime: ProcessRuntime | None = None
        self.control: RuntimeControl | None = None
        # Set by the first listener that opens; each asyncio.get_running_loop()
        # costs a getpid() syscall on Python 3.11, several per session otherwise.
        self.loop: asyncio.AbstractEventLoop | None = None
        self.reactor: Reactor | None = None
        self.wheel = TimerWheel(None)
        # Inactivity limits per backend, see idle_table().
        self._idle_tables: dict[Backend, IdleTable] = {}

    @property
    def name(self) -> str:
        return self.rt.name

    def answer(self, request: bytes, client: str) -> bytes | None:
        """The response of a stats / metrics frontend, or None to relay the request."""
        from keeplb.lb import metrics, stats

        head = request.split(b"\r\n", 1)[0].split()
        path = head[1].decode("latin-1").split("?", 1)[0] if len(head) >= 2 else ""
        for rule in self.metrics_rules:
            if http_condition_matches(rule.condition, self.cfg.acls, path):
                return metrics.handle_metrics_http(request, self.runtime,
                                                   metrics.read_vrrp_status())
        if self.stats_page is not None and (self.default is None or
                                            stats.stats_uri_matches(self.stats_page, path)):
            return stats.handle_stats_http(request, self.stats_page, self.runtime or
                                           self.limits.process, self.control, client=client)
        if self.default is None and not self.routes:
            return NO_SERVER_503
        return None

    def can_accept(self) -> bool:
        if self.rt.disabled or self.rt.stopped:
            return False  # `disable frontend` / `shutdown frontend` from the runtime API
        mc = self.rt.maxconn
        return (not (mc > 0 and self.rt.counters.cur_sess >= self.limits.process.share(mc))
                and not self.limits.full and not self.limits.rate_limited()
                and not (self.rate_limit > 0 and self.sess_gate.closed(
                    self.rt.sess_rate, self.limits.process.server_share(self.rate_limit),
                    self.limits.resume_paused)))

    def pause(self) -> None:
        self.paused = True
        self.rt.paused = True
        for li in self.listeners:
            li.pause()

    def resume(self) -> None:
        self.paused = False
        self.rt.paused = False
        for li in self.listeners:
            li.start()

    def route(self, src: tuple[str, int], dst: tuple[str, int]) -> Backend | None:
        for r in self.routes:
            if r.matches(src, dst):
                return self.backends[r.backend]
        return self.default

    def idle_table(self, be: Backend | None) -> IdleTable:
        """The inactivity limits of a session of this frontend sent to `be`,
        computed once per pair: [data phase][half closed] -> (seconds, side)."""
        table = self._idle_tables.get(be) if be is not None else None
        if table is None:
            table = IdleTable([_idle_limit(self, be, data, half)
                               for data in (False, True) for half in (False, True)])
            if be is not None:
                self._idle_tables[be] = table
        return table

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
        """Remember the loop (and its Reactor) the listeners accept on."""
        if self.loop is not loop:
            self.loop = loop
            self.reactor = reactor_of(loop)
            self.wheel = TimerWheel(loop)
        return loop

    def accepted(self, fd: int, addr: object) -> None:
        """The Reactor accepted a client connection on one of our listeners."""
        local: tuple[str, int] | None = None
        if self.conn_rules is not None or self.log_dst:  # %fi/%fp: read while open
            local = address(fdsock.getsockname(fd), ("", 0))
            if self.conn_rules is not None and self._rejected(fd, addr, local):
                return
        if self.sockopts and isinstance(addr, tuple):  # TCP only, after the rules, as haproxy
            if self.clitcpka:
                fdsock.set_keepalive(fd)
            if self.nolinger:
                fdsock.set_nolinger(fd)
        process = self.limits.process
        process.cur_conns += 1
        process.cum_conns += 1
        now = _monotonic()
        self.limits.session_accepted(now)
        rt = self.rt
        rt.counters.session_started()
        r = rt.sess_rate.add(now)
        if r > rt.counters.conn_rate_max:
            rt.counters.conn_rate_max = r
        loop = self.loop
        assert loop is not None and self.reactor is not None
        sess = Session(self, loop)
        sess._dst = local  # read once for the rules: Session.dst needs no second call
        self.limits.sessions.add(sess)
        if not self.can_accept():
            self.pause()  # the rest waits in the kernel backlog
        tr = Stream(self.reactor, fd, sess.client, addr)
        sess.client.connection_made(tr)
        tr.read_now()
        tr.start()
        sess.start(tr)

    def _rejected(self, fd: int, addr: object, local: tuple[str, int]) -> bool:
        """The `tcp-request connection` rules on a connection just accepted: True
        when they reject it. As in haproxy (tcp_exec_l4_rules), a rejected
        connection is reset (one RST), counted in the process's connections and
        the frontend's denied connections (dcon), never becomes a session and is
        not logged."""
        rules = self.conn_rules
        assert rules is not None
        if rules.decide(address(addr, ("unix", 0)), local):
            return False
        self.limits.process.cum_conns += 1
        self.limits.conn_accepted(_monotonic())  # haproxy counts the rate before the rules
        self.rt.counters.denied_conn += 1
        fdsock.reset(fd)
        return True


# --------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------


class ClientSide(StreamProtocol):
    __slots__ = ("s", "peer", "buf", "buffered", "transport")
    __deletable__ = ("s",)  # for mypyc: connection_lost() drops it

    def __init__(self, s: Session) -> None:
        self.s = s
        self.peer: Stream | None = None  # the server transport once connected
        self.buf: list[bytes] = []
        self.buffered = 0
        self.transport: Stream | None = None

    def connection_made(self, transport: Stream) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: memoryview) -> None:
        self.data_moved(len(data))
        s = self.s
        if self.peer is not None:
            self.peer.write(data)
        else:
            self.buf.append(bytes(data))  # data is the Reactor's buffer: copy
            self.buffered += len(data)
            if s.wake is not None:
                s.wake.set()
            if self.buffered >= PRECONNECT_BUFFER and self.transport is not None:
                self.transport.pause_reading()

    def data_moved(self, n: int) -> None:
        s = self.s
        s.bytes_in += n
        for c in s.counters:  # live, so that long sessions show in the stats
            c.bytes_in += n
        s.last = s.loop_time()

    def eof_received(self) -> bool:
        self.s.on_eof(client=True)
        if self.s.wake is not None:
            self.s.wake.set()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.on_lost(client=True, exc=exc)
        # The last call a protocol gets: breaking the session <-> client cycle
        # lets reference counting free the session (no GC pass per connection).
        del self.s

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.s.server_eof:
            self.peer.resume_reading()


class ServerSide(StreamProtocol):
    __slots__ = ("s", "peer", "transport")

    def __init__(self, s: Session, peer: Stream) -> None:
        self.s = s
        self.peer = peer  # the client transport
        self.transport: Stream | None = None

    def connection_made(self, transport: Stream) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def data_received(self, data: memoryview) -> None:
        self.data_moved(len(data))
        self.peer.write(data)

    def data_moved(self, n: int) -> None:
        s = self.s
        s.bytes_out += n
        for c in s.counters:
            c.bytes_out += n
        s.last = s.loop_time()

    def eof_received(self) -> bool:
        self.s.on_eof(client=False)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.on_lost(client=False, exc=exc)

    def pause_writing(self) -> None:
        self.peer.pause_reading()

    def resume_writing(self) -> None:
        if not self.s.client_eof:
            self.peer.resume_reading()


def _unsent(tr: Stream | None) -> int:
    """Bytes written to `tr` that the peer has not taken yet: the transport's
    buffer plus the kernel's send queue (SIOCOUTQ), so that a slow reader
    draining a large socket buffer counts as activity."""
    if tr is None:
        return 0
    n = tr.get_write_buffer_size()
    if not tr.closed:
        try:
            raw = fcntl.ioctl(tr.fd, termios.TIOCOUTQ, b"\0\0\0\0")
            n += int.from_bytes(raw, sys.byteorder)
        except (OSError, ValueError):
            pass
    return n


class Timed(Protocol):
    """What the TimerWheel needs of a session."""

    timer: int

    def _on_timer(self) -> None: ...


class TimerWheel:
    """Session timeouts grouped in TICK-wide slots, one loop timer per slot in
    use, as haproxy keeps one timer tree per thread instead of a kernel or
    loop timer per connection: arming, moving and cancelling a session's
    deadline are set operations, and a deadline fires at most one TICK late.
    """

    TICKS_PER_S: Final = 100

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.slots: dict[int, set[Timed]] = {}

    def add(self, sess: Timed, at: float) -> int:
        """File `sess` to be called (sess._on_timer) at `at` or up to a tick
        later; returns the key that remove() needs."""
        key = int(at * self.TICKS_PER_S) + 1
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = set()
            assert self.loop is not None
            self.loop.call_at(key / self.TICKS_PER_S, self._fire, key)
        slot.add(sess)
        return key

    def remove(self, sess: Timed, key: int) -> None:
        slot = self.slots.get(key)
        if slot is not None:
            slot.discard(sess)

    def _fire(self, key: int) -> None:
        for sess in self.slots.pop(key, ()):
            if sess.timer == key:  # not moved or cancelled by another's callback
                sess._on_timer()


class IdleTable:
    """(seconds, side) of the inactivity timeout in the four states of a
    session: data phase or not, one side half closed or not. Fields, not
    nested tuples: compiled, reading one is a load, not a boxed lookup."""

    __slots__ = ("s", "side")

    def __init__(self, limits: Sequence[tuple[float, str]]) -> None:
        # index: 2 * data phase + half closed
        self.s: list[float] = [sec for sec, _ in limits]
        self.side: list[str] = [side for _, side in limits]


_NO_IDLE: Final = IdleTable([(0.0, "c")] * 4)
_NEVER: Final = float("inf")


def _idle_limit(fe: Frontend, be: Backend | None, data: bool, half: bool) -> tuple[float, str]:
    """(seconds, side) of the inactivity timeout of a session in the data phase
    or not, with one side half closed or not; 0 seconds: none applies.
    haproxy: `timeout tunnel` replaces both in the data phase; the *-fin
    timeouts replace client/server once a side has shut."""
    if data and be is not None and be.timeout_tunnel:
        return be.timeout_tunnel / 1000, "c"
    cands: list[tuple[int, str]] = []
    ct = fe.timeout_client_fin if half and fe.timeout_client_fin else fe.timeout_client
    if ct:
        cands.append((ct, "c"))
    if data and be is not None:
        st = be.timeout_server_fin if half and be.timeout_server_fin else be.timeout_server
        if st:
            cands.append((st, "s"))
    if not cands:
        return 0.0, "c"
    ms, side = min(cands)
    return ms / 1000, side


class Session:
    """One client connection and, once assigned, its server connection."""

    # Slots: thousands of idle sessions must stay small, and the set-up path
    # writes all of these once per connection.
    __slots__ = ("loop", "loop_time", "fe", "t0", "wall0", "last", "src", "_dst", "client",
                 "server_tr", "backend", "slot", "task", "timer", "timer_at", "bytes_in",
                 "bytes_out", "counters", "client_eof", "server_eof", "client_lost",
                 "server_lost", "phase", "term", "t_assigned", "t_connected", "retries",
                 "redispatched", "srv_queue", "be_queue", "finished", "server_name",
                 "t_connect_ms", "pending", "wake", "wbuf", "idle_s", "idle",
                 "connect_deadline", "key", "sticky", "avoid", "stream", "retry", "t_start",
                 "uniq_id", "source")

    def __init__(self, fe: Frontend, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loop_time = loop.time
        self.fe = fe
        self.t0 = self.last = loop.time()
        self.wall0 = _wall_clock()
        self.src: tuple[str, int] = ("unix", 0)
        self._dst: tuple[str, int] | None = None
        self.client = ClientSide(self)
        self.server_tr: Stream | None = None
        self.backend: Backend | None = None
        self.slot: Slot | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer = 0  # TimerWheel key while a timeout is armed
        self.timer_at = _NEVER  # when it is due
        self.bytes_in = 0
        self.bytes_out = 0
        # frontend, backend and server Counters once connected; bytes before that
        # are added to them at connect time (or to the frontend's at the end).
        self.counters: tuple[Counters, ...] = ()
        self.client_eof = False
        self.server_eof = False
        self.client_lost = False
        self.server_lost = False
        self.phase = "R"  # R: routing, Q: queue, C: connect, D: data
        self.term = "-"  # first %ts character: who ended it
        self.t_assigned = -1.0
        self.t_connected = -1.0
        self.retries = 0
        self.redispatched = False
        self.srv_queue = 0
        self.be_queue = 0
        self.finished = False
        self.server_name = "<NOSRV>"
        self.t_connect_ms = -1
        self.pending: Pending | None = None
        self.wake: asyncio.Event | None = None
        # write buffer sizes at the last idle-timer check
        self.wbuf: tuple[int, int] | None = None
        self.idle_s = 0.0  # the inactivity limit the timer was armed with
        self.idle: IdleTable = _NO_IDLE
        # While connecting, the session timer also stands for `timeout connect`
        # (one timer per session instead of an asyncio.timeout per attempt).
        self.connect_deadline = _NEVER
        self.key: bytes | None = None  # the client address, for hashing balancers
        self.sticky: Slot | None = None  # the server a retry goes back to
        self.avoid: str | None = None  # the server a redispatch avoids
        self.stream: Stream | None = None  # the server connection being made
        self.retry: asyncio.TimerHandle | None = None  # turn-around before a retry
        self.t_start = 0.0  # when the current connect attempt began
        limits = fe.limits
        self.uniq_id = limits.uniq_id  # %rt: haproxy's stream number, from 0
        limits.uniq_id += 1
        self.source: tuple[str, int] | None = None  # %bi/%bp, noted when a format logs them

    @property
    def dst(self) -> tuple[str, int]:
        """The local address the client connected to; read only when a rule or a
        server without a port needs it (one getsockname() saved per session)."""
        if self._dst is None:
            tr = self.client.transport
            local = tr.get_extra_info("sockname") if tr is not None else None
            try:
                self._dst = (str(local[0]), int(local[1]))  # type: ignore[index]
            except (IndexError, TypeError, ValueError):
                self._dst = ("", 0)
        return self._dst

    # -- establishment -----------------------------------------------------

    def start(self, transport: Stream) -> None:
        """The client connection is accepted: route, then pick or queue and connect."""
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.src = (str(peer[0]), int(peer[1]))
        fe = self.fe
        if fe.connect_log:
            # haproxy's line at accept time when no log format is set (no tcplog).
            mode = "HTTP" if fe.cfg.mode is Mode.HTTP else "TCP"
            fe.log.send(LOG_INFO, f"Connect from {self.src[0]}:{self.src[1]} to "
                                  f"{self.dst[0]}:{self.dst[1]} ({fe.name}/{mode})")
        if fe.service:
            self.task = self.loop.create_task(self._serve())
        elif fe.content is not None:
            self.task = self.loop.create_task(self._inspect(fe.content))
        else:
            self._route()

    async def _serve(self) -> None:
        try:
            if await self._serve_http():
                return
        except asyncio.CancelledError:
            self._finish()
            return
        self.task = None
        self._route()

    async def _inspect(self, content: ContentRules) -> None:
        """haproxy's tcp_inspect_request on a frontend with `tcp-request content`
        rules: no server is chosen nor connected while a rule waits for data
        (ClientSide keeps what arrives, in order, and _connect() sends it
        first). The rules run again on each arrival until they decide, or, once
        `tcp-request inspect-delay` has expired (or none is set), the client has
        shut its side or PRECONNECT_BUFFER is full, one last time with what is
        there. Then a reject, or use_backend on the same data."""
        c = self.client
        loop_time = self.loop_time
        expire = loop_time() + content.inspect_delay
        tc = self.fe.timeout_client
        self.wake = wake = asyncio.Event()
        data = b""
        try:
            for _ in range(PRECONNECT_BUFFER + 2):  # each turn needs new bytes, an end or time
                if len(c.buf) > 1:
                    c.buf = [b"".join(c.buf)]
                data = c.buf[0] if c.buf else b""
                now = loop_time()
                final = (content.inspect_delay <= 0 or now >= expire or self.client_eof
                         or c.buffered >= PRECONNECT_BUFFER)
                verdict = content.decide(self.src, self.dst, data, final)
                if verdict is not None:
                    break
                # the client timeout runs too, from the last byte read
                idle_end = self.last + tc / 1000 if tc else expire
                if idle_end <= now:
                    self.term = "c"  # logged 'cR', as haproxy
                    self.task = None  # on_lost() finishes the session
                    self._abort()
                    return
                wake.clear()
                try:
                    async with asyncio.timeout(min(expire, idle_end) - now):
                        await wake.wait()
                except TimeoutError:
                    pass
            else:
                verdict = content.decide(self.src, self.dst, data, True)
        except asyncio.CancelledError:
            self._finish()  # the client went away
            return
        finally:
            self.wake = None
        self.task = None
        if not verdict:
            # As haproxy: the frontend's denied requests (dreq), the client's
            # connection reset, the session logged with 'PR'.
            self.term = "P"
            self.fe.rt.counters.denied_req += 1
            ctr = c.transport
            if ctr is not None and not self.client_lost:
                fdsock.set_nolinger(ctr.fd)
            self._close_client()
            return
        fe = self.fe
        name = content.route(self.src, self.dst, data)
        self._assign(fe.backends[name] if name is not None else fe.default)

    def _route(self) -> None:
        fe = self.fe
        self._assign(fe.route(self.src, self.dst) if fe.routes else fe.default)

    def _assign(self, be: Backend | None) -> None:
        """The backend is chosen (None: none, the request is denied): pick a server."""
        fe = self.fe
        if be is None:
            self.term = "R"
            self.fe.rt.counters.denied_req += 1
            self._close_client()
            return
        self.backend = be
        be.sessions += 1
        be.rt.counters.session_started()
        self.idle = fe.idle_table(be)
        # Armed no later than the connect timeout that follows at once in the
        # common case, so that connecting needs no timer of its own.
        self.connect_deadline = self.last + be.timeout_connect
        self._arm_idle()
        if be.needs_key:
            try:
                ip = self.src[0]
                self.key = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                                            ip)
            except (OSError, ValueError):
                pass  # a UNIX socket client: balancers fall back to round-robin
        self._attempt()

    # Establishing is a chain of callbacks (pick, connect, retry) without a
    # task; only waiting in a queue runs a coroutine. A retry goes to the same
    # server; with `option redispatch` the last retry may go to another one
    # (haproxy's default redispatch interval -1).

    def _attempt(self) -> None:
        """Assign a server (or queue for one) and connect to it."""
        be = self.backend
        assert be is not None
        sticky = self.sticky
        if sticky is not None and sticky.rt.usable:
            be.take(sticky, self, force=True)
            self._connect(sticky)
            return
        self.phase = "Q"
        slot, must_queue = be.pick(self.key, self.avoid)
        if slot is not None and not must_queue:
            if be.take(slot, self):  # the common case
                self._connect(slot)
                return
            must_queue = True  # another worker took its last free slot meanwhile
        if must_queue:
            self.task = self.loop.create_task(self._queued(be, slot))
        else:
            self.phase = "C"
            self._no_server()

    def _no_server(self) -> None:
        if self.term == "-":
            self.term = "S"
        self._close_client()

    async def _queued(self, be: Backend, slot: Slot | None) -> None:
        try:
            slot = await self._wait_in_queue(be, slot)
        except asyncio.CancelledError:
            # The client went away while we were queueing.
            if self.pending is not None:
                be.dequeue(self.pending)
            self._finish()
            return
        except _NoServer:
            self._no_server()
            return
        self.task = None
        try:
            self._connect(slot)
        except Exception:
            # A bug must cost one session, never a leaked slot or the process.
            _log.exception("%s/%s: internal error on a session from %s:%d", self.fe.name,
                           be.name, *self.src)
            self.term = "I"
            self._abort()
            self._finish_if_detached()

    def _connect(self, slot: Slot) -> None:
        be = self.backend
        assert be is not None
        self.slot = slot
        self.server_name = slot.name
        now = self.loop_time()
        if self.t_assigned < 0:
            self.t_assigned = now
        self.phase = "C"
        self.t_start = now
        self.connect_deadline = now + be.timeout_connect
        if self.timer_at > self.connect_deadline:
            self._arm_idle()
        rt = slot.rt
        try:
            port = 0
            if rt.local == "unix":
                family, host = AF_UNIX, rt.host
            elif rt.local == "abns":
                family, host = AF_UNIX, "\0" + rt.host
            else:
                family = AF_INET6 if ":" in rt.host else AF_INET
                host, port = rt.host, self._server_port(slot)
            assert self.fe.reactor is not None
            c = self.client
            early = b"".join(c.buf) if c.buf and not self.client_eof else b""
            st, sent = open_connection(self.fe.reactor, family, host, port, self._on_connect,
                                       early)
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            self._connect_failed(exc, timed_out=False)
            return
        if self.fe.log_source:
            self.source = address(fdsock.getsockname(st.fd), ("", -1))
        if sent < 0:
            self.stream = st  # _on_connect() follows
            return
        # Connected at once, and `sent` bytes of the client's are on their way.
        c.buf = [early[sent:]] if sent < len(early) else []
        self._on_connect(st, None)

    def _on_connect(self, stream: Stream, exc: OSError | None) -> None:
        self.stream = None
        if exc is not None:
            self._connect_failed(exc, timed_out=False)
            return
        self.connect_deadline = _NEVER
        self.t_connected = self.loop_time()
        self.t_connect_ms = int((self.t_connected - self.t_start) * 1000)
        proto = ServerSide(self, self._client_transport())
        stream.protocol = proto
        proto.connection_made(stream)
        self._connected(stream)

    def _connect_failed(self, exc: Exception, timed_out: bool) -> None:
        self.connect_deadline = _NEVER
        be, slot = self.backend, self.slot
        assert be is not None and slot is not None
        slot.rt.counters.errors_conn += 1
        be.rt.counters.errors_conn += 1
        be.release(slot, self)
        self.slot = None
        if self.client_lost:
            self._finish()
            return
        if self.retries >= be.retries:
            self.term = "s" if timed_out else "S"
            self._close_client()
            return
        self.retries += 1
        slot.rt.counters.retries += 1
        be.rt.counters.retries += 1
        self.sticky = slot
        if be.redispatch and self.retries == be.retries:
            self.redispatched = True
            slot.rt.counters.redispatches += 1
            be.rt.counters.redispatches += 1
            self.sticky, self.avoid = None, slot.name
        elif not timed_out:
            # haproxy's turn-around timer before retrying a refused connection.
            self.retry = self.loop.call_later(min(be.timeout_connect, 1.0), self._retry)
            return
        self._attempt()

    def _retry(self) -> None:
        self.retry = None
        if not self.finished and not self.client_lost:
            self._attempt()

    def _stop_establishing(self) -> bool:
        """Drop a connect in progress or a pending retry; True if there was one."""
        if self.stream is not None:
            st, self.stream = self.stream, None
            st.cancel_connect()
            return True
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
            return True
        return False

    async def _wait_in_queue(self, be: Backend, slot: Slot | None) -> Slot:
        """A server slot after waiting in a queue; raises _NoServer. `slot` is the
        full server be.pick() answered, or None."""
        target = slot if (be.deterministic and slot is not None) else None
        if target is not None and target.queue_full():
            if not be.redispatch:
                self.term = "s"
                raise _NoServer()
            target = None  # haproxy lets a redispatchable connection wait anywhere
        self.pending = be.enqueue(self, target, next(self.fe.limits.seq))
        # %sq/%bq: the queue length with this session in it (haproxy logs 0/1 for
        # the only waiter of a backend queue).
        self.srv_queue = target.queue_len if target is not None else 0
        self.be_queue = be.queue_len if target is None else 0
        pending = self.pending
        be.recheck(target)
        try:
            async with asyncio.timeout(be.timeout_queue):
                return await pending.future
        except BaseException as exc:
            be.dequeue(pending)
            fut = pending.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # A slot was handed over just as we timed out or were cancelled:
                # keep it on the session so that _finish() gives it back.
                self.slot = fut.result()
                if isinstance(exc, TimeoutError):
                    return self.slot
            elif not fut.done():
                fut.cancel()
            if isinstance(exc, TimeoutError):
                self.term = "s"
                raise _NoServer() from None
            raise
        finally:
            self.pending = None

    def _finish_if_detached(self) -> None:
        if self.client.transport is None or self.client_lost:
            if self.server_tr is None or self.server_lost:
                self._finish()

    async def _serve_http(self) -> bool:
        """Read one request (head and Content-Length body, at most 64 kB) and answer
        it when a stats / metrics rule wants it; False: relay it as usual."""
        c = self.client
        self.wake = asyncio.Event()
        limit = (self.fe.timeout_client or 10000) / 1000
        request = b""
        try:
            async with asyncio.timeout(limit):
                while True:
                    request = b"".join(c.buf)
                    head, sep, body = request.partition(b"\r\n\r\n")
                    if sep:
                        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                        if len(body) >= (int(m.group(1)) if m else 0):
                            break
                    if self.client_eof or len(request) >= PRECONNECT_BUFFER:
                        break
                    self.wake.clear()
                    await self.wake.wait()
        except TimeoutError:
            self.term = "c"
            self.phase = "R"
            self._abort()
            return True
        finally:
            self.wake = None
        response = self.fe.answer(request, self.src[0])
        if response is None:
            return False
        self.bytes_out += len(response)
        tr = self._client_transport()
        if not tr.is_closing():
            tr.write(response)
        self.term, self.phase = "-", "-"
        self._close_client()
        return True

    def _server_port(self, slot: Slot) -> int:
        """A server without a port, or with '+N'/'-N', follows the port the client hit."""
        port = slot.rt.port
        if port is None:
            return self.dst[1]
        if slot.rt.config.address.port_offset:
            return self.dst[1] + port
        return port

    def _client_transport(self) -> Stream:
        tr = self.client.transport
        assert tr is not None
        return tr

    def _connected(self, transport: Stream) -> None:
        self.phase = "D"
        self.server_tr = transport
        be = self.backend
        if be is not None and be.srvtcpka and self.slot is not None and not self.slot.rt.local:
            fdsock.set_keepalive(transport.fd)
        if self.client_lost:
            self._reset_server_if_nolinger(transport)
            transport.close()
            return
        c = self.client
        if c.buf:
            transport.writelines(c.buf)
            c.buf = []
        c.peer = transport
        if self.backend is not None and self.slot is not None:
            self.counters = (self.fe.rt.counters, self.backend.rt.counters,
                             self.slot.rt.counters)
            for k in self.counters:
                k.bytes_in += self.bytes_in
                k.bytes_out += self.bytes_out
        ctr = self._client_transport()
        # `option splice-*`: the direction moves on to splice(2) once it carries
        # bulk (reactor.py). Off by default, as in haproxy: on loopback here it
        # was slower than copying (bench/lbbench.py, see the README).
        fe, be = self.fe, self.backend
        if fe.splice_request or (be is not None and be.splice_request):
            ctr.splice_to = transport
        if fe.splice_response or (be is not None and be.splice_response):
            transport.splice_to = ctr
        if c.buffered >= PRECONNECT_BUFFER and not self.client_eof:
            ctr.resume_reading()
        c.buffered = 0
        if self.client_eof:
            self._shut_server(transport)
            if self.server_eof:
                self._close_both()
        self.last = self.loop_time()
        self._rearm_if_shorter()

    # -- timeouts ----------------------------------------------------------

    def _limit_index(self) -> int:
        """Where the inactivity timeout that applies now is in self.idle."""
        return (2 if self.phase == "D" else 0) + (1 if self.client_eof or self.server_eof else 0)

    def _arm_idle(self) -> None:
        if self.timer:
            self.fe.wheel.remove(self, self.timer)
            self.timer = 0
        limit = self.idle_s = self.idle.s[self._limit_index()]
        at = self.last + limit if limit > 0 else _NEVER
        self._schedule(min(at, self.connect_deadline))

    def _schedule(self, at: float) -> None:
        self.timer_at = at
        if at < _NEVER:
            self.timer = self.fe.wheel.add(self, at)

    def _writes_progressed(self) -> bool:
        """True when a write buffer shrank since the last look (checked only when
        the idle timer expires, so the hot path pays nothing)."""
        sizes = (_unsent(self.client.transport), _unsent(self.server_tr))
        before, self.wbuf = self.wbuf, sizes
        if before is None:
            return any(sizes)  # no baseline yet: one more period to measure
        return any(0 < b and n < b for n, b in zip(sizes, before, strict=True))

    def _rearm_if_shorter(self) -> None:
        """The timer fires at the old deadline and re-arms itself lazily if time
        is left; only a shorter limit (server, tunnel, *-fin) needs a new timer."""
        limit = self.idle.s[self._limit_index()]
        if not self.timer or (limit > 0 and limit < self.idle_s) or self.idle_s <= 0:
            self._arm_idle()

    def _on_timer(self) -> None:
        """Called by the TimerWheel at (or a tick after) timer_at."""
        self.timer = 0
        self.timer_at = _NEVER
        if self.finished:
            return
        now = self.loop_time()
        if self.phase == "C" and now >= self.connect_deadline and self.stream is not None:
            st, self.stream = self.stream, None
            st.cancel_connect()
            self._connect_failed(TimeoutError(), timed_out=True)
            return
        if self.connect_deadline <= now:
            self.connect_deadline = _NEVER  # the early arming of run(), not connecting
        i = self._limit_index()
        limit, side = self.idle.s[i], self.idle.side[i]
        if limit <= 0:
            self._schedule(self.connect_deadline)
            return
        deadline = self.last + limit
        if now >= deadline and self._writes_progressed():
            # A slow reader draining what keeplb holds for it is not idle.
            self.last = now
            deadline = now + limit
        if now < deadline:
            self._schedule(min(deadline, self.connect_deadline))
            return
        if self.phase != "D":
            # Queue and connect have their own timeouts; the client timeout still
            # ends a session whose client stays silent that long.
            if self.phase in ("Q", "C") and side == "c":
                self.term = "c"
                self._abort()
            return
        self.term = side
        self._abort()

    # -- ending --------------------------------------------------------------

    def on_eof(self, client: bool) -> None:
        # Once both sides have shut, close() sends the last FIN: no shutdown() first.
        if client:
            self.client_eof = True
            if not self.server_eof and self.server_tr is not None \
                    and not self.server_tr.is_closing():
                self._shut_server(self.server_tr)
        else:
            self.server_eof = True
            ctr = self.client.transport
            if not self.client_eof and ctr is not None and not ctr.is_closing():
                ctr.write_eof()
        if self.client_eof and self.server_eof:
            self._close_both()
        elif self.timer:
            self._rearm_if_shorter()  # client-fin / server-fin may apply now

    def on_lost(self, client: bool, exc: Exception | None) -> None:
        if client:
            self.client_lost = True
            if self.term == "-" and (exc is not None or not self.client_eof):
                self.term = "C"
                if self.backend is not None:
                    self.backend.rt.counters.cli_aborts += 1
            if self.server_tr is None:
                if self.task is not None and not self.task.done():
                    self.task.cancel()  # its coroutine finishes the session
                    return
                self._stop_establishing()
                self._finish()
                return
            if not self.server_tr.is_closing():
                self._reset_server_if_nolinger(self.server_tr)
                self.server_tr.close()
        else:
            self.server_lost = True
            if self.term == "-" and (exc is not None or not self.server_eof):
                self.term = "S"
                if self.backend is not None:
                    self.backend.rt.counters.srv_aborts += 1
            ctr = self.client.transport
            if ctr is not None and not ctr.is_closing():
                ctr.close()
        if self.client_lost and (self.server_lost or self.server_tr is None):
            self._finish()

    def kill(self, who: str) -> None:
        """End the session from inside keeplb ('D': server marked down, 'K': stopping)."""
        if self.term == "-":
            self.term = who
        self._abort()

    def _shut_server(self, tr: Stream) -> None:
        """Pass the client's FIN on to the server: shutdown() once what the client
        sent is out. Under `option nolinger` in the backend, as haproxy 2.6 (its
        silent shutw, SC_FL_NOLINGER): no FIN, the server connection is reset
        once that is out, and the session ends without waiting for the server
        (server_eof: nothing more comes from it; a normal end, '--')."""
        be = self.backend
        if be is not None and be.nolinger:
            fdsock.set_nolinger(tr.fd)
            self.server_eof = True
        else:
            tr.write_eof()

    def _reset_server_if_nolinger(self, tr: Stream) -> None:
        """`option nolinger` in the backend: closing a server connection that has
        not sent its FIN sends a RST (haproxy closes it so; once the server has
        shut its side, haproxy's close is a FIN, and so is keeplb's)."""
        be = self.backend
        if be is not None and be.nolinger and not self.server_eof and not tr.closed:
            fdsock.set_nolinger(tr.fd)

    def _abort(self) -> None:
        if self.server_tr is not None:
            self._reset_server_if_nolinger(self.server_tr)
            self.server_tr.abort()
        ctr = self.client.transport
        if ctr is not None:
            ctr.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _close_both(self) -> None:
        if self.server_tr is not None:
            self.server_tr.close()
        ctr = self.client.transport
        if ctr is not None:
            ctr.close()

    def _close_client(self) -> None:
        ctr = self.client.transport
        if ctr is None or self.client_lost:
            self._finish()
        elif not ctr.is_closing():
            ctr.close()
        else:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._stop_establishing()
        fe = self.fe
        if self.timer:
            fe.wheel.remove(self, self.timer)
            self.timer = 0
            self.timer_at = _NEVER
        now = self.loop_time()
        be, slot = self.backend, self.slot
        if not self.counters:
            fe.rt.counters.bytes_in += self.bytes_in
            fe.rt.counters.bytes_out += self.bytes_out
            if be is not None:
                be.rt.counters.bytes_in += self.bytes_in
                be.rt.counters.bytes_out += self.bytes_out
        self.counters = ()
        if be is not None:
            be.sessions -= 1
            be.rt.counters.session_ended()
        if slot is not None and be is not None:
            be.release(slot, self)
        if fe.tcplog and fe.log.enabled:
            entry = self._log_entry(now, be, slot)
            if should_log_session(entry, fe.dontlognull, fe.dontlog_normal):
                lf = fe.log_format
                line = format_tcplog(entry) if lf is None else lf.render(entry)
                if line:  # haproxy sends no empty line
                    fe.log.send(session_level(entry, fe.log_separate_errors), line)
        fe.rt.counters.session_ended()
        fe.limits.sessions.discard(self)
        fe.limits.session_ended()
        if fe.paused and fe.can_accept() and not fe.limits.stopping:
            fe.resume()

    def _log_entry(self, now: float, be: Backend | None, slot: Slot | None) -> SessionLog:
        def ms(t: float) -> int:
            return int((t - self.t0) * 1000)
        tw = ms(self.t_assigned) if self.t_assigned >= 0 else -1
        if self.t_assigned < 0 and self.pending is None and self.term == "s":
            tw = ms(now)  # queue timeout: the whole wait
        tc = self.t_connect_ms
        phase = self.phase if self.term != "-" else "-"
        if self.term == "s" and self.phase == "Q":
            phase = "Q"
        process = self.fe.limits.process
        fe = self.fe
        fi, fp, bi, bp, si, sp = "", -1, "", -1, "", -1
        if fe.log_dst and self._dst is not None:
            fi, fp = self._dst
        if fe.log_source and self.source is not None:
            bi, bp = self.source
        if fe.log_server and slot is not None and not slot.rt.local:
            si, sp = slot.rt.host, self._server_port(slot)
        return SessionLog(
            client_ip=self.src[0], client_port=self.src[1], accept_wall=self.wall0,
            frontend=self.fe.name, backend=be.name if be is not None else self.fe.name,
            server=self.server_name,
            tw=tw, tc=tc, tt=ms(now), bytes_out=self.bytes_out, bytes_in=self.bytes_in,
            termination=self.term + phase,
            actconn=process.cur_conns, feconn=self.fe.rt.counters.cur_sess,
            beconn=be.sessions if be is not None else 0,
            srvconn=len(slot.sessions) if slot is not None else 0,
            retries=self.retries, redispatched=self.redispatched,
            srv_queue=self.srv_queue, be_queue=self.be_queue,
            td=ms(now) - ms(self.t_connected) if self.t_connected >= 0 else -1,
            frontend_ip=fi, frontend_port=fp, source_ip=bi, source_port=bp, server_ip=si,
            server_port=sp, uniq_id=self.uniq_id)
