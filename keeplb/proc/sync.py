"""`nbthread N`: N worker processes, one health-check state.

haproxy runs N threads in one process, so its checks, its server states and
its stats socket exist once. keeplb runs N worker processes on the same
listening sockets (SO_REUSEPORT, inherited descriptors) and keeps that
property this way:

  worker 1 (the checker)   runs the HealthChecker, serves the stats
                           socket(s) and the `--health-fd` of `keeplb run`;
                           after every change of a server (a check
                           transition, or an operator's `set server`,
                           `set weight`, `disable server`, ...) it writes
                           the server's whole state as one JSON line on its
                           sync socket
  the master               keeps the last line per server (the snapshot) and
                           relays each line to the other workers of the same
                           generation; a (re)started worker first gets the
                           snapshot, then the marker line, then the live lines
  workers 2..N (followers) no checks, no stats socket; they apply each line
                           through the same calls as a local change
                           (LoadBalancer.on_transition, AppControl), so every
                           worker's balancer agrees; their copies of the
                           state-change log lines are not written twice

The runtime API's frontend and process commands (`disable`, `enable`,
`shutdown frontend`, `set maxconn frontend|global`, `set rate-limit`) travel
the same way: one line with the frontend's whole state (`{"f": name, ...}`)
or the process limits (`{"global": true, ...}`). A follower applies them
through AppControl, as the checker did, so every worker stops (or resumes)
accepting. The listening sockets are shared: the checker's shutdown(SHUT_RD)
(or listen()) acts for every worker at once, so a follower only stops or
resumes its own accepting (AppControl.shared_sockets) and a late line never
undoes a newer change; the EINVAL a follower's accept() may meet before the
line arrives is worker 1's pause, not an error (not logged, see _SharedPause).
A restarted worker finds each frontend's state in the snapshot and starts
accepting only on those neither disabled nor shut down. A reload starts every
frontend afresh, as haproxy's does (the master listens again, Master._reload).

`clear counters [all]` is an event, not a state: worker 1 clears its own
counters, numbers the clear (ProcessRuntime.clear_epoch) and sends
`{"clear": "all"|"max", "n": N}`; each follower clears its counters the same
way when the line arrives. Every worker also clears, in place, the other
workers' snapshots it holds, and from then on ignores a counters line that
carries an older number (`"clr"`, sent before that worker applied the
clear), so no old value is added in again. The master keeps the last clear
line in the snapshot only for its number: a restarted worker's counters start
at 0 anyway, so apply_static takes the number over and clears nothing (its
counters lines must carry the current number, or the others would ignore them).

A state line carries a whole state, not a delta, so applying one twice, or an old
one followed by a newer one, leaves the same result.

The snapshot is also applied to a restarted checker: what the operator set
and the health counters survive a crash of worker 1.

Traffic counters flow between all workers: every worker sends its whole
counters (one `{"ctr": ...}` line, sessions and queues) once a second; the
master passes each line to every other worker of the generation, which keeps
the latest per worker in ProcessRuntime.peer_counters. So `show stat`,
`show info`, the stats page and /metrics count every worker, as haproxy's one
process counts every thread, whichever worker serves them (a stats page or a
/metrics frontend is accepted by any worker). Counters are not events: a
periodic whole snapshot loses nothing when a line is late, and costs one line
per worker per second; the sums lag the truth by up to that second.

The rates are summed the same way: each counters line carries the worker's
ConnRate, SessRate and frontends' session rates as measured when it was
written, and their maxima; `show info` and `show stat` report this worker's
rate now plus the others' last reported ones, so they too lag by up to a
second. The maxima are kept of those sums, taken as each line arrives
(keeplb.lb.stats.process_max_rates says why not the sum of the maxima).

A server's maxconn and maxqueue are counted for all workers in the master's
shared table (keeplb.lb.shared), not through these lines; only the moment a
worker frees a slot that another worker's clients wait for travels here:
`{"wake": backend, "s": server}`, passed to every other worker, each of
which serves its waiters for that server if the table still has room.

Which kind a line is, where the master passes it and how a worker applies it
is written once, in the table `Kind` (kind_of); the readers below consult it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import astuple, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from keeplb.lb.server import (
    AdminState,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)
from keeplb.lb.stats import note_rate_peaks

if TYPE_CHECKING:
    from keeplb.lb.app import LoadBalancer

log = logging.getLogger("keeplb.sync")

ENV_SYNC_FD = "KEEPLB_SYNC_FD"
ENV_SYNC_ROLE = "KEEPLB_SYNC_ROLE"
ROLE_CHECKER = "checker"
ROLE_FOLLOWER = "follower"
SYNCED = b'{"synced": true}\n'
SNAPSHOT_TIMEOUT_S = 5.0
COUNTERS_INTERVAL_S = 1.0

_UPISH = (OpState.RUNNING, OpState.STARTING)


def server_key(rec: dict[str, Any]) -> tuple[str, str]:
    return str(rec.get("b")), str(rec.get("s"))


# A follower's stats page serves operators too: what they ask there goes to the
# checker (worker 1) as a request line, which applies it and publishes the new
# state to every worker, as for a command on its stats socket.
REQUESTS = ("admin", "weight", "addr", "health", "op", "maxconn")


def request_record(server: ServerRuntime, what: str, value: Any) -> dict[str, Any]:
    return {"req": what, "b": server.backend, "s": server.name, "v": value}


class CheckerRequests:
    """A follower's RuntimeControl for its stats page: each change is sent to
    the checker instead of applied here; the checker's state line comes back."""

    def __init__(self, link: WorkerLink) -> None:
        self.link = link

    def set_admin_state(self, server: ServerRuntime, state: AdminState) -> None:
        self.link.send(request_record(server, "admin", state.value))

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        self.link.send(request_record(server, "weight", weight))

    def set_addr(self, server: ServerRuntime, host: str, port: int | None) -> None:
        self.link.send(request_record(server, "addr", [host, port]))

    def enable_health(self, server: ServerRuntime) -> None:
        self.link.send(request_record(server, "health", True))

    def disable_health(self, server: ServerRuntime) -> None:
        self.link.send(request_record(server, "health", False))

    def set_health(self, server: ServerRuntime, op: OpState) -> None:
        self.link.send(request_record(server, "op", op.value))

    def set_maxconn(self, server: ServerRuntime, maxconn: int) -> None:
        self.link.send(request_record(server, "maxconn", maxconn))


