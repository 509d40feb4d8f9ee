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

import copy
import errno
import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TextIO

from keeplb.config.diagnostics import Diagnostics, Span, did_you_mean
from keeplb.config.lexer import Lexer, Line
from keeplb.config.model import (
    SERVER_DEFAULTS,
    Acl,
    Address,
    Bind,
    Condition,
    Global,
    HaproxyConfig,
    LogTarget,
    Mode,
    Proxy,
    ProxyKind,
    Rule,
    Server,
    ServerOptions,
    StatsSocket,
    TcpRequestConnection,
    TcpRequestContent,
    UseBackend,
)
from keeplb.config.patterns import load_pattern_files

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
# what those sections may hold, so that a typo in them still fails as in haproxy
UNSUPPORTED_SECTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "peers": ("bind", "default-bind", "default-server", "disabled", "enabled", "log", "peer",
              "server", "shards", "table"),
    "resolvers": ("accepted_payload_size", "nameserver", "parse-resolv-conf", "resolve_retries",
                  "timeout", "hold"),
    "userlist": ("group", "user"),
    "cache": ("total-max-size", "max-object-size", "max-age", "process-vary",
              "max-secondary-entries"),
    "program": ("command", "user", "group", "option"),
    "ring": ("description", "format", "maxlen", "size", "timeout", "server"),
    "http-errors": ("errorfile",),
    "mailers": ("mailer", "timeout"),
    "log-forward": ("bind", "dgram-bind", "log", "maxconn", "backlog", "timeout"),
    "fcgi-app": ("docroot", "index", "log-stderr", "path-info", "pass-header", "option",
                 "set-param"),
}
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
log-format D F L B
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
    "log-format", "maxconn", "mode", "option", "rate-limit sessions", "retries", "server",
    "stats admin", "stats auth", "stats enable", "stats hide-version", "stats realm",
    "stats refresh", "stats uri",
    "tcp-check", "tcp-request connection", "tcp-request content", "tcp-request inspect-delay",
    "tcp-request session",
    "timeout check", "timeout client", "timeout client-fin", "timeout connect", "timeout queue",
    "timeout server", "timeout server-fin", "timeout tunnel",
    "use_backend",
}
# Parsed and checked as haproxy does (its errors and warnings), but the relay does
# not act on them: reported as not supported, listed so in docs/keywords.md.
# `tcp-request content` and `inspect-delay` act in frontends and listens only: a
# backend's are reported as not supported by _tcp_request.
_FRONTEND_SIDE_ONLY = frozenset({"tcp-request content", "tcp-request inspect-delay"})
PROXY_CHECKED_ONLY = {"tcp-request session",
                      # haproxy shows these on its stats page and in `show stat` (iid);
                      # keeplb's stats show neither
                      "description", "id"}

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
    "redispatch": ("DLB", True, -1),
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
    "allbackups", "clitcpka", "dontlognull", "dontlog-normal", "httpchk", "httplog", "ldap-check",
    "mysql-check",
    "log-health-checks", "log-separate-errors", "nolinger", "pgsql-check", "redis-check",
    "redispatch",
    "smtpchk", "splice-auto", "splice-request", "splice-response", "srvtcpka", "ssl-hello-chk",
    "tcp-check", "tcpka", "tcplog",
}
# clitcpka/srvtcpka/tcpka (SO_KEEPALIVE) and nolinger (SO_LINGER 0 s, a RST on close)
# are set by the relay (keeplb/lb/proxy.py) as haproxy 2.6 sets them. Not acted on
# (the relay sets no TCP_DEFER_ACCEPT or TCP_QUICKACK, and drops no queued connection
# early), so warned as not supported: abortonclose, tcp-smart-accept, tcp-smart-connect.

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
BALANCE_SUPPORTED = {"roundrobin", "static-rr", "leastconn", "first", "source", "random"}

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
    "unsetenv", "resetenv", "cpu-map", "maxconnrate", "maxsessrate",
}
# Parsed and checked as haproxy does, but keeplb does not act on them (as
# PROXY_CHECKED_ONLY): `show info` gives the host name as node and no description,
# warnings are printed whatever quiet says and never stop the start.
GLOBAL_CHECKED_ONLY = {"description", "node", "quiet", "zero-warning"}

GLOBAL_UNSUPPORTED = """
busy-polling ca-base close-spread-time cluster-secret crt-base default-path
expose-experimental-directives external-check fd-hard-limit grace
h1-accept-payload-with-any-method h1-case-adjust h1-case-adjust-file
h2-workaround-bogus-websocket-clients httpclient.resolvers.id httpclient.resolvers.prefer
httpclient.ssl.ca-file httpclient.ssl.verify insecure-fork-wanted insecure-setuid-wanted
issuers-chain-path localpeer log-send-hostname lua-load lua-load-per-thread lua-prepend-path
max-spread-checks maxcompcpuusage maxcomprate maxpipes maxsslconn
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
# tune.* keeplb reads: they are stored in Global.tune and used by the relay. The
# others are stored and checked, but nothing reads them (the relay's buffers,
# socket buffers and pipes keep their own sizes): warned as not supported.
TUNE_SUPPORTED = {"tune.maxaccept"}

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
    "backlog", "name", "v4v6", "v6only", "id",
    # stats sockets: keeplb.lb.runtime applies them (on a UNIX frontend socket,
    # mode/user/group are not applied yet: keeplb.proc.listeners.bind_one)
    "mode", "level", "expose-fd", "user", "group",
}
# Not acted on, warned: accept-proxy (no PROXY header is read), defer-accept, interface,
# maxconn (per listener), mss, nice, process, severity-output, tfo, thread, transparent,
# uid, gid (keeplb.proc.listeners sets none of them on the socket).

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
    "addr", "backup", "check", "disabled", "downinter", "enabled", "fall",
    "fastinter", "id", "inter", "maxconn", "maxqueue", "no-backup",
    "no-check", "on-marked-down", "on-marked-up", "port", "rise",
    "slowstart", "weight", "cookie", "init-addr",
    # they only matter with `observe` (warned): without it haproxy ignores them too
    "error-limit", "on-error",
    # TLS of health checks (checks.py does https checks); TLS to the servers is not relayed
    "check-ssl", "no-check-ssl", "check-sni", "verify", "ca-file",
}
# Not acted on, warned: agent-* and no-agent-check (no agent checks), minconn
# (maxconn is static), send-proxy and
# no-send-proxy (no PROXY header is sent), track (each server is checked itself).
# Only meaningful on a `server` line, not on `default-server` (haproxy rejects them there).
SERVER_ONLY = {"id", "track", "redir", "cookie"}


# --------------------------------------------------------------------------
# argument counts of the keywords keeplb does not act on (it still checks them,
# with haproxy 2.6's texts, so that a file haproxy refuses is refused here too)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Arity:
    """What haproxy 2.6's parser of one keyword checks on its argument count.

    `low`: arguments it needs (fewer is `missing`, its text); `high`: the
    alertif_too_many_args() limit (None: it does not call it), `extra`
    replacing that function's text where the keyword words it its own way
    ({what} and {arg} filled in). `what` is the name in the too-many text
    (haproxy gives the first word only for some two-word keywords).
    `severity`: 'warning' where haproxy reports the problem and goes on.
    `count_first`: haproxy counts before it looks for a missing argument (most
    keywords; not the timeouts)."""

    low: int = 0
    high: int | None = None
    missing: str = ""
    extra: str = ""
    what: str = ""
    severity: str = "error"
    count_first: bool = True


_GLOBAL_DIR = "global statement '{kw}' expects a directory path as an argument."
_GLOBAL_CIPHERS = "global statement '{kw}' expects a cipher suite as an argument."
_GLOBAL_INT = "'{kw}' expects an integer argument."
_FORMAT = Arity(1, 1, "{kw} expects an argument.",
                "{kw} expects only one argument, don't forget to escape spaces!")
_TIMER_INT = Arity(1, None, "'{kw}' expects an integer value")
_PERSIST = Arity(1, None, "'{kw}' requires either 'if' or 'unless' followed by a condition.")
_ERRORFILE = Arity(2, None, "{kw} : expects <status_code> and <{what}> as arguments.")
_STICK = Arity(1, None, "'stick' expects a fetch method.")

ARITY: dict[str, Arity] = {
    # global (cfgparse-global.c, and the keywords registered by other files)
    "busy-polling": Arity(0, 0), "external-check": Arity(0, 0),
    "h1-accept-payload-with-any-method": Arity(0, 0),
    "h2-workaround-bogus-websocket-clients": Arity(0, 0), "insecure-fork-wanted": Arity(0, 0),
    "insecure-setuid-wanted": Arity(0, 0), "no-memory-trimming": Arity(0, 0),
    "noepoll": Arity(0, 0), "noevports": Arity(0, 0), "nogetaddrinfo": Arity(0, 0),
    "nokqueue": Arity(0, 0), "nopoll": Arity(0, 0), "noreuseport": Arity(0, 0),
    "nosplice": Arity(0, 0), "pp2-never-send-local": Arity(0, 0), "set-dumpable": Arity(0, 0),
    "strict-limits": Arity(0, 0), "tune.ssl.force-private-cache": Arity(0, 0),
    "ca-base": Arity(1, 1, _GLOBAL_DIR), "crt-base": Arity(1, 1, _GLOBAL_DIR),
    "issuers-chain-path": Arity(1, 1, _GLOBAL_DIR),
    "ssl-provider-path": Arity(1, None, _GLOBAL_DIR),
    "close-spread-time": Arity(1, None, "'{kw}' expects <time> as argument."),
    "grace": Arity(1, None, "'{kw}' expects <time> as argument."),
    "cluster-secret": Arity(1, 1, "expects an ASCII string argument."),
    "default-path": Arity(1, None, "missing default-path mode '' for 'default-path', supported "
                          "modes include 'current', 'config', 'parent', and 'origin'."),
    "fd-hard-limit": Arity(1, 1, _GLOBAL_INT), "maxpipes": Arity(1, 1, _GLOBAL_INT),
    "maxsslconn": Arity(1, 1, _GLOBAL_INT), "maxsslrate": Arity(1, 1, _GLOBAL_INT),
    "maxzlibmem": Arity(1, 1, _GLOBAL_INT), "ssl-server-verify": Arity(1, 1, _GLOBAL_INT),
    # haproxy 2.6 reports its errors as warnings (its return code misses ERR_ALERT)
    # and starts; keeplb warns too, without the "(null)" haproxy prints
    "mworker-max-reloads": Arity(1, 1, _GLOBAL_INT, severity="warning"),
    "h1-case-adjust": Arity(2, 2, "'{kw}' expects <from> and <to> as argument."),
    "h1-case-adjust-file": Arity(1, 1, "'{kw}' expects <file> as argument."),
    "httpclient.resolvers.id": Arity(1, 1, "Proxy '<HTTPCLIENT>': Can't find resolvers section "
                                     "'' for do-resolve action."),
    "httpclient.resolvers.prefer": Arity(1, 1, "'{kw}' expects 'ipv4' or 'ipv6' as argument."),
    "httpclient.ssl.ca-file": Arity(1, 1, "Couldn't open the ca-file '' (No such file or "
                                    "directory)."),
    "httpclient.ssl.verify": Arity(1, 1, "'{kw}' expects 'none' or 'required' as argument."),
    "localpeer": Arity(1, 1, "'{kw}' expects a name as an argument."),
    "lua-load": Arity(1, None, "'{kw}' expects a file name as parameter."),
    "lua-load-per-thread": Arity(1, None, "'{kw}' expects a file as parameter."),
    "lua-prepend-path": Arity(1, None, "'{kw}' expects to receive a <path> as argument"),
    "max-spread-checks": Arity(1, 1, "'{kw}' expects an integer argument (0..50)."),
    "spread-checks": Arity(1, 1, "'{kw}' expects an integer argument (0..50)."),
    "maxcompcpuusage": Arity(1, 1, "'{kw}' expects an integer argument between 0 and 100."),
    "maxcomprate": Arity(1, 1, "'{kw}' expects an integer argument in kb/s."),
    "profiling.tasks": Arity(1, 1, "'{kw}' expects either 'on', 'auto', or 'off' but got ''."),
    "set-var": Arity(2, None, "'{kw}' requires a process-wide variable name ('proc.<name>') "
                     "and a sample expression."),
    "set-var-fmt": Arity(2, None, "'{kw}' requires a process-wide variable name ('proc.<name>') "
                         "and a format string."),
    "ssl-default-bind-ciphers": Arity(1, 1, _GLOBAL_CIPHERS),
    "ssl-default-bind-ciphersuites": Arity(1, 1, _GLOBAL_CIPHERS),
    "ssl-default-server-ciphers": Arity(1, 1, _GLOBAL_CIPHERS),
    "ssl-default-server-ciphersuites": Arity(1, 1, _GLOBAL_CIPHERS),
    "ssl-default-bind-curves": Arity(1, 1, "global statement '{kw}' expects a curves suite as "
                                     "an arguments."),
    "ssl-default-bind-options": Arity(1, None, "global statement '{kw}' expects an option as an "
                                      "argument."),
    "ssl-default-server-options": Arity(1, None, "global statement '{kw}' expects an option as "
                                        "an argument."),
    "ssl-load-extra-files": Arity(1, None, "'{kw}' expects one or multiple arguments (none, "
                                  "all, bundle, sctl, ocsp, issuer)."),
    "ssl-propquery": Arity(1, None, "global statement '{kw}' expects a property string as an "
                           "argument."),
    "ssl-provider": Arity(1, None, "global statement '{kw}' expects a valid engine provider name "
                          "as an argument."),
    "thread-group": Arity(1, None, "'{kw}' passed a missing or unparsable integer value in ''"),
    "thread-groups": Arity(1, 1, "'{kw}' passed a missing or unparsable integer value in ''"),
    # tune.*: haproxy reads these with atoi() and never counts them
    **{kw: Arity(0, 1) for kw in (
        "tune.fail-alloc", "tune.h2.initial-window-size", "tune.h2.max-concurrent-streams")},
    **{kw: Arity(0, None) for kw in (
        "tune.lua.forced-yield", "tune.vars.global-max-size", "tune.vars.proc-max-size",
        "tune.vars.reqres-max-size", "tune.vars.sess-max-size", "tune.vars.txn-max-size")},
    "tune.lua.maxmem": Arity(1, None, "'{kw}' expects an integer argument (Lua memory size in "
                             "MB)."),
    **{kw: Arity(1, None, "{kw}: invalid timeout") for kw in (
        "tune.lua.service-timeout", "tune.lua.session-timeout", "tune.lua.task-timeout")},
    "tune.pattern.cache-size": Arity(1, None, "'{kw}' expects a positive numeric value"),
    **{kw: Arity(1, 1, "'{kw}' expects either 'on' or 'off' but got ''.") for kw in (
        "tune.idle-pool.shared", "tune.listener.multi-queue", "tune.sched.low-latency",
        "tune.ssl.keylog", "tune.fd.edge-triggered")},
    "tune.comp.maxlevel": Arity(1, 1, "'{kw}' expects a numeric value between 1 and 9"),
    "tune.h2.header-table-size": Arity(1, 1, "'{kw}' expects a numeric value between 4096 and "
                                       "65536."),
    "tune.h2.max-frame-size": Arity(1, 1, "'{kw}' expects a numeric value between 16384 and "
                                    "16777215."),
    "tune.idletimer": Arity(1, 1, "'{kw}' expects a timer value between 0 and 65535 ms."),
    "tune.peers.max-updates-at-once": Arity(1, 1, "'{kw}' expects an integer argument greater "
                                            "than 0."),
    "tune.pool-high-fd-ratio": Arity(1, 1, "'{kw}' expects an integer argument between 0 and "
                                     "100."),
    "tune.pool-low-fd-ratio": Arity(1, 1, "'{kw}' expects an integer argument between 0 and "
                                    "100."),
    "tune.ssl.lifetime": Arity(1, 1, "'{kw}' expects ssl sessions <lifetime> in seconds as "
                               "argument."),
    # proxies (cfgparse-listen.c, proxy.c, and the keywords registered by other files)
    "transparent": Arity(0, 0),
    "http-reuse": Arity(1, 1, "'{kw}' only supports 'never', 'safe', 'aggressive', 'always'.",
                        "'{kw} {value}' cannot handle unexpected argument '{arg}'."),
    "http-after-response": Arity(1, None, "'{kw}' expects 'ot-group', 'add-header', 'allow', "
                                 "'capture', 'del-header', 'replace-header', 'replace-value', "
                                 "'set-header', 'set-status', 'strict-mode', 'set-var-fmt(*)', "
                                 "'set-var(*)', 'unset-var(*)', but got '' (missing argument)."),
    "http-response": Arity(1, None, "'{kw}' expects 'ot-group', 'set-log-level', 'set-nice', "
                           "'sc-inc-gpc(*)', 'sc-inc-gpc0(*)', 'sc-inc-gpc1(*)', "
                           "'sc-set-gpt(*)', 'sc-set-gpt0(*)', 'send-spoe-group', "
                           "'cache-store', 'add-acl(*)', 'add-header', 'allow', 'capture', "
                           "'del-acl(*)', 'del-header', 'del-map(*)', 'deny', 'redirect', "
                           "'replace-header', 'replace-value', 'return', 'set-header', "
                           "'set-map(*)', 'set-status', 'strict-mode', 'track-sc(*)', "
                           "'wait-for-body', 'set-var-fmt(*)', 'set-var(*)', 'unset-var(*)', "
                           "'set-mark', 'set-tos', 'silent-drop', but got '' (missing "
                           "argument)."),
    # haproxy lists its 61 http-request actions here; keeplb's own list is HTTP_REQUEST_ACTIONS
    "stats http-request": Arity(1, None, "'http-request' expects an action but got '' "
                                "(missing argument)."),
    "tcp-response content": Arity(1, None, "'{kw}' expects 'accept', 'close', 'reject', "
                                  "'ot-group', 'set-log-level', 'set-nice', 'sc-inc-gpc(*)', "
                                  "'sc-inc-gpc0(*)', 'sc-inc-gpc1(*)', 'sc-set-gpt(*)', "
                                  "'sc-set-gpt0(*)', 'send-spoe-group', 'set-var-fmt(*)', "
                                  "'set-var(*)', 'unset-var(*)', 'set-mark', 'set-tos', "
                                  "'silent-drop' in {proxy} (got '')"),
    "clitcpka-cnt": _TIMER_INT, "clitcpka-idle": _TIMER_INT, "clitcpka-intvl": _TIMER_INT,
    "srvtcpka-cnt": _TIMER_INT, "srvtcpka-idle": _TIMER_INT, "srvtcpka-intvl": _TIMER_INT,
    "declare capture": Arity(1, None, "'{kw}' requires a direction ('request' or 'response')"),
    "dispatch": Arity(1, 1, "'{kw}' : '' resolves to an empty address (environment variable "
                      "missing?)"),
    "email-alert level": Arity(1, None, "unknown log level 'level' after ''"),
    "error-log-format": _FORMAT, "log-format-sd": _FORMAT, "unique-id-format": _FORMAT,
    "unique-id-header": Arity(1, None, "{kw} expects an argument."),
    "errorfile": replace(_ERRORFILE, missing=_ERRORFILE.missing.replace("{what}", "file")),
    **{kw: replace(_ERRORFILE, missing=_ERRORFILE.missing.replace("{what}", "url"))
       for kw in ("errorloc", "errorloc302", "errorloc303")},
    "external-check command": Arity(1, 1, "missing argument after 'command'.",
                                    what="external-check"),
    "external-check path": Arity(1, 1, "missing argument after 'path'.", what="external-check"),
    "filter": Arity(1, None, "missing argument for 'filter' in {proxy}."),
    "force-persist": _PERSIST, "ignore-persist": _PERSIST, "monitor fail": _PERSIST,
    "http-error": Arity(1, None, "http-error : expects at least a <status> as arguments."),
    "http-send-name-header": Arity(1, None, "'{kw}' requires a header string."),
    "load-server-state-from-file": Arity(1, None, "'{kw}' expects 'global', 'local' or 'none'. "
                                         "Got ''"),
    "log-tag": Arity(1, None, "'{kw}' expects a tag for use in syslog."),
    "max-keep-alive-queue": Arity(1, None, "'{kw}' expects expects an integer value (or -1 to "
                                  "disable)"),
    "monitor-uri": Arity(1, 1, "'{kw}' expects an URI."),
    "redirect": Arity(1, None, "error detected in {proxy} while parsing redirect rule : "
                      "redirection type expected ('prefix', 'location', or 'scheme')."),
    "retry-on": Arity(1, None, "'{kw}' needs at least one keyword to specify when to retry"),
    "server-state-file-name": Arity(0, 1),
    "server-template": Arity(3, None, "'{kw}' expects <prefix> <nb | range> <addr>[:<port>] as "
                             "arguments."),
    "stats scope": Arity(1, None, "'scope' needs a proxy name."),
    "stick match": _STICK, "stick on": _STICK, "stick store-request": _STICK,
    "stick store-response": _STICK,
    "stick-table": Arity(1, None, "stick-table: missing size."),
    "tcp-response inspect-delay": Arity(1, None, "'{kw}' expects a positive delay in "
                                        "milliseconds, in {proxy}"),
    "use-server": Arity(1, None, "'{kw}' expects a server name."),
    # proxy_parse_timeout(): the value first, then `*args[3]`
    **{f"timeout {name}": Arity(1, 1, "'{kw}' expects an integer value (in milliseconds)",
                                "'{kw}' : unexpected extra argument '{arg}' after value "
                                "'{value}'.", count_first=False)
       for name in TIMEOUTS},
}
# tune.* not in ARITY: one integer, as most of haproxy's tune parsers want
_TUNE_ARITY = Arity(1, 1, "'{kw}' expects an integer argument.")
# retry-on's keywords (proxy.c, proxy_parse_retry_on)
RETRY_ON = ("none", "conn-failure", "empty-response", "junk-response", "response-timeout",
            "0rtt-rejected", "all-retryable-errors", "401", "403", "404", "408", "425", "500",
            "501", "502", "503", "504")


def keyword_table() -> list[tuple[str, str, str]]:
    """(section, keyword, status) for every keyword keeplb reads, for the docs.

    status is 'supported' (keeplb acts on it) or 'unsupported' (accepted as haproxy
    does, with a warning).
    """
    rows: list[tuple[str, str, str]] = []
    for kw in sorted(GLOBAL_SUPPORTED | set(GLOBAL_UNSUPPORTED) | set(TUNE_KEYWORDS)):
        ok = (kw in GLOBAL_SUPPORTED and kw not in GLOBAL_CHECKED_ONLY) or kw in TUNE_SUPPORTED
        rows.append(("global", kw, SUPPORTED if ok else UNSUPPORTED))
    for kw, caps in sorted(PROXY_CAPS.items()):
        status = SUPPORTED if kw in PROXY_SUPPORTED - PROXY_CHECKED_ONLY else UNSUPPORTED
        if kw == "option":
            continue
        for section, letter in (("defaults", "D"), ("frontend", "F"), ("listen", "L"),
                                ("backend", "B")):
            if letter in caps or (letter == "D" and "N" in caps):
                rows.append((section, kw, UNSUPPORTED if section == "backend"
                             and kw in _FRONTEND_SIDE_ONLY else status))
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


# ==========================================================================
# values: times, sizes, numbers, names, addresses
# ==========================================================================

TIME_MAX_MS = 2**31 - 1
_TIME_UNITS = {"": 1, "us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_NUM = re.compile(r"(\d+)(.*)\Z", re.S)


def parse_time(text: str) -> tuple[int | None, str | None]:
    """A haproxy time (§2.5) in milliseconds; a bare number is ms, `us` rounds up.

    Returns (value, None) or (None, reason) with haproxy's wording of the reason.
    """
    m = _NUM.match(text)
    if not text or not m:
        if text:
            return None, f"unexpected character '{text[0]}'"
        return None, "expects an integer value (in milliseconds)"
    digits, rest = m.groups()
    # haproxy reads the unit from the first letters and ignores what follows ("5sec")
    if not rest:
        unit = ""
    elif rest.startswith(("us", "ms")):
        unit = rest[:2]
    elif rest[0] in "smhd":
        unit = rest[0]
    else:
        return None, f"unexpected character '{rest[0]}'"
    factor = _TIME_UNITS[unit]
    value = int(digits)
    ms = -(-value // 1000) if unit == "us" else value * int(factor)
    if ms > TIME_MAX_MS:
        return None, "timer overflow, maximum value is 2147483647 ms (~24.8 days)"
    return ms, None


def time_trailer(text: str) -> str | None:
    """The characters haproxy 2.6 ignores after a time unit ('5sec' -> 'ec'), or None."""
    m = _NUM.match(text)
    if not m or not m.group(2):
        return None
    rest = m.group(2)
    unit_len = 2 if rest.startswith(("us", "ms")) else 1
    return rest[unit_len:] or None


def parse_size(text: str) -> tuple[int | None, str | None]:
    """A haproxy size: a number with an optional k, m or g suffix (powers of 1024)."""
    m = _NUM.match(text)
    if not m:
        return None, f"invalid size '{text}'"
    digits, unit = m.groups()
    unit = unit.lower()
    if unit not in _SIZE_UNITS:
        return None, f"unexpected character '{unit[0]}' in size '{text}'"
    return int(digits) * _SIZE_UNITS[unit], None


def _atoi(text: str) -> int:
    """C's atoi() as haproxy uses it for most integers: leading digits, else 0."""
    m = re.match(r"\s*([-+]?\d+)", text)
    return int(m.group(1)) if m else 0


