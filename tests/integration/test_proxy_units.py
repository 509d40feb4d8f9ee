"""The relay's pure helpers: haproxy's state-change lines and the ACL evaluation."""

from __future__ import annotations

import pytest

from keeplb.config.model import Acl, Condition
from keeplb.lb.proxy import (
    compile_condition,
    http_condition_matches,
    maxaccept,
    no_server_message,
    server_down_message,
    server_up_message,
)

SRC = ("10.1.2.3", 40000)
DST = ("127.0.0.1", 6443)


def test_state_lines_in_haproxy_words() -> None:
    assert server_down_message("be", "s2", False, "Layer4 connection problem",
                               "Connection refused", 1, None, 0, 1, 0, 0, 0) == (
        'Server be/s2 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
        "check duration: 1ms. 0 active and 1 backup servers left. Running on backup. "
        "0 sessions active, 0 requeued, 0 remaining in queue.")
    assert server_down_message("be", "bk", True, "Layer4 timeout", "", 2001, None, 0, 0,
                               3, 1, 2).startswith(
        "Backup Server be/bk is DOWN, reason: Layer4 timeout, check duration: 2001ms. ")
    assert server_up_message("be", "s1", False, "Layer7 check passed", "OK", 3, 200, 2, 0,
                             0, 0) == (
        'Server be/s1 is UP, reason: Layer7 check passed, code: 200, info: "OK", check '
        "duration: 3ms. 2 active and 0 backup servers online. 0 sessions requeued, "
        "0 total in queue.")
    assert no_server_message("kube") == "backend kube has no server available!"


@pytest.mark.parametrize(("acls", "terms", "negate", "want"), [
    ([Acl("p", "dst_port", (), ("6443",))], (("p",),), False, True),
    ([Acl("p", "dst_port", (), ("1:1000",))], (("p",),), False, False),
    ([Acl("n", "src", (), ("10.0.0.0/8",))], (("n",),), False, True),
    ([Acl("n", "src", (), ("192.168.0.0/16",))], (("!n",),), False, True),
    ([Acl("n", "src", (), ("10.0.0.0/8",))], (("n",),), True, False),  # unless
    ([], (("{ dst_port 6443 }",),), False, True),
    ([], (("{ always_false }",), ("{ always_true }",)), False, True),  # a || b
    ([Acl("a", "src", (), ("10.0.0.0/8",)), Acl("b", "dst_port", (), ("80",))],
     (("a", "b"),), False, False),  # a && b
    # two lines with one name are OR-ed
    ([Acl("x", "src", (), ("192.0.2.0/24",)), Acl("x", "src", (), ("10.1.0.0/16",))],
     (("x",),), False, True),
])
def test_layer4_conditions(acls: list[Acl], terms: tuple[tuple[str, ...], ...],
                           negate: bool, want: bool) -> None:
    compiled = compile_condition(Condition(negate, terms), acls)
    assert compiled is not None
    conj, neg = compiled
    hit = any(all(m(SRC, DST) != n for n, m in c) for c in conj)
    assert (hit != neg) is want


def test_layer7_criteria_are_not_evaluated_by_the_tcp_router() -> None:
    assert compile_condition(Condition(False, (("h",),)),
                             [Acl("h", "hdr(host)", (), ("x",))]) is None


def test_service_rule_paths() -> None:
    cond = Condition(False, (("{ path /metrics }",),))
    assert http_condition_matches(cond, [], "/metrics")
    assert not http_condition_matches(cond, [], "/metrics/x")
    beg = Condition(False, (("m",),))
    assert http_condition_matches(beg, [Acl("m", "path_beg", (), ("/m",))], "/mx")
    assert not http_condition_matches(beg, [Acl("m", "hdr(host)", (), ("/m",))], "/mx")
    assert http_condition_matches(None, [], "/anything")


def test_maxaccept_is_shared_between_worker_processes() -> None:
    # haproxy divides tune.maxaccept by twice the processes on the listener.
    assert maxaccept(None, 1) == 64
    assert maxaccept(None, 2) == 16
    assert maxaccept("8", 1) == 8
    assert maxaccept("8", 4) == 1
    assert maxaccept("-1", 2) > 1_000_000  # no limit
    assert maxaccept("junk", 1) == 64
