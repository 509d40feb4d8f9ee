"""keepalived.conf parser: lexer rules, the model, keepalived 2.2.7's checks, robustness."""

from __future__ import annotations

import ipaddress
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeplb.config.diagnostics import Diagnostic, Severity
from keeplb.config.keepalived import (
    EXIT_CONFIG_TEST,
    EXIT_CONFIG_TEST_SECURITY,
    EXIT_OK,
    KeepalivedDiagnostics,
    keyword_table,
    parse,
)
from keeplb.config.model import KeepalivedConfig, VrrpStateName

ROOT = Path(__file__).resolve().parents[3]
SEED = Path("/work/shared/seed/keepalived.conf")
CORPUS = ROOT / "tests" / "corpus" / "keepalived"
EXAMPLES = ROOT / "examples"
HAVE_ETH0 = os.path.exists("/sys/class/net/eth0")
needs_eth0 = pytest.mark.skipif(not HAVE_ETH0, reason="the corpus names interface eth0")


def write(tmp_path: Path, text: str, name: str = "keepalived.conf") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def check(
    tmp_path: Path, text: str, defines: tuple[str, ...] = ()
) -> tuple[KeepalivedConfig, KeepalivedDiagnostics]:
    return parse(write(tmp_path, text), defines, host_checks=False)


def messages(diags: list[Diagnostic], severity: Severity = Severity.ERROR) -> list[str]:
    return [d.message for d in diags if d.severity is severity]


def lines_of(diags: list[Diagnostic], needle: str) -> list[int]:
    return [d.span.line for d in diags if needle in d.message and d.span is not None]


INSTANCE = """
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        10.77.0.10/24
    }
%s
}
"""


def instance(extra: str = "") -> str:
    return INSTANCE % textwrap.indent(textwrap.dedent(extra), "    ")


# --------------------------------------------------------------------------
# the seed, as keepalived -t 2.2.7 sees it
# --------------------------------------------------------------------------


@pytest.mark.skipif(not SEED.exists(), reason="seed not present")
def test_seed_reproduces_each_keepalived_complaint_with_its_line() -> None:
    # keepalived -t -f seed: "(Line 3) Warning - empty notification_email block",
    # "(Line 6) vrrp_garp_interval '0' is invalid", "(Line 7) vrrp_gna_interval '0' is
    # invalid", "SECURITY VIOLATION - scripts are being executed but script_security
    # not enabled.", exit code 6.
    cfg, diags = parse(str(SEED), host_checks=False)
    errors = diags.errors
    assert lines_of(errors, "empty notification_email block") == [2]
    assert lines_of(errors, "vrrp_garp_interval '0' is invalid") == [6]
    assert lines_of(errors, "vrrp_gna_interval '0' is invalid") == [7]
    assert lines_of(errors, "SECURITY VIOLATION - scripts are being executed") == [11]
    assert len(errors) == 4
    assert diags.exit_code() == EXIT_CONFIG_TEST_SECURITY
    # keepalived still runs the file: the instance is fully modelled.
    (inst,) = cfg.instances
    assert inst.name == "haproxy-vip"
    assert inst.state is VrrpStateName.BACKUP
    assert (inst.virtual_router_id, inst.priority, inst.advert_int) == (60, 100, 1.0)
    assert (inst.auth_type, inst.auth_pass) == ("PASS", "1111")
    assert inst.unicast_src_ip == ipaddress.ip_address("172.16.0.2")
    assert inst.unicast_peers == [ipaddress.ip_address("172.16.0.3")]
    assert [str(v.address) for v in inst.virtual_ipaddresses] == ["172.16.0.10/24"]
    assert [t.name for t in inst.track_scripts] == ["chk_haproxy"]
    assert cfg.scripts["chk_haproxy"].script == "killall -0 haproxy"
    assert cfg.scripts["chk_haproxy"].weight == 2
    assert cfg.global_defs.router_id == "LVS_DEVEL"
    assert cfg.global_defs.vrrp_skip_check_adv_addr is True
    assert cfg.global_defs.vrrp_garp_interval == 0.0


def test_diagnostics_print_file_line_col(tmp_path: Path) -> None:
    path = write(tmp_path, instance("virtual_routerid 5"))
    _, diags = parse(path, host_checks=False)
    (err,) = diags.errors
    assert str(err).startswith(f"{path}:10:5: error: unknown keyword 'virtual_routerid'")
    assert err.hint == "did you mean 'virtual_router_id'?"


@needs_eth0
@pytest.mark.parametrize("name", ["keepalived.conf", "keepalived-peer.conf"])
def test_examples_pass(name: str) -> None:
    cfg, diags = parse(str(EXAMPLES / name))
    assert not diags.has_errors, [str(d) for d in diags]
    assert diags.exit_code() == EXIT_OK
    (inst,) = cfg.instances
    assert inst.virtual_ipaddresses[0].address == ipaddress.ip_interface("10.77.0.10/24")
    assert all(p in ipaddress.ip_network("10.77.0.0/24") for p in inst.unicast_peers)


# --------------------------------------------------------------------------
# lexer
# --------------------------------------------------------------------------


def test_definitions_substitute_braced_and_whole_words(tmp_path: Path) -> None:
    cfg, diags = check(
        tmp_path,
        """
        $IF=eth0
        $VIP=10.77.0.60
        $PFX=/24
        vrrp_instance VI_1 {
            interface $IF
            virtual_router_id 33
            virtual_ipaddress {
                ${VIP}/24
                10.77.0.61$PFX
            }
        }
        """,
    )
    assert not diags.has_errors, [str(d) for d in diags]
    (inst,) = cfg.instances
    assert inst.interface == "eth0"
    assert [str(v.address) for v in inst.virtual_ipaddresses] == ["10.77.0.60/24", "10.77.0.61/24"]


