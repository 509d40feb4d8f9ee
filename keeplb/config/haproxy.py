"""haproxy.cfg (HAProxy 2.6 grammar) into the typed model of keeplb.config.model.

    parse(paths, env=None) -> (HaproxyConfig, Diagnostics)

`paths` are what `haproxy -f` takes: files, or directories whose *.cfg files are
read in lexical order. The parser never raises on bad input and never prints:
where haproxy 2.6 fails (`haproxy -c` exits 1) keeplb reports an error on the
same line; where haproxy warns keeplb warns; a keyword haproxy accepts that
keeplb does not act on gets `keyword 'x' is not supported by keeplb`.

The keyword tables below (configuration.txt §3, §4.1, §5.1, §5.2) drive both the
parser and `keyword_table()`, the docs table, so the two cannot drift.
"""

from __future__ import annotations

SUPPORTED = "supported"
UNSUPPORTED = "unsupported"

# Sections haproxy 2.6 knows that keeplb does not read: recognised, skipped, warned.
UNSUPPORTED_SECTIONS = (
    "peers",
    "resolvers",
    "userlist",
    "cache",
    "program",
    "ring",
    "http-errors",
    "mailers",
    "log-forward",
    "fcgi-app",
)
PROXY_SECTIONS = ("defaults", "frontend", "backend", "listen")
SECTIONS = ("global", *PROXY_SECTIONS, *UNSUPPORTED_SECTIONS)

# --------------------------------------------------------------------------
# proxy keywords: the §4.1 matrix. Capabilities: D defaults, N named defaults
# only, F frontend, L listen, B backend. Multi-word keywords keep their words.
# --------------------------------------------------------------------------

_MATRIX = """
acl N F L B
backlog D F L
balance D L B
bind F L
bind-process D F L B
capture-cookie F L
capture-request F L
capture-response F L
clitcpka-cnt D F L
clitcpka-idle D F L
clitcpka-intvl D F L
compression D F L B
cookie D L B
declare-capture F L
default-server D L B
default_backend D F L
description F L B
disabled D F L B
dispatch L B
email-alert-from D F L B
email-alert-level D F L B
email-alert-mailers D F L B
email-alert-myhostname D F L B
email-alert-to D F L B
enabled D F L B
errorfile D F L B
errorfiles D F L B
errorloc D F L B
errorloc302 D F L B
errorloc303 D F L B
error-log-format D F L
force-persist L B
filter F L B
fullconn D L B
hash-type D L B
http-after-response N F L B
http-check D L B
http-error D F L B
http-request N F L B
http-response N F L B
http-reuse D L B
http-send-name-header D L B
id F L B
ignore-persist L B
load-server-state-from-file D L B
log D F L B
log-format D F L
log-format-sd D F L
log-tag D F L B
max-keep-alive-queue D L B
maxconn D F L
mode D F L B
monitor-fail F L
monitor-uri D F L
option D F L B
external-check-command D L B
external-check-path D L B
persist-rdp-cookie D L B
rate-limit-sessions D F L
redirect F L B
retries D L B
retry-on D L B
server L B
server-state-file-name D L B
server-template L B
source D L B
srvtcpka-cnt D L B
srvtcpka-idle D L B
srvtcpka-intvl D L B
stats-admin F L B
stats-auth D F L B
stats-enable D F L B
stats-hide-version D F L B
stats-http-request F L B
stats-realm D F L B
stats-refresh D F L B
stats-scope D F L B
stats-show-desc D F L B
stats-show-legends D F L B
stats-show-node D F L B
stats-uri D F L B
stick-match L B
stick-on L B
stick-store-request L B
stick-store-response L B
stick-table F L B
tcp-check D L B
tcp-request-connection N F L
tcp-request-content N F L B
tcp-request-inspect-delay N F L B
tcp-request-session N F L
tcp-response-content N L B
tcp-response-inspect-delay N L B
timeout-check D L B
timeout-client D F L
timeout-client-fin D F L
timeout-connect D L B
timeout-http-keep-alive D F L B
timeout-http-request D F L B
timeout-queue D L B
timeout-server D L B
timeout-server-fin D L B
timeout-tarpit D F L B
timeout-tunnel D L B
transparent D L B
unique-id-format D F L
unique-id-header D F L
use_backend F L
use-fcgi-app L B
use-server L B
"""

