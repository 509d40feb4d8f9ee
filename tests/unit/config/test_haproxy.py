"""haproxy.cfg parser: values, addresses, inheritance, checks, the seed and the corpus."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from keeplb.config.haproxy import (
    KEYWORDS,
    inet_aton,
    keyword_table,
    parse,
    parse_address,
    parse_condition,
    parse_size,
    parse_text,
    parse_time,
)
from keeplb.config.model import Address, Mode, ProxyKind

ROOT = Path(__file__).resolve().parents[3]
SEED = Path("/work/shared/seed/haproxy.cfg")
EXAMPLE = ROOT / "examples" / "haproxy.cfg"
CORPUS = ROOT / "tests" / "corpus" / "haproxy"

TIMEOUTS = """\
defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


def messages(text: str, env: dict[str, str] | None = None) -> list[str]:
    return [d.message for d in parse_text(text, env=env)[1]]


def errors(text: str) -> list[str]:
    return [d.message for d in parse_text(text)[1].errors]


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0", 0), ("5000", 5000), ("250ms", 250), ("10s", 10_000), ("2m", 120_000),
        ("1h", 3_600_000), ("1d", 86_400_000), ("1500us", 2), ("1us", 1),
        ("5sec", 5000),  # haproxy reads the unit from its first letter(s)
        ("24d", 2_073_600_000),
    ],
)
def test_time_units(text: str, ms: int) -> None:
    assert parse_time(text) == (ms, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expects an integer value"),
        ("1x", "unexpected character 'x'"),
        ("1.5s", "unexpected character '.'"),
        ("5S", "unexpected character 'S'"),
        ("s", "unexpected character 's'"),
        ("25d", "timer overflow"),
    ],
)
def test_bad_times(text: str, reason: str) -> None:
    value, err = parse_time(text)
    assert value is None and err is not None and reason in err


@pytest.mark.parametrize(
    ("text", "size"),
    [("16384", 16384), ("16k", 16384), ("16K", 16384), ("2m", 2 << 20), ("1g", 1 << 30)],
)
def test_size_units(text: str, size: int) -> None:
    assert parse_size(text) == (size, None)


@pytest.mark.parametrize("text", ["", "k", "1t", "1.5k"])
def test_bad_sizes(text: str) -> None:
    assert parse_size(text)[0] is None


# ------------------------------------------------------------- addresses


def bind_addr(text: str) -> Address | None:
    return parse_address(text, port_required=True, port_range=True, port_offset=False)[0]


def server_addr(text: str) -> Address | None:
    return parse_address(text, port_required=False, port_range=False, port_offset=True)[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*:6443", Address("any", "0.0.0.0", 6443, 6443)),
        (":6443", Address("any", "0.0.0.0", 6443, 6443)),
        (":::6443", Address("ipv6", "::", 6443, 6443)),
        ("127.0.0.1:80", Address("ipv4", "127.0.0.1", 80, 80)),
        ("ipv4@127.0.0.1:80", Address("ipv4", "127.0.0.1", 80, 80)),
        ("ipv6@::1:80", Address("ipv6", "::1", 80, 80)),
        ("ipv6@:80", Address("ipv6", "::", 80, 80)),
        ("10.77.0.1:8000-8010", Address("ipv4", "10.77.0.1", 8000, 8010)),
        ("unix@/run/x.sock", Address("unix", "/run/x.sock")),
        ("/run/x.sock", Address("unix", "/run/x.sock")),
        ("abns@name", Address("abns", "name")),
        ("fd@3", Address("fd", "3")),
        ("localhost:80", Address("ipv4", "localhost", 80, 80)),
        ("127.0.00.1:80", Address("ipv4", "127.0.0.1", 80, 80)),  # inet_aton form
        ("127.0.0.1:80)", Address("ipv4", "127.0.0.1", 80, 80)),  # haproxy ignores junk after digits
    ],
)
def test_bind_addresses(text: str, expected: Address) -> None:
    assert bind_addr(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1", "missing port specification"),
        ("127.0.0.1:", "missing port specification"),
        (":99999", "invalid port '99999'"),
        (":0", "invalid port '0'"),
        (":abc", "invalid character 'a'"),
        (":8010-8000", "invalid port range"),
        (":8000-", "invalid port ''"),
        (":+5", "port offset not permitted"),
        ("ipv4@::1:80", "not an ipv4 address"),
        ("10.7x7.0.1:80", "invalid address"),
        ("unix@", "missing socket path"),
    ],
)
def test_bad_bind_addresses(text: str, reason: str) -> None:
    addr, err = parse_address(text, port_required=True, port_range=True, port_offset=False)
    assert addr is None and err is not None and reason in err


def test_server_addresses() -> None:
    assert server_addr("10.77.0.1") == Address("ipv4", "10.77.0.1")
    assert server_addr("10.77.0.1:+1000") == Address("ipv4", "10.77.0.1", 1000, 1000, True)
    assert server_addr("10.77.0.1:-10") == Address("ipv4", "10.77.0.1", -10, -10, True)
    assert server_addr("10.77.0.1:0") == Address("ipv4", "10.77.0.1", 0, 0)
    assert server_addr("api.internal:6443") == Address("ipv4", "api.internal", 6443, 6443)
    assert server_addr("10.77.0.1:80-90") is None
    assert server_addr("10.77.0.1:65536") is None


