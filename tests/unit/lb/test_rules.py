"""`tcp-request connection` rules (keeplb.lb.rules, pure): order, if/unless,
named, anonymous and predefined ACLs, rules from a defaults section, and
haproxy's treatment of fetches it cannot evaluate when a connection is accepted."""

from __future__ import annotations

from keeplb.config.haproxy import CONNECTION_FETCHES, L4_CRITERIA, SAMPLE_FETCHES, parse_text
from keeplb.config.model import Proxy
from keeplb.lb.proxy import compile_acl, compile_condition
from keeplb.lb.rules import ConnectionRules, address, compile_rules

HEAD = """\
defaults d
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""
DST = ("127.0.0.1", 8443)


def frontend(rules: str, defaults: str = "") -> Proxy:
    cfg, diags = parse_text(HEAD + defaults + "frontend f from d\n    bind 127.0.0.1:8443\n"
                            + rules)
    assert not diags.errors, [str(d) for d in diags]
    return cfg.proxies[0]


def compiled(rules: str, defaults: str = "") -> ConnectionRules:
    out = compile_rules(frontend(rules, defaults), compile_condition)
    assert out is not None
    return out


def accepts(rules: ConnectionRules, src: str, dst: tuple[str, int] = DST) -> bool:
    return rules.decide((src, 40000), dst)


def test_no_rule_compiles_to_none() -> None:
    assert compile_rules(frontend(""), compile_condition) is None
    # only rules keeplb does not apply: none either, accepted() tests one attribute
    assert compile_rules(frontend("    tcp-request connection track-sc0 src\n"
                                  "    tcp-request connection reject if { src_is_local }\n"),
                         compile_condition) is None


def test_first_matching_rule_decides_and_none_accepts() -> None:
    rules = compiled("""\
    tcp-request connection accept if { src 127.0.0.3 }
    tcp-request connection reject if { src 127.0.0.0/8 }
""")
    assert accepts(rules, "127.0.0.3")
    assert not accepts(rules, "127.0.0.1")
    assert not accepts(rules, "127.0.0.2")
    assert accepts(rules, "10.0.0.1")  # no rule matches: accept


def test_unless_and_unconditional() -> None:
    rules = compiled("    tcp-request connection reject unless { src 10.0.0.0/8 }\n")
    assert accepts(rules, "10.1.2.3") and not accepts(rules, "192.0.2.1")
    rules = compiled("    tcp-request connection accept if { src 10.0.0.0/8 }\n"
                     "    tcp-request connection reject\n")
    assert accepts(rules, "10.1.2.3") and not accepts(rules, "192.0.2.1")


def test_named_acls_are_ored_and_and_or_combine() -> None:
    rules = compiled("""\
    acl trusted src 10.0.0.0/8
    acl trusted src 192.0.2.7
    acl admin dst_port 9000:9100
    tcp-request connection reject if admin !trusted || { src 198.51.100.0/24 }
""")
    assert accepts(rules, "192.0.2.7", ("127.0.0.1", 9050))
    assert accepts(rules, "10.9.9.9", ("127.0.0.1", 9050))
    assert not accepts(rules, "192.0.2.8", ("127.0.0.1", 9050))
    assert accepts(rules, "192.0.2.8", DST)
    assert not accepts(rules, "198.51.100.1", DST)


def test_predefined_acls() -> None:
    rules = compiled("    tcp-request connection reject if !LOCALHOST\n")
    assert accepts(rules, "127.0.0.2") and accepts(rules, "::1")
    assert not accepts(rules, "10.0.0.1")
    assert accepts(rules, "::ffff:127.0.0.1")  # v4-mapped, as on a dual-stack bind


def test_fetches_not_available_at_accept_never_match_as_in_haproxy() -> None:
    # haproxy warns, then evaluates them as false: 'unless' therefore rejects all
    assert not accepts(compiled("    tcp-request connection reject unless { req.len gt 0 }\n"),
                       "127.0.0.1")
    assert accepts(compiled("    tcp-request connection reject if { req.len gt 0 }\n"),
                   "127.0.0.1")
    rules = compiled("""\
    acl mixed src 10.0.0.0/8
    acl mixed path_beg /x
    tcp-request connection reject if mixed || HTTP
""")
    assert not accepts(rules, "10.0.0.1") and accepts(rules, "192.0.2.1")


def test_rules_keeplb_cannot_evaluate_are_left_out() -> None:
    rules = compiled("""\
    tcp-request connection reject if { src -M /etc/haproxy/deny.map }
    tcp-request connection reject if { dst_port -m str 1024 }
    tcp-request connection expect-proxy layer4 if { src 10.0.0.0/8 }
    tcp-request connection reject if { src 192.0.2.0/24 }
""")
    assert len(rules.rules) == 1
    assert accepts(rules, "10.0.0.1") and not accepts(rules, "192.0.2.1")


def test_defaults_rules_run_first_with_their_own_acls() -> None:
    rules = compiled(
        "    acl blocked src 127.0.0.9\n"  # not the defaults' 'blocked'
        "    tcp-request connection accept if { src 127.0.0.2 }\n",
        defaults="    acl blocked src 127.0.0.2\n"
                 "    tcp-request connection reject if blocked\n")
    assert not accepts(rules, "127.0.0.2")
    assert accepts(rules, "127.0.0.9")


def test_address_of_socket_addresses() -> None:
    assert address(("127.0.0.1", 5), ("", 0)) == ("127.0.0.1", 5)
    assert address(("::1", 5, 0, 0), ("", 0)) == ("::1", 5)
    assert address("", ("unix", 0)) == ("unix", 0)
    assert address(None, ("", 0)) == ("", 0)


def test_l4_criteria_are_what_compile_acl_evaluates() -> None:
    """The config check's list and the relay's ACLs agree on every fetch."""
    assert {f for f in SAMPLE_FETCHES if compile_acl(f, ["1"]) is not None} == L4_CRITERIA


def test_connection_fetches_are_known_fetches() -> None:
    assert CONNECTION_FETCHES <= SAMPLE_FETCHES
    assert L4_CRITERIA <= CONNECTION_FETCHES