# keyword (multi-word ones joined with a space) -> capability letters
PROXY_CAPS: dict[str, str] = {}
_MULTI_FIRST = {
    "capture", "email-alert", "external-check", "persist", "rate-limit", "stats",
    "stick", "tcp-request", "tcp-response", "timeout", "monitor", "declare",
}
_SINGLE = {"monitor-uri", "stick-table"}
for _row in _MATRIX.strip().splitlines():
    _kw, *_caps = _row.split()
    for _first in sorted(_MULTI_FIRST, key=len, reverse=True):
        if _kw.startswith(_first + "-") and _kw not in _SINGLE:
            _kw = _first + " " + _kw[len(_first) + 1 :]
            break
    PROXY_CAPS[_kw] = "".join(_caps)

# Keywords taking a second word that selects the real keyword.
PROXY_MULTI = _MULTI_FIRST

PROXY_SUPPORTED = {
    "acl", "backlog", "balance", "bind", "default-server", "default_backend", "description",
    "disabled", "enabled", "fullconn", "hash-type", "http-check", "http-request", "id", "log",
    "log-format", "maxconn", "mode", "option", "retries", "server",
    "stats admin", "stats auth", "stats enable", "stats hide-version", "stats realm",
    "stats refresh", "stats uri",
    "tcp-check", "tcp-request connection", "tcp-request content", "tcp-request inspect-delay",
    "tcp-request session",
    "timeout check", "timeout client", "timeout client-fin", "timeout connect", "timeout queue",
    "timeout server", "timeout server-fin", "timeout tunnel",
    "use_backend",
}

TIMEOUTS = (
    "client", "server", "connect", "check", "queue", "http-keep-alive", "http-request",
    "tunnel", "tarpit", "client-fin", "server-fin",
)

# option name -> (capabilities, invertible with 'no', max args or -1 for any, keeplb status)
OPTIONS: dict[str, tuple[str, bool, int]] = {
    "abortonclose": ("DLB", True, 0),
    "accept-invalid-http-request": ("DFL", True, 0),
    "accept-invalid-http-response": ("DLB", True, 0),
    "allbackups": ("DLB", True, 0),
    "checkcache": ("DLB", True, 0),
    "clitcpka": ("DFL", True, 0),
    "contstats": ("DFL", True, 0),
    "disable-h2-upgrade": ("DFL", True, 0),
    "dontlog-normal": ("DFL", True, 0),
    "dontlognull": ("DFL", True, 0),
    "forwardfor": ("DFLB", False, -1),
    "h1-case-adjust-bogus-client": ("DFL", True, 0),
    "h1-case-adjust-bogus-server": ("DLB", True, 0),
    "http-buffer-request": ("DFLB", True, 0),
    "http-ignore-probes": ("DFL", True, 0),
    "http-keep-alive": ("DFLB", True, 0),
    "http-no-delay": ("DFLB", True, 0),
    "http-pretend-keepalive": ("DLB", True, 0),
    "http-restrict-req-hdr-names": ("DFLB", False, 1),
    "http-server-close": ("DFLB", True, 0),
    "http-use-proxy-header": ("DFL", True, 0),
    "httpchk": ("DLB", False, 3),
    "httpclose": ("DFLB", True, 0),
    "httplog": ("DFL", False, 1),
    "httpslog": ("DFL", False, 0),
    "independent-streams": ("DFLB", True, 0),
    "ldap-check": ("DLB", False, 0),
    "external-check": ("DLB", False, 0),
    "log-health-checks": ("DLB", True, 0),
    "log-separate-errors": ("DFL", True, 0),
    "logasap": ("DFL", True, 0),
    "mysql-check": ("DLB", False, 3),
    "nolinger": ("DFLB", True, 0),
    "originalto": ("DFLB", False, -1),
    "persist": ("DLB", True, 0),
    "pgsql-check": ("DLB", False, 2),
    "prefer-last-server": ("DLB", True, 0),
    "redispatch": ("DLB", True, 1),
    "redis-check": ("DLB", False, 0),
    "smtpchk": ("DLB", False, 2),
    "socket-stats": ("DFL", True, 0),
    "splice-auto": ("DFLB", True, 0),
    "splice-request": ("DFLB", True, 0),
    "splice-response": ("DFLB", True, 0),
    "spop-check": ("DLB", False, 0),
    "srvtcpka": ("DLB", True, 0),
    "ssl-hello-chk": ("DLB", False, 0),
    "tcp-check": ("DLB", False, 0),
    "tcp-smart-accept": ("DFL", True, 0),
    "tcp-smart-connect": ("DLB", True, 0),
    "tcpka": ("DFLB", False, 0),
    "tcplog": ("DFLB", False, 0),
    "transparent": ("DLB", True, 0),
    "idle-close-on-response": ("DFL", True, 0),
}