@pytest.mark.parametrize(
    ("text", "dotted"),
    [("1", "0.0.0.1"), ("10.1", "10.0.0.1"), ("010.0.0.1", "8.0.0.1"), ("0x7f.1", "127.0.0.1"),
     ("256.0.0.1", None), ("1.2.3.4.5", None), ("a.b", None)],
)
def test_inet_aton(text: str, dotted: str | None) -> None:
    assert inet_aton(text) == dotted


# ------------------------------------------------------------ conditions


def test_conditions() -> None:
    cond, err = parse_condition(["if", "a", "!b", "||", "{", "src", "10.77.0.1", "}"])
    assert err is None and cond is not None
    assert cond.negate is False
    assert cond.terms == (("a", "!b"), ("{ src 10.77.0.1 }",))
    cond, _ = parse_condition(["unless", "a", "or", "b"])
    assert cond is not None and cond.negate and cond.terms == (("a",), ("b",))
    assert parse_condition(["if", "{", "src"])[0] is None
    assert parse_condition(["if", "a", "||"])[0] is None
    bare, _ = parse_condition(["if"])
    assert bare is not None and bare.terms == ((),)  # haproxy: a bare 'if' always matches


# --------------------------------------------------------- inheritance


def test_defaults_inheritance_and_default_server() -> None:
    cfg, diags = parse_text(
        TIMEOUTS
        + """\
    mode http
    option redispatch
    retries 5
    default-server inter 3s fall 5
    balance leastconn
frontend f
    bind 127.0.0.1:8080
    default_backend b
backend b
    default-server rise 4 weight 20
    server s1 127.0.0.1:81 check
    server s2 127.0.0.1:82 weight 7 inter 1s
    no option redispatch
"""
    )
    assert not diags.has_errors, diags
    f, b = cfg.proxies
    assert f.mode is Mode.HTTP and b.mode is Mode.HTTP
    assert b.timeout("server") == 30_000 and b.retries == 5
    assert b.balance.algorithm == "leastconn"
    assert b.options["redispatch"] is False
    s1, s2 = b.servers
    # own line, then the section's default-server, then the defaults', then haproxy's
    assert (s1.options.inter, s1.options.fall, s1.options.rise, s1.options.weight) == (3000, 5, 4, 20)
    assert (s2.options.inter, s2.options.weight, s2.options.check) == (1000, 7, False)
    assert s1.options.check is True and s1.options.slowstart == 0


def test_named_defaults_and_from() -> None:
    cfg, diags = parse_text(
        """\
defaults base
    mode tcp
    timeout connect 1s
    timeout client 2s
    timeout server 3s
defaults web from base
    mode http
defaults
    timeout connect 9s
listen a from web
    bind 127.0.0.1:1
listen b
    bind 127.0.0.1:2
"""
    )
    assert not diags.has_errors, diags
    assert set(cfg.defaults) == {"base", "web", ""}
    a, b = cfg.proxies
    assert (a.mode, a.from_defaults, a.timeouts) == (
        Mode.HTTP, "web", {"connect": 1000, "client": 2000, "server": 3000})
    # a defaults section without 'from' starts afresh; b takes the last one
    assert (b.mode, b.from_defaults, b.timeouts) == (Mode.TCP, "", {"connect": 9000})


def test_log_format_options_exclude_each_other() -> None:
    cfg, _ = parse_text("defaults\n    option httplog\nlisten l\n    option tcplog\n")
    assert cfg.proxies[0].option("tcplog") and not cfg.proxies[0].option("httplog")


# ------------------------------------------------------------- content


def test_kube_example_model() -> None:
    cfg, diags = parse([str(CORPUS / "ok-kube-apiserver.cfg")], env={})
    assert not diags.has_errors, diags
    g = cfg.global_
    assert (g.maxconn, g.daemon, g.stats_timeout) == (4000, True, 30_000)
    sock = g.stats_sockets[0]
    assert (sock.address.host, sock.mode, sock.level, sock.expose_fd_listeners) == (
        "/run/haproxy-keeplb-test.sock", 0o660, "admin", True)
    fe = cfg.frontends[0]
    assert fe.binds[0].address == Address("any", "0.0.0.0", 6443, 6443)
    be = cfg.backend("kube-apiserver")
    assert be is not None and be.option("tcp-check")
    assert [s.name for s in be.servers] == ["api1", "api2", "api3"]
    o = be.servers[0].options
    assert (o.inter, o.downinter, o.rise, o.fall, o.slowstart, o.maxconn, o.maxqueue, o.weight) == (
        10_000, 5000, 2, 2, 60_000, 250, 256, 100)


def test_rules_and_services() -> None:
    cfg, diags = parse([str(CORPUS / "ok-prometheus.cfg")], env={})
    assert not diags.has_errors
    (rule,) = cfg.proxies[0].rules_of("http-request")
    assert (rule.action, rule.args) == ("use-service", ("prometheus-exporter",))
    assert rule.condition is not None and rule.condition.terms == (("{ path /metrics }",),)