def words_until_empty(line: Line) -> Line:
    """The statement as haproxy's keyword parsers read it: up to its first empty word.

    parse_line() keeps an empty word ("" or '') as an empty argument, and the
    parsers walk their arguments with `while (*args[cur_arg])` or test
    `*args[N] == 0` for a missing one: an empty word ends the statement for
    them (`bind :80 "" ssl` is a plain bind, `maxconn ""` lacks its number).
    Only too_many_args() looks past it (see _Parser._too_many)."""
    try:
        end = line.words.index("", 1)
    except ValueError:
        return line
    return replace(line, words=line.words[:end], cols=line.cols[:end])


def unexpected_arg(words: Sequence[str], index: int) -> str | None:
    """The word at `index` when it is a real argument, else None.

    haproxy's parser leaves every missing word as "", and its checks test the
    first character of one word (`*args[i] == 0`): an empty word ("" or '') is
    the same as no word, and words after it are not looked at by that check."""
    word = words[index] if 0 <= index < len(words) else ""
    return word or None


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?\d+", text))


def invalid_char(name: str) -> str | None:
    """The first character haproxy 2.6 refuses in a proxy or server name, or None."""
    for ch in name:
        if not (ch.isascii() and (ch.isalnum() or ch in "-_.:")):
            return ch
    return None


_PREFIXES = {
    "ipv4": "ipv4", "ipv6": "ipv6", "unix": "unix", "abns": "abns", "udp": "ipv4",
    "udp4": "ipv4", "udp6": "ipv6", "tcp": "any", "tcp4": "ipv4", "tcp6": "ipv6",
    "fd": "fd", "sockpair": "sockpair", "quic4": "ipv4", "quic6": "ipv6", "uxst": "unix",
    "uxdg": "unix",
}


def _plausible_hostname(host: str) -> bool:
    """A name that may resolve: DNS labels whose last one starts with a letter.

    haproxy resolves host names while it parses; keeplb does not query DNS from
    the parser, so a broken IP literal ('10.7x7.0.13') must be told apart here.
    """
    labels = host.rstrip(".").split(".")
    if not all(re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?", lab) for lab in labels):
        return False
    return labels[-1][0].isalpha()


def _parse_port(text: str, *, bind: bool, where: str) -> tuple[tuple[int, int, bool] | None, str | None]:
    """A port, range or offset as str2sa_range() reads it: digits then ignored junk."""
    sign = ""
    if text[:1] in "+-":
        sign, text = text[0], text[1:]
        if bind:
            return None, f"port offset not permitted here in '{where}'"
    if not text[:1].isdigit():
        bad = text[:1] or "''"
        return None, f"invalid character '{bad}' in port number '{text}' in '{where}'"
    low_text, dash, high_text = text.partition("-")
    low = _atoi(low_text)
    if dash and not bind:
        return None, f"port range not permitted here in '{where}'"
    high = low
    if dash:
        if not high_text[:1].isdigit():
            return None, f"invalid port '{high_text}'"
        high = _atoi(high_text)
    if sign:
        value = low if sign == "+" else -low
        return (value, value, True), None
    if bind and (low < 1 or low > 65535):
        return None, f"invalid port '{low}'"
    if high > 65535 or low > 65535:
        return None, f"invalid port '{high if high > 65535 else low}'"
    if high < low:
        return None, f"invalid port range '{low}-{high}'"
    return (low, high, False), None


def parse_address(
    text: str, *, port_required: bool, port_range: bool, port_offset: bool
) -> tuple[Address | None, str | None]:
    """One socket address as haproxy's str2sa_range() reads it.

    bind: port_required and port_range; server: port optional, `+N`/`-N` offsets.
    Host names are kept as written (haproxy resolves them at start-up, keeplb at
    run time), with family 'ipv4'. Returns (address, None) or (None, reason).
    """
    rest = text
    family: str | None = None
    prefix, at, after = rest.partition("@")
    if at and prefix in _PREFIXES:
        family = _PREFIXES[prefix]
        rest = after
    if family in ("unix", "abns") or (family is None and rest.startswith("/")):
        if not rest:
            return None, f"missing socket path in '{text}'"
        return Address(family or "unix", rest), None
    if family in ("fd", "sockpair"):
        if not rest.isdigit():
            return None, f"invalid file descriptor in '{text}'"
        return Address(family, rest), None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            return None, f"invalid address '{text}'"
        host, port_text = rest[1:end], rest[end + 1 :]
        if port_text and not port_text.startswith(":"):
            return None, f"invalid address '{text}'"
        has_port = bool(port_text)
        port_text = port_text[1:]
    else:
        host, sep, port_text = rest.rpartition(":")
        has_port = bool(sep)
        if not sep:
            host, port_text = rest, ""
    low: int | None = None
    high: int | None = None
    offset = False
    if has_port and port_text:
        port, err = _parse_port(port_text, bind=port_required, where=text)
        if port is None:
            return None, err
        low, high, offset = port
        if not port_range and high != low:
            return None, f"port range not permitted here in '{text}'"
    elif port_required:
        return None, f"missing port specification in '{text}'"
    if host in ("", "*"):
        fam = family if family in ("ipv4", "ipv6") else "any"
        any_host = "::" if fam == "ipv6" else "0.0.0.0"
        return Address(fam, any_host, low, high, offset), None
    if family != "ipv6":
        host = inet_aton(host) or host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _plausible_hostname(host):
            return None, f"invalid address: '{host}' in '{text}'"
        return Address(family if family in ("ipv4", "ipv6") else "ipv4", host, low, high,
                       offset), None
    fam = "ipv4" if ip.version == 4 else "ipv6"
    if family in ("ipv4", "ipv6") and family != fam:
        return None, f"address '{host}' is not an {family} address"
    return Address(fam, host, low, high, offset), None


def inet_aton(text: str) -> str | None:
    """The dotted IPv4 that glibc's inet_aton() reads in `text` ('10.1' is 10.0.0.1,
    '010' is octal), or None. haproxy accepts these forms through getaddrinfo()."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        m = re.fullmatch(r"0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9]\d*)", part)
        if not m:
            return None
        hexa, octal, dec = m.groups()
        values.append(int(hexa or "0", 16) if hexa is not None else
                      int(octal or "0", 8) if octal is not None else int(dec))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for k, v in enumerate(head):
        number |= v << (8 * (3 - k))
    return str(ipaddress.IPv4Address(number))


def cpu_map_ids(text: str) -> tuple[list[int], str | None]:
    """A cpu-map process or thread set: all, odd, even, N, N-M, N- or -M (1-64),
    in increasing order."""
    if text in ("all", "odd", "even"):
        first = 2 if text == "even" else 1
        return list(range(first, 65, 1 if text == "all" else 2)), None
    m = re.fullmatch(r"(\d+)(-?)(\d*)", text)
    if m is None or (m.group(3) and not m.group(2)):
        if re.fullmatch(r"-\d+", text):
            return [], f"'{text}' is not a valid number/range. It supports numbers from 1 to 64."
        return [], f"'{text}' is not a valid number/range."
    lo = int(m.group(1))
    hi = int(m.group(3) or (64 if m.group(2) else lo))
    if not (1 <= lo <= 64 and 1 <= hi <= 64):
        return [], f"'{text}' is not a valid number/range. It supports numbers from 1 to 64."
    return list(range(min(lo, hi), max(lo, hi) + 1)), None


def _is_ip_or_any(addr: Address) -> bool:
    """True unless `addr` is a host name (places where haproxy resolves nothing)."""
    if addr.family not in ("ipv4", "ipv6", "any"):
        return True
    try:
        ipaddress.ip_address(addr.host)
    except ValueError:
        return False
    return True


def _merge_server_options(top: ServerOptions, *lower: ServerOptions) -> ServerOptions:
    """`top`'s set fields, then each of `lower` for the fields still unset."""
    values = {}
    for f in fields(ServerOptions):
        value = getattr(top, f.name)
        for other in lower:
            if value is not None:
                break
            value = getattr(other, f.name)
        values[f.name] = value
    return ServerOptions(**values)


# ==========================================================================
# conditions and ACLs
# ==========================================================================

# haproxy 2.6's predefined ACLs (acl.c, as `show acl` lists them): name -> (criterion, values)
PREDEFINED_ACL_EXPRESSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "FALSE": ("always_false", ()),
    "HTTP": ("req.proto_http", ()),
    "HTTP_1.0": ("req.ver", ("1.0",)),
    "HTTP_1.1": ("req.ver", ("1.1",)),
    "HTTP_2.0": ("req.ver", ("2.0",)),
    "HTTP_CONTENT": ("req.hdr_val(content-length)", ("gt", "0")),
    "HTTP_URL_ABS": ("url_reg", ("^[^/:]*://",)),
    "HTTP_URL_SLASH": ("url_beg", ("/",)),
    "HTTP_URL_STAR": ("url", ("*",)),
    "LOCALHOST": ("src", ("127.0.0.1/8", "::1")),
    "METH_CONNECT": ("method", ("CONNECT",)),
    "METH_DELETE": ("method", ("DELETE",)),
    "METH_GET": ("method", ("GET", "HEAD")),
    "METH_HEAD": ("method", ("HEAD",)),
    "METH_OPTIONS": ("method", ("OPTIONS",)),
    "METH_POST": ("method", ("POST",)),
    "METH_PUT": ("method", ("PUT",)),
    "METH_TRACE": ("method", ("TRACE",)),
    "RDP_COOKIE": ("req.rdp_cookie_cnt", ("gt", "0")),
    "REQ_CONTENT": ("req.len", ("gt", "0")),
    "TRUE": ("always_true", ()),
    "WAIT_END": ("wait_end", ()),
}
PREDEFINED_ACLS = frozenset(PREDEFINED_ACL_EXPRESSIONS)