OPTIONS_SUPPORTED = {
    "allbackups", "clitcpka", "dontlognull", "dontlog-normal", "httpchk", "httplog",
    "log-health-checks", "nolinger", "redispatch", "splice-auto", "splice-request",
    "splice-response", "srvtcpka", "tcp-check", "tcp-smart-accept", "tcp-smart-connect",
    "tcpka", "tcplog", "abortonclose", "log-separate-errors",
}

TCP_CHECK_ACTIONS = (
    "comment", "connect", "expect", "send", "send-lf", "send-binary", "send-binary-lf",
    "set-var", "unset-var",
)
HTTP_CHECK_ACTIONS = (
    "comment", "connect", "disable-on-404", "expect", "send", "send-state", "set-var",
    "unset-var",
)

BALANCE_ALGORITHMS = (
    "roundrobin", "static-rr", "leastconn", "first", "source", "uri", "url_param", "hdr",
    "random", "rdp-cookie",
)
BALANCE_SUPPORTED = {"roundrobin", "static-rr", "leastconn", "first", "source"}

LOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "auth2", "ftp", "ntp", "audit", "alert", "cron2",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

# --------------------------------------------------------------------------
# global keywords (§3)
# --------------------------------------------------------------------------

GLOBAL_SUPPORTED = {
    "daemon", "master-worker", "maxconn", "nbthread", "user", "group", "uid", "gid", "chroot",
    "pidfile", "ulimit-n", "hard-stop-after", "server-state-file", "server-state-base", "log",
    "log-tag", "stats", "node", "description", "quiet", "zero-warning", "setenv", "presetenv",
    "unsetenv", "resetenv",
}

GLOBAL_UNSUPPORTED = """
busy-polling ca-base close-spread-time cluster-secret cpu-map crt-base default-path
expose-experimental-directives external-check fd-hard-limit grace
h1-accept-payload-with-any-method h1-case-adjust h1-case-adjust-file
h2-workaround-bogus-websocket-clients httpclient.resolvers.id httpclient.resolvers.prefer
httpclient.ssl.ca-file httpclient.ssl.verify insecure-fork-wanted insecure-setuid-wanted
issuers-chain-path localpeer log-send-hostname lua-load lua-load-per-thread lua-prepend-path
max-spread-checks maxcompcpuusage maxcomprate maxconnrate maxpipes maxsessrate maxsslconn
maxsslrate maxzlibmem mworker-max-reloads no-memory-trimming noepoll noevports nogetaddrinfo
nokqueue nopoll noreuseport nosplice numa-cpu-mapping pp2-never-send-local profiling.tasks
set-dumpable set-var set-var-fmt spread-checks ssl-default-bind-ciphers
ssl-default-bind-ciphersuites ssl-default-bind-curves ssl-default-bind-options
ssl-default-server-ciphers ssl-default-server-ciphersuites ssl-default-server-options
ssl-dh-param-file ssl-load-extra-del-ext ssl-load-extra-files ssl-mode-async ssl-propquery
ssl-provider ssl-provider-path ssl-server-verify ssl-skip-self-issued-ca strict-limits
thread-group thread-groups unix-bind
""".split()