def test_httpchk_and_stats_page() -> None:
    cfg, _ = parse([str(CORPUS / "ok-named-defaults.cfg")], env={})
    app = cfg.backend("app")
    assert app is not None
    assert app.option_args["httpchk"] == ("GET", "/healthz", "HTTP/1.1")
    assert [(r.action, r.args) for r in app.rules_of("http-check")] == [("expect", ("status", "200"))]
    cfg, _ = parse([str(CORPUS / "ok-stats-page.cfg")], env={})
    st = cfg.proxies[0].stats
    assert (st.enabled, st.uri, st.refresh, st.auth, st.realm, st.hide_version) == (
        True, "/stats", 10_000, (("admin", "secret"),), "HAProxy Statistics", True)
    assert st.admin is not None and st.admin.terms == (("LOCALHOST",),)


def test_bind_options_and_ranges() -> None:
    cfg, diags = parse([str(CORPUS / "ok-bind-options.cfg")], env={})
    assert not diags.has_errors
    binds = cfg.proxies[0].binds
    first = binds[0]
    assert (first.name, first.backlog, first.maxconn, first.accept_proxy) == ("first", 128, 1000, True)
    assert binds[1].v4v6 and binds[2].v6only and binds[3].transparent
    assert list(binds[3].address.ports()) == [9904, 9905, 9906]
    assert binds[4].interface == "lo"


def test_env_expansion_in_config() -> None:
    path = str(CORPUS / "ok-env-vars.cfg")
    cfg, _ = parse([path], env={})
    assert cfg.proxies[0].binds[0].address == Address("ipv4", "127.0.0.1", 9443, 9443)
    cfg, _ = parse([path], env={"KEEPLB_TEST_PORT": "7777", "KEEPLB_TEST_TAG": "t"})
    assert cfg.proxies[0].binds[0].address.port_low == 7777
    assert cfg.global_.log_tag == "t"


def test_directory_and_several_files(tmp_path: Path) -> None:
    (tmp_path / "b.cfg").write_text("backend b\n    server s 127.0.0.1:2\n")
    (tmp_path / "a.cfg").write_text(TIMEOUTS + "frontend f\n    bind 127.0.0.1:1\n    default_backend b\n")
    (tmp_path / "c.txt").write_text("garbage\n")
    cfg, diags = parse([str(tmp_path)], env={})
    assert not diags.has_errors, diags
    assert [Path(f).name for f in cfg.files] == ["a.cfg", "b.cfg"]
    cfg, diags = parse([str(tmp_path / "a.cfg")], env={})
    assert [d.message for d in diags.errors] == ["proxy 'f': unable to find required default_backend: 'b'"]


def test_missing_file_and_missing_final_newline(tmp_path: Path) -> None:
    _, diags = parse([str(tmp_path / "nope.cfg")])
    assert "No such file" in diags.errors[0].message
    path = tmp_path / "t.cfg"
    path.write_text("global\n    daemon")
    _, diags = parse([str(path)])
    assert "missing LF on last line" in diags.errors[0].message


# ------------------------------------------------------ diagnostics


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("global\n    deamon\n", "unknown keyword 'deamon' in 'global' section"),
        ("listen l\n    timout client 1s\n", "unknown keyword 'timout' in 'listen' section"),
        ("listen l\n    option tcp-chek\n", "unknown option 'tcp-chek'"),
        ("listen l\n    server s 127.0.0.1:1 chek\n", "'server l/s' : unknown keyword 'chek'"),
        ("listen l\n    bind :1 backlogg 3\n", "unknown keyword 'backlogg'"),
        ("listen l\n    balance round-robin\n", "balance only supports"),
    ],
)
def test_unknown_words_get_a_hint(text: str, message: str) -> None:
    (diag,) = parse_text(text)[1].errors
    assert message in diag.message
    assert diag.hint is not None and diag.hint.startswith("did you mean")