def test_dollar_name_runs_to_the_next_blank_like_keepalived(tmp_path: Path) -> None:
    # keepalived looks up 'VIP/24' here, finds nothing and keeps the text.
    cfg, diags = check(
        tmp_path, "$VIP=10.77.0.60\n" + INSTANCE.replace("10.77.0.10/24", "$VIP/24") % ""
    )
    assert lines_of(diags.errors, "invalid IP address '$VIP/24'") == [9]


@pytest.mark.parametrize(
    ("defines", "priority"), [((), 100), (("lb1",), 150), (("lb2", "lb1"), 150)]
)
def test_conditional_lines_follow_config_ids(
    tmp_path: Path, defines: tuple[str, ...], priority: int
) -> None:
    text = instance("@lb1 priority 150\n@^lb1 priority 100\n@lb3 nonsense keyword")
    cfg, diags = check(tmp_path, text, defines)
    assert not diags.has_errors, [str(d) for d in diags]
    assert cfg.instances[0].priority == priority


def test_comments_quotes_and_one_line_blocks(tmp_path: Path) -> None:
    cfg, diags = check(
        tmp_path,
        """
        global_defs { router_id "my router" }  # trailing comment
        ! a bang comment
        vrrp_instance VI_1 { interface eth0
            virtual_router_id 36 ! comment after a value
            priority 99#comment glued to the value
            notify_master "/bin/echo # not a comment"
            virtual_ipaddress { 10.77.0.64/24 }
        }
        """,
    )
    assert messages(diags) == [messages(diags)[0]]  # only the script security error
    assert "SECURITY VIOLATION" in messages(diags)[0]
    assert cfg.global_defs.router_id == "my router"
    inst = cfg.instances[0]
    assert (inst.virtual_router_id, inst.priority) == (36, 99)
    assert inst.notify_master == "/bin/echo # not a comment"


def test_brace_on_the_next_line(tmp_path: Path) -> None:
    cfg, diags = check(
        tmp_path,
        "vrrp_instance VI_1\n{\n interface eth0\n virtual_router_id 9\n"
        " virtual_ipaddress\n {\n 10.77.0.1\n }\n}\n",
    )
    assert not diags.has_errors
    assert cfg.instances[0].virtual_ipaddresses[0].address.network.prefixlen == 32


def test_missing_brace_is_reported_at_the_opening_brace(tmp_path: Path) -> None:
    _, diags = check(tmp_path, instance("virtual_routes {\n10.77.3.0/24 via 10.77.0.254"))
    # The instance's own '}' closes virtual_routes, so the instance is left open.
    assert lines_of(diags.errors, "missing '}'") == [2]


def test_extra_brace_and_stray_brace(tmp_path: Path) -> None:
    _, diags = check(tmp_path, instance() + "}\n{\n}\n")
    assert lines_of(diags.errors, "extra '}'") == [12]
    assert lines_of(diags.errors, "unexpected '{'") == [13]


def test_unterminated_quote(tmp_path: Path) -> None:
    _, diags = check(tmp_path, instance('notify_master "/bin/true'))
    assert lines_of(diags.errors, "unterminated quote") == [10]