# Sample fetches and ACL keywords haproxy 2.6 knows (Debian build), for a located
# "unknown fetch method" on a typo in an ACL criterion, as haproxy reports it.
SAMPLE_FETCHES = frozenset("""
    always_false always_true avg_queue base base32 base_beg base_dir base_dom base_end
    base_len base_reg base_sub baseq bc_dst bc_dst_port bc_err bc_err_str bc_http_major
    bc_src bc_src_port be_conn be_conn_free be_id be_name be_server_timeout be_sess_rate
    be_tunnel_timeout bin bool capture.req.hdr capture.req.method capture.req.uri
    capture.req.ver capture.res.hdr capture.res.ver connslots cook cook_cnt cook_val cookie
    cpu_calls cpu_ns_avg cpu_ns_tot cur_server_timeout cur_tunnel_timeout date date_us
    distcc_body distcc_param dst dst_conn dst_is_local dst_port env fc_dst fc_dst_is_local
    fc_dst_port fc_err fc_err_str fc_fackets fc_http_major fc_lost fc_pp_authority
    fc_pp_unique_id fc_rcvd_proxy fc_reordering fc_retrans fc_rtt fc_rttvar fc_sacked fc_src
    fc_src_is_local fc_src_port fc_unacked fcgi.docroot fcgi.index fe_client_timeout fe_conn
    fe_defbe fe_id fe_name fe_req_rate fe_sess_rate hdr hdr_beg hdr_cnt hdr_dir hdr_dom
    hdr_end hdr_ip hdr_len hdr_reg hdr_sub hdr_val hostname http_auth http_auth_bearer
    http_auth_group http_auth_pass http_auth_type http_auth_user http_first_req int
    internal.htx.data internal.htx.free internal.htx.free_data internal.htx.has_eom
    internal.htx.nbblks internal.htx.size internal.htx.used internal.htx_blk.data
    internal.htx_blk.hdrname internal.htx_blk.hdrval internal.htx_blk.size
    internal.htx_blk.start_line internal.htx_blk.type internal.strm.is_htx ipv4 ipv6
    last_rule_file last_rule_line lat_ns_avg lat_ns_tot meth method nbproc nbsrv path
    path_beg path_dir path_dom path_end path_len path_reg path_sub pathq payload payload_lv
    prio_class prio_offset proc query queue rand rdp_cookie rdp_cookie_cnt
    rep_ssl_hello_type req.body req.body_len req.body_param req.body_size req.cook
    req.cook_cnt req.cook_val req.fhdr req.fhdr_cnt req.hdr req.hdr_cnt req.hdr_ip
    req.hdr_names req.hdr_val req.hdrs req.hdrs_bin req.len req.payload req.payload_lv
    req.proto_http req.rdp_cookie req.rdp_cookie_cnt req.ssl_alpn req.ssl_ec_ext
    req.ssl_hello_type req.ssl_sni req.ssl_st_ext req.ssl_ver req.ver req_len req_proto_http
    req_rdp_cookie req_rdp_cookie_cnt req_ssl_hello_type req_ssl_sni req_ssl_ver req_ver
    res.body res.body_len res.body_size res.cache_hit res.cache_name res.comp res.comp_algo
    res.cook res.cook_cnt res.cook_val res.fhdr res.fhdr_cnt res.hdr res.hdr_cnt res.hdr_ip
    res.hdr_names res.hdr_val res.hdrs res.hdrs_bin res.len res.payload res.payload_lv
    res.ssl_hello_type res.ver resp_ver sc0_bytes_in_rate sc0_bytes_out_rate sc0_clr_gpc0
    sc0_clr_gpc1 sc0_conn_cnt sc0_conn_cur sc0_conn_rate sc0_get_gpc0 sc0_get_gpc1
    sc0_get_gpt0 sc0_gpc0_rate sc0_gpc1_rate sc0_http_err_cnt sc0_http_err_rate
    sc0_http_fail_cnt sc0_http_fail_rate sc0_http_req_cnt sc0_http_req_rate sc0_inc_gpc0
    sc0_inc_gpc1 sc0_kbytes_in sc0_kbytes_out sc0_sess_cnt sc0_sess_rate sc0_tracked
    sc0_trackers sc1_bytes_in_rate sc1_bytes_out_rate sc1_clr_gpc sc1_clr_gpc0 sc1_clr_gpc1
    sc1_conn_cnt sc1_conn_cur sc1_conn_rate sc1_get_gpc0 sc1_get_gpc1 sc1_get_gpt0
    sc1_gpc0_rate sc1_gpc1_rate sc1_http_err_cnt sc1_http_err_rate sc1_http_fail_cnt
    sc1_http_fail_rate sc1_http_req_cnt sc1_http_req_rate sc1_inc_gpc0 sc1_inc_gpc1
    sc1_kbytes_in sc1_kbytes_out sc1_sess_cnt sc1_sess_rate sc1_tracked sc1_trackers
    sc2_bytes_in_rate sc2_bytes_out_rate sc2_clr_gpc0 sc2_clr_gpc1 sc2_conn_cnt sc2_conn_cur
    sc2_conn_rate sc2_get_gpc0 sc2_get_gpc1 sc2_get_gpt0 sc2_gpc0_rate sc2_gpc1_rate
    sc2_http_err_cnt sc2_http_err_rate sc2_http_fail_cnt sc2_http_fail_rate sc2_http_req_cnt
    sc2_http_req_rate sc2_inc_gpc0 sc2_inc_gpc1 sc2_kbytes_in sc2_kbytes_out sc2_sess_cnt
    sc2_sess_rate sc2_tracked sc2_trackers sc_bytes_in_rate sc_bytes_out_rate sc_clr_gpc
    sc_clr_gpc0 sc_clr_gpc1 sc_conn_cnt sc_conn_cur sc_conn_rate sc_get_gpc sc_get_gpc0
    sc_get_gpc1 sc_get_gpt sc_get_gpt0 sc_gpc0_rate sc_gpc1_rate sc_gpc_rate sc_http_err_cnt
    sc_http_err_rate sc_http_fail_cnt sc_http_fail_rate sc_http_req_cnt sc_http_req_rate
    sc_inc_gpc sc_inc_gpc0 sc_inc_gpc1 sc_kbytes_in sc_kbytes_out sc_sess_cnt sc_sess_rate
    sc_tracked sc_trackers scook scook_beg scook_cnt scook_dir scook_dom scook_end scook_len
    scook_reg scook_sub scook_val shdr shdr_beg shdr_cnt shdr_dir shdr_dom shdr_end shdr_ip
    shdr_len shdr_reg shdr_sub shdr_val so_id so_name src src_bytes_in_rate
    src_bytes_out_rate src_clr_gpc src_clr_gpc0 src_clr_gpc1 src_conn_cnt src_conn_cur
    src_conn_rate src_get_gpc src_get_gpc0 src_get_gpc1 src_get_gpt src_get_gpt0
    src_gpc0_rate src_gpc1_rate src_gpc_rate src_http_err_cnt src_http_err_rate
    src_http_fail_cnt src_http_fail_rate src_http_req_cnt src_http_req_rate src_inc_gpc
    src_inc_gpc0 src_inc_gpc1 src_is_local src_kbytes_in src_kbytes_out src_port
    src_sess_cnt src_sess_rate src_updt_conn_cnt srv_conn srv_conn_free srv_id srv_is_up
    srv_iweight srv_name srv_queue srv_sess_rate srv_uweight srv_weight ssl_bc
    ssl_bc_alg_keysize ssl_bc_alpn ssl_bc_cipher ssl_bc_client_random ssl_bc_err
    ssl_bc_err_str ssl_bc_is_resumed ssl_bc_npn ssl_bc_protocol ssl_bc_server_random
    ssl_bc_session_id ssl_bc_session_key ssl_bc_unique_id ssl_bc_use_keysize ssl_c_ca_err
    ssl_c_ca_err_depth ssl_c_chain_der ssl_c_der ssl_c_err ssl_c_i_dn ssl_c_key_alg
    ssl_c_notafter ssl_c_notbefore ssl_c_s_dn ssl_c_serial ssl_c_sha1 ssl_c_sig_alg
    ssl_c_used ssl_c_verify ssl_c_version ssl_f_der ssl_f_i_dn ssl_f_key_alg ssl_f_notafter
    ssl_f_notbefore ssl_f_s_dn ssl_f_serial ssl_f_sha1 ssl_f_sig_alg ssl_f_version ssl_fc
    ssl_fc_alg_keysize ssl_fc_alpn ssl_fc_cipher ssl_fc_cipherlist_bin ssl_fc_cipherlist_hex
    ssl_fc_cipherlist_str ssl_fc_cipherlist_xxh ssl_fc_client_early_traffic_secret
    ssl_fc_client_handshake_traffic_secret ssl_fc_client_random
    ssl_fc_client_traffic_secret_0 ssl_fc_early_exporter_secret ssl_fc_ecformats_bin
    ssl_fc_eclist_bin ssl_fc_err ssl_fc_err_str ssl_fc_exporter_secret ssl_fc_extlist_bin
    ssl_fc_has_crt ssl_fc_has_early ssl_fc_has_sni ssl_fc_is_resumed ssl_fc_npn
    ssl_fc_protocol ssl_fc_protocol_hello_id ssl_fc_server_handshake_traffic_secret
    ssl_fc_server_random ssl_fc_server_traffic_secret_0 ssl_fc_session_id ssl_fc_session_key
    ssl_fc_sni ssl_fc_sni_end ssl_fc_sni_reg ssl_fc_unique_id ssl_fc_use_keysize
    ssl_s_chain_der ssl_s_der ssl_s_i_dn ssl_s_key_alg ssl_s_notafter ssl_s_notbefore
    ssl_s_s_dn ssl_s_serial ssl_s_sha1 ssl_s_sig_alg ssl_s_version status stopping str
    table_avl table_cnt thread url url32 url_beg url_dir url_dom url_end url_ip url_len
    url_param url_port url_reg url_sub urlp urlp_beg urlp_dir urlp_dom urlp_end urlp_len
    urlp_reg urlp_sub urlp_val uuid var wait_end
""".split())


def fetch_known(criterion: str) -> bool:
    """Whether an ACL criterion such as 'hdr(host)' or 'req.hdr(x),lower' names a known fetch."""
    base = re.split(r"[(,]", criterion, maxsplit=1)[0]
    return base in SAMPLE_FETCHES


# The fetches haproxy 2.6 can evaluate in a `tcp-request connection` rule, found by
# `haproxy -c` on each of SAMPLE_FETCHES; every stick counter fetch (sc*_) is one too.
# An ACL on any other fetch never matches there, and haproxy warns.
CONNECTION_FETCHES = frozenset("""
    always_false always_true avg_queue be_conn be_conn_free be_sess_rate bin bool
    connslots cpu_calls cpu_ns_avg cpu_ns_tot date date_us dst dst_conn dst_is_local
    dst_port env fc_dst fc_dst_is_local fc_dst_port fc_err fc_err_str fc_fackets
    fc_http_major fc_lost fc_pp_authority fc_pp_unique_id fc_rcvd_proxy fc_reordering
    fc_retrans fc_rtt fc_rttvar fc_sacked fc_src fc_src_is_local fc_src_port fc_unacked
    fe_client_timeout fe_conn fe_defbe fe_id fe_name fe_req_rate fe_sess_rate hostname
    int internal.strm.is_htx ipv4 ipv6 last_rule_file last_rule_line lat_ns_avg
    lat_ns_tot meth nbproc nbsrv prio_class prio_offset proc queue rand so_id so_name
    src src_bytes_in_rate src_bytes_out_rate src_clr_gpc src_clr_gpc0 src_clr_gpc1
    src_conn_cnt src_conn_cur src_conn_rate src_get_gpc src_get_gpc0 src_get_gpc1
    src_get_gpt src_get_gpt0 src_gpc0_rate src_gpc1_rate src_gpc_rate src_http_err_cnt
    src_http_err_rate src_http_fail_cnt src_http_fail_rate src_http_req_cnt
    src_http_req_rate src_inc_gpc src_inc_gpc0 src_inc_gpc1 src_is_local src_kbytes_in
    src_kbytes_out src_port src_sess_cnt src_sess_rate src_updt_conn_cnt srv_conn
    srv_conn_free srv_is_up srv_iweight srv_queue srv_sess_rate srv_uweight srv_weight
    stopping str table_avl table_cnt thread uuid var wait_end
""".split())
_STICK_COUNTER_FETCH = re.compile(r"sc[0-2]?_")

# What keeplb's layer-4 ACLs evaluate (keeplb.lb.proxy.compile_acl; a test keeps the
# two in step): no converters; pattern files are read into the values when the
# config is parsed (keeplb.config.patterns); ports as haproxy reads integer
# patterns (values, ranges, open ranges, eq/ge/gt/le/lt: int_patterns).
L4_CRITERIA = frozenset({"always_true", "always_false", "src", "dst", "src_port", "dst_port"})
_INT_OPERATORS = frozenset({"eq", "ge", "gt", "le", "lt"})


def fetch_keyword(criterion: str) -> str:
    """The fetch of an ACL criterion: 'hdr' for 'hdr(host)', 'src' for 'src,ipmask(24)'."""
    return re.split(r"[(,]", criterion, maxsplit=1)[0]


def connection_fetch(criterion: str) -> bool:
    """Whether haproxy 2.6 can evaluate `criterion` in a `tcp-request connection` rule."""
    base = fetch_keyword(criterion)
    return base in CONNECTION_FETCHES or bool(_STICK_COUNTER_FETCH.match(base))