def test_diagnostic_format_names_file_line_column() -> None:
    _, diags = parse_text("listen l\n    timeout server 30x\n", file="haproxy.cfg")
    assert str(diags.errors[0]) == "haproxy.cfg:2:20: error: unexpected character 'x' in 'timeout server'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backend b\n    server s 127.0.0.1:1 weight 300\n", "weight is not within 0 and 256 (300)"),
        ("backend b\n    server s 127.0.0.1:1 rise 0\n", "'rise' has to be > 0"),
        ("backend b\n    server s 127.0.0.1:1 inter 0\n", "invalid value 0 for argument 'inter'"),
        ("backend b\n    server s 127.0.0.1:1 verify maybe\n", "'verify' expects"),
        ("backend b\n    server s 127.0.0.1 check\n", "has neither service port nor check port"),
        ("backend b\n    server s 127.0.0.1:1 agent-check\n", "does not have agent port"),
        ("backend b\n    server s1 127.0.0.1:1\n    server s1 127.0.0.1:2\n", "another server named 's1'"),
        ("backend b/c\n", "character '/' is not permitted in 'backend' name 'b/c'"),
        ("backend b\nbackend b\n", "has the same name as backend 'b'"),
        ("frontend f\n    server s 127.0.0.1:1\n", "has no backend capability"),
        ("defaults\n    bind :1\n", "'bind' not allowed in 'defaults' section"),
        ("defaults\n    acl a src 1.2.3.4\n", "not allowed in anonymous 'defaults' section"),
        ("listen l\n    acl a sorc 1.2.3.4\n", "unknown fetch method 'sorc'"),
        ("listen l\n    acl a src not-an-ip\n", "is not a valid IPv4 or IPv6 address"),
        ("listen l\n    use_backend l if nosuch\n", "no such ACL : 'nosuch'"),
        ("listen l\n    mode health\n", "'mode health' doesn't exist anymore"),
        ("listen l\n    no option tcplog\n", "negation/default is not supported"),
        ("listen l\n    tcp-check expect foo bar\n", "'tcp-check expect' only supports"),
        ("listen l\n    tcp-check send-binary 0g\n", "invalid hexadecimal string"),
        ("listen l\n    http-check expect status 2xx\n", "invalid character 'x'"),
        ("listen l\n    tcp-request content accept foo\n", "only accepts 'if' or 'unless'"),
        ("listen l\n    tcp-request connection bogus\n", "unknown action 'bogus'"),
        ("listen l\n    http-request use-service nope\n", "unknown service name"),
        ("listen l\n    option forwardfor bogus\n", "only supports optional values"),
        ("listen l\n    capture request header Host\n", "expects 'header' <header_name> 'len'"),
        ("listen l\n    no log x\n", "'no log' does not expect arguments"),
        ("backend b\n    server s 127.0.0.1:1 addr 127.0.0x.3\n", "'addr' : invalid address"),
        ("backend b\n    default_backend b\n", "loop detected for default_backend"),
        ("global\n    cpu-map 1 x\n", "is not a CPU range"),
        ("listen l\n    rate-limit sessions 1x\n",
         "'rate-limit sessions' : unexpected character 'x' in integer value '1x'"),
        ("listen l\n    rate-limit sessions\n", "'rate-limit sessions' expects expects an integer"),
        ("global\n    ssl-default-bind-options bogus\n", "unknown option 'bogus'"),
        ("global\n    tune.bufsize 1 2\n", "cannot handle unexpected argument '2'"),
        ("userlist u\n    user a secret\n", "'user' only supports"),
        ("resolvers r\n    timeout client 1s\n", "'timeout' expects 'retry' or 'resolve'"),
        ("listen l\n    default option splice-auto\n", "'default option' is refused"),
        ("listen l\n    http-request bogus\n", "unknown action 'bogus'"),
        ("listen l\n    http-request set-header A b c\n", "expects either 'if' or 'unless'"),
        ("global\n    nbthread 65\n", "'nbthread' value must be between 1 and 64 (was 65)"),
        ("global\n    stats socket /x level root\n", "'level' only supports"),
        ("global\n    log 127.0.0.1 local9\n", "unknown log facility 'local9'"),
        ("global\n    user keeplb-no-such-user\n", "cannot find user id"),
        ("frontend f from nodefs\n", "defaults section 'nodefs' not found"),
        ("listen l 127.0.0.1:80\n    server s 127.0.0.1:1\n", "'listen' or 'defaults' expected"),
        ("backend b from d x\n", "'backend' cannot handle unexpected argument 'x'"),
        ("maxconn 10\n", "out of section"),
        ("userlist\n", "'userlist' expects <name>"),
        ("resolvers dns\n    nameserver ns1 127.0.0.1\n", "missing port specification"),
    ],
)
def test_errors_haproxy_makes(text: str, message: str) -> None:
    errs = errors(text)
    assert any(message in e for e in errs), errs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backend b\n    option tcplog\n", "'option tcplog' directive is ignored in backends"),
        ("frontend f\n    bind :1\n    option httplog\n", "Falling back to 'option tcplog'"),
        ("frontend f\n    bind :1\n", "missing timeouts for frontend 'f'"),
        ("frontend f\n", "has no 'bind' directive"),
        ("frontend f\n    bind :1\n    balance roundrobin\n", "'balance' ignored because frontend 'f'"),
        ("backend b\n    maxconn 5\n", "'maxconn' ignored because backend 'b'"),
        ("peers p\n    peer a 127.0.0.1:1024\n", "section 'peers' is not supported by keeplb"),
        ("listen l\n    compression algo gzip\n", "keyword 'compression' is not supported by keeplb"),
        ("global\n    busy-polling\n", "keyword 'busy-polling' is not supported by keeplb"),
        ("listen l\n    balance uri\n", "balance algorithm 'uri' is not supported by keeplb"),
        ("listen l\n    bind :1 ssl-min-ver TLSv1.2\n", "bind option 'ssl-min-ver' is not supported"),
        ("backend b\n    server s 127.0.0.1:1 ws auto\n", "server option 'ws' is not supported"),
        ("listen l\n    option forwardfor\n", "keyword 'option forwardfor' is not supported"),
        ("frontend f 127.0.0.1:80\n", "please use the 'bind' keyword"),
        ("listen l\n    timeout queue 5sec\n", "unexpected character 'e' after the timer value"),
        ("defaults\n    option tcplog\n    option httplog\n",
         "'option httplog' overrides previous 'option tcplog' in 'defaults' section"),
        ("listen l\n    bind :1\n    stats enable\n", "'stats' statement ignored for proxy 'l'"),
        ("listen l\n    http-request deny\n", "'http-request' rules ignored for proxy 'l'"),
        ("backend b\n    tcp-check connect\n", "uses tcp-check rules without 'option tcp-check'"),
        ("backend b\n    cookie S insert\n", "cookie will be ignored for backend 'b'"),
        ("defaults d\nfrontend f from d\n    bind :1\nfrontend g\n    bind :2\n",
         "is explicitly referenced by another proxy and implicitly used here"),
    ],
)
def test_warnings(text: str, message: str) -> None:
    _, diags = parse_text(text)
    assert not diags.has_errors, diags
    assert any(message in d.message for d in diags.warnings), [str(d) for d in diags]