def test_include_relative_glob_loop_and_missing(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    write(tmp_path, instance(), "conf.d/10-vi.conf")
    write(tmp_path, "include ../main.conf\n", "conf.d/20-loop.conf")
    main = write(
        tmp_path,
        "include conf.d/*.conf\ninclude conf.d/none-*.conf\ninclude missing.conf\n",
        "main.conf",
    )
    cfg, diags = parse(main, host_checks=False)
    assert [i.name for i in cfg.instances] == ["VI_1"]
    assert not diags.has_errors
    warnings = messages(diags, Severity.WARNING)
    assert any("include loop" in w and "main.conf" in w for w in warnings)
    assert any("missing.conf" in w for w in warnings)
    assert [os.path.basename(f) for f in cfg.files] == ["main.conf", "10-vi.conf", "20-loop.conf"]
    loop = next(d for d in diags if "include loop" in d.message)
    assert loop.span is not None and loop.span.file.endswith("20-loop.conf") and loop.span.line == 1


def test_missing_main_file_is_fatal(tmp_path: Path) -> None:
    cfg, diags = parse(str(tmp_path / "nope.conf"))
    assert diags.has_errors and diags.exit_code() == 4
    assert cfg.instances == []


def test_binary_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "bin.conf"
    path.write_bytes(b"\x00\xff\xfe garbage")
    _, diags = parse(str(path))
    assert any("NUL" in m for m in messages(diags))


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------


def test_every_instance_keyword_is_modelled(tmp_path: Path) -> None:
    cfg, diags = check(
        tmp_path,
        """
        global_defs {
            enable_script_security
            script_user root
            vrrp_version 3
            vrrp_garp_master_delay 2
            vrrp_garp_interval 0.001
            vrrp_mcast_group4 224.0.0.19
        }
        vrrp_script chk {
            script "/bin/true"
            interval 3
            weight -20 reverse
            rise 2
            fall 3
        }
        vrrp_script chk2 {
            script "/bin/true"
            timeout 4
            init_fail
            user nobody nogroup
        }
        track_file flag {
            file /tmp/flag
            weight -5
            init_file 3 overwrite
        }
        vrrp_instance VI_ALL {
            state BACKUP
            interface eth0
            virtual_router_id 200
            priority 250
            advert_int 0.3
            version 3
            preempt_delay 10
            unicast_src_ip 10.77.0.2
            unicast_peer {
                10.77.0.3
                10.77.0.4
            }
            mcast_src_ip 10.77.0.2
            virtual_ipaddress {
                10.77.0.10/24 brd 10.77.0.255 dev eth0 scope global label eth0:1
                10.77.0.11 no_track
            }
            virtual_ipaddress_excluded {
                fd00:77::10/64
            }
            virtual_routes {
                10.77.5.0/24 via 10.77.0.254 dev eth0
            }
            track_script {
                chk weight 10 reverse
                chk2
            }
            track_interface {
                eth1 weight -30
            }
            track_file {
                flag
            }
            track_lb api-servers ingress
            notify /bin/true
            notify_master "/bin/true master"
            notify_backup /bin/true
            notify_fault /bin/true
            notify_stop /bin/true
            garp_master_delay 3
            garp_master_repeat 4
            garp_master_refresh 30
            garp_master_refresh_repeat 2
            dont_track_primary
            no_accept
            strict_mode off
            smtp_alert
            debug 2
        }
        """,
    )
    assert not diags.has_errors, [str(d) for d in diags]
    g = cfg.global_defs
    assert (g.vrrp_version, g.vrrp_garp_master_delay, g.vrrp_garp_interval) == (3, 2.0, 0.001)
    assert g.vrrp_mcast_group4 == "224.0.0.19"
    assert g.enable_script_security and g.script_user == "root"
    chk = cfg.scripts["chk"]
    assert (chk.interval, chk.weight, chk.weight_reverse, chk.rise, chk.fall) == (
        3.0,
        -20,
        True,
        2,
        3,
    )
    chk2 = cfg.scripts["chk2"]
    assert (chk2.timeout, chk2.init_fail, chk2.user, chk2.group) == (4.0, True, "nobody", "nogroup")
    assert cfg.track_files["flag"].init_file == 3 and cfg.track_files["flag"].init_file_overwrite
    (inst,) = cfg.instances
    assert inst.state is VrrpStateName.BACKUP
    assert (inst.virtual_router_id, inst.priority, inst.advert_int, inst.version) == (
        200,
        250,
        0.3,
        3,
    )
    assert inst.preempt_delay == 10.0
    assert inst.unicast_peers == [
        ipaddress.ip_address("10.77.0.3"),
        ipaddress.ip_address("10.77.0.4"),
    ]
    assert inst.mcast_src_ip == ipaddress.ip_address("10.77.0.2")
    vip, vip2 = inst.virtual_ipaddresses
    assert (vip.brd, vip.dev, vip.scope, vip.label, vip.no_track) == (
        "10.77.0.255",
        "eth0",
        "global",
        "eth0:1",
        False,
    )
    assert vip2.no_track and vip2.address == ipaddress.ip_interface("10.77.0.11/32")
    assert inst.virtual_ipaddresses_excluded[0].address.version == 6
    assert inst.virtual_routes[0].words == ("10.77.5.0/24", "via", "10.77.0.254", "dev", "eth0")
    assert [(t.name, t.weight, t.reverse) for t in inst.track_scripts] == [
        ("chk", 10, True),
        ("chk2", None, False),
    ]
    assert [(t.name, t.weight) for t in inst.track_interfaces] == [("eth1", -30)]
    assert [t.name for t in inst.track_files] == ["flag"]
    assert inst.track_lb == ["api-servers", "ingress"]
    assert inst.notify_master == "/bin/true master"
    assert (inst.notify, inst.notify_backup, inst.notify_fault, inst.notify_stop) == (
        "/bin/true",
    ) * 4
    assert (inst.garp_master_delay, inst.garp_master_repeat) == (3.0, 4)
    assert (inst.garp_master_refresh, inst.garp_master_refresh_repeat) == (30.0, 2)
    assert inst.dont_track_primary and inst.accept is False and inst.strict_mode is False
    assert inst.smtp_alert and inst.debug == 2
    assert inst.family == 4


@pytest.mark.parametrize(("line", "expected"), [("track_lb", None), ("track_lb off", [])])
def test_track_lb_forms(tmp_path: Path, line: str, expected: list[str] | None) -> None:
    cfg, diags = check(tmp_path, instance(line))
    assert not diags.has_errors
    assert cfg.instances[0].track_lb == expected


def test_sync_group_and_static_blocks(tmp_path: Path) -> None:
    cfg, diags = check(
        tmp_path,
        instance()
        + instance().replace("VI_1", "VI_2").replace("51", "52")
        + """
vrrp_sync_group G {
    group {
        VI_1
        VI_2
    }
    notify_master /bin/true
}
static_ipaddress {
    10.77.9.1/24 dev eth0
}
static_routes {
    10.77.8.0/24 via 10.77.9.254
}
global_defs {
    enable_script_security
    script_user root
}
""",
    )
    assert not diags.has_errors, [str(d) for d in diags]
    assert cfg.sync_groups[0].group == ["VI_1", "VI_2"]
    assert cfg.static_ipaddresses[0].dev == "eth0"
    assert cfg.static_routes[0].words[0] == "10.77.8.0/24"


def test_ipv6_instance_becomes_version_3(tmp_path: Path) -> None:
    cfg, diags = check(tmp_path, instance().replace("10.77.0.10/24", "fd00:77::10/64"))
    assert not diags.has_errors
    assert cfg.instances[0].family == 6 and cfg.instances[0].version == 3


# --------------------------------------------------------------------------
# keepalived 2.2.7's checks, in keeplb's words
# --------------------------------------------------------------------------

CHECKS = [
    ("virtual_router_id 0", "virtual_router_id '0' is not valid: it must be between 1 and 255", 10),
    ("virtual_router_id 256", "must be between 1 and 255", 10),
    ("priority 300", "priority '300' is not valid", 10),
    ("priority 0", "priority '0' is not valid", 10),
    ("priority high", "priority 'high' is not valid", 10),
    ("advert_int 0", "advert_int '0' is not valid", 10),
    ("advert_int 1.5", "VRRPv2 advertisement interval 1.5s must be an integer", 10),
    ("version 4", "version: number '4' outside range [2, 3]", 10),
    ("state MASTER\nnopreempt", "nopreempt will not work with initial state MASTER", 2),
    ("state UP", "state 'UP' is not MASTER or BACKUP", 10),
    ("authentication {\nauth_type PASS\nauth_pass 123456789\n}", "truncated to '12345678'", 12),
    (
        "version 3\nauthentication {\nauth_type PASS\nauth_pass 1\n}",
        "does not support authentication",
        11,
    ),
    ("authentication {\nauth_type MD5\nauth_pass 1\n}", "unknown auth_type 'MD5'", 11),
    (
        "unicast_src_ip 10.77.0.2\nunicast_peer {\nfd00::3\n}",
        "unicast peer fd00::3 is not IPv4",
        12,
    ),
    ("unicast_src_ip fd00::2", "unicast_src_ip fd00::2 is not IPv4", 10),
    ("unicast_peer {\n10.77.0.999\n}", "invalid IP address '10.77.0.999'", 11),
    ("track_script {\nchk_typo\n}", "track script chk_typo not found", 11),
    ("track_file {\nnofile\n}", "track file nofile not found", 11),
    ("track_interface {\neth0\n}", "is the instance's own interface", 11),
    ("interface lo", "cannot use a loopback interface", 10),
    ("virtual_ipaddress {\n10.77.0.300/24\n}", "invalid IP address '10.77.0.300/24'", 11),
    ("virtual_ipaddress {\n10.77.0.3 dve eth0\n}", "unknown option 'dve'", 11),
    ("vrrp_version 3", "unknown keyword 'vrrp_version' in 'vrrp_instance'", 10),
    ("priority", "'priority' needs a value", 10),
    ("virtual_routes {\n10.77.5.0/24 via 10.77.0.1\n}", "cannot track route 10.77.5.0/24", 11),
    ("virtual_routes {\n10.77.5.0/24 foo bar\n}", "unknown route keyword 'foo'", 11),
    (
        "notify_master /bin/true\nnotify_master /bin/false",
        "notify_master script already specified",
        11,
    ),
    ("nopreempt\npreempt_delay 5", "preempt_delay is incompatible with nopreempt", 2),
    ("virtual_ipaddress x {\n10.77.0.9\n}", "has extra parameters: x", 10),
    ("virtual_ipaddress {\n10.77.0.9 scope bogus\n}", "invalid scope 'bogus'", 11),
    ("virtual_ipaddress {\n10.77.0.9 {\n}\n}", "unexpected '{' in 'virtual_ipaddress'", 11),
    ("virtual_routes {\n10.77.5.0/24 metric via dev eth0\n}", "invalid number 'via'", 11),
    ("unicast_peer {\n10.77.0.3 min_ttl\n}", "min_ttl is missing a value", 11),
    ("state MASTER\npreempt_delay 5", "preempt_delay will not work with initial state MASTER", 2),
    ("garp_master_delay 0.5", "garp_master_delay: invalid number '0.5'", 10),
    ("track_interface {\neth1 weight 5 sideways\n}", "unknown weight option 'sideways'", 11),
    ("track_interface {\neth1\neth1\n}", "duplicate track_interface eth1", 12),
]


@pytest.mark.parametrize(("extra", "needle", "line"), CHECKS)
def test_instance_checks(tmp_path: Path, extra: str, needle: str, line: int) -> None:
    _, diags = check(tmp_path, instance(extra))
    assert lines_of(diags.errors, needle) == [line], [str(d) for d in diags]
    assert diags.exit_code() != EXIT_OK


def test_missing_vrid_drops_the_instance(tmp_path: Path) -> None:
    cfg, diags = check(tmp_path, instance().replace("virtual_router_id 51", ""))
    assert lines_of(diags.errors, "the virtual router id must be set") == [2]
    assert diags.exit_code() == EXIT_CONFIG_TEST
    assert cfg.instances == []


def test_duplicate_name_and_vrid(tmp_path: Path) -> None:
    text = instance() + instance() + instance().replace("VI_1", "VI_3")
    cfg, diags = check(tmp_path, text)
    assert lines_of(diags.errors, "vrrp instance VI_1 already defined") == [13]
    assert lines_of(diags.errors, "VI_1 and VI_3 both use VRID 51 with IPv4 on interface eth0") == [
        24
    ]
    assert [i.name for i in cfg.instances] == ["VI_1", "VI_3"]


def test_same_vrid_on_other_family_or_interface_is_fine(tmp_path: Path) -> None:
    v6 = instance().replace("VI_1", "VI_6").replace("10.77.0.10/24", "fd00:77::1/64")
    other_if = instance().replace("VI_1", "VI_X").replace("eth0", "eth1")
    _, diags = check(tmp_path, instance() + v6 + other_if)
    assert not diags.has_errors, [str(d) for d in diags]


@pytest.mark.parametrize(
    ("globals_", "needle"),
    [
        ("notification_email {\n}", "empty notification_email block"),
        ("vrrp_garp_interval 0", "vrrp_garp_interval '0' is invalid"),
        ("vrrp_gna_interval 0", "vrrp_gna_interval '0' is invalid"),
        ("vrrp_gna_interval 5000", "vrrp_gna_interval '5000' is invalid"),
        ("vrrp_version 1", "outside range [2, 3]"),
        ("vrrp_mcast_group4 10.0.0.1", "is not an IPv4 multicast address"),
        ("router_idd x", "did you mean"),
    ],
)
def test_global_defs_checks(tmp_path: Path, globals_: str, needle: str) -> None:
    _, diags = check(tmp_path, f"global_defs {{\n{globals_}\n}}\n" + instance())
    found = [str(d) for d in diags.errors if needle in d.message or needle in (d.hint or "")]
    assert found, [str(d) for d in diags]


def test_script_security_violation_and_its_fix(tmp_path: Path) -> None:
    text = 'vrrp_script chk {\n script "/bin/true"\n}\n' + instance("track_script {\nchk\n}")
    _, diags = check(tmp_path, text)
    assert lines_of(diags.errors, "SECURITY VIOLATION") == [2]
    assert diags.exit_code() == EXIT_CONFIG_TEST_SECURITY
    fixed = "global_defs {\n enable_script_security\n script_user root\n}\n" + text
    _, diags = parse(write(tmp_path, fixed, "fixed.conf"))
    assert not diags.has_errors, [str(d) for d in diags]


def test_script_not_found_is_reported_with_host_checks(tmp_path: Path) -> None:
    text = (
        "global_defs {\n enable_script_security\n script_user root\n}\n"
        'vrrp_script chk {\n script "/nonexistent/klb-check arg"\n}\n' + instance()
    )
    cfg, diags = parse(write(tmp_path, text), env={"PATH": "/usr/bin:/bin"})
    assert lines_of(diags.errors, "'/nonexistent/klb-check' not found") == [6]
    assert "chk" not in cfg.scripts


def test_interface_existence_is_a_host_check(tmp_path: Path) -> None:
    text = instance().replace("eth0", "klbnosuch0")
    _, diags = parse(write(tmp_path, text))
    assert lines_of(diags.errors, "interface 'klbnosuch0'") == [4]
    _, diags = parse(write(tmp_path, text), host_checks=False)
    assert not diags.has_errors


def test_only_scripts_with_an_instance_are_checked(tmp_path: Path) -> None:
    # keepalived validates scripts in its VRRP process, which needs an instance.
    _, diags = check(tmp_path, 'vrrp_script chk {\n script "/bin/true"\n}\n')
    assert not diags.has_errors


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "virtual_server 10.77.0.1 80 {\n lb_kind NAT\n real_server 10.77.0.2 80 {\n }\n}\n",
            "virtual_server",
        ),
        ("bfd_instance b {\n neighbor_ip 10.77.0.3\n}\n", "bfd_instance"),
        (instance("use_vmac"), "use_vmac"),
        (instance("promote_secondaries"), "promote_secondaries"),
        ("global_defs {\n enable_snmp_vrrp\n}\n", "enable_snmp_vrrp"),
    ],
)
def test_valid_but_unsupported_keywords_warn(tmp_path: Path, text: str, needle: str) -> None:
    _, diags = check(tmp_path, text)
    assert not diags.has_errors, [str(d) for d in diags]
    assert any(
        f"keyword '{needle}' is not supported by keeplb" in m
        for m in messages(diags, Severity.WARNING)
    )


