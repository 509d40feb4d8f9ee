"""haproxy 2.6's `log-format`: a format string compiled once, at config time,
into a tuple of parts, then rendered for each finished session.

The compiler follows haproxy's parse_logformat_string() (src/log.c): the same
states (text, separator, '%' then a variable name, '%{flags}', '%[expr]'),
the same error texts, the same quirks ('%' before a character that starts no
variable is dropped; '%' before a digit or a blank is an error; every space
is a separator and runs of separators print one space; a variable reserved for
HTTP mode is refused in a TCP proxy). The renderer follows sess_build_logline():
a missing string prints '-' (or '""' when quoted), numbers are never quoted,
'+X' prints addresses, ports and some counters in hexadecimal.

Checked against haproxy 2.6 running the same format on loopback
(tests/integration/test_logformat.py). This module is pure: no socket, no
clock; the process id, the host name, how dates are written (keeplb.lb.log
gives these) and the session's values are inputs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace

DEFAULT_TCP_LOG_FORMAT = ("%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts "
                          "%ac/%fc/%bc/%sc/%rc %sq/%bq")

# haproxy 2.6's logformat_keywords[]: name -> reserved for HTTP mode.
VARIABLES: dict[str, bool] = {
    "o": False, "B": False, "CC": True, "CS": True, "H": False, "ID": False, "ST": False,
    "T": False, "Ta": True, "Tc": False, "Th": False, "Ti": True, "Tl": False, "Tq": True,
    "Tr": True, "TR": True, "Td": False, "Ts": False, "Tt": False, "Tu": False, "Tw": False,
    "U": False, "ac": False, "b": False, "bc": False, "bi": False, "bp": False, "bq": False,
    "ci": False, "cp": False, "f": False, "fc": False, "fi": False, "fp": False, "ft": False,
    "hr": False, "hrl": False, "hs": False, "hsl": False, "HM": True, "HP": True,
    "HPO": True, "HQ": True, "HU": True, "HV": True, "lc": False, "ms": False, "pid": False,
    "r": True, "rc": False, "rt": False, "s": False, "sc": False, "si": False, "sp": False,
    "sq": False, "sslc": False, "sslv": False, "t": False, "tr": True, "trg": True,
    "trl": True, "ts": False, "tsc": False,
}

# Variables keeplb has no value for in an HTTP proxy (it relays HTTP as TCP):
# logged as haproxy logs a missing value, with a warning at config time.
_HTTP_UNKNOWN = frozenset(name for name, http in VARIABLES.items() if http) | {"ST"}


@dataclass(frozen=True, slots=True)
class SessionLog:
    """What a session's log line can report (`option tcplog`, `log-format`), built
    once per finished session by the relay; -1 means 'not reached'."""

    client_ip: str
    client_port: int
    accept_wall: float
    frontend: str
    backend: str
    server: str  # '<NOSRV>' when none was assigned
    tw: int  # ms waiting for a server slot (queue)
    tc: int  # ms to connect to the server
    tt: int  # ms total
    bytes_out: int  # %B: bytes sent to the client
    bytes_in: int  # bytes read from the client (for dontlognull)
    termination: str  # %ts: two characters, '--' for a normal end
    actconn: int
    feconn: int
    beconn: int
    srvconn: int
    retries: int
    redispatched: bool
    srv_queue: int
    be_queue: int
    # Only `log-format` variables read these; the relay fills them only for a
    # format that uses them ('' and -1: not known, logged as haproxy logs a
    # missing value, '-').
    td: int = -1  # %Td: ms from the server connection to the end, -1 if none
    frontend_ip: str = ""  # %fi/%fp: the address the client connected to
    frontend_port: int = -1
    source_ip: str = ""  # %bi/%bp: the source address of the server connection
    source_port: int = -1
    server_ip: str = ""  # %si/%sp: the server's address
    server_port: int = -1
    uniq_id: int = 0  # %rt: the session's number in the process, from 0


class LogFormatError(ValueError):
    """A format haproxy refuses; the message is haproxy's own text (what follows
    'failed to parse log-format : '). `partial`: haproxy had already kept some
    of the format when it failed (it then still warns that a format is ignored
    for a proxy without a log target)."""

    def __init__(self, message: str, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True, slots=True)
class Options:
    """A variable's flags: haproxy's LOG_OPT_MANDATORY ('M', on by default in
    `log-format`), LOG_OPT_QUOTE ('Q'), LOG_OPT_HEXA ('X'), LOG_OPT_ESC ('E')."""

    mandatory: bool = True
    quote: bool = False
    hexa: bool = False
    escape: bool = False


_FLAG_FIELDS = {"M": "mandatory", "Q": "quote", "X": "hexa", "E": "escape"}


def apply_flags(args: str, options: Options) -> Options:
    """haproxy's parse_logformat_var_args(): comma-separated '+F' / '-F'; an
    unknown flag, or one without a sign, is ignored."""
    for token in args.split(","):
        sign = max(token.rfind("+"), token.rfind("-"))
        if sign < 0:
            continue
        name = _FLAG_FIELDS.get(token[sign + 1:])
        if name is not None:
            options = replace(options, **{name: token[sign] == "+"})
    return options


@dataclass(frozen=True, slots=True)
class Text:
    """Literal text (never empty, never a space: spaces are separators)."""

    text: str


@dataclass(frozen=True, slots=True)
class Separator:
    """One or more spaces of the format: one space in the line, and none after
    another separator or at the start of the line."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    options: Options


