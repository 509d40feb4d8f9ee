"""What haproxy 2.6 shows about its proxies: `show stat` CSV, `show info`,
`show servers state`, `show backend`, and the stats web page.

Everything here is a pure function of a ProcessRuntime and the time given by
the caller (`now`: time.monotonic(), `wall`: time.time()); the stats socket
(runtime.py) and the relay's HTTP frontend do the IO.

The CSV is built from one row dict per object (field name -> value, None for
an empty cell), in haproxy's column order (STAT_FIELDS). metrics.py reads the
same rows, so the CSV, the page and /metrics never disagree.

Formats were taken from a running haproxy 2.6.12 (Debian 12) on a loopback
config; tests/integration/test_stats_haproxy.py compares the header with it.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from enum import IntFlag
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from keeplb import __version__
from keeplb.config.model import Mode, StatsPage
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    Counters,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)
from keeplb.lb.statdesc import INFO_DESC, STAT_DESC

if TYPE_CHECKING:
    from keeplb.lb.runtime import RuntimeControl

# haproxy 2.6 `show stat` columns, in order. After the '-' column come the
# per-module counters (ssl, h2, h1) that 2.6 appends; a real 2.6 prints them
# too, so the header matches it byte for byte.
STAT_FIELDS: tuple[str, ...] = (
    "pxname", "svname", "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout",
    "dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status", "weight",
    "act", "bck", "chkfail", "chkdown", "lastchg", "downtime", "qlimit", "pid", "iid",
    "sid", "throttle", "lbtot", "tracked", "type", "rate", "rate_lim", "rate_max",
    "check_status", "check_code", "check_duration", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx",
    "hrsp_4xx", "hrsp_5xx", "hrsp_other", "hanafail", "req_rate", "req_rate_max",
    "req_tot", "cli_abrt", "srv_abrt", "comp_in", "comp_out", "comp_byp", "comp_rsp",
    "lastsess", "last_chk", "last_agt", "qtime", "ctime", "rtime", "ttime",
    "agent_status", "agent_code", "agent_duration", "check_desc", "agent_desc",
    "check_rise", "check_fall", "check_health", "agent_rise", "agent_fall",
    "agent_health", "addr", "cookie", "mode", "algo", "conn_rate", "conn_rate_max",
    "conn_tot", "intercepted", "dcon", "dses", "wrew", "connect", "reuse",
    "cache_lookups", "cache_hits", "srv_icur", "src_ilim", "qtime_max", "ctime_max",
    "rtime_max", "ttime_max", "eint", "idle_conn_cur", "safe_conn_cur",
    "used_conn_cur", "need_conn_est", "uweight", "agg_server_status",
    "agg_server_check_status", "agg_check_status", "-",
    "ssl_sess", "ssl_reused_sess", "ssl_failed_handshake",
    "h2_headers_rcvd", "h2_data_rcvd", "h2_settings_rcvd", "h2_rst_stream_rcvd",
    "h2_goaway_rcvd", "h2_detected_conn_protocol_errors",
    "h2_detected_strm_protocol_errors", "h2_rst_stream_resp", "h2_goaway_resp",
    "h2_open_connections", "h2_backend_open_streams", "h2_total_connections",
    "h2_backend_total_streams", "h1_open_connections", "h1_open_streams",
    "h1_total_connections", "h1_total_streams", "h1_bytes_in", "h1_bytes_out",
    "h1_spliced_bytes_in", "h1_spliced_bytes_out",
)

STAT_HEADER = "# " + ",".join(STAT_FIELDS) + ",\n"

_SSL_FIELDS = ("ssl_sess", "ssl_reused_sess", "ssl_failed_handshake")
_H2H1_FIELDS = STAT_FIELDS[STAT_FIELDS.index("h2_headers_rcvd"):]
_HRSP = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


class StatType(IntFlag):
    """The <type> filter of `show stat <iid> <type> <sid>` (haproxy's bit values)."""

    FRONTEND = 1
    BACKEND = 2
    SERVER = 4
    ALL = 7


Value = str | int | None
Row = dict[str, Value]


@dataclass(frozen=True, slots=True)
class StatFilter:
    """Arguments of `show stat`: proxy (iid or name, None for all), type mask,
    server id (-1 for all), and the `up` / `no-maint` keywords."""

    proxy: int | str | None = None
    types: StatType = StatType.ALL
    sid: int = -1
    up_only: bool = False
    no_maint: bool = False


# --------------------------------------------------------------------------
# row builders
# --------------------------------------------------------------------------


def _age(now: float, since: float) -> int:
    """Whole seconds since a monotonic instant; 0 when the instant was never set."""
    if since <= 0:
        return 0
    return max(0, int(now - since))


def server_weight(s: ServerRuntime) -> int:
    """The 'weight' column: haproxy shows the effective weight, which only
    slowstart ramps; DOWN, MAINT and DRAIN do not change it."""
    if s.op is OpState.STARTING:
        return s.eweight
    return s.uweight


def server_status(s: ServerRuntime) -> str:
    """The 'status' column as haproxy 2.6's stats_fill_sv_stats() words it:
    MAINT first, DRAIN only while up, "UP 1/3" going down, "DOWN 1/2" going
    up, "no check" for a healthy unchecked server, "DOWN" for a stopped one.
    The one place that words it: `show stat` and the stats page read it
    through server_row (/metrics' `state` label is promex's, metrics.py)."""
    if s.admin is AdminState.MAINT:
        return "MAINT (resolution)" if s.unresolved else "MAINT"
    rise = s.config.options.rise or 2
    fall = s.config.options.fall or 3
    checked = s.check_enabled
    if s.op in (OpState.RUNNING, OpState.STARTING):
        going_down = checked and s.health < rise + fall - 1
        if s.admin is AdminState.DRAIN:
            return f"DRAIN {s.health - rise + 1}/{fall}" if going_down else "DRAIN"
        if going_down:
            return f"UP {s.health - rise + 1}/{fall}"
        return "UP" if checked else "no check"
    if s.op is OpState.STOPPING:
        if not checked or s.health == rise + fall - 1:
            return "NOLB"
        return f"NOLB {s.health - rise + 1}/{fall}"
    if checked and s.health > 0:
        return f"DOWN {s.health}/{rise}"
    return "DOWN"


def server_counts(s: ServerRuntime) -> bool:
    """Whether the server takes part in its backend's act/bck/weight sums
    (haproxy's srv_currently_usable: up, not drained, not in maintenance)."""
    return (
        s.admin is AdminState.READY
        and s.op in (OpState.RUNNING, OpState.STARTING)
        and server_weight(s) > 0
    )


def backend_weights(be: BackendRuntime) -> tuple[int, int, int, int]:
    """(act, bck, weight, uweight) of a backend as haproxy computes them:
    backup servers only weigh in when no active server is usable."""
    act = [s for s in be.servers if not s.backup and server_counts(s)]
    bck = [s for s in be.servers if s.backup and server_counts(s)]
    pool = act or bck
    if pool is bck and bck and not be.config.option("allbackups"):
        pool = bck[:1]
    return (len(act), len(bck), sum(server_weight(s) for s in pool),
            sum(s.uweight for s in pool))


def backend_status(be: BackendRuntime) -> str:
    """'UP' while some server can take traffic (or when it has no server at all)."""
    if not be.servers:
        return "UP"
    return "UP" if backend_weights(be)[2] > 0 else "DOWN"


def frontend_status(fe: FrontendRuntime) -> str:
    if fe.config.disabled or fe.stopped:
        return "STOP"
    return "PAUSED" if fe.paused else "OPEN"


def frontend_maxconn(rt: ProcessRuntime, fe: FrontendRuntime) -> int:
    return fe.maxconn or rt.maxconn


def backend_fullconn(rt: ProcessRuntime, be: BackendRuntime) -> int:
    """`fullconn`, or haproxy's default: 10% of the maxconn of every frontend
    that can route to this backend, rounded up."""
    if be.config.fullconn:
        return be.config.fullconn
    total = 0
    for fe in rt.frontends:
        cfg = fe.config
        targets = {cfg.default_backend} | {u.backend for u in cfg.use_backends}
        if cfg.kind.has_backend:
            targets.add(cfg.name)
        if be.name in targets:
            total += frontend_maxconn(rt, fe)
    return (total + 9) // 10


def _module_counters(row: Row, *, h2h1: bool) -> None:
    row["-"] = "-"
    for name in _SSL_FIELDS:
        row[name] = 0
    if h2h1:
        for name in _H2H1_FIELDS:
            row[name] = 0


_COUNTER_FIELDS = tuple(f.name for f in fields(Counters))
_MAX_FIELDS = frozenset({"max_sess", "conn_rate_max"})


def _peer_entries(rt: ProcessRuntime, kind: str, key: str) -> Iterator[list[Any]]:
    """The other workers' latest values of `kind`/`key` (nbthread), each a list."""
    for peer in rt.peer_counters.values():
        table = peer.get(kind)
        values = table.get(key) if isinstance(table, dict) else None
        if isinstance(values, list):
            yield values


def total_counters(rt: ProcessRuntime, kind: str, key: str, own: Counters) -> Counters:
    """`own` plus the other workers' latest snapshots (nbthread): sums, and
    maxima for the max_* values, as haproxy adds its threads' counters. The
    workers' peaks need not have coincided, so smax is never below the
    current sum (scur) either."""
    if not rt.peer_counters:
        return own
    total = Counters(*(getattr(own, n) for n in _COUNTER_FIELDS))
    for values in _peer_entries(rt, kind, key):
        if len(values) != len(_COUNTER_FIELDS):
            continue
        for name, v in zip(_COUNTER_FIELDS, values, strict=True):
            if isinstance(v, int):
                mine = getattr(total, name)
                setattr(total, name, max(mine, v) if name in _MAX_FIELDS else mine + v)
    total.max_sess = max(total.max_sess, total.cur_sess)
    return total


def total_queue(rt: ProcessRuntime, kind: str, key: str, cur: int, most: int
                ) -> tuple[int, int]:
    """(qcur, qmax) of a backend (`kind` 'bq') or a server ('sq') over every
    worker: this worker's `cur`/`most` plus the others' latest snapshots."""
    for values in _peer_entries(rt, kind, key):
        if len(values) == 2 and all(isinstance(v, int) for v in values):
            cur += values[0]
            most = max(most, values[1])
    return cur, max(most, cur)


def total_conns(rt: ProcessRuntime) -> tuple[int, int]:
    """The process's (current, cumulated) connections over every worker."""
    cur, cum = rt.cur_conns, rt.cum_conns
    for peer in rt.peer_counters.values():
        c, t = peer.get("cur"), peer.get("cum")
        cur += c if isinstance(c, int) else 0
        cum += t if isinstance(t, int) else 0
    return cur, cum


def _peer_int(peer: dict[str, Any], key: str, name: str | None = None) -> int:
    """A peer's value `key` (or `key`[`name`]) from its counters line; 0 when
    absent or not a number (an older worker's line carries no rates)."""
    v = peer.get(key)
    if name is not None:
        v = v.get(name) if isinstance(v, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def process_rates(rt: ProcessRuntime, now: float) -> tuple[int, int]:
    """The process's (ConnRate, SessRate): this worker's rate now plus the
    rates each other worker measured when it wrote its last counters line
    (keeplb.proc.sync.counters_record, "cr"/"sr"), as haproxy's one process
    counts every thread. Those lines come once a second, so the sum lags the
    truth by up to a second."""
    conn, sess = rt.conn_rate.rate(now), rt.sess_rate.rate(now)
    for peer in rt.peer_counters.values():
        conn += _peer_int(peer, "cr")
        sess += _peer_int(peer, "sr")
    return conn, sess


def process_max_rates(rt: ProcessRuntime) -> tuple[int, int]:
    """(MaxConnRate, MaxSessRate) over every worker: the higher of this
    worker's maximum and the others' ("mcr"/"msr"). haproxy keeps the maximum
    of its process-wide rate; keeplb has no process-wide counter to take it
    from, and the sum of the workers' maxima would add peaks that need not
    have coincided (an upper bound, reported as a fact). So each worker's
    maximum also holds the sums it saw as every other worker's counters line
    arrived (note_rate_peaks): every term is a rate the process did reach
    (within the line's second of lag), and a worker's own peak between two
    lines still counts; a peak of the sum between two lines is missed. As in
    haproxy, a maximum just cleared stays below the current rate until the
    next event (or line) raises it."""
    most_conn, most_sess = rt.max_conn_rate, rt.max_sess_rate
    for peer in rt.peer_counters.values():
        most_conn = max(most_conn, _peer_int(peer, "mcr"))
        most_sess = max(most_sess, _peer_int(peer, "msr"))
    return most_conn, most_sess


def frontend_rate(rt: ProcessRuntime, fe: FrontendRuntime, now: float) -> int:
    """The frontend's session rate over every worker: this worker's now plus
    the others' at their last counters line ("fr"), lagging by up to a second."""
    rate = fe.sess_rate.rate(now)
    for peer in rt.peer_counters.values():
        rate += _peer_int(peer, "fr", fe.name)
    return rate


def note_rate_peaks(rt: ProcessRuntime, now: float) -> None:
    """Called when another worker's counters line arrives (nbthread): the
    process-wide rates summed at that moment raise this worker's MaxConnRate,
    MaxSessRate and each frontend's maximum (see process_max_rates for why a
    sampled sum rather than the sum of the maxima). `clear counters` resets
    them with the rest."""
    conn, sess = process_rates(rt, now)
    rt.max_conn_rate = max(rt.max_conn_rate, conn)
    rt.max_sess_rate = max(rt.max_sess_rate, sess)
    for fe in rt.frontends:
        c = fe.counters
        c.conn_rate_max = max(c.conn_rate_max, frontend_rate(rt, fe, now))


def frontend_row(rt: ProcessRuntime, fe: FrontendRuntime) -> Row:
    c = total_counters(rt, "fe", fe.name, fe.counters)
    http = fe.config.mode is Mode.HTTP
    # every worker's (nbthread), as haproxy's rate counts every thread
    rate = frontend_rate(rt, fe, time.monotonic())
    rate_max = c.conn_rate_max  # the workers' maxima, each also of the sums it saw
    row: Row = {
        "pxname": fe.name, "svname": "FRONTEND",
        "scur": c.cur_sess, "smax": c.max_sess, "slim": frontend_maxconn(rt, fe),
        "stot": c.total_sess, "bin": c.bytes_in, "bout": c.bytes_out,
        "dreq": c.denied_req, "dresp": 0, "ereq": c.errors_req,
        "status": frontend_status(fe), "pid": 1, "iid": fe.iid, "sid": 0, "type": 0,
        "rate": rate, "rate_lim": fe.config.rate_limit_sessions or 0,
        "rate_max": rate_max,
        "req_rate": 0, "req_rate_max": 0, "req_tot": 0,
        "comp_in": 0, "comp_out": 0, "comp_byp": 0, "comp_rsp": 0,
        "mode": fe.config.mode.value,
        # haproxy counts a connection as it is accepted, a session once the
        # `tcp-request connection` rules have let it through
        "conn_rate": rate, "conn_rate_max": rate_max,
        "conn_tot": c.total_sess + c.denied_conn,
        "dcon": c.denied_conn, "dses": 0, "wrew": 0, "eint": 0,
    }
    if http:
        for name in _HRSP:
            row[name] = 0
        row.update(intercepted=0, cache_lookups=0, cache_hits=0)
    _module_counters(row, h2h1=True)
    return row


def server_row(rt: ProcessRuntime, be: BackendRuntime, s: ServerRuntime, now: float,
               *, show_legends: bool = True) -> Row:
    c = total_counters(rt, "sv", f"{be.name}/{s.name}", s.counters)
    qcur, qmax = total_queue(rt, "sq", f"{be.name}/{s.name}", s.queue_cur, s.queue_max)
    checked = s.check_enabled
    rise = s.config.options.rise or 2
    fall = s.config.options.fall or 3
    row: Row = {
        "pxname": be.name, "svname": s.name,
        "qcur": qcur, "qmax": qmax,
        "scur": c.cur_sess, "smax": c.max_sess, "slim": s.maxconn or None,
        "stot": c.total_sess, "bin": c.bytes_in, "bout": c.bytes_out,
        "dresp": 0, "econ": c.errors_conn, "eresp": c.errors_resp,
        "wretr": c.retries, "wredis": c.redispatches,
        "status": server_status(s), "weight": server_weight(s),
        "act": 0 if s.backup else 1, "bck": 1 if s.backup else 0,
        "lastchg": _age(now, s.last_change),
        "qlimit": s.maxqueue or None, "pid": 1, "iid": be.iid, "sid": s.sid,
        "lbtot": c.lbtot, "type": 2, "rate": 0, "rate_max": c.conn_rate_max,
        "cli_abrt": c.cli_aborts, "srv_abrt": c.srv_aborts, "lastsess": -1,
        "qtime": 0, "ctime": 0, "rtime": 0, "ttime": 0,
        "mode": be.config.mode.value, "wrew": 0, "connect": c.total_sess, "reuse": 0,
        "srv_icur": 0, "qtime_max": 0, "ctime_max": 0, "rtime_max": 0, "ttime_max": 0,
        "eint": 0, "idle_conn_cur": 0, "safe_conn_cur": 0, "used_conn_cur": c.cur_sess,
        "need_conn_est": 0, "uweight": s.uweight,
    }
    if s.op is OpState.STARTING and s.uweight > 0:
        row["throttle"] = s.eweight * 100 // s.uweight
    if checked:
        down_for = now - s.last_change if s.op is OpState.STOPPED and s.last_change > 0 else 0.0
        row.update(
            chkfail=s.check_fails, chkdown=s.check_downs,
            downtime=int(s.downtime_s + down_for),
            check_rise=rise, check_fall=fall, check_health=s.health,
        )
        if s.check_status:
            row.update(
                check_status=s.check_status,
                check_code=s.check_code,
                check_duration=s.check_duration_ms if s.check_duration_ms is not None else 0,
                check_desc=s.check_desc,
                last_chk=s.check_info or None,
            )
    if be.config.mode is Mode.HTTP:
        for name in _HRSP:
            row[name] = 0
        row["req_tot"] = 0
    if show_legends:
        row["addr"] = _addr(s)
    _module_counters(row, h2h1=False)
    return row


def _addr(s: ServerRuntime) -> str:
    if s.port is None:
        return s.host
    if ":" in s.host:
        return f"[{s.host}]:{s.port}"
    return f"{s.host}:{s.port}"


def backend_row(rt: ProcessRuntime, be: BackendRuntime, now: float,
                *, show_legends: bool = True) -> Row:
    c = total_counters(rt, "be", be.name, be.counters)
    qcur, qmax = total_queue(rt, "bq", be.name, be.queue_cur, be.queue_max)
    act, bck, weight, uweight = backend_weights(be)
    http = be.config.mode is Mode.HTTP
    row: Row = {
        "pxname": be.name, "svname": "BACKEND",
        "qcur": qcur, "qmax": qmax,
        "scur": c.cur_sess, "smax": c.max_sess, "slim": backend_fullconn(rt, be),
        "stot": c.total_sess, "bin": c.bytes_in, "bout": c.bytes_out,
        "dreq": c.denied_req, "dresp": 0, "econ": c.errors_conn, "eresp": c.errors_resp,
        "wretr": c.retries, "wredis": c.redispatches,
        "status": backend_status(be), "weight": weight, "act": act, "bck": bck,
        "chkdown": 0, "lastchg": _age(now, be.last_change),
        "pid": 1, "iid": be.iid, "sid": 0, "lbtot": c.lbtot, "type": 1,
        "rate": 0, "rate_max": c.conn_rate_max,
        "cli_abrt": c.cli_aborts, "srv_abrt": c.srv_aborts,
        "comp_in": 0, "comp_out": 0, "comp_byp": 0, "comp_rsp": 0, "lastsess": -1,
        "qtime": 0, "ctime": 0, "rtime": 0, "ttime": 0,
        "mode": be.config.mode.value, "wrew": 0, "connect": c.total_sess, "reuse": 0,
        "qtime_max": 0, "ctime_max": 0, "rtime_max": 0, "ttime_max": 0, "eint": 0,
        "uweight": uweight,
        "agg_server_status": 0, "agg_server_check_status": 0, "agg_check_status": 0,
    }
    if be.servers:
        down = now - be.last_change if row["status"] == "DOWN" and be.last_change > 0 else 0.0
        row["downtime"] = int(down)
    if show_legends:
        row["algo"] = be.config.balance.algorithm
    if http:
        for name in _HRSP:
            row[name] = 0
        row.update(req_tot=0, cache_lookups=0, cache_hits=0)
    _module_counters(row, h2h1=True)
    return row


def _proxy_matches(flt: StatFilter, name: str, iid: int) -> bool:
    if flt.proxy is None or flt.proxy == -1:
        return True
    if isinstance(flt.proxy, int):
        return flt.proxy == iid
    return flt.proxy == name


def stat_rows(rt: ProcessRuntime, now: float | None = None, flt: StatFilter | None = None,
              *, show_legends: bool = True) -> list[Row]:
    """The rows of `show stat` in haproxy's order: per proxy (in config order),
    FRONTEND, then each server, then BACKEND."""
    now = time.monotonic() if now is None else now
    flt = flt or StatFilter()
    by_iid: dict[int, tuple[FrontendRuntime | None, BackendRuntime | None]] = {}
    for fe in rt.frontends:
        by_iid[fe.iid] = (fe, None)
    for be in rt.backends:
        by_iid[be.iid] = (by_iid.get(be.iid, (None, None))[0], be)
    rows: list[Row] = []
    for iid in sorted(by_iid):
        pfe, pbe = by_iid[iid]
        name = pfe.name if pfe is not None else pbe.name if pbe is not None else ""
        if not _proxy_matches(flt, name, iid):
            continue
        if pfe is not None and flt.types & StatType.FRONTEND:
            rows.append(frontend_row(rt, pfe))
        if pbe is None:
            continue
        be = pbe
        if flt.types & StatType.SERVER:
            for s in be.servers:
                if flt.sid != -1 and s.sid != flt.sid:
                    continue
                if flt.up_only and s.op is OpState.STOPPED:
                    continue
                if (flt.up_only or flt.no_maint) and s.admin is AdminState.MAINT:
                    continue
                rows.append(server_row(rt, be, s, now, show_legends=show_legends))
        if flt.types & StatType.BACKEND:
            rows.append(backend_row(rt, be, now, show_legends=show_legends))
    return rows


def _cell(v: Value) -> str:
    if v is None:
        return ""
    text = str(v)
    # haproxy writes free text (check info) through csv_enc: quote when needed
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def render_csv(rows: Iterable[Row], *, header: bool = True) -> str:
    """`show stat` text: the header, one line per row, each line ending in ','."""
    out = [STAT_HEADER] if header else []
    for row in rows:
        out.append(",".join(_cell(row.get(f)) for f in STAT_FIELDS) + ",\n")
    return "".join(out)


def render_show_stat(rt: ProcessRuntime, now: float | None = None,
                     flt: StatFilter | None = None, *, show_legends: bool = True) -> str:
    return render_csv(stat_rows(rt, now, flt, show_legends=show_legends))


# --------------------------------------------------------------------------
# show info
# --------------------------------------------------------------------------

INFO_VERSION = "2.6.0-keeplb"
"""What `show info` reports as Version: tools that compare versions see 2.6's formats."""


def info_fields(rt: ProcessRuntime, wall: float | None = None) -> list[tuple[str, str | int]]:
    """`show info` as (name, value) pairs, with haproxy 2.6's names and order."""
    wall = time.time() if wall is None else wall
    up = max(0, int(wall - rt.started))
    uptime = f"{up // 86400}d {up % 86400 // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s"
    listeners = sum(len(fe.config.binds) for fe in rt.frontends)
    cur_conns, cum_conns = total_conns(rt)
    # haproxy counts a stream per TCP session, keeplb relays one each; a connection
    # rejected by a `tcp-request connection` rule never becomes one
    cum_req = cum_conns - sum(total_counters(rt, "fe", fe.name, fe.counters).denied_conn
                              for fe in rt.frontends)
    bytes_out = sum(total_counters(rt, "fe", fe.name, fe.counters).bytes_out
                    for fe in rt.frontends)
    lim = rt.rate_limits
    now = time.monotonic()
    # every worker's (nbthread), as haproxy's are its whole process's; the
    # other workers' part is up to a second old (process_rates)
    conn_rate, sess_rate = process_rates(rt, now)
    max_conn_rate, max_sess_rate = process_max_rates(rt)
    return [
        ("Name", "HAProxy"), ("Version", f"{INFO_VERSION}-{__version__}"),
        ("Release_date", "2026/01/01"), ("Nbthread", rt.nbthread), ("Nbproc", 1),
        ("Process_num", 1), ("Pid", rt.pid), ("Uptime", uptime), ("Uptime_sec", up),
        ("Memmax_MB", 0), ("PoolAlloc_MB", 0), ("PoolUsed_MB", 0), ("PoolFailed", 0),
        ("Ulimit-n", 0), ("Maxsock", 0), ("Maxconn", rt.maxconn),
        ("Hard_maxconn", rt.hard_maxconn or rt.maxconn), ("CurrConns", cur_conns),
        ("CumConns", cum_conns), ("CumReq", cum_req), ("MaxSslConns", 0),
        ("CurrSslConns", 0), ("CumSslConns", 0), ("Maxpipes", 0), ("PipesUsed", 0),
        ("PipesFree", 0), ("ConnRate", conn_rate),
        ("ConnRateLimit", lim.get("connections", 0)), ("MaxConnRate", max_conn_rate),
        ("SessRate", sess_rate), ("SessRateLimit", lim.get("sessions", 0)),
        ("MaxSessRate", max_sess_rate), ("SslRate", 0),
        ("SslRateLimit", lim.get("ssl-sessions", 0)), ("MaxSslRate", 0), ("SslFrontendKeyRate", 0),
        ("SslFrontendMaxKeyRate", 0), ("SslFrontendSessionReuse_pct", 0),
        ("SslBackendKeyRate", 0), ("SslBackendMaxKeyRate", 0), ("SslCacheLookups", 0),
        ("SslCacheMisses", 0), ("CompressBpsIn", 0), ("CompressBpsOut", 0),
        ("CompressBpsRateLim", lim.get("http-compression", 0)), ("Tasks", 0), ("Run_queue", 0), ("Idle_pct", 100),
        ("node", _node()), ("Stopping", int(rt.stopping)), ("Jobs", cur_conns + listeners),
        ("Unstoppable Jobs", 0), ("Listeners", listeners), ("ActivePeers", 0),
        ("ConnectedPeers", 0), ("DroppedLogs", 0), ("BusyPolling", 0),
        ("FailedResolutions", 0), ("TotalBytesOut", bytes_out),
        ("TotalSplicdedBytesOut", 0), ("BytesOutRate", 0), ("DebugCommandsIssued", 0),
        ("CumRecvLogs", 0), ("Build info", f"{INFO_VERSION}-{__version__}"),
        ("Memmax_bytes", 0), ("PoolAlloc_bytes", 0), ("PoolUsed_bytes", 0),
        ("Start_time_sec", int(rt.started)), ("Tainted", 0),
    ]


def _node() -> str:
    return platform.node().split(".")[0]


def _desc(text: str | None, on: bool) -> str:
    """The ':"<description>"' haproxy appends to a line after `desc`."""
    return f':"{text or ""}"' if on else ""


def render_show_info(rt: ProcessRuntime, wall: float | None = None, *,
                     desc: bool = False) -> str:
    return "".join(f"{k}: {v}{_desc(INFO_DESC.get(k), desc)}\n"
                   for k, v in info_fields(rt, wall))


# --------------------------------------------------------------------------
# show servers state / show backend
# --------------------------------------------------------------------------

SERVERS_STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port\n"
)

# haproxy's enum srv_state (SRV_ST_*) and srv_admin bits (SRV_ADMF_*)
_OP_CODE = {OpState.STOPPED: 0, OpState.STARTING: 1, OpState.RUNNING: 2, OpState.STOPPING: 3}
_ADMIN_CODE = {AdminState.READY: 0, AdminState.MAINT: 0x01, AdminState.DRAIN: 0x08}
# enum healthcheck_status ordinals (HCHK_STATUS_*), for srv_check_status
_HCHK_CODE = {
    "": 1, "INI": 1, "START": 2, "CHECKED": 3, "HANA": 4, "SOCKERR": 5, "L4OK": 6,
    "L4TOUT": 7, "L4CON": 8, "L6OK": 9, "L6TOUT": 10, "L6RSP": 11, "L7TOUT": 12,
    "L7RSP": 13, "L7OK": 14, "L7OKC": 15, "L7STS": 16, "PROCERR": 17, "PROCTOUT": 18,
    "PROCOK": 19,
}


def server_admin_code(s: ServerRuntime) -> int:
    code = _ADMIN_CODE[s.admin]
    if s.config.options.disabled and s.admin is AdminState.MAINT:
        code = 0x02  # SRV_ADMF_CMAINT: maintenance from the config
    if s.unresolved:
        code = (code & ~0x01) | 0x20  # SRV_ADMF_RMAINT: no address (`init-addr none`)
    return code


def server_check_state(s: ServerRuntime) -> int:
    """srv_check_state: haproxy's CHK_ST_CONFIGURED (2), ENABLED (4) and PAUSED (8) bits."""
    if not s.config.options.check:
        return 0
    state = 0x02
    if s.check_enabled:
        state |= 0x04
        if s.admin is AdminState.MAINT:
            state |= 0x08
    return state


def servers_state_lines(be: BackendRuntime, now: float) -> list[str]:
    out = []
    for s in be.servers:
        iweight = s.config.weight
        rise = s.config.options.rise or 2
        if s.check_status in ("", "INI"):
            result = 0  # CHK_RES_UNKNOWN
        elif s.op is OpState.STOPPED:
            result = 2  # CHK_RES_FAILED
        else:
            result = 3  # CHK_RES_PASSED
        health = s.health if s.check_enabled else rise
        ssl = 1 if s.config.options.ssl else 0
        check_port = s.config.options.check_port or 0
        check_addr = s.config.options.check_addr or "-"
        out.append(
            f"{be.iid} {be.name} {s.sid} {s.name} {s.host or '-'} "
            f"{0 if s.unresolved else _OP_CODE[s.op]} "
            f"{server_admin_code(s)} {s.uweight} {iweight} {_age(now, s.last_change)} "
            f"{_HCHK_CODE.get(s.check_status, 1)} {result} {health} "
            f"{server_check_state(s)} 0 0 "
            f"{1 if s.config.options.id else 0} - {s.port if s.port is not None else 0} - "
            f"{ssl} {check_port} {check_addr} - 0\n"
        )
    return out


def render_servers_state(rt: ProcessRuntime, backend: str | None = None,
                         now: float | None = None) -> str:
    """`show servers state [backend]`; the caller checks that `backend` exists."""
    now = time.monotonic() if now is None else now
    out = ["1\n", SERVERS_STATE_HEADER]
    for be in rt.backends:
        if backend is not None and be.name != backend:
            continue
        out.extend(servers_state_lines(be, now))
    return "".join(out)


def render_show_backend(rt: ProcessRuntime) -> str:
    return "# name\n" + "".join(f"{be.name}\n" for be in rt.backends)


# --------------------------------------------------------------------------
# the stats page
# --------------------------------------------------------------------------

_STATUS_CLASS = {
    "UP": "active", "OPEN": "active", "no check": "active", "DOWN": "down",
    "MAINT": "maint", "DRAIN": "draining", "NOLB": "nolb", "STOP": "down",
}

_CSS = """
body{font-family:arial,helvetica,sans-serif;font-size:12px;color:#000;background:#fff}
table.tbl{border-collapse:collapse;border:1px solid #999;margin-bottom:1em}
table.tbl th{background:#20a0ff;color:#fff;border:1px solid #999;padding:2px 4px}
table.tbl td{border:1px solid #aaa;padding:2px 4px;text-align:right}
td.pxname{background:#b00040;color:#ffff40;font-weight:bold;text-align:left}
td.name{text-align:left}
tr.active{background:#c0ffc0} tr.down{background:#ff9090} tr.maint{background:#c07820}
tr.draining{background:#20a0ff} tr.nolb{background:#e8e8d0} tr.frontend{background:#e8e8d0}
tr.backend{background:#e8e8d0}
"""


def _status_class(status: object) -> str:
    text = str(status or "")
    for key, cls in _STATUS_CLASS.items():
        if text.startswith(key):
            return cls
    return "active"


def render_stats_html(rt: ProcessRuntime, page: StatsPage | None = None,
                      now: float | None = None, wall: float | None = None,
                      *, admin: bool = False) -> str:
    """The stats page: one table per proxy with haproxy's column groups
    (Queue, Session rate, Sessions, Bytes, Denied, Errors, Warnings, Server).
    With `admin`, each server row gets a form that posts haproxy's actions."""
    now = time.monotonic() if now is None else now
    page = page or StatsPage(enabled=True)
    esc = html.escape
    info = dict(info_fields(rt, wall))
    head = ""
    if page.refresh:
        head = f'<meta http-equiv="refresh" content="{max(1, page.refresh // 1000)}">'
    parts = [
        "<!DOCTYPE html>\n<html><head><title>Statistics Report for keeplb"
        f"</title>{head}<style>{_CSS}</style></head><body>\n",
        "<h1>Statistics Report for pid " + esc(str(rt.pid)) + "</h1>\n",
        "<p>" + ("" if page.hide_version else esc(str(info["Version"])) + " &mdash; ")
        + f"uptime = {esc(str(info['Uptime']))}; maxconn = {rt.maxconn}; "
        f"current conns = {info['CurrConns']}</p>\n",
    ]
    cols = ("Cur", "Max", "Limit", "Cur", "Max", "Limit", "Total", "LbTot", "In", "Out",
            "Req", "Resp", "Req", "Conn", "Resp", "Retr", "Redis", "Status", "LastChk",
            "Wght", "Act", "Bck", "Chk", "Dwn", "Dwntme", "Thrtle")
    groups = (("Queue", 3), ("Sessions", 4), ("", 1), ("Bytes", 2), ("Denied", 2),
              ("Errors", 3), ("Warnings", 2), ("Server", 9))
    rows = stat_rows(rt, now)
    by_proxy: dict[str, list[Row]] = {}
    for row in rows:
        by_proxy.setdefault(str(row["pxname"]), []).append(row)
    for pxname, prow in by_proxy.items():
        parts.append('<table class="tbl">\n<tr><td class="pxname" colspan="28">'
                     f'<a name="{esc(pxname)}">{esc(pxname)}</a></td></tr>\n<tr><th></th>')
        parts.extend(f'<th colspan="{n}">{g}</th>' for g, n in groups)
        if admin:
            parts.append("<th></th>")
        parts.append("</tr>\n<tr><th></th>" + "".join(f"<th>{c}</th>" for c in cols))
        if admin:
            parts.append("<th>Action</th>")
        parts.append("</tr>\n")
        for row in prow:
            parts.append(_html_row(row, admin=admin))
        parts.append("</table>\n")
    parts.append("</body></html>\n")
    return "".join(parts)


def _html_row(row: Row, *, admin: bool) -> str:
    def cell(name: str) -> str:
        v = row.get(name)
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    sv = str(row["svname"])
    kind = {"FRONTEND": "frontend", "BACKEND": "backend"}.get(sv)
    cls = kind or _status_class(row.get("status"))
    lastchk = row.get("check_status") or ""
    cells = [f'<td class="name">{html.escape(sv)}</td>']
    for name in ("qcur", "qmax", "qlimit", "scur", "smax", "slim", "stot", "lbtot",
                 "bin", "bout", "dreq", "dresp", "ereq", "econ", "eresp", "wretr",
                 "wredis", "status"):
        cells.append(cell(name))
    cells.append(f"<td>{html.escape(str(lastchk))}</td>")
    for name in ("weight", "act", "bck", "chkfail", "chkdown", "downtime", "throttle"):
        cells.append(cell(name))
    if admin:
        if kind is None:
            px = html.escape(str(row["pxname"]))
            s = html.escape(sv)
            opts = "".join(f'<option value="{a}">{a}</option>' for a in _ADMIN_ACTIONS)
            cells.append(
                f'<td><form method="post" action=""><input type="hidden" name="b" '
                f'value="{px}"><input type="hidden" name="s" value="{s}">'
                f'<select name="action">{opts}</select><input type="submit" '
                'value="Apply"></form></td>')
        else:
            cells.append("<td></td>")
    return f'<tr class="{cls}">' + "".join(cells) + "</tr>\n"


# actions of the page's admin form, as haproxy names them (st_adm_action)
_ADMIN_ACTIONS = ("ready", "drain", "maint", "dhlth", "ehlth", "hrunn", "hnolb", "hdown")


# --------------------------------------------------------------------------
# a minimal HTTP/1.1 handler for `stats enable`
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes


def parse_http_request(data: bytes) -> HttpRequest | None:
    """One complete HTTP/1.x request from `data`, or None when it is malformed
    (the caller answers 400)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("iso-8859-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.splitlines()
    if not lines:
        return None
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            return None
        headers[name.strip().lower()] = value.strip()
    return HttpRequest(parts[0].upper(), parts[1], parts[2], headers, body)


def _response(status: int, reason: str, body: bytes, ctype: str = "text/plain",
              extra: Sequence[tuple[str, str]] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", "cache-control: no-cache",
            f"content-type: {ctype}", f"content-length: {len(body)}", "connection: close"]
    head.extend(f"{k}: {v}" for k, v in extra)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def stats_uri_matches(page: StatsPage, target: str) -> bool:
    """haproxy matches `stats uri` as a prefix of the request target."""
    return target.startswith(page.uri)


def _authorized(page: StatsPage, req: HttpRequest) -> bool:
    if not page.auth:
        return True
    value = req.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (user, password) in page.auth


def _predefined_acl(term: str, client: str | None) -> bool | None:
    """haproxy's predefined ACLs that need no request parsing; None when unknown."""
    negate = term.startswith("!")
    name = term.lstrip("!")
    if name in ("TRUE", "{ always_true }"):
        value = True
    elif name in ("FALSE", "{ always_false }"):
        value = False
    elif name == "LOCALHOST":
        value = client is not None and (client.startswith("127.") or client == "::1")
    else:
        return None
    return value != negate


def admin_condition_true(page: StatsPage, client: str | None = None) -> bool:
    """Whether `stats admin if|unless ...` holds for a client address. Only
    haproxy's predefined TRUE, FALSE, LOCALHOST (and always_true/false) are
    decided here; a condition naming another ACL is false (no admin)."""
    cond = page.admin
    if cond is None:
        return False
    result = False
    for conj in cond.terms:
        values = [_predefined_acl(t, client) for t in conj]
        if any(v is None for v in values):
            return False
        if all(values):
            result = True
    return result != cond.negate


def handle_stats_http(request_bytes: bytes, page: StatsPage, runtime: ProcessRuntime,
                      control: RuntimeControl | None = None, *, admin: bool | None = None,
                      client: str | None = None, now: float | None = None) -> bytes:
    """The whole HTTP response for one request to a frontend with `stats enable`.

    GET `uri` gives the page, `uri;csv` the CSV (as haproxy). Basic auth is
    checked against `stats auth`. A POST with `b`, `s`, `action` applies an
    admin action through `control` (a runtime.RuntimeControl) when `admin` is
    true (default: the `stats admin` condition, for the `client` address).
    Never raises on bad input: it answers 400, 401, 404 or 405.
    """
    req = parse_http_request(request_bytes)
    if req is None:
        return _response(400, "Bad request", b"<html><body><h1>400 Bad request</h1>\n"
                         b"Your browser sent an invalid request.\n</body></html>\n", "text/html")
    if not stats_uri_matches(page, req.target):
        return _response(404, "Not Found", b"Not Found\n")
    if not _authorized(page, req):
        realm = page.realm or "HAProxy Statistics"
        return _response(401, "Unauthorized",
                         b"<html><body><h1>401 Unauthorized</h1>\nYou need a valid user "
                         b"and password to access this content.\n</body></html>\n",
                         "text/html", [("www-authenticate", f'Basic realm="{realm}"')])
    if admin is None:
        admin = admin_condition_true(page, client)
    rest = unquote(req.target[len(page.uri):])
    if req.method == "POST":
        if not admin or control is None:
            return _response(403, "Forbidden", b"Forbidden\n")
        status = apply_page_action(runtime, control, req.body)
        return _response(303, "See Other", b"", extra=[("location", page.uri + f";st={status}")])
    if req.method not in ("GET", "HEAD"):
        return _response(405, "Method Not Allowed", b"Method Not Allowed\n")
    if ";csv" in rest:
        body = render_show_stat(runtime, now).encode()
        ctype = "text/plain"
    else:
        body = render_stats_html(runtime, page, now, admin=admin).encode()
        ctype = "text/html"
    if req.method == "HEAD":
        return _response(200, "OK", b"", ctype)
    return _response(200, "OK", body, ctype)


def apply_page_action(runtime: ProcessRuntime, control: RuntimeControl, body: bytes) -> str:
    """Applies the page's admin form (`b`, `s`, `action`) through `control`;
    returns haproxy's `st=` result code (DONE, NONE, ERRP)."""
    try:
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=64)
    except ValueError:
        return "ERRP"
    bname = (form.get("b") or [""])[0].lstrip("#")
    action = (form.get("action") or [""])[0]
    be = runtime.backend(bname)
    if be is None:
        for b in runtime.backends:
            if str(b.iid) == bname:
                be = b
    if be is None or action not in _ADMIN_ACTIONS:
        return "ERRP"
    done = False
    for sname in form.get("s", []):
        s = be.server(sname)
        if s is None:
            continue
        if action in ("ready", "drain", "maint"):
            control.set_admin_state(s, AdminState(action))
        elif action == "dhlth":
            control.disable_health(s)
        elif action == "ehlth":
            control.enable_health(s)
        else:
            control.set_health(s, {"hrunn": OpState.RUNNING, "hnolb": OpState.STOPPING,
                                   "hdown": OpState.STOPPED}[action])
        done = True
    return "DONE" if done else "NONE"


