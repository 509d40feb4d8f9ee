"""haproxy's log targets and formats: syslog over /dev/log or UDP, stdout/stderr,
the `option tcplog` line and `log-format` ones (compiled by keeplb.lb.logformat).

Formats were checked against haproxy 2.6 on loopback:

    <134>Nov 25 11:29:26 haproxy[5939]: 127.0.0.1:58322 [25/Nov/2026:11:29:25.516] fe be/<NOSRV> 503/-1/502 0 sQ 2/2/1/0/0 0/1

(rfc3164 with no hostname, as haproxy sends it unless `log-send-hostname`;
`format raw` sends the message alone.) Sending never blocks the event loop: a
full socket or an absent /dev/log drops the line and counts it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Iterable, Sequence

from keeplb.config.model import LogTarget, Mode, Proxy
from keeplb.lb.logformat import Dates, LogFormatError, Renderer, compile_format
from keeplb.lb.logformat import SessionLog as SessionLog  # its home for the relay and tests

_log = logging.getLogger("keeplb.lb")

# RFC 5424 §6.2.1 numbers, with haproxy's names.
FACILITIES: dict[str, int] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "auth2": 10, "ftp": 11, "ntp": 12, "audit": 13,
    "alert": 14, "cron2": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
LEVELS: dict[str, int] = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6,
    "debug": 7,
}
LOG_EMERG, LOG_ALERT, LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO = 0, 1, 3, 4, 5, 6

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# How a sink failure maps to Python's logging when it is reported once.
_PY_LEVEL = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL, 3: logging.ERROR,
             4: logging.WARNING, 5: logging.INFO, 6: logging.INFO, 7: logging.DEBUG}


def accept_date(wall: float) -> str:
    """haproxy's %t: '25/Nov/2026:11:29:25.516' in local time."""
    tm = time.localtime(wall)
    ms = int((wall - int(wall)) * 1000)
    return (f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}.{ms:03d}")


def gmt_date(wall: float) -> str:
    """haproxy's %T (gmt2str_log): '04/Dec/2026:16:33:00 +0000'."""
    tm = time.gmtime(int(wall))
    return (f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000")


def local_date(wall: float) -> str:
    """haproxy's %Tl (localdate2str_log): local time and its UTC offset, '+0100'."""
    tm = time.localtime(int(wall))
    off = tm.tm_gmtoff or 0
    sign = "-" if off < 0 else "+"
    minutes = abs(off) // 60
    return (f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year:04d}:"
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} "
            f"{sign}{minutes // 60:02d}{minutes % 60:02d}")


DATES = Dates(accept_date, gmt_date, local_date)


def rfc3164_header(pri: int, wall: float, tag: str, pid: int) -> str:
    """'<134>Nov 25 11:29:26 haproxy[5939]: ' as haproxy 2.6 writes it (no hostname)."""
    tm = time.localtime(wall)
    return (f"<{pri}>{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {tag}[{pid}]: ")


def rfc5424_header(pri: int, wall: float, tag: str, pid: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(wall))
    offset = time.strftime("%z", time.localtime(wall))
    offset = f"{offset[:3]}:{offset[3:]}" if len(offset) == 5 else "Z"
    return f"<{pri}>1 {stamp}.{int((wall % 1) * 1e6):06d}{offset} - {tag} {pid} - - "


def format_tcplog(s: SessionLog) -> str:
    """The `option tcplog` line: haproxy's default TCP log-format,
    %ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq
    (an IPv6 client is written '::1:40000', without brackets, as haproxy does).
    Written out rather than rendered from logformat.TCPLOG: half the cost per
    logged session (3 us against 6); tests/unit/lb/test_logformat.py checks
    that the two agree byte for byte."""
    rc = f"+{s.retries}" if s.redispatched else str(s.retries)
    return (f"{s.client_ip}:{s.client_port} [{accept_date(s.accept_wall)}] {s.frontend} "
            f"{s.backend}/{s.server} {s.tw}/{s.tc}/{s.tt} {s.bytes_out} {s.termination} "
            f"{s.actconn}/{s.feconn}/{s.beconn}/{s.srvconn}/{rc} {s.srv_queue}/{s.be_queue}")


def session_renderer(proxy: Proxy, pid: int) -> Renderer | None:
    """The renderer of a frontend's `log-format`, or None when it has none (then
    `option tcplog`/`httplog` decide). Called once per frontend at start; the
    config check has already reported a format that does not compile, so such
    a one falls back to None here instead of raising."""
    if not proxy.log_format:
        return None
    try:
        fmt = compile_format(proxy.log_format, http=proxy.mode is Mode.HTTP)
    except LogFormatError:
        return None
    # %H: haproxy's `hostname`, gethostname() at start
    return fmt.renderer(DATES, pid, socket.gethostname() if fmt.uses("H") else "")


def session_error(s: SessionLog) -> bool:
    """True when a session was not fully successful, as haproxy 2.6's strm_log()
    decides for `option dontlog-normal` and `option log-separate-errors`: it
    was redispatched, ended with an error or a timeout (any termination state
    but '-' and 'L', "locally processed"), or ended normally after a retry.
    (haproxy also counts an HTTP status >= 500; keeplb's tcplog has none.)"""
    cause = s.termination[:1]
    return s.redispatched or cause not in ("-", "L") or (cause == "-" and s.retries > 0)


