"""CheckSpec.from_config and the log-line helpers of checks.py (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.config.haproxy import parse_text
from keeplb.lb.checks import (
    CheckKind,
    CheckResult,
    CheckSpec,
    ConnectStep,
    ExpectStep,
    SendStep,
    ascii_encode,
    health_check_message,
    ldap_bind_result,
    mysql_handshake_result,
    smtp_reply,
)
from keeplb.lb.health import CheckStatus, Health


def _spec(lines: str, server: str = "server s1 10.77.0.10:6443 check") -> CheckSpec:
    cfg, diags = parse_text(f"backend b\n{lines}\n  {server}\n")
    assert not [d for d in diags if d.is_error], diags
    be = cfg.backend("b")
    assert be is not None
    srv = be.servers[0]
    return CheckSpec.from_config(be, srv, srv.address.host, srv.address.port_low)


def test_default_is_a_tcp_connect_to_the_server() -> None:
    spec = _spec("")
    assert (spec.kind, spec.host, spec.port, spec.ssl) == (CheckKind.TCP, "10.77.0.10", 6443,
                                                           False)
    assert spec.inter == 2000 and spec.warnings == ()


def test_tcp_check_rules_become_steps() -> None:
    spec = _spec("  option tcp-check\n"
                 "  tcp-check connect port 6379 ssl sni redis.local comment first\n"
                 "  tcp-check send-binary 50494e470d0a\n"
                 "  tcp-check expect min-recv 3 error-status L7STS comment pong ! rstring ^-ERR\n"
                 "  timeout check 3s\n  timeout connect 5s",
                 "server s1 10.77.0.10:6379 check inter 1s")
    assert spec.kind is CheckKind.TCP_CHECK
    assert spec.steps == (
        ConnectStep(port=6379, ssl=True, sni="redis.local", comment="first"),
        SendStep(b"PING\r\n"),
        ExpectStep("rstring", "^-ERR", negate=True, min_recv=3, comment="pong",
                   error_status=CheckStatus.L7STS),
    )
    assert (spec.inter, spec.check_timeout, spec.connect_timeout) == (1000, 3000, 5000)


def test_tcp_check_without_connect_gets_an_implicit_one() -> None:
    spec = _spec("  option tcp-check\n  tcp-check send PING\\r\\n")
    assert spec.steps[0] == ConnectStep(implicit=True)
    assert spec.steps[1] == SendStep(b"PING\r\n")


def test_httpchk_request_and_expect() -> None:
    spec = _spec("  option httpchk\n"
                 "  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host k8s\n"
                 "  http-check expect status 200-299,304")
    assert spec.kind is CheckKind.HTTP and spec.request is not None
    # as haproxy 2.6 writes it on the wire
    assert spec.request.encode() == (b"GET /readyz HTTP/1.1\r\nhost: k8s\r\n"
                                     b"connection: close\r\n\r\n")
    assert spec.expects == (ExpectStep("status", "200-299,304"),)


def test_httpchk_defaults_to_options_slash() -> None:
    spec = _spec("  option httpchk")
    assert spec.request is not None
    assert spec.request.encode() == b"OPTIONS / HTTP/1.0\r\n\r\n"
    post = _spec("  option httpchk\n  http-check send meth POST uri /p body hello")
    assert post.request is not None
    assert post.request.encode() == b"POST /p HTTP/1.0\r\ncontent-length: 5\r\n\r\nhello"


def test_unsupported_check_types_warn() -> None:
    spec = _spec("  option spop-check")
    assert spec.kind is CheckKind.TCP
    assert any("spop-check" in w for w in spec.warnings)


@pytest.mark.parametrize("option", ["redis-check", "ssl-hello-chk"])
def test_builtin_checks_are_tcp_check_rulesets(option: str) -> None:
    spec = _spec(f"  option {option}")
    assert spec.kind is CheckKind.TCP_CHECK and spec.builtin == option and not spec.warnings
    assert [type(s).__name__ for s in spec.steps] == ["ConnectStep", "SendStep", "ExpectStep"]
    # the last check option of a backend wins, as in haproxy
    assert _spec(f"  option {option}\n  option tcp-check").builtin is None


def test_ascii_encode_is_haproxys() -> None:
    assert ascii_encode('say "hi"\r\n<ok>') == "say <22>hi<22><0D><0A><3C>ok<3E>"


def test_health_check_message_variants() -> None:
    h = Health(2, 3)
    h.on_result(True)
    ok = CheckResult(True, CheckStatus.L7OK, "", 3, 200)
    assert health_check_message("be", "s1", False, ok, h, 1) == (
        "Health check for server be/s1 succeeded, reason: Layer7 check passed, code: 200, "
        "check duration: 3ms, status: 3/3 UP")
    assert health_check_message("be", "s1", False, ok, h, 0).endswith("3/3 DRAIN")
    h.on_result(False)
    ko = CheckResult(False, CheckStatus.L4CON, "Connection refused", 0, None)
    assert health_check_message("be", "s2", True, ko, h, 1) == (
        "Health check for backup server be/s2 failed, reason: Layer4 connection problem, "
        'info: "Connection refused", check duration: 0ms, status: 2/3 UP')
    cond = CheckResult(True, CheckStatus.L7OKC, "", 1, 404)
    assert "conditionally succeeded" in health_check_message("be", "s", False, cond, h, 1)


def test_expect_options_after_the_pattern_and_unsupported_matches() -> None:
    spec = _spec("  option httpchk GET /\n  http-check expect status 200 comment ready\n"
                 "  http-check expect hdr name x-ready value yes")
    assert spec.expects == (ExpectStep("status", "200", comment="ready"),)
    assert sum("'http-check expect hdr' is not supported" in w for w in spec.warnings) == 1


@given(st.binary(max_size=64))
def test_ldap_bind_result_takes_any_reply(data: bytes) -> None:
    """Whatever a server sends (lengths pointing past the end included), a
    verdict and never an IndexError; only resultCode 0 passes."""
    status, info, code = ldap_bind_result(b"\x30" + data)
    assert status.passed == (info == "Success") and (code == 0 if status.passed else True)


def test_mysql_greetings() -> None:
    assert mysql_handshake_result(b"\0\0\0\0", False) == (CheckStatus.L7OK, "", 0)
    assert mysql_handshake_result(b"\x05\0\0\0\x0a5.7", False) is None  # 1 byte to come
    assert mysql_handshake_result(b"\x05\0\0\0\x0a5.7", True) == (CheckStatus.L7RSP, "", None)
    assert mysql_handshake_result(b"\x05\0\0\0\x0a5.7\0", False) == (CheckStatus.L7OK, "5.7", 0)


@given(st.binary(max_size=40), st.booleans())
def test_mysql_handshake_result_takes_any_bytes(data: bytes, eof: bool) -> None:
    """A verdict or None (wait), never an exception; at the end always a verdict."""
    got = mysql_handshake_result(data, eof)
    assert got is not None or not eof


def test_mysql_check_with_a_user_falls_back_to_connect() -> None:
    spec = _spec("  option mysql-check user haproxy")
    assert spec.kind is CheckKind.TCP and spec.builtin is None
    assert spec.warnings == ("'option mysql-check user' is not supported by keeplb; "
                             "using a TCP connect check",)


def test_smtp_replies() -> None:
    assert smtp_reply(b"250   mx ready\r\nmore") == ("mx ready", 250)
    assert smtp_reply(b"2x0 odd") == ("odd", 0)
    assert smtp_reply(b"") == ("", 0)
    spec = _spec("  option smtpchk EHLO lb.example")
    sends = [s.data for s in spec.steps if isinstance(s, SendStep)]
    assert sends == [b"EHLO lb.example\r\n", b"QUIT\r\n"] and spec.builtin == "smtpchk"