# --------------------------------------------------------------------------
# typed and json output (`show stat typed|json`, `show info typed|json`)
# --------------------------------------------------------------------------

# Tags (origin, nature, scope) and type of every field, as haproxy 2.6's typed
# output prints them; read from a running 2.6.12 (fields that stayed empty
# there follow the definitions in haproxy's stats.c).
_STAT_TAGS_TEXT = (
    "pxname=KNS:str svname=KNS:str qcur=MGP:u32 qmax=MMP:u32 scur=MGP:u32 smax=MMP:u32 "
    "slim=CLP:u32 stot=MCP:u64 bin=MCP:u64 bout=MCP:u64 dreq=MCP:u64 dresp=MCP:u64 "
    "ereq=MCP:u64 econ=MCP:u64 eresp=MCP:u64 wretr=MCP:u64 wredis=MCP:u64 status=SGP:str "
    "weight=MaP:u32 act=SGP:u32 bck=SGP:u32 chkfail=MCP:u64 chkdown=MCP:u64 lastchg=MAP:u32 "
    "downtime=MCP:u32 qlimit=CLP:u32 pid=KGP:u32 iid=KGS:u32 sid=KGS:u32 throttle=MaP:u32 "
    "lbtot=MCP:u64 tracked=CNS:str type=CGS:u32 rate=MRP:u32 rate_lim=CLP:u32 "
    "rate_max=MMP:u32 check_status=MOP:str check_code=MOP:u32 check_duration=MDP:u64 "
    "hrsp_1xx=MCP:u64 hrsp_2xx=MCP:u64 hrsp_3xx=MCP:u64 hrsp_4xx=MCP:u64 hrsp_5xx=MCP:u64 "
    "hrsp_other=MCP:u64 hanafail=MCP:u64 req_rate=MRP:u32 req_rate_max=MMP:u32 "
    "req_tot=MCP:u64 cli_abrt=MCP:u64 srv_abrt=MCP:u64 comp_in=MCP:u64 comp_out=MCP:u64 "
    "comp_byp=MCP:u64 comp_rsp=MCP:u64 lastsess=MAP:s32 last_chk=MOP:str last_agt=MOP:str "
    "qtime=MaP:u32 ctime=MaP:u32 rtime=MaP:u32 ttime=MaP:u32 agent_status=MOP:str "
    "agent_code=MOP:u32 agent_duration=MDP:u64 check_desc=MOP:str agent_desc=MOP:str "
    "check_rise=CGS:u32 check_fall=CGS:u32 check_health=CGS:u32 agent_rise=MaP:u32 "
    "agent_fall=MaP:u32 agent_health=MaP:u32 addr=CGS:str cookie=CGS:str mode=CGS:str "
    "algo=CGS:str conn_rate=MRP:u32 conn_rate_max=MMP:u32 conn_tot=MCP:u64 "
    "intercepted=MCP:u64 dcon=MCP:u64 dses=MCP:u64 wrew=MCP:u64 connect=MCP:u64 "
    "reuse=MCP:u64 cache_lookups=MCP:u64 cache_hits=MCP:u64 srv_icur=MGP:u32 "
    "src_ilim=MGP:u32 qtime_max=MMP:u32 ctime_max=MMP:u32 rtime_max=MMP:u32 "
    "ttime_max=MMP:u32 eint=MCP:u64 idle_conn_cur=MGP:u32 safe_conn_cur=MGP:u32 "
    "used_conn_cur=MGP:u32 need_conn_est=MGP:u32 uweight=MaP:u32 agg_server_status=MGP:u32 "
    "agg_server_check_status=MGP:u32 agg_check_status=MGP:u32 ssl_sess=MCP:u64 "
    "ssl_reused_sess=MCP:u64 ssl_failed_handshake=MCP:u64 h2_headers_rcvd=MCP:u64 "
    "h2_data_rcvd=MCP:u64 h2_settings_rcvd=MCP:u64 h2_rst_stream_rcvd=MCP:u64 "
    "h2_goaway_rcvd=MCP:u64 h2_detected_conn_protocol_errors=MCP:u64 "
    "h2_detected_strm_protocol_errors=MCP:u64 h2_rst_stream_resp=MCP:u64 "
    "h2_goaway_resp=MCP:u64 h2_open_connections=MGP:u64 h2_backend_open_streams=MGP:u64 "
    "h2_total_connections=MCP:u64 h2_backend_total_streams=MCP:u64 "
    "h1_open_connections=MGP:u64 h1_open_streams=MGP:u64 h1_total_connections=MCP:u64 "
    "h1_total_streams=MCP:u64 h1_bytes_in=MCP:u64 h1_bytes_out=MCP:u64 "
    "h1_spliced_bytes_in=MCP:u64 h1_spliced_bytes_out=MCP:u64"
)
STAT_TAGS: dict[str, tuple[str, str]] = {
    name: (spec.split(":")[0], spec.split(":")[1])
    for name, _, spec in (item.partition("=") for item in _STAT_TAGS_TEXT.split())
}
# a backend computes these from its servers: gauges rather than status/rates
_BACKEND_TAGS = {"act": ("MGP", "u32"), "bck": ("MGP", "u32"), "rate": ("MGP", "u32"),
                 "rate_max": ("MGP", "u32")}