@dataclass(frozen=True, slots=True)
class SampleExpr:
    """'%[fetch,converter...]': checked for its fetch name, not evaluated by keeplb."""

    expr: str
    options: Options


Node = Text | Separator | Variable | SampleExpr
SEPARATOR = Separator()


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A compiled format: its nodes, and what keeplb could not honour in it
    (warnings for the config check)."""

    text: str
    nodes: tuple[Node, ...]
    warnings: tuple[str, ...] = ()
    http: bool = False  # compiled for a proxy in HTTP mode

    def uses(self, *names: str) -> bool:
        """Whether any of these variables appear (to fetch a value only when used)."""
        return any(isinstance(n, Variable) and n.name in names for n in self.nodes)

    def renderer(self, dates: Dates, pid: int = 0, hostname: str = "") -> Renderer:
        return Renderer(self, dates, pid, hostname)


def _is_alpha(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _is_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


_FETCH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _sample_end(fmt: str, start: int, known_fetch: Callable[[str], bool] | None) -> int:
    """Index of the first character after the sample expression starting at
    `start`: a fetch name, its '(args)', then ',converter(args)' parts; raises
    LogFormatError with haproxy's text for what keeplb can check."""
    rest = fmt[start:]
    i = start
    while i < len(fmt) and fmt[i] in _FETCH_CHARS:
        i += 1
    name = fmt[start:i]
    if not name:
        raise LogFormatError(f"failed to parse sample expression <{rest}> : missing fetch method")
    if known_fetch is not None and not known_fetch(name):
        raise LogFormatError(f"failed to parse sample expression <{rest}> : unknown fetch "
                             f"method '{name}'")
    where = f"fetch method '{name}'"
    while True:
        if i < len(fmt) and fmt[i] == "(":
            close = fmt.find(")", i)
            if close < 0:
                after = fmt.find("]", i)
                what = f" before '{fmt[after:]}'" if after >= 0 else ""
                raise LogFormatError(f"failed to parse sample expression <{rest}> : {where} : "
                                     f"expected ')'{what}")
            i = close + 1
        if i < len(fmt) and fmt[i] == ",":
            j = i + 1
            while j < len(fmt) and fmt[j] in _FETCH_CHARS:
                j += 1
            if j == i + 1:
                raise LogFormatError(f"failed to parse sample expression <{rest}> : unknown "
                                     "converter ''")
            where = f"invalid arg 1 in converter '{fmt[i + 1:j]}'"
            i = j
            continue
        return i


def compile_format(fmt: str, *, http: bool = False,
                   known_fetch: Callable[[str], bool] | None = None) -> LogFormat:
    """Compile a `log-format` string for a proxy in TCP mode (or HTTP mode when
    `http`), as haproxy 2.6's parse_logformat_string() with LOG_OPT_MANDATORY and
    LOG_OPT_MERGE_SPACES. Raises LogFormatError with haproxy's message; never
    anything else. `known_fetch` tells the sample fetches haproxy knows."""
    nodes: list[Node] = []
    warnings: list[str] = []
    try:
        return _compile(fmt, http, known_fetch, nodes, warnings)
    except LogFormatError as exc:
        exc.partial = exc.partial or bool(nodes)
        raise


