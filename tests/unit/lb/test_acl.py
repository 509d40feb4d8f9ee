"""The relay's layer-4 ACLs (keeplb.lb.proxy compile_acl / compile_condition, pure)
as use_backend and `tcp-request connection` use them: only the ACLs a condition
names are compiled, and ports read as haproxy 2.6 reads integer patterns.

The port cases are what haproxy 2.6 routed on loopback (`use_backend` on
`dst_port` with each form below, one bind per port, `log stdout`)."""

from __future__ import annotations

import pytest

from keeplb.config.haproxy import condition_unsupported, int_patterns, parse_text
from keeplb.config.model import Acl, Condition
from keeplb.lb.proxy import compile_acl, compile_condition

SRC = ("10.1.2.3", 40000)


def dst(port: int) -> tuple[str, int]:
    return ("127.0.0.1", port)


def ports(values: str, candidates: range) -> list[int]:
    m = compile_acl("dst_port", values.split())
    assert m is not None
    return [p for p in candidates if m(SRC, dst(p))]


@pytest.mark.parametrize(("values", "want"), [
    ("18112", [18112]),
    ("gt 18112", [18113, 18114, 18115]),
    ("lt 18111", [18110]),
    ("ge 18114", [18114, 18115]),
    ("le 18111", [18110, 18111]),
    ("eq 18113", [18113]),
    ("18114:", [18114, 18115]),
    (":18111", [18110, 18111]),
    ("18111:18113", [18111, 18112, 18113]),
    ("18111-18112", [18111, 18112]),
    # an operator holds for the values after it, until the next one
    ("gt 18113 18110", [18111, 18112, 18113, 18114, 18115]),
    ("gt 18114 lt 18111", [18110, 18115]),
    ("18110 gt 18114", [18110, 18115]),
    # a range is a range whatever the operator
    ("lt 18112:18113", [18112, 18113]),
    ("", []),
    ("gt", []),
])
def test_port_patterns_as_haproxy_reads_them(values: str, want: list[int]) -> None:
    assert ports(values, range(18110, 18116)) == want


@pytest.mark.parametrize(("values", "error"), [
    ("foo", "'foo' is not a number"),
    ("+5", "'+5' is not a number"),
    ("0x10", "'0x10' is not a number"),
    ("2000:1000", "'2000:1000' is not a valid number range"),
    ("1:2:3", "'1:2:3' is not a valid number range"),
    ("-", "'-' is not a valid number range"),
    ("gt foo", "'foo' is neither a number nor a supported operator"),
])
def test_invalid_port_patterns_get_haproxys_error(values: str, error: str) -> None:
    # haproxy 2.6 (`haproxy -c`) refuses each of these with this text
    assert int_patterns(values.split())[1] == error


def test_odd_port_patterns_haproxy_accepts() -> None:
    # '-5' is ':5' (a leading separator), 'ge -1' too; 'gt 5.7' reads the integer part
    assert int_patterns(["-5"]) == ([(None, 5)], None)
    assert int_patterns(["ge", "-1"]) == ([(None, 1)], None)
    assert int_patterns(["gt", "5.7"]) == ([(6, None)], None)


def test_src_port_and_addresses() -> None:
    m = compile_acl("src_port", ["gt", "1023"])
    assert m is not None and m(SRC, dst(80)) and not m(("10.1.2.3", 1023), dst(80))
    m = compile_acl("dst", ["127.0.0.0/8", "::1"])
    assert m is not None and m(SRC, dst(1)) and not m(SRC, ("192.0.2.1", 1))
    assert compile_acl("path_beg", ["/api"]) is None


def frontend(body: str) -> tuple[list[Acl], list[Condition | None]]:
    cfg, diags = parse_text("defaults\n    mode tcp\nfrontend f\n    bind 127.0.0.1:1\n" + body
                            + "    default_backend b\nbackend b\n    server s 127.0.0.1:2\n")
    assert not diags.errors, [str(d) for d in diags]
    fe = cfg.proxies[0]
    return fe.acls, [u.condition for u in fe.use_backends]


def route(cond: Condition | None, acls: list[Acl], src: tuple[str, int],
          to: tuple[str, int]) -> bool | None:
    """Whether a use_backend condition sends this connection; None if not compiled."""
    compiled = compile_condition(cond, acls)
    if compiled is None:
        return None
    terms, negate = compiled
    return any(all(m(src, to) != n for n, m in conj) for conj in terms) != negate


def test_an_unrelated_layer7_acl_does_not_break_a_layer4_route() -> None:
    acls, conds = frontend("""\
    acl is_api path_beg /api
    acl api_host hdr(host) -i api.example
    acl admin dst_port 9000:9100
    use_backend b if { dst_port 8443 }
    use_backend b if admin !LOCALHOST
    use_backend b if is_api
    use_backend b if admin || api_host
""")
    assert route(conds[0], acls, SRC, dst(8443)) is True
    assert route(conds[0], acls, SRC, dst(443)) is False
    assert route(conds[1], acls, SRC, dst(9050)) is True
    assert route(conds[1], acls, ("127.0.0.1", 5), dst(9050)) is False
    # the rules that use a layer-7 ACL are not evaluable, and the check says why
    assert route(conds[2], acls, SRC, dst(1)) is None
    assert route(conds[3], acls, SRC, dst(9050)) is None
    assert [condition_unsupported(c, acls) if c else None for c in conds] == [
        None, None, "fetch 'path_beg'", "fetch 'hdr(host)'"]


@pytest.mark.parametrize("cond", [
    "if { dst_port 8443 }", "unless { dst_port gt 1024 }", "if TRUE", "if !FALSE",
    "if LOCALHOST", "if { src -m ip 10.0.0.0/8 }", "if { dst_port -m int 1:9 }",
    "if { dst_port -m str 8443 }", "if { src -M /etc/haproxy/list.map }", "if HTTP",
    "if { path_beg /x } || { src 10.0.0.1 }", "if { src_is_local }", "if mixed",
    "if { always_true } !{ always_false }", "if !!LOCALHOST", "if",
])
def test_compiled_exactly_when_the_check_finds_nothing_unsupported(cond: str) -> None:
    acls, conds = frontend(f"    acl mixed src 10.0.0.0/8\n    acl mixed path_beg /x\n"
                           f"    use_backend b {cond}\n")
    c = conds[0]
    assert c is not None
    assert (compile_condition(c, acls) is None) == (condition_unsupported(c, acls) is not None)


def test_negation_and_predefined_acls() -> None:
    acls, conds = frontend("    use_backend b if !!LOCALHOST\n    use_backend b unless LOCALHOST"
                           "\n    use_backend b if !{ dst_port 1:1023 } TRUE\n")
    local = ("127.0.0.1", 40000)
    assert route(conds[0], acls, local, dst(1)) is True  # each '!' negates
    assert route(conds[0], acls, SRC, dst(1)) is False
    assert route(conds[1], acls, SRC, dst(1)) is True
    assert route(conds[2], acls, SRC, dst(8443)) is True
    assert route(conds[2], acls, SRC, dst(443)) is False
    assert route(None, acls, SRC, dst(1)) is True  # no condition