# `show info` positions, tags and types (positions 45, 46 and 51 are fields
# haproxy 2.6 only prints in some builds)
_INFO_TAGS_TEXT = (
    "0:POS:str 1:POS:str 2:POS:str 3:CGS:u32 4:CGS:u32 5:KGP:u32 6:SGP:u32 7:MDP:str "
    "8:MDP:u32 9:CLP:u32 10:MGP:u32 11:MGP:u32 12:MCP:u32 13:CLP:u32 14:CLP:u32 15:CLP:u32 "
    "16:CLP:u32 17:MGP:u32 18:MCP:u32 19:MCP:u32 20:MMP:u32 21:MGP:u32 22:MCP:u32 "
    "23:CLP:u32 24:MGP:u32 25:MGP:u32 26:MRP:u32 27:CLP:u32 28:MMP:u32 29:MRP:u32 "
    "30:CLP:u32 31:MRP:u32 32:MRP:u32 33:CLP:u32 34:MMP:u32 35:MGP:u32 36:MMP:u32 "
    "37:MGP:u32 38:MRP:u32 39:MMP:u32 40:MCP:u32 41:MCP:u32 42:MRP:u32 43:MRP:u32 "
    "44:CLP:u32 47:MGP:u32 48:MGP:u32 49:MaP:u32 50:COS:str 52:MGP:u32 53:MGP:u32 "
    "54:MGP:u32 55:MGP:u32 56:MGP:u32 57:MGP:u32 58:MGP:u32 59:MGP:u32 60:MGP:u32 "
    "61:MGP:u64 62:MGP:u64 63:MRP:u64 64:MGP:u32 65:MCP:u32 66:POS:str 67:CLP:u32 "
    "68:MGP:u64 69:MGP:u64 70:MDP:u32 71:SGP:str"
)
INFO_TAGS: list[tuple[int, str, str]] = [
    (int(pos), tags, typ) for pos, tags, typ in (i.split(":") for i in _INFO_TAGS_TEXT.split())
]