def test_unknown_block_with_did_you_mean(tmp_path: Path) -> None:
    _, diags = check(tmp_path, "vrrp_instanse VI_1 {\n x 1\n}\n")
    (err,) = diags.errors
    assert "unknown keyword 'vrrp_instanse'" in err.message
    assert err.hint == "did you mean 'vrrp_instance'?"


# Keywords keeplb parses and checks as keepalived -t does but does not act on at
# run time: each warns on its own line (the audit of the 'supported' column).
@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        ("global_defs {\n vrrp_strict\n}\n" + instance(), "vrrp_strict", 2),
        ("global_defs {\n vrrp_garp_lower_prio_delay 10\n}\n", "vrrp_garp_lower_prio_delay", 2),
        ("global_defs {\n vrrp_garp_lower_prio_repeat 1\n}\n", "vrrp_garp_lower_prio_repeat", 2),
        ("global_defs {\n vrrp_no_swap\n}\n", "vrrp_no_swap", 2),
        ("global_defs {\n dynamic_interfaces\n}\n", "dynamic_interfaces", 2),
        ("global_defs {\n max_auto_priority 50\n}\n", "max_auto_priority", 2),
        (instance("no_accept"), "no_accept", 10),
        (instance("strict_mode on"), "strict_mode", 10),
        (instance("debug 2"), "debug", 10),
        (instance("unicast_peer {\n10.77.0.3 min_ttl 10 max_ttl 255\n}"), "min_ttl", 11),
        (instance("unicast_peer {\n10.77.0.3 max_ttl 64\n}"), "max_ttl", 11),
        (instance().replace("10.77.0.10/24", "10.77.0.10 peer 10.77.0.99"), "peer", 8),
        (instance().replace("/24", "/24 preferred_lft forever"), "preferred_lft", 8),
        (instance().replace("/24", "/24 noprefixroute"), "noprefixroute", 8),
        (instance().replace("/24", "/24 home"), "home", 8),
        (instance().replace("/24", "/24 mngtmpaddr"), "mngtmpaddr", 8),
        (instance().replace("/24", "/24 autojoin"), "autojoin", 8),
        (instance().replace("/24", "/24 use_vmac"), "use_vmac", 8),
        ("static_ipaddress {\n 10.77.9.1/24 dev eth0 track_group G\n}\n", "track_group", 2),
        (instance("virtual_routes {\n10.77.5.0/24 dev eth0 mtu 1400\n}"), "mtu", 11),
        ("static_routes {\n 10.77.5.0/24 via 10.77.0.254 dev eth0 initcwnd 10\n}\n", "initcwnd", 2),
    ],
)
def test_parsed_only_keywords_warn_not_supported(
    tmp_path: Path, text: str, needle: str, line: int
) -> None:
    _, diags = check(tmp_path, text)
    assert not diags.has_errors, [str(d) for d in diags]
    assert lines_of(diags.warnings, f"keyword '{needle}' is not supported by keeplb") == [line]


