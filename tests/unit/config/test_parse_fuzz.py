"""Any bytes in a haproxy.cfg or keepalived.conf on disk give diagnostics or a
config, never an exception, and every diagnostic points into the file.

The text-level fuzzers (test_haproxy_fuzz.py, test_keepalived.py) feed str to
the parsers; these write bytes, as a user's file holds them: invalid UTF-8,
NUL, CR, and the characters str.splitlines() takes for line ends (\\x0b,
\\x0c, \\x1c-\\x1e, \\x85, U+2028) that haproxy and keepalived do not.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keeplb.config import haproxy, keepalived
from keeplb.config.diagnostics import Diagnostic

# Bounded: every example is small and each parse must finish well within this.
PARSE_BUDGET_S = 5.0

ODD = ["\x00", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
       "\u2029", "\t", "\n", " ", "#", '"', "'", "\\", "{", "}", "$", "@", "é", "\ufeff"]
HAPROXY_WORDS = ["global", "defaults", "frontend fe", "backend be", "listen li", "bind",
                 "127.0.0.1:8080", "server s1 127.0.0.1:80 check", "mode tcp", "maxconn",
                 "balance roundrobin", "timeout client 1s", "default_backend be", ".if",
                 ".endif", "stats socket /x", "option tcplog", "${HOME}"]
KEEPALIVED_WORDS = ["global_defs", "vrrp_instance VI_1", "vrrp_script chk", "state MASTER",
                    "interface lo", "virtual_router_id 51", "priority 100",
                    "virtual_ipaddress", "10.77.0.10/24", "authentication", "auth_pass x",
                    "track_script", "router_id a", "include x.conf", "$X=1", "@lb1",
                    "advert_int 1"]


def pieces(words: list[str]) -> st.SearchStrategy[bytes]:
    """Bytes made of keywords, odd characters, and raw bytes that are not UTF-8."""
    token = st.one_of(
        st.sampled_from(words).map(str.encode),
        st.sampled_from(ODD).map(lambda c: c.encode("utf-8")),
        st.binary(min_size=1, max_size=3),
        st.text(max_size=4).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
    return st.lists(token, max_size=40).map(b"".join)


def physical_lines(data: bytes) -> int:
    """Lines as haproxy and keepalived count them: "\\n" only."""
    return data.count(b"\n") + 1


def check_diagnostics(diags: list[Diagnostic], data: bytes, name: str) -> None:
    assert all(isinstance(d, Diagnostic) for d in diags)
    for d in diags:
        text = str(d)
        assert text
        if d.span is not None and d.span.file.endswith(name):
            assert 0 <= d.span.line <= physical_lines(data), (text, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces(HAPROXY_WORDS))
def test_haproxy_file_of_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="klb-fuzz-") as tmp:
        path = Path(tmp) / "fuzz.cfg"
        path.write_bytes(data)
        started = time.monotonic()
        cfg, diags = haproxy.parse([str(path)], env={"HOME": "/root"})
        assert time.monotonic() - started < PARSE_BUDGET_S
    assert cfg is not None
    check_diagnostics(list(diags), data, "fuzz.cfg")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces(KEEPALIVED_WORDS))
def test_keepalived_file_of_any_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="klb-fuzz-") as tmp:
        path = Path(tmp) / "fuzz.conf"
        path.write_bytes(data)
        started = time.monotonic()
        cfg, diags = keepalived.parse(str(path), ("lb1",), host_checks=False)
        assert time.monotonic() - started < PARSE_BUDGET_S
    assert isinstance(cfg, keepalived.KeepalivedConfig)
    check_diagnostics(list(diags), data, "fuzz.conf")


def test_a_comment_ending_in_a_form_feed_stays_a_comment(tmp_path: Path) -> None:
    # the example hypothesis found first, kept as a plain regression test
    path = tmp_path / "ff.cfg"
    path.write_bytes(b"global\n    # note\x0cbogus\n")
    _, diags = haproxy.parse([str(path)], env={})
    assert [str(d) for d in diags] == []
    path = tmp_path / "ff.conf"
    path.write_bytes(b"global_defs {\n    # note\xe2\x80\xa8bogus\n}\n")
    _, kdiags = keepalived.parse(str(path), host_checks=False)
    assert [str(d) for d in kdiags] == []