TUNE_KEYWORDS = """
tune.buffers.limit tune.buffers.reserve tune.bufsize tune.comp.maxlevel tune.fail-alloc
tune.fd.edge-triggered tune.h2.header-table-size tune.h2.initial-window-size
tune.h2.max-concurrent-streams tune.h2.max-frame-size tune.http.cookielen tune.http.logurilen
tune.http.maxhdr tune.idle-pool.shared tune.idletimer tune.listener.multi-queue
tune.lua.forced-yield tune.lua.maxmem tune.lua.service-timeout tune.lua.session-timeout
tune.lua.task-timeout tune.maxaccept tune.maxpollevents tune.maxrewrite
tune.pattern.cache-size tune.peers.max-updates-at-once tune.pipesize tune.pool-high-fd-ratio
tune.pool-low-fd-ratio tune.rcvbuf.client tune.rcvbuf.server tune.recv_enough
tune.runqueue-depth tune.sched.low-latency tune.sndbuf.client tune.sndbuf.server
tune.ssl.cachesize tune.ssl.capture-buffer-size tune.ssl.capture-cipherlist-size
tune.ssl.default-dh-param tune.ssl.force-private-cache tune.ssl.hard-maxrecord
tune.ssl.keylog tune.ssl.lifetime tune.ssl.maxrecord tune.ssl.ssl-ctx-cache-size
tune.vars.global-max-size tune.vars.proc-max-size tune.vars.reqres-max-size
tune.vars.sess-max-size tune.vars.txn-max-size tune.zlib.memlevel tune.zlib.windowsize
""".split()
# tune.* keeplb reads: they are stored in Global.tune and used by the relay
TUNE_SUPPORTED = {"tune.bufsize", "tune.maxaccept", "tune.rcvbuf.client", "tune.rcvbuf.server",
                  "tune.sndbuf.client", "tune.sndbuf.server", "tune.pipesize"}

GLOBAL_STATS = ("socket", "timeout", "maxconn", "bind-process")

# --------------------------------------------------------------------------
# bind options (§5.1) and server options (§5.2): name -> number of arguments
# --------------------------------------------------------------------------

BIND_OPTIONS: dict[str, int] = {
    "accept-netscaler-cip": 1, "accept-proxy": 0, "allow-0rtt": 0, "alpn": 1, "backlog": 1,
    "ca-file": 1, "ca-ignore-err": 1, "ca-sign-file": 1, "ca-sign-pass": 1, "ca-verify-file": 1,
    "ciphers": 1, "ciphersuites": 1, "crl-file": 1, "crt": 1, "crt-ignore-err": 1,
    "crt-list": 1, "curves": 1, "defer-accept": 0, "ecdhe": 1, "expose-fd": 1,
    "force-sslv3": 0, "force-tlsv10": 0, "force-tlsv11": 0, "force-tlsv12": 0,
    "force-tlsv13": 0, "generate-certificates": 0, "gid": 1, "group": 1, "id": 1,
    "interface": 1, "level": 1, "maxconn": 1, "mode": 1, "mss": 1, "name": 1, "namespace": 1,
    "nice": 1, "no-ca-names": 0, "no-sslv3": 0, "no-tls-tickets": 0, "no-tlsv10": 0,
    "no-tlsv11": 0, "no-tlsv12": 0, "no-tlsv13": 0, "npn": 1, "prefer-client-ciphers": 0,
    "process": 1, "proto": 1, "quic-cc-algo": 1, "quic-force-retry": 0,
    "severity-output": 1, "shards": 1, "ssl": 0, "ssl-max-ver": 1, "ssl-min-ver": 1,
    "strict-sni": 0, "tcp-ut": 1, "tfo": 0, "thread": 1, "tls-ticket-keys": 1,
    "transparent": 0, "uid": 1, "user": 1, "v4v6": 0, "v6only": 0, "verify": 1,
}
BIND_SUPPORTED = {
    "accept-proxy", "backlog", "interface", "maxconn", "name", "transparent", "v4v6",
    "v6only", "id", "defer-accept", "tfo", "mss", "mode", "level", "expose-fd", "user",
    "group", "uid", "gid", "process", "thread", "nice", "severity-output",
}

