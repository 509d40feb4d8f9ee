"""Prometheus exporter with the families of HAProxy 2.6's built-in one.

`http-request use-service prometheus-exporter if { path /metrics }` in a
`mode http` frontend: the relay hands the request to `handle_metrics_http`.
Metric names, HELP texts, label names and the `state` label of the status
families were taken from a running haproxy 2.6.12, so dashboards and alerts
written for haproxy's exporter keep working. HTTP-only families are left out
for TCP proxies, and a value haproxy leaves empty in `show stat` is NaN
here, as in haproxy.

Values come from stats.stat_rows(), the same rows `show stat` prints.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from keeplb.config.model import Mode
from keeplb.lb import stats
from keeplb.lb.server import AdminState, OpState, ProcessRuntime, ServerRuntime
from keeplb.vrrp.metrics import vrrp_families

# what generate_latest() writes (the text format 0.0.4), whatever the library's default
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

SERVER_STATES = ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")
PROXY_STATES = ("DOWN", "UP")
CHECK_STATES = ("HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP",
                "L7TOUT", "L7RSP", "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK")
HTTP_CODES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: name without 'haproxy_<scope>_', the `show stat`
    field it reads (or a special name), gauge/counter, haproxy's HELP text,
    whether it only exists for `mode http`, and the scale (0.001: ms -> s)."""

    name: str
    field: str
    kind: str  # 'gauge' | 'counter'
    help: str
    http: bool = False
    scale: float = 1.0


G, C = "gauge", "counter"
_CUR_SESS = "Number of current sessions on the frontend, backend or server"
_MAX_SESS = "Highest value of current sessions encountered since process started"
_LIMIT_SESS = "Frontend/listener/server's maxconn, backend's fullconn"
_TOT_SESS = "Total number of sessions since process started"
_BIN = "Total number of request bytes since process started"
_BOUT = "Total number of response bytes since process started"
_DREQ = "Total number of denied requests since process started"
_DRESP = "Total number of denied responses since process started"
_STATUS = "Current status of the service, per state label value."
_RATE_MAX = "Highest value of sessions per second observed since the worker process started"
_HRSP = ("Total number of HTTP responses with status 100-199 returned by this object "
         "since the worker process started")
