"""Timer formulas: RFC 5798 §6.1 (v3) and RFC 3768 §6.1 (v2), integer centiseconds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.vrrp import timers


@pytest.mark.parametrize(
    ("priority", "adver_cs", "version", "skew", "down"),
    [
        (100, 100, 3, 60, 360),  # (256-100)*100/256 = 60.9
        (100, 100, 2, 60, 360),  # same at advert_int 1: the versions agree
        (100, 200, 3, 121, 721),  # v3 skew scales with the interval...
        (100, 200, 2, 60, 660),  # ...v2 skew stays a fraction of one second
        (254, 100, 3, 0, 300),
        (255, 100, 2, 0, 300),
        (1, 100, 2, 99, 399),
        (1, 4095, 3, 4079, 16364),
    ],
)
def test_formulas(priority: int, adver_cs: int, version: int, skew: int, down: int) -> None:
    assert timers.skew_time(priority, adver_cs, version=version) == skew
    assert timers.master_down_interval(priority, adver_cs, version=version) == down


@given(st.integers(1, 254), st.integers(1, 4095), st.sampled_from([2, 3]))
def test_higher_priority_never_waits_longer(prio: int, adver_cs: int, version: int) -> None:
    lo = timers.master_down_seconds(prio, adver_cs, version=version)
    hi = timers.master_down_seconds(prio + 1, adver_cs, version=version)
    assert hi < lo  # exact seconds keep the order strict, so elections are ordered
    cs_lo = timers.master_down_interval(prio, adver_cs, version=version)
    assert timers.master_down_interval(prio + 1, adver_cs, version=version) <= cs_lo
    assert abs(cs_lo / 100 - lo) < 0.01  # the cs form is the exact one floored


@pytest.mark.parametrize(
    ("seconds", "version", "cs"),
    [
        (1, 2, 100),
        (0.5, 3, 50),
        (0.5, 2, 100),
        (1.2, 2, 200),
        (3, 3, 300),
        (60, 3, 4095),
        (300, 2, 25500),
    ],
)
def test_wire_interval(seconds: float, version: int, cs: int) -> None:
    assert timers.wire_interval_cs(seconds, version=version) == cs
    assert timers.is_valid_interval(cs, version=version)


def test_conversions() -> None:
    assert timers.seconds_to_cs(0.01) == 1
    assert timers.seconds_to_cs(0.001) == 1  # never rounds a positive interval to 0
    assert timers.seconds_to_cs(0) == 0
    assert timers.cs_to_seconds(150) == 1.5
    assert not timers.is_valid_interval(150, version=2)
    assert not timers.is_valid_interval(0, version=3)