def _compile(fmt: str, http: bool, known_fetch: Callable[[str], bool] | None,
             nodes: list[Node], warnings: list[str]) -> LogFormat:
    defaults = Options()
    i, n = 0, len(fmt)
    text_start = -1

    def flush_text(end: int) -> None:
        nonlocal text_start
        if text_start >= 0 and end > text_start:
            nodes.append(Text(fmt[text_start:end]))
        text_start = -1

    while i < n:
        c = fmt[i]
        if c == " ":
            flush_text(i)
            nodes.append(SEPARATOR)
            i += 1
            continue
        if c != "%":
            if text_start < 0:
                text_start = i
            i += 1
            continue
        # '%': what follows decides
        flush_text(i)
        i += 1
        if i >= n:
            raise LogFormatError("truncated line after '%'")
        c = fmt[i]
        arg: str | None = None
        if c == "%":
            text_start = i  # the second '%' is the text
            i += 1
            continue
        if c.isascii() and (c.isdigit() or c in " \t"):
            pos = len(fmt[:i].encode("utf-8", "surrogateescape"))
            raise LogFormatError(f"unexpected variable name near '{c}' at position {pos} line : "
                                 f"'{fmt}'. Maybe you want to write a single '%', use the "
                                 "syntax '%%'")
        if c == "{":
            close = fmt.find("}", i + 1)
            if close < 0:
                raise LogFormatError(f"truncated line after '{fmt[i + 1:]}'")
            arg = fmt[i + 1:close]
            i = close + 1
            c = fmt[i] if i < n else ""
            if c != "[" and not _is_alnum(c):
                raise LogFormatError(f"parse argument modifier without variable name near "
                                     f"'%{{{arg}}}'")
        elif c != "[" and not _is_alpha(c):
            # any other character: the '%' is dropped, the character is text
            continue
        options = apply_flags(arg, defaults) if arg else defaults
        if c == "[":
            start = i + 1
            end = _sample_end(fmt, start, known_fetch)
            expr = fmt[start:end]
            # haproxy has kept the expression when it finds no ']' after it
            if end >= n:
                raise LogFormatError(f"missing ']' after '{expr}'", partial=True)
            if fmt[end] != "]":
                raise LogFormatError(f"expected ']' after '{expr}', but found '{fmt[end]}'",
                                     partial=True)
            nodes.append(SampleExpr(expr, options))
            warnings.append(f"sample expression '%[{expr}]' in 'log-format' is not supported "
                            "by keeplb; it is logged as '-'")
            i = end + 1
            continue
        start = i
        while i < n and _is_alnum(fmt[i]):
            i += 1
        name = fmt[start:i]
        http_only = VARIABLES.get(name)
        if http_only is None:
            raise LogFormatError(f"no such format variable '{name}'. If you wanted to emit "
                                 "the '%' character verbatim, you need to use '%%'")
        if http_only and not http:
            raise LogFormatError(f"format variable '{name}' is reserved for HTTP mode")
        if name == "o":
            defaults = options  # '%o': these flags for every later variable
            continue
        if http and name in _HTTP_UNKNOWN:
            warnings.append(f"format variable '{name}' is not supported by keeplb (it relays "
                            "HTTP as TCP); it is logged as '-'")
        nodes.append(Variable(name, options))
    flush_text(n)
    return LogFormat(fmt, tuple(nodes), tuple(dict.fromkeys(warnings)), http)


# -- rendering -------------------------------------------------------------

def _text(value: str | None, o: Options) -> str:
    """haproxy's lf_text_len(): a string, quoted and escaped on request; a
    missing or empty one is '-' (mandatory) or '""' (quoted)."""
    if value:
        if o.escape:
            value = value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
        return f'"{value}"' if o.quote else value
    if o.quote:
        return '""'
    return "-" if o.mandatory else ""


def _ip(value: str, o: Options) -> str:
    """haproxy's lf_ip(): '+X' gives the address bytes in hexadecimal."""
    if not value:
        return _text(None, o)
    if o.hexa:
        try:
            return ipaddress.ip_address(value.split("%", 1)[0]).packed.hex().upper()
        except ValueError:
            pass
    return _text(value, o)


def _port(value: int, o: Options) -> str:
    """haproxy's lf_port(): decimal, or '+X' four hex digits; never quoted."""
    if value < 0:
        return _text(None, o)
    return f"{value:04X}" if o.hexa else str(value)


def _hex4(value: int, o: Options) -> str:
    return f"{value:04X}" if o.hexa else str(value)


Part = Callable[[SessionLog], str]


@dataclass(frozen=True, slots=True)
class Dates:
    """How a wall-clock time is written: given by keeplb.lb.log (this module
    reads no clock and no time zone)."""

    accept: Callable[[float], str]  # %t: local, with milliseconds
    gmt: Callable[[float], str]  # %T
    local: Callable[[float], str]  # %Tl: local, with its UTC offset