def test_ignored_keyword_is_still_checked() -> None:
    # haproxy warns that retries is ignored in a frontend, and still refuses the extra word
    errs = errors(TIMEOUTS + "frontend f\n    bind :1\n    retries 3 x\n")
    assert errs == ["'retries' cannot handle unexpected argument 'x'"]


def test_keeps_going_after_errors() -> None:
    errs = errors("global\n    deamon\n    nbthread 0\nlisten l\n    timeout client 1x\n")
    assert len(errs) == 3


# --------------------------------------------------- seed and example


@pytest.mark.skipif(not SEED.exists(), reason="the seed files are not on this machine")
def test_seed_fails_on_first_server_name() -> None:
    _, diags = parse([str(SEED)])
    first = diags.errors[0]
    assert first.span is not None and first.span.line == 32
    assert "character '后' is not permitted in server name '后端服务器1的主机名'" in first.message
    assert [e.span.line for e in diags.errors if e.span] == [32, 33, 34]


def test_example_passes_with_haproxys_warning() -> None:
    try:
        pwd.getpwnam("haproxy")
    except KeyError:
        pytest.skip("the example runs as user haproxy, which this machine lacks")
    cfg, diags = parse([str(EXAMPLE)])
    assert not diags.has_errors, [str(d) for d in diags]
    assert [(d.span.line if d.span else 0, d.message) for d in diags.warnings] == [
        (28, "backend 'kube-apiserver' : 'option tcplog' directive is ignored in backends")]
    assert [s.name for s in cfg.backends[0].servers] == ["api1", "api2", "api3"]


# ------------------------------------------------------------- corpus


CORPUS_FILES = sorted(CORPUS.glob("*.cfg"))


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS_FILES) >= 35
    assert sum(f.name.startswith("ok-") for f in CORPUS_FILES) >= 15
    assert sum(f.name.startswith("bad-") for f in CORPUS_FILES) >= 15


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_verdict_matches_its_name(path: Path) -> None:
    """ok-* files are valid for haproxy 2.6, bad-* are not (the oracle test checks
    that claim against the real haproxy)."""
    _, diags = parse([str(path)], env={})
    if path.name.startswith("ok-"):
        assert not diags.has_errors, [str(d) for d in diags.errors]
    else:
        assert diags.has_errors


# ----------------------------------------------------------- keywords


def test_keyword_table_covers_sections() -> None:
    rows = keyword_table()
    assert ("global", "daemon", "supported") in rows
    assert ("global", "cpu-map", "supported") in rows
    assert ("global", "busy-polling", "unsupported") in rows
    assert ("backend", "balance", "supported") in rows
    assert ("frontend", "balance", "supported") not in rows  # no backend capability
    assert ("listen", "option httpchk", "supported") in rows
    assert ("server", "slowstart", "supported") in rows
    assert ("bind", "ssl", "unsupported") in rows
    assert ("peers", "*", "unsupported") in rows
    assert {status for _, _, status in rows} == {"supported", "unsupported"}
    assert KEYWORDS["defaults"]["timeout connect"] == "supported"


def test_every_unsupported_proxy_keyword_warns() -> None:
    """Every keyword the table calls unsupported parses with the warning, never silently."""
    for kw, status in KEYWORDS["listen"].items():
        if status != "unsupported" or kw.startswith("option "):
            continue
        _, diags = parse_text(f"listen l\n    {kw}\n")
        assert any("is not supported by keeplb" in d.message for d in diags.warnings), kw


@pytest.mark.parametrize("kind", [ProxyKind.FRONTEND, ProxyKind.BACKEND, ProxyKind.LISTEN])
def test_supported_keywords_are_handled(kind: ProxyKind) -> None:
    for kw, status in KEYWORDS[kind.value].items():
        if status == "supported":
            _, diags = parse_text(f"{kind.value} p\n    {kw}\n")
            assert not any("not supported by keeplb" in d.message for d in diags), kw


# ------------------------------------------------------ tcp-request connection