@pytest.mark.parametrize(
    "keyword",
    [
        ("global_defs", "vrrp_strict"),
        ("global_defs", "vrrp_garp_lower_prio_delay"),
        ("global_defs", "vrrp_garp_lower_prio_repeat"),
        ("global_defs", "vrrp_no_swap"),
        ("global_defs", "dynamic_interfaces"),
        ("global_defs", "max_auto_priority"),
        ("vrrp_instance", "no_accept"),
        ("vrrp_instance", "strict_mode"),
        ("vrrp_instance", "debug"),
    ],
)
def test_parsed_only_keywords_are_listed_as_unsupported(keyword: tuple[str, str]) -> None:
    assert (*keyword, "unsupported") in keyword_table()
    assert (*keyword, "supported") not in keyword_table()


def test_supported_keywords_keep_their_status() -> None:
    rows = keyword_table()
    for keyword in ("accept", "dont_track_primary", "garp_master_delay", "native_ipv6"):
        assert ("vrrp_instance", keyword, "supported") in rows
    for keyword in ("vrrp_lower_prio_no_advert", "vrrp_notify_fifo", "vrrp_startup_delay"):
        assert ("global_defs", keyword, "supported") in rows


def test_warned_keywords_are_still_checked(tmp_path: Path) -> None:
    # Warned is not unchecked: keepalived -t's value checks still apply.
    _, diags = check(tmp_path, "global_defs {\n max_auto_priority 100\n}\n")
    assert lines_of(diags.errors, "outside range [-1, 99]") == [2]
    _, diags = check(tmp_path, instance("debug 9"))
    assert lines_of(diags.errors, "outside range [0, 4]") == [10]
    _, diags = check(tmp_path, instance("strict_mode maybe"))
    assert lines_of(diags.errors, "invalid value 'maybe' for strict_mode") == [10]