def should_log_session(s: SessionLog, dontlognull: bool, dontlog_normal: bool = False) -> bool:
    """`option dontlognull`: a session that read nothing from the client is not
    logged, whatever its termination state (haproxy 2.6 checks `req->total` only;
    verified against it on loopback). `option dontlog-normal`: a session without
    error, timeout, retry or redispatch (session_error()) is not logged."""
    if dontlognull and s.bytes_in <= 0:
        return False
    return not dontlog_normal or session_error(s)


def session_level(s: SessionLog, separate_errors: bool) -> int:
    """The syslog level of a session's line: info, or err for a session_error()
    one under `option log-separate-errors` (so that a `log ... err` target gets
    only those)."""
    return LOG_ERR if separate_errors and session_error(s) else LOG_INFO


class _Sink:
    """One `log` line turned into an open, non-blocking socket or fd."""

    def __init__(self, target: LogTarget) -> None:
        self.target = target
        self.facility = FACILITIES.get(target.facility, 16)
        self.maxlevel = LEVELS.get(target.level or "debug", 7)
        self.minlevel = LEVELS.get(target.minlevel, -1) if target.minlevel else -1
        self.format = (target.format or "rfc3164").lower()
        self.dropped = 0
        self._reported = False
        self._sock: socket.socket | None = None
        self._fd: int | None = None
        self._dest: str | tuple[str, int] | None = None
        addr = target.address
        if addr in ("stdout", "stderr"):
            self._fd = 1 if addr == "stdout" else 2
        elif addr.startswith("fd@"):
            self._fd = int(addr[3:]) if addr[3:].isdigit() else 2
        elif addr.startswith("/") or addr.startswith("unix@"):
            path = addr.removeprefix("unix@")
            self._dest = path
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        else:
            host, port = _split_udp(addr.removeprefix("udp@").removeprefix("udp4@")
                                    .removeprefix("udp6@"))
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._dest = (host, port)
            self._sock = socket.socket(fam, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, level: int, message: str, wall: float, tag: str, pid: int) -> None:
        if level > self.maxlevel:
            return
        if self.minlevel >= 0 and level < self.minlevel:
            level = self.minlevel
        pri = self.facility * 8 + level
        if self.format == "raw":
            line = message
        elif self.format == "short":
            line = f"<{level}>{message}"
        elif self.format == "rfc5424":
            line = rfc5424_header(pri, wall, tag, pid) + message
        else:
            line = rfc3164_header(pri, wall, tag, pid) + message
        data = (line + "\n").encode("utf-8", "replace")
        try:
            if self._fd is not None:
                os.write(self._fd, data)
            elif self._sock is not None and self._dest is not None:
                self._sock.sendto(data, self._dest)
        except OSError as exc:
            self.dropped += 1
            if not self._reported and exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self._reported = True
                _log.warning("log target %s: %s (further errors are counted, not reported)",
                             self.target.address, exc.strerror)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _split_udp(addr: str) -> tuple[str, int]:
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest.removeprefix(":")
    elif addr.count(":") == 1:
        host, _, port = addr.partition(":")
    else:
        host, port = addr, ""
    return host, int(port) if port.isdigit() else 514


class ProxyLog:
    """The log targets of one proxy (its own `log` lines, plus the global ones with
    `log global`). Every sink is shared between the proxies that name the same line."""

    def __init__(self, sinks: Sequence[_Sink], tag: str, pid: int) -> None:
        self.sinks = list(sinks)
        self.tag = tag
        self.pid = pid

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def send(self, level: int, message: str) -> None:
        if not self.sinks:
            return
        wall = time.time()
        for sink in self.sinks:
            sink.send(level, message, wall, self.tag, self.pid)


class LogHub:
    """Opens each distinct log target once and hands out a ProxyLog per proxy."""

    def __init__(self, global_targets: Iterable[LogTarget], tag: str | None = None,
                 pid: int | None = None) -> None:
        self.tag = tag or "haproxy"
        self.pid = pid if pid is not None else os.getpid()
        self._sinks: dict[tuple[str, str, str | None, str | None, str | None], _Sink] = {}
        self.global_targets = list(global_targets)

    def _sink(self, t: LogTarget) -> _Sink | None:
        key = (t.address, t.facility, t.level, t.minlevel, t.format)
        sink = self._sinks.get(key)
        if sink is None:
            try:
                sink = _Sink(t)
            except (OSError, ValueError) as exc:
                _log.warning("log target %s cannot be opened: %s", t.address, exc)
                return None
            self._sinks[key] = sink
        return sink

    def for_proxy(self, proxy: Proxy | None) -> ProxyLog:
        targets: list[LogTarget] = []
        if proxy is None or proxy.log_global:
            targets.extend(self.global_targets)
        if proxy is not None:
            targets.extend(proxy.logs)
        sinks = [s for s in (self._sink(t) for t in targets) if s is not None]
        return ProxyLog(sinks, self.tag, self.pid)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self._sinks.values())

    def close(self) -> None:
        for s in self._sinks.values():
            s.close()
        self._sinks.clear()