def acl_flags(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """(flags, values) of the words after an ACL criterion: '-i', '-m str', '-f file', '--'..."""
    rest = list(words)
    flags: list[str] = []
    while rest and rest[0].startswith("-") and not _is_int(rest[0]):
        flag = rest.pop(0)
        flags.append(flag)
        if flag == "--":
            break
        if flag in ("-m", "-f", "-M") and rest:
            flags.append(rest.pop(0))
    return flags, rest


def anonymous_acl(term: str) -> Acl:
    """The ACL of an anonymous condition term, '{ src -f list.lst }' (without its
    '!'), its pattern files read (one that cannot be read stays a `-f` flag,
    which the relay cannot evaluate; the config check has refused it)."""
    return load_pattern_files(written_anonymous_acl(term))[0]


def written_anonymous_acl(term: str) -> Acl:
    """anonymous_acl as written, its pattern files not read."""
    words = term.strip().removeprefix("{").removesuffix("}").split()
    flags, values = acl_flags(words[1:])
    return Acl("", words[0] if words else "", tuple(flags), tuple(values))


def condition_acls(cond: Condition, acls: Sequence[Acl]) -> list[tuple[str, tuple[Acl, ...]]]:
    """Each ACL a condition uses, in its order: (name, its expressions). An anonymous
    ACL has the name ''; a predefined one (not redefined in `acls`) haproxy's
    expression; a name found nowhere has no expression."""
    out: list[tuple[str, tuple[Acl, ...]]] = []
    for term in cond.terms:
        for word in term:
            ref = word.lstrip("!")
            if ref.startswith("{"):
                out.append(("", (anonymous_acl(ref),)))
                continue
            exprs = tuple(a for a in acls if a.name == ref)
            if not exprs and ref in PREDEFINED_ACL_EXPRESSIONS:
                criterion, values = PREDEFINED_ACL_EXPRESSIONS[ref]
                exprs = (Acl(ref, criterion, (), values),)
            out.append((ref, exprs))
    return out


def l4_unsupported(acl: Acl) -> str | None:
    """What keeplb's layer-4 ACLs cannot evaluate in `acl` as haproxy does, or None."""
    if acl.criterion not in L4_CRITERIA:
        return f"fetch '{acl.criterion}'"
    flags = list(acl.flags)
    for i, flag in enumerate(flags):
        if flag in ("-f", "-M"):
            return f"ACL flag '{flag}'"
        if flag == "-m" and i + 1 < len(flags) and flags[i + 1] not in ("ip", "int"):
            return f"match method '-m {flags[i + 1]}'"
    return None


def _int_pattern_error(acl: Acl, where: Sequence[str] = ()) -> str | None:
    """haproxy's error on the patterns of a port ACL (src_port, dst_port), or None.
    `where`: each value's origin in a pattern file (load_pattern_files), whose
    lines haproxy reads one pattern each (no operators)."""
    flags = acl.flags
    if acl.criterion not in ("src_port", "dst_port") or "-f" in flags or "-M" in flags:
        return None
    if any(f == "-m" and flags[i + 1 : i + 2] != ("int",) for i, f in enumerate(flags)):
        return None  # another match method reads the patterns otherwise
    origins = list(where) or [""] * len(acl.values)
    from_files = [(v, o) for v, o in zip(acl.values, origins, strict=True) if o]
    for value, origin in from_files:
        why = int_patterns((value,))[1]
        if why is not None:
            return why + origin
    return int_patterns(acl.values[len(from_files):])[1]


def _ip_pattern(value: str) -> bool:
    """Whether haproxy takes `value` as an address pattern (src, dst)."""
    # inet_aton() forms ('10', '10.1') are valid IPv4 for haproxy
    if re.fullmatch(r"\d+(\.\d+){0,3}(/[\d.]+)?", value):
        return True
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _l4_checked(acl: Acl) -> Callable[[tuple[str, int], tuple[str, int]], bool] | None:
    """A stand-in layer-4 matcher for config checks: one exactly when
    keeplb.lb.proxy.compile_condition compiles the expression."""
    return None if l4_unsupported(acl) is not None else _never_matches


def _never_matches(src: tuple[str, int], dst: tuple[str, int]) -> bool:
    return False


def condition_unsupported(cond: Condition, acls: Sequence[Acl]) -> str | None:
    """What keeplb's layer-4 ACLs cannot evaluate in a condition as haproxy does
    (l4_unsupported of the first ACL expression it uses that they cannot), or None.
    Only the ACLs the condition names count; keeplb.lb.proxy.compile_condition
    compiles a condition exactly when this is None."""
    for _, exprs in condition_acls(cond, acls):
        for e in exprs:
            why = l4_unsupported(e)
            if why is not None:
                return why
    return None


IntRange = tuple[int | None, int | None]
"""(min, max) of an integer ACL pattern, both included; None: unbounded."""


def _strl2llrc(text: str) -> int | None:
    """haproxy's strl2llrc(): an optional '-' then decimal digits, else None."""
    return int(text) if re.fullmatch(r"-?[0-9]+", text) else None


def _int_range(text: str) -> tuple[IntRange | None, str]:
    """haproxy 2.6's pat_parse_int(): 'N', 'N:M' / 'N-M', 'N:' and ':M' ('-' works as ':')."""
    sep = next((i for i, c in enumerate(text) if c in ":-"), -1)
    if sep < 0:
        n = _strl2llrc(text)
        return ((n, n), "") if n is not None else (None, f"'{text}' is not a number")
    bad = f"'{text}' is not a valid number range"
    if sep == 0 and len(text) > 1:
        hi = _strl2llrc(text[1:])
        return ((None, hi), "") if hi is not None else (None, bad)
    if sep == len(text) - 1:
        lo = _strl2llrc(text[:sep])
        return ((lo, None), "") if lo is not None else (None, bad)
    lo, hi = _strl2llrc(text[:sep]), _strl2llrc(text[sep + 1 :])
    if lo is None or hi is None or lo > hi:
        return None, bad
    return (lo, hi), ""


def int_patterns(values: Sequence[str]) -> tuple[list[IntRange], str | None]:
    """The ranges of an integer ACL's patterns (dst_port, src_port, ...) as haproxy
    2.6 reads them (parse_acl_expr): an operator eq, ge, gt, le or lt applies to
    every following value until the next operator, 'gt 1024' being '1025:'; a value
    with ':' or '-' is a range whatever the operator. Returns the ranges of the
    valid values and haproxy's error on the first invalid one, or None."""
    ranges: list[IntRange] = []
    error: str | None = None
    op = "eq"
    for value in values:
        if value in _INT_OPERATORS:
            op = value
            continue
        text = value
        if op != "eq" and ":" not in value and "-" not in value:
            n = _strl2llrc(value.split(".", 1)[0])
            if n is None:
                error = error or f"'{value}' is neither a number nor a supported operator"
                continue
            n += {"gt": 1, "lt": -1}.get(op, 0)
            text = f"{n}:" if op in ("gt", "ge") else f":{n}"
        got, why = _int_range(text)
        if got is None:
            error = error or why
        else:
            ranges.append(got)
    return ranges, error


def parse_condition(words: Sequence[str]) -> tuple[Condition | None, str | None]:
    """`if|unless` followed by terms; returns (condition, None) or (None, reason).

    Terms are ACL names, optionally negated with '!', or anonymous ACLs in braces;
    '||' or 'or' separates alternatives.
    """
    if not words or words[0] not in ("if", "unless"):
        return None, "expects 'if' or 'unless' followed by a condition"
    negate = words[0] == "unless"
    terms: list[tuple[str, ...]] = []
    cur: list[str] = []
    i = 1
    while i < len(words):
        w = words[i]
        if w in ("||", "or"):
            if not cur:
                return None, f"missing ACL before '{w}'"
            terms.append(tuple(cur))
            cur = []
        elif w in ("{", "!{"):
            depth, j = 1, i + 1
            while j < len(words) and depth:
                if words[j] in ("{", "!{"):
                    depth += 1
                elif words[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                return None, "missing closing '}' in condition"
            cur.append(("!" if w == "!{" else "") + "{ " + " ".join(words[i + 1 : j - 1]) + " }")
            i = j
            continue
        elif w == "}":
            return None, "unexpected '}' in condition"
        else:
            cur.append(w)
        i += 1
    if not cur and terms:
        return None, "missing ACL after '||'"
    # a bare 'if' is accepted by haproxy and always matches: one empty conjunction
    terms.append(tuple(cur))
    return Condition(negate, tuple(terms), " ".join(words)), None


_CONNECT_PARAMS = {"default": 0, "port": 1, "addr": 1, "send-proxy": 0, "via-socks4": 0,
                   "ssl": 0, "sni": 1, "alpn": 1, "linger": 0, "proto": 1, "comment": 1}
_EXPECT_PARAMS = {"min-recv": 1, "comment": 1, "ok-status": 1, "error-status": 1,
                  "tout-status": 1, "on-success": 1, "on-error": 1, "status-code": 1}
_TCP_MATCHES = ("string", "rstring", "binary", "rbinary", "string-lf", "binary-lf")
_HTTP_MATCHES = ("status", "rstatus", "hdr", "fhdr", "string", "rstring")
_HTTP_SEND_PARAMS = {"meth": 1, "uri": 1, "uri-lf": 1, "ver": 1, "hdr": 2, "body": 1,
                     "body-lf": 1, "comment": 1}


def check_rule_args(keyword: str, action: str, args: Sequence[str]) -> tuple[int, str] | None:
    """haproxy's argument checks of a tcp-check / http-check rule.

    Returns (index of the bad argument in `args`, reason) or None when valid.
    """
    base = action.split("(", 1)[0]
    if base in ("set-var", "set-var-fmt"):
        return None if args else (0, f"'{keyword} {base}' expects an expression")
    if base in ("unset-var", "disable-on-404", "send-state"):
        return (0, f"'{keyword} {base}' cannot handle unexpected argument '{args[0]}'") if args else None
    if base == "comment":
        return None if len(args) == 1 else (min(len(args), 1),
                                            f"'{keyword} comment' expects a single string")
    if base == "connect":
        table = _CONNECT_PARAMS
    elif keyword == "http-check" and base == "send":
        table = _HTTP_SEND_PARAMS
    elif base in ("send", "send-lf", "send-binary", "send-binary-lf"):
        if not args:
            return 0, f"'{keyword} {base}' expects a string as argument"
        if base == "send-binary" and not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", args[0]):
            return 0, f"'{keyword} send-binary' : invalid hexadecimal string '{args[0]}'"
        rest = list(args[1:])
        if rest and (rest[0] != "comment" or len(rest) != 2):
            return 1, f"'{keyword} {base}' : expects 'comment' but got '{rest[0]}' as argument"
        return None
    elif base == "expect":
        matches = _HTTP_MATCHES if keyword == "http-check" else _TCP_MATCHES
        j = 0
        while j < len(args) and args[j] in _EXPECT_PARAMS:
            j += 1 + _EXPECT_PARAMS[args[j]]
        if j < len(args) and args[j] == "!":
            j += 1
        if j >= len(args):
            return min(j, len(args)), f"'{keyword} expect' : expects a pattern match"
        match = args[j].lstrip("!")
        if match not in matches:
            return j, (f"'{keyword} expect' only supports {', '.join(repr(m) for m in matches)} "
                       f"(got '{args[j]}')")
        if j + 1 >= len(args):
            return j, f"'{keyword} expect {match}' expects <pattern> as an argument"
        if match == "status" and keyword == "http-check":
            for code in args[j + 1].split(","):
                if not re.fullmatch(r"\d+(?:-\d+)?", code):
                    bad = next((c for c in code if not c.isdigit() and c != "-"), code[:1])
                    return j + 1, (f"'http-check expect' : invalid character '{bad}' in the "
                                   "list of status codes")
        if match == "binary" and not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", args[j + 1]):
            return j + 1, (f"'{keyword} expect' : invalid binary string (an even number of hex "
                           "digits is expected)")
        j += 2
        if match in ("hdr", "fhdr"):
            return None  # hdr name <fmt> [value <fmt>] ... carry their own words
        while j < len(args) and args[j] in _EXPECT_PARAMS:
            j += 1 + _EXPECT_PARAMS[args[j]]
        if j < len(args):
            return j, f"'{keyword} expect' : unexpected argument '{args[j]}'"
        return None
    else:
        return None
    j = 0
    while j < len(args):
        n = table.get(args[j])
        if n is None or j + n >= len(args) + (0 if n else 1):
            return j, (f"'{keyword} {base}' : expects {', '.join(repr(k) for k in table)} but "
                       f"got '{args[j]}' as argument")
        j += 1 + n
    return None


# http-request actions with a fixed number of arguments before 'if'/'unless'
HTTP_REQUEST_ARITY = {
    "set-header": 2, "add-header": 2, "set-path": 1, "set-pathq": 1, "set-query": 1,
    "set-uri": 1, "set-method": 1, "use-service": 1, "replace-path": 2, "replace-pathq": 2,
    "replace-uri": 2, "replace-value": 3, "replace-header": 3, "set-log-level": 1,
    "set-nice": 1, "set-mark": 1, "set-tos": 1, "set-src": 1, "set-dst": 1, "set-src-port": 1,
    "set-dst-port": 1, "del-acl": 1, "del-map": 1, "add-acl": 2, "set-map": 3,
    "disable-l7-retry": 0, "early-hint": 2, "tarpit": -1, "deny": -1, "allow": 0,
    "auth": -1, "redirect": -1, "return": -1, "capture": 3, "wait-for-body": -1,
    "wait-for-handshake": 0, "silent-drop": 0, "normalize-uri": -1, "strict-mode": 1,
}
HTTP_REQUEST_ACTIONS = frozenset(
    "wait-for-handshake ot-group set-log-level set-nice use-service sc-inc-gpc sc-inc-gpc0 "
    "sc-inc-gpc1 sc-set-gpt sc-set-gpt0 send-spoe-group do-resolve cache-use add-acl "
    "add-header allow auth capture del-acl del-header del-map deny disable-l7-retry "
    "early-hint normalize-uri redirect reject replace-header replace-path replace-pathq "
    "replace-uri replace-value return set-header set-map set-method set-path set-pathq "
    "set-query set-uri strict-mode tarpit track-sc set-timeout wait-for-body set-var-fmt "
    "set-var unset-var set-dst set-dst-port set-mark set-src set-src-port set-tos "
    "silent-drop set-priority-class set-priority-offset".split()
)
_TRACK_SC = re.compile(r"(track-sc|sc-inc-gpc|sc-set-gpt)\d*")


_TCP_L4_ACTIONS = (
    "accept reject capture expect-proxy expect-netscaler-cip track-sc sc-inc-gpc sc-inc-gpc0 "
    "sc-inc-gpc1 sc-set-gpt sc-set-gpt0 set-var-fmt set-var unset-var set-dst set-dst-port "
    "set-mark set-src set-src-port set-tos silent-drop"
).split()
TCP_REQUEST_ACTIONS: dict[str, tuple[str, ...]] = {
    "connection": tuple(_TCP_L4_ACTIONS),
    "session": tuple(_TCP_L4_ACTIONS),
    "content": (*_TCP_L4_ACTIONS, "ot-group", "set-log-level", "set-nice", "switch-mode",
                "use-service", "send-spoe-group", "do-resolve", "set-priority-class",
                "set-priority-offset"),
}


# http_parse_http_reply(): the words of deny, tarpit and return, with their argument counts
_HTTP_REPLY_WORDS = {"status": 1, "deny_status": 1, "content-type": 1, "errorfiles": 1,
                     "errorfile": 1, "file": 1, "lf-file": 1, "string": 1, "lf-string": 1,
                     "hdr": 2, "default-errorfiles": 0}
HTTP_REPLY_ACTIONS = ("deny", "tarpit", "return")


def http_reply_bad_word(args: Sequence[str]) -> int | None:
    """Index in `args` (the words of a deny/tarpit/return before its condition) of the
    first one haproxy refuses, or None."""
    j = 0
    while j < len(args):
        n = _HTTP_REPLY_WORDS.get(args[j])
        if n is None:
            return j
        j += 1 + n
    return None


def http_request_action_known(action: str) -> bool:
    """Whether `action` (with its optional '(args)') is an http-request action of 2.6."""
    base = action.split("(", 1)[0]
    return base in HTTP_REQUEST_ACTIONS or bool(_TRACK_SC.fullmatch(base))


def _split_condition(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split `args... if cond` into (args, ['if', cond...])."""
    for i, w in enumerate(words):
        if w in ("if", "unless"):
            return list(words[:i]), list(words[i:])
    return list(words), []


# ==========================================================================
# the parser
# ==========================================================================

_LETTER = {ProxyKind.DEFAULTS: "D", ProxyKind.FRONTEND: "F", ProxyKind.LISTEN: "L",
           ProxyKind.BACKEND: "B"}


@dataclass
class _ProxyInfo:
    """What the checks after parsing need to know about a proxy besides the model."""

    proxy: Proxy
    anonymous: bool = False
    spans: dict[str, Span] = field(default_factory=dict)
    acl_names: set[str] = field(default_factory=set)
    server_spans: dict[str, Span] = field(default_factory=dict)
    inherited_rules: int = 0
    rules_used_by: str = ""  # defaults with tcp/http rules: 'frontend' or 'backend' using them
    own_log_option: str = ""
    ignored_default_backend: tuple[str, Span] | None = None


_CONNECTION_WHERE = "frontend tcp-request connection rule"


def _connection_conflict(uses: Sequence[tuple[str, tuple[Acl, ...]]]) -> str | None:
    """haproxy's warning on a `tcp-request connection` condition using fetches it cannot
    evaluate there (acl_cond_conflicts, then acl_cond_kw_conflicts), or None."""
    for name, exprs in uses:
        if exprs and not any(connection_fetch(e.criterion) for e in exprs):
            if name:
                return (f"acl '{name}' will never match in 'tcp-request connection' because it "
                        f"only involves keywords that are incompatible with '{_CONNECTION_WHERE}'")
            return ("anonymous acl will never match in 'tcp-request connection' because it uses "
                    f"keyword '{fetch_keyword(exprs[0].criterion)}' which is incompatible with "
                    f"'{_CONNECTION_WHERE}'")
    for name, exprs in uses:
        for e in exprs:
            if not connection_fetch(e.criterion):
                who = f"acl '{name}'" if name else "anonymous acl"
                return (f"{who} involves keyword '{fetch_keyword(e.criterion)}' which is "
                        f"incompatible with '{_CONNECTION_WHERE}'")
    return None


def _proxy_word(kind: ProxyKind) -> str:
    return {ProxyKind.LISTEN: "proxy"}.get(kind, kind.value)


class _Parser:
    """Holds the state of one parse; one instance per `parse()` call."""

    def __init__(self, env: Mapping[str, str], diags: Diagnostics) -> None:
        self.env = dict(env)  # setenv and the others change it as the files are read
        self.d = diags
        self.cfg = HaproxyConfig()
        self.section: str | None = None
        self.info: _ProxyInfo | None = None
        self.whole: Line | None = None  # the statement being read, before words_until_empty()
        self.last_defaults: _ProxyInfo | None = None
        self.infos: list[_ProxyInfo] = []
        self.defaults_infos: dict[str, _ProxyInfo] = {}
        self.global_seen = False
        self.other_sections: dict[str, set[str]] = {}  # kind -> names, for references
        self.by_name: dict[str, list[Proxy]] = {}
        self.explicit_defaults: set[str] = set()  # named defaults used through 'from'
        self.implicit_defaults: set[str] = set()  # named defaults used as the last one
        self.backends: dict[str, Proxy] = {}  # filled by finish()

    # ---------------------------------------------------------------- files

    def read_file(self, path: str) -> None:
        """Parse one file; every file starts outside any section, as in haproxy."""
        try:
            # newline="": a lone CR is a blank to haproxy, not a line end
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
                text = read_config_text(fh)
        except OSError as exc:
            self.d.error(None, f"could not open configuration file {path} : {exc.strerror}")
            return
        if text is None:
            self.d.error(None, f"could not open configuration file {path} : "
                         f"{os.strerror(errno.EFBIG)}")
            return
        self.cfg.files.append(path)
        text = self._cut_at_nul(path, text)
        if text and not text.endswith("\n"):
            last = text.count("\n") + 1
            self.d.error(Span(path, last, len(text) - text.rfind("\n")),
                         "missing LF on last line, file might have been truncated")
        self.section = None
        self.info = None
        lexer = Lexer(text, path, self.env, self.d)
        for line in lexer.lines():
            self.line(line)
            lexer.section = self._section_name()

    def _cut_at_nul(self, path: str, text: str) -> str:
        """haproxy reads lines with fgets() and strlen(): a line ends at its first
        NUL byte, and the file ends there too, with a fatal error."""
        nul = text.find("\0")
        if nul < 0:
            return text
        start = text.rfind("\n", 0, nul) + 1
        span = Span(path, text.count("\n", 0, nul) + 1, nul - start + 1)
        eol = text.find("\n", nul)
        line_end = eol + 1 if eol >= 0 else len(text)
        # haproxy's next fgets() (LINESIZE 2048) finds more text: a stray NUL;
        # none: the line looks cut short, the file truncated.
        if len(text) > min(line_end, start + 2047):
            self.d.error(span, f"Stray NUL character at position {span.col}")
        else:
            self.d.error(span, "missing LF on last line, file might have been truncated "
                         f"at position {span.col}")
        return text[:nul] + "\n"

    def _section_name(self) -> str:
        if self.info is not None:
            return self.info.proxy.name or self.info.proxy.kind.value
        return self.section or ""

    def line(self, line: Line) -> None:
        if not line.words[0]:
            return  # readcfgfile(): a statement whose first word is empty is skipped
        self.whole = line
        line = words_until_empty(line)
        head = line.words[0]
        if head in SECTIONS:
            self.start_section(line)
            return
        if self.section is None:
            self.d.error(line.at(0), f"unknown keyword '{head}' out of section",
                         hint=did_you_mean(head, SECTIONS))
            return
        if self.section == "global":
            self.global_line(line)
        elif self.section in PROXY_SECTIONS:
            self.proxy_line(line)
        else:
            # the section itself was warned about at its header; its keywords are still checked
            known = UNSUPPORTED_SECTION_KEYWORDS.get(self.section, ())
            if head not in known:
                self._unknown(line, self.section, (*known, *SECTIONS))
            elif head in ("nameserver", "peer", "mailer") and len(line) > 1:
                bad = invalid_char(line.words[1])
                if bad is not None:
                    self.d.error(line.at(1), f"character '{bad}' is not permitted in server name "
                                 f"'{line.words[1]}'")
                elif head == "nameserver" and line.words[1:2] != ["parse-resolv-conf"]:
                    addr, err = parse_address(line.words[2] if len(line) > 2 else "",
                                              port_required=True, port_range=False,
                                              port_offset=False)
                    if addr is None:
                        self.d.error(line.at(2), f"'nameserver {line.words[1]}' : {err}")
            elif head == "timeout" and self.section in ("resolvers", "mailers"):
                subs = ("retry", "resolve") if self.section == "resolvers" else ("mail",)
                if len(line) < 3 or line.words[1] not in subs:
                    got = line.words[1] if len(line) > 1 else ""
                    self.d.error(line.at(1), f"'timeout' expects {' or '.join(map(repr, subs))} "
                                 f"and <time> as arguments got '{got}'")
            elif self.section == "resolvers" and head == "hold":
                events = ("nx", "timeout", "valid", "obsolete", "other", "refused")
                if len(line) < 3 or line.words[1] not in events:
                    self.d.error(line.at(1), "'hold' expects an <event> ('nx', 'timeout', "
                                 "'valid', 'obsolete', 'other' or 'refused') and a <time>")
                elif self._time(line.words[2], line.at(2))[0] is None:
                    self.d.error(line.at(2), f"'hold' : invalid time '{line.words[2]}'")
            elif self.section == "userlist" and head == "user":
                rest = line.words[2:]
                j = 0
                while j < len(rest):
                    if rest[j] not in ("password", "insecure-password", "groups") or j + 1 >= len(rest):
                        self.d.error(line.at(2 + j), "'user' only supports 'password', "
                                     "'insecure-password' and 'groups' options")
                        break
                    j += 2

    # ------------------------------------------------------------- sections

    def start_section(self, line: Line) -> None:
        head = line.words[0]
        self.section = head
        self.info = None
        if head == "global":
            self.global_seen = True
            if self.cfg.global_.span is None:
                self.cfg.global_.span = line.span
            # haproxy's alertif_too_many_args() looks at the first extra word only
            # and stops at an empty one: `global ""` or `global '' x` pass.
            if len(line) > 1 and line.words[1]:
                self.d.error(line.at(1), f"'global' cannot handle unexpected argument '{line.words[1]}'")
            return
        if head in UNSUPPORTED_SECTIONS:
            if len(line) < 2:
                self.d.error(line.at(0), f"'{head}' expects <name> as an argument")
            elif invalid_char(line.words[1]) is not None:
                self.d.error(line.at(1), f"character '{invalid_char(line.words[1])}' is not "
                             f"permitted in '{head}' name '{line.words[1]}'")
            elif len(line) > 2 and head == "userlist":
                self.d.error(line.at(2), f"'{head}' cannot handle unexpected argument "
                             f"'{line.words[2]}'")
            self.d.warning(line.at(0), f"section '{head}' is not supported by keeplb; its content is ignored")
            if len(line) > 1:
                self.other_sections.setdefault(head, set()).add(line.words[1])
            return
        kind = ProxyKind(head)
        args = list(line.words[1:])
        from_name: str | None = None
        if len(args) >= 2 and args[1] == "from":
            if len(args) < 3 or not args[2]:
                self.d.error(line.at(2), f"'{head}' : 'from' expects a defaults section name")
                return
            from_name = args[2]
            if len(args) > 3 and kind is not ProxyKind.DEFAULTS:
                self.d.error(line.at(4), f"'{head}' cannot handle unexpected argument '{args[3]}'")
                return
            args = args[:1]
        name = args[0] if args else ""
        if len(args) > 1 and kind is not ProxyKind.DEFAULTS:
            # the 1.x syntax 'listen name addr:port': haproxy 2.6 prints an alert yet
            # does not fail, creates no proxy, and refuses every line of the section
            if kind.has_frontend:
                self.d.warning(line.at(2), "please use the 'bind' keyword for listening "
                               "addresses; this section is ignored")
            else:
                self.d.warning(line.at(2), f"unexpected argument '{args[1]}' after the backend "
                               "name; this section is ignored")
            return
        if not name and kind is not ProxyKind.DEFAULTS:
            self.d.error(line.at(0), f"'{head}' expects <name> as an argument")
        # haproxy 2.6 checks the names of proxies, not those of defaults sections
        bad = invalid_char(name) if name and kind is not ProxyKind.DEFAULTS else None
        if bad is not None:
            self.d.error(line.at(1), f"character '{bad}' is not permitted in '{head}' name '{name}'")
        # a defaults section starts afresh unless it names its parent with 'from'
        base = None if kind is ProxyKind.DEFAULTS else self.last_defaults
        if from_name is not None:
            base = self.defaults_infos.get(from_name)
            if base is None or not from_name:
                self.d.error(line.at(len(line) - 1),
                             f"defaults section '{from_name}' not found for {kind.value} '{name}'")
        self._check_defaults_use(base, explicit=from_name is not None, line=line)
        self._check_defaults_rules(base, kind, line)
        proxy = self._inherit(base, kind, name, line.span)
        info = _ProxyInfo(proxy, anonymous=not name, inherited_rules=len(proxy.rules))
        if base is not None:
            info.spans = {k: v for k, v in base.spans.items() if k != "own log option"}
        self.info = info
        if kind is ProxyKind.DEFAULTS:
            self.cfg.defaults[name] = proxy
            self.defaults_infos[name] = info
            self.last_defaults = info
            return
        self._check_duplicate(info, line)
        self.cfg.proxies.append(proxy)
        self.infos.append(info)

    def _check_defaults_use(self, base: _ProxyInfo | None, explicit: bool, line: Line) -> None:
        """haproxy 2.6 refuses a named defaults section used both through 'from' and as
        the implicit last defaults section."""
        if base is None or base.anonymous:
            return
        name = base.proxy.name
        mine, other = ((self.explicit_defaults, self.implicit_defaults) if explicit
                       else (self.implicit_defaults, self.explicit_defaults))
        mine.add(name)
        if name in other:
            # haproxy 2.6 prints this as an ALERT yet exits 0 and starts: a warning here
            self.d.warning(line.at(0), f"defaults section '{name}' (declared at "
                           f"{base.proxy.span}) is explicitly referenced by another proxy and "
                           "implicitly used here",
                         hint="to avoid any ambiguity don't mix both usages: add a last defaults "
                         "section not explicitly used, or always use explicit references")

    def _check_defaults_rules(self, base: _ProxyInfo | None, kind: ProxyKind, line: Line) -> None:
        """haproxy 2.6 (cfgparse-listen.c): the tcp/http rules of a defaults section run
        before those of the proxies using it, so it may serve frontends or backends,
        not both, not a listen nor another defaults section."""
        if base is None:
            return
        own = base.proxy.rules[base.inherited_rules :]
        kinds = {r.action for r in own if r.keyword == "tcp-request"}
        if not kinds and not any(r.keyword == "http-request" for r in own):
            return
        span = base.proxy.span
        at = f"(defaults section at {span.file}:{span.line})" if span is not None else ""
        if kind is ProxyKind.DEFAULTS:
            self.d.error(line.at(0), "a defaults section cannot inherit from a defaults section "
                         f"defining TCP/HTTP rules {at}.")
        elif kind is ProxyKind.LISTEN:
            self.d.error(line.at(0), "a listen section cannot inherit from a defaults section "
                         "defining TCP/HTTP rules.")
        elif base.rules_used_by not in ("", kind.value):
            self.d.error(line.at(0), "frontends and backends cannot inherit from the same "
                         f"defaults section if it defines TCP/HTTP rules {at}.")
        elif kind is ProxyKind.BACKEND and kinds & {"connection", "session"}:
            self.d.error(line.at(0), "a backend section cannot inherit from a defaults section "
                         "defining 'tcp-request connection' or 'tcp-request session' rules "
                         f"{at}.")
        else:
            base.rules_used_by = kind.value

    def _check_duplicate(self, info: _ProxyInfo, line: Line) -> None:
        proxy = info.proxy
        same = self.by_name.setdefault(proxy.name, [])
        for o in same:
            clash = (proxy.kind.has_frontend and o.kind.has_frontend) or (
                proxy.kind.has_backend and o.kind.has_backend)
            if clash:
                self.d.error(line.at(1), f"{_proxy_word(proxy.kind)} '{proxy.name}' has the same name "
                             f"as {_proxy_word(o.kind)} '{o.name}' declared at {o.span}")
                return
        same.append(proxy)

    @staticmethod
    def _inherit(base: _ProxyInfo | None, kind: ProxyKind, name: str, span: Span) -> Proxy:
        """A new proxy carrying every setting of its defaults section (haproxy's
        proxy_preset_defaults + copy of the defaults proxy)."""
        proxy = Proxy(kind=kind, name=name, span=span)
        if base is None:
            return proxy
        b = base.proxy
        proxy.from_defaults = b.name
        proxy.mode = b.mode
        proxy.timeouts = dict(b.timeouts)
        proxy.options = dict(b.options)
        proxy.option_args = dict(b.option_args)
        proxy.logs = list(b.logs)
        proxy.log_global = b.log_global
        proxy.maxconn = b.maxconn
        proxy.fullconn = b.fullconn
        proxy.backlog = b.backlog
        proxy.rate_limit_sessions = b.rate_limit_sessions
        proxy.retries = b.retries
        proxy.default_backend = b.default_backend
        proxy.balance = b.balance
        proxy.default_server = b.default_server
        proxy.stats = b.stats
        proxy.log_format = b.log_format
        proxy.log_format_span = b.log_format_span
        proxy.disabled = b.disabled
        # rules of a named defaults run before the proxy's own (2.5+); check rules are copied
        proxy.rules = list(b.rules)
        # and they keep the ACLs of their defaults section
        proxy.tcp_request_connection = [r if r.acls is not None else replace(r, acls=tuple(b.acls))
                                        for r in b.tcp_request_connection]
        proxy.tcp_request_content = [r if r.acls is not None else replace(r, acls=tuple(b.acls))
                                     for r in b.tcp_request_content]
        return proxy

    # --------------------------------------------------------------- global

    def global_line(self, line: Line) -> None:
        g = self.cfg.global_
        kw, args = line.words[0], line.words[1:]
        if kw == "nbproc":
            self.d.error(line.at(0), "nbproc is not supported any more since HAProxy 2.5; "
                         "threads are used instead")
            return
        if kw.startswith("tune."):
            if kw not in TUNE_KEYWORDS:
                self._unknown(line, "global", [*TUNE_KEYWORDS])
                return
            if kw not in TUNE_SUPPORTED:
                self._unsupported(line, kw)
            if not self._check_arity(line, kw, _TUNE_ARITY):
                return
            if kw == "tune.ssl.capture-cipherlist-size":
                self.d.warning(line.at(0), f"'{kw}' is deprecated and will be removed in version "
                               "2.7. Please use 'tune.ssl.capture-buffer-size' instead.")
            if kw == "tune.bufsize":
                size, err = parse_size(args[0])
                if err or not size:
                    self.d.error(line.at(1), f"'{kw}' expects a positive integer argument")
                    return
            g.tune[kw] = " ".join(args)
            return
        if kw in GLOBAL_UNSUPPORTED:
            self._unsupported(line, kw)
            if not self._check_arity(line, kw):
                return
            self._check_global_words(line)
            if kw in ("ssl-default-bind-options", "ssl-default-server-options"):
                self._check_ssl_options(line)
            return
        if kw not in GLOBAL_SUPPORTED:
            self._unknown(line, "global", [*GLOBAL_SUPPORTED, *GLOBAL_UNSUPPORTED, *SECTIONS])
            return
        if kw in GLOBAL_CHECKED_ONLY:
            self._unsupported(line, kw)
        handler = getattr(self, "g_" + kw.replace("-", "_"))
        handler(line, g)

    def _check_global_words(self, line: Line) -> None:
        """The words after the count that haproxy checks on global keywords keeplb does
        not act on (their count is ARITY's)."""
        kw, args = line.words[0], line.words[1:]
        if kw == "lua-prepend-path" and len(args) > 1 and args[1] not in ("path", "cpath"):
            self.d.error(line.at(2), f"'{kw}' expects <type> to either be 'path' or 'cpath'")
        elif kw == "ssl-load-extra-files" and len(args) > 1 and {"none", "all"} & set(args):
            self.d.error(line.at(1), f"'{kw}' 'none' and 'all' can be only used alone")
        elif kw == "unix-bind":
            options = ("prefix", "mode", "uid", "gid", "user", "group")
            for j in range(0, len(args), 2):
                if args[j] not in options:
                    self.d.error(line.at(1 + j), f"'{kw}' only supports the 'prefix', 'mode', "
                                 "'uid', 'gid', 'user' and 'group' options")
                    return

    def _check_ssl_options(self, line: Line) -> None:
        words = line.words
        j = 1
        while j < len(words):
            w = words[j]
            if w in ("ssl-min-ver", "ssl-max-ver"):
                if j + 1 >= len(words) or words[j + 1] not in ("SSLv3", "TLSv1.0", "TLSv1.1",
                                                               "TLSv1.2", "TLSv1.3"):
                    self.d.error(line.at(j), f"'{w}' expects 'SSLv3', 'TLSv1.0', 'TLSv1.1', "
                                 "'TLSv1.2' or 'TLSv1.3'")
                    return
                j += 2
            elif w in ("no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13",
                       "force-sslv3", "force-tlsv10", "force-tlsv11", "force-tlsv12",
                       "force-tlsv13", "no-tls-tickets", "prefer-client-ciphers", "ssl-reuse",
                       "no-ssl-reuse", "tls-tickets"):
                j += 1
            else:
                self.d.error(line.at(j), f"unknown option '{w}' on global statement "
                             f"'{words[0]}'")
                return

    def _time(self, text: str, span: Span | None) -> tuple[int | None, str | None]:
        """parse_time() plus haproxy's warning about characters after the unit."""
        value, err = parse_time(text)
        junk = time_trailer(text) if value is not None else None
        if junk:
            self.d.warning(span, f"unexpected character '{junk[0]}' after the timer value "
                           f"'{text}', only us, ms, s, m, h and d are supported",
                           hint="haproxy 2.6 ignores it; later versions refuse it")
        return value, err

    def _check_arity(self, line: Line, key: str, default: Arity | None = None) -> bool:
        """ARITY's checks for `key` (its words first on `line`): False after an error.

        Called for the keywords keeplb does not act on and for the timeouts,
        before anything else reads their arguments; `default` is for keywords
        ARITY does not list (None: no check)."""
        arity = ARITY.get(key, default)
        if arity is None:
            return True
        at = key.count(" ") + 1
        args = line.words[at:]
        proxy = self.info.proxy if self.info is not None else None
        where = f"{_proxy_word(proxy.kind)} '{proxy.name}'" if proxy is not None else ""
        warn = arity.severity == "warning"
        report = self.d.warning if warn else self.d.error
        for check in ("count", "missing") if arity.count_first else ("missing", "count"):
            if check == "count" and arity.high is not None:
                value = args[arity.high - 1] if 0 < arity.high <= len(args) else ""
                text = arity.extra.replace("{value}", value) if arity.extra else None
                if self._too_many(line, at - 1 + arity.high, arity.what or key, text=text,
                                  warn=warn):
                    return warn
            if check == "missing" and len(args) < arity.low:
                text = arity.missing.replace("{kw}", key).replace("{proxy}", where)
                report(line.at(at + len(args) if args else at - 1), text.removesuffix("."))
                return warn
        return True

    def _too_many(self, line: Line, allowed: int, what: str | None = None, *,
                  text: str | None = None, warn: bool = False) -> bool:
        """haproxy's alertif_too_many_args(): True (and an error) past `allowed` arguments.

        Called by a keyword's handler before it reads its arguments. As haproxy,
        only the word right after the allowed ones counts, in the whole
        statement (not cut at an empty word), and an empty one there is no
        argument: too_many_args() tests `*args[maxarg + 1]`, so `daemon ""` and
        `maxconn 10 "" x` pass while `maxconn "" 10` fails."""
        whole = self.whole if self.whole is not None and self.whole.span == line.span else line
        extra = unexpected_arg(whole.words, allowed + 1)
        if extra is not None:
            what = what or line.words[0]
            text = text or "'{kw}' cannot handle unexpected argument '{arg}'"
            report = self.d.warning if warn else self.d.error
            report(whole.at(allowed + 1),
                   text.replace("{kw}", what).replace("{arg}", extra).removesuffix("."))
            return True
        return False

    def _flag(self, line: Line) -> bool:
        return not self._too_many(line, 0)

    def g_daemon(self, line: Line, g: Global) -> None:
        if self._flag(line):
            g.daemon = True

    def g_master_worker(self, line: Line, g: Global) -> None:
        if len(line) > 1 and line.words[1] != "no-exit-on-failure":
            self.d.error(line.at(1), "'master-worker' only supports 'no-exit-on-failure' option")
            return
        if not self._too_many(line, 1):
            g.master_worker = True

    def g_quiet(self, line: Line, g: Global) -> None:
        self._flag(line)

    def g_zero_warning(self, line: Line, g: Global) -> None:
        self._flag(line)

    def _int_arg(self, line: Line, what: str, *, lo: int | None = None, hi: int | None = None,
                 lax: bool = True) -> int | None:
        """One integer argument; haproxy reads most with atol(), so junk is 0 (warned)."""
        if self._too_many(line, 1, what):  # haproxy counts first: `maxconn "" 10` is too many
            return None
        if len(line) < 2:
            self.d.error(line.at(0), f"'{what}' expects an integer argument")
            return None
        text = line.words[1]
        if not _is_int(text):
            if not lax:
                self.d.error(line.at(1), f"'{what}' expects an integer argument, got '{text}'")
                return None
            self.d.warning(line.at(1), f"'{what}' value '{text}' is not a number; haproxy reads "
                           f"it as {_atoi(text)}")
        value = _atoi(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.d.error(line.at(1), f"'{what}' value must be between {lo} and {hi} (was {value})")
            return None
        return value

    def g_maxconn(self, line: Line, g: Global) -> None:
        g.maxconn = self._int_arg(line, "maxconn")

    def g_maxconnrate(self, line: Line, g: Global) -> None:
        g.maxconnrate = self._rate_arg(line, g.maxconnrate)

    def g_maxsessrate(self, line: Line, g: Global) -> None:
        g.maxsessrate = self._rate_arg(line, g.maxsessrate)

    def _rate_arg(self, line: Line, current: int | None) -> int | None:
        """`maxconnrate` / `maxsessrate N`: haproxy 2.6 keeps the first non-zero
        value and only alerts on a later line (the file stays valid, so a
        warning here), before it even looks at that line's argument."""
        what = line.words[0]
        if self._too_many(line, 1, what):
            return current
        if current:
            self.d.warning(line.at(0), f"'{what}' already specified. Continuing")
            return current
        return self._int_arg(line, what)

    def g_nbthread(self, line: Line, g: Global) -> None:
        value = self._int_arg(line, "nbthread", lo=1, hi=64, lax=False)
        if value is not None:
            g.nbthread = value

    def g_cpu_map(self, line: Line, g: Global) -> None:
        """`cpu-map [auto:]<process-set>[/<thread-set>] <cpu-set>...`, as haproxy 2.6:
        process 1 is the only process ("1" alone means all its threads), later
        lines replace earlier ones where they overlap."""
        if len(line) < 3:
            self.d.error(line.at(0), "cpu-map expects a process number  ('all', 'odd', 'even', "
                         "a number from 1 to 64 or a range),  followed by a list of CPU ranges "
                         "with numbers from 0 to 63.")
            return
        first = line.words[1]
        auto = first.startswith("auto:")
        sets: list[list[int]] = []
        for part in first.removeprefix("auto:").split("/", 1):
            ids, err = cpu_map_ids(part)
            if err:
                self.d.error(line.at(1), f"cpu-map : {err}")
                return
            sets.append(ids)
        procs, threads = sets[0], (sets[1] if len(sets) > 1 else list(range(1, 65)))
        cpus: set[int] = set()
        for k, word in enumerate(line.words[2:]):
            m = re.fullmatch(r"(\d+)(?:-(\d*))?", word)
            if m is None:
                self.d.error(line.at(2 + k), f"cpu-map : '{word}' is not a CPU range.")
                return
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else int(m.group(2) or 63)
            cpus.update(range(min(lo, hi), max(lo, hi) + 1))
        ordered = sorted(cpus)
        # haproxy numbers the threads of a thread range, or else the processes.
        stepped = threads if len(sets) > 1 and len(threads) > 1 else procs
        if auto and len(ordered) > 1 and len(stepped) != len(ordered):
            self.d.error(line.at(1), "cpu-map : PROC/THREAD range and CPU sets must have the "
                         "same size to be automatically bound")
            return
        if 1 not in procs:
            return  # "Any process IDs above 1 ... are ignored"
        for t in threads:
            if not auto or len(ordered) == 1:
                g.cpu_map[t] = frozenset(ordered)
            elif stepped is threads:
                g.cpu_map[t] = frozenset({ordered[threads.index(t)]})
            else:
                g.cpu_map[t] = frozenset({ordered[procs.index(1)]})

    def g_ulimit_n(self, line: Line, g: Global) -> None:
        g.ulimit_n = self._int_arg(line, "ulimit-n")

    def g_uid(self, line: Line, g: Global) -> None:
        g.uid = self._int_arg(line, "uid", lax=False)

    def g_gid(self, line: Line, g: Global) -> None:
        g.gid = self._int_arg(line, "gid", lax=False)

    def _string_arg(self, line: Line, what: str, expect: str) -> str | None:
        if self._too_many(line, 1):  # before the missing argument, as in haproxy
            return None
        if len(line) < 2 or not line.words[1]:
            self.d.error(line.at(0), f"'{line.words[0]}' expects {expect}")
            return None
        return line.words[1]

    def g_user(self, line: Line, g: Global) -> None:
        name = self._string_arg(line, "user", "a user name")
        if name is None:
            return
        try:
            g.uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            self.d.error(line.at(1), f"cannot find user id for '{name}'")
            return
        g.user = name

    def g_group(self, line: Line, g: Global) -> None:
        name = self._string_arg(line, "group", "a group name")
        if name is None:
            return
        try:
            g.gid = grp.getgrnam(name).gr_gid
        except KeyError:
            self.d.error(line.at(1), f"cannot find group id for '{name}'")
            return
        g.group = name

    def g_chroot(self, line: Line, g: Global) -> None:
        g.chroot = self._string_arg(line, "chroot", "a directory as an argument")

    def g_pidfile(self, line: Line, g: Global) -> None:
        g.pidfile = self._string_arg(line, "pidfile", "a file name as an argument")

    def g_server_state_file(self, line: Line, g: Global) -> None:
        # haproxy ignores words after the path here
        if len(line) < 2:
            self.d.error(line.at(0), "'server-state-file' expects a path")
            return
        g.server_state_file = line.words[1]

    def g_server_state_base(self, line: Line, g: Global) -> None:
        # haproxy ignores words after the directory here
        if len(line) < 2:
            self.d.error(line.at(0), "'server-state-base' expects a directory")
            return
        g.server_state_base = line.words[1]

    def g_log_tag(self, line: Line, g: Global) -> None:
        g.log_tag = self._string_arg(line, "log-tag", "a tag for use in syslog")

    def g_node(self, line: Line, g: Global) -> None:
        self._string_arg(line, "node", "a name")

    def g_description(self, line: Line, g: Global) -> None:
        if len(line) < 2 or not line.words[1]:
            self.d.error(line.at(0), "'description' expects a string argument")

    # The environment keywords take effect at once: the next line's "${VAR}" and
    # `.if defined(VAR)` see the change (the lexer reads self.env line by line).
    # keeplb's process environment is left alone: only external checks and Lua,
    # which keeplb does not run, would read it.

    def g_setenv(self, line: Line, g: Global) -> None:
        # haproxy 2.6 reads two words and ignores any after them
        if len(line) < 3:
            self.d.error(line.at(0), f"'{line.words[0]}' expects a name and a value")
            return
        name, value = line.words[1], line.words[2]
        if line.words[0] == "setenv" or name not in self.env:
            self.env[name] = value

    g_presetenv = g_setenv

    def g_unsetenv(self, line: Line, g: Global) -> None:
        if len(line) < 2:
            self.d.error(line.at(0), "'unsetenv' expects at least one variable name")
            return
        for name in line.words[1:]:
            self.env.pop(name, None)

    def g_resetenv(self, line: Line, g: Global) -> None:
        keep = set(line.words[1:])
        for name in [n for n in self.env if n not in keep]:
            del self.env[name]

    def g_hard_stop_after(self, line: Line, g: Global) -> None:
        if len(line) < 2:
            self.d.error(line.at(0), "'hard-stop-after' expects <time> as argument")
            return
        value, err = self._time(line.words[1], line.at(1))
        if err:
            self.d.error(line.at(1), f"{err} in argument to <hard-stop-after>")
            return
        g.hard_stop_after = value

    def g_log(self, line: Line, g: Global) -> None:
        target = self.parse_log(line)
        if target is not None:
            g.logs.append(target)

    def g_stats(self, line: Line, g: Global) -> None:
        sub = line.words[1] if len(line) > 1 else ""
        if sub not in GLOBAL_STATS:
            self.d.error(line.at(1 if sub else 0), "'stats' only supports 'socket', 'maxconn', "
                         f"'bind-process' and 'timeout' (got '{sub}')")
            return
        if sub == "bind-process":
            self._unsupported(line, "stats bind-process")
            return
        if sub == "timeout":
            value, err = self._time(line.words[2] if len(line) > 2 else "", line.at(2))
            if err:
                self.d.error(line.at(2), f"'stats timeout' : {err}")
            g.stats_timeout = value
            return
        if sub == "maxconn":
            self._unsupported(line, "stats maxconn")  # stats sockets take any number
            if len(line) < 3 or not _is_int(line.words[2]) or int(line.words[2]) <= 0:
                self.d.error(line.at(2), "'stats maxconn' : a positive value is expected")
                return
            g.stats_maxconn = int(line.words[2])
            return
        if len(line) < 3:
            self.d.error(line.at(1), "'stats socket' : missing socket address")
            return
        addr: Address | None = None
        for text in line.words[2].split(","):
            addr, err = parse_address(text, port_required=True, port_range=False,
                                      port_offset=False)
            if addr is None:
                self.d.error(line.at(2), f"'stats socket' : {err}")
                return
        assert addr is not None
        opts = self.parse_bind_options(line, 3, f"stats socket {line.words[2]}", "global")
        if opts is None:
            return
        level = "admin"
        mode: int | None = None
        socket = StatsSocket(addr, span=line.at(2))
        for key, opt in opts:
            if key == "level":
                if opt not in ("user", "operator", "admin"):
                    self.d.error(line.span, "'stats socket' : 'level' only supports 'user', "
                                 f"'operator', and 'admin' (got '{opt}')")
                    return
                level = opt
            elif key == "mode":
                try:
                    mode = int(opt or "", 8)
                except ValueError:
                    self.d.error(line.span, f"'stats socket' : 'mode' : invalid octal mode '{opt}'")
                    return
            elif key == "expose-fd":
                socket = replace(socket, expose_fd_listeners=True)
            elif key == "user":
                socket = replace(socket, user=opt)
            elif key == "group":
                socket = replace(socket, group=opt)
        g.stats_sockets.append(replace(socket, level=level, mode=mode))

    # ------------------------------------------------------------------ log

    def parse_log(self, line: Line) -> LogTarget | None:
        """`log <target> [len N] [format F] [sample R:S] <facility> [level [minlevel]]`."""
        args = list(line.words[1:])
        if not args:
            self.d.error(line.at(0), "'log' expects either <address[:port]> and <facility> or 'global' as arguments")
            return None
        address = args[0]
        if address not in ("stdout", "stderr") and not address.startswith(("ring@", "fd@")):
            addr, err = parse_address(address, port_required=False, port_range=False,
                                      port_offset=False)
            if addr is not None and not _is_ip_or_any(addr):
                addr, err = None, f"invalid address: '{address}'"
            if addr is None:
                self.d.error(line.at(1), f"log : {err}")
                return None
        i = 1
        fmt: str | None = None
        while i + 1 < len(args) and args[i] in ("len", "format", "sample"):
            if args[i] == "format":
                fmt = args[i + 1]
                if fmt not in ("local", "rfc3164", "rfc5424", "priority", "short", "timed",
                               "iso", "raw"):
                    self.d.error(line.at(i + 2), f"log : unknown log format '{fmt}'")
                    return None
            elif args[i] == "len" and not _is_int(args[i + 1]):
                self.d.error(line.at(i + 2), f"log : invalid 'len' value '{args[i + 1]}'")
                return None
            i += 2
        if i >= len(args):
            self.d.error(line.at(0), "log : missing facility")
            return None
        facility = args[i]
        if facility not in LOG_FACILITIES:
            self.d.error(line.at(i + 1), f"log : unknown log facility '{facility}'")
            return None
        level = minlevel = None
        if i + 1 < len(args):
            level = args[i + 1]
            if level not in LOG_LEVELS:
                self.d.error(line.at(i + 2), f"log : unknown optional log level '{level}'")
                return None
        if i + 2 < len(args):
            minlevel = args[i + 2]
            if minlevel not in LOG_LEVELS:
                self.d.error(line.at(i + 3), f"log : unknown optional minimum log level '{minlevel}'")
                return None
        if i + 3 < len(args):
            self.d.error(line.at(i + 4), f"'log' cannot handle unexpected argument '{args[i + 3]}'")
            return None
        return LogTarget(address, facility, level, minlevel, fmt, line.span)

    # --------------------------------------------------------- diagnostics

    def _unknown(self, line: Line, section: str, choices: Iterable[str]) -> None:
        kw = line.words[0]
        self.d.error(line.at(0), f"unknown keyword '{kw}' in '{section}' section",
                     hint=did_you_mean(kw, choices))

    def _unsupported(self, line: Line, kw: str) -> None:
        self.d.warning(line.at(0), f"keyword '{kw}' is not supported by keeplb")

    # --------------------------------------------------------------- proxies

    def proxy_line(self, line: Line) -> None:
        info = self.info
        if info is None:
            # the section header was refused (see start_section)
            self.d.error(line.at(0), "'listen' or 'defaults' expected: the section header "
                         "above was not accepted")
            return
        proxy = info.proxy
        words = line.words
        head = words[0]
        if head in ("no", "default"):
            if len(words) > 1 and words[1] == "option":
                self.option_line(line, 2, negate=head)
            elif head == "no" and len(words) > 1 and words[1] == "log":
                if len(words) > 2:
                    self.d.error(line.at(2), "log : 'no log' does not expect arguments")
                    return
                proxy.logs = []
                proxy.log_global = False
            else:
                self.d.error(line.at(0), f"'{head}' is only supported with 'option' or 'log'")
            return
        key = head
        if head in PROXY_MULTI:
            sub = words[1] if len(words) > 1 else ""
            key = f"{head} {sub}"
            if key not in PROXY_CAPS:
                subs = [k.split(" ", 1)[1] for k in PROXY_CAPS if k.startswith(head + " ")]
                self.d.error(line.at(1 if sub else 0),
                             f"'{head}' supports {', '.join(repr(s) for s in subs)} (got '{sub}')",
                             hint=did_you_mean(sub, subs) if sub else None)
                return
        if key not in PROXY_CAPS:
            section = proxy.kind.value
            self._unknown(line, section, [k.split(" ")[0] for k in PROXY_CAPS] + ["no", *SECTIONS])
            return
        if key == "option":
            self.option_line(line, 1, negate=None)
            return
        verdict = self._allowed(line, key, PROXY_CAPS[key])
        if verdict == "refused":
            return
        if verdict == "ignored":
            if key == "default_backend" and len(words) == 2:
                # haproxy keeps it anyway and checks it once every file is read
                info.ignored_default_backend = (words[1], line.at(1))
            # haproxy still checks the arguments of an ignored keyword: do it on a copy
            proxy, info = self._scratch(info)
        if key not in PROXY_SUPPORTED:
            if verdict == "ok":
                self._unsupported(line, key)
            self.check_unsupported(line, key)
            return
        if key in PROXY_CHECKED_ONLY and verdict == "ok":
            self._unsupported(line, key)
        handler = getattr(self, "p_" + key.replace(" ", "_").replace("-", "_"))
        handler(line, proxy, info)

    def check_unsupported(self, line: Line, key: str) -> None:
        """Argument checks haproxy makes on keywords keeplb does not act on."""
        words = line.words
        if not self._check_arity(line, key):
            return
        at = key.count(" ") + 1
        if key in ("force-persist", "ignore-persist", "monitor fail", "use-server"):
            # the condition's ACLs must exist, as in haproxy (use-server names a server first)
            start = at + (key == "use-server")
            if len(words) > start:
                self._condition(line, list(words[start:]), start)
            return
        if key == "bind-process":
            self.d.warning(line.at(0), "'bind-process' has no effect, is deprecated, and will be "
                           "removed in version 2.7.")
            return
        if key == "retry-on":
            for j, word in enumerate(words[1:], start=1):
                if word not in RETRY_ON:
                    self.d.error(line.at(j), f"'retry-on': unknown keyword '{word}'")
                    return
            return
        if key.startswith("stick ") and len(words) > 3 and words[3] not in ("table", "if",
                                                                              "unless"):
            self.d.error(line.at(3), f"'stick': unknown keyword '{words[3]}'")
            return
        if key in ("http-response", "http-after-response", "stats http-request"):
            # the actions with a fixed count of arguments, as for http-request
            args, _ = _split_condition(words[at + 1 :])
            arity = HTTP_REQUEST_ARITY.get(words[at].split("(", 1)[0], -1)
            if words[at] in HTTP_REPLY_ACTIONS:
                bad_at = http_reply_bad_word(args)
                arity = -1 if bad_at is None else bad_at
            if 0 <= arity < len(args):
                self.d.error(line.at(at + 1 + arity), f"'{words[at - 1]} {words[at]}' expects "
                             "either 'if' or 'unless' followed by a condition but found "
                             f"'{args[arity]}'")
            return
        if key == "tcp-response content" and words[2] in ("accept", "close", "reject"):
            if len(words) > 3 and words[3] not in ("if", "unless"):
                assert self.info is not None
                where = f"{_proxy_word(self.info.proxy.kind)} '{self.info.proxy.name}'"
                self.d.error(line.at(3), f"'{key} {words[2]}' only accepts 'if' or 'unless', "
                             f"in {where} (got '{words[3]}')")
            return
        if key in ("capture request", "capture response"):
            if len(words) < 6 or words[2] != "header" or words[4] != "len":
                self.d.error(line.at(0), f"'{key}' expects 'header' <header_name> 'len' <len>")
            elif len(words) > 6:
                self.d.error(line.at(6), f"'{key}' cannot handle unexpected argument '{words[6]}'")
        elif key == "capture cookie":
            if len(words) < 5 or words[3] != "len":
                self.d.error(line.at(0), "'capture' expects 'cookie' <cookie_name> 'len' <len>")
        elif key == "cookie":
            self._check_cookie(line)
            assert self.info is not None
            self.info.spans["cookie"] = line.span
        elif key == "source" and len(words) < 2:
            self.d.error(line.at(0), "'source' expects <addr>[:<port>], and optionally 'usesrc' "
                         "<addr>, and 'interface' <name>")
        elif key == "source":
            addr, err = parse_address(words[1], port_required=False,
                                      port_range=True, port_offset=False)
            if addr is not None and not _is_ip_or_any(addr):
                err = f"invalid address: '{addr.host}'"
                addr = None
            if addr is None:
                self.d.error(line.at(1), f"'source' : {err or 'expects <addr>[:<port>]'}")
                return
            for j in range(2, len(words), 2):
                if words[j] not in ("usesrc", "interface"):
                    self.d.error(line.at(j), "'source' only supports optional keywords "
                                 "'interface' and 'usesrc'")
                    return
        elif key == "compression":
            sub = words[1] if len(words) > 1 else ""
            if sub not in ("algo", "type", "offload"):
                self.d.error(line.at(1 if sub else 0), "'compression' expects 'algo', 'type' or "
                             "'offload'")
                return
            if sub == "algo":
                for k, algo in enumerate(words[2:]):
                    if algo not in ("identity", "gzip", "deflate", "raw-deflate"):
                        self.d.error(line.at(2 + k), f"'compression' : '{algo}' is not a "
                                     "supported algorithm")
                        return

    def _check_cookie(self, line: Line) -> None:
        words = line.words
        if len(words) < 2:
            self.d.error(line.at(0), "'cookie' expects <cookie_name> as argument")
            return
        flags = {"rewrite", "insert", "prefix", "indirect", "nocache", "postonly", "preserve",
                 "httponly", "secure", "dynamic"}
        valued = {"domain", "maxidle", "maxlife", "attr"}
        j = 2
        while j < len(words):
            if words[j] in valued and j + 1 < len(words):
                j += 2
            elif words[j] in flags:
                j += 1
            else:
                self.d.error(line.at(j), "'cookie' supports 'rewrite', 'insert', 'prefix', "
                             "'indirect', 'nocache', 'postonly', 'domain', 'maxidle', 'dynamic', "
                             "'maxlife' and 'attr' options")
                return

    @staticmethod
    def _scratch(info: _ProxyInfo) -> tuple[Proxy, _ProxyInfo]:
        proxy = copy.deepcopy(info.proxy)
        scratch = _ProxyInfo(proxy, info.anonymous, dict(info.spans), set(info.acl_names),
                             dict(info.server_spans), info.inherited_rules)
        return proxy, scratch

    def _allowed(self, line: Line, key: str, caps: str) -> str:
        """haproxy's capability check: 'ok'; 'refused' (an error: in defaults, and
        server lines elsewhere); 'ignored' (a warning; the line is not applied)."""
        info = self.info
        assert info is not None
        proxy = info.proxy
        kind = proxy.kind
        if kind is ProxyKind.DEFAULTS:
            if "D" in caps:
                return "ok"
            if "N" in caps:
                if info.anonymous:
                    self.d.error(line.at(0), f"'{key}' not allowed in anonymous 'defaults' section")
                    return "refused"
                return "ok"
            self.d.error(line.at(0), f"'{key}' not allowed in 'defaults' section")
            return "refused"
        if _LETTER[kind] in caps:
            return "ok"
        missing = "backend" if kind is ProxyKind.FRONTEND else "frontend"
        if key in ("server", "default-server", "server-template"):
            self.d.error(line.at(0), f"'{key}' not allowed because {kind.value} '{proxy.name}' "
                         f"has no {missing} capability")
            return "refused"
        hint = "maybe you want 'fullconn' instead" if key == "maxconn" else None
        self.d.warning(line.at(0), f"'{key}' ignored because {kind.value} '{proxy.name}' has no "
                       f"{missing} capability", hint=hint)
        return "ignored"

    def option_line(self, line: Line, at: int, negate: str | None) -> None:
        info = self.info
        assert info is not None
        proxy = info.proxy
        if len(line) <= at:
            self.d.error(line.at(at - 1), "'option' expects an option name")
            return
        name = line.words[at]
        if name not in OPTIONS:
            self.d.error(line.at(at), f"unknown option '{name}'", hint=did_you_mean(name, OPTIONS))
            return
        caps, invertible, max_args = OPTIONS[name]
        if negate is not None and not invertible:
            self.d.error(line.at(0), f"negation/default is not supported for option '{name}'")
            return
        args = line.words[at + 1 :]
        if negate == "default":
            # haproxy 2.6 counts the option name as an argument of 'default option'
            self.d.error(line.at(at), f"'option {name}' cannot handle unexpected argument "
                         f"'{name}' ('default option' is refused by haproxy 2.6)")
            return
        limit = 0 if negate is not None and name != "redispatch" else max_args
        if name == "httpslog" and args and negate is None:
            # haproxy 2.6 forgets to count httpslog's arguments and drops them; a word
            # there is most likely a mistake, so say it, without refusing the file
            self.d.warning(line.at(at + 1), f"'option {name}' cannot handle unexpected argument "
                           f"'{args[0]}'", hint="haproxy 2.6 ignores it")
            args = ()
        elif limit >= 0:
            # this one is parsed by its own function, which names the keyword 'option'
            what = "option" if name == "http-restrict-req-hdr-names" else f"option {name}"
            if self._too_many(line, at + limit, what):
                return
        key = f"option {name}"
        if proxy.kind is ProxyKind.BACKEND and name == "tcplog":
            self.d.warning(line.at(at), f"backend '{proxy.name}' : 'option tcplog' directive is "
                           "ignored in backends")
            return
        verdict = self._allowed(line, key, caps)
        if verdict == "refused":
            return
        if verdict == "ignored":
            proxy, info = self._scratch(info)
        elif name not in OPTIONS_SUPPORTED:
            self._unsupported(line, key)
        value = negate != "no"
        if negate == "default":
            proxy.options.pop(name, None)
            return
        if name in ("tcplog", "httplog", "httpslog") and value:
            previous = info.spans.get("own log option")
            if proxy.kind is ProxyKind.DEFAULTS and previous is not None:
                self.d.warning(line.at(at), f"'option {name}' overrides previous "
                               f"'{info.own_log_option}' in 'defaults' section")
            info.spans["own log option"] = line.span
            info.own_log_option = f"option {name}"
            # one log format per proxy: the last of these and `log-format` wins
            for other in ("tcplog", "httplog", "httpslog"):
                proxy.options.pop(other, None)
            proxy.log_format = proxy.log_format_span = None
        if name in ("httpchk", "tcp-check", "ssl-hello-chk", "mysql-check", "pgsql-check",
                    "redis-check", "smtpchk", "ldap-check", "spop-check", "external-check"):
            # one check type per backend: the last one wins
            for other in ("httpchk", "tcp-check", "ssl-hello-chk", "mysql-check", "pgsql-check",
                          "redis-check", "smtpchk", "ldap-check", "spop-check", "external-check"):
                proxy.options.pop(other, None)
                proxy.option_args.pop(other, None)
        if name == "httplog" and args and args[0] != "clf":
            self.d.error(line.at(at + 1), f"'option httplog' only supports 'clf' (got '{args[0]}')")
            return
        if name == "originalto":
            for j in range(0, len(args), 2):
                if args[j] not in ("except", "header") or j + 1 >= len(args):
                    self.d.error(line.at(at + 1 + j), "'option originalto' only supports "
                                 "optional values: 'except' and 'header'")
                    return
        if name == "mysql-check" and args and args[0] != "user":
            self.d.error(line.at(at + 1), "'option mysql-check' only supports optional values: "
                         f"'user' (got '{args[0]}')")
            return
        if name == "mysql-check" and args:
            self.d.warning(line.at(at + 1), "'option mysql-check user' is not supported by "
                           "keeplb (it checks the server's greeting only with no user); "
                           "using a TCP connect check")
        if name == "pgsql-check" and (not args or args[0] != "user" or len(args) < 2):
            self.d.error(line.at(at + 1 if args else at),
                         "'option pgsql-check' expects 'user <username>' as argument")
            return
        if name == "http-restrict-req-hdr-names" and (not args or args[0] not in (
                "preserve", "reject", "delete")):
            self.d.error(line.at(at + 1 if args else at),
                         "missing parameter. option 'http-restrict-req-hdr-names' expects "
                         "'preserve', 'reject' or 'delete' option")
            return
        if name == "forwardfor":
            j = 0
            while j < len(args):
                if args[j] in ("except", "header") and j + 1 < len(args):
                    j += 2
                elif args[j] == "if-none":
                    j += 1
                else:
                    self.d.error(line.at(at + 1 + j), "'option forwardfor' only supports optional "
                                 "values: 'except', 'header' and 'if-none'")
                    return
        # re-set options move to the end: the order tells which of two lines came
        # last where they interact (tcpka vs clitcpka/srvtcpka, proxy.tcp_keepalive)
        proxy.options.pop(name, None)
        proxy.options[name] = value
        if args:
            proxy.option_args[name] = tuple(args)
        info.spans[key] = line.span

    def p_acl(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 3:
            self.d.error(line.at(0), "'acl' expects an ACL name and a criterion")
            return
        name, criterion = line.words[1], line.words[2]
        if invalid_char(name) is not None:
            self.d.error(line.at(1), f"'acl' : invalid characters in ACL name '{name}'")
            return
        flags, rest = acl_flags(line.words[3:])
        if not fetch_known(criterion):
            self.d.error(line.at(2), f"error detected while parsing ACL '{name}' : unknown fetch "
                         f"method '{criterion}' in ACL expression",
                         hint=did_you_mean(criterion, SAMPLE_FETCHES))
            return
        acl, where, failed = load_pattern_files(
            Acl(name, criterion, tuple(flags), tuple(rest), line.span))
        if failed is not None:
            self.d.error(line.at(2), f"error detected while parsing ACL '{name}' : {failed}")
            return
        from_line = len(acl.values) - len(rest)  # the values written on the line come last
        if criterion in ("src", "dst") and "-M" not in acl.flags:
            for k, value in enumerate(acl.values):
                if not _ip_pattern(value):
                    at = line.at(len(line) - len(rest) + k - from_line) if k >= from_line \
                        else line.at(2)
                    self.d.error(at, f"error detected while parsing ACL '{name}' : '{value}' "
                                 f"is not a valid IPv4 or IPv6 address{where[k]}")
                    return
        why = _int_pattern_error(acl, where)
        if why is not None:
            self.d.error(line.at(2), f"error detected while parsing ACL '{name}' : {why}")
            return
        proxy.acls.append(acl)
        info.acl_names.add(name)

    def _condition(self, line: Line, words: list[str],
                   offset: int) -> tuple[bool, Condition | None]:
        """Parse and check a rule's condition: (valid, condition); errors are reported."""
        if not words:
            return True, None
        cond, err = parse_condition(words)
        if cond is None:
            self.d.error(line.at(offset), f"'{line.words[0]}' : {err}")
            return False, None
        info = self.info
        assert info is not None
        for term in cond.terms:
            for acl in term:
                ref = acl.lstrip("!")
                if ref.startswith("{"):
                    inner = ref[1:-1].split()
                    if not inner or not fetch_known(inner[0]):
                        what = inner[0] if inner else ""
                        self.d.error(line.at(offset), f"'{line.words[0]}' : unknown fetch method "
                                     f"'{what}' in anonymous ACL",
                                     hint=did_you_mean(what, SAMPLE_FETCHES) if what else None)
                        return False, None
                    anon, where, why = load_pattern_files(written_anonymous_acl(ref))
                    why = why or _int_pattern_error(anon, where)
                    if why is not None:
                        self.d.error(line.at(offset), f"'{line.words[0]}' : error detected while "
                                     f"parsing anonymous ACL : {why}")
                        return False, None
                    continue
                if ref not in info.acl_names and ref not in PREDEFINED_ACLS:
                    self.d.error(line.at(offset), f"'{line.words[0]}' : no such ACL : '{ref}'")
                    return False, None
        return True, cond

    def p_backlog(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        proxy.backlog = self._int_arg(line, "backlog")

    def p_maxconn(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        proxy.maxconn = self._int_arg(line, "maxconn")

    def p_rate_limit_sessions(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        # haproxy 2.6's texts, its doubled word included (alerting may match them)
        if len(line) < 3:
            self.d.error(line.at(0), "'rate-limit sessions' expects expects an integer value "
                         "(in sessions/second)")
            return
        text = line.words[2]
        if not text.isdigit():
            bad = next((c for c in text if not c.isdigit()), text[:1])
            self.d.error(line.at(2), f"'rate-limit sessions' : unexpected character '{bad}' in "
                         f"integer value '{text}'")
            return
        proxy.rate_limit_sessions = int(text)

    def p_fullconn(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        proxy.fullconn = self._int_arg(line, "fullconn")

    def p_retries(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        proxy.retries = self._int_arg(line, "retries")

    def p_id(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        value = self._int_arg(line, "id")
        if value is not None and value <= 0:
            self.d.error(line.at(1), "'id' : custom id has to be > 0")

    def p_description(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 2:
            self.d.error(line.at(0), "'description' expects a string argument")

    def p_disabled(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if self._flag(line):
            proxy.disabled = True

    def p_enabled(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if self._flag(line):
            proxy.disabled = False

    def p_log_format(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        """`log-format`: kept as text here, compiled per frontend by
        _check_log_format() once its mode is known (haproxy 2.6 parses it in
        check_config_validity(), so a format in a defaults section is only
        checked in the proxies that use it)."""
        if len(line) < 2 or not line.words[1]:
            self.d.error(line.at(0), "log-format expects an argument")
            return
        if len(line) > 2 and line.words[2]:
            self.d.error(line.at(2), "log-format expects only one argument, don't forget to "
                         "escape spaces!")
            return
        if proxy.kind is ProxyKind.BACKEND:  # haproxy checks the arguments first
            self.d.warning(line.at(0), f"backend '{proxy.name}' : 'log-format' directive is "
                           "ignored in backends")
            return
        previous = info.spans.get("own log option")
        if proxy.kind is ProxyKind.DEFAULTS and previous is not None:
            self.d.warning(line.at(0), f"'log-format' overrides previous '{info.own_log_option}' "
                           "in 'defaults' section")
        info.spans["own log option"] = line.span
        info.own_log_option = "log-format"
        # one log format per proxy: the last of `log-format` and the log options wins
        for other in ("tcplog", "httplog", "httpslog"):
            proxy.options.pop(other, None)
        proxy.log_format = line.words[1]
        proxy.log_format_span = line.at(1)
        info.spans["log-format"] = line.span

    def _check_log_format(self, proxy: Proxy) -> bool:
        """Compile a frontend's `log-format` for its mode: haproxy's error
        ('failed to parse log-format : ...') at the line of the `log-format`,
        in the defaults section when inherited, once per proxy using it as
        haproxy reports it; keeplb's warnings for what it logs as '-'. Whether
        haproxy keeps a format (all of it, or what it had parsed before an error)."""
        if not proxy.log_format:
            return True
        # here, not at the top: importing keeplb.lb loads the relay, which imports this module
        from keeplb.lb.logformat import LogFormatError, compile_format
        span = proxy.log_format_span or proxy.span
        try:
            fmt = compile_format(proxy.log_format, http=proxy.mode is Mode.HTTP,
                                 known_fetch=fetch_known)
        except LogFormatError as exc:
            self.d.error(span, f"failed to parse log-format : {exc}")
            return exc.partial
        for warning in fmt.warnings:
            self.d.warning(span, warning)
        return True

    def p_mode(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if self._too_many(line, 1):
            return
        if len(line) < 2:
            self.d.error(line.at(0), "'mode' expects 'tcp' or 'http'")
            return
        value = line.words[1]
        if value == "health":
            self.d.error(line.at(1), "'mode health' doesn't exist anymore. Please use "
                         "'http-request return status 200' instead")
            return
        if value not in ("tcp", "http"):
            self.d.error(line.at(1), f"unknown proxy mode '{value}'",
                         hint=did_you_mean(value, ("tcp", "http")))
            return
        proxy.mode = Mode(value)
        info.spans["mode"] = line.span

    def p_log(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) > 1 and line.words[1] == "global":
            if not self._too_many(line, 1):
                proxy.log_global = True
            return
        target = self.parse_log(line)
        if target is not None:
            proxy.logs.append(target)

    def _timeout(self, line: Line, proxy: Proxy, name: str) -> None:
        what = f"timeout {name}"
        if not self._check_arity(line, what):
            return
        value, err = self._time(line.words[2], line.at(2))
        if value is None:
            self.d.error(line.at(2), f"{err} in '{what}'")
            return
        proxy.timeouts[name] = value

    def p_timeout_client(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "client")

    def p_timeout_server(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "server")

    def p_timeout_connect(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "connect")

    def p_timeout_check(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "check")

    def p_timeout_queue(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "queue")

    def p_timeout_tunnel(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "tunnel")

    def p_timeout_client_fin(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "client-fin")

    def p_timeout_server_fin(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._timeout(line, proxy, "server-fin")

    def p_balance(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        # backend_parse_balance(): no algorithm is roundrobin
        raw = line.words[1] if len(line) > 1 else "roundrobin"
        algo, _, arg = raw.partition("(")
        arg = arg[:-1] if arg.endswith(")") else arg
        if algo not in BALANCE_ALGORITHMS:
            self.d.error(line.at(1), "balance only supports 'roundrobin', 'static-rr', 'leastconn', "
                         "'first', 'source', 'uri', 'url_param', 'hdr(name)', 'random' and "
                         "'rdp-cookie(name)' options", hint=did_you_mean(algo, BALANCE_ALGORITHMS))
            return
        # haproxy ignores extra words after the algorithms that take no argument
        extra = line.words[2:]
        if algo == "uri":
            known = ("len", "depth", "path-only", "whole")
            j = 0
            while j < len(extra):
                if extra[j] not in known:
                    self.d.error(line.at(2 + j), "balance uri only accepts parameters 'len', "
                                 f"'depth', 'path-only', and 'whole' (got '{extra[j]}')")
                    return
                if extra[j] in ("len", "depth") and (j + 1 >= len(extra)
                                                      or _atoi(extra[j + 1]) <= 0):
                    got = extra[j + 1] if j + 1 < len(extra) else ""
                    self.d.error(line.at(2 + j), f"balance uri : '{extra[j]}' expects a positive "
                                 f"integer (got '{got}')")
                    return
                j += 2 if extra[j] in ("len", "depth") else 1
        if algo == "url_param":
            if not extra:
                self.d.error(line.at(1), "'balance url_param' requires an URL parameter name")
                return
            arg = extra[0]
        if algo == "hdr" and not arg:
            self.d.error(line.at(1), "'balance hdr(name)' requires a header name")
            return
        if algo not in BALANCE_SUPPORTED:
            self.d.warning(line.at(1), f"balance algorithm '{algo}' is not supported by keeplb; "
                           "roundrobin is used instead")
        proxy.balance = replace(proxy.balance, algorithm=algo, argument=arg or None,
                                span=line.span)

    def p_hash_type(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        args = line.words[1:]
        if not args or args[0] not in ("map-based", "consistent"):
            self.d.error(line.at(1), "'hash-type' only supports 'consistent' and 'map-based'")
            return
        function: str | None = None
        if len(args) > 1:
            if args[1] not in ("sdbm", "djb2", "wt6", "crc32", "none"):
                self.d.error(line.at(2), "'hash-type' only supports 'sdbm', 'djb2', 'crc32', "
                             "'wt6' or 'none' hash functions")
                return
            function = args[1]
        if len(args) > 2 and args[2] != "avalanche":
            self.d.error(line.at(3), f"'hash-type' : unknown hash modifier '{args[2]}'")
            return
        proxy.balance = replace(proxy.balance, hash_type=args[0], hash_function=function)

    def p_default_backend(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 2:
            self.d.error(line.at(0), "'default_backend' expects a backend name")
            return
        if self._too_many(line, 1):
            return
        proxy.default_backend = line.words[1]
        info.spans["default_backend"] = line.at(1)

    def p_use_backend(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 2:
            self.d.error(line.at(0), "'use_backend' requires a backend name")
            return
        args, cond_words = _split_condition(line.words[2:])
        if args:
            self.d.error(line.at(2), f"'use_backend' : expects 'if' or 'unless' followed by a "
                         f"condition (got '{args[0]}')")
            return
        ok, cond = self._condition(line, cond_words, 2)
        if ok:
            proxy.use_backends.append(UseBackend(line.words[1], cond, line.at(1)))

    def _rule(self, line: Line, proxy: Proxy, keyword: str, action_at: int,
              actions: Sequence[str] | None) -> Rule | None:
        """Parse and add a rule; None after an error (reported)."""
        words = line.words
        if len(words) <= action_at:
            self.d.error(line.at(0), f"'{keyword}' expects an action")
            return None
        action = words[action_at]
        if actions is not None and action.split("(", 1)[0] not in (*actions, "set-var-fmt"):
            self.d.error(line.at(action_at), f"'{keyword}' : unknown action '{action}'; expects "
                         f"{', '.join(repr(a) for a in actions)}", hint=did_you_mean(action, actions))
            return None
        args, cond_words = _split_condition(words[action_at + 1 :])
        if keyword in ("tcp-check", "http-check"):
            bad = check_rule_args(keyword, action, args)
            if bad is not None:
                self.d.error(line.at(action_at + 1 + bad[0]), bad[1])
                return None
        if keyword == "http-request" and not http_request_action_known(action):
            self.d.error(line.at(action_at), f"'http-request' : unknown action '{action}'",
                         hint=did_you_mean(action, HTTP_REQUEST_ACTIONS))
            return None
        bad_at = http_reply_bad_word(args) if action in HTTP_REPLY_ACTIONS else None
        if bad_at is not None:
            self.d.error(line.at(action_at + 1 + bad_at), f"'{keyword} {action}' expects either "
                         f"'if' or 'unless' followed by a condition but found '{args[bad_at]}'")
            return None
        if keyword == "http-request":
            arity = HTTP_REQUEST_ARITY.get(action.split("(", 1)[0], -1)
            if action.startswith(("set-var", "set-var-fmt")):
                arity = 1
            if arity >= 0 and len(args) != arity:
                if len(args) < arity:
                    self.d.error(line.at(action_at), f"'{keyword} {action}' expects {arity} "
                                 "argument(s)")
                else:
                    self.d.error(line.at(action_at + 1 + arity), f"'{keyword} {action}' expects "
                                 "either 'if' or 'unless' followed by a condition but found "
                                 f"'{args[arity]}'")
                return None
        ok, cond = self._condition(line, cond_words, action_at + 1 + len(args))
        if not ok:
            return None
        rule = Rule(keyword, action, tuple(args), cond, line.span)
        proxy.rules.append(rule)
        return rule

    def p_tcp_check(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._rule(line, proxy, "tcp-check", 1, TCP_CHECK_ACTIONS)

    def p_http_check(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._rule(line, proxy, "http-check", 1, HTTP_CHECK_ACTIONS)

    def p_http_request(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        words = line.words
        if len(words) >= 3 and words[1] == "use-service" and words[2] != "prometheus-exporter":
            if not words[2].startswith("lua."):
                self.d.error(line.at(2), f"'http-request use-service' : '{words[2]}' unknown "
                             "service name")
                return
            self.d.warning(line.at(2), f"service '{words[2]}' is not supported by keeplb")
        elif (len(words) >= 2 and words[1] != "use-service"
              and http_request_action_known(words[1])):
            # keeplb acts on `use-service prometheus-exporter` only; deny, allow and
            # return are not applied to the stats page or anything else
            self.d.warning(line.at(1), f"'http-request {words[1]}' is not supported by keeplb")
        self._rule(line, proxy, "http-request", 1, None)

    def _tcp_request(self, line: Line, proxy: Proxy) -> None:
        words = line.words
        if words[1] in ("inspect-delay", "content") and proxy.kind is ProxyKind.BACKEND:
            # haproxy runs a backend's content rules after use_backend; keeplb does not
            self._unsupported(line, f"tcp-request {words[1]}")
        if words[1] == "inspect-delay":
            if len(words) < 3:
                self.d.error(line.at(1), "'tcp-request inspect-delay' expects a delay")
                return
            value, err = self._time(words[2], line.at(2))
            if value is None:
                self.d.error(line.at(2), f"{err} in 'tcp-request inspect-delay'")
                return
            proxy.timeouts["inspect-delay"] = value
            return
        action = words[2]
        base = action.split("(", 1)[0]
        allowed = TCP_REQUEST_ACTIONS[words[1]]
        if base not in allowed and not _TRACK_SC.fullmatch(base):
            self.d.error(line.at(2), f"'tcp-request {words[1]}' : unknown action '{action}'",
                         hint=did_you_mean(action, allowed))
            return
        if base in ("accept", "reject", "silent-drop") and len(words) > 3 and words[3] not in (
                "if", "unless"):
            self.d.error(line.at(3), f"'tcp-request {words[1]} {action}' only accepts 'if' or "
                         f"'unless' (got '{words[3]}')")
            return
        info = self.info
        assert info is not None
        earlier = {r.action for r in proxy.rules[info.inherited_rules :] if r.keyword == "tcp-request"}
        rule = self._rule(line, proxy, "tcp-request", 1, None)
        if rule is None:
            return
        # haproxy runs connection rules, then session rules, then content rules
        later = {"connection": ("session", "content"), "session": ("content",)}
        for kind in later.get(words[1], ()):
            if kind in earlier:
                self.d.warning(line.at(0), f"a 'tcp-request' rule placed after a 'tcp-request "
                               f"{kind}' rule will still be processed before.")
                break
        if words[1] == "connection":
            self._tcp_request_connection(line, proxy, rule)
        elif words[1] == "content" and proxy.kind is not ProxyKind.BACKEND:
            self._tcp_request_content(line, proxy, rule)

    def _tcp_request_content(self, line: Line, proxy: Proxy, rule: Rule) -> None:
        """keeplb's warnings on a `tcp-request content` rule it does not act on;
        accept and reject rules it can evaluate go to the model."""
        from keeplb.lb.rules import content_unsupported  # keeplb.lb.rules imports this module

        action = rule.args[0].split("(", 1)[0]
        if action not in ("accept", "reject"):
            self.d.warning(line.at(2), f"'tcp-request content {action}' is not supported by "
                           "keeplb; the rule is ignored")
            return
        cond = rule.condition
        if cond is not None and content_unsupported(cond, proxy.acls, _l4_checked):
            cond_at = next((i for i, w in enumerate(line.words) if i > 2 and w in ("if", "unless")),
                           len(line) - 1)
            self.d.warning(line.at(cond_at), "a fetch, match method or flag in a 'tcp-request "
                           "content' condition is not supported by keeplb; the rule is ignored")
            return
        proxy.tcp_request_content.append(TcpRequestContent(action, cond, None, line.span))

    def _tcp_request_connection(self, line: Line, proxy: Proxy, rule: Rule) -> None:
        """haproxy's warnings on a `tcp-request connection` rule, keeplb's on what it
        does not act on; accept and reject rules go to the model."""
        action = rule.args[0].split("(", 1)[0]
        cond = rule.condition
        cond_at = next((i for i, w in enumerate(line.words) if i > 2 and w in ("if", "unless")),
                       len(line) - 1)
        uses = condition_acls(cond, proxy.acls) if cond is not None else []
        conflict = _connection_conflict(uses)
        if conflict is not None:
            self.d.warning(line.at(cond_at), conflict)
        if action not in ("accept", "reject"):
            self.d.warning(line.at(2), f"'tcp-request connection {action}' is not supported by "
                           "keeplb; the rule is ignored")
            return
        why = None
        for _, exprs in uses:
            for e in exprs:
                if why is None and connection_fetch(e.criterion):
                    why = l4_unsupported(e)  # an incompatible one never matches: evaluable
        if why is not None:
            self.d.warning(line.at(cond_at), f"{why} in a 'tcp-request connection' condition is "
                           "not supported by keeplb; the rule is ignored")
        proxy.tcp_request_connection.append(TcpRequestConnection(action, cond, None, line.span))

    def p_tcp_request_connection(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 3:
            self.d.error(line.at(1), "'tcp-request connection' expects an action")
            return
        self._tcp_request(line, proxy)

    p_tcp_request_content = p_tcp_request_connection
    p_tcp_request_session = p_tcp_request_connection

    def p_tcp_request_inspect_delay(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        self._tcp_request(line, proxy)

    # ---------------------------------------------------------------- stats

    def p_stats_enable(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        proxy.stats = replace(proxy.stats, enabled=True, span=line.span)

    def p_stats_hide_version(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        proxy.stats = replace(proxy.stats, enabled=True, hide_version=True)

    def p_stats_uri(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 3:
            self.d.error(line.at(1), "'uri' needs an URI prefix")
            return
        proxy.stats = replace(proxy.stats, enabled=True, uri=line.words[2])

    def p_stats_realm(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 3:
            self.d.error(line.at(1), "'realm' needs an realm name")
            return
        proxy.stats = replace(proxy.stats, enabled=True, realm=line.words[2])

    def p_stats_refresh(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        value, err = self._time(line.words[2] if len(line) > 2 else "", line.at(2))
        if value is None:
            self.d.error(line.at(2 if len(line) > 2 else 1), f"'stats refresh' : {err}")
            return
        proxy.stats = replace(proxy.stats, enabled=True, refresh=value)

    def p_stats_auth(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 3:
            self.d.error(line.at(1), "'auth' needs a user:password account")
            return
        if ":" not in line.words[2]:
            self.d.warning(line.at(2), "'stats auth' expects user:password; this account "
                           "can never log in")
        user, _, password = line.words[2].partition(":")
        proxy.stats = replace(proxy.stats, enabled=True,
                              auth=(*proxy.stats.auth, (user, password)))

    def p_stats_admin(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        words = list(line.words[2:])
        if not words or words[0] not in ("if", "unless"):
            self.d.error(line.at(1), "'stats admin' requires either 'if' or 'unless' followed "
                         "by a condition")
            return
        ok, cond = self._condition(line, words, 2)
        if ok:
            proxy.stats = replace(proxy.stats, admin=cond)

    # ----------------------------------------------------------------- bind

    def parse_bind_options(self, line: Line, start: int, what: str, section: str,
                           unix: bool = False) -> list[tuple[str, str | None]] | None:
        """Bind options from word `start`; None after an error (reported). `unix`:
        the line binds a UNIX socket of a frontend (not a stats socket)."""
        out: list[tuple[str, str | None]] = []
        words = line.words
        i = start
        while i < len(words):
            kw = words[i]
            if kw not in BIND_OPTIONS:
                self.d.error(line.at(i), f"'{what}' in section '{section}': unknown keyword '{kw}'",
                             hint=did_you_mean(kw, BIND_OPTIONS))
                return None
            nargs = BIND_OPTIONS[kw]
            if i + nargs >= len(words) and nargs:
                self.d.error(line.at(i), f"'{what}' : missing value for '{kw}' option")
                return None
            value = words[i + 1] if nargs else None
            if kw == "expose-fd" and value != "listeners":
                self.d.error(line.at(i + 1), f"'{what}' : 'expose-fd' only supports 'listeners'")
                return None
            if kw in ("backlog", "maxconn", "id", "nice", "mss") and not _is_int(value or ""):
                self.d.error(line.at(i + 1), f"'{what}' : '{kw}' expects an integer argument")
                return None
            if kw == "mode" and not re.fullmatch(r"[0-7]+", value or ""):
                self.d.error(line.at(i + 1), f"'{what}' : 'mode' : missing or invalid mode "
                             f"'{value}' (octal integer expected)")
                return None
            if kw == "crt" and value and value.startswith("/") and not os.path.exists(value):
                self.d.error(line.at(i + 1), f"'{what}' : unable to stat SSL certificate from file "
                             f"'{value}' : No such file or directory")
                return None
            if kw not in BIND_SUPPORTED:  # also on a stats socket
                self.d.warning(line.at(i), f"bind option '{kw}' is not supported by keeplb")
            elif unix and kw in ("mode", "user", "group"):
                # applied to stats sockets only (keeplb.proc.listeners does not chmod/chown)
                self.d.warning(line.at(i), f"bind option '{kw}' is not supported by keeplb on "
                               "a frontend's UNIX socket")
            out.append((kw, value))
            i += 1 + nargs
        return out

    def p_bind(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        if len(line) < 2:
            self.d.error(line.at(0), "'bind' expects {<path>|[addr1]:port1[-end1]}{,...} "
                         "[ options ] as arguments")
            return
        addresses: list[Address] = []
        for text in line.words[1].split(","):
            addr, err = parse_address(text, port_required=True, port_range=True, port_offset=False)
            if addr is None:
                self.d.error(line.at(1), f"'bind' : {err}")
                return
            addresses.append(addr)
        opts = self.parse_bind_options(line, 2, f"bind {line.words[1]}", proxy.kind.value,
                                       unix=any(a.family in ("unix", "abns") for a in addresses))
        if opts is None:
            return
        values = dict(opts)
        flags = {k for k, _ in opts}
        for addr in addresses:
            proxy.binds.append(Bind(
                address=addr,
                name=values.get("name"),
                backlog=int(values["backlog"] or 0) if "backlog" in values else None,
                maxconn=int(values["maxconn"] or 0) if "maxconn" in values else None,
                v4v6="v4v6" in flags,
                v6only="v6only" in flags,
                transparent="transparent" in flags,
                interface=values.get("interface"),
                ssl="ssl" in flags,
                accept_proxy="accept-proxy" in flags,
                options=tuple(opts),
                span=line.at(1),
            ))

    # --------------------------------------------------------------- server

    def p_server(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        words = line.words
        if len(words) < 3:
            self.d.error(line.at(0), "'server' expects <name> and <addr>[:<port>] as arguments")
            return
        name = words[1]
        bad = invalid_char(name)
        if bad is not None:
            self.d.error(line.at(1), f"character '{bad}' is not permitted in server name '{name}'")
            return
        addr, err = parse_address(words[2], port_required=False, port_range=False,
                                  port_offset=True)
        if addr is None:
            self.d.error(line.at(2), f"'server {proxy.name}/{name}' : {err}")
            return
        own = self.parse_server_options(line, 3, f"server {proxy.name}/{name}", default=False)
        if own is None:
            return
        previous = info.server_spans.get(name)
        if previous is not None:
            self.d.error(line.at(1), f"{_proxy_word(proxy.kind)} '{proxy.name}', another server "
                         f"named '{name}' was already defined at line {previous.line}, please "
                         "use distinct names")
            return
        info.server_spans[name] = line.span
        options = _merge_server_options(own, proxy.default_server, SERVER_DEFAULTS)
        proxy.servers.append(Server(name, addr, options, line.at(1)))

    def p_default_server(self, line: Line, proxy: Proxy, info: _ProxyInfo) -> None:
        own = self.parse_server_options(line, 1, "default-server", default=True)
        if own is not None:
            proxy.default_server = _merge_server_options(own, proxy.default_server)

    def parse_server_options(self, line: Line, start: int, what: str,
                             default: bool) -> ServerOptions | None:
        """Options of a server or default-server line; None after an error (reported)."""
        values: dict[str, object] = {}
        words = line.words
        agent_port = False
        agent = False
        i = start
        while i < len(words):
            kw = words[i]
            if kw not in SERVER_OPTIONS:
                self.d.error(line.at(i), f"'{what}' : unknown keyword '{kw}'",
                             hint=did_you_mean(kw, SERVER_OPTIONS))
                return None
            nargs = SERVER_OPTIONS[kw]
            if default and kw in SERVER_ONLY:
                self.d.error(line.at(i), f"'{kw}' is not supported for 'default-server'")
                return None
            value = words[i + 1] if nargs and i + 1 < len(words) else ""
            if nargs and i + 1 >= len(words):
                self.d.error(line.at(i), f"'{what}' : '{kw}' expects an argument")
                return None
            if kw not in SERVER_SUPPORTED:
                self.d.warning(line.at(i), f"server option '{kw}' is not supported by keeplb")
            err = self._server_option(kw, value, values, line.at(i + 1))
            if err:
                self.d.error(line.at(i + 1 if nargs else i), f"'{what}' : {err}")
                return None
            if kw == "agent-port":
                agent_port = True
            if kw == "agent-check":
                agent = True
            i += 1 + nargs
        if agent and not agent_port and not default:
            self.d.error(line.at(0), f"'{what}' : server does not have agent port. Agent check "
                         "has been disabled")
            return None
        return ServerOptions(**values)  # type: ignore[arg-type]

    def _server_option(self, kw: str, value: str, values: dict[str, object],
                       span: Span) -> str | None:
        """Store one server option in `values`; returns haproxy's reason on a bad value."""
        flags = {
            "check": ("check", True), "no-check": ("check", False),
            "backup": ("backup", True), "no-backup": ("backup", False),
            "disabled": ("disabled", True), "enabled": ("disabled", False),
            "send-proxy": ("send_proxy", True), "no-send-proxy": ("send_proxy", False),
            "agent-check": ("agent_check", True), "no-agent-check": ("agent_check", False),
            "ssl": ("ssl", True), "no-ssl": ("ssl", False),
            "check-ssl": ("check_ssl", True), "no-check-ssl": ("check_ssl", False),
        }
        if kw in flags:
            field_name, flag = flags[kw]
            values[field_name] = flag
            return None
        if kw in ("inter", "fastinter", "downinter", "slowstart", "agent-inter"):
            ms, err = self._time(value, span)
            if ms is None:
                if not value:
                    return f"'{kw}' expects a delay as argument"
                return f"{err} in '{kw}' argument"
            if ms == 0 and kw != "slowstart":
                return f"invalid value 0 for argument '{kw}'"
            if kw != "agent-inter":
                values[kw] = ms
            return None
        if kw in ("weight", "rise", "fall", "maxconn", "maxqueue", "minconn", "error-limit",
                  "id", "port", "agent-port"):
            n = _atoi(value)
            if kw == "weight" and not 0 <= n <= 256:
                return f"weight is not within 0 and 256 ({n})"
            if kw in ("rise", "fall", "id", "error-limit") and n <= 0:
                return f"'{kw}' has to be > 0"
            if kw in ("port", "agent-port") and not 0 <= n <= 65535:
                return f"invalid port '{value}' in '{kw}'"
            target = {"port": "check_port", "error-limit": "error_limit"}.get(kw, kw)
            if kw != "agent-port":
                values[target] = n
            return None
        choices = {
            "on-marked-down": ("shutdown-sessions",),
            "on-marked-up": ("shutdown-backup-sessions",),
            "on-error": ("fastinter", "fail-check", "sudden-death", "mark-down"),
            "verify": ("none", "required"),
        }
        if kw in choices:
            if value not in choices[kw]:
                allowed = ", ".join(f"'{c}'" for c in choices[kw])
                return f"'{kw}' expects {allowed} (got '{value}')"
            values[kw.replace("-", "_")] = value
            return None
        if kw == "init-addr":
            methods = tuple(value.split(","))
            for m in methods:
                if m not in ("last", "libc", "none"):
                    try:
                        ipaddress.ip_address(m)
                    except ValueError:
                        return f"'init-addr' : unknown method '{m}'"
            values["init_addr"] = methods
            return None
        if kw == "addr":
            addr, err = parse_address(value, port_required=False, port_range=False,
                                      port_offset=False)
            if addr is None or not _is_ip_or_any(addr):
                return f"'addr' : invalid address: '{value}'"
            values["check_addr"] = addr.host
            return None
        stored = {"addr": "check_addr", "sni": "sni", "check-sni": "check_sni",
                  "ca-file": "ca_file", "resolvers": "resolvers", "cookie": "cookie",
                  "track": "track"}
        if kw in stored:
            values[stored[kw]] = value
        return None

    # ---------------------------------------------------------------- after

    def finish(self) -> HaproxyConfig:
        """The checks haproxy makes once every file is read (check_config_validity)."""
        cfg = self.cfg
        global_logs = cfg.global_.logs
        g = cfg.global_
        if g.server_state_file:
            path = g.server_state_file
            if not path.startswith("/") and g.server_state_base:
                path = os.path.join(g.server_state_base, path)
            if not os.path.exists(path):
                self.d.warning(g.span, f"can't open global server state file '{path}': No such "
                               "file or directory")
        for p in cfg.proxies:
            if p.kind.has_backend:
                self.backends.setdefault(p.name, p)
        for info in self.infos:
            proxy = info.proxy
            if proxy.disabled:
                continue
            word = _proxy_word(proxy.kind)
            if proxy.kind.has_frontend:
                self._check_frontend(info, global_logs)
            elif info.ignored_default_backend is not None:
                name, span = info.ignored_default_backend
                if name == proxy.name:
                    self.d.error(span, f"proxy '{proxy.name}': loop detected for "
                                 f"default_backend: '{name}'")
                elif "%" not in name and name not in self.backends:
                    self.d.error(span, f"proxy '{proxy.name}': unable to find required "
                                 f"default_backend: '{name}'")
            if proxy.kind.has_backend:
                for server in proxy.servers:
                    o = server.options
                    if o.resolvers and o.resolvers not in self.other_sections.get("resolvers", ()):
                        self.d.error(server.span, f"proxy '{proxy.name}', server '{server.name}': "
                                     f"unable to find required resolvers '{o.resolvers}'")
                    no_port = server.address.port_low is None or server.address.port_offset
                    if (o.check and server.address.family in ("ipv4", "ipv6", "any")
                            and no_port and o.check_port is None):
                        self.d.error(server.span, f"backend '{proxy.name}': server "
                                     f"'{server.name}' has neither service port nor check port")
            self._check_modes(info)
            t = proxy.timeouts
            # haproxy's rule: a backend without servers needs no timeouts, and in tcp
            # mode 'timeout tunnel' stands in for 'timeout server'
            server_ok = bool(t.get("server")) or (proxy.mode is Mode.TCP and bool(t.get("tunnel")))
            missing = (proxy.kind.has_frontend and not t.get("client")) or (
                proxy.kind.has_backend and bool(proxy.servers)
                and (not t.get("connect") or not server_ok))
            if missing:
                self.d.warning(proxy.span, f"missing timeouts for {word} '{proxy.name}'",
                               hint="while not properly invalid, you will certainly encounter "
                               "various problems with such a configuration; set 'client', "
                               "'connect' and 'server' timeouts to a non-zero value")
        return cfg

    def _check_modes(self, info: _ProxyInfo) -> None:
        """Warnings haproxy gives for HTTP-only settings of a tcp proxy and check rules
        without their option; rules inherited from a defaults section do not count."""
        proxy = info.proxy
        word = _proxy_word(proxy.kind)
        own = proxy.rules[info.inherited_rules :]
        if proxy.mode is not Mode.HTTP:
            if any(r.keyword == "http-request" for r in own):
                self.d.warning(proxy.span, f"'http-request' rules ignored for {word} "
                               f"'{proxy.name}' as they require HTTP mode")
            if proxy.stats.enabled:
                self.d.warning(proxy.stats.span or proxy.span, f"'stats' statement ignored for "
                               f"{word} '{proxy.name}' as it requires HTTP mode")
        if proxy.kind.has_backend and proxy.mode is not Mode.HTTP and "cookie" in info.spans:
            self.d.warning(proxy.span, f"cookie will be ignored for {word} '{proxy.name}' "
                           "(needs 'mode http')")
        if proxy.kind.has_backend:
            for keyword, option in (("http-check", "httpchk"), ("tcp-check", "tcp-check")):
                if any(r.keyword == keyword for r in proxy.rules) and not proxy.option(option):
                    self.d.warning(proxy.span, f"{word} '{proxy.name}' uses {keyword} rules "
                                   f"without 'option {option}', so the rules are ignored")

    def _check_frontend(self, info: _ProxyInfo, global_logs: list[LogTarget]) -> None:
        proxy = info.proxy
        word = _proxy_word(proxy.kind)
        if not proxy.binds:
            self.d.warning(proxy.span, f"{word} '{proxy.name}' has no 'bind' directive. Please "
                           "declare it as a backend if this was intended")
        refs: list[tuple[str, Span | None, str]] = []
        if proxy.default_backend is not None:
            refs.append((proxy.default_backend, info.spans.get("default_backend"),
                         "default_backend"))
        refs += [(u.backend, u.span, "use_backend") for u in proxy.use_backends]
        for name, span, what in refs:
            if "%" in name and what == "use_backend":  # resolved per request by haproxy
                self.d.warning(span or proxy.span, f"dynamic backend name '{name}' in "
                               "'use_backend' is not supported by keeplb; the rule is ignored")
                continue
            target = self.backends.get(name)
            if target is None:
                self.d.error(span or proxy.span, f"proxy '{proxy.name}': unable to find required "
                             f"{what}: '{name}'", hint=did_you_mean(name, self.backends))
                continue
            if target is proxy:
                self.d.error(span or proxy.span, f"proxy '{proxy.name}': loop detected for "
                             f"{what}: '{name}'")
                continue
            if proxy.mode is Mode.HTTP and target.mode is Mode.TCP:
                self.d.error(span or proxy.span, f"http {word} '{proxy.name}' ({proxy.span}) tries "
                             f"to use incompatible tcp backend '{target.name}' ({target.span}) "
                             f"as its {what} (see 'mode')")
        from keeplb.lb.rules import content_unsupported  # keeplb.lb.rules imports this module

        for u in proxy.use_backends:
            why = condition_unsupported(u.condition, proxy.acls) if u.condition else None
            if why is not None and proxy.tcp_request_content and u.condition is not None and \
                    not content_unsupported(u.condition, proxy.acls, _l4_checked):
                why = None  # evaluated after the content rules, on their data
            if why is not None:
                self.d.warning(u.span or proxy.span, f"{why} in a 'use_backend' condition is not "
                               "supported by keeplb; the rule is ignored")
        if proxy.option("httplog") and proxy.mode is not Mode.HTTP:
            span = info.spans.get("option httplog", proxy.span)
            self.d.warning(span, f"'option httplog' not usable with {word} '{proxy.name}' (needs "
                           "'mode http'). Falling back to 'option tcplog'")
            proxy.options.pop("httplog", None)
            proxy.options["tcplog"] = True
        kept = self._check_log_format(proxy)
        has_format = proxy.option("httplog") or proxy.option("tcplog") or (
            proxy.log_format and kept)
        has_log = bool(proxy.logs) or (proxy.log_global and bool(global_logs))
        if has_format and not has_log:
            self.d.warning(proxy.span, f"log format ignored for {word} '{proxy.name}' since it "
                           "has no log address")


MAX_CONFIG_CHARS = 64 * 1024 * 1024  # far above a real haproxy.cfg; /dev/zero stops here
_READ_CHUNK = 1 << 16


def read_config_text(fh: TextIO) -> str | None:
    """The text of an open config file, None when it is over MAX_CONFIG_CHARS.

    Reading stops one chunk after a NUL byte, where haproxy stops parsing
    (see _Parser._cut_at_nul): a device like /dev/zero ends at once."""
    parts: list[str] = []
    size = 0
    while chunk := fh.read(_READ_CHUNK):
        parts.append(chunk)
        size += len(chunk)
        if "\0" in chunk:
            parts.append(fh.read(_READ_CHUNK))  # whether lines follow the NUL's line
            break
        if size > MAX_CONFIG_CHARS:
            return None
    return "".join(parts)


def expand_paths(paths: Sequence[str], diags: Diagnostics) -> list[str]:
    """Files to read, in order: a directory stands for its *.cfg files in lexical order."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                diags.error(None, f"cannot open configuration directory {path} : {exc.strerror}")
                continue
            for name in names:
                full = os.path.join(path, name)
                if name.endswith(".cfg") and os.path.isfile(full):
                    files.append(full)
        elif os.path.exists(path):
            files.append(path)
        else:
            diags.error(None, f"cannot open configuration file/directory {path} : "
                        "No such file or directory")
    return files


def parse(
    paths: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[HaproxyConfig, Diagnostics]:
    """Read haproxy.cfg files as `haproxy -f P1 -f P2 ...` does.

    `env` is the environment for "${VAR}" and `.if defined()`; None means the
    process environment, as haproxy. Never raises on bad input and never prints;
    errors and warnings come back located in the Diagnostics.
    """
    diags = Diagnostics()
    parser = _Parser(dict(os.environ) if env is None else env, diags)
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        diags.error(None, "no configuration file given")
    for path in expand_paths(paths, diags):
        parser.read_file(path)
    return parser.finish(), diags


def parse_text(text: str, file: str = "haproxy.cfg",
               env: Mapping[str, str] | None = None) -> tuple[HaproxyConfig, Diagnostics]:
    """Parse config text directly (tests, `keeplb check -` on stdin)."""
    diags = Diagnostics()
    parser = _Parser({} if env is None else env, diags)
    parser.cfg.files.append(file)
    lexer = Lexer(text, file, parser.env, diags)
    for line in lexer.lines():
        parser.line(line)
        lexer.section = parser._section_name()
    return parser.finish(), diags


__all__ = [
    "CONNECTION_FETCHES",
    "KEYWORDS",
    "L4_CRITERIA",
    "PREDEFINED_ACL_EXPRESSIONS",
    "acl_flags",
    "anonymous_acl",
    "check_rule_args",
    "condition_acls",
    "condition_unsupported",
    "connection_fetch",
    "expand_paths",
    "fetch_keyword",
    "inet_aton",
    "int_patterns",
    "keyword_table",
    "l4_unsupported",
    "parse",
    "parse_address",
    "parse_condition",
    "parse_size",
    "parse_text",
    "parse_time",
    "time_trailer",
    "written_anonymous_acl",
]
