"""`tcp-request content` rules and the use_backend rules after them (keeplb.lb.rules),
haproxy 2.6's three-valued evaluation: a fetch that cannot answer yet waits
until the inspection is final, then counts as false."""

from __future__ import annotations

import contextlib
import ssl

import pytest

from keeplb.config.haproxy import parse_text
from keeplb.config.model import Proxy
from keeplb.lb.proxy import _compile_expr
from keeplb.lb.rules import ContentRules, compile_content_rules

SRC, DST = ("127.0.0.1", 40000), ("127.0.0.1", 443)


def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


HELLO = client_hello("api.example")


def frontend(body: str, defaults: str = "") -> tuple[Proxy, list[str]]:
    cfg, diags = parse_text(f"""\
defaults{' d' if defaults else ''}
    mode tcp
    timeout connect 1s
    timeout client 1s
    timeout server 1s
{defaults}
frontend f
    bind 127.0.0.1:8443
{body}
    default_backend other
defaults
    mode tcp
    timeout connect 1s
    timeout client 1s
    timeout server 1s
backend api
    server a 127.0.0.1:1
backend other
    server o 127.0.0.1:2
""")
    assert not diags.has_errors, [str(d) for d in diags]
    fe = next(p for p in cfg.proxies if p.name == "f")
    return fe, [d.message for d in diags.warnings]


def rules_of(body: str, defaults: str = "") -> ContentRules:
    fe, warnings = frontend(body, defaults)
    assert not warnings, warnings
    got = compile_content_rules(fe, _compile_expr, ["api", "other"])
    assert got is not None
    return got


def test_waits_for_a_hello_then_accepts() -> None:
    r = rules_of("    tcp-request inspect-delay 5s\n"
                 "    tcp-request content accept if { req_ssl_hello_type 1 }\n"
                 "    tcp-request content reject")
    assert r.inspect_delay == 5.0
    assert r.decide(SRC, DST, b"", False) is None  # may change: wait
    assert r.decide(SRC, DST, HELLO[:20], False) is None
    assert r.decide(SRC, DST, HELLO, False) is True
    # the delay expired: what cannot answer is false, the next rule rejects
    assert r.decide(SRC, DST, b"", True) is False
    assert r.decide(SRC, DST, b"hello\n", False) is False  # not TLS: no wait


@pytest.mark.parametrize("rule, data, final, want", [
    # unless: a MISS stays a MISS (wait), final and false rejects
    ("reject unless { req.len gt 0 }", b"", False, None),
    ("reject unless { req.len gt 0 }", b"", True, False),
    ("reject unless { req.len gt 0 }", b"x", False, True),
    # '!' keeps MISS
    ("accept if !{ req.ssl_sni -m found }", b"", False, None),
    # an AND whose layer-4 term fails does not wait
    ("reject if { src 10.0.0.0/8 } { req.len gt 0 }", b"", False, True),
    # an OR with a passing term does not wait
    ("reject if { src 127.0.0.0/8 } || { req.len gt 0 }", b"", False, False),
    # req.len lt: passes before it could change
    ("reject if { req.len lt 4 }", b"ab", False, False),
    ("reject if { req.len lt 4 }", b"abcd", False, None),
    ("reject if { req.len lt 4 }", b"abcd", True, True),
    ("reject if { req.payload(0,4) -m bin 47455420 }", b"GE", False, None),
    ("reject if { req.payload(0,4) -m bin 47455420 }", b"GET /", False, False),
    ("reject if { req.payload(0,4) -m bin 47455420 }", b"PUT /", False, True),
    ("reject if { req.ssl_sni -m sub pi.ex }", HELLO, False, False),
    ("reject if { req.ssl_sni -m reg ^API\\. -i }", HELLO, False, True),  # -i after: a value
    ("reject if { req.ssl_sni -i -m reg ^API\\. }", HELLO, False, False),
    ("reject if { req.ssl_sni -m beg api. }", HELLO, False, False),
    ("reject if { req.ssl_sni api.example }", HELLO, False, False),
    ("reject if { req.ssl_sni API.example }", HELLO, False, True),
])
def test_three_valued_conditions(rule: str, data: bytes, final: bool, want: bool | None) -> None:
    r = rules_of(f"    tcp-request inspect-delay 1s\n    tcp-request content {rule}")
    assert r.decide(SRC, DST, data, final) is want


def test_named_acls_are_ored() -> None:
    r = rules_of("    acl tls req.ssl_hello_type 1\n"
                 "    acl tls req.len gt 1000\n"
                 "    tcp-request content reject if tls")
    assert r.decide(SRC, DST, HELLO, False) is False
    assert r.decide(SRC, DST, b"x" * 1001, False) is False
    assert r.decide(SRC, DST, b"x", False) is None  # req.len may still grow


def test_use_backend_after_the_rules_on_the_same_data() -> None:
    r = rules_of("    tcp-request inspect-delay 1s\n"
                 "    tcp-request content accept if { req_ssl_hello_type 1 }\n"
                 "    use_backend api if { req.ssl_sni -i API.EXAMPLE }\n"
                 "    use_backend other if { dst_port 443 }")
    assert r.route(SRC, DST, HELLO) == "api"
    assert r.route(SRC, DST, client_hello("www.example")) == "other"
    assert r.route(SRC, ("127.0.0.1", 80), b"") is None  # default_backend


def test_defaults_rules_run_first() -> None:
    r = rules_of("    tcp-request content accept",
                 defaults="    tcp-request content reject if { req.len gt 3 }")
    assert r.decide(SRC, DST, b"abcd", True) is False
    assert r.decide(SRC, DST, b"ab", True) is True


def test_no_content_rule_no_content_path() -> None:
    fe, _ = frontend("    tcp-request inspect-delay 1s\n"
                     "    use_backend api if { src 127.0.0.1 }")
    assert compile_content_rules(fe, _compile_expr, ["api", "other"]) is None


@pytest.mark.parametrize("body, warning", [
    ("    tcp-request content reject if { req.hdr(host) -m found }", "the rule is ignored"),
    ("    tcp-request content reject if { req.ssl_sni -M /nonexistent }", "the rule is ignored"),
    ("    tcp-request content set-var(txn.x) int(1)", "is not supported by keeplb"),
    # without content rules, use_backend runs at once on no data: still not supported
    ("    use_backend api if { req.ssl_sni api.example }", "is not supported by keeplb"),
])
def test_what_keeplb_does_not_apply_is_warned(body: str, warning: str) -> None:
    fe, warnings = frontend(body)
    assert any(warning in w for w in warnings), warnings
    assert compile_content_rules(fe, _compile_expr, ["api", "other"]) is None


def test_backend_content_rules_stay_unsupported() -> None:
    cfg, diags = parse_text("""\
backend b
    mode tcp
    tcp-request inspect-delay 1s
    tcp-request content accept if { req.len gt 0 }
    server s 127.0.0.1:1
""")
    msgs = [d.message for d in diags.warnings]
    assert "keyword 'tcp-request content' is not supported by keeplb" in msgs
    assert "keyword 'tcp-request inspect-delay' is not supported by keeplb" in msgs
    assert cfg.proxies[0].tcp_request_content == []
