"""Active health checks: TCP connect, tcp-check scripts, HTTP(S) checks.

The IO shell around health.py: `run_check()` runs one check and returns a
CheckResult with haproxy's status, info text and duration; `HealthChecker`
runs one asyncio task per checked server, feeds each result to the server's
`Health` counter and reports UP/DOWN transitions to a callback.

Timeouts follow haproxy 2.6 ("timeout check" in the configuration manual):
without `timeout check` the whole check (connect + response) must finish
within `inter`; with it, the connect must finish within min(timeout
connect, inter) and the response within `timeout check` after the connect.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import functools
import logging
import os
import random
import re
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from keeplb.config.model import Proxy, Server
from keeplb.lb.health import CheckStatus, Health, Outcome, Transition
from keeplb.lb.server import AdminState, BackendRuntime, ProcessRuntime, ServerRuntime

_log = logging.getLogger("keeplb.lb.checks")

# haproxy's tune.chksize default: a check never reads more than this.
CHECK_BUFSIZE = 16384


# ---------------------------------------------------------------------------
# What to run: the check script, built once from the configuration
# ---------------------------------------------------------------------------


class CheckKind(Enum):
    TCP = "tcp"  # plain connect (no option)
    TCP_CHECK = "tcp-check"  # option tcp-check
    HTTP = "httpchk"  # option httpchk


@dataclass(frozen=True, slots=True)
class ConnectStep:
    port: int | None = None
    addr: str | None = None
    ssl: bool = False
    sni: str | None = None
    implicit: bool = False
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class SendStep:
    data: bytes
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectStep:
    """`expect [!] <match> <pattern>`.

    match: 'string', 'rstring', 'binary', 'rbinary' (tcp-check);
    'status', 'rstatus', 'string', 'rstring' (http-check).
    """

    match: str
    pattern: str
    negate: bool = False
    min_recv: int = -1
    comment: str | None = None
    ok_status: CheckStatus | None = None
    error_status: CheckStatus | None = None
    tout_status: CheckStatus | None = None
    # The rest serve haproxy's built-in checks (option redis-check, ...).
    ok_msg: str | None = None
    """The info of a pass when this is the last step (None: `reply`'s, else
    "(tcp-check)")."""
    reply: Callable[[bytes], tuple[str, int | None]] | None = None
    """(info, code) read from the response, which a failure reports (None:
    haproxy's "TCPCHK did not match ..."); a pass keeps them for the result."""
    code: int | None = None
    """The code a pass and an empty response show (None: `reply`'s)."""
    verdict: Callable[[bytes, bool], tuple[CheckStatus, str, int | None] | None] | None = None
    """A check that reads the response itself instead of `match` (ldap,
    mysql): (status, info, code), or None while it needs more data; the bool
    says nothing more will come."""

    def describe(self, http: bool) -> str:
        """haproxy's '(expect ...)' words in timeout messages."""
        if http:
            return {
                "status": "expect HTTP status codes",
                "rstatus": "expect HTTP status regex",
                "string": f"expect HTTP body content '{self.pattern}'",
                "rstring": "expect HTTP body regex",
            }.get(self.match, "expect")
        return {
            "string": f"expect string '{self.pattern}'",
            "binary": f"expect binary '{self.pattern}'",
            "rstring": "expect regex",
            "rbinary": "expect binary regex",
        }.get(self.match, "expect")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str = "OPTIONS"
    uri: str = "/"
    version: str = "HTTP/1.0"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""

    def encode(self) -> bytes:
        """The request as haproxy 2.6's H1 mux writes it (checked on the wire):
        lower-case header names, `connection: close` for HTTP/1.1 unless a
        Connection header is given, `content-length` only with a body."""
        lines = [f"{self.method} {self.uri} {self.version}"]
        names = {k.lower() for k, _ in self.headers}
        for k, v in self.headers:
            lines.append(f"{k.lower()}: {v}")
        if self.version.upper() != "HTTP/1.0" and "connection" not in names:
            lines.append("connection: close")
        body = self.body.encode("latin-1", "replace")
        if body:
            lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


Step = ConnectStep | SendStep | ExpectStep


@dataclass(frozen=True, slots=True)
class TlsOptions:
    verify: bool = False  # 'verify required'
    ca_file: str | None = None
    sni: str | None = None


@dataclass(frozen=True)
class CheckSpec:
    """One server's check, resolved from the config: where, what, how long."""

    kind: CheckKind
    host: str
    port: int
    ssl: bool = False
    tls: TlsOptions = field(default_factory=TlsOptions)
    steps: tuple[Step, ...] = ()
    """tcp-check: the rules in order, the first being a connect (implicit or not)."""
    request: HttpRequest | None = None
    expects: tuple[ExpectStep, ...] = ()
    """httpchk: the `http-check expect` rules (empty: status 200-399)."""
    disable_on_404: bool = False
    builtin: str | None = None
    """tcp-check: the `option` whose ruleset this is (redis-check, ssl-hello-chk):
    haproxy adds no " at step N of tcp-check" to its messages."""
    inter: int = 2000
    connect_timeout: int | None = None  # `timeout connect`, ms
    check_timeout: int | None = None  # `timeout check`, ms
    warnings: tuple[str, ...] = ()
    """Parts of the configuration keeplb cannot run; the check skips them."""

    @classmethod
    def from_config(cls, backend: Proxy, server: Server, host: str, port: int | None) -> CheckSpec:
        """Build the check for `server` of `backend`.

        host/port are the server's resolved address; the `addr` and `port`
        server options override them for checks. Never raises for a valid
        configuration: what keeplb does not support lands in `warnings`.
        """
        opts = server.options
        warnings: list[str] = []
        chk_host = opts.check_addr or host
        chk_port = opts.check_port or port or 0
        if not chk_port:
            warnings.append("no port for the health check; checks will fail (SOCKERR)")
        use_ssl = bool(opts.check_ssl) or (
            bool(opts.ssl) and opts.check_port is None and opts.check_addr is None
        )
        tls = TlsOptions(
            verify=(opts.verify or "required") == "required",
            ca_file=opts.ca_file,
            sni=opts.check_sni,
        )
        inter = opts.inter or 2000
        kind = CheckKind.TCP
        builtin = next((b for b in BUILTIN_CHECKS if backend.option(b)), None)
        steps: tuple[Step, ...] = ()
        if builtin is not None:
            steps = BUILTIN_CHECKS[builtin](backend.option_args.get(builtin, ()))
            if not steps:  # a variant keeplb does not run
                words = " ".join((builtin, *backend.option_args.get(builtin, ())[:1]))
                warnings.append(f"'option {words}' is not supported by keeplb; "
                                "using a TCP connect check")
                builtin = None
        if backend.option("httpchk"):
            kind = CheckKind.HTTP
        elif backend.option("tcp-check") or steps:
            kind = CheckKind.TCP_CHECK
        else:
            for other in ("spop-check", "external-check"):
                if backend.option(other):
                    warnings.append(f"'option {other}' is not supported by keeplb; "
                                    "using a TCP connect check")
        request: HttpRequest | None = None
        expects: tuple[ExpectStep, ...] = ()
        disable404 = False
        if kind is CheckKind.TCP_CHECK and not steps:
            builtin = None
            steps = _tcp_check_steps(backend, warnings)
        elif kind is CheckKind.HTTP:
            request, expects, disable404 = _http_check(backend, warnings)
        return cls(
            kind=kind, host=chk_host, port=chk_port, ssl=use_ssl, tls=tls, steps=steps,
            request=request, expects=expects, disable_on_404=disable404, builtin=builtin,
            inter=inter,
            connect_timeout=backend.timeout("connect"), check_timeout=backend.timeout("check"),
            warnings=tuple(warnings),
        )


_STATUS_BY_CODE = {s.code: s for s in CheckStatus}


_EXPECT_OPTS = {"min-recv", "comment", "ok-status", "error-status", "tout-status",
                "on-success", "on-error", "status-code"}
_EXPECT_MATCHES = ("string", "rstring", "binary", "rbinary", "status", "rstatus")


def _expect(args: Sequence[str], warnings: list[str], where: str) -> ExpectStep | None:
    """Parse `expect` arguments; haproxy accepts its options before or after
    `[!] <match> <pattern>`."""
    opts: dict[str, str] = {}
    negate = False
    match: str | None = None
    pattern = ""
    i = 0
    while i < len(args):
        a = args[i]
        if a in _EXPECT_OPTS and i + 1 < len(args):
            opts[a] = args[i + 1]
            i += 2
        elif a == "!":
            negate = True
            i += 1
        elif match is None and a in _EXPECT_MATCHES and i + 1 < len(args):
            match, pattern = a, args[i + 1]
            i += 2
        else:
            warnings.append(f"'{where} {a}' is not supported by keeplb; rule ignored")
            return None
    for k in ("on-success", "on-error", "status-code"):
        if k in opts:
            warnings.append(f"'{where} {k}' is not supported by keeplb; ignored")
    if match is None:
        warnings.append(f"'{where} {' '.join(args)}' has no match; rule ignored")
        return None
    try:
        min_recv = int(opts.get("min-recv", "-1"))
    except ValueError:
        min_recv = -1

    def status(name: str) -> CheckStatus | None:
        v = opts.get(name)
        return _STATUS_BY_CODE.get(v) if v else None

    return ExpectStep(match, pattern, negate, min_recv, opts.get("comment"),
                      status("ok-status"), status("error-status"), status("tout-status"))


def _connect(args: Sequence[str], warnings: list[str]) -> ConnectStep:
    port: int | None = None
    addr: str | None = None
    use_ssl = False
    sni: str | None = None
    comment: str | None = None
    i = 0
    while i < len(args):
        a = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a == "port" and nxt is not None:
            if nxt.isdigit():
                port = int(nxt)
            else:
                warnings.append(f"'tcp-check connect port {nxt}': sample expressions are not "
                                "supported by keeplb; using the server's check port")
            i += 2
        elif a == "addr" and nxt is not None:
            host, _, p = nxt.rpartition(":")
            if host and p.isdigit():
                addr, port = host.strip("[]"), int(p)
            else:
                addr = nxt
            i += 2
        elif a == "sni" and nxt is not None:
            sni = nxt
            i += 2
        elif a == "comment" and nxt is not None:
            comment = nxt
            i += 2
        elif a in ("alpn", "proto") and nxt is not None:
            warnings.append(f"'connect {a}' is not supported by keeplb; ignored")
            i += 2
        elif a == "ssl":
            use_ssl = True
            i += 1
        elif a == "default":
            i += 1
        else:
            warnings.append(f"'connect {a}' is not supported by keeplb; ignored")
            i += 1
    return ConnectStep(port=port, addr=addr, ssl=use_ssl, sni=sni, comment=comment)


def _first_line(data: bytes) -> tuple[str, int | None]:
    """A response's info: its first line (redis-check, smtpchk's greeting)."""
    return re.split(rb"[\r\n]", data, maxsplit=1)[0].decode("latin-1"), None


def _pgsql_error(data: bytes) -> tuple[str, int | None]:
    """A PostgreSQL ErrorResponse's info as haproxy logs it: from byte 6 (the
    severity) to the first NUL."""
    return data[6:].split(b"\0", 1)[0].decode("latin-1"), None


def _says(text: str) -> Callable[[bytes], tuple[str, int | None]]:
    """A response's info that is always `text`, whatever came."""
    return lambda data: (text, None)


def ssl_hello() -> bytes:
    """An SSLv3 ClientHello, which `option ssl-hello-chk` sends: any SSL/TLS
    server answers it with a handshake or an alert record (first byte 0x16 or
    0x15), whatever versions it accepts; anything else is not SSL."""
    suites = (0x0035, 0x002F, 0x000A, 0x0005, 0x0004, 0x0009, 0x0003)
    body = (b"\x03\x00" + struct.pack("!I", int(time.time())) + os.urandom(28) + b"\x00"
            + struct.pack("!H", 2 * len(suites)) + b"".join(struct.pack("!H", c) for c in suites)
            + b"\x01\x00")
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x00" + struct.pack("!H", len(handshake)) + handshake


def _ssl_hello_check(args: Sequence[str]) -> tuple[Step, ...]:
    return (ConnectStep(implicit=True), SendStep(ssl_hello()),
            ExpectStep("rbinary", "^1[56]", min_recv=5, ok_status=CheckStatus.L6OK,
                       error_status=CheckStatus.L6RSP, tout_status=CheckStatus.L6TOUT,
                       ok_msg="", reply=_says("")))


def _redis_check(args: Sequence[str]) -> tuple[Step, ...]:
    return (ConnectStep(implicit=True), SendStep(b"*1\r\n$4\r\nPING\r\n"),
            ExpectStep("string", "+PONG", error_status=CheckStatus.L7STS,
                       ok_msg="Redis server is ok", reply=_first_line, code=0))


def _pgsql_check(args: Sequence[str]) -> tuple[Step, ...]:
    """`option pgsql-check user <name>`: a StartupMessage (protocol 3.0) for the
    user; an ErrorResponse fails with its message, an Authentication request
    (whatever the method) passes."""
    user = args[1] if len(args) >= 2 else ""
    body = b"\x00\x03\x00\x00user\x00" + user.encode("latin-1", "replace") + b"\x00\x00"
    return (ConnectStep(implicit=True), SendStep(struct.pack("!I", len(body) + 4) + body),
            ExpectStep("rstring", "^E", negate=True, min_recv=5,
                       error_status=CheckStatus.L7RSP, reply=_pgsql_error),
            ExpectStep("rbinary", "^52000000[A-Z0-9]{2}000000(00|02|03|04|05|06|07|09|0A)",
                       min_recv=9, error_status=CheckStatus.L7STS,
                       ok_msg="PostgreSQL server is ok", reply=_says("PostgreSQL unknown error"),
                       code=0))


# An LDAPv3 anonymous simple bind (RFC 4511 4.2): LDAPMessage { messageID 1,
# bindRequest [APPLICATION 0] { version 3, name "", simple [0] "" } }
_LDAP_BIND = bytes.fromhex("300c" "020101" "6007" "020103" "0400" "8000")


def _ldap_check(args: Sequence[str]) -> tuple[Step, ...]:
    return (ConnectStep(implicit=True), SendStep(_LDAP_BIND),
            ExpectStep("rbinary", "^30", min_recv=14, error_status=CheckStatus.L7RSP,
                       reply=_says("Not LDAPv3 protocol")),
            ExpectStep("verdict", "", verdict=lambda data, eof: ldap_bind_result(data)))


def mysql_handshake_result(data: bytes, eof: bool) -> tuple[CheckStatus, str, int | None] | None:
    """`option mysql-check`'s verdict on the server's first packet (its
    initial handshake), None while it is incomplete: an ERR packet (0xff) is a
    wrong status with the server's error code and message; any other packet
    passes, its info the server version; a packet cut short fails."""
    if len(data) >= 4:
        size = int.from_bytes(data[:3], "little")
        if len(data) >= 4 + size:
            payload = data[4:4 + size]
            if payload[:1] == b"\xff":
                return (CheckStatus.L7STS, payload[3:].decode("latin-1"),
                        int.from_bytes(payload[1:3], "little"))
            return CheckStatus.L7OK, payload[1:].split(b"\0", 1)[0].decode("latin-1"), 0
    return (CheckStatus.L7RSP, "", None) if eof else None


def smtp_reply(data: bytes) -> tuple[str, int | None]:
    """(text, code) of an SMTP reply: '250 mx ready' -> ('mx ready', 250); a
    code that is not a number counts 0."""
    line, _ = _first_line(data)
    digits = line[:3]
    return line[4:].lstrip(" "), int(digits) if digits.isdigit() else 0


def _smtp_check(args: Sequence[str]) -> tuple[Step, ...]:
    """`option smtpchk [HELO|EHLO domain]`: a 2xx greeting on one line, then a
    2xx answer to HELO (or EHLO) and to QUIT; the last reply is the info."""
    hello = f"{args[0]} {args[1]}" if len(args) >= 2 and args[0].upper() in ("HELO", "EHLO") \
        else "HELO localhost"
    return (ConnectStep(),
            ExpectStep("rstring", "^[0-9]{3}[ \r]", min_recv=4, error_status=CheckStatus.L7RSP,
                       reply=_first_line),
            ExpectStep("rstring", "^2[0-9]{2}[ \r]", min_recv=4, error_status=CheckStatus.L7STS,
                       reply=smtp_reply),
            SendStep(hello.encode("latin-1", "replace") + b"\r\n"),
            ExpectStep("rstring", "^2[0-9]{2}[- \r]", error_status=CheckStatus.L7STS,
                       reply=smtp_reply),
            SendStep(b"QUIT\r\n"),
            ExpectStep("rstring", "^2[0-9]{2}[- \r]", error_status=CheckStatus.L7STS,
                       reply=smtp_reply))


def _mysql_check(args: Sequence[str]) -> tuple[Step, ...]:
    """`option mysql-check` without `user`: the server's greeting decides (with a
    user haproxy also logs in; not run by keeplb)."""
    if args:
        return ()
    return (ConnectStep(), ExpectStep("verdict", "", verdict=mysql_handshake_result))


# haproxy 2.6's `option` checks that are tcp-check rulesets keeplb runs, with
# their messages as haproxy logs them (checked against it: test_builtin_checks);
# each gets the option's arguments and returns the whole ruleset, its first
# step a connect (or nothing: a variant keeplb does not run)
BUILTIN_CHECKS: dict[str, Callable[[Sequence[str]], tuple[Step, ...]]] = {
    "ssl-hello-chk": _ssl_hello_check,
    "redis-check": _redis_check,
    "pgsql-check": _pgsql_check,
    "ldap-check": _ldap_check,
    "mysql-check": _mysql_check,
    "smtpchk": _smtp_check,
}


def _tcp_check_steps(backend: Proxy, warnings: list[str]) -> tuple[Step, ...]:
    steps: list[Step] = []
    for rule in backend.rules_of("tcp-check"):
        args = rule.args
        if rule.action == "connect":
            steps.append(_connect(args, warnings))
        elif rule.action in ("send", "send-binary"):
            if not args:
                continue
            comment = args[2] if len(args) >= 3 and args[1] == "comment" else None
            if rule.action == "send":
                data = args[0].encode("latin-1", "replace")
            else:
                try:
                    data = bytes.fromhex(args[0])
                except ValueError:
                    warnings.append(f"'tcp-check send-binary {args[0]}' is not valid hex; ignored")
                    continue
            steps.append(SendStep(data, comment))
        elif rule.action == "expect":
            exp = _expect(args, warnings, "tcp-check expect")
            if exp is not None:
                steps.append(exp)
        elif rule.action in ("send-lf", "send-binary-lf", "set-var", "unset-var"):
            warnings.append(f"'tcp-check {rule.action}' is not supported by keeplb; ignored")
    if not steps or not isinstance(steps[0], ConnectStep):
        steps.insert(0, ConnectStep(implicit=True))
    return tuple(steps)


def _http_check(backend: Proxy,
                warnings: list[str]) -> tuple[HttpRequest, tuple[ExpectStep, ...], bool]:
    args = backend.option_args.get("httpchk", ())
    method, uri, version = "OPTIONS", "/", "HTTP/1.0"
    headers: list[tuple[str, str]] = []
    if len(args) == 1:
        uri = args[0]
    elif len(args) >= 2:
        method, uri = args[0], args[1]
        if len(args) >= 3:
            # Old style: "HTTP/1.1\r\nHost:\ example" carries headers after the version.
            parts = args[2].replace("\\r\\n", "\r\n").split("\r\n")
            version = parts[0]
            for line in parts[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers.append((name.strip(), value.strip()))
    body = ""
    expects: list[ExpectStep] = []
    disable404 = False
    for rule in backend.rules_of("http-check"):
        a = rule.args
        if rule.action == "send":
            i = 0
            while i < len(a):
                key = a[i]
                if key == "meth" and i + 1 < len(a):
                    method = a[i + 1]
                    i += 2
                elif key in ("uri", "uri-lf") and i + 1 < len(a):
                    uri = a[i + 1]
                    i += 2
                elif key == "ver" and i + 1 < len(a):
                    version = a[i + 1]
                    i += 2
                elif key == "hdr" and i + 2 < len(a):
                    if a[i + 1].lower() not in ("content-length", "transfer-encoding"):
                        headers.append((a[i + 1], a[i + 2]))
                    i += 3
                elif key in ("body", "body-lf") and i + 1 < len(a):
                    body = a[i + 1]
                    i += 2
                elif key == "comment" and i + 1 < len(a):
                    i += 2
                else:
                    warnings.append(f"'http-check send {key}' is not understood; ignored")
                    i += 1
        elif rule.action == "expect":
            exp = _expect(a, warnings, "http-check expect")
            if exp is not None:
                if exp.match in ("binary", "rbinary"):
                    warnings.append(f"'http-check expect {exp.match}' is not valid; ignored")
                else:
                    expects.append(exp)
        elif rule.action == "disable-on-404":
            disable404 = True
        elif rule.action in ("connect", "send-state", "set-var", "unset-var"):
            warnings.append(f"'http-check {rule.action}' is not supported by keeplb; ignored")
    return HttpRequest(method, uri, version, tuple(headers), body), tuple(expects), disable404


# ---------------------------------------------------------------------------
# Running one check
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check, as haproxy reports it."""

    ok: bool
    status: CheckStatus
    info: str
    duration_ms: int
    code: int | None = None
    """The response code, only for statuses haproxy shows it with (L7OK, L7OKC, L7STS)."""


class _Done(Exception):
    """A check finished early with this status."""

    def __init__(self, status: CheckStatus, info: str = "", code: int | None = None) -> None:
        super().__init__(info)
        self.status = status
        self.info = info
        self.code = code


class _Phase(Enum):
    L4 = 4
    L6 = 6
    L7 = 7


class _Run:
    """State of one running check: phase, step, deadline."""

    def __init__(self, spec: CheckSpec, timeout_ms: int) -> None:
        self.spec = spec
        self.start = time.monotonic()
        self.inter_ms = max(1, timeout_ms)
        self.phase = _Phase.L4
        self.step_id = 0  # haproxy's step numbering: 0 = implicit connect
        self.step: Step | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.buf = b""
        self.eof = False
        self.code: int | None = None
        self.builtin_info: str | None = None  # a built-in check's info, read from a reply
        self.deadline = self.start + self.inter_ms / 1000
        if spec.check_timeout is not None:
            conn_ms = min(spec.connect_timeout or self.inter_ms, self.inter_ms)
            self.deadline = self.start + conn_ms / 1000

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def connected(self) -> None:
        if self.spec.check_timeout is not None:
            self.deadline = time.monotonic() + self.spec.check_timeout / 1000

    def where(self) -> str:
        """haproxy's " at step N of tcp-check (...)" suffix, for tcp-check rulesets only."""
        if self.spec.kind is not CheckKind.TCP_CHECK or self.spec.builtin:
            return ""
        if self.step_id == 0:
            return " at initial connection step of tcp-check"
        text = f" at step {self.step_id} of tcp-check"
        st = self.step
        if isinstance(st, ConnectStep):
            text += f" (connect port {st.port})" if st.port else " (connect)"
        elif isinstance(st, ExpectStep):
            text += f" ({st.describe(False)})"
        elif isinstance(st, SendStep):
            text += " (send)"
        comment = getattr(st, "comment", None)
        if comment:
            text += f" comment: '{comment}'"
        return text

    def timeout_status(self) -> CheckStatus:
        if self.phase is _Phase.L4:
            return CheckStatus.L4TOUT
        if self.phase is _Phase.L6:
            return CheckStatus.L6TOUT
        if isinstance(self.step, ExpectStep) and self.step.tout_status is not None:
            return self.step.tout_status
        return CheckStatus.L7TOUT

    async def close(self) -> None:
        w = self.writer
        self.writer = self.reader = None
        if w is None:
            return
        try:
            w.close()
        except (OSError, RuntimeError):
            return
        try:
            await asyncio.wait_for(w.wait_closed(), 0.5)
        except (TimeoutError, OSError, ssl.SSLError, RuntimeError):
            pass


def _errno_text(exc: BaseException) -> str:
    """strerror() of a socket error, as haproxy prints it ('Connection refused')."""
    if isinstance(exc, OSError):
        # asyncio puts "Connect call failed (...)" in strerror; the errno is what
        # haproxy prints. Resolver errors (gaierror) have negative codes.
        if exc.errno and exc.errno > 0:
            return os.strerror(exc.errno)
        if exc.strerror:
            return exc.strerror
    return str(exc) or type(exc).__name__


@functools.lru_cache(maxsize=64)
def _ssl_context(tls: TlsOptions) -> ssl.SSLContext:
    """One client context per TLS setting, loaded once like haproxy does at start."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        # haproxy checks the certificate's name only against an SNI it sent.
        ctx.check_hostname = bool(tls.sni)
        if tls.ca_file:
            ctx.load_verify_locations(cafile=tls.ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _do_connect(run: _Run, host: str, port: int, use_ssl: bool, sni: str | None) -> None:
    await run.close()
    run.buf, run.eof = b"", False
    run.phase = _Phase.L4
    if not port:
        raise _Done(CheckStatus.SOCKERR, "No port available for the TCP connection")
    try:
        run.reader, run.writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), run.remaining())
    except TimeoutError:
        raise _Done(run.timeout_status(), run.where()) from None
    except OSError as exc:
        if exc.errno in (errno_mod.EMFILE, errno_mod.ENFILE, errno_mod.ENOBUFS, errno_mod.ENOMEM):
            raise _Done(CheckStatus.SOCKERR, _errno_text(exc) + run.where()) from None
        raise _Done(CheckStatus.L4CON, _errno_text(exc) + run.where()) from None
    run.connected()
    if use_ssl:
        run.phase = _Phase.L6
        tls = run.spec.tls
        if sni is not None:
            tls = TlsOptions(tls.verify, tls.ca_file, sni)
        try:
            ctx = _ssl_context(tls)
        except (OSError, ssl.SSLError) as exc:
            raise _Done(CheckStatus.SOCKERR, f"SSL setup error ({exc})") from None
        try:
            assert run.writer is not None
            await asyncio.wait_for(
                run.writer.start_tls(ctx, server_hostname=tls.sni or None), run.remaining())
        except TimeoutError:
            raise _Done(run.timeout_status(), run.where()) from None
        except ssl.SSLCertVerificationError as exc:
            raise _Done(CheckStatus.L6RSP, f"SSL handshake failure ({exc.verify_message})"
                        + run.where()) from None
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            detail = ""
            if isinstance(exc, OSError) and exc.errno and not isinstance(exc, ssl.SSLError):
                detail = f" ({os.strerror(exc.errno)})"
            raise _Done(CheckStatus.L6RSP, "SSL handshake failure" + detail + run.where()) from None
    run.phase = _Phase.L7


async def _send(run: _Run, data: bytes) -> None:
    assert run.writer is not None
    try:
        run.writer.write(data)
        await asyncio.wait_for(run.writer.drain(), run.remaining())
    except TimeoutError:
        raise _Done(run.timeout_status(), run.where()) from None
    except (OSError, ssl.SSLError) as exc:
        raise _Done(CheckStatus.SOCKERR, _errno_text(exc) + run.where()) from None


async def _recv(run: _Run) -> bool:
    """Read more into run.buf; False once nothing more will come (EOF or buffer full)."""
    if run.eof or len(run.buf) >= CHECK_BUFSIZE:
        return False
    assert run.reader is not None
    try:
        chunk = await asyncio.wait_for(run.reader.read(CHECK_BUFSIZE - len(run.buf)),
                                       run.remaining())
    except TimeoutError:
        raise _Done(run.timeout_status(), run.where()) from None
    except (OSError, ssl.SSLError) as exc:
        if run.buf:
            # haproxy reports a reset only when no data came before it.
            run.eof = True
            return False
        raise _Done(CheckStatus.SOCKERR, _errno_text(exc) + run.where()) from None
    if not chunk:
        run.eof = True
        return False
    run.buf += chunk
    return True


def _tcp_match(step: ExpectStep, data: bytes) -> bool:
    if step.match == "string":
        return step.pattern.encode("latin-1", "replace") in data
    if step.match == "binary":
        try:
            return bytes.fromhex(step.pattern) in data
        except ValueError:
            return False
    text = data.decode("latin-1")
    if step.match == "rbinary":
        text = data.hex().upper()
    try:
        return re.search(step.pattern, text) is not None
    except re.error:
        return False


def _need_more(step: ExpectStep, data: bytes) -> bool:
    if step.min_recv > 0 and len(data) < step.min_recv:
        return True
    if step.match == "string":
        return len(data) < len(step.pattern.encode("latin-1", "replace"))
    if step.match == "binary":
        return len(data) < len(step.pattern) // 2
    return False


def _ber_length(data: bytes, at: int) -> tuple[int, int] | None:
    """(length, offset of the content) of the BER length at `at`, or None."""
    if at >= len(data):
        return None
    first = data[at]
    if not first & 0x80:
        return first, at + 1
    n = first & 0x7F
    if n == 0 or n > 4 or at + 1 + n > len(data):
        return None
    return int.from_bytes(data[at + 1:at + 1 + n], "big"), at + 1 + n


def ldap_bind_result(data: bytes) -> tuple[CheckStatus, str, int | None]:
    """`option ldap-check`'s verdict on a reply to its bind request (RFC 4511
    4.2.2): an LDAPMessage with messageID 1 holding a bindResponse whose
    resultCode is 0 passes; another resultCode is a wrong status (the code
    shown); anything else is not LDAPv3; a reply cut short has no info."""
    if len(data) < 14:
        return CheckStatus.L7RSP, "", None
    outer = _ber_length(data, 1)
    if outer is None or data[outer[1]:outer[1] + 4] != b"\x02\x01\x01\x61":
        return CheckStatus.L7RSP, "Not LDAPv3 protocol", None
    inner = _ber_length(data, outer[1] + 4)
    if inner is None or data[inner[1]:inner[1] + 2] != b"\x0a\x01" or inner[1] + 2 >= len(data):
        return CheckStatus.L7RSP, "Not LDAPv3 protocol", None
    code = data[inner[1] + 2]
    if code:
        return (CheckStatus.L7STS, "See RFC: http://tools.ietf.org/html/rfc4511#section-4.1.9",
                code)
    return CheckStatus.L7OK, "Success", 0


async def _tcp_expect(run: _Run, step: ExpectStep) -> None:
    if not run.buf:
        await _recv(run)
    if step.verdict is not None:
        await _tcp_verdict(run, step.verdict)
        return
    while True:
        if not run.buf and run.eof:
            info = f"TCPCHK got an empty response at step {run.step_id}"
            if step.comment:
                info += f" comment: '{step.comment}'"
            code = step.code
            if code is None and step.reply is not None:
                code = step.reply(b"")[1]
            raise _Done(step.error_status or CheckStatus.L7RSP, info, code)
        last = run.eof or len(run.buf) >= CHECK_BUFSIZE
        if not last and _need_more(step, run.buf):
            await _recv(run)
            continue
        match = _tcp_match(step, run.buf)
        if not match and not last and step.min_recv == -1:
            await _recv(run)
            continue
        passed = match != step.negate
        if step.reply is not None:
            info, code = step.reply(run.buf)
            if code is None:
                code = step.code
            if not passed:
                raise _Done(step.error_status or CheckStatus.L7RSP, info, code)
            run.builtin_info, run.code = info, code
        if passed:
            return
        word = "TCPCHK matched unwanted content" if match else "TCPCHK did not match content"
        kind = {"string": f" '{step.pattern}'", "binary": " (binary)", "rstring": " (regex)",
                "rbinary": " (binary regex)"}.get(step.match, "")
        info = f"{word}{kind} at step {run.step_id}"
        if step.comment:
            info += f" comment: {step.comment}"
        raise _Done(step.error_status or CheckStatus.L7RSP, info)


async def _tcp_verdict(run: _Run,
                       verdict: Callable[[bytes, bool],
                                         tuple[CheckStatus, str, int | None] | None]) -> None:
    """An expect step that reads the response itself (ExpectStep.verdict)."""
    if not run.buf and run.eof:
        raise _Done(CheckStatus.L7RSP, f"TCPCHK got an empty response at step {run.step_id}")
    got = verdict(run.buf, run.eof)
    while got is None:
        more = await _recv(run)  # False: the end, or the buffer is full
        got = verdict(run.buf, run.eof or not more)
    status, info, code = got
    if not status.passed:
        raise _Done(status, info, code)
    run.builtin_info, run.code = info, code


async def _run_tcp_check(run: _Run) -> CheckResult:
    spec = run.spec
    last: Step | None = None
    user_index = 0
    for step in spec.steps:
        if isinstance(step, ConnectStep) and step.implicit:
            run.step_id = 0
        else:
            user_index += 1
            run.step_id = user_index
        run.step = step
        if isinstance(step, ConnectStep):
            await _do_connect(run, step.addr or spec.host, step.port or spec.port,
                              step.ssl or (step.implicit and spec.ssl), step.sni or spec.tls.sni)
        elif isinstance(step, SendStep):
            # haproxy releases the input buffer on each send: the next expect
            # only sees what came after it.
            run.buf = b""
            await _send(run, step.data)
        else:
            await _tcp_expect(run, step)
        last = step
    if isinstance(last, ExpectStep):
        info = last.ok_msg if last.ok_msg is not None else run.builtin_info
        code = last.code if last.code is not None else run.code
        return _result(last.ok_status or CheckStatus.L7OK,
                       "(tcp-check)" if info is None else info, run, code)
    if isinstance(last, ConnectStep):
        status = CheckStatus.L6OK if (last.ssl or (last.implicit and spec.ssl)) \
            else CheckStatus.L4OK
        return _result(status, "" if last.implicit else "(tcp-check)", run)
    return _result(CheckStatus.L7OK, "(tcp-check)", run)


def _result(status: CheckStatus, info: str, run: _Run, code: int | None = None) -> CheckResult:
    return CheckResult(status.passed, status, info, run.elapsed_ms(),
                       code if status.has_code else None)


_STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: (.*))?$")


def _parse_head(buf: bytes) -> tuple[int, str, dict[str, str], int] | None:
    """Status, reason, headers and body offset of a complete HTTP/1 head, else None."""
    end = buf.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = buf.find(b"\n\n")
        sep = 2
        if end < 0:
            return None
    lines = buf[:end].replace(b"\r\n", b"\n").split(b"\n")
    m = _STATUS_LINE.match(lines[0].rstrip(b"\r"))
    if m is None:
        raise _Done(CheckStatus.L7RSP, "")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(m.group(3)), (m.group(4) or b"").decode("latin-1").strip(), headers, end + sep


def _status_match(pattern: str, code: int) -> bool:
    for part in pattern.split(","):
        lo, _, hi = part.partition("-")
        try:
            if int(lo) <= code <= int(hi or lo):
                return True
        except ValueError:
            continue
    return False


async def _run_http(run: _Run) -> CheckResult:
    spec = run.spec
    assert spec.request is not None
    run.step_id = 1
    await _do_connect(run, spec.host, spec.port, spec.ssl, spec.tls.sni)
    await _send(run, spec.request.encode())
    head = None
    while head is None:
        head = _parse_head(run.buf)
        if head is None:
            if not await _recv(run):
                if not run.buf:
                    raise _Done(CheckStatus.L7RSP, "")
                head = _parse_head(run.buf + b"\r\n\r\n")
                if head is None:
                    raise _Done(CheckStatus.L7RSP, "")
    code, reason, headers, body_at = head
    run.code = code
    if spec.disable_on_404 and code == 404:
        return _result(CheckStatus.L7OKC, reason, run, code)
    expects = spec.expects or (ExpectStep("status", "200-399"),)
    body_needed = any(e.match in ("string", "rstring") for e in expects)
    body = run.buf[body_at:]
    if body_needed:
        length = headers.get("content-length")
        want = int(length) if length and length.isdigit() else None
        while (want is None or len(body) < want) and await _recv(run):
            body = run.buf[body_at:]
    for e in expects:
        if e.match == "status":
            match = _status_match(e.pattern, code)
        elif e.match == "rstatus":
            try:
                match = re.search(e.pattern, str(code)) is not None
            except re.error:
                match = False
        else:
            if not body:
                raise _Done(e.error_status or CheckStatus.L7RSP,
                            "HTTP content check could not find a response body", code)
            text = body.decode("latin-1")
            if e.match == "string":
                match = e.pattern in text
            else:
                try:
                    match = re.search(e.pattern, text) is not None
                except re.error:
                    match = False
        if match == e.negate:
            if e.match in ("status", "rstatus"):
                raise _Done(e.error_status or CheckStatus.L7STS, reason, code)
            desc = ("HTTP check matched unwanted content" if e.negate
                    else "HTTP content check did not match")
            raise _Done(e.error_status or CheckStatus.L7RSP, desc, code)
    ok = next((e.ok_status for e in reversed(expects) if e.ok_status), None)
    return _result(ok or CheckStatus.L7OK, "", run, code)


async def run_check(spec: CheckSpec, timeout_ms: int) -> CheckResult:
    """Run one check of `spec`; `timeout_ms` is the server's `inter`.

    Never raises for network conditions: every failure is a CheckResult with
    haproxy's status and info text. Cancelling the task cancels the check.
    """
    run = _Run(spec, timeout_ms)
    try:
        if spec.kind is CheckKind.TCP_CHECK:
            return await _run_tcp_check(run)
        if spec.kind is CheckKind.HTTP:
            return await _run_http(run)
        await _do_connect(run, spec.host, spec.port, spec.ssl, spec.tls.sni)
        return _result(CheckStatus.L6OK if spec.ssl else CheckStatus.L4OK, "", run)
    except _Done as done:
        return _result(done.status, done.info, run,
                       done.code if done.code is not None else run.code)
    except (OSError, ssl.SSLError, ValueError, UnicodeError) as exc:
        return _result(CheckStatus.SOCKERR, _errno_text(exc), run)
    finally:
        await run.close()


# ---------------------------------------------------------------------------
# Running the checks of a process
# ---------------------------------------------------------------------------


def ascii_encode(text: str, quote: str = '"') -> str:
    """haproxy's chunk_asciiencode(): every byte that is not printable ASCII,
    '<', '>' and the quote character become "<%02X>", as in the "info" part
    of its log lines (info: "... <0D><0A>")."""
    out = []
    for b in text.encode("utf-8", "replace"):
        c = chr(b)
        if not (0x20 <= b < 0x7F) or c in "<>" or c == quote:
            out.append(f"<{b:02X}>")
        else:
            out.append(c)
    return "".join(out)


def health_check_message(backend: str, server: str, backup: bool, result: CheckResult,
                         health: Health, uweight: int) -> str:
    """haproxy's `option log-health-checks` line (check.c set_server_check_status),
    without the final period, e.g.
    'Health check for server b/s1 failed, reason: Layer4 connection problem,
    info: "Connection refused", check duration: 0ms, status: 0/2 DOWN'.
    `health` is the counter after the result was applied."""
    st = result.status
    verdict = "succeeded" if st.passed else "failed"
    if st.result is Outcome.CONDPASS:
        verdict = "conditionally succeeded"
    text = (f"Health check for {'backup ' if backup else ''}server {backend}/{server} "
            f"{verdict}, reason: {st.description}")
    if st.has_code:
        text += f", code: {result.code or 0}"
    if result.info:
        text += f', info: "{ascii_encode(result.info)}"'
    text += f", check duration: {result.duration_ms}ms"
    if health.up:
        state = "UP" if uweight else "DRAIN"
        text += f", status: {health.health - health.rise + 1}/{health.fall} {state}"
    else:
        text += f", status: {health.health}/{health.rise} DOWN"
    return text


TransitionCallback = Callable[[ServerRuntime, bool, CheckResult], None]


@dataclass
class _Checked:
    server: ServerRuntime
    backend: Proxy
    spec: CheckSpec
    health: Health
    fastinter: int | None
    downinter: int | None
    address: tuple[str, int | None]
    task: asyncio.Task[None] | None = None
    checks_run: int = 0

    def sync(self) -> None:
        """Take over changes made from outside: `set server health` writes
        ServerRuntime.health, `set server addr` changes host/port."""
        h = self.health
        h.health = min(max(self.server.health, 0), h.top)
        addr = (self.server.host, self.server.port)
        if addr != self.address:
            self.address = addr
            self.spec = CheckSpec.from_config(self.backend, self.server.config, *addr)


class HealthChecker:
    """One asyncio task per checked server; updates ServerRuntime and reports
    UP/DOWN transitions through `on_transition(server, went_up, result)`.

    `runtime` is the ProcessRuntime or a list of BackendRuntime. Checked
    servers: those with `check` in their options or check_enabled already
    set. Their ServerRuntime gets check_enabled=True, health=rise and
    check_status 'INI' at construction. After every check the checker sets
    check_status/desc/code/duration_ms/info, health and check_fails; on a
    transition it calls the callback, which owns the rest of the state
    change: `op`, `last_change`, `check_downs`, downtime, the balancer
    (weights, slowstart) and the log line.

    A server in admin MAINT, or with check_enabled set to False (`disable
    health`), is not checked; its task keeps waiting. `on_check` (optional)
    is called after every check. `on_health_log(server, line)` (optional)
    gets haproxy's `option log-health-checks` line (health_check_message)
    for backends with that option, when haproxy writes one: the status
    changed or the health counter moved. haproxy sends it at LOG_NOTICE
    with a final '.', and then omits the reason from "Server ... is DOWN".
    """

    def __init__(
        self,
        runtime: ProcessRuntime | Sequence[BackendRuntime],
        on_transition: TransitionCallback,
        *,
        spread_checks: int = 0,
        rng: random.Random | None = None,
        on_check: Callable[[ServerRuntime, CheckResult, Transition | None], None] | None = None,
        on_health_log: Callable[[ServerRuntime, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_transition = on_transition
        self._on_check = on_check
        self._on_health_log = on_health_log
        self._spread = max(0, min(50, spread_checks))
        self._rng = rng or random.Random()
        self._clock = clock
        self._checked: list[_Checked] = []
        self._wakeups: dict[int, asyncio.Event] = {}
        self.warnings: list[str] = []
        backends = runtime.backends if isinstance(runtime, ProcessRuntime) else runtime
        for backend in backends:
            for srv in backend.servers:
                opts = srv.config.options
                if not (opts.check or srv.check_enabled):
                    continue
                spec = CheckSpec.from_config(backend.config, srv.config, srv.host, srv.port)
                for w in spec.warnings:
                    msg = f"backend '{backend.name}' server '{srv.name}': {w}"
                    if msg not in self.warnings:
                        self.warnings.append(msg)
                health = Health(opts.rise or 2, opts.fall or 3)
                srv.check_enabled = True
                srv.health = health.health
                if not srv.check_status:
                    srv.check_status = CheckStatus.INI.code
                    srv.check_desc = CheckStatus.INI.description
                self._checked.append(_Checked(srv, backend.config, spec, health, opts.fastinter,
                                             opts.downinter, (srv.host, srv.port)))

    @property
    def servers(self) -> list[ServerRuntime]:
        return [c.server for c in self._checked]

    def health_of(self, server: ServerRuntime) -> Health | None:
        for c in self._checked:
            if c.server is server:
                return c.health
        return None

    def checks_run(self, server: ServerRuntime) -> int:
        for c in self._checked:
            if c.server is server:
                return c.checks_run
        return 0

    def start(self) -> None:
        """Start the tasks; the first checks are spread over the interval as haproxy does
        (server k of n starts after inter*k/n, plus random spread-checks jitter)."""
        n = len(self._checked)
        mininter = min((self._interval(c) for c in self._checked), default=0)
        for pos, c in enumerate(self._checked):
            if c.task is not None:
                continue
            inter = max(mininter, self._interval(c))
            delay = inter * pos / n if n else 0
            delay = self._jitter(delay)
            c.task = asyncio.get_running_loop().create_task(
                self._loop(c, delay / 1000), name=f"check {c.server.backend}/{c.server.name}")

    async def stop(self) -> None:
        """Cancel every check task and wait for them (bounded)."""
        tasks = [c.task for c in self._checked if c.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for c in self._checked:
            c.task = None

    def wake(self, server: ServerRuntime) -> None:
        """Run the next check of `server` now."""
        ev = self._wakeups.get(id(server))
        if ev is not None:
            ev.set()

    def resume(self, server: ServerRuntime) -> None:
        """`server` left MAINT: haproxy sets health = rise ("start OK but check
        immediately", server.c srv_clr_admin_flag) and checks it at once. The
        caller makes the server UP (op, balancer), as haproxy does."""
        for c in self._checked:
            if c.server is server:
                server.health = c.health.rise
                c.health.health = c.health.rise
                self.wake(server)

    def set_health(self, server: ServerRuntime, up: bool) -> None:
        """`set server B/S health up|down`: jump to an extreme, as haproxy does."""
        for c in self._checked:
            if c.server is server:
                c.sync()
                was_up = c.health.up
                c.health.force(up)
                server.health = c.health.health
                if was_up != up:
                    self._apply_transition(c, up, CheckResult(
                        up, CheckStatus.CHECKED, "changed from CLI", 0, None))

    def _interval(self, c: _Checked) -> int:
        return c.health.interval(c.spec.inter, c.fastinter, c.downinter)

    def _jitter(self, ms: float) -> float:
        if self._spread <= 0 or ms <= 0:
            return ms
        rv = ms * self._spread / 100
        return ms + rv - 2 * rv * self._rng.random()

    async def _loop(self, c: _Checked, first_delay: float) -> None:
        ev = asyncio.Event()
        self._wakeups[id(c.server)] = ev
        delay = first_delay
        try:
            while True:
                if delay > 0:
                    try:
                        await asyncio.wait_for(ev.wait(), delay)
                    except TimeoutError:
                        pass
                ev.clear()
                srv = c.server
                if srv.admin is AdminState.MAINT or not srv.check_enabled:
                    delay = c.spec.inter / 1000
                    continue
                c.sync()
                result = await run_check(c.spec, c.spec.inter)
                c.checks_run += 1
                self._record(c, result)
                delay = self._jitter(self._interval(c)) / 1000
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one check must not stop the others
            _log.exception("health check task for %s/%s failed", c.server.backend,
                           c.server.name)
        finally:
            self._wakeups.pop(id(c.server), None)

    def _record(self, c: _Checked, result: CheckResult) -> None:
        srv = c.server
        prev_status = srv.check_status
        srv.check_status = result.status.code
        srv.check_desc = result.status.description
        srv.check_code = result.code
        srv.check_duration_ms = result.duration_ms
        srv.check_info = result.info
        c.sync()
        if result.status.failed and c.health.health > 0:
            srv.check_fails += 1
        before = c.health.health
        transition = c.health.on_status(result.status)
        srv.health = c.health.health
        if (self._on_health_log is not None and c.backend.option("log-health-checks")
                and (prev_status != result.status.code or before != c.health.health)):
            line = health_check_message(srv.backend, srv.name, srv.backup, result, c.health,
                                        srv.uweight)
            try:
                self._on_health_log(srv, line)
            except Exception:  # a log sink must not kill the check task
                _log.exception("on_health_log failed for %s/%s", srv.backend, srv.name)
        if transition is not None:
            self._apply_transition(c, transition is Transition.UP, result)
        if self._on_check is not None:
            self._on_check(srv, result, transition)

    def _apply_transition(self, c: _Checked, up: bool, result: CheckResult) -> None:
        srv = c.server
        try:
            self._on_transition(srv, up, result)
        except Exception:  # the app's callback must not kill the check task
            _log.exception("on_transition callback failed for %s/%s", srv.backend, srv.name)


__all__ = [
    "CheckKind",
    "ascii_encode",
    "health_check_message",
    "CheckResult",
    "CheckSpec",
    "ConnectStep",
    "ExpectStep",
    "HealthChecker",
    "HttpRequest",
    "SendStep",
    "TlsOptions",
    "run_check",
]