def apply_request(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    """In the checker: a follower's request, through the checker's own control
    (which publishes the result). False when it names nothing or is malformed."""
    srv = _find(lb.runtime, rec)
    control = lb.control
    what, v = rec.get("req"), rec.get("v")
    if srv is None or control is None or what not in REQUESTS:
        return False
    if what == "admin" and (state := _enum(AdminState, v)) is not None:
        control.set_admin_state(srv, state)
    elif what == "op" and (op := _enum(OpState, v)) is not None:
        control.set_health(srv, op)
    elif what == "health" and isinstance(v, bool):
        (control.enable_health if v else control.disable_health)(srv)
    elif what == "weight" and isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        control.set_weight(srv, v)
    elif what == "maxconn" and isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        control.set_maxconn(srv, v)
    elif (what == "addr" and isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
          and (v[1] is None or isinstance(v[1], int))):
        control.set_addr(srv, v[0], v[1])
    else:
        return False
    return True


def server_record(s: ServerRuntime) -> dict[str, Any]:
    """The state of `s` that every worker must share (eweight is not in it: the
    slowstart ramp runs in each worker from the moment it saw the server go UP)."""
    return {
        "b": s.backend, "s": s.name, "admin": s.admin.value, "op": s.op.value,
        "health": s.health, "uweight": s.uweight, "host": s.host, "port": s.port,
        "check": s.check_enabled, "maxconn": s.maxconn,
        "st": s.check_status, "desc": s.check_desc, "code": s.check_code,
        "dur": s.check_duration_ms, "info": s.check_info,
        "fails": s.check_fails, "downs": s.check_downs,
    }


def frontend_record(fe: FrontendRuntime) -> dict[str, Any]:
    """What the runtime API sets on a frontend, for every worker."""
    return {"f": fe.name, "disabled": fe.disabled, "stopped": fe.stopped,
            "maxconn": fe.maxconn}


def global_record(runtime: ProcessRuntime) -> dict[str, Any]:
    """The process limits the runtime API sets (`set maxconn global`,
    `set rate-limit ... global`), for every worker."""
    return {"global": True, "maxconn": runtime.maxconn, "hard": runtime.hard_maxconn,
            "rl": dict(runtime.rate_limits)}


def clear_record(epoch: int, everything: bool) -> dict[str, Any]:
    """Worker 1's `clear counters [all]`, numbered (ProcessRuntime.clear_epoch)."""
    return {"clear": "all" if everything else "max", "n": epoch}


def counters_record(runtime: ProcessRuntime, worker: int,
                    now: float | None = None) -> dict[str, Any]:
    """A worker's counters, each Counters as a list in field order, and its
    queues as [current, max]; `clr`: the last clear it applied. Then its
    rates as measured now (`now`: time.monotonic() if None), which the others
    add to theirs (keeplb.lb.stats.process_rates): `cr`/`sr` ConnRate and
    SessRate, `mcr`/`msr` their maxima, `fr` each frontend's session rate.
    These came later than the rest: a line without them (an older worker's,
    during a reload) counts as rates of 0."""
    now = time.monotonic() if now is None else now
    return {"ctr": worker, "clr": runtime.clear_epoch,
            "cur": runtime.cur_conns, "cum": runtime.cum_conns,
            "fe": {fe.name: astuple(fe.counters) for fe in runtime.frontends},
            "be": {be.name: astuple(be.counters) for be in runtime.backends},
            "sv": {f"{be.name}/{s.name}": astuple(s.counters)
                   for be in runtime.backends for s in be.servers},
            "bq": {be.name: [be.queue_cur, be.queue_max] for be in runtime.backends},
            "sq": {f"{be.name}/{s.name}": [s.queue_cur, s.queue_max]
                   for be in runtime.backends for s in be.servers},
            "cr": runtime.conn_rate.rate(now), "sr": runtime.sess_rate.rate(now),
            "mcr": runtime.max_conn_rate, "msr": runtime.max_sess_rate,
            "fr": {fe.name: fe.sess_rate.rate(now) for fe in runtime.frontends}}


def encode(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """A record from one line, or None for a malformed one (logged, dropped)."""
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        log.warning("sync: dropped a malformed line (%d bytes)", len(line))
        return None
    return rec if isinstance(rec, dict) else None


def _find(runtime: ProcessRuntime, rec: dict[str, Any]) -> ServerRuntime | None:
    b, s = server_key(rec)
    be = runtime.backend(b)
    return be.server(s) if be is not None else None


def _enum(kind: type[AdminState] | type[OpState], value: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        return None


def _copy_check_fields(srv: ServerRuntime, rec: dict[str, Any]) -> None:
    srv.check_status = str(rec.get("st") or "")
    srv.check_desc = str(rec.get("desc") or "")
    code = rec.get("code")
    srv.check_code = code if isinstance(code, int) else None
    dur = rec.get("dur")
    srv.check_duration_ms = dur if isinstance(dur, int) else None
    srv.check_info = str(rec.get("info") or "")
    for field_, key in (("check_fails", "fails"), ("check_downs", "downs")):
        v = rec.get(key)
        if isinstance(v, int):
            setattr(srv, field_, v)


def _static_frontend(runtime: ProcessRuntime, rec: dict[str, Any]) -> bool:
    fe = runtime.frontend(str(rec.get("f")))
    if fe is None:
        return False
    fe.stopped = rec.get("stopped") is True
    fe.disabled = fe.paused = rec.get("disabled") is True
    maxconn = rec.get("maxconn")
    if isinstance(maxconn, int) and maxconn >= 0:
        fe.maxconn = maxconn
    return True


def _global_limits(runtime: ProcessRuntime, rec: dict[str, Any]) -> None:
    """The hard limit and the rate limits of a global record; the maxconn is
    the caller's (a live one goes through AppControl)."""
    hard = rec.get("hard")
    if isinstance(hard, int) and hard > 0:
        runtime.hard_maxconn = hard
    rl = rec.get("rl")
    if isinstance(rl, dict):
        runtime.rate_limits = {str(k): v for k, v in rl.items()
                               if isinstance(v, int) and v > 0}


def _static_clear(runtime: ProcessRuntime, rec: dict[str, Any]) -> bool:
    """Only the number: this worker's counters start at 0 anyway."""
    epoch = rec.get("n")
    if not isinstance(epoch, int):
        return False
    runtime.clear_epoch = max(runtime.clear_epoch, epoch)
    return True


def _static_global(runtime: ProcessRuntime, rec: dict[str, Any]) -> bool:
    _global_limits(runtime, rec)
    maxconn = rec.get("maxconn")
    if isinstance(maxconn, int) and maxconn > 0:
        runtime.maxconn = maxconn
    return True


def _static_server(runtime: ProcessRuntime, rec: dict[str, Any]) -> bool:
    srv = _find(runtime, rec)
    if srv is None:
        return False
    admin = _enum(AdminState, rec.get("admin"))
    op = _enum(OpState, rec.get("op"))
    if admin is not None:
        srv.admin = admin
    if op is not None:
        srv.op = OpState.RUNNING if op is OpState.STARTING else op
    for attr, key in (("health", "health"), ("uweight", "uweight"), ("maxconn", "maxconn")):
        v = rec.get(key)
        if isinstance(v, int):
            setattr(srv, attr, v)
    srv.eweight = srv.uweight
    if isinstance(rec.get("host"), str):
        srv.host = rec["host"]
    port = rec.get("port")
    srv.port = port if isinstance(port, int) else srv.port
    srv.check_enabled = bool(rec.get("check", srv.check_enabled))
    _copy_check_fields(srv, rec)
    srv.last_change = time.monotonic()
    return True


def apply_static(runtime: ProcessRuntime, records: list[dict[str, Any]]) -> int:
    """Before serving: write the snapshot into the ServerRuntime and
    FrontendRuntime objects, which the balancers and listeners are then built
    from (a disabled or shut down frontend does not start accepting). Returns
    how many records it matched."""
    n = 0
    for rec in records:
        kind = kind_of(rec)
        static = kind.value.static if kind is not None else None
        if static is not None:
            n += static(runtime, rec)
    return n


def restore_health(runtime: ProcessRuntime, records: list[dict[str, Any]]) -> None:
    """For a restarted checker, after its HealthChecker started: the checker
    reset every health counter to `rise`; its next check takes the snapshot's
    counter over (ServerRuntime.health), so the verdicts go on where they were."""
    for rec in records:
        srv = _find(runtime, rec) if kind_of(rec) is Kind.SERVER else None
        h = rec.get("health")
        if srv is not None and isinstance(h, int):
            srv.health = h


@dataclass(frozen=True, slots=True)
class RelayedResult:
    """What on_transition reads from a CheckResult, as the checker reported it."""

    status: str
    info: str
    duration_ms: int | None
    code: int | None


class _SharedPause(logging.Filter):
    """In a follower: drops the `cannot accept ... Invalid argument` warning.
    The listening sockets are shared, so worker 1's `disable frontend` or
    `shutdown frontend` (shutdown(SHUT_RD)) stops them for every worker at
    once; a follower's accept() then fails with EINVAL until the relayed line
    pauses its listener (which waits meanwhile): that is the pause, not an error."""

    EINVAL = os.strerror(errno.EINVAL)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        return not (isinstance(record.msg, str) and record.msg.startswith("%s: cannot accept on")
                    and isinstance(args, tuple) and len(args) == 3 and args[2] == self.EINVAL)


class _Quiet(logging.Filter):
    """Drops the log records written while a relayed change is applied: the
    checker already wrote those lines once, as haproxy's one process does."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.on


_quiet = _Quiet()


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    _quiet.on = True
    try:
        yield
    finally:
        _quiet.on = False


def apply_live(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    """In a follower, while serving: make the local server, frontend or process
    limits agree with `rec`, through AppControl and LoadBalancer.on_transition.
    Returns False when the record names nothing known."""
    kind = kind_of(rec)
    live = kind.value.live if kind is not None else None
    return live(lb, rec) if live is not None else False


def _live_server(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    srv = _find(lb.runtime, rec)
    control = lb.control
    if srv is None or control is None:
        return False
    with _quietly():
        admin = _enum(AdminState, rec.get("admin"))
        if admin is not None and admin is not srv.admin:
            control.set_admin_state(srv, admin)
        host, port = rec.get("host"), rec.get("port")
        if isinstance(host, str) and (host != srv.host or (isinstance(port, int)
                                                            and port != srv.port)):
            control.set_addr(srv, host, port if isinstance(port, int) else None)
        check = rec.get("check")
        if isinstance(check, bool) and check != srv.check_enabled:
            (control.enable_health if check else control.disable_health)(srv)
        maxconn = rec.get("maxconn")
        if isinstance(maxconn, int) and maxconn != srv.maxconn:
            control.set_maxconn(srv, maxconn)
        uweight = rec.get("uweight")
        if isinstance(uweight, int) and uweight != srv.uweight:
            control.set_weight(srv, uweight)
        _copy_check_fields(srv, rec)
        op = _enum(OpState, rec.get("op"))
        if op is not None:
            _apply_op(lb, srv, op, rec)
        h = rec.get("health")
        if isinstance(h, int):
            srv.health = h
    return True


def _live_frontend(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    """A frontend's state from the checker: the same AppControl calls as its
    runtime API made (AppControl.shared_sockets: the sockets' kernel state is
    the checker's; this worker stops or resumes its own accepting)."""
    fe = lb.runtime.frontend(str(rec.get("f")))
    control = lb.control
    if fe is None or control is None:
        return False
    with _quietly():
        maxconn = rec.get("maxconn")
        if isinstance(maxconn, int) and maxconn >= 0 and maxconn != fe.maxconn:
            control.set_frontend_maxconn(fe, maxconn)
        if fe.stopped:
            return True  # for good, as in the checker
        disabled = rec.get("disabled")
        if rec.get("stopped") is True:
            control.shutdown_frontend(fe)
        elif disabled is True and not fe.disabled:
            control.disable_frontend(fe)
        elif disabled is False and fe.disabled:
            control.enable_frontend(fe)
    return True


def _live_global(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    """The process limits from the checker. A rate limit that changed goes
    through AppControl.set_rate_limit, as on the checker: a lifted or raised
    one resumes the frontends it paused at once, instead of at their timer
    (up to 2 s later), as haproxy's one process does for all its threads."""
    control = lb.control
    if control is None:
        return False
    rt = lb.runtime
    with _quietly():
        before = dict(rt.rate_limits)
        _global_limits(rt, rec)
        after = rt.rate_limits
        for what in sorted(before.keys() | after.keys()):
            if before.get(what) != after.get(what):
                control.set_rate_limit(rt, what, after.get(what, 0))
        maxconn = rec.get("maxconn")
        if isinstance(maxconn, int) and maxconn > 0 and maxconn != rt.maxconn:
            control.set_global_maxconn(rt, maxconn)
    return True


def _live_clear(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    """Worker 1's `clear counters [all]`, once (a number this worker already
    has, from its snapshot, clears nothing)."""
    runtime = lb.runtime
    epoch = rec.get("n")
    if not isinstance(epoch, int):
        return False
    if epoch > runtime.clear_epoch:
        runtime.clear_counters(rec.get("clear") == "all", epoch)
    return True


def wake_record(backend: str, server: str) -> dict[str, Any]:
    """A worker freed a slot of `server` while other workers' clients wait
    for it (keeplb.lb.shared): whoever has a waiter takes the slot."""
    return {"wake": backend, "s": server}


def _live_wake(lb: LoadBalancer, rec: dict[str, Any]) -> bool:
    be = lb.backends.get(str(rec.get("wake")))
    if be is None:
        return False
    be.on_wake(str(rec.get("s")))
    return True


def _apply_op(lb: LoadBalancer, srv: ServerRuntime, op: OpState, rec: dict[str, Any]) -> None:
    result = RelayedResult(str(rec.get("desc") or ""), str(rec.get("info") or ""),
                           srv.check_duration_ms, srv.check_code)
    if op in _UPISH and srv.op is OpState.STOPPED:
        lb.on_transition(srv, True, result)
    elif op is OpState.STOPPED and srv.op is not OpState.STOPPED:
        lb.on_transition(srv, False, result)
    elif op is OpState.STOPPING and srv.op is not OpState.STOPPING and lb.control is not None:
        lb.control.set_health(srv, OpState.STOPPING)
    elif op is OpState.RUNNING and srv.op is OpState.STOPPING and lb.control is not None:
        lb.control.set_health(srv, OpState.RUNNING)
    # STARTING vs RUNNING is not copied: the local slowstart ramp decides.


# --------------------------------------------------------------------------
# the kinds of line
# --------------------------------------------------------------------------


class Route(Enum):
    """Where the master passes a line of a kind, and who acts on it."""

    # from any worker to every other one (counters: which keeps the latest
    # per sender; wake: which serves its queue)
    PEERS = "peers"
    # from a follower to worker 1 only, which applies it (apply_request)
    CHECKER = "checker"
    # from worker 1 only: kept in the master's snapshot (one line per slot),
    # passed to every other worker, applied by the followers (`live`) and,
    # before serving, by a restarted worker (`static`)
    FOLLOWERS = "followers"


@dataclass(frozen=True, slots=True)
class RecordKind:
    """How a kind of line is told (`matches`), where it goes (`route`), its
    snapshot slot, and how a worker applies it before and while serving."""

    matches: Callable[[dict[str, Any]], bool]
    route: Route
    slot: Callable[[dict[str, Any]], tuple[str, ...]] | None = None
    static: Callable[[ProcessRuntime, dict[str, Any]], bool] | None = None
    live: Callable[[LoadBalancer, dict[str, Any]], bool] | None = None


class Kind(Enum):
    """Every kind of sync line, in the order kind_of tries them: the first
    whose `matches` accepts a line is its kind. The keys are the wire format
    that older and newer workers share during a reload; a new kind is one
    more member here, and a worker that does not know it ignores it."""

    COUNTERS = RecordKind(lambda r: isinstance(r.get("ctr"), int), Route.PEERS)
    WAKE = RecordKind(lambda r: isinstance(r.get("wake"), str), Route.PEERS, live=_live_wake)
    REQUEST = RecordKind(lambda r: "req" in r, Route.CHECKER)
    FRONTEND = RecordKind(lambda r: isinstance(r.get("f"), str), Route.FOLLOWERS,
                          slot=lambda r: ("f", r["f"]),
                          static=_static_frontend, live=_live_frontend)
    CLEAR = RecordKind(lambda r: "clear" in r, Route.FOLLOWERS,
                       slot=lambda r: ("clear",), static=_static_clear, live=_live_clear)
    GLOBAL = RecordKind(lambda r: r.get("global") is True, Route.FOLLOWERS,
                        slot=lambda r: ("global",), static=_static_global, live=_live_global)
    SERVER = RecordKind(lambda r: "b" in r and "s" in r, Route.FOLLOWERS,
                        slot=lambda r: ("s", *server_key(r)),
                        static=_static_server, live=_live_server)


def kind_of(rec: dict[str, Any]) -> Kind | None:
    """The kind of a decoded line; None for a line of no kind this worker
    knows (a newer worker's, or a broken one): the master drops it and a
    worker ignores it."""
    for kind in Kind:
        if kind.value.matches(rec):
            return kind
    return None


def record_key(rec: dict[str, Any]) -> tuple[str, ...] | None:
    """The snapshot slot of a state line: one per server, one per frontend,
    one for the process limits and one for the last `clear counters`; None
    for any other line (counters, a follower's request)."""
    kind = kind_of(rec)
    slot = kind.value.slot if kind is not None else None
    return slot(rec) if slot is not None else None


def silence_follower(lb: LoadBalancer) -> None:
    """A follower writes no server-state lines of its own (syslog or stderr),
    nor warnings for worker 1's pause of a shared listening socket."""
    from keeplb.lb.log import ProxyLog

    for be in lb.backends.values():
        be.log = ProxyLog([], be.log.tag, be.log.pid)
    logger = logging.getLogger("keeplb.lb")
    logger.addFilter(_quiet)
    logger.addFilter(_SharedPause())


# --------------------------------------------------------------------------
# the worker's end
# --------------------------------------------------------------------------


class WorkerLink:
    """A worker's end of its sync socket (inherited descriptor)."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
        self.buf = b""
        self.out = bytearray()
        self.snapshot: list[dict[str, Any]] = []
        self._writing = False

    @classmethod
    def from_env(cls) -> tuple[WorkerLink | None, str]:
        """The link and the role the master gave this worker (None, checker: no sync)."""
        fd = os.environ.pop(ENV_SYNC_FD, "")
        role = os.environ.pop(ENV_SYNC_ROLE, ROLE_CHECKER)
        if not fd.isdigit():
            return None, ROLE_CHECKER
        try:
            return cls(int(fd)), role
        except OSError as e:
            log.warning("sync: descriptor %s unusable: %s", fd, e)
            return None, ROLE_CHECKER

    def read_snapshot(self, timeout: float = SNAPSHOT_TIMEOUT_S) -> list[dict[str, Any]]:
        """Blocks (before the event loop starts) until the master's marker line;
        lines read past it stay buffered for follow()."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                line, sep, rest = self.buf.partition(b"\n")
                if sep:
                    self.buf = rest
                    if line + b"\n" == SYNCED:
                        break
                    rec = decode(line)
                    if rec is not None:
                        self.snapshot.append(rec)
                    continue
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data
            else:
                log.warning("sync: no snapshot from the master within %.0f s", timeout)
        except OSError as e:
            log.warning("sync: reading the snapshot failed: %s", e)
        self.sock.setblocking(False)
        return self.snapshot

    async def _records(self) -> AsyncIterator[dict[str, Any]]:
        """Every decodable line from the socket, until the peer closes it."""
        loop = asyncio.get_running_loop()
        while True:
            while b"\n" in self.buf:
                line, _, self.buf = self.buf.partition(b"\n")
                rec = decode(line)
                if rec is not None:
                    yield rec
            try:
                data = await loop.sock_recv(self.sock, 65536)
            except OSError:
                return
            if not data:
                return
            self.buf += data

    async def follow(self, lb: LoadBalancer, worker: int, *, apply: bool) -> None:
        """Until the master closes the socket: keep the other workers' latest
        counters lines (ProcessRuntime.peer_counters), but none sent before
        the last `clear counters` this worker applied, and raise the rate
        maxima to the sums each one makes (stats.note_rate_peaks); with
        `apply` (a follower), apply every state line and clear."""
        runtime = lb.runtime
        async for rec in self._records():
            kind = kind_of(rec)
            route = kind.value.route if kind is not None else None
            if kind is Kind.WAKE:
                try:
                    apply_live(lb, rec)
                except Exception:
                    log.exception("sync: serving the queue of %s failed", rec.get("wake"))
            elif route is Route.PEERS:
                ctr, clr = rec["ctr"], rec.get("clr")
                if ctr != worker and (clr if isinstance(clr, int) else 0) >= runtime.clear_epoch:
                    runtime.peer_counters[ctr] = rec
                    # the process-wide rates at this moment, for the maxima
                    note_rate_peaks(runtime, time.monotonic())
            elif route is Route.CHECKER:
                if apply:
                    continue  # only the checker takes requests
                try:  # a follower's stats page asks
                    if not apply_request(lb, rec):
                        log.warning("sync: dropped a malformed request %s", rec.get("req"))
                except Exception:
                    log.exception("sync: applying request %s failed", rec.get("req"))
            elif route is Route.FOLLOWERS and apply:
                try:
                    apply_live(lb, rec)
                except Exception:  # one bad line must not stop the worker's sync
                    log.exception("sync: applying %s failed", record_key(rec))

    async def send_counters(self, runtime: ProcessRuntime, worker: int) -> None:
        """This worker's periodic counters line, until the worker stops."""
        while True:
            await asyncio.sleep(COUNTERS_INTERVAL_S)
            self.send(counters_record(runtime, worker))

    def send(self, rec: dict[str, Any]) -> None:
        """One line to the master, buffered without bound so a slow master
        never blocks the worker."""
        self.out += encode(rec)
        self._flush()

    def publish(self, server: ServerRuntime) -> None:
        """The checker's LoadBalancer.on_server_change: one line per change."""
        self.send(server_record(server))

    def publish_frontend(self, fe: FrontendRuntime) -> None:
        """The checker's LoadBalancer.on_frontend_change."""
        self.send(frontend_record(fe))

    def publish_global(self, runtime: ProcessRuntime) -> None:
        """The checker's LoadBalancer.on_process_change."""
        self.send(global_record(runtime))

    def wake(self, backend: str, server: str) -> None:
        """Backend.wake: the other workers' waiters for `server` may go."""
        self.send(wake_record(backend, server))

    def publish_clear(self, epoch: int, everything: bool) -> None:
        """The checker's LoadBalancer.on_counters_clear."""
        self.send(clear_record(epoch, everything))

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    loop.add_writer(self.sock.fileno(), self._on_writable)
                return
            except OSError:
                self.out.clear()  # the master is gone: nobody to tell
                break
            del self.out[:n]
        if self._writing:
            self._writing = False
            loop.remove_writer(self.sock.fileno())

    def _on_writable(self) -> None:
        self._flush()


# --------------------------------------------------------------------------
# the master's end
# --------------------------------------------------------------------------


class Relay:
    """In the master: the snapshot of one generation and the links to its workers."""

    def __init__(self) -> None:
        self.snapshot: dict[tuple[str, ...], bytes] = {}
        self.links: dict[int, asyncio.StreamWriter] = {}

    def add_worker(self, relative_id: int, writer: asyncio.StreamWriter) -> None:
        """Send the snapshot and the marker, then the live lines (no await in
        between, so no line is lost or sent twice)."""
        for line in self.snapshot.values():
            writer.write(line)
        writer.write(SYNCED)
        self.links[relative_id] = writer

    def remove_worker(self, relative_id: int, writer: asyncio.StreamWriter) -> None:
        if self.links.get(relative_id) is writer:
            del self.links[relative_id]
        writer.close()

    def on_line(self, sender: int, line: bytes) -> None:
        """A line from worker `sender`: a counters line goes to every other
        worker; a state or clear line of the checker (worker 1) is kept in the
        snapshot (a clear for its number only) and goes to every follower; anything else is dropped."""
        rec = decode(line)
        kind = kind_of(rec) if rec is not None else None
        if rec is None or kind is None:
            return
        line = line if line.endswith(b"\n") else line + b"\n"
        route, slot = kind.value.route, kind.value.slot
        if route is Route.PEERS:
            skip = sender
        elif route is Route.CHECKER:
            # a follower's request goes to the checker only
            w1 = self.links.get(1)
            if sender != 1 and w1 is not None and not w1.is_closing():
                w1.write(line)
            return
        else:
            if slot is None or sender != 1:
                return
            self.snapshot[slot(rec)] = line
            skip = 1
        for relative_id, w in list(self.links.items()):
            if relative_id != skip and not w.is_closing():
                w.write(line)

    async def read_worker(self, relative_id: int, reader: asyncio.StreamReader) -> None:
        """Relay a worker's lines until it exits."""
        with contextlib.suppress(ConnectionError, asyncio.LimitOverrunError, ValueError):
            while line := await reader.readline():
                self.on_line(relative_id, line)
