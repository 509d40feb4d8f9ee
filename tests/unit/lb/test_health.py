"""haproxy's health counter, check status table and slowstart ramp (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeplb.lb.health import (
    BE_WEIGHT_SCALE,
    CheckStatus,
    Health,
    Outcome,
    Transition,
    slowstart_weight,
)

rise_st = st.integers(min_value=1, max_value=6)
fall_st = st.integers(min_value=1, max_value=6)


@pytest.mark.parametrize(("status", "code", "outcome", "text"), [
    (CheckStatus.L4OK, "L4OK", Outcome.PASSED, "Layer4 check passed"),
    (CheckStatus.L4TOUT, "L4TOUT", Outcome.FAILED, "Layer4 timeout"),
    (CheckStatus.L4CON, "L4CON", Outcome.FAILED, "Layer4 connection problem"),
    (CheckStatus.L6OK, "L6OK", Outcome.PASSED, "Layer6 check passed"),
    (CheckStatus.L6TOUT, "L6TOUT", Outcome.FAILED, "Layer6 timeout"),
    (CheckStatus.L6RSP, "L6RSP", Outcome.FAILED, "Layer6 invalid response"),
    (CheckStatus.L7OK, "L7OK", Outcome.PASSED, "Layer7 check passed"),
    (CheckStatus.L7OKC, "L7OKC", Outcome.CONDPASS, "Layer7 check conditionally passed"),
    (CheckStatus.L7TOUT, "L7TOUT", Outcome.FAILED, "Layer7 timeout"),
    (CheckStatus.L7RSP, "L7RSP", Outcome.FAILED, "Layer7 invalid response"),
    (CheckStatus.L7STS, "L7STS", Outcome.FAILED, "Layer7 wrong status"),
    (CheckStatus.SOCKERR, "SOCKERR", Outcome.FAILED, "Socket error"),
    (CheckStatus.CHECKED, "CHECKED", Outcome.NEUTRAL, "No status change"),
    (CheckStatus.INI, "INI", Outcome.UNKNOWN, "Initializing"),
])
def test_status_table_matches_haproxy(status: CheckStatus, code: str, outcome: Outcome,
                                      text: str) -> None:
    assert (status.code, status.result, status.description) == (code, outcome, text)


def test_starts_up_with_health_rise_and_one_failure_takes_it_down() -> None:
    """haproxy 2.6 server.c: a checked server starts UP at health = rise ("UP 1/fall")."""
    h = Health(rise=2, fall=3)
    assert h.up and h.health == 2  # shown "UP 1/3" (stats.server_status)
    assert h.on_result(False) is Transition.DOWN
    assert not h.up and h.health == 0


def test_first_success_makes_it_fully_up() -> None:
    h = Health(rise=2, fall=3)
    assert h.on_result(True) is None
    assert h.up and h.health == 4 and h.fully_up  # "UP"
    assert h.on_result(False) is None and (h.up, h.health) == (True, 3)  # "UP 2/3"
    assert h.on_result(False) is None and (h.up, h.health) == (True, 2)  # "UP 1/3"
    assert h.on_result(False) is Transition.DOWN
    assert h.on_result(True) is None and (h.up, h.health) == (False, 1)  # "DOWN 1/2"
    assert h.on_result(True) is Transition.UP and h.fully_up  # "UP"


@given(rise=rise_st, fall=fall_st, results=st.lists(st.booleans(), max_size=60))
@settings(max_examples=200)
def test_never_flips_faster_than_rise_fall(rise: int, fall: int, results: list[bool]) -> None:
    h = Health(rise, fall)
    h.on_result(True)  # fully up, as after the first passed check
    run_ok = run_ko = 0
    for ok in results:
        run_ok, run_ko = (run_ok + 1, 0) if ok else (0, run_ko + 1)
        before = h.up
        t = h.on_result(ok)
        assert 0 <= h.health <= rise + fall - 1
        assert (t is not None) == (before != h.up)
        if t is Transition.DOWN:
            assert run_ko >= fall
        if t is Transition.UP:
            assert run_ok >= rise
        # on the DOWN side the counter counts the successes since the last failure
        if not h.up:
            assert h.health == run_ok


@given(rise=rise_st, fall=fall_st)
def test_exactly_fall_failures_then_rise_successes(rise: int, fall: int) -> None:
    h = Health(rise, fall)
    h.on_result(True)
    outs = [h.on_result(False) for _ in range(fall)]
    assert outs[:-1] == [None] * (fall - 1) and outs[-1] is Transition.DOWN
    outs = [h.on_result(True) for _ in range(rise)]
    assert outs[:-1] == [None] * (rise - 1) and outs[-1] is Transition.UP


def test_neutral_status_changes_nothing() -> None:
    h = Health(2, 3)
    assert h.on_status(CheckStatus.CHECKED) is None and h.health == 2
    assert h.on_status(CheckStatus.L7OKC) is None and h.health == 4
    assert h.on_status(CheckStatus.L4CON) is None and h.health == 3


def test_interval_follows_srv_getinter() -> None:
    h = Health(2, 3)
    # health = rise: between the extremes -> fastinter
    assert h.interval(2000, 500, 10000) == 500
    assert h.interval(2000, None, 10000) == 2000
    h.on_result(True)
    assert h.interval(2000, 500, 10000) == 2000
    h.on_result(False)
    assert h.interval(2000, 500, 10000) == 500
    h.force(False)
    assert h.interval(2000, 500, 10000) == 10000
    assert h.interval(2000, 500, None) == 2000
    h.on_result(True)
    assert h.interval(2000, 500, 10000) == 500


def test_bad_rise_fall_rejected() -> None:
    with pytest.raises(ValueError, match="rise and fall"):
        Health(0, 3)


@given(uweight=st.integers(min_value=1, max_value=256),
       slowstart=st.integers(min_value=1, max_value=600_000),
       scale=st.sampled_from([1, BE_WEIGHT_SCALE]))
@settings(max_examples=150)
def test_slowstart_ramp(uweight: int, slowstart: int, scale: int) -> None:
    full = uweight * scale
    samples = [slowstart_weight(uweight, t, slowstart, scale=scale)
               for t in range(0, slowstart + 1, max(1, slowstart // 50))]
    assert all(1 <= w <= full for w in samples)
    assert samples == sorted(samples)
    assert slowstart_weight(uweight, slowstart, slowstart, scale=scale) == full
    assert slowstart_weight(uweight, slowstart * 2, slowstart, scale=scale) == full
    # starts at the first 1/16 step, never at 0
    assert slowstart_weight(uweight, 0, slowstart, scale=scale) == max(
        1, -(-full // BE_WEIGHT_SCALE))


def test_slowstart_examples() -> None:
    # weight 100, 60 s: 1/16 at start, half-way is 9/16, full at the end
    assert slowstart_weight(100, 0, 60_000) == 7
    assert slowstart_weight(100, 30_000, 60_000) == 57
    assert slowstart_weight(100, 60_000, 60_000) == 100
    assert slowstart_weight(1, 0, 60_000, scale=BE_WEIGHT_SCALE) == 1
    assert slowstart_weight(1, 30_000, 60_000, scale=BE_WEIGHT_SCALE) == 9
    assert slowstart_weight(0, 10, 60_000) == 0
    assert slowstart_weight(5, 10, 0) == 5