def test_tcp_request_connection_rules_in_the_model() -> None:
    cfg, diags = parse_text(TIMEOUTS.replace("defaults", "defaults d") + """\
    acl blocked src 192.0.2.0/24
    tcp-request connection reject if blocked
frontend f from d
    bind 127.0.0.1:1
    acl trusted src 10.0.0.0/8
    tcp-request connection accept if trusted
    tcp-request connection reject unless { dst_port 1 }
    tcp-request connection track-sc0 src
    tcp-request connection reject
""")
    assert not diags.errors, [str(d) for d in diags]
    rules = cfg.proxies[0].tcp_request_connection
    assert [r.action for r in rules] == ["reject", "accept", "reject", "reject"]
    # the inherited rule runs first and keeps the ACLs of its defaults section
    assert rules[0].acls is not None and [a.name for a in rules[0].acls] == ["blocked"]
    assert all(r.acls is None for r in rules[1:])
    assert rules[1].condition is not None and rules[1].condition.terms == (("trusted",),)
    assert rules[2].condition is not None and rules[2].condition.negate
    assert rules[3].condition is None
    assert [d.message for d in diags.warnings] == [
        "'tcp-request connection track-sc0' is not supported by keeplb; the rule is ignored"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        # haproxy 2.6's warnings, word for word (checked with `haproxy -c`)
        ("reject if { req.len gt 0 }", "anonymous acl will never match in 'tcp-request "
         "connection' because it uses keyword 'req.len' which is incompatible with 'frontend "
         "tcp-request connection rule'"),
        ("reject if { src 1.2.3.4 } { hdr(host) x }", "uses keyword 'hdr' which is incompatible"),
        ("reject if web", "acl 'web' will never match in 'tcp-request connection' because it "
         "only involves keywords that are incompatible with 'frontend tcp-request connection "
         "rule'"),
        ("reject if mixed", "acl 'mixed' involves keyword 'path_beg' which is incompatible with "
         "'frontend tcp-request connection rule'"),
        ("accept if HTTP", "acl 'HTTP' will never match"),
        # what keeplb's layer-4 ACLs do not evaluate: the rule is left out
        ("reject if { src_is_local }", "fetch 'src_is_local' in a 'tcp-request connection' "
         "condition is not supported by keeplb; the rule is ignored"),
        ("accept if { src -M /etc/haproxy/allow.map }", "ACL flag '-M' in a 'tcp-request"),
        ("reject if { dst_port -m str 443 }", "match method '-m str' in a 'tcp-request"),
        ("reject if WAIT_END", "fetch 'wait_end'"),
        ("expect-proxy layer4 if { src 10.0.0.0/8 }",
         "'tcp-request connection expect-proxy' is not supported by keeplb"),
    ],
)
def test_tcp_request_connection_warnings(rule: str, message: str) -> None:
    text = TIMEOUTS + f"""\
frontend f
    bind 127.0.0.1:1
    acl web path_beg /api
    acl mixed src 10.0.0.0/8
    acl mixed path_beg /x
    tcp-request connection {rule}
"""
    cfg, diags = parse_text(text)
    assert not diags.errors, [str(d) for d in diags]
    assert [message in d.message for d in diags.warnings].count(True) == 1, [
        str(d) for d in diags.warnings]
    assert all(d.span is not None and d.span.line == 10 for d in diags.warnings)


def test_tcp_request_connection_on_layer4_fetches_is_quiet() -> None:
    _, diags = parse_text(TIMEOUTS + """\
frontend f
    bind 127.0.0.1:1
    acl local src 127.0.0.0/8 ::1
    tcp-request connection accept if local { dst 127.0.0.1 } { src_port 1:1023 }
    tcp-request connection reject if !LOCALHOST || { dst_port 80 443 }
    tcp-request connection reject if { dst_port gt 1024 } { src_port 1024: } { src_port le 9 }
    tcp-request connection reject if TRUE !FALSE { always_true }
""")
    assert not list(diags), [str(d) for d in diags]


def test_tcp_request_rules_out_of_order_warn_as_haproxy() -> None:
    _, diags = parse_text(TIMEOUTS + """\
frontend f
    bind 127.0.0.1:1
    tcp-request content accept if { src 1.2.3.4 }
    tcp-request session accept if { src 1.2.3.4 }
    tcp-request connection accept if { src 1.2.3.4 }
""")
    assert [(d.span.line if d.span else 0, d.message) for d in diags.warnings] == [
        (8, "keyword 'tcp-request session' is not supported by keeplb"),
        (8, "a 'tcp-request' rule placed after a 'tcp-request content' rule will still be "
            "processed before."),
        (9, "a 'tcp-request' rule placed after a 'tcp-request session' rule will still be "
            "processed before."),
    ]


def test_session_rules_are_checked_but_reported_not_supported() -> None:
    """The relay acts on `tcp-request connection` and `content` rules (and
    inspect-delay); a session rule is a warning, never a rule silently ignored."""
    cfg, diags = parse_text(TIMEOUTS + """frontend f
    bind 127.0.0.1:1
    tcp-request inspect-delay 5s
    tcp-request content reject if { src 10.0.0.0/8 }
    tcp-request session reject if { src 10.0.0.0/8 }
    tcp-request content bogus
""")
    assert [(d.span.line if d.span else 0, d.message) for d in diags.warnings] == [
        (9, "keyword 'tcp-request session' is not supported by keeplb"),
        (9, "a 'tcp-request' rule placed after a 'tcp-request content' rule will still be "
            "processed before."),
    ]
    assert any("unknown action 'bogus'" in d.message for d in diags.errors)  # still checked


def test_a_custom_log_format_is_supported() -> None:
    # keeplb logs `log-format` (keeplb/lb/logformat.py, tests/unit/lb/test_logformat.py)
    cfg, diags = parse_text(TIMEOUTS + """\
frontend f
    bind 127.0.0.1:1
    log stdout local0
    log-format "%ci:%cp %ft"
    default_backend b
backend b
    server s 127.0.0.1:2
""")
    assert not diags.warnings and not diags.errors
    assert cfg.proxies[0].log_format == "%ci:%cp %ft"


