"""The `log-format` compiler and renderer (keeplb/lb/logformat.py) and how the
config parser uses it. Texts and outputs were taken from haproxy 2.6 running
the same formats (tests/integration/test_logformat.py compares live)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeplb.config.haproxy import fetch_known, parse_text
from keeplb.lb.log import DATES, SessionLog, format_tcplog
from keeplb.lb.logformat import (
    DEFAULT_TCP_LOG_FORMAT,
    TCPLOG,
    VARIABLES,
    LogFormat,
    LogFormatError,
    Options,
    Separator,
    Text,
    Variable,
    apply_flags,
    compile_format,
)

WALL = time.mktime((2026, 11, 25, 11, 29, 25, 0, 0, -1)) + 0.516

SESSION = SessionLog("127.0.0.1", 58322, WALL, "fe", "be", "s1", 0, 1, 502, 10, 5, "--",
                     2, 2, 1, 1, 0, False, 0, 1, td=501, frontend_ip="127.0.0.2",
                     frontend_port=8080, source_ip="127.0.0.1", source_port=40000,
                     server_ip="127.0.0.3", server_port=6443, uniq_id=7)
NOSRV = SessionLog("::1", 1, WALL, "fe", "fe", "<NOSRV>", -1, -1, 0, 0, 0, "SC",
                   1, 1, 0, 0, 0, False, 0, 0)


def render(fmt: str, s: SessionLog = SESSION, *, http: bool = False, pid: int = 42,
           hostname: str = "lb1") -> str:
    return compile_format(fmt, http=http).renderer(DATES, pid, hostname).render(s)


def compiled_tcplog(s: SessionLog) -> str:
    """haproxy's default TCP log-format compiled and rendered: what the
    written-out format_tcplog must reproduce byte for byte."""
    return TCPLOG.renderer(DATES).render(s)


names = st.text(st.sampled_from("abcxyz-_.0123456789"), min_size=1, max_size=8)
timers = st.integers(-1, 10**6)
counts = st.integers(0, 10**6)
sessions = st.builds(
    SessionLog, st.sampled_from(["127.0.0.1", "::1", "10.0.0.7", "unix"]),
    st.integers(0, 65535), st.floats(0, 4e9), names, names,
    st.one_of(names, st.just("<NOSRV>")), timers, timers, timers, counts, counts,
    st.sampled_from(["--", "SC", "sQ", "cD", "CD", "SD", "LR", "PC"]), counts, counts,
    counts, counts, st.integers(0, 5), st.booleans(), counts, counts)


@settings(max_examples=300, deadline=None)
@given(sessions)
def test_option_tcplog_is_the_compiled_default_format(s: SessionLog) -> None:
    assert format_tcplog(s) == compiled_tcplog(s)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), st.booleans(), sessions)
def test_any_format_compiles_or_fails_with_haproxys_error(fmt: str, http: bool,
                                                          s: SessionLog) -> None:
    try:
        compiled = compile_format(fmt, http=http, known_fetch=fetch_known)
    except LogFormatError as exc:
        assert str(exc)  # a message, never another exception
        return
    assert isinstance(compiled, LogFormat)
    line = compiled.renderer(DATES, 1, "h").render(s)
    assert isinstance(line, str) and not line.startswith(" ")


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("%{}[]+-QXEMo ciptsb,x"), max_size=30))
def test_format_syntax_fuzz(fmt: str) -> None:
    """Formats made mostly of the syntax characters: the same contract."""
    try:
        f = compile_format(fmt, known_fetch=fetch_known)
    except LogFormatError:
        return
    f.renderer(DATES).render(SESSION)


# ------------------------------------------------------------ compiler errors

@pytest.mark.parametrize(("fmt", "message"), [
    ("%zz", "no such format variable 'zz'. If you wanted to emit the '%' character verbatim, "
            "you need to use '%%'"),
    ("%{+Q}1", "no such format variable '1'. If you wanted to emit the '%' character "
               "verbatim, you need to use '%%'"),
    ("%{+Q", "truncated line after '+Q'"),
    ("%{", "truncated line after ''"),
    ("%", "truncated line after '%'"),
    ("%ci%", "truncated line after '%'"),
    ("%{+Q}", "parse argument modifier without variable name near '%{+Q}'"),
    ("a%{+Q}%ci", "parse argument modifier without variable name near '%{+Q}'"),
    ("%1", "unexpected variable name near '1' at position 1 line : '%1'. Maybe you want to "
           "write a single '%', use the syntax '%%'"),
    ("% x", "unexpected variable name near ' ' at position 1 line : '% x'. Maybe you want to "
            "write a single '%', use the syntax '%%'"),
    ("%r", "format variable 'r' is reserved for HTTP mode"),
    ("%HM", "format variable 'HM' is reserved for HTTP mode"),
    ("%tr", "format variable 'tr' is reserved for HTTP mode"),
    ("%[", "failed to parse sample expression <> : missing fetch method"),
    ("%[]", "failed to parse sample expression <]> : missing fetch method"),
    ("%[src", "missing ']' after 'src'"),
    ("%ci%[src", "missing ']' after 'src'"),
    ("%[src x]", "expected ']' after 'src', but found ' '"),
    ("%[nosuch] %ci", "failed to parse sample expression <nosuch] %ci> : unknown fetch "
                      "method 'nosuch'"),
    ("%[src(]", "failed to parse sample expression <src(]> : fetch method 'src' : expected "
                "')' before ']'"),
    ("%[src(", "failed to parse sample expression <src(> : fetch method 'src' : expected ')'"),
    ("%[src,]", "failed to parse sample expression <src,]> : unknown converter ''"),
    ("%[src,lower(]", "failed to parse sample expression <src,lower(]> : invalid arg 1 in "
                      "converter 'lower' : expected ')' before ']'"),
])
def test_errors_are_haproxys(fmt: str, message: str) -> None:
    with pytest.raises(LogFormatError) as info:
        compile_format(fmt, known_fetch=fetch_known)
    assert str(info.value) == message


def test_variables_haproxy_reserves_for_http_compile_in_http_mode_with_a_warning() -> None:
    f = compile_format("%r %ST %ci", http=True)
    assert f.warnings == (
        "format variable 'r' is not supported by keeplb (it relays HTTP as TCP); it is logged "
        "as '-'",
        "format variable 'ST' is not supported by keeplb (it relays HTTP as TCP); it is logged "
        "as '-'")
    assert f.renderer(DATES).render(SESSION) == "- - 127.0.0.1"
    assert render("%ST") == "0"  # TCP mode: no status, haproxy prints 0


def test_every_variable_renders_in_both_modes() -> None:
    for name, http_only in VARIABLES.items():
        for http in (False, True):
            if name == "o" or (http_only and not http):
                continue
            assert isinstance(render(f"%{name}", http=http), str), name


# --------------------------------------------------------------- structure

def test_nodes_text_separators_and_flags() -> None:
    f = compile_format("a%%b  %{+Q,-M}ci%-x")
    assert f.nodes == (Text("a"), Text("%b"), Separator(), Separator(),
                       Variable("ci", Options(mandatory=False, quote=True)), Text("-x"))


@pytest.mark.parametrize(("args", "expected"), [
    ("+Q", Options(quote=True)),
    ("+Q,+X,-M", Options(mandatory=False, quote=True, hexa=True)),
    ("Q", Options()),  # no sign: ignored
    ("+Z,+E", Options(escape=True)),  # unknown flag: ignored
    ("a+Q-X", Options(hexa=False)),  # the last sign of a token counts
    ("", Options()),
])
def test_flags(args: str, expected: Options) -> None:
    assert apply_flags(args, Options()) == expected


# --------------------------------------------------------------- rendering

@pytest.mark.parametrize(("fmt", "line"), [
    (DEFAULT_TCP_LOG_FORMAT, "127.0.0.1:58322 [25/Nov/2026:11:29:25.516] fe be/s1 0/1/502 10 "
                             "-- 2/2/1/1/0 0/1"),
    ("  %ci  %cp  ", "127.0.0.1 58322 "),  # leading spaces dropped, runs merged, trailing kept
    ("%ci %hr %cp", "127.0.0.1 58322"),  # a capture prints nothing and keeps no space
    ("%%  x%-y %{+Q}o %ci %{-Q}cp %ft %{+E}s %ID %{-M}sslc %b", '% x-y "127.0.0.1" 58322 "fe" '
                                                              '"s1" "" "" "be"'),
    ("%{+X}ci:%{+X}cp %{+X}fi:%{+X}fp %{+X}Ts %{+X}pid %{+X}rt %{+X}ms",
     "7F000001:E3D2 7F000002:1F90 " + f"{int(WALL):04X} 002A 0007 204"),
    ("%fi:%fp %bi:%bp %si:%sp", "127.0.0.2:8080 127.0.0.1:40000 127.0.0.3:6443"),
    ("%{+Q}ts %{+Q}t %{+Q}B %{+Q}Tt", "-- 25/Nov/2026:11:29:25.516 10 502"),  # never quoted
    ("%Td %Tu %Th %U %ST %tsc %ID %sslc %sslv %H %pid", "501 502 0 5 0 ---- - - - lb1 42"),
    ("%{+Q}H %{+Q}ID", '"lb1" ""'),
    ("%[src] %{+Q}[src]", '- ""'),  # sample expressions: logged as missing
])
def test_render(fmt: str, line: str) -> None:
    assert render(fmt) == line


def test_missing_addresses_and_no_server() -> None:
    assert render("%fi:%fp %bi:%bp %si:%sp %s %Td %{+Q}si %{+X}bp", NOSRV) == \
        '-:- -:- -:- <NOSRV> -1 "" -'
    assert render("%ci %{+X}ci", NOSRV) == "::1 00000000000000000000000000000001"
    assert render("%rc", replace(SESSION, retries=2, redispatched=True)) == "+2"


def test_dates() -> None:
    t = time.gmtime(int(WALL))
    assert render("%T") == time.strftime("%d/%b/%Y:%H:%M:%S +0000", t)
    assert render("%Tl") == time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(int(WALL)))
    assert render("%t %ms") == "25/Nov/2026:11:29:25.516 516"


def test_log_count_counts_the_lines_sent() -> None:
    r = compile_format("%lc %f").renderer(DATES)
    assert [r.render(SESSION) for _ in range(3)] == ["0 fe", "1 fe", "2 fe"]
    empty = compile_format("%hr").renderer(DATES)
    assert empty.render(SESSION) == "" and empty.log_count == 0  # no line, not counted


def test_uses() -> None:
    f = compile_format("%ci %fp")
    assert f.uses("fi", "fp") and not f.uses("bi", "bp")


# ------------------------------------------------------------------ config

TIMEOUTS = "defaults\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"


def test_the_last_of_log_format_and_option_tcplog_wins() -> None:
    cfg, diags = parse_text(TIMEOUTS + """\
    log-format %ci