class Renderer:
    """A compiled format bound to one frontend: the process id and host name it
    logs, and its count of lines sent (%lc). render() is called once per logged
    session."""

    __slots__ = ("format", "dates", "pid", "hostname", "log_count", "parts")

    def __init__(self, fmt: LogFormat, dates: Dates, pid: int, hostname: str) -> None:
        self.format = fmt
        self.dates = dates
        self.pid = pid
        self.hostname = hostname
        self.log_count = 0
        # Text and variables, each a constant string or a function of the
        # session. Every one of them counts as printed for haproxy's separator
        # state (last_isspace), so the separators are resolved here: none at the
        # start, one space for a run. A variable that prints nothing in TCP
        # mode (captured headers: keeplb captures none) is left out, as haproxy
        # leaves the separator state alone for it.
        pieces: list[str | Part] = []
        pending_space = False
        for node in fmt.nodes:
            if isinstance(node, Separator):
                pending_space = bool(pieces)
                continue
            if isinstance(node, Variable) and node.name in ("hr", "hrl", "hs", "hsl"):
                continue
            if pending_space:
                pieces.append(" ")
                pending_space = False
            if isinstance(node, Text):
                pieces.append(node.text)
            elif isinstance(node, SampleExpr):
                pieces.append(_text(None, node.options))
            else:
                pieces.append(self._variable(node.name, node.options))
        if pending_space:
            pieces.append(" ")  # haproxy keeps a trailing one
        # adjacent constants joined: the default tcplog format has 13 parts left
        merged: list[str | Part] = []
        for piece in pieces:
            if isinstance(piece, str) and merged and isinstance(merged[-1], str):
                merged[-1] += piece
            else:
                merged.append(piece)
        self.parts: tuple[str | Part, ...] = tuple(merged)

    def render(self, s: SessionLog) -> str:
        """The line for a session ('' when the format prints nothing: haproxy
        then sends no line, and does not count it in %lc)."""
        line = "".join([p if isinstance(p, str) else p(s) for p in self.parts])
        if line:
            self.log_count += 1
        return line

    def _variable(self, name: str, o: Options) -> Part:
        """The function printing variable `name` with options `o` (sess_build_logline)."""
        dates = self.dates
        if self.format.http and name in _HTTP_UNKNOWN:
            missing = _text(None, o)
            return lambda s: missing
        simple: dict[str, Part] = {
            "B": lambda s: str(s.bytes_out),
            "U": lambda s: str(s.bytes_in),
            "Tw": lambda s: str(s.tw),
            "Tc": lambda s: str(s.tc),
            "Tt": lambda s: str(s.tt),
            "Tu": lambda s: str(s.tt),  # Tt - Ti, and no idle time in TCP
            "Td": lambda s: str(s.td),
            "Th": lambda s: "0",  # no SSL handshake, no PROXY header on keeplb's binds
            "ac": lambda s: str(s.actconn),
            "fc": lambda s: str(s.feconn),
            "bc": lambda s: str(s.beconn),
            "sc": lambda s: str(s.srvconn),
            "sq": lambda s: str(s.srv_queue),
            "bq": lambda s: str(s.be_queue),
            "rc": lambda s: f"+{s.retries}" if s.redispatched else str(s.retries),
            "ts": lambda s: s.termination,
            "tsc": lambda s: s.termination + "--",  # no cookie in TCP
            "t": lambda s: dates.accept(s.accept_wall),
            "T": lambda s: dates.gmt(s.accept_wall),
            "Tl": lambda s: dates.local(s.accept_wall),
            "f": lambda s: _text(s.frontend, o),
            "b": lambda s: _text(s.backend, o),
            "s": lambda s: _text(s.server, o),
            "ID": lambda s: _text(None, o),  # no unique-id-format
            "sslc": lambda s: _text(None, o),
            "sslv": lambda s: _text(None, o),
            "ci": lambda s: _ip(s.client_ip, o),
            "cp": lambda s: _port(s.client_port, o),
            "fi": lambda s: _ip(s.frontend_ip, o),
            "fp": lambda s: _port(s.frontend_port, o),
            "bi": lambda s: _ip(s.source_ip, o),
            "bp": lambda s: _port(s.source_port, o),
            "si": lambda s: _ip(s.server_ip, o),
            "sp": lambda s: _port(s.server_port, o),
            "Ts": lambda s: _hex4(int(s.accept_wall), o),
            "rt": lambda s: _hex4(s.uniq_id, o),
        }
        if name in simple:
            return simple[name]
        if name == "ft":
            # strlcpy2 of the name, quoted by hand: never '-', never escaped
            q = '"' if o.quote else ""
            return lambda s: f"{q}{s.frontend}{q}"
        if name == "ms":
            if o.hexa:
                return lambda s: f"{int((s.accept_wall % 1) * 1000):02X}"
            return lambda s: f"{int((s.accept_wall % 1) * 1000):03d}"
        if name == "pid":
            pid = _hex4(self.pid, o)
            return lambda s: pid
        if name == "H":
            host = _text(self.hostname, o)
            return lambda s: host
        if name == "lc":
            return lambda s: _hex4(self.log_count, o)
        if name == "ST":
            return lambda s: "0"  # in TCP mode: no HTTP status
        raise AssertionError(f"variable '{name}' has no renderer")  # VARIABLES and this agree


TCPLOG = compile_format(DEFAULT_TCP_LOG_FORMAT)
