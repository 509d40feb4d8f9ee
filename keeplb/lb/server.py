"""Runtime state of proxies and servers: what the relay counts, checks change,
and the stats socket, the stats page and /metrics read.

No IO here. The relay (proxy.py), the checks (checks.py) and the runtime API
(runtime.py) all share these objects inside one worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from keeplb.config.model import Proxy, Server


class AdminState(Enum):
    """Set by an operator (`set server B/S state ...`); orthogonal to health."""

    READY = "ready"
    DRAIN = "drain"  # no new traffic, checks go on
    MAINT = "maint"  # no new traffic, no checks


class OpState(Enum):
    """Operational state from the health checks (haproxy's SRV_ST_*)."""

    STOPPED = "DOWN"
    STARTING = "STARTING"  # slowstart ramp in progress
    RUNNING = "UP"
    STOPPING = "NOLB"


@dataclass
class Counters:
    """Traffic counters shared by frontends, backends and servers (haproxy's names)."""

    cur_sess: int = 0  # scur
    max_sess: int = 0  # smax
    total_sess: int = 0  # stot
    bytes_in: int = 0  # bin: from the client
    bytes_out: int = 0  # bout: to the client
    denied_req: int = 0  # dreq
    denied_conn: int = 0  # dcon: rejected by a `tcp-request connection` rule, not a session
    errors_req: int = 0  # ereq
    errors_conn: int = 0  # econ
    errors_resp: int = 0  # eresp
    retries: int = 0  # wretr
    redispatches: int = 0  # wredis
    cli_aborts: int = 0
    srv_aborts: int = 0
    lbtot: int = 0  # times selected by the balancer
    conn_rate_max: int = 0

    def session_started(self) -> None:
        self.cur_sess += 1
        self.total_sess += 1
        if self.cur_sess > self.max_sess:
            self.max_sess = self.cur_sess

    def session_ended(self) -> None:
        if self.cur_sess > 0:
            self.cur_sess -= 1

    def clear(self, everything: bool) -> None:
        """`clear counters`: the maxima start again from now; with `all`
        (`everything`), every counter but the current sessions restarts at 0
        (one rule for these and another worker's snapshot: clear_counter_values)."""
        values = [getattr(self, name) for name in COUNTER_FIELDS]
        clear_counter_values(values, everything)
        for name, v in zip(COUNTER_FIELDS, values, strict=True):
            setattr(self, name, v)


COUNTER_FIELDS = tuple(Counters.__dataclass_fields__)
_CUR, _MAX, _RATE_MAX = (COUNTER_FIELDS.index(n) for n in ("cur_sess", "max_sess", "conn_rate_max"))


def clear_counter_values(values: list[Any], everything: bool) -> None:
    """Counters.clear on a Counters as a list in field order (another worker's
    snapshot, keeplb.proc.sync.counters_record), in place."""
    if len(values) != len(COUNTER_FIELDS):
        return
    cur = values[_CUR]
    if everything:
        values[:] = [0] * len(COUNTER_FIELDS)
        values[_CUR] = cur
    values[_MAX] = cur
    values[_RATE_MAX] = 0


@dataclass(eq=False)
class ServerRuntime:
    """One server of one backend, as it runs now."""

    config: Server
    backend: str
    sid: int
    host: str
    port: int | None
    uweight: int  # user weight: from the config or `set server ... weight`
    eweight: int = 0  # effective weight: uweight ramped by slowstart, 0 when unusable
    admin: AdminState = AdminState.READY
    op: OpState = OpState.RUNNING
    health: int = 0  # haproxy's saturating counter, 0 .. rise+fall-1
    check_enabled: bool = False
    check_status: str = ""  # 'L4OK', 'L4CON', 'L7OK', 'L7STS', ... ('' : no check yet)
    check_desc: str = ""  # 'Layer4 check passed', ...
    check_code: int | None = None  # HTTP status of the last L7 check
    check_duration_ms: int | None = None
    check_info: str = ""
    check_fails: int = 0  # chkfail: failed checks
    check_downs: int = 0  # chkdown: UP->DOWN transitions
    last_change: float = 0.0  # monotonic time of the last state change
    downtime_s: float = 0.0
    maxconn: int = 0  # 0: no limit
    maxqueue: int = 0  # 0: no limit
    # `init-addr none`: no address yet; in MAINT until one is set (haproxy's
    # SRV_ADMF_RMAINT, "MAINT (resolution)")
    unresolved: bool = False
    # 'unix' or 'abns' for a server on a UNIX socket, '' for TCP: the config's
    # address family, kept here so that the relay reads it natively
    local: str = ""
    queue_cur: int = 0
    queue_max: int = 0
    counters: Counters = field(default_factory=Counters)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def backup(self) -> bool:
        return bool(self.config.options.backup)

    @property
    def usable(self) -> bool:
        """May receive new connections: healthy, ready and with a weight."""
        return (
            self.admin is AdminState.READY
            and self.op in (OpState.RUNNING, OpState.STARTING)
            and self.eweight > 0
        )


@dataclass(eq=False)
class BackendRuntime:
    config: Proxy
    iid: int
    servers: list[ServerRuntime] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    queue_cur: int = 0
    queue_max: int = 0
    last_change: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    def server(self, name: str) -> ServerRuntime | None:
        for s in self.servers:
            if s.name == name:
                return s
        return None

    @property
    def active_up(self) -> int:
        return sum(1 for s in self.servers if not s.backup and s.op is not OpState.STOPPED
                   and s.admin is not AdminState.MAINT)

    @property
    def backup_up(self) -> int:
        return sum(1 for s in self.servers if s.backup and s.op is not OpState.STOPPED
                   and s.admin is not AdminState.MAINT)

    @property
    def is_up(self) -> bool:
        return self.active_up + self.backup_up > 0


class FreqCtr:
    """Events per second as haproxy's freq_ctr counts them: the current
    second's count plus the previous second's, weighted by how much of it
    still lies within the last second. `now` is any monotonic clock in seconds."""

    def __init__(self) -> None:
        self.start = 0.0  # when the current one-second period began
        self.curr = 0
        self.prev = 0

    def _rotate(self, now: float) -> None:
        elapsed = now - self.start
        if elapsed >= 1.0:
            self.prev = self.curr if elapsed < 2.0 else 0
            self.curr = 0
            self.start = now - elapsed % 1.0

    def add(self, now: float) -> int:
        """One event; the rate with it (what a maximum is kept of)."""
        self._rotate(now)
        self.curr += 1
        return self.curr + int(self.prev * (1.0 - (now - self.start)))

    def rate(self, now: float) -> int:
        self._rotate(now)
        return self.curr + int(self.prev * (1.0 - (now - self.start)))

    def delay_below(self, limit: int, now: float) -> float:
        """Seconds until rate() is below `limit` with no new event (0: now)."""
        if self.rate(now) < limit:
            return 0.0
        into = now - self.start
        if self.curr >= limit or self.prev == 0:
            # this second must end, then its count weighs as the previous one
            return (1.0 - into) + max(0.0, 1.0 - limit / self.curr) + 0.001
        # prev * (1 - t) + curr < limit  <=>  t > 1 - (limit - curr) / prev
        return max(0.0, 1.0 - (limit - self.curr) / self.prev - into) + 0.001


@dataclass(eq=False)
class FrontendRuntime:
    config: Proxy
    iid: int
    counters: Counters = field(default_factory=Counters)
    maxconn: int = 0
    paused: bool = False
    disabled: bool = False  # `disable frontend`: no accepting until `enable frontend`
    stopped: bool = False  # `shutdown frontend`: listeners closed for good
    sess_rate: FreqCtr = field(default_factory=lambda: FreqCtr())  # `rate`, this worker's

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(eq=False)
class ProcessRuntime:
    """What `show info` reports about the process."""

    pid: int
    started: float  # wall clock
    maxconn: int
    nbthread: int
    frontends: list[FrontendRuntime] = field(default_factory=list)
    backends: list[BackendRuntime] = field(default_factory=list)
    cur_conns: int = 0
    cum_conns: int = 0
    conn_rate: FreqCtr = field(default_factory=FreqCtr)  # accepted connections (ConnRate)
    max_conn_rate: int = 0  # MaxConnRate
    # connections the `tcp-request connection` rules let through (SessRate)
    sess_rate: FreqCtr = field(default_factory=FreqCtr)
    max_sess_rate: int = 0  # MaxSessRate
    stopping: bool = False
    hard_maxconn: int = 0  # `set maxconn global` cannot exceed it; 0: the initial maxconn
    # `set rate-limit <what> global N`: 'connections', 'sessions', 'ssl-sessions'
    # (per second) and 'http-compression' (bytes/s); absent: no limit
    rate_limits: dict[str, int] = field(default_factory=dict)
    # nbthread: the other workers' latest counters snapshots, by worker number,
    # kept by worker 1 (keeplb.proc.sync) and added in by the stats renderers
    peer_counters: dict[int, dict[str, Any]] = field(default_factory=dict)
    # nbthread: which of the nbthread worker processes this is (1..nbthread)
    worker: int = 1
    # nbthread: the servers' sessions and queues counted for every worker
    # (keeplb.lb.shared.SharedCounts), when the master gave a table
    shared: Any = None
    # nbthread: how many `clear counters` the process has seen (worker 1
    # numbers them, keeplb.proc.sync relays them); a worker's counters line
    # carries it, so one sent before a clear is not added in after it
    clear_epoch: int = 0

    def share(self, limit: int) -> int:
        """This worker's part of a process-wide connection limit (global or
        frontend maxconn): haproxy's limit counts all its threads, keeplb's
        workers each take limit/nbthread, the first ones one more for the
        remainder. The workers share the listening socket, so one that has
        used its part stops accepting and the others take the waiting clients:
        the process as a whole holds at most `limit`."""
        n = max(1, self.nbthread)
        return limit // n + (1 if self.worker - 1 < limit % n else 0)

    def server_share(self, limit: int) -> int:
        """This worker's part of a server's `maxconn` or `maxqueue`, as share()
        but never 0: a worker must be able to reach every server, so a limit
        below nbthread lets the process exceed it by the difference."""
        return max(1, self.share(limit))

    def clear_counters(self, everything: bool, epoch: int | None = None) -> int:
        """`clear counters [all]` on every frontend, backend and server (and
        the queues' maxima, MaxConnRate and MaxSessRate), and on the other
        workers' snapshots this worker holds (peer_counters) until their
        cleared lines come. `epoch`: the clear's number as worker 1 gave it;
        None: the next one. Returns it."""
        self.clear_epoch = self.clear_epoch + 1 if epoch is None else epoch
        self.max_conn_rate = self.max_sess_rate = 0  # haproxy's cps_max and sps_max
        objs = [fe.counters for fe in self.frontends] + [be.counters for be in self.backends]
        objs += [s.counters for be in self.backends for s in be.servers]
        for c in objs:
            c.clear(everything)
        for be in self.backends:
            be.queue_max = be.queue_cur
            for s in be.servers:
                s.queue_max = s.queue_cur
        for peer in self.peer_counters.values():
            peer["clr"] = self.clear_epoch
            for key in ("mcr", "msr"):  # its MaxConnRate and MaxSessRate
                if key in peer:
                    peer[key] = 0
            for kind in ("fe", "be", "sv"):
                table = peer.get(kind)
                for values in table.values() if isinstance(table, dict) else ():
                    if isinstance(values, list):
                        clear_counter_values(values, everything)
            for kind in ("bq", "sq"):
                table = peer.get(kind)
                for values in table.values() if isinstance(table, dict) else ():
                    if isinstance(values, list) and len(values) == 2:
                        values[1] = values[0]
        return self.clear_epoch

    def backend(self, name: str) -> BackendRuntime | None:
        for b in self.backends:
            if b.name == name:
                return b
        return None

    def frontend(self, name: str) -> FrontendRuntime | None:
        for f in self.frontends:
            if f.name == name:
                return f
        return None