_REQ_TOT = "Total number of HTTP requests processed by this object since the worker process started"
_COMP = (
    Family("http_comp_bytes_in_total", "comp_in", C, "Total number of bytes submitted to the HTTP compressor for this object since the worker process started", True),
    Family("http_comp_bytes_out_total", "comp_out", C, "Total number of bytes emitted by the HTTP compressor for this object since the worker process started", True),
    Family("http_comp_bytes_bypassed_total", "comp_byp", C, "Total number of bytes that bypassed HTTP compression for this object since the worker process started (CPU/memory/bandwidth limitation)", True),
    Family("http_comp_responses_total", "comp_rsp", C, "Total number of HTTP responses that were compressed for this object since the worker process started", True),
)
_CACHE = (
    Family("http_cache_lookups_total", "cache_lookups", C, "Total number of HTTP requests looked up in the cache on this frontend/backend since the worker process started", True),
    Family("http_cache_hits_total", "cache_hits", C, "Total number of HTTP requests not found in the cache on this frontend/backend since the worker process started", True),
)
_QUEUE = (
    Family("current_queue", "qcur", G, "Number of current queued connections"),
    Family("max_queue", "qmax", G, "Highest value of queued connections encountered since process started"),
)
_SESSIONS = (
    Family("current_sessions", "scur", G, _CUR_SESS),
    Family("max_sessions", "smax", G, _MAX_SESS),
    Family("limit_sessions", "slim", G, _LIMIT_SESS),
    Family("sessions_total", "stot", C, _TOT_SESS),
    Family("bytes_in_total", "bin", C, _BIN),
    Family("bytes_out_total", "bout", C, _BOUT),
)
_WARNINGS = (
    Family("connection_errors_total", "econ", C, "Total number of failed connections to server since the worker process started"),
    Family("response_errors_total", "eresp", C, "Total number of invalid responses since the worker process started"),
    Family("retry_warnings_total", "wretr", C, "Total number of server connection retries since the worker process started"),
    Family("redispatch_warnings_total", "wredis", C, "Total number of server redispatches due to connection failures since the worker process started"),
)
_TIMES = (
    Family("queue_time_average_seconds", "qtime", G, "Avg. queue time for last 1024 successful connections.", scale=0.001),
    Family("connect_time_average_seconds", "ctime", G, "Avg. connect time for last 1024 successful connections.", scale=0.001),
    Family("response_time_average_seconds", "rtime", G, "Avg. response time for last 1024 successful connections.", scale=0.001),
    Family("total_time_average_seconds", "ttime", G, "Avg. total time for last 1024 successful connections.", scale=0.001),
    Family("failed_header_rewriting_total", "wrew", C, "Total number of failed HTTP header rewrites since the worker process started"),
    Family("connection_attempts_total", "connect", C, "Total number of outgoing connection attempts on this backend/server since the worker process started"),
    Family("connection_reuses_total", "reuse", C, "Total number of reused connection on this backend/server since the worker process started"),
)
_MAX_TIMES = (
    Family("max_queue_time_seconds", "qtime_max", G, "Maximum observed time spent in the queue", scale=0.001),
    Family("max_connect_time_seconds", "ctime_max", G, "Maximum observed time spent waiting for a connection to complete", scale=0.001),
    Family("max_response_time_seconds", "rtime_max", G, "Maximum observed time spent waiting for a server response", scale=0.001),
    Family("max_total_time_seconds", "ttime_max", G, "Maximum observed total request+response time (request+queue+connect+response+processing)", scale=0.001),
    Family("internal_errors_total", "eint", C, "Total number of internal errors since process started"),
)
_CHECK_COMMON = (
    Family("check_up_down_total", "chkdown", C, "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started"),
    Family("check_last_change_seconds", "lastchg", G, "How long ago the last server state changed, in seconds"),
    Family("downtime_seconds_total", "downtime", C, "Total time spent in DOWN state, for server or backend"),
)
_LAST_SESS = Family("last_session_seconds", "lastsess", G, "How long ago some traffic was seen on this object on this worker process, in seconds")
_ABORTS = (
    Family("client_aborts_total", "cli_abrt", C, "Total number of requests or connections aborted by the client since the worker process started"),
    Family("server_aborts_total", "srv_abrt", C, "Total number of requests or connections aborted by the server since the worker process started"),
)
_WEIGHT = Family("weight", "weight", G, "Server's effective weight, or sum of active servers' effective weights for a backend")
_UWEIGHT = Family("uweight", "uweight", G, "Server's user weight, or sum of active servers' user weights for a backend")

FRONTEND_FAMILIES: tuple[Family, ...] = (
    *_SESSIONS[:3], _SESSIONS[3], _SESSIONS[4], _SESSIONS[5],
    Family("requests_denied_total", "dreq", C, _DREQ),
    Family("responses_denied_total", "dresp", C, _DRESP),
    Family("request_errors_total", "ereq", C, "Total number of invalid requests since process started"),
    Family("status", "@status", G, _STATUS),
    Family("limit_session_rate", "rate_lim", G, "Limit on the number of sessions accepted in a second (frontend only, 'rate-limit sessions' setting)"),
    Family("max_session_rate", "rate_max", G, _RATE_MAX),
    Family("http_responses_total", "@hrsp", C, _HRSP, True),
    Family("http_requests_rate_max", "req_rate_max", G, "Highest value of http requests observed since the worker process started", True),
    Family("http_requests_total", "req_tot", C, _REQ_TOT, True),
    *_COMP,
    Family("connections_rate_max", "conn_rate_max", G, "Highest value of connections per second observed since the worker process started"),
    Family("connections_total", "conn_tot", C, "Total number of new connections accepted on this frontend since the worker process started"),
    Family("intercepted_requests_total", "intercepted", C, "Total number of HTTP requests intercepted on the frontend (redirects/stats/services) since the worker process started", True),
    Family("denied_connections_total", "dcon", C, "Total number of incoming connections blocked on a listener/frontend by a tcp-request connection rule since the worker process started"),
    Family("denied_sessions_total", "dses", C, "Total number of incoming sessions blocked on a listener/frontend by a tcp-request connection rule since the worker process started"),
    Family("failed_header_rewriting_total", "wrew", C, "Total number of failed HTTP header rewrites since the worker process started"),
    *_CACHE,
    Family("internal_errors_total", "eint", C, "Total number of internal errors since process started"),
)

