"""VRRP timer formulas, in integer centiseconds: the one place they live.

RFC 5798 §6.1 defines, for v3,

    Skew_Time            = ((256 - Priority) * Master_Adver_Interval) / 256
    Master_Down_Interval = (3 * Master_Adver_Interval) + Skew_Time

RFC 3768 §6.1 (v2) has Skew_Time = (256 - Priority) / 256 seconds whatever
the advertisement interval is. That is the only place the versions differ,
and `skew_time` is where it is handled. keepalived computes the skew from the
effective priority (after trackers), and so does keeplb.

keepalived's VRRP_TIMER_SKEW computes the skew in microseconds. The cs
functions floor it to a centisecond (for config checks, logs and tests); the
machine arms its timers with the `*_seconds` variants, which keep the exact
fraction, so two priorities whose skews floor to the same centisecond still
time out in priority order, as they do with keepalived.
"""

from __future__ import annotations

import math

CS_PER_SECOND = 100


def seconds_to_cs(seconds: float) -> int:
    """Config seconds (keepalived's `advert_int 0.5`) to centiseconds, rounded to nearest.

    keepalived reads advert_int with a resolution of a centisecond; never
    returns less than 1 for a positive input.
    """
    if seconds <= 0:
        return 0
    return max(1, round(seconds * CS_PER_SECOND))


def cs_to_seconds(cs: int) -> float:
    """Centiseconds to the float seconds the machine's `now` uses."""
    return cs / CS_PER_SECOND


def skew_time(priority: int, master_adver_int_cs: int, *, version: int = 3) -> int:
    """Skew_Time in centiseconds for `priority` (RFC 5798 §6.1, RFC 3768 §6.1).

    v3 scales with Master_Adver_Interval; v2 is a fraction of one second.
    """
    if version == 2:
        return ((256 - priority) * CS_PER_SECOND) // 256
    return ((256 - priority) * master_adver_int_cs) // 256


def master_down_interval(priority: int, master_adver_int_cs: int, *, version: int = 3) -> int:
    """Master_Down_Interval in centiseconds: 3 * Master_Adver_Interval + Skew_Time."""
    return 3 * master_adver_int_cs + skew_time(priority, master_adver_int_cs, version=version)


def skew_time_seconds(priority: int, master_adver_int_cs: int, *, version: int = 3) -> float:
    """Skew_Time in seconds, unrounded (what the machine's timers use)."""
    if version == 2:
        return (256 - priority) / 256
    return (256 - priority) * master_adver_int_cs / (256 * CS_PER_SECOND)


def master_down_seconds(priority: int, master_adver_int_cs: int, *, version: int = 3) -> float:
    """Master_Down_Interval in seconds, unrounded."""
    skew = skew_time_seconds(priority, master_adver_int_cs, version=version)
    return 3 * master_adver_int_cs / CS_PER_SECOND + skew


def is_valid_interval(cs: int, *, version: int) -> bool:
    """Whether `cs` can be carried on the wire: v2 whole seconds 1..255, v3 1..4095 cs."""
    if version == 2:
        return cs % CS_PER_SECOND == 0 and 1 <= cs // CS_PER_SECOND <= 255
    return 1 <= cs <= 4095


def wire_interval_cs(seconds: float, *, version: int) -> int:
    """The advertisement interval a config gives, as it will travel on the wire, in cs.

    v2 carries whole seconds: keepalived rounds a fractional v2 advert_int up
    to the next second (with a warning that is the parser's job).
    """
    cs = seconds_to_cs(seconds)
    if version == 2:
        return max(1, min(255, math.ceil(cs / CS_PER_SECOND))) * CS_PER_SECOND
    return max(1, min(4095, cs))