_ORIGIN = {"M": "Metric", "S": "Status", "K": "Key", "C": "Config", "P": "Product"}
_NATURE = {"A": "Age", "a": "Avg", "C": "Counter", "D": "Duration", "G": "Gauge",
           "L": "Limit", "M": "Max", "N": "Name", "O": "Output", "R": "Rate", "T": "Time"}
_SCOPE = {"P": "Process", "S": "Service", "s": "System", "C": "Cluster"}
_OBJ = {0: ("F", "Frontend"), 1: ("B", "Backend"), 2: ("S", "Server")}


def _field_pos(name: str) -> int:
    """A field's position: its CSV column, minus the '-' separator column,
    which is not a field, for the per-module counters after it."""
    idx = STAT_FIELDS.index(name)
    return idx - 1 if idx > STAT_FIELDS.index("-") else idx


def _typed_fields(row: Row) -> list[tuple[int, str, str, str, Value]]:
    """(pos, name, tags, type, value) of the non-empty fields of a row."""
    backend = row.get("type") == 1
    out: list[tuple[int, str, str, str, Value]] = []
    for name in STAT_FIELDS:
        v = row.get(name)
        if v is None or name == "-":
            continue
        tags, typ = (_BACKEND_TAGS.get(name) if backend else None) or STAT_TAGS[name]
        out.append((_field_pos(name), name, tags, typ, v))
    return out