@pytest.mark.parametrize(
    ("peer", "problem"),
    [
        ("10.77.0.3 min_ttl 300", "min_ttl: '300' is not a number in [0, 255]"),
        ("10.77.0.3 max_ttl x", "max_ttl: 'x' is not a number in [0, 255]"),
        ("10.77.0.3 min_ttl 10 max_ttl 5", "min_ttl 10 > max_ttl 5"),
    ],
)
def test_unicast_peer_ttl_values_are_checked(tmp_path: Path, peer: str, problem: str) -> None:
    # keepalived 2.2.7 -t exits 5 on each of these.
    cfg, diags = check(tmp_path, instance(f"unicast_peer {{\n{peer}\n}}"))
    assert lines_of(diags.errors, problem) == [11]
    assert cfg.instances[0].unicast_peers == [ipaddress.ip_address("10.77.0.3")]


@pytest.mark.parametrize("option", ["-nodad", "no_track", "mngtmpaddr", "use_vmac"])
def test_address_flags_keepalived_accepts(tmp_path: Path, option: str) -> None:
    _, diags = check(tmp_path, instance().replace("/24", f"/24 {option}"))
    assert not diags.has_errors, [str(d) for d in diags]


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        # keepalived 2.2.7 -t: "Unknown configuration entry 'nodad' for ip address" (exit 5)
        ("nodad", "unknown option 'nodad'"),
        ("-", "unknown option '-'"),
        ("track_group G", "unknown option 'track_group'"),  # only for static_ipaddress
        ("peer 10.77.0.99", "cannot specify an address prefix together with a peer address"),
    ],
)
def test_address_options_keepalived_rejects(tmp_path: Path, option: str, problem: str) -> None:
    _, diags = check(tmp_path, instance().replace("/24", f"/24 {option}"))
    assert lines_of(diags.errors, problem) == [8]


def test_brd_minus_means_no_broadcast_address(tmp_path: Path) -> None:
    cfg, diags = check(tmp_path, instance().replace("/24", "/24 brd -"))
    assert not diags.has_errors
    assert cfg.instances[0].virtual_ipaddresses[0].brd is None