SERVER_OPTIONS: dict[str, int] = {
    "addr": 1, "agent-addr": 1, "agent-check": 0, "agent-inter": 1, "agent-port": 1,
    "agent-send": 1, "allow-0rtt": 0, "alpn": 1, "backup": 0, "ca-file": 1, "check": 0,
    "check-alpn": 1, "check-proto": 1, "check-send-proxy": 0, "check-sni": 1, "check-ssl": 0,
    "check-via-socks4": 0, "ciphers": 1, "ciphersuites": 1, "cookie": 1, "crl-file": 1,
    "crt": 1, "disabled": 0, "downinter": 1, "enabled": 0, "error-limit": 1, "fall": 1,
    "fastinter": 1, "force-sslv3": 0, "force-tlsv10": 0, "force-tlsv11": 0,
    "force-tlsv12": 0, "force-tlsv13": 0, "id": 1, "init-addr": 1, "inter": 1,
    "log-proto": 1, "max-reuse": 1, "maxconn": 1, "maxqueue": 1, "minconn": 1,
    "namespace": 1, "no-agent-check": 0, "no-backup": 0, "no-check": 0, "no-check-ssl": 0,
    "no-send-proxy": 0, "no-send-proxy-v2": 0, "no-send-proxy-v2-ssl": 0,
    "no-send-proxy-v2-ssl-cn": 0, "no-ssl": 0, "no-ssl-reuse": 0, "no-sslv3": 0, "no-tfo": 0,
    "no-tls-tickets": 0, "no-tlsv10": 0, "no-tlsv11": 0, "no-tlsv12": 0, "no-tlsv13": 0,
    "no-verifyhost": 0, "non-stick": 0, "npn": 1, "observe": 1, "on-error": 1,
    "on-marked-down": 1, "on-marked-up": 1, "pool-low-conn": 1, "pool-max-conn": 1,
    "pool-purge-delay": 1, "port": 1, "proto": 1, "proxy-v2-options": 1, "redir": 1,
    "resolve-net": 1, "resolve-opts": 1, "resolve-prefer": 1, "resolvers": 1, "rise": 1,
    "send-proxy": 0, "send-proxy-v2": 0, "send-proxy-v2-ssl": 0, "send-proxy-v2-ssl-cn": 0,
    "slowstart": 1, "sni": 1, "socks4": 1, "source": 1, "ssl": 0, "ssl-max-ver": 1,
    "ssl-min-ver": 1, "ssl-reuse": 0, "stick": 0, "tcp-ut": 1, "tfo": 0, "tls-tickets": 0,
    "track": 1, "verify": 1, "verifyhost": 1, "weight": 1, "ws": 1,
}
SERVER_SUPPORTED = {
    "addr", "backup", "check", "disabled", "downinter", "enabled", "error-limit", "fall",
    "fastinter", "id", "init-addr", "inter", "maxconn", "maxqueue", "minconn", "no-backup",
    "no-check", "no-send-proxy", "on-error", "on-marked-down", "on-marked-up", "port", "rise",
    "send-proxy", "slowstart", "track", "weight", "cookie", "agent-check", "no-agent-check",
    "agent-port", "agent-inter", "agent-addr", "agent-send",
}
# Only meaningful on a `server` line, not on `default-server` (haproxy rejects them there).
SERVER_ONLY = {"id", "track", "redir", "cookie"}


def keyword_table() -> list[tuple[str, str, str]]:
    """(section, keyword, status) for every keyword keeplb reads, for the docs.

    status is 'supported' (keeplb acts on it) or 'unsupported' (accepted as haproxy
    does, with a warning).
    """
    rows: list[tuple[str, str, str]] = []
    for kw in sorted(GLOBAL_SUPPORTED | set(GLOBAL_UNSUPPORTED) | set(TUNE_KEYWORDS)):
        ok = kw in GLOBAL_SUPPORTED or kw in TUNE_SUPPORTED
        rows.append(("global", kw, SUPPORTED if ok else UNSUPPORTED))
    for kw, caps in sorted(PROXY_CAPS.items()):
        status = SUPPORTED if kw in PROXY_SUPPORTED else UNSUPPORTED
        if kw == "option":
            continue
        for section, letter in (("defaults", "D"), ("frontend", "F"), ("listen", "L"),
                                ("backend", "B")):
            if letter in caps or (letter == "D" and "N" in caps):
                rows.append((section, kw, status))
    for name, (caps, _inv, _args) in sorted(OPTIONS.items()):
        status = SUPPORTED if name in OPTIONS_SUPPORTED else UNSUPPORTED
        for section, letter in (("defaults", "D"), ("frontend", "F"), ("listen", "L"),
                                ("backend", "B")):
            if letter in caps:
                rows.append((section, f"option {name}", status))
    for name in sorted(BIND_OPTIONS):
        rows.append(("bind", name, SUPPORTED if name in BIND_SUPPORTED else UNSUPPORTED))
    for name in sorted(SERVER_OPTIONS):
        rows.append(("server", name, SUPPORTED if name in SERVER_SUPPORTED else UNSUPPORTED))
    for name in UNSUPPORTED_SECTIONS:
        rows.append((name, "*", UNSUPPORTED))
    return rows


KEYWORDS: dict[str, dict[str, str]] = {}
for _section, _kw, _status in keyword_table():
    KEYWORDS.setdefault(_section, {})[_kw] = _status
