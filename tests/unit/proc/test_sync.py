"""keeplb.proc.sync: the nbthread state relay, without processes."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, cast

import pytest

from keeplb.config import haproxy
from keeplb.config.model import HaproxyConfig
from keeplb.lb import app
from keeplb.lb.server import AdminState, OpState, ProcessRuntime, ServerRuntime
from keeplb.proc import sync

CFG = """\
defaults
    mode tcp
    timeout connect 1s
    timeout client 1s
    timeout server 1s
backend be
    server s1 127.0.0.1:1 check
    server s2 127.0.0.1:2 check
"""


@pytest.fixture
def cfg(tmp_path: Path) -> HaproxyConfig:
    p = tmp_path / "lb.cfg"
    p.write_text(CFG)
    c, diags = haproxy.parse([str(p)])
    assert not diags.has_errors
    return c


def server(rt: ProcessRuntime, name: str) -> ServerRuntime:
    be = rt.backend("be")
    assert be is not None
    s = be.server(name)
    assert s is not None
    return s


def test_snapshot_applied_before_serving_rebuilds_the_same_states(cfg: HaproxyConfig) -> None:
    src = app.build_runtime(cfg, resolve=False)
    s1, s2 = server(src, "s1"), server(src, "s2")
    s1.op, s1.health, s1.check_status, s1.check_downs = OpState.STOPPED, 0, "L4CON", 3
    s2.admin, s2.uweight, s2.host, s2.port = AdminState.DRAIN, 7, "127.0.0.9", 99
    lines = [sync.encode(sync.server_record(s)) for s in (s1, s2)]
    dst = app.build_runtime(cfg, resolve=False)
    assert sync.apply_static(dst, [r for r in map(sync.decode, lines) if r]) == 2
    d1, d2 = server(dst, "s1"), server(dst, "s2")
    assert (d1.op, d1.health, d1.check_status, d1.check_downs) == (OpState.STOPPED, 0, "L4CON", 3)
    assert (d2.admin, d2.uweight, d2.eweight, d2.host, d2.port) == (
        AdminState.DRAIN, 7, 7, "127.0.0.9", 99)
    bal = app.make_backend_balancer(cfg.backend("be"), [d1, d2])  # type: ignore[arg-type]
    assert bal.pick() is None  # s1 DOWN, s2 draining: nothing to pick


def picks(lb: app.LoadBalancer, n: int = 6) -> set[str]:
    bal = lb.backends["be"].balancer
    out: set[str] = set()
    for _ in range(n):
        s = bal.pick()
        if s is not None:
            out.add(s)
    return out


def test_relayed_lines_change_a_follower_as_local_changes_would(cfg: HaproxyConfig) -> None:
    async def run() -> None:
        lb = app.LoadBalancer(cfg, app.build_runtime(cfg, resolve=False))
        lb.control = app.AppControl(lb)
        sync.silence_follower(lb)
        assert picks(lb) == {"s1", "s2"}
        rec = sync.server_record(server(lb.runtime, "s1"))
        assert sync.apply_live(lb, {**rec, "op": "DOWN", "desc": "Layer4 connection problem"})
        assert picks(lb) == {"s2"}
        assert server(lb.runtime, "s1").check_desc == "Layer4 connection problem"
        assert sync.apply_live(lb, {**rec, "op": "DOWN"})  # the same line again: no change
        assert picks(lb) == {"s2"}
        rec2 = sync.server_record(server(lb.runtime, "s2"))
        assert sync.apply_live(lb, {**rec2, "admin": "maint"})
        assert picks(lb) == set()
        assert sync.apply_live(lb, {**rec, "op": "UP"})
        assert sync.apply_live(lb, {**rec2, "admin": "ready", "uweight": 5})
        assert picks(lb) == {"s1", "s2"}
        assert server(lb.runtime, "s2").uweight == 5
        assert not sync.apply_live(lb, {**rec, "s": "nope"})
        await lb.close()

    asyncio.run(run())


def test_checker_publishes_every_server_change(cfg: HaproxyConfig) -> None:
    seen: list[tuple[str, str]] = []

    async def run() -> None:
        lb = app.LoadBalancer(cfg, app.build_runtime(cfg, resolve=False))
        control = app.AppControl(lb)
        lb.control = control
        lb.on_server_change = lambda s: seen.append((s.name, s.admin.value))
        s1 = server(lb.runtime, "s1")
        control.set_admin_state(s1, AdminState.MAINT)
        control.set_weight(s1, 3)
        lb.on_transition(server(lb.runtime, "s2"), False, None)
        await lb.close()

    asyncio.run(run())
    assert seen == [("s1", "maint"), ("s1", "maint"), ("s2", "ready")]


class FakeWriter:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, b: bytes) -> None:
        self.data += b

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def test_relay_keeps_the_last_line_per_server_and_relays_to_followers() -> None:
    relay = sync.Relay()
    a1 = sync.encode({"b": "be", "s": "s1", "op": "DOWN"})
    a2 = sync.encode({"b": "be", "s": "s1", "op": "UP"})
    b1 = sync.encode({"b": "be", "s": "s2", "op": "DOWN"})
    follower, checker = FakeWriter(), FakeWriter()
    relay.add_worker(2, cast(Any, follower))
    relay.add_worker(1, cast(Any, checker))
    for line in (a1, b"not json\n", b1, a2):
        relay.on_line(line)
    assert follower.data == sync.SYNCED + a1 + b1 + a2
    assert checker.data == sync.SYNCED  # the checker only talks
    late = FakeWriter()
    relay.add_worker(3, cast(Any, late))
    assert late.data == a2 + b1 + sync.SYNCED or late.data == b1 + a2 + sync.SYNCED
    relay.remove_worker(2, cast(Any, follower))
    relay.on_line(a1)
    assert follower.closed and not follower.data.endswith(a1 + a1)


def test_worker_link_reads_the_snapshot_and_keeps_what_follows() -> None:
    mine, theirs = socket.socketpair()
    try:
        rec = {"b": "be", "s": "s1", "op": "DOWN"}
        live = sync.encode({"b": "be", "s": "s2", "op": "DOWN"})
        mine.sendall(sync.encode(rec) + b"garbage\n" + sync.SYNCED + live)
        link = sync.WorkerLink(theirs.detach())
        assert link.read_snapshot(timeout=2) == [rec]
        assert link.buf == live

        async def publish() -> None:
            link.publish(server_stub())
            await asyncio.sleep(0)

        asyncio.run(publish())
        got = sync.decode(mine.recv(4096).rstrip(b"\n"))
        assert got is not None and got["s"] == "x" and got["op"] == "DOWN"
        link.sock.close()
    finally:
        mine.close()


def server_stub() -> ServerRuntime:
    from keeplb.config.model import Server

    return ServerRuntime(config=cast(Server, type("S", (), {"name": "x"})()), backend="be",
                         sid=1, host="127.0.0.1", port=1, uweight=1, op=OpState.STOPPED)


def test_no_snapshot_within_the_timeout_gives_what_came() -> None:
    mine, theirs = socket.socketpair()
    try:
        mine.sendall(sync.encode({"b": "be", "s": "s1"}))
        link = sync.WorkerLink(theirs.detach())
        assert link.read_snapshot(timeout=0.2) == [{"b": "be", "s": "s1"}]
        link.sock.close()
    finally:
        mine.close()
