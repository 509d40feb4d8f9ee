"""keeplb.lb.server: the parts of the runtime state with arithmetic in them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.lb.server import ProcessRuntime


def proc(nbthread: int, worker: int) -> ProcessRuntime:
    return ProcessRuntime(pid=1, started=0.0, maxconn=100, nbthread=nbthread, worker=worker)


@pytest.mark.parametrize(("nbthread", "limit", "parts"), [
    (1, 7, [7]),
    (2, 5, [3, 2]),
    (2, 1, [1, 0]),
    (3, 10, [4, 3, 3]),
    (4, 2, [1, 1, 0, 0]),
])
def test_each_worker_takes_its_part_of_a_limit(nbthread: int, limit: int, parts: list[int]
                                               ) -> None:
    assert [proc(nbthread, w).share(limit) for w in range(1, nbthread + 1)] == parts


@given(st.integers(1, 64), st.integers(0, 100_000))
def test_the_parts_add_up_to_the_limit_and_differ_by_one_at_most(nbthread: int, limit: int
                                                                  ) -> None:
    parts = [proc(nbthread, w).share(limit) for w in range(1, nbthread + 1)]
    assert sum(parts) == limit
    assert max(parts) - min(parts) <= 1


@given(st.integers(1, 64), st.integers(1, 100_000))
def test_a_servers_limit_is_shared_but_each_worker_keeps_one(nbthread: int, limit: int) -> None:
    parts = [proc(nbthread, w).server_share(limit) for w in range(1, nbthread + 1)]
    assert min(parts) >= 1
    assert sum(parts) == max(limit, nbthread)


def test_freq_ctr_counts_the_last_second_as_haproxy() -> None:
    from keeplb.lb.server import FreqCtr

    f = FreqCtr()
    for i in range(10):
        f.add(100.0 + i / 10)
    assert f.rate(100.95) == 10
    assert f.delay_below(10, 100.95) == pytest.approx(0.051)
    assert f.rate(101.5) == 5  # half of the previous second still counts
    assert f.rate(102.5) == 0


@given(st.lists(st.floats(0.0, 3.0), min_size=1, max_size=200), st.integers(1, 50))
def test_after_delay_below_the_rate_is_below_the_limit(times: list[float], limit: int) -> None:
    from keeplb.lb.server import FreqCtr

    f = FreqCtr()
    for t in sorted(times):
        f.add(10.0 + t)
    now = 10.0 + max(times)
    d = f.delay_below(limit, now)
    assert d >= 0.0
    assert f.rate(now + d) < limit