def render_stat_typed(rows: Iterable[Row], *, desc: bool = False) -> str:
    """`show stat typed [desc]`: 'F.<iid>.<sid>.<pos>.<name>.1:<tags>:<type>:<value>'
    lines, each followed by ':"<description>"' with `desc`."""
    lines = []
    for row in rows:
        obj = _OBJ[int(row.get("type") or 0)][0]
        for pos, name, tags, typ, v in _typed_fields(row):
            lines.append(f"{obj}.{row['iid']}.{row['sid']}.{pos}.{name}.1:{tags}:{typ}:{v}"
                         f"{_desc(STAT_DESC.get(name), desc)}\n")
    return "".join(lines)


def _json_tags(tags: str) -> dict[str, str]:
    return {"origin": _ORIGIN[tags[0]], "nature": _NATURE[tags[1]], "scope": _SCOPE[tags[2]]}


def _json_value(typ: str, v: Value) -> dict[str, object]:
    return {"type": typ, "value": str(v) if typ == "str" else int(v or 0)}


def render_stat_json(rows: Iterable[Row]) -> str:
    """`show stat json`: one list of field objects per row, as haproxy 2.6."""
    out = []
    for row in rows:
        obj = _OBJ[int(row.get("type") or 0)][1]
        out.append([
            {"objType": obj, "proxyId": row["iid"], "id": row["sid"],
             "field": {"pos": pos, "name": name}, "processNum": 1,
             "tags": _json_tags(tags), "value": _json_value(typ, v)}
            for pos, name, tags, typ, v in _typed_fields(row)])
    return json.dumps(out, separators=(",", ":")) + "\n"


def render_info_typed(rt: ProcessRuntime, wall: float | None = None, *,
                      desc: bool = False) -> str:
    return "".join(f"{pos}.{name}.1:{tags}:{typ}:{value}{_desc(INFO_DESC.get(name), desc)}\n"
                   for (name, value), (pos, tags, typ) in zip(info_fields(rt, wall), INFO_TAGS,
                                                                strict=True))


def render_info_json(rt: ProcessRuntime, wall: float | None = None) -> str:
    return json.dumps([
        {"field": {"pos": pos, "name": name}, "processNum": 1, "tags": _json_tags(tags),
         "value": _json_value(typ, value)}
        for (name, value), (pos, tags, typ) in zip(info_fields(rt, wall), INFO_TAGS, strict=True)
    ], separators=(",", ":")) + "\n"