@pytest.mark.parametrize(
    ("global_strict", "strict_mode", "auth_kept"),
    [(True, "", False), (True, "strict_mode off", True), (False, "strict_mode on", False)],
)
def test_strict_mode_overrides_vrrp_strict_for_authentication(
    tmp_path: Path, global_strict: bool, strict_mode: str, auth_kept: bool
) -> None:
    # keepalived 2.2.7: "If strict_mode is not specified, it takes the value of vrrp_strict";
    # -t accepts vrrp_strict + strict_mode off + authentication, and refuses strict_mode on.
    text = ("global_defs {\n vrrp_strict\n}\n" if global_strict else "") + instance(
        f"{strict_mode}\nauthentication {{\nauth_type PASS\nauth_pass 1111\n}}"
    )
    cfg, diags = check(tmp_path, text)
    assert diags.has_errors is not auth_kept, [str(d) for d in diags]
    assert (cfg.instances[0].auth_type == "PASS") is auth_kept


def test_notify_script_user_is_warned(tmp_path: Path) -> None:
    # keepalived: notify_master SCRIPT [username [groupname]] runs SCRIPT as that user.
    secure = "global_defs {\n enable_script_security\n script_user root\n}\n"
    cfg, diags = check(tmp_path, secure + instance("notify_master /bin/true nobody nogroup"))
    assert not diags.has_errors, [str(d) for d in diags]
    assert lines_of(diags.warnings, "running the script as 'nobody nogroup'") == [14]
    assert cfg.instances[0].notify_master == "/bin/true"


def test_keyword_table_covers_the_blocks() -> None:
    rows = keyword_table()
    assert ("vrrp_instance", "virtual_router_id", "supported") in rows
    assert ("vrrp_instance", "use_vmac", "unsupported") in rows
    assert ("(top level)", "virtual_server", "unsupported") in rows
    assert ("vrrp_instance", "track_lb", "supported") in rows
    assert {r[2] for r in rows} == {"supported", "unsupported"}
    assert len(rows) == len(set(rows))


# --------------------------------------------------------------------------
# the corpus, by file name (the oracle test compares with real keepalived)
# --------------------------------------------------------------------------

CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.conf"))


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS_FILES) >= 35
    assert sum(n.startswith("ok-") for n in CORPUS_FILES) >= 15
    assert sum(n.startswith("bad-") for n in CORPUS_FILES) >= 20


@needs_eth0
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_verdict(name: str) -> None:
    _, diags = parse(str(CORPUS / name))
    assert diags.has_errors == name.startswith("bad-"), [str(d) for d in diags]


# --------------------------------------------------------------------------
# robustness: any text gives diagnostics, never an exception
# --------------------------------------------------------------------------

ALPHABET = st.sampled_from(
    list('{}"#!$@^=/ \n\t.:-_')
    + list("abcdefgiklmnoprstuvwxyz0123456789")
    + [
        "vrrp_instance",
        "virtual_router_id",
        "priority",
        "include",
        "unicast_peer",
        "$X=",
        "${X}",
        "virtual_ipaddress",
        "authentication",
        "auth_pass",
        "track_script",
        "global_defs",
        "\x00",
        "é",
    ]
)
SEED_TEXT = (CORPUS / "ok-03-unicast-master.conf").read_text()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(ALPHABET, max_size=80).map("".join))
def test_random_text_never_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.conf"
    path.write_text(text, errors="surrogatepass")
    cfg, diags = parse(str(path), host_checks=False)
    assert isinstance(cfg, KeepalivedConfig)
    assert all(isinstance(d, Diagnostic) for d in diags)
    for d in diags:
        str(d)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_config_never_raises(tmp_path: Path, data: st.DataObject) -> None:
    text = SEED_TEXT
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(text)))
        action = data.draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if action == "delete":
            end = data.draw(st.integers(pos, min(len(text), pos + 20)))
            text = text[:pos] + text[end:]
        elif action == "insert":
            text = text[:pos] + data.draw(st.lists(ALPHABET, max_size=5).map("".join)) + text[pos:]
        else:
            text = text[:pos] + text[pos : pos + 30] + text[pos:]
    path = tmp_path / "mut.conf"
    path.write_text(text)
    cfg, diags = parse(str(path), ("lb1",), host_checks=False)
    assert isinstance(cfg, KeepalivedConfig)
    for d in diags:
        assert d.span is None or d.span.line >= 0
        str(d)


