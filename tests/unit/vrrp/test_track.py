"""Tracker maths: rise/fall hysteresis and keepalived's effective priority."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.vrrp.track import FileTracker, Tracker, effective_priority, holds_in_init


def test_first_result_decides_then_rise_and_fall() -> None:
    t = Tracker("chk", weight=2, rise=2, fall=3)
    assert t.ok is None and t.contribution() == (0, False)  # init counts neither way
    assert t.on_result(True) is True and t.ok is True
    assert [t.on_result(False) for _ in range(3)] == [False, False, True]
    assert t.ok is False
    assert [t.on_result(True) for _ in range(2)] == [False, True]


def test_interrupted_runs_start_over() -> None:
    t = Tracker("chk", rise=1, fall=3)
    t.on_result(True)
    for _ in range(5):  # two failures then a success, repeatedly: never falls
        t.on_result(False)
        t.on_result(False)
        assert t.on_result(True) is False
    assert t.ok is True


def test_init_fail_starts_failed() -> None:
    t = Tracker("chk", weight=-10, init_fail=True, rise=3)
    assert t.ok is False and t.contribution() == (-10, False)
    assert t.on_result(True) is True  # keepalived: one success leaves init_fail


@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.booleans(), max_size=60))
def test_never_flaps_faster_than_rise_fall(rise: int, fall: int, results: list[bool]) -> None:
    t = Tracker("chk", rise=rise, fall=fall)
    t.on_result(True)
    run_ok = run_fail = 0
    for ok in results:
        run_ok, run_fail = (run_ok + 1, 0) if ok else (0, run_fail + 1)
        before = t.ok
        changed = t.on_result(ok)
        if changed and before is True:
            assert run_fail >= fall
        if changed and before is False:
            assert run_ok >= rise
        if not changed:
            assert not (before is True and run_fail == fall) and not (
                before is False and run_ok == rise
            )


@pytest.mark.parametrize(
    ("weight", "reverse", "ok", "expected"),
    [
        (2, False, True, (102, False)),  # positive weight added while OK
        (2, False, False, (100, False)),
        (-20, False, False, (80, False)),  # negative weight applied while failing
        (-20, False, True, (100, False)),
        (2, True, True, (98, False)),  # reverse flips the direction
        (-20, True, False, (120, False)),
        (0, False, False, (100, True)),  # weight 0: failing means FAULT
        (0, False, True, (100, False)),
    ],
)
def test_weights(weight: int, reverse: bool, ok: bool, expected: tuple[int, bool]) -> None:
    t = Tracker("chk", weight=weight, reverse=reverse)
    t.on_result(ok)
    assert effective_priority(100, [t]) == expected


def test_clamps_and_owner() -> None:
    up = Tracker("up", weight=100)
    up.on_result(True)
    down = Tracker("down", weight=-200)
    down.on_result(False)
    assert effective_priority(200, [up]) == (254, False)
    assert effective_priority(50, [down]) == (1, False)
    assert effective_priority(255, [down]) == (255, False)  # the owner never moves


def test_track_file() -> None:
    f = FileTracker("tf", weight=-10)
    assert f.on_value(3) is True and f.on_value(3) is False
    assert effective_priority(100, [f]) == (70, False)
    f.on_value(30)
    assert effective_priority(100, [f]) == (100, True)  # -254 or below: fault
    zero = FileTracker("z", weight=0, value=1)
    assert effective_priority(100, [zero]) == (100, True)


def test_seed_pattern_the_host_whose_script_fails_loses() -> None:
    # seed keepalived.conf: both hosts priority 100, chk_haproxy weight 2.
    a, b = Tracker("chk_haproxy", weight=2), Tracker("chk_haproxy", weight=2)
    a.on_result(True)
    b.on_result(True)
    assert effective_priority(100, [a]) == effective_priority(100, [b]) == (102, False)
    a.on_result(False)
    assert effective_priority(100, [a])[0] < effective_priority(100, [b])[0]


def test_classic_mistake_weight_smaller_than_gap_moves_nothing() -> None:
    master, backup = Tracker("chk", weight=2), Tracker("chk", weight=2)
    master.on_result(False)  # haproxy died on the master
    backup.on_result(True)
    assert effective_priority(110, [master])[0] > effective_priority(100, [backup])[0]


def test_weight_zero_holds_the_instance_in_init_until_first_result() -> None:
    gate, weighted = Tracker("chk", weight=0), Tracker("other", weight=5)
    assert holds_in_init([gate, weighted])
    gate.on_result(False)
    assert not holds_in_init([gate, weighted])
    assert effective_priority(100, [gate, weighted]) == (100, True)