listen a
    bind 127.0.0.1:1
    option tcplog
    server s 127.0.0.1:2
listen b
    bind 127.0.0.1:3
    server s 127.0.0.1:2
listen c
    bind 127.0.0.1:4
    option tcplog
    log-format "%ci %b"
    server s 127.0.0.1:2
""")
    a, b, c = cfg.proxies
    assert (a.log_format, a.option("tcplog")) == (None, True)
    assert (b.log_format, b.option("tcplog")) == ("%ci", False)
    assert (c.log_format, c.option("tcplog")) == ("%ci %b", False)


def test_defaults_override_warnings_and_backend() -> None:
    _, diags = parse_text(TIMEOUTS + """\
    option tcplog
    log-format %ci
    log-format %cp
    option httplog
backend be
    log-format %ci
    server s 127.0.0.1:2
""")
    assert [(d.span.line if d.span else 0, d.message) for d in diags.warnings] == [
        (6, "'log-format' overrides previous 'option tcplog' in 'defaults' section"),
        (7, "'log-format' overrides previous 'log-format' in 'defaults' section"),
        (8, "'option httplog' overrides previous 'log-format' in 'defaults' section"),
        (10, "backend 'be' : 'log-format' directive is ignored in backends"),
    ]


def test_a_bad_format_is_reported_per_proxy_using_it_at_its_line() -> None:
    _, diags = parse_text(TIMEOUTS + """\
    log-format "%ci %zz"