def test_master_without_priority_is_the_address_owner(tmp_path: Path) -> None:
    # keepalived: initial state MASTER and no priority means priority 255, and the
    # address owner cannot have weighted tracking.
    text = (
        "global_defs {\n enable_script_security\n script_user root\n}\n"
        'vrrp_script chk {\n script "/bin/true"\n weight 2\n}\n'
        + instance("state MASTER\ntrack_script {\nchk\n}").replace("priority 100", "")
    )
    cfg, diags = check(tmp_path, text)
    assert cfg.instances[0].priority == 255
    assert lines_of(diags.errors, "tracked script chk has a weight") == [20]
    assert cfg.instances[0].track_scripts == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vrrp_instance VI_1 3 {\n}\n", "vrrp_instance takes one name"),
        (instance() + "vrrp_sync_group G {\n group {\n VI_1\n }\n}\n", "has only 1 virtual router"),
        ("global_defs {\n smtp_server 10.77.0.1/24\n}\n", "invalid smtp_server"),
        ("track_file f {\n file /tmp/f\n init_file 3 sideways\n}\n", "unknown init_file option"),
        ("track_file f {\n file /tmp/f\n file /tmp/g\n}\n", "file already set for track file f"),
        ("track_file f {\n file /tmp/f\n init_file 255\n}\n", "outside range [-254, 254]"),
        ("bfd_instance b {\n min_rx 10\n}\n", "has no neighbor_ip"),
        (
            "bfd_instance b {\n neighbor_ip 10.77.0.3\n neighbour 1\n}\n",
            "unknown keyword 'neighbour'",
        ),
        ("bfd_instance b {\n neighbor_ip lo\n}\n", "invalid IP address 'lo'"),
        (instance("strict_mode 1"), "invalid value '1' for strict_mode"),
        ("global_defs {\n vrrp_iptables\n}\n" + instance(), "'vrrp_iptables' is deprecated"),
        (instance("native_ipv6"), "native_ipv6 cannot be used with IPv4 addresses"),
        (instance("vmac_xmit_base"), "only valid with use_vmac"),
        (instance("vrf red"), "vrf and interface cannot both be given"),
        (instance("check_unicast_src"), "a unicast keyword is given without any unicast peer"),
        ("global_defs {\n startup_script /bin/true\n}\n" + instance(), "SECURITY VIOLATION"),
        ("global_defs {\n vrrp_priority 20\n}\n", "outside range [-20, 19]"),
        ("global_defs {\n lvs_timeouts tcp\n}\n", "lvs_timeouts needs"),
        (
            "virtual_server 10.77.0.1 80 {\n lb_kind NAT\n lb_algoo rr\n"
            " real_server 10.77.0.2 80 {\n  TCP_CHECK {\n  }\n }\n}\n",
            "unknown keyword 'lb_algoo' in 'virtual_server'",
        ),
    ],
)
def test_other_keepalived_checks(tmp_path: Path, text: str, needle: str) -> None:
    _, diags = check(tmp_path, text)
    assert any(needle in m for m in messages(diags)), [str(d) for d in diags]


def test_script_user_group_must_exist(tmp_path: Path) -> None:
    path = write(
        tmp_path, "global_defs {\n enable_script_security\n script_user root klbnogroup\n}\n"
    )
    _, diags = parse(path)
    assert lines_of(diags.errors, "no such group 'klbnogroup'") == [3]


def test_notify_script_not_found_is_skipped_quietly(tmp_path: Path) -> None:
    # keepalived runs no missing notify script, and so asks for no script security.
    path = write(tmp_path, instance("notify_master /nonexistent/klb-notify"))
    cfg, diags = parse(path)
    assert not diags.has_errors, [str(d) for d in diags]
    assert lines_of(diags.warnings, "notify script '/nonexistent/klb-notify' not found") == [10]
    # ...and the daemon, which runs what the model holds, does not try to run it.
    assert cfg.instances[0].notify_master is None


def test_missing_sync_group_notify_script_is_dropped(tmp_path: Path) -> None:
    text = (
        instance()
        + instance().replace("VI_1", "VI_2").replace("51", "52")
        + "vrrp_sync_group G {\n group {\n VI_1\n VI_2\n }\n"
        " notify_fault /nonexistent/klb-notify\n notify_master /bin/true\n}\n"
        "global_defs {\n enable_script_security\n script_user root\n}\n"
    )
    cfg, diags = parse(write(tmp_path, text), env={"PATH": "/usr/bin:/bin"})
    assert not diags.has_errors, [str(d) for d in diags]
    (group,) = cfg.sync_groups
    assert (group.notify_fault, group.notify_master) == (None, "/bin/true")


def test_duplicate_virtual_addresses_warn(tmp_path: Path) -> None:
    twice = instance().replace("10.77.0.10/24\n", "10.77.0.10/24\n        10.77.0.10\n")
    other = instance().replace("VI_1", "VI_2").replace("51", "52")
    _, diags = check(tmp_path, twice + other)
    assert not diags.has_errors
    assert lines_of(diags.warnings, "virtual address 10.77.0.10 is listed twice") == [9]
    assert lines_of(diags.warnings, "virtual address 10.77.0.10 is also in VI_1") == [20]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs files owned by root")
@pytest.mark.parametrize(
    ("mode", "problem"), [(0o755, None), (0o777, "writable by group or others")]
)
def test_insecure_scripts_are_disabled(tmp_path: Path, mode: int, problem: str | None) -> None:
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(mode)
    text = (
        "global_defs {\n enable_script_security\n script_user root\n}\n"
        f'vrrp_script chk {{\n script "{script} arg"\n}}\n'
        + instance(f"track_script {{\nchk\n}}\nnotify_master {script}")
    )
    cfg, diags = parse(write(tmp_path, text))
    if problem is None:
        assert not diags.has_errors and not diags.warnings, [str(d) for d in diags]
        assert [t.name for t in cfg.instances[0].track_scripts] == ["chk"]
        assert cfg.instances[0].notify_master == str(script)
    else:
        assert lines_of(diags.errors, problem) == [6]
        assert lines_of(diags.warnings, problem) == [20]
        assert cfg.instances[0].track_scripts == [] and "chk" not in cfg.scripts
        assert cfg.instances[0].notify_master is None  # disabled, as keepalived does


def test_condition_after_a_brace_and_definition_spacing(tmp_path: Path) -> None:
    # keepalived reads the text after '}' as a new line, so '@x' applies there;
    # '$X =1' (blank before '=') is no definition but an unknown keyword.
    text = instance().rstrip().removesuffix("}") + "} @x stray words\n"
    cfg, diags = check(tmp_path, text)
    assert not diags.has_errors, [str(d) for d in diags]
    cfg, diags = check(tmp_path, "$X =1\n" + instance())
    assert lines_of(diags.errors, "unknown keyword '$X'") == [1]
