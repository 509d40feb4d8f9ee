"""Balancers: distribution, dynamics, stickiness, backups (pure, no IO)."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeplb.config.model import Balance
from keeplb.lb.balance import (
    BALANCERS,
    BalancedServer,
    Balancer,
    LeastConn,
    RoundRobin,
    Source,
    make_balancer,
    weight_change_error,
)

weights_st = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8)


def _up(servers: list[BalancedServer], algo: str = "roundrobin", **kw: object) -> Balancer:
    b = make_balancer(Balance(algorithm=algo, **kw), servers)  # type: ignore[arg-type]
    for s in servers:
        b.set_up(s.name)
    return b


def _servers(weights: list[int]) -> list[BalancedServer]:
    return [BalancedServer(f"s{i}", w) for i, w in enumerate(weights)]


def _keys(n: int) -> list[bytes]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [ipaddress.IPv4Address(base + i * 7919).packed for i in range(n)]


def test_registry_has_haproxy_names() -> None:
    assert set(BALANCERS) == {"roundrobin", "static-rr", "leastconn", "first", "source",
                              "random"}
    with pytest.raises(ValueError, match="not supported"):
        make_balancer(Balance(algorithm="uri"), _servers([1]))


@pytest.mark.parametrize("algo", ["roundrobin", "static-rr"])
@given(weights=weights_st, cycles=st.integers(min_value=1, max_value=3))
@settings(max_examples=60, deadline=None)
def test_wrr_cycle_equals_weights(algo: str, weights: list[int], cycles: int) -> None:
    b = _up(_servers(weights), algo)
    total = sum(weights)
    for _ in range(cycles):
        got = Counter(b.pick() for _ in range(total))
        assert got == Counter({f"s{i}": w for i, w in enumerate(weights)})


@given(weights=weights_st)
@settings(max_examples=60, deadline=None)
def test_wrr_is_smooth(weights: list[int]) -> None:
    """Turns are interleaved: after any k picks each server had about k*w/total of
    them (a burst-per-server WRR would be off by up to its whole weight)."""
    b = _up(_servers(weights))
    total = sum(weights)
    count = Counter[str]()
    for k in range(1, total + 1):
        name = b.pick()
        assert name is not None
        count[name] += 1
        for i, w in enumerate(weights):
            assert abs(count[f"s{i}"] - k * w / total) < 2


@given(weights=st.lists(st.integers(min_value=1, max_value=20), min_size=2, max_size=6),
       which=st.integers(min_value=0, max_value=5),
       new=st.integers(min_value=0, max_value=20),
       warm=st.integers(min_value=0, max_value=30))
@settings(max_examples=60, deadline=None)
def test_roundrobin_weight_change_applies_at_once(weights: list[int], which: int, new: int,
                                                  warm: int) -> None:
    b = _up(_servers(weights))
    for _ in range(warm):
        b.pick()
    which %= len(weights)
    b.update_weight(f"s{which}", new)
    expected = {f"s{i}": (new if i == which else w) for i, w in enumerate(weights)}
    expected = {k: v for k, v in expected.items() if v}
    got = Counter(b.pick() for _ in range(sum(expected.values())))
    assert got == Counter(expected)


def test_static_rr_ignores_weight_changes_except_zero() -> None:
    b = _up(_servers([3, 1]), "static-rr")
    assert not b.dynamic
    b.update_weight("s0", 1)  # not 0 nor 100%: no effect, as in haproxy
    assert Counter(b.pick() for _ in range(4)) == Counter({"s0": 3, "s1": 1})
    b.update_weight("s0", 0)
    assert {b.pick() for _ in range(4)} == {"s1"}
    assert weight_change_error(b, 3, 2) is not None
    assert weight_change_error(b, 3, 0) is None
    assert weight_change_error(_up(_servers([3])), 3, 2) is None


def test_set_down_and_up() -> None:
    b = _up(_servers([1, 1, 1]))
    b.set_down("s1")
    assert {b.pick() for _ in range(10)} == {"s0", "s2"}
    b.set_up("s1")
    assert {b.pick() for _ in range(3)} == {"s0", "s1", "s2"}


@pytest.mark.parametrize("algo", sorted(BALANCERS))
def test_all_down_gives_none(algo: str) -> None:
    servers = _servers([1, 2])
    b = make_balancer(Balance(algorithm=algo), servers)
    assert b.pick(b"\x0a\x00\x00\x01") is None  # servers start DOWN
    b.set_up("s0")
    assert b.pick(b"\x0a\x00\x00\x01") == "s0"
    b.set_down("s0")
    assert b.pick(b"\x0a\x00\x00\x01") is None
    b.set_up("s1")
    b.update_weight("s1", 0)
    assert b.pick() is None


@pytest.mark.parametrize("algo", sorted(BALANCERS))
def test_backups_only_when_no_active(algo: str) -> None:
    servers = [BalancedServer("a1", 1), BalancedServer("a2", 1),
               BalancedServer("b1", 1, backup=True), BalancedServer("b2", 1, backup=True)]
    b = _up(servers, algo)
    picks = {b.pick(k) for k in _keys(50)}
    assert picks <= {"a1", "a2"} and picks
    b.set_down("a1")
    b.set_down("a2")
    assert {b.pick(k) for k in _keys(50)} == {"b1"}  # only the first backup
    b.set_down("b1")
    assert {b.pick(k) for k in _keys(50)} == {"b2"}
    b.set_up("a2")
    assert {b.pick(k) for k in _keys(50)} == {"a2"}


def test_allbackups_uses_every_backup() -> None:
    servers = [BalancedServer("a1", 1), BalancedServer("b1", 1, backup=True),
               BalancedServer("b2", 1, backup=True)]
    b = make_balancer(Balance(), servers, allbackups=True)
    b.set_up("b1")
    b.set_up("b2")
    assert Counter(b.pick() for _ in range(4)) == Counter({"b1": 2, "b2": 2})


@pytest.mark.parametrize("algo", sorted(BALANCERS))
def test_avoid_picks_another_server_when_possible(algo: str) -> None:
    b = _up(_servers([1, 1, 1]), algo)
    for k in _keys(30):
        first = b.pick(k)
        assert first is not None
        assert b.pick(k, avoid=first) != first
    only = _up(_servers([1]), algo)
    assert only.pick(b"k", avoid="s0") == "s0"


def test_leastconn_picks_least_loaded() -> None:
    b = _up(_servers([1, 1, 1]), "leastconn")
    assert isinstance(b, LeastConn)
    for _ in range(3):
        b.take_conn("s0")
    b.take_conn("s1")
    assert b.pick() == "s2"
    b.take_conn("s2")
    b.take_conn("s2")
    assert b.pick() == "s1"  # 1 conn vs s2's 2 and s0's 3
    for _ in range(3):
        b.drop_conn("s0")
    assert b.pick() == "s0"


def test_leastconn_weighs_connections() -> None:
    b = _up([BalancedServer("big", 4), BalancedServer("small", 1)], "leastconn")
    for _ in range(3):
        b.take_conn("big")
    assert b.pick() == "small"  # 3/4 > 0/1
    b.take_conn("small")
    assert b.pick() == "big"  # 3/4 < 1/1


@given(n=st.integers(min_value=1, max_value=6))
def test_leastconn_round_robin_among_equals(n: int) -> None:
    b = _up(_servers([1] * n), "leastconn")
    assert sorted(b.pick() or "" for _ in range(n)) == sorted(f"s{i}" for i in range(n))


@given(ops=st.lists(st.tuples(st.sampled_from(["take", "drop"]), st.integers(0, 3)),
                    max_size=40))
@settings(max_examples=60, deadline=None)
def test_leastconn_pick_is_minimal(ops: list[tuple[str, int]]) -> None:
    weights = [1, 2, 3, 1]
    b = _up(_servers(weights), "leastconn")
    conns = [0] * 4
    for op, i in ops:
        if op == "take":
            b.take_conn(f"s{i}")
            conns[i] += 1
        else:
            b.drop_conn(f"s{i}")
            conns[i] = max(0, conns[i] - 1)
    picked = b.pick()
    assert picked is not None
    p = int(picked[1:])
    assert all(conns[p] * weights[j] <= conns[j] * weights[p] for j in range(4))


def test_first_fills_servers_in_order() -> None:
    servers = [BalancedServer("s0", 1, maxconn=2), BalancedServer("s1", 1, maxconn=1),
               BalancedServer("s2", 1, maxconn=0)]
    b = _up(servers, "first")
    got = []
    for _ in range(5):
        name = b.pick()
        assert name is not None
        b.take_conn(name)
        got.append(name)
    assert got == ["s0", "s0", "s1", "s2", "s2"]
    b.drop_conn("s0")
    assert b.pick() == "s0"


def test_first_all_full_gives_none() -> None:
    b = _up([BalancedServer("s0", 1, maxconn=1)], "first")
    b.take_conn("s0")
    assert b.pick() is None


@pytest.mark.parametrize("hash_type", ["map-based", "consistent"])
def test_source_is_sticky(hash_type: str) -> None:
    b = _up(_servers([1, 2, 3]), "source", hash_type=hash_type)
    keys = _keys(300)
    first = [b.pick(k) for k in keys]
    for _ in range(3):
        assert [b.pick(k) for k in keys] == first
    # and spreads keys over every server, roughly by weight
    c = Counter(first)
    assert set(c) == {"s0", "s1", "s2"}
    assert c["s2"] > c["s0"]


def test_source_without_key_is_round_robin() -> None:
    b = _up(_servers([1, 1]), "source")
    assert Counter(b.pick() for _ in range(4)) == Counter({"s0": 2, "s1": 2})


@given(n=st.integers(min_value=2, max_value=10), leaving=st.integers(min_value=0, max_value=9))
@settings(max_examples=25, deadline=None)
def test_consistent_hash_moves_about_one_nth(n: int, leaving: int) -> None:
    servers = _servers([1] * n)
    b = _up(servers, "source", hash_type="consistent")
    assert isinstance(b, Source) and b.dynamic
    keys = _keys(10_000)
    before = [b.pick(k) for k in keys]
    gone = f"s{leaving % n}"
    b.set_down(gone)
    after = [b.pick(k) for k in keys]
    moved = sum(1 for x, y in zip(before, after, strict=True) if x != y)
    # only the keys of the server that left move, and they are about 1/N
    assert all(y == x for x, y in zip(before, after, strict=True) if x != gone)
    assert moved < 1.5 * len(keys) / n
    b.set_up(gone)
    assert [b.pick(k) for k in keys] == before


def test_map_based_source_is_static() -> None:
    b = _up(_servers([1, 1]), "source")
    assert not b.dynamic


def test_unknown_server_is_a_key_error() -> None:
    b = RoundRobin(_servers([1]))
    with pytest.raises(KeyError, match="no server 'x'"):
        b.set_up("x")


def test_random_follows_weights_and_prefers_the_less_loaded() -> None:
    servers = _servers([1, 3])
    b = make_balancer(Balance(algorithm="random", argument="1"), servers,
                      rng=random.Random(7))
    for s in servers:
        b.set_up(s.name)
    c = Counter(b.pick() for _ in range(8000))
    assert 0.2 < c["s0"] / 8000 < 0.3  # weight 1 of 4
    two = make_balancer(Balance(algorithm="random"), _servers([1, 1]), rng=random.Random(7))
    two.set_up("s0")
    two.set_up("s1")
    for _ in range(5):
        two.take_conn("s0")
    # with two draws the loaded server wins only when both draws hit it (~1/4)
    c2 = Counter(two.pick() for _ in range(4000))
    assert c2["s0"] / 4000 < 0.32
