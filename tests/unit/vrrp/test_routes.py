"""keepalived's route words -> netlink arguments (net.route_spec, pure)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from keeplb.config.model import VirtualRoute
from keeplb.vrrp.net import RTNH_F_ONLINK, RTPROT_KEEPALIVED, route_spec


@pytest.mark.parametrize(
    "words,dst,dev,expected,ignored",
    [
        ("10.78.0.0/24 via 10.77.0.254 dev eth0", "10.78.0.0/24", "eth0",
         {"gateway": "10.77.0.254", "dst": "10.78.0.0", "dst_len": 24}, ()),
        ("default via 10.77.0.254", "0.0.0.0/0", None, {"dst_len": 0}, ()),
        ("default via fd77::1", "::/0", None, {"family": socket.AF_INET6}, ()),
        ("blackhole 10.9.0.0/16", "10.9.0.0/16", None, {"type": "blackhole"}, ()),
        ("src 10.77.0.1 to 10.1.0.0/16 via 10.77.0.254 dev eth0 metric 5 table 100 mtu 1400 onlink",
         "10.1.0.0/16", "eth0",
         {"prefsrc": "10.77.0.1", "priority": 5, "table": 100, "flags": RTNH_F_ONLINK}, ("mtu",)),
        ("10.5.0.7/16 dev eth0 scope link no_track", "10.5.0.0/16", "eth0", {"scope": 253}, ()),
        ("fd00::/64 via fe80::1 dev eth0 table main", "fd00::/64", "eth0",
         {"family": socket.AF_INET6, "table": 254}, ()),
    ],
)
def test_route_words(words: str, dst: str, dev: str | None, expected: dict[str, Any],
                     ignored: tuple[str, ...]) -> None:
    spec = route_spec(VirtualRoute(tuple(words.split())))
    assert spec is not None
    assert (spec.dst, spec.dev, spec.ignored) == (dst, dev, ignored)
    assert spec.kwargs["proto"] == RTPROT_KEEPALIVED  # shown as "proto keepalived", as keepalived's
    for key, value in expected.items():
        assert spec.kwargs[key] == value, key


@pytest.mark.parametrize("words", ["via 10.77.0.254 dev eth0", "to", "dev eth0 not-a-net"])
def test_route_without_destination(words: str) -> None:
    assert route_spec(VirtualRoute(tuple(words.split()))) is None