BACKEND_FAMILIES: tuple[Family, ...] = (
    *_QUEUE, *_SESSIONS,
    Family("requests_denied_total", "dreq", C, _DREQ),
    Family("responses_denied_total", "dresp", C, _DRESP),
    *_WARNINGS,
    Family("status", "@status", G, _STATUS),
    _WEIGHT,
    Family("active_servers", "act", G, "Total number of active UP servers with a non-zero weight"),
    Family("backup_servers", "bck", G, "Total number of backup UP servers with a non-zero weight"),
    *_CHECK_COMMON,
    Family("loadbalanced_total", "lbtot", C, "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)"),
    Family("max_session_rate", "rate_max", G, _RATE_MAX),
    Family("http_responses_total", "@hrsp", C, _HRSP, True),
    Family("http_requests_total", "req_tot", C, _REQ_TOT, True),
    *_ABORTS, *_COMP, _LAST_SESS, *_TIMES[:4], *_TIMES[4:], *_CACHE, *_MAX_TIMES,
    _UWEIGHT,
    Family("agg_server_status", "@agg_server_status", G, "Backend's aggregated gauge of servers' status"),
    Family("agg_server_check_status", "@agg_server_status", G, "Backend's aggregated gauge of servers' state check status"),
    Family("agg_check_status", "@agg_check_status", G, "Backend's aggregated gauge of servers' state check status"),
)

SERVER_FAMILIES: tuple[Family, ...] = (
    *_QUEUE, *_SESSIONS,
    Family("responses_denied_total", "dresp", C, _DRESP),
    *_WARNINGS,
    Family("status", "@status", G, _STATUS),
    _WEIGHT,
    Family("check_failures_total", "chkfail", C, "Total number of failed individual health checks per server/backend, since the worker process started"),
    *_CHECK_COMMON,
    Family("queue_limit", "qlimit", G, "Limit on the number of connections in queue, for servers only (maxqueue argument)"),
    Family("current_throttle", "throttle", G, "Throttling ratio applied to a server's maxconn and weight during the slowstart period (0 to 100%)"),
    Family("loadbalanced_total", "lbtot", C, "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)"),
    Family("max_session_rate", "rate_max", G, _RATE_MAX),
    Family("check_status", "@check_status", G, "Status of last health check, per state label value."),
    Family("check_code", "@check_code", G, "layer5-7 code, if available of the last health check."),
    Family("check_duration_seconds", "@check_duration", G, "Total duration of the latest server health check, in seconds."),
    Family("http_responses_total", "@hrsp", C, _HRSP, True),
    *_ABORTS, _LAST_SESS, *_TIMES,
    Family("idle_connections_current", "srv_icur", G, "Current number of idle connections available for reuse on this server"),
    Family("idle_connections_limit", "src_ilim", G, "Limit on the number of available idle connections on this server (server 'pool_max_conn' directive)"),
    *_MAX_TIMES,
    Family("unsafe_idle_connections_current", "idle_conn_cur", G, "Current number of unsafe idle connections"),
    Family("safe_idle_connections_current", "safe_conn_cur", G, "Current number of safe idle connections"),
    Family("used_connections_current", "used_conn_cur", G, "Current number of connections in use"),
    Family("need_connections_current", "need_conn_est", G, "Estimated needed number of connections"),
    _UWEIGHT,
)