# Keywords that were listed as supported while nothing at run time read them: each is
# still checked as haproxy checks it, and reported as not supported (the audit of
# docs/keywords.md's supported column).
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("global\n    node lb1\n", "keyword 'node' is not supported by keeplb"),
        ("global\n    description the edge\n", "keyword 'description' is not supported by keeplb"),
        ("global\n    quiet\n", "keyword 'quiet' is not supported by keeplb"),
        ("global\n    zero-warning\n", "keyword 'zero-warning' is not supported by keeplb"),
        ("global\n    tune.bufsize 32768\n", "keyword 'tune.bufsize' is not supported by keeplb"),
        ("global\n    tune.pipesize 65536\n", "keyword 'tune.pipesize' is not supported"),
        ("global\n    tune.rcvbuf.client 65536\n", "keyword 'tune.rcvbuf.client' is not supported"),
        ("global\n    tune.rcvbuf.server 65536\n", "keyword 'tune.rcvbuf.server' is not supported"),
        ("global\n    tune.sndbuf.client 65536\n", "keyword 'tune.sndbuf.client' is not supported"),
        ("global\n    tune.sndbuf.server 65536\n", "keyword 'tune.sndbuf.server' is not supported"),
        ("global\n    stats maxconn 10\n", "keyword 'stats maxconn' is not supported by keeplb"),
        ("global\n    stats socket /tmp/klb.sock severity-output string\n",
         "bind option 'severity-output' is not supported by keeplb"),
        ("global\n    stats socket /tmp/klb.sock uid 0\n", "bind option 'uid' is not supported"),
        ("backend b\n    description the API servers\n",
         "keyword 'description' is not supported by keeplb"),
        ("backend b\n    id 42\n", "keyword 'id' is not supported by keeplb"),
        ("listen l\n    http-request deny if { src 10.0.0.0/8 }\n",
         "'http-request deny' is not supported by keeplb"),
        ("listen l\n    http-request return status 200\n",
         "'http-request return' is not supported by keeplb"),
        *[(f"listen l\n    option {name}\n", f"keyword 'option {name}' is not supported by keeplb")
          for name in ("abortonclose", "tcp-smart-accept", "tcp-smart-connect")],
        *[(f"listen l\n    bind 127.0.0.1:1 {opt}\n", f"bind option '{opt.split()[0]}' is not "
           "supported by keeplb")
          for opt in ("accept-proxy", "defer-accept", "interface lo", "maxconn 10", "mss 1400",
                      "nice 10", "process 1", "tfo", "thread 1", "transparent", "uid 0", "gid 0",
                      "severity-output string")],
        *[(f"backend b\n    server s 127.0.0.1:1 {opt}\n", f"server option '{opt.split()[0]}' is "
           "not supported by keeplb")
          for opt in ("agent-check agent-port 1", "agent-port 1", "agent-inter 5s",
                      "agent-addr 127.0.0.2", "agent-send hello", "no-agent-check",
                      "minconn 5", "send-proxy", "no-send-proxy",
                      "track t\n    server t 127.0.0.1:2 check")],
    ],
)
def test_keywords_keeplb_does_not_act_on_are_reported(text: str, message: str) -> None:
    cfg, diags = parse_text(text)
    assert not diags.has_errors, [str(d) for d in diags]
    assert [message in d.message for d in diags.warnings].count(True) == 1, [
        str(d) for d in diags]
    rows = keyword_table()
    kw = message.split("'")[1]
    section = text.split()[0] if "option '" not in message else (
        "bind" if message.startswith("bind") else "server")
    if kw.startswith("stats ") or kw.startswith("http-request "):
        return  # a word of a supported keyword
    assert (section, kw, "unsupported") in rows


def test_unix_socket_permissions_apply_to_stats_sockets_only() -> None:
    _, diags = parse_text("global\n    stats socket /tmp/klb.sock mode 600 user root group root\n"
                          "listen l\n    bind /tmp/klb-fe.sock mode 600 user root group root\n"
                          "    bind 127.0.0.1:1 mode 600\n")
    assert [(d.span.line if d.span else 0, d.message) for d in diags.warnings
            if "keeplb" in d.message] == [
        (4, f"bind option '{kw}' is not supported by keeplb on a frontend's UNIX socket")
        for kw in ("mode", "user", "group")]


def test_unsupported_global_keywords_are_still_checked() -> None:
    assert errors("global\n    quiet now\n") == ["'quiet' cannot handle unexpected argument 'now'"]
    assert errors("global\n    node\n") == ["'node' expects a name"]
    assert errors("global\n    tune.bufsize 0\n") == [
        "'tune.bufsize' expects a positive integer argument"]
    assert errors("global\n    stats maxconn 0\n") == [
        "'stats maxconn' : a positive value is expected"]


