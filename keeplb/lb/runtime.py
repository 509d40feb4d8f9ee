"""HAProxy's runtime API (the stats socket), as haproxy 2.6 speaks it.

`stats socket /run/haproxy.sock mode 660 level admin` or
`stats socket ipv4@127.0.0.1:9999 level operator` in the global section; tools
such as socat, hatop or a Prometheus exporter talk to it unchanged.

Two layers (the h11 shape):

- `CliSession`: sans-IO. `session.execute_line(line) -> str` runs one input
  line (several commands separated by ';'), returns the exact bytes haproxy
  would write, and sets `session.closed` when the connection must end. It
  reads and changes the runtime only through `RuntimeControl`.
- `start_stats_socket(sock, runtime, control)`: the asyncio shell, one
  `CliSession` per connection.

The RuntimeControl contract (app.py implements it)
--------------------------------------------------

Every state change an operator asks for goes through these methods, so the
balancer and the health checker learn about it; the CLI never edits a
ServerRuntime itself. Each method is called on the event loop, with a server
of `runtime`, after the CLI validated the arguments, and must not raise for a
valid input:

    set_admin_state(server, state: AdminState)   # ready / drain / maint
    set_weight(server, weight: int)              # new uweight, 0..256
    set_addr(server, host: str, port: int|None)  # host is an IP literal
    enable_health(server) / disable_health(server)
    set_health(server, op: OpState)              # `set server B/S health up|stopping|down`
    set_maxconn(server, maxconn: int)            # 0: no limit

Frontends and process limits go through `FrontendControl` (DirectControl
implements it on the runtime objects only; app.py's control also pauses,
resumes and closes the listeners):

    disable_frontend(fe) / enable_frontend(fe)   # stop / resume accepting
    shutdown_frontend(fe)                        # close the listeners for good
    set_frontend_maxconn(fe, maxconn: int)       # >= 0
    set_global_maxconn(rt, maxconn: int)         # 1 .. hard maxconn
    set_rate_limit(rt, what: str, value: int)    # RATE_LIMITS key, stored unit, 0: none

`clear counters [all]` goes through `CountersControl.clear_counters(rt,
everything)` when the control has it (DirectControl: ProcessRuntime.clear_counters;
app.py's also tells the other nbthread workers), else clears `rt` itself.

Optionally, the same object may also implement `SessionControl`
(`sessions()`, `shutdown_session(ident)`, `shutdown_sessions(server)`) for
`show sess`, `shutdown session` and `shutdown sessions server`; without it
those commands answer that keeplb does not support them here.

`DirectControl` is the reference implementation: it only updates the
ServerRuntime fields the stats read. app.py's control can subclass it and
add the balancer / checker calls (Balancer.set_down on MAINT and DRAIN,
set_up on READY when the server is up, update_weight on a weight change).
MAINT also pauses the server's checks (haproxy: no traffic, no checks);
DRAIN keeps them running (no new traffic, checks go on).

Wiring (for app.py)
-------------------

    for sock in cfg.global_.stats_sockets:
        servers.append(await start_stats_socket(
            sock, lb.runtime, control, timeout=(cfg.global_.stats_timeout or 10000) / 1000))
    ...
    for s in servers: s.close()          # on stop; then `await s.wait_closed()`

A `mode http` frontend with `stats enable` answers with
`stats.handle_stats_http(request_bytes, proxy.stats, runtime, control,
client=peer_ip)`; `http-request use-service prometheus-exporter` answers with
`metrics.handle_metrics_http(request_bytes, runtime, vrrp_status)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import ipaddress
import logging
import os
import pwd
import re
import stat as stat_mod
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, runtime_checkable

from keeplb.config.model import StatsSocket
from keeplb.errors import KeeplbError
from keeplb.lb import stats
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)

_log = logging.getLogger("keeplb.runtime")

MAX_WEIGHT = 256  # haproxy's SRV_UWGHT_MAX
MAX_LINE = 16384  # haproxy's default tune.bufsize: longer lines end the session
DEFAULT_TIMEOUT = 10.0  # `stats timeout` default (seconds)


class AccessLevel(IntEnum):
    """`level user|operator|admin` of a stats socket (haproxy's ACCESS_LVL_*)."""

    USER = 1
    OPER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> AccessLevel:
        return {"user": cls.USER, "operator": cls.OPER, "admin": cls.ADMIN}.get(
            text.lower(), cls.ADMIN)

    @property
    def word(self) -> str:
        return {AccessLevel.USER: "user", AccessLevel.OPER: "operator",
                AccessLevel.ADMIN: "admin"}[self]


@runtime_checkable
class RuntimeControl(Protocol):
    """What the runtime API may change; see the module docstring for the contract."""

    def set_admin_state(self, server: ServerRuntime, state: AdminState) -> None: ...

    def set_weight(self, server: ServerRuntime, weight: int) -> None: ...

    def set_addr(self, server: ServerRuntime, host: str, port: int | None) -> None: ...

    def enable_health(self, server: ServerRuntime) -> None: ...

    def disable_health(self, server: ServerRuntime) -> None: ...

    def set_health(self, server: ServerRuntime, op: OpState) -> None: ...

    def set_maxconn(self, server: ServerRuntime, maxconn: int) -> None: ...


@runtime_checkable
class FrontendControl(Protocol):
    """What `disable/enable/shutdown frontend`, `set maxconn frontend|global` and
    `set rate-limit` change; called after the CLI validated the arguments."""

    def disable_frontend(self, fe: FrontendRuntime) -> None: ...

    def enable_frontend(self, fe: FrontendRuntime) -> None: ...

    def shutdown_frontend(self, fe: FrontendRuntime) -> None: ...

    def set_frontend_maxconn(self, fe: FrontendRuntime, maxconn: int) -> None: ...

    def set_global_maxconn(self, rt: ProcessRuntime, maxconn: int) -> None: ...

    def set_rate_limit(self, rt: ProcessRuntime, what: str, value: int) -> None: ...


@runtime_checkable
class CountersControl(Protocol):
    """`clear counters [all]` (`everything`), called with the CLI's runtime;
    optional: without it the CLI clears the runtime's counters itself."""

    def clear_counters(self, rt: ProcessRuntime, everything: bool) -> None: ...


# `set rate-limit <what> global <value>`: haproxy's settings, and the factor
# from the CLI's unit to the stored one (http-compression is given in kB/s).
RATE_LIMITS = {"connections": 1, "sessions": 1, "ssl-sessions": 1, "http-compression": 1024}


@dataclass(frozen=True, slots=True)
class SessionView:
    """What `show sess` prints about one client session."""

    ident: int  # stable while the session lives; haproxy prints its stream address
    proto: str  # 'tcpv4', 'tcpv6', 'unix_stream'
    src: str  # '127.0.0.1:50000'
    frontend: str
    backend: str | None
    server: str | None
    age_s: float


@runtime_checkable
class SessionControl(Protocol):
    """The relay's sessions, for `show sess` and `shutdown session(s)`."""

    def sessions(self) -> Iterable[SessionView]: ...

    def shutdown_session(self, ident: int) -> bool:
        """Ends one session; False when there is none with that ident."""
        ...

    def shutdown_sessions(self, server: ServerRuntime) -> int:
        """Ends every session on `server`; returns how many."""
        ...


class DirectControl:
    """RuntimeControl that only updates the ServerRuntime objects.

    Good for tests and as a base class: app.py overrides the methods, calls
    super() and then tells its balancer and checker.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def set_admin_state(self, server: ServerRuntime, state: AdminState) -> None:
        if server.admin is not state:
            server.admin = state
            server.last_change = self.clock()

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        server.uweight = weight
        if server.op is not OpState.STARTING:
            server.eweight = weight

    def set_addr(self, server: ServerRuntime, host: str, port: int | None) -> None:
        server.host = host
        if port is not None:
            server.port = port

    def enable_health(self, server: ServerRuntime) -> None:
        server.check_enabled = True

    def disable_health(self, server: ServerRuntime) -> None:
        server.check_enabled = False

    def set_health(self, server: ServerRuntime, op: OpState) -> None:
        if server.op is op:
            return
        now = self.clock()
        if server.op is OpState.STOPPED and server.last_change > 0:
            server.downtime_s += now - server.last_change
        if op is OpState.STOPPED:
            server.check_downs += 1
            server.health = 0
        else:
            rise = server.config.options.rise or 2
            fall = server.config.options.fall or 3
            server.health = rise + fall - 1
        server.op = op
        server.last_change = now

    def set_maxconn(self, server: ServerRuntime, maxconn: int) -> None:
        server.maxconn = maxconn

    # -- FrontendControl ---------------------------------------------------

    def disable_frontend(self, fe: FrontendRuntime) -> None:
        fe.disabled = True
        fe.paused = True

    def enable_frontend(self, fe: FrontendRuntime) -> None:
        fe.disabled = False
        fe.paused = False

    def shutdown_frontend(self, fe: FrontendRuntime) -> None:
        fe.stopped = True

    def set_frontend_maxconn(self, fe: FrontendRuntime, maxconn: int) -> None:
        fe.maxconn = maxconn

    def set_global_maxconn(self, rt: ProcessRuntime, maxconn: int) -> None:
        if not rt.hard_maxconn:
            rt.hard_maxconn = rt.maxconn
        rt.maxconn = maxconn

    def set_rate_limit(self, rt: ProcessRuntime, what: str, value: int) -> None:
        if value:
            rt.rate_limits[what] = value
        else:
            rt.rate_limits.pop(what, None)

    # -- CountersControl ---------------------------------------------------

    def clear_counters(self, rt: ProcessRuntime, everything: bool) -> None:
        rt.clear_counters(everything)


# --------------------------------------------------------------------------
# command table
# --------------------------------------------------------------------------

CommandResult = str


@dataclass(frozen=True, slots=True)
class Command:
    """One CLI keyword: its words, haproxy's usage line, the level it needs,
    and the handler `(session, args) -> output text` (args include the words)."""

    words: tuple[str, ...]
    usage: str | None
    level: AccessLevel
    handler: Callable[[CliSession, list[str]], str]


PERMISSION_DENIED = "Permission denied\n"
NO_BACKEND = "No such backend.\n"
NO_SERVER = "No such server.\n"
REQUIRE_BS = "Require 'backend/server'.\n"

# Commands haproxy 2.6 has and keeplb does not: they get a clear answer
# instead of 'Unknown command'.
HAPROXY_ONLY = tuple(tuple(w.split()) for w in (
    "abort ssl ca-file", "abort ssl cert", "abort ssl crl-file", "add acl", "add map",
    "add server", "add ssl crt-list", "clear acl", "clear map", "clear table",
    "commit acl", "commit map", "commit ssl ca-file", "commit ssl cert",
    "commit ssl crl-file", "del acl", "del map", "del server", "del ssl ca-file",
    "del ssl cert", "del ssl crl-file", "del ssl crt-list", "disable agent",
    "disable dynamic-cookie backend", "enable agent",
    "enable dynamic-cookie backend", "get acl", "get map", "get var",
    "new ssl ca-file", "new ssl cert", "new ssl crlfile", "prepare acl", "prepare map",
    "set dynamic-cookie-key backend", "set map", "set profiling", "set severity-output",
    "set ssl ca-file", "set ssl cert", "set ssl crl-file", "set ssl ocsp-response",
    "set ssl tls-key", "set table", "show acl", "show activity", "show cache",
    "show cli sockets", "show env", "show errors", "show events", "show fd", "show libs",
    "show map", "show peers", "show pools", "show profiling", "show resolvers",
    "show schema json", "show servers conn", "show ssl ca-file",
    "show ssl cert", "show ssl crl-file", "show ssl crt-list", "show ssl ocsp-response",
    "show ssl providers", "show startup-logs", "show table", "show tasks", "show threads",
    "show tls-keys", "show trace", "trace",
))

_ALWAYS_USAGE = (
    "  help [<command>]                        : list matching or all commands\n"
    "  prompt                                  : toggle interactive mode with prompt\n"
    "  quit                                    : disconnect\n"
)


def _find_server(rt: ProcessRuntime, arg: str | None
                 ) -> tuple[BackendRuntime | None, ServerRuntime | None, str | None]:
    """haproxy's cli_find_server(): (backend, server, None) or an error text."""
    if not arg or "/" not in arg:
        return None, None, REQUIRE_BS
    bname, _, sname = arg.partition("/")
    be = rt.backend(bname)
    if be is None and bname.startswith("#") and bname[1:].isdigit():
        be = next((b for b in rt.backends if b.iid == int(bname[1:])), None)
    if be is None:
        return None, None, NO_BACKEND
    srv = be.server(sname)
    if srv is None and sname.startswith("#") and sname[1:].isdigit():
        srv = next((s for s in be.servers if s.sid == int(sname[1:])), None)
    if srv is None:
        return be, None, NO_SERVER
    return be, srv, None


_STATIC_ALGOS = {"static-rr"}
_HASH_ALGOS = {"source", "uri", "url_param", "hdr", "rdp-cookie", "hash"}


def backend_is_static(be: BackendRuntime) -> bool:
    """haproxy's !(lbprm.algo & BE_LB_PROP_DYN): static-rr and map-based hashing
    only accept the weights 0 and the initial one."""
    bal = be.config.balance
    name = bal.algorithm.split("(")[0]
    if name in _STATIC_ALGOS:
        return True
    return name in _HASH_ALGOS and bal.hash_type != "consistent"


_INT_RE = re.compile(r"^-?[0-9]+$")


def parse_weight(be: BackendRuntime, srv: ServerRuntime, text: str | None) -> int | str:
    """haproxy's server_parse_weight_change_request(): the new weight, or the
    error text to print (some of haproxy's texts have no final newline)."""
    if not text:
        return "Require <weight> or <weight%>.\n"
    relative = text.endswith("%")
    digits = text[:-1] if relative else text
    if not _INT_RE.match(digits):
        return "Empty weight string empty or preceded by garbage"
    w = int(digits)
    if relative:
        if w < 0:
            return "Relative weight must be positive.\n"
        w = srv.config.weight * w // 100
        w = min(w, MAX_WEIGHT)
    elif w < 0 or w > MAX_WEIGHT:
        return "Absolute weight can only be between 0 and 256 inclusive.\n"
    if w and w != srv.config.weight and backend_is_static(be):
        return ("Backend is using a static LB algorithm and only accepts weights "
                "'0%' and '100%'.\n")
    return w


# --------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------


def _cmd_help(sess: CliSession, args: list[str]) -> str:
    return sess.usage(args)


def _cmd_prompt(sess: CliSession, args: list[str]) -> str:
    sess.interactive = not sess.interactive
    return ""


def _cmd_quit(sess: CliSession, args: list[str]) -> str:
    sess.closed = True
    return ""


def _cmd_lower_level(level: AccessLevel) -> Callable[[CliSession, list[str]], str]:
    def handler(sess: CliSession, args: list[str]) -> str:
        if sess.level < level:
            return PERMISSION_DENIED
        sess.level = level
        return ""
    return handler


def _cmd_show_cli_level(sess: CliSession, args: list[str]) -> str:
    return sess.level.word + "\n"


def _cmd_show_version(sess: CliSession, args: list[str]) -> str:
    return str(dict(stats.info_fields(sess.runtime, sess.wall()))["Version"]) + "\n"


def _cmd_show_info(sess: CliSession, args: list[str]) -> str:
    opts = args[2:]
    desc = "desc" in opts  # haproxy's json output has no descriptions
    if "json" in opts:
        return stats.render_info_json(sess.runtime, sess.wall())
    if "typed" in opts:
        return stats.render_info_typed(sess.runtime, sess.wall(), desc=desc)
    return stats.render_show_info(sess.runtime, sess.wall(), desc=desc)


def _cmd_show_stat(sess: CliSession, args: list[str]) -> str:
    rest = args[2:]
    opts = {a for a in rest if a in ("typed", "json", "desc", "up", "no-maint")}
    pos = [a for a in rest if a not in opts]
    if pos[:2] == ["domain", "proxy"]:
        pos = pos[2:]
    flt = stats.StatFilter(up_only="up" in opts, no_maint="no-maint" in opts)
    if len(pos) >= 3:
        proxy: int | str
        if _INT_RE.match(pos[0]):
            proxy = int(pos[0])
        else:
            proxy = pos[0]
            if sess.runtime.backend(proxy) is None and sess.runtime.frontend(proxy) is None:
                return "No such proxy.\n"
        if not (_INT_RE.match(pos[1]) and _INT_RE.match(pos[2])):
            return "No such proxy.\n"
        mask = int(pos[1])
        types = stats.StatType.ALL if mask == -1 else stats.StatType(mask & 7)
        flt = stats.StatFilter(proxy=proxy, types=types, sid=int(pos[2]),
                               up_only=flt.up_only, no_maint=flt.no_maint)
    rows = stats.stat_rows(sess.runtime, sess.now(), flt,
                           show_legends=sess.level >= AccessLevel.OPER)
    if "json" in opts:
        return stats.render_stat_json(rows)
    if "typed" in opts:
        return stats.render_stat_typed(rows, desc="desc" in opts)  # CSV, json: no descriptions
    return stats.render_csv(rows)


def _cmd_show_servers_state(sess: CliSession, args: list[str]) -> str:
    name = args[3] if len(args) > 3 else None
    if name is not None and sess.runtime.backend(name) is None:
        return "Can't find backend.\n"
    return stats.render_servers_state(sess.runtime, name, sess.now())


def _cmd_show_backend(sess: CliSession, args: list[str]) -> str:
    return stats.render_show_backend(sess.runtime)


def _cmd_get_weight(sess: CliSession, args: list[str]) -> str:
    _, srv, err = _find_server(sess.runtime, args[2] if len(args) > 2 else None)
    if err or srv is None:
        return err or NO_SERVER
    return f"{srv.uweight} (initial {srv.config.weight})\n"


def _apply_weight(sess: CliSession, arg: str | None, text: str | None) -> str:
    be, srv, err = _find_server(sess.runtime, arg)
    if err or be is None or srv is None:
        return err or NO_SERVER
    w = parse_weight(be, srv, text)
    if isinstance(w, str):
        return w
    sess.control.set_weight(srv, w)
    return ""


def _cmd_set_weight(sess: CliSession, args: list[str]) -> str:
    return _apply_weight(sess, _arg(args, 2), _arg(args, 3))


def _arg(args: list[str], i: int) -> str | None:
    return args[i] if len(args) > i and args[i] != "" else None


def _cmd_set_server(sess: CliSession, args: list[str]) -> str:
    be, srv, err = _find_server(sess.runtime, _arg(args, 2))
    if err or be is None or srv is None:
        return err or NO_SERVER
    what = _arg(args, 3)
    value = _arg(args, 4)
    if what == "weight":
        return _apply_weight(sess, args[2], value)
    if what == "state":
        if value not in ("ready", "drain", "maint"):
            return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
        if srv.unresolved:
            # haproxy 2.6 would make it READY with no address to connect to;
            # keeplb keeps it in MAINT (resolution) until a reload gives it one
            return ""
        sess.control.set_admin_state(srv, AdminState(value))
        return ""
    if what == "health":
        ops = {"up": OpState.RUNNING, "stopping": OpState.STOPPING, "down": OpState.STOPPED}
        if value not in ops:
            return "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n"
        sess.control.set_health(srv, ops[value])
        return ""
    if what == "addr":
        return _set_addr(sess, srv, args)
    if what in ("agent", "agent-addr", "agent-port", "agent-send", "check-addr",
                "check-port", "fqdn", "ssl"):
        if what.startswith("check") and not srv.check_enabled:
            return "health checks are not enabled on this server"
        return f"'set server <srv> {what}' is not supported by keeplb.\n"
    return ("usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | "
            "agent-send | check-addr | check-port | fqdn | health | ssl | state | weight\n")


def _set_addr(sess: CliSession, srv: ServerRuntime, args: list[str]) -> str:
    """haproxy's srv_update_addr_port() wording, 'by stats socket command'."""
    addr = _arg(args, 4)
    if addr is None:
        return "set server <b>/<s> addr requires an address and optionally a port.\n"
    if srv.unresolved:  # `init-addr none`: no address family to update
        return ("Update for the current server address family is only supported through "
                "configuration file by 'stats socket command'\n")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return f"Invalid addr '{addr}' by 'stats socket command'\n"
    host = str(ip)
    parts: list[str] = []
    if host != srv.host:
        parts.append(f"IP changed from '{srv.host}' to '{host}'")
    else:
        parts.append("no need to change the addr")
    new_port: int | None = None
    if len(args) > 5 and args[5] == "port":
        ptext = args[6] if len(args) > 6 else ""
        if not ptext.isdigit() or not 0 < int(ptext) < 65536:
            parts.append(f"problem converting port '{ptext}' to an int")
        elif int(ptext) == srv.port:
            parts.append("no need to change the port")
        else:
            new_port = int(ptext)
            parts.append(f"port changed from '{srv.port}' to '{new_port}'")
    if host != srv.host or new_port is not None:
        sess.control.set_addr(srv, host, new_port)
    return ", ".join(parts) + " by 'stats socket command'\n"


def _server_command(action: Callable[[CliSession, ServerRuntime], str]
                    ) -> Callable[[CliSession, list[str]], str]:
    def handler(sess: CliSession, args: list[str]) -> str:
        _, srv, err = _find_server(sess.runtime, _arg(args, 2))
        if err or srv is None:
            return err or NO_SERVER
        return action(sess, srv)
    return handler


def _enable_server(sess: CliSession, srv: ServerRuntime) -> str:
    if srv.admin is AdminState.MAINT:
        sess.control.set_admin_state(srv, AdminState.READY)
    return ""


def _disable_server(sess: CliSession, srv: ServerRuntime) -> str:
    sess.control.set_admin_state(srv, AdminState.MAINT)
    return ""


def _enable_health(sess: CliSession, srv: ServerRuntime) -> str:
    if not srv.config.options.check:
        return "Health check was not configured on this server, cannot enable.\n"
    sess.control.enable_health(srv)
    return ""


def _disable_health(sess: CliSession, srv: ServerRuntime) -> str:
    sess.control.disable_health(srv)
    return ""


def _cmd_set_maxconn_server(sess: CliSession, args: list[str]) -> str:
    _, srv, err = _find_server(sess.runtime, _arg(args, 3))
    if err or srv is None:
        return err or NO_SERVER
    text = _arg(args, 4)
    if text is None:
        return "Require <maxconn>.\n"
    if not _INT_RE.match(text):
        return "maxconn string empty or preceded by garbage"
    sess.control.set_maxconn(srv, max(0, int(text)))
    return ""


def _cmd_set_timeout(sess: CliSession, args: list[str]) -> str:
    if _arg(args, 2) != "cli":
        return "'set timeout' only supports 'cli'.\n"
    text = _arg(args, 3)
    if text is None or not text.isdigit():
        return "Expects an integer value.\n"
    sess.timeout = float(int(text))
    return ""


def _cmd_clear_counters(sess: CliSession, args: list[str]) -> str:
    clear_all = _arg(args, 2) == "all"
    if clear_all and sess.level < AccessLevel.ADMIN:
        return PERMISSION_DENIED
    ctl = sess.control
    if isinstance(ctl, CountersControl):
        ctl.clear_counters(sess.runtime, clear_all)
    else:
        sess.runtime.clear_counters(clear_all)
    return ""


# --------------------------------------------------------------------------
# frontends and process limits (haproxy's cli_parse_*_frontend, cli.c)
# --------------------------------------------------------------------------

NO_FRONTEND = "No such frontend.\n"
FRONTEND_EXPECTED = "A frontend name is expected.\n"
RATE_LIMIT_USAGE = (
    "'set rate-limit' only supports :\n"
    "   - 'connections global' to set the per-process maximum connection rate\n"
    "   - 'sessions global' to set the per-process maximum session rate\n"
    "   - 'ssl-sessions global' to set the per-process maximum SSL session rate\n"
    "   - 'http-compression global' to set the per-process maximum compression speed in kB/s\n")
_ATOI_RE = re.compile(r"^[ \t]*([+-]?[0-9]*)")


def atoi(text: str) -> int:
    """C's atoi(), which haproxy uses for these values: leading digits, else 0."""
    m = _ATOI_RE.match(text)
    digits = m.group(1) if m else ""
    return int(digits) if digits.strip("+-") else 0


def _frontend_control(sess: CliSession) -> FrontendControl | None:
    ctl = sess.control
    return ctl if isinstance(ctl, FrontendControl) else None


def _find_frontend(sess: CliSession, name: str | None
                   ) -> tuple[FrontendRuntime | None, FrontendControl | None, str | None]:
    """haproxy's cli_find_frontend(): a frontend by name or '#<id>', or the error text."""
    if name is None:
        return None, None, FRONTEND_EXPECTED
    rt = sess.runtime
    fe = rt.frontend(name)
    if fe is None and name.startswith("#") and name[1:].isdigit():
        fe = next((f for f in rt.frontends if f.iid == int(name[1:])), None)
    if fe is None:
        return None, None, NO_FRONTEND
    ctl = _frontend_control(sess)
    if ctl is None:
        return None, None, "Frontend commands are not supported by keeplb here.\n"
    return fe, ctl, None


FrontendAction = Callable[["CliSession", list[str], FrontendRuntime, FrontendControl], str]


def _frontend_command(name_at: int, action: FrontendAction
                      ) -> Callable[[CliSession, list[str]], str]:
    """A handler that finds the frontend named by args[name_at] first, as
    _server_command does for servers."""
    def handler(sess: CliSession, args: list[str]) -> str:
        fe, ctl, err = _find_frontend(sess, _arg(args, name_at))
        if err or fe is None or ctl is None:
            return err or NO_FRONTEND
        return action(sess, args, fe, ctl)
    return handler


def _disable_frontend(sess: CliSession, args: list[str], fe: FrontendRuntime,
                      ctl: FrontendControl) -> str:
    if fe.stopped:
        return "Frontend was previously shut down, cannot disable.\n"
    if fe.disabled:
        return "All sockets are already disabled.\n"
    ctl.disable_frontend(fe)
    return ""


def _enable_frontend(sess: CliSession, args: list[str], fe: FrontendRuntime,
                     ctl: FrontendControl) -> str:
    if fe.stopped:
        return "Frontend was previously shut down, cannot enable.\n"
    if not fe.disabled:
        return "All sockets are already enabled.\n"
    ctl.enable_frontend(fe)
    return ""


def _shutdown_frontend(sess: CliSession, args: list[str], fe: FrontendRuntime,
                       ctl: FrontendControl) -> str:
    if fe.stopped:
        return "Frontend was already shut down.\n"
    ctl.shutdown_frontend(fe)
    return ""


def _set_maxconn_frontend(sess: CliSession, args: list[str], fe: FrontendRuntime,
                          ctl: FrontendControl) -> str:
    text = _arg(args, 4)
    if text is None:
        return "Integer value expected.\n"
    value = atoi(text)
    if value < 0:
        return "Value out of range.\n"
    ctl.set_frontend_maxconn(fe, value)
    return ""


_cmd_disable_frontend = _frontend_command(2, _disable_frontend)
_cmd_enable_frontend = _frontend_command(2, _enable_frontend)
_cmd_shutdown_frontend = _frontend_command(2, _shutdown_frontend)
_cmd_set_maxconn_frontend = _frontend_command(3, _set_maxconn_frontend)


def _cmd_set_maxconn_global(sess: CliSession, args: list[str]) -> str:
    text = _arg(args, 3)
    if text is None:
        return "Expects an integer value.\n"
    ctl = _frontend_control(sess)
    if ctl is None:
        return "'set maxconn global' is not supported by keeplb here.\n"
    rt = sess.runtime
    hard = rt.hard_maxconn or rt.maxconn
    value = atoi(text)
    if value > hard:
        return "Value out of range.\n"
    ctl.set_global_maxconn(rt, value if value > 0 else hard)  # <= 0: back to the hard limit
    return ""


def _cmd_set_rate_limit(sess: CliSession, args: list[str]) -> str:
    what = _arg(args, 2)
    if what not in RATE_LIMITS or _arg(args, 3) != "global":
        return RATE_LIMIT_USAGE
    text = _arg(args, 4)
    if text is None:
        return "Expects an integer value.\n"
    ctl = _frontend_control(sess)
    if ctl is None:
        return "'set rate-limit' is not supported by keeplb here.\n"
    value = atoi(text)
    if value < 0:
        return "Value out of range.\n"
    ctl.set_rate_limit(sess.runtime, what, value * RATE_LIMITS[what])
    return ""


def human_time(seconds: float) -> str:
    """haproxy's human_time(): '45s', '3m12s', '2h5m', '1d3h'."""
    t = max(0, int(seconds))
    if t < 60:
        return f"{t}s"
    if t < 3600:
        return f"{t // 60}m{t % 60}s"
    if t < 86400:
        return f"{t // 3600}h{t % 3600 // 60}m"
    return f"{t // 86400}d{t % 86400 // 3600}h"


def _sessions_of(sess: CliSession) -> SessionControl | None:
    ctl = sess.control
    return ctl if isinstance(ctl, SessionControl) else None


def _cmd_show_sess(sess: CliSession, args: list[str]) -> str:
    source = _sessions_of(sess)
    if source is None:
        return "'show sess' is not supported by keeplb here.\n"
    want: int | None = None
    text = _arg(args, 2)
    if text is not None and text.lower().startswith("0x"):
        with contextlib.suppress(ValueError):
            want = int(text, 16)  # anything else lists every session, as haproxy
    lines = []
    for v in source.sessions():
        if want is not None and v.ident != want:
            continue
        lines.append(
            f"0x{v.ident:x}: proto={v.proto} src={v.src} fe={v.frontend} "
            f"be={v.backend or '<NONE>'} srv={v.server or '<none>'} ts=00 epoch=0 "
            f"age={human_time(v.age_s)} calls=0 rate=0 cpu=0 lat=0\n")
    if want is not None and not lines:
        return "Session not found.\n"
    return "".join(lines)


def _cmd_shutdown_session(sess: CliSession, args: list[str]) -> str:
    source = _sessions_of(sess)
    if source is None:
        return "'shutdown session' is not supported by keeplb here.\n"
    text = _arg(args, 2)
    if text is None:
        return "Session pointer expected (use 'show sess').\n"
    try:
        ident = int(text, 16)
    except ValueError:
        return "Session pointer expected (use 'show sess').\n"
    if not source.shutdown_session(ident):
        return "No such session (use 'show sess').\n"
    return ""


def _cmd_shutdown_sessions_server(sess: CliSession, args: list[str]) -> str:
    _, srv, err = _find_server(sess.runtime, _arg(args, 3))
    if err or srv is None:
        return err or NO_SERVER
    source = _sessions_of(sess)
    if source is None:
        return "'shutdown sessions server' is not supported by keeplb here.\n"
    source.shutdown_sessions(srv)
    return ""


A = AccessLevel
COMMANDS: tuple[Command, ...] = (
    Command(("clear", "counters"), "clear counters [all]                    : clear max statistics counters (or all counters)", A.OPER, _cmd_clear_counters),
    Command(("disable", "frontend"), "disable frontend <frontend>             : temporarily disable specific frontend", A.ADMIN, _cmd_disable_frontend),
    Command(("disable", "health"), "disable health                          : disable health checks", A.ADMIN, _server_command(_disable_health)),
    Command(("disable", "server"), "disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)", A.ADMIN, _server_command(_disable_server)),
    Command(("enable", "frontend"), "enable frontend <frontend>              : re-enable specific frontend", A.ADMIN, _cmd_enable_frontend),
    Command(("enable", "health"), "enable health                           : enable health checks", A.ADMIN, _server_command(_enable_health)),
    Command(("enable", "server"), "enable server  (DEPRECATED)             : enable a disabled server (use 'set server' instead)", A.ADMIN, _server_command(_enable_server)),
    Command(("get", "weight"), "get weight <bk>/<srv>                   : report a server's current weight", A.USER, _cmd_get_weight),
    Command(("operator",), "operator                                : lower the level of the current CLI session to operator", A.USER, _cmd_lower_level(A.OPER)),
    Command(("set", "maxconn", "frontend"), "set maxconn frontend <frontend> <value> : change a frontend's maxconn setting", A.ADMIN, _cmd_set_maxconn_frontend),
    Command(("set", "maxconn", "global"), "set maxconn global <value>              : change the per-process maxconn setting", A.ADMIN, _cmd_set_maxconn_global),
    Command(("set", "maxconn", "server"), "set maxconn server <bk>/<srv>           : change a server's maxconn setting", A.ADMIN, _cmd_set_maxconn_server),
    Command(("set", "rate-limit"), "set rate-limit <setting> <value>        : change a rate limiting value", A.ADMIN, _cmd_set_rate_limit),
    Command(("set", "server"), "set server <bk>/<srv> [opts]            : change a server's state, weight, address or ssl", A.ADMIN, _cmd_set_server),
    Command(("set", "timeout"), "set timeout [cli] <delay>               : change a timeout setting", A.USER, _cmd_set_timeout),
    Command(("set", "weight"), "set weight <bk>/<srv>  (DEPRECATED)     : change a server's weight (use 'set server' instead)", A.ADMIN, _cmd_set_weight),
    Command(("show", "backend"), "show backend                            : list backends in the current running config", A.USER, _cmd_show_backend),
    Command(("show", "cli", "level"), "show cli level                          : display the level of the current CLI session", A.USER, _cmd_show_cli_level),
    Command(("show", "info"), "show info [desc|json|typed|float]*      : report information about the running process", A.USER, _cmd_show_info),
    Command(("show", "servers", "state"), "show servers state [<backend>]          : dump volatile server information (all or for a single backend)", A.USER, _cmd_show_servers_state),
    Command(("show", "sess"), "show sess [id]                          : report the list of current sessions or dump this exact session", A.OPER, _cmd_show_sess),
    Command(("show", "stat"), "show stat [desc|json|no-maint|typed|up]*: report counters for each proxy and server", A.USER, _cmd_show_stat),
    Command(("show", "version"), "show version                            : show version of the current process", A.USER, _cmd_show_version),
    Command(("shutdown", "frontend"), "shutdown frontend <frontend>            : stop a specific frontend", A.ADMIN, _cmd_shutdown_frontend),
    Command(("shutdown", "session"), "shutdown session [id]                   : kill a specific session", A.ADMIN, _cmd_shutdown_session),
    Command(("shutdown", "sessions", "server"), "shutdown sessions server <bk>/<srv>     : kill sessions on a server", A.ADMIN, _cmd_shutdown_sessions_server),
    Command(("user",), "user                                    : lower the level of the current CLI session to user", A.USER, _cmd_lower_level(A.USER)),
    Command(("help",), None, A.USER, _cmd_help),
    Command(("prompt",), None, A.USER, _cmd_prompt),
    Command(("quit",), None, A.USER, _cmd_quit),
)


# --------------------------------------------------------------------------
# haproxy's fuzzy matching for 'Unknown command' (cli_gen_usage_msg)
# --------------------------------------------------------------------------


def word_fingerprint(words: list[str] | tuple[str, ...]) -> list[int]:
    """haproxy's update_word_fingerprint() over several words: counts of the
    transitions between character classes (a-z, digit, other/begin/end)."""
    fp = [0] * 1024
    for word in words:
        prev = 28
        for ch in word.lower():
            if "a" <= ch <= "z":
                cur = ord(ch) - ord("a") + 1
            elif ch.isdigit():
                cur = 27
            else:
                cur = 28
            fp[cur] = 1
            fp[32 * prev + cur] += 1
            prev = cur
        fp[32 * prev + 28] += 1
    return fp


def fingerprint_distance(a: list[int], b: list[int]) -> int:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


MAX_MATCHES = 5  # haproxy's CLI_MAX_MATCHES


def usage_message(args: list[str], commands: tuple[Command, ...] = COMMANDS) -> str:
    """The text haproxy 2.6 prints for `help [words]` or an unknown command."""
    is_help = bool(args) and args[0] == "help"
    if is_help:
        args = args[1:]
    args = [a for a in args if a != ""]
    listed = [c for c in commands if c.usage]
    length = 0
    for c in listed:
        for i, w in enumerate(c.words):
            if i >= len(args) or w != args[i]:
                break
            length = max(length, i + 1)
    if is_help:
        head = "The following commands are valid at this level:\n"
    elif not length and not args:
        head = "Unknown command. Please enter one of the following commands only:\n"
    else:
        head = "Unknown command, but maybe one of the following ones is a better match:\n"

    def prefix_ok(c: Command) -> bool:
        return len(c.words) >= length and list(c.words[:length]) == args[:length]

    best: list[tuple[int, Command]] = []
    if length < len(args):
        rest = args[length:]
        rest_fp = word_fingerprint(rest)
        for c in listed:
            if not prefix_ok(c):
                continue
            kw_rest = c.words[length:]
            total = sum(map(len, rest)) + sum(map(len, kw_rest))
            dist = fingerprint_distance(rest_fp, word_fingerprint(kw_rest))
            if dist < 5 * total // 2 and (len(best) < MAX_MATCHES or dist < best[-1][0]):
                if len(best) == MAX_MATCHES:
                    best.pop()
                pos = len(best)
                while pos > 0 and best[pos - 1][0] > dist:
                    pos -= 1
                best.insert(pos, (dist, c))
    entries: list[Command] = []
    if best:
        entries = [c for d, c in best if d <= 5 * best[0][0] // 2]
    else:
        entries = [c for c in listed if prefix_ok(c)]
    usages = sorted(c.usage for c in entries if c.usage)
    return head + "".join(f"  {u}\n" for u in usages) + _ALWAYS_USAGE


# --------------------------------------------------------------------------
# the session (sans-IO)
# --------------------------------------------------------------------------


def split_commands(line: str) -> list[str]:
    """Splits an input line on unescaped ';' (a '\\;' stays in the command)."""
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur.append(line[i:i + 2])
            i += 2
            continue
        if ch == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def split_args(cmd: str) -> list[str]:
    """Words of one command: blanks separate, a backslash escapes the next character."""
    args: list[str] = []
    cur: list[str] = []
    in_word = False
    i = 0
    while i < len(cmd):
        ch = cmd[i]
        if ch == "\\" and i + 1 < len(cmd):
            cur.append(cmd[i + 1])
            in_word = True
            i += 2
            continue
        if ch in " \t":
            if in_word:
                args.append("".join(cur))
                cur = []
                in_word = False
        else:
            cur.append(ch)
            in_word = True
        i += 1
    if in_word:
        args.append("".join(cur))
    return args


def find_command(args: list[str], commands: tuple[Command, ...] = COMMANDS) -> Command | None:
    """The command whose words all match the first args (haproxy's cli_find_kw)."""
    for c in commands:
        if len(args) >= len(c.words) and tuple(args[:len(c.words)]) == c.words:
            return c
    return None


@dataclass(eq=False)
class CliSession:
    """One connection to the stats socket, without IO.

    `execute_line(line)` returns what haproxy writes back for that line: each
    command's output, then "\\n" (or "\\n> " in interactive mode). After a
    line in non-interactive mode, or after `quit`, `closed` is True.
    """

    runtime: ProcessRuntime
    control: RuntimeControl
    level: AccessLevel = AccessLevel.ADMIN
    interactive: bool = False
    closed: bool = False
    timeout: float = DEFAULT_TIMEOUT
    now: Callable[[], float] = field(default=time.monotonic)
    wall: Callable[[], float] = field(default=time.time)

    def usage(self, args: list[str]) -> str:
        return usage_message(args)

    def execute(self, cmd: str) -> str:
        """Runs one command (no ';') and returns its output, without the
        trailing newline/prompt. Never raises."""
        args = split_args(cmd)
        if not args:
            return usage_message([])
        command = find_command(args)
        if command is None:
            if any(tuple(args[:len(w)]) == w for w in HAPROXY_ONLY):
                return f"'{' '.join(args)}' is not supported by keeplb.\n"
            return usage_message(args)
        if self.level < command.level:
            return PERMISSION_DENIED
        try:
            return command.handler(self, args)
        except Exception as exc:
            # The session boundary: a bug in one command or a control that
            # raised must cost that command only, never the socket.
            _log.exception("runtime command %r failed", cmd)
            return f"Internal error: {exc}\n"

    def execute_line(self, line: str) -> str:
        out: list[str] = []
        for cmd in split_commands(line.rstrip("\r\n")):
            text = self.execute(cmd)
            if self.closed:
                break
            out.append(text)
            out.append("\n> " if self.interactive else "\n")
        if not self.interactive:
            self.closed = True
        return "".join(out)


# --------------------------------------------------------------------------
# the asyncio shell
# --------------------------------------------------------------------------


async def _serve_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        runtime: ProcessRuntime, control: RuntimeControl,
                        level: AccessLevel, timeout: float) -> None:
    sess = CliSession(runtime, control, level=level, timeout=timeout)
    try:
        while not sess.closed:
            try:
                line = await asyncio.wait_for(reader.readline(), sess.timeout or None)
            except (TimeoutError, asyncio.LimitOverrunError, ValueError):
                break  # idle for `stats timeout`, or a line over tune.bufsize
            if not line:
                break
            out = sess.execute_line(line.decode("utf-8", "replace"))
            if out:
                writer.write(out.encode())
                await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
            await writer.wait_closed()


def _prepare_unix_path(path: str) -> None:
    """Removes a stale socket left by a previous run (haproxy replaces it too)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat_mod.S_ISSOCK(st.st_mode):
        os.unlink(path)
    else:
        raise KeeplbError(f"stats socket '{path}' exists and is not a socket")


async def start_stats_socket(sock: StatsSocket, runtime: ProcessRuntime,
                             control: RuntimeControl, *,
                             timeout: float = DEFAULT_TIMEOUT) -> asyncio.Server:
    """Listens on `stats socket ...` and serves the runtime API until the
    returned server is closed. Called once per socket at worker start, on the
    running loop. Raises KeeplbError when the address cannot be used.

    `timeout` is the global `stats timeout` in seconds (haproxy: 10s)."""
    level = AccessLevel.parse(sock.level)
    addr = sock.address

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_client(reader, writer, runtime, control, level, timeout)

    try:
        if addr.family == "unix":
            path = addr.host
            _prepare_unix_path(path)
            server = await asyncio.start_unix_server(client, path=path, limit=MAX_LINE)
            if sock.mode is not None:
                os.chmod(path, sock.mode)
            if sock.user is not None or sock.group is not None:
                uid = pwd.getpwnam(sock.user).pw_uid if sock.user else -1
                gid = grp.getgrnam(sock.group).gr_gid if sock.group else -1
                os.chown(path, uid, gid)
            return server
        if addr.family == "abns":
            # Linux abstract namespace: no file, no mode, gone with the process
            return await asyncio.start_unix_server(client, path="\0" + addr.host,
                                                   limit=MAX_LINE)
        if addr.family in ("ipv4", "ipv6", "any") and addr.port_low is not None:
            host = addr.host or ("::" if addr.family == "ipv6" else "0.0.0.0")
            return await asyncio.start_server(client, host=host, port=addr.port_low,
                                              limit=MAX_LINE, reuse_address=True)
    except (OSError, KeyError) as exc:
        raise KeeplbError(f"cannot listen on stats socket {addr.host}: {exc}") from exc
    raise KeeplbError(f"stats socket address family '{addr.family}' is not supported by keeplb")