def server_state_label(s: ServerRuntime) -> str:
    """The `state` label of haproxy_server_status (haproxy's promex_srv_status)."""
    if s.admin is AdminState.MAINT:
        return "MAINT"
    if s.admin is AdminState.DRAIN:
        return "DRAIN"
    if s.op is OpState.STOPPED:
        return "DOWN"
    if s.op is OpState.STOPPING:
        return "NOLB"
    return "UP"


def _num(v: object) -> float:
    if v is None or v == "":
        return math.nan
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return math.nan


def _family(scope: str, fam: Family) -> CounterMetricFamily | GaugeMetricFamily:
    name = f"haproxy_{scope}_{fam.name}"
    labels = {"frontend": ["proxy"], "backend": ["proxy"], "server": ["proxy", "server"]}[scope]
    if fam.field in ("@status", "@check_status", "@agg_server_status", "@agg_check_status"):
        labels = [*labels, "state"]
    elif fam.field == "@hrsp":
        labels = [*labels, "code"]
    if fam.kind == C:
        return CounterMetricFamily(name, fam.help, labels=labels)
    return GaugeMetricFamily(name, fam.help, labels=labels)


def _add(metric: CounterMetricFamily | GaugeMetricFamily, fam: Family, labels: list[str],
         row: Mapping[str, Any], obj: object) -> None:
    f = fam.field
    if f == "@status":
        states: tuple[str, ...] = PROXY_STATES
        if isinstance(obj, ServerRuntime):
            cur, states = server_state_label(obj), SERVER_STATES
        else:
            cur = "UP" if str(row.get("status", "")) in ("UP", "OPEN") else "DOWN"
        for st in states:
            metric.add_metric([*labels, st], 1.0 if st == cur else 0.0)
    elif f == "@hrsp":
        for code in HTTP_CODES:
            metric.add_metric([*labels, code], _num(row.get(f"hrsp_{code}")))
    elif f == "@check_status":
        if isinstance(obj, ServerRuntime) and obj.check_enabled:
            for st in CHECK_STATES:
                metric.add_metric([*labels, st], 1.0 if obj.check_status == st else 0.0)
    elif f == "@check_code":
        if isinstance(obj, ServerRuntime) and obj.check_enabled:
            metric.add_metric(labels, float(obj.check_code or 0))
    elif f == "@check_duration":
        if isinstance(obj, ServerRuntime) and obj.check_enabled:
            metric.add_metric(labels, (obj.check_duration_ms or 0) / 1000.0)
    elif f == "@agg_server_status":
        servers = getattr(obj, "servers", [])
        for st in SERVER_STATES:
            metric.add_metric([*labels, st],
                              float(sum(1 for s in servers if server_state_label(s) == st)))
    elif f == "@agg_check_status":
        servers = getattr(obj, "servers", [])
        for st in CHECK_STATES:
            metric.add_metric([*labels, st], float(sum(
                1 for s in servers if s.check_enabled and s.check_status == st)))
    else:
        v = _num(row.get(f))
        metric.add_metric(labels, v * fam.scale if fam.scale != 1.0 else v)


def _nofile() -> float:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return float(soft) if soft != resource.RLIM_INFINITY else math.nan