def test_setenv_and_the_others_change_the_environment_of_the_next_lines() -> None:
    """haproxy 2.6: 'The changes immediately take effect so that the next line in the
    configuration file sees the new value' (checked with `haproxy -c`)."""
    cfg, diags = parse_text("""\
global
    setenv KLB_PORT 18081
    presetenv KLB_HOST 127.0.0.1
    presetenv KLB_PORT 1
    setenv KLB_GONE x
    unsetenv KLB_GONE
.if defined(KLB_GONE)
    .alert "KLB_GONE is still set"
.endif
    log-tag "${KLB_HOST}"
""" + TIMEOUTS + """\
frontend f
    bind "${KLB_HOST}:${KLB_PORT}"
    default_backend b
backend b
    server s 127.0.0.1:2
""", env={"KLB_HOST": "127.0.0.2"})
    assert not diags.errors and not diags.warnings, [str(d) for d in diags]
    assert cfg.global_.log_tag == "127.0.0.2"  # presetenv keeps a set variable
    assert cfg.proxies[0].binds[0].address == Address("ipv4", "127.0.0.2", 18081, 18081)
    env = {"KLB_KEEP": "1", "KLB_DROP": "2"}
    cfg, diags = parse_text("global\n    resetenv KLB_KEEP\n    log-tag \"${KLB_KEEP}${KLB_DROP}\"\n",
                            env=env)
    assert cfg.global_.log_tag == "1" and not diags.has_errors, [str(d) for d in diags]
    assert env == {"KLB_KEEP": "1", "KLB_DROP": "2"}  # the caller's mapping is left alone


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ("frontend f from d\n    bind :1\nbackend b from d\n",
         "frontends and backends cannot inherit from the same defaults section if it defines "
         "TCP/HTTP rules (defaults section at haproxy.cfg:1)."),
        ("listen l from d\n", "a listen section cannot inherit from a defaults section defining "
         "TCP/HTTP rules."),
        ("defaults e from d\n", "a defaults section cannot inherit from a defaults section "
         "defining TCP/HTTP rules (defaults section at haproxy.cfg:1)."),
        ("backend b from d\n", "a backend section cannot inherit from a defaults section "
         "defining 'tcp-request connection' or 'tcp-request session' rules (defaults section "
         "at haproxy.cfg:1)."),
    ],
)
def test_defaults_with_tcp_rules_serve_one_side(users: str, message: str) -> None:
    text = "defaults d\n    tcp-request connection reject if { src 192.0.2.1 }\n" + users
    assert message in errors(text)


def test_defaults_with_tcp_rules_may_serve_several_frontends() -> None:
    text = ("defaults d\n    tcp-request connection reject if { src 192.0.2.1 }\n"
            "frontend f from d\n    bind :1\nfrontend g from d\n    bind :2\n")
    assert errors(text) == []


# ------------------------------------------------------------- use_backend


USE_BACKEND = TIMEOUTS + """\
frontend f
    mode tcp
    bind 127.0.0.1:1
    acl is_api path_beg /api
    acl admin dst_port 9000:9100
{rules}
    default_backend b
backend b
    mode tcp
    server s 127.0.0.1:2
"""


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        # haproxy 2.6 accepts each quietly (`haproxy -c`); keeplb's relay cannot
        # evaluate it as haproxy does, so it says it leaves the rule out
        ("use_backend b if is_api", "fetch 'path_beg' in a 'use_backend' condition is not "
         "supported by keeplb; the rule is ignored"),
        ("use_backend b if admin || { hdr(host) -i x }", "fetch 'hdr(host)' in a 'use_backend'"),
        ("use_backend b unless HTTP", "fetch 'req.proto_http' in a 'use_backend'"),
        ("use_backend b if { src -M /etc/haproxy/list.map }", "ACL flag '-M' in a 'use_backend'"),
        ("use_backend b if { dst_port -m str 443 }", "match method '-m str' in a 'use_backend'"),
        ("use_backend b_%[dst_port]", "dynamic backend name 'b_%[dst_port]' in 'use_backend' is "
         "not supported by keeplb; the rule is ignored"),
    ],
)
def test_use_backend_rules_keeplb_cannot_evaluate_warn(rule: str, message: str) -> None:
    _, diags = parse_text(USE_BACKEND.format(rules="    " + rule), file="lb.cfg")
    assert not diags.errors, [str(d) for d in diags]
    # one warning, located on the rule's line (file:line:col, compiler style)
    assert [message in d.message for d in diags.warnings] == [True], [str(d) for d in diags]
    assert str(diags.warnings[0]).startswith("lb.cfg:10:17: warning: ")


def test_use_backend_on_layer4_fetches_is_quiet_beside_a_layer7_acl() -> None:
    rules = """\
    use_backend b if { dst_port 8443 }
    use_backend b if admin !LOCALHOST || { src 10.0.0.0/8 }
    use_backend b if { dst_port gt 1024 } { src_port 1024: } { dst_port le 80 443 }
    use_backend b if { dst_port -m int 1-9 } TRUE
    use_backend b if"""
    _, diags = parse_text(USE_BACKEND.format(rules=rules))
    assert not list(diags), [str(d) for d in diags]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # haproxy 2.6's words (`haproxy -c`), without its final '.'
        ("acl p dst_port foo", "error detected while parsing ACL 'p' : 'foo' is not a number"),
        ("acl p src_port 2000:1000", "'2000:1000' is not a valid number range"),
        ("acl p dst_port gt 1k", "'1k' is neither a number nor a supported operator"),
        ("use_backend b if { dst_port 1:2:3 }", "'use_backend' : error detected while parsing "
         "anonymous ACL : '1:2:3' is not a valid number range"),
        ("tcp-request connection reject if { src_port lt x }",
         "'x' is neither a number nor a supported operator"),
    ],
)
def test_bad_port_patterns_are_errors_as_in_haproxy(text: str, message: str) -> None:
    errs = errors(USE_BACKEND.format(rules="    " + text))
    assert any(message in e for e in errs), errs


def test_only_use_backend_takes_a_dynamic_name() -> None:
    # haproxy 2.6: "Proxy 'f': unable to find required default_backend: 'b_%[dst_port]'."
    text = USE_BACKEND.replace("default_backend b", "default_backend b_%[dst_port]")
    assert errors(text.format(rules="")) == [
        "proxy 'f': unable to find required default_backend: 'b_%[dst_port]'"]