frontend a
    bind 127.0.0.1:1
frontend b
    bind 127.0.0.1:3
    mode http
    log-format %r
frontend c
    bind 127.0.0.1:4
    log-format %r
""")
    err = ("failed to parse log-format : no such format variable 'zz'. If you wanted to emit "
           "the '%' character verbatim, you need to use '%%'")
    assert [(d.span.line if d.span else 0, d.message) for d in diags.errors] == [
        (5, err), (14, "failed to parse log-format : format variable 'r' is reserved for "
                       "HTTP mode")]
    # haproxy warns of a format without a log target only when it kept some of it
    assert [(d.span.line if d.span else 0, d.message) for d in diags.warnings
            if "log address" in d.message] == [
        (6, "log format ignored for frontend 'a' since it has no log address"),
        (8, "log format ignored for frontend 'b' since it has no log address")]


@pytest.mark.parametrize(("line", "message"), [
    ("log-format", "log-format expects an argument"),
    ('log-format ""', "log-format expects an argument"),
    ("log-format a b", "log-format expects only one argument, don't forget to escape spaces!"),
])
def test_argument_errors(line: str, message: str) -> None:
    _, diags = parse_text(TIMEOUTS + f"listen l\n    bind 127.0.0.1:1\n    {line}\n")
    assert [d.message for d in diags.errors] == [message]