# haproxy 2.6's process families in its order: (name, type, HELP, `show info`
# field or a special name). A name not ending in _total that haproxy types as
# a counter is a gauge here: prometheus-client would rename its samples.
_NAN = "nan"
PROCESS_FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("nbthread", G, "Number of started threads (global.nbthread)", "Nbthread"),
    ("nbproc", G, "Number of started worker processes (historical, always 1)", "Nbproc"),
    ("relative_process_id", G, "Relative worker process number (1)", "Process_num"),
    ("uptime_seconds", G, "How long ago this worker process was started (seconds)", "Uptime_sec"),
    ("pool_failures_total", C, "Number of failed pool allocations since this worker was started", "PoolFailed"),
    ("max_fds", G, "Hard limit on the number of per-process file descriptors", "nofile"),
    ("max_sockets", G, "Hard limit on the number of per-process sockets", "nofile"),
    ("max_connections", G, "Hard limit on the number of per-process connections (configured or imposed by Ulimit-n)", "Maxconn"),
    ("hard_max_connections", G, "Hard limit on the number of per-process connections (imposed by Memmax_MB or Ulimit-n)", "Hard_maxconn"),
    ("current_connections", G, "Current number of connections on this worker process", "CurrConns"),
    ("connections_total", C, "Total number of connections on this worker process since started", "CumConns"),
    ("requests_total", C, "Total number of requests on this worker process since started", "CumReq"),
    ("max_ssl_connections", G, "Hard limit on the number of per-process SSL endpoints (front+back), 0=unlimited", "MaxSslConns"),
    ("current_ssl_connections", G, "Current number of SSL endpoints on this worker process (front+back)", "CurrSslConns"),
    ("ssl_connections_total", C, "Total number of SSL endpoints on this worker process since started (front+back)", "CumSslConns"),
    ("max_pipes", G, "Hard limit on the number of pipes for splicing, 0=unlimited", "Maxpipes"),
    ("pipes_used_total", C, "Current number of pipes in use in this worker process", "PipesUsed"),
    ("pipes_free_total", C, "Current number of allocated and available pipes in this worker process", "PipesFree"),
    ("current_connection_rate", G, "Number of front connections created on this worker process over the last second", "ConnRate"),
    ("limit_connection_rate", G, "Hard limit for ConnRate (global.maxconnrate)", "ConnRateLimit"),
    ("max_connection_rate", G, "Highest ConnRate reached on this worker process since started (in connections per second)", "MaxConnRate"),
    ("current_session_rate", G, "Number of sessions created on this worker process over the last second", "SessRate"),
    ("limit_session_rate", G, "Hard limit for SessRate (global.maxsessrate)", "SessRateLimit"),
    ("max_session_rate", G, "Highest SessRate reached on this worker process since started (in sessions per second)", "MaxSessRate"),
    ("current_ssl_rate", G, "Number of SSL connections created on this worker process over the last second", "SslRate"),
    ("limit_ssl_rate", G, "Hard limit for SslRate (global.maxsslrate)", "SslRateLimit"),
    ("max_ssl_rate", G, "Highest SslRate reached on this worker process since started (in connections per second)", "MaxSslRate"),
    ("current_frontend_ssl_key_rate", G, "Number of SSL keys created on frontends in this worker process over the last second", "SslFrontendKeyRate"),
    ("max_frontend_ssl_key_rate", G, "Highest SslFrontendKeyRate reached on this worker process since started (in SSL keys per second)", "SslFrontendMaxKeyRate"),
    ("frontend_ssl_reuse", G, "Percent of frontend SSL connections which did not require a new key", "SslFrontendSessionReuse_pct"),
    ("current_backend_ssl_key_rate", G, "Number of SSL keys created on backends in this worker process over the last second", "SslBackendKeyRate"),
    ("max_backend_ssl_key_rate", G, "Highest SslBackendKeyRate reached on this worker process since started (in SSL keys per second)", "SslBackendMaxKeyRate"),
    ("ssl_cache_lookups_total", C, "Total number of SSL session ID lookups in the SSL session cache on this worker since started", "SslCacheLookups"),
    ("ssl_cache_misses_total", C, "Total number of SSL session ID lookups that didn't find a session in the SSL session cache on this worker since started", "SslCacheMisses"),
    ("http_comp_bytes_in_total", C, "Number of bytes submitted to the HTTP compressor in this worker process over the last second", "CompressBpsIn"),
    ("http_comp_bytes_out_total", C, "Number of bytes emitted by the HTTP compressor in this worker process over the last second", "CompressBpsOut"),
    ("limit_http_comp", G, "Limit of CompressBpsOut beyond which HTTP compression is automatically disabled", "CompressBpsRateLim"),
    ("current_zlib_memory", G, "Amount of memory currently used by HTTP compression on the current worker process (in bytes)", _NAN),
    ("max_zlib_memory", G, "Limit on the amount of memory used by HTTP compression above which it is automatically disabled (in bytes, see global.maxzlibmem)", _NAN),
    ("current_tasks", G, "Total number of tasks in the current worker process (active + sleeping)", "Tasks"),
    ("current_run_queue", G, "Total number of active tasks+tasklets in the current worker process", "Run_queue"),
    ("idle_time_percent", G, "Percentage of last second spent waiting in the current worker thread", "Idle_pct"),
    ("stopping", G, "1 if the worker process is currently stopping, otherwise zero", "Stopping"),
    ("jobs", G, "Current number of active jobs on the current worker process (frontend connections, master connections, listeners)", "Jobs"),
    ("unstoppable_jobs", G, "Current number of unstoppable jobs on the current worker process (master connections)", "Unstoppable Jobs"),
    ("listeners", G, "Current number of active listeners on the current worker process", "Listeners"),
    ("active_peers", G, "Current number of verified active peers connections on the current worker process", "ActivePeers"),
    ("connected_peers", G, "Current number of peers having passed the connection step on the current worker process", "ConnectedPeers"),
    ("dropped_logs_total", C, "Total number of dropped logs for current worker process since started", "DroppedLogs"),
    ("busy_polling_enabled", G, "1 if busy-polling is currently in use on the worker process, otherwise zero (config.busy-polling)", "BusyPolling"),
    ("failed_resolutions", G, "Total number of failed DNS resolutions in current worker process since started", "FailedResolutions"),
    ("bytes_out_total", C, "Total number of bytes emitted by current worker process since started", "TotalBytesOut"),
    ("spliced_bytes_out_total", C, "Total number of bytes emitted by current worker process through a kernel pipe since started", "TotalSplicdedBytesOut"),
    ("bytes_out_rate", G, "Number of bytes emitted by current worker process over the last second", "BytesOutRate"),
    ("recv_logs_total", C, "Total number of log messages received by log-forwarding listeners on this worker process since started", "CumRecvLogs"),
    ("build_info", G, "Build info", "Version"),
    ("max_memory_bytes", G, "Worker process's hard limit on memory usage in byes (-m on command line)", "Memmax_bytes"),
    ("pool_allocated_bytes", G, "Amount of memory allocated in pools (in bytes)", "PoolAlloc_bytes"),
    ("pool_used_bytes", G, "Amount of pool memory currently used (in bytes)", "PoolUsed_bytes"),
    ("start_time_seconds", G, "Start time in seconds", "Start_time_sec"),
)


def process_families(rt: ProcessRuntime, wall: float) -> Iterator[Metric]:
    """The haproxy_process_* families, from the `show info` fields."""
    info = dict(stats.info_fields(rt, wall))
    for name, kind, help_text, source in PROCESS_FAMILIES:
        full = f"haproxy_process_{name}"
        if name == "build_info":
            build = GaugeMetricFamily(full, help_text, labels=["version"])
            build.add_metric([str(info[source])], 1.0)
            yield build
            continue
        if source == "nofile":
            value = _nofile()
        elif source == _NAN:
            value = math.nan
        else:
            value = _num(info[source])
        m = (CounterMetricFamily if kind == C else GaugeMetricFamily)(full, help_text)
        m.add_metric([], value)
        yield m


def haproxy_families(rt: ProcessRuntime, now: float | None = None,
                     wall: float | None = None) -> Iterator[Metric]:
    """Every haproxy_* family for the runtime, in haproxy's order (process,
    frontends, backends, servers), one family with all its samples at a time;
    a family without samples is left out, as haproxy does."""
    now = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall
    yield from process_families(rt, wall)
    fe_rows = [(fe, stats.frontend_row(rt, fe)) for fe in rt.frontends]
    for fam in FRONTEND_FAMILIES:
        m = _family("frontend", fam)
        for fe, row in fe_rows:
            if fam.http and fe.config.mode is not Mode.HTTP:
                continue
            _add(m, fam, [fe.name], row, fe)
        if m.samples:
            yield m
    be_rows = [(be, stats.backend_row(rt, be, now)) for be in rt.backends]
    for fam in BACKEND_FAMILIES:
        m = _family("backend", fam)
        for be, row in be_rows:
            if fam.http and be.config.mode is not Mode.HTTP:
                continue
            _add(m, fam, [be.name], row, be)
        if m.samples:
            yield m
    sv_rows = [(be, s, stats.server_row(rt, be, s, now))
               for be in rt.backends for s in be.servers]
    for fam in SERVER_FAMILIES:
        m = _family("server", fam)
        for be, s, row in sv_rows:
            if fam.http and be.config.mode is not Mode.HTTP:
                continue
            _add(m, fam, [be.name, s.name], row, s)
        if m.samples:
            yield m


class HaproxyCollector:
    """prometheus-client collector reading the runtime at each scrape; the
    VRRP families are added when `vrrp_status` gives a status dict."""

    def __init__(self, runtime: ProcessRuntime | None,
                 vrrp_status: Callable[[], Mapping[str, Any] | None] | None = None) -> None:
        self.runtime = runtime
        self.vrrp_status = vrrp_status

    def collect(self) -> Iterator[Metric]:
        if self.runtime is not None:
            yield from haproxy_families(self.runtime)
        if self.vrrp_status is not None:
            yield from vrrp_families(self.vrrp_status())


def render_metrics(runtime: ProcessRuntime | None,
                   vrrp_status: Mapping[str, Any] | None = None) -> bytes:
    """One scrape in the Prometheus text format (0.0.4), from a private registry
    (no process-global state: several workers or tests never share metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HaproxyCollector(runtime, (lambda: vrrp_status) if vrrp_status else None))
    return generate_latest(registry)


def handle_metrics_http(request: bytes, runtime: ProcessRuntime | None,
                        vrrp_status: Mapping[str, Any] | None = None) -> bytes:
    """The whole HTTP/1.1 response for `use-service prometheus-exporter`:
    200 with the scrape for GET/HEAD, 405 for other methods, 400 for a
    request that does not parse. Never raises on bad input."""
    req = stats.parse_http_request(request)
    if req is None:
        return _http(400, "Bad Request", b"Bad Request\n", "text/plain")
    if req.method not in ("GET", "HEAD"):
        return _http(405, "Method Not Allowed", b"Method Not Allowed\n", "text/plain",
                     [("allow", "GET, HEAD")])
    body = render_metrics(runtime, vrrp_status)
    return _http(200, "OK", b"" if req.method == "HEAD" else body, CONTENT_TYPE,
                 length=len(body))


def _http(status: int, reason: str, body: bytes, ctype: str,
          extra: list[tuple[str, str]] | None = None, length: int | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"content-type: {ctype}",
            f"content-length: {len(body) if length is None else length}",
            "cache-control: no-cache", "connection: close"]
    head.extend(f"{k}: {v}" for k, v in extra or [])
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


__all__ = [
    "HaproxyCollector",
    "handle_metrics_http",
    "haproxy_families",
    "render_metrics",
    "server_state_label",
]


VRRP_STATUS_ENV = "KEEPLB_VRRP_STATUS_FILE"


def read_vrrp_status(path: str | None = None) -> dict[str, Any] | None:
    """The VRRP side's status for keeplb_vrrp_* families, when this balancer runs
    beside it (`keeplb run` sets KEEPLB_VRRP_STATUS_FILE); None otherwise or when
    the file cannot be read (a scrape never fails because of it)."""
    import json
    import os

    path = path or os.environ.get(VRRP_STATUS_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
