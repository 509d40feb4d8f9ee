"""keeplb.proc.sync: the nbthread state relay, without processes."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from keeplb.config import haproxy
from keeplb.config.model import HaproxyConfig
from keeplb.lb import app
from keeplb.lb.server import AdminState, FreqCtr, OpState, ProcessRuntime, ServerRuntime
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


def parsed(path: Path, text: str) -> HaproxyConfig:
    path.write_text(text)
    c, diags = haproxy.parse([str(path)])
    assert not diags.has_errors
    return c


@pytest.fixture
def cfg(tmp_path: Path) -> HaproxyConfig:
    return parsed(tmp_path / "lb.cfg", CFG)


@pytest.fixture
def lb_filters() -> Iterator[None]:
    """silence_follower() adds filters to the 'keeplb.lb' logger: removed after the test."""
    logger = logging.getLogger("keeplb.lb")
    before = list(logger.filters)
    yield
    logger.filters[:] = before


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


@pytest.mark.usefixtures("lb_filters")
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
        relay.on_line(1, line)
    relay.on_line(2, a1)  # a follower's state line: not the checker's, dropped
    assert follower.data == sync.SYNCED + a1 + b1 + a2
    assert checker.data == sync.SYNCED  # the checker's own lines do not come back
    late = FakeWriter()
    relay.add_worker(3, cast(Any, late))
    assert late.data == a2 + b1 + sync.SYNCED or late.data == b1 + a2 + sync.SYNCED
    relay.remove_worker(2, cast(Any, follower))
    relay.on_line(1, a1)
    assert follower.closed and not follower.data.endswith(a1 + a1)


def test_relay_keeps_frontend_and_global_lines_and_passes_counters_to_every_other_worker(
) -> None:
    relay = sync.Relay()
    w1, w2, w3 = FakeWriter(), FakeWriter(), FakeWriter()
    for i, w in enumerate((w1, w2, w3), start=1):
        relay.add_worker(i, cast(Any, w))
    off = sync.encode({"f": "fe", "disabled": True, "stopped": False, "maxconn": 0})
    on = sync.encode({"f": "fe", "disabled": False, "stopped": False, "maxconn": 7})
    glob = sync.encode({"global": True, "maxconn": 50, "hard": 100, "rl": {}})
    ctr2 = sync.encode({"ctr": 2, "cur": 1})
    ctr1 = sync.encode({"ctr": 1, "cur": 3})
    for sender, line in ((1, off), (1, glob), (2, ctr2), (1, ctr1), (1, on)):
        relay.on_line(sender, line)
    assert w1.data == sync.SYNCED + ctr2
    assert w2.data == sync.SYNCED + off + glob + ctr1 + on
    assert w3.data == sync.SYNCED + off + glob + ctr2 + ctr1 + on
    assert set(relay.snapshot.values()) == {on, glob}  # counters are no state


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


FE_CFG = CFG + """\
frontend fe
    bind 127.0.0.1:10
    default_backend be
"""


@pytest.fixture
def fe_cfg(tmp_path: Path) -> HaproxyConfig:
    return parsed(tmp_path / "fe.cfg", FE_CFG)


def test_frontend_and_global_snapshot_lines_apply_before_serving(fe_cfg: HaproxyConfig) -> None:
    rt = app.build_runtime(fe_cfg, resolve=False)
    recs = [{"f": "fe", "disabled": True, "stopped": False, "maxconn": 9},
            {"global": True, "maxconn": 40, "hard": 80, "rl": {"sessions": 5, "x": "bad"}},
            {"f": "nope", "disabled": True}]
    assert sync.apply_static(rt, recs) == 2
    fe = rt.frontend("fe")
    assert fe is not None
    assert (fe.disabled, fe.paused, fe.stopped, fe.maxconn) == (True, True, False, 9)
    assert (rt.maxconn, rt.hard_maxconn, rt.rate_limits) == (40, 80, {"sessions": 5})
    lb = app.LoadBalancer(fe_cfg, rt)
    assert not lb.frontends[0].can_accept()  # a restarted worker stays disabled


@pytest.mark.usefixtures("lb_filters")
def test_checker_publishes_frontend_and_process_changes_and_a_follower_applies_them(
        fe_cfg: HaproxyConfig) -> None:
    lines: list[dict[str, Any]] = []

    async def run() -> None:
        checker = app.LoadBalancer(fe_cfg, app.build_runtime(fe_cfg, resolve=False))
        control = app.AppControl(checker)
        checker.control = control
        checker.on_frontend_change = lambda fe: lines.append(sync.frontend_record(fe))
        checker.on_process_change = lambda rt: lines.append(sync.global_record(rt))
        fe = checker.runtime.frontends[0]
        control.disable_frontend(fe)
        control.set_frontend_maxconn(fe, 12)
        control.set_global_maxconn(checker.runtime, 30)
        control.set_rate_limit(checker.runtime, "connections", 4)
        control.enable_frontend(fe)
        control.shutdown_frontend(fe)

        follower = app.LoadBalancer(fe_cfg, app.build_runtime(fe_cfg, resolve=False))
        follower.control = app.AppControl(follower)
        follower.control.shared_sockets = True
        sync.silence_follower(follower)
        ffe = follower.runtime.frontends[0]
        states = []
        for rec in lines:
            rec = sync.decode(sync.encode(rec).rstrip(b"\n")) or {}
            assert sync.apply_live(follower, rec)
            assert sync.apply_live(follower, rec)  # twice: the same state
            states.append((ffe.disabled, ffe.paused, ffe.stopped, ffe.maxconn))
        assert states == [(True, True, False, 0), (True, True, False, 12),
                          (True, True, False, 12), (True, True, False, 12),
                          (False, False, False, 12), (False, True, True, 12)]
        assert states[-1] == (fe.disabled, fe.paused, fe.stopped, fe.maxconn)
        frt = follower.runtime
        assert (frt.maxconn, frt.rate_limits) == (30, {"connections": 4})
        assert not sync.apply_live(follower, {"f": "nope", "disabled": True})
        await checker.close()
        await follower.close()

    asyncio.run(run())
    assert [next(iter(r)) for r in lines] == ["f", "f", "global", "global", "f", "f"]


@pytest.mark.usefixtures("lb_filters")
def test_a_follower_hides_the_accept_einval_of_a_shared_pause(
        fe_cfg: HaproxyConfig, caplog: pytest.LogCaptureFixture) -> None:
    sync.silence_follower(app.LoadBalancer(fe_cfg, app.build_runtime(fe_cfg, resolve=False)))
    logger = logging.getLogger("keeplb.lb")
    with caplog.at_level(logging.WARNING, "keeplb.lb"):
        for code in (errno.EINVAL, errno.EMFILE):
            logger.warning("%s: cannot accept on %s: %s; retrying", "fe", "k", os.strerror(code))
    assert [r.getMessage() for r in caplog.records] == [
        f"fe: cannot accept on k: {os.strerror(errno.EMFILE)}; retrying"]


def test_stat_rows_add_up_every_workers_sessions_and_queues(fe_cfg: HaproxyConfig) -> None:
    from keeplb.lb import stats

    own, peer = (app.build_runtime(fe_cfg, resolve=False) for _ in range(2))
    for rt, cur, most, queued in ((own, 3, 5, (1, 1)), (peer, 4, 4, (2, 6))):
        fe, be = rt.frontends[0], rt.backends[0]
        fe.counters.cur_sess, fe.counters.max_sess = cur, most
        be.queue_cur, be.queue_max = queued
        server(rt, "s1").queue_cur, server(rt, "s1").queue_max = queued
    own.peer_counters[2] = sync.decode(sync.encode(sync.counters_record(peer, 2))) or {}
    fe_row = stats.frontend_row(own, own.frontends[0])
    # smax: the workers' peaks (5, 4) need not have coincided, but 7 are open now
    assert (fe_row["scur"], fe_row["smax"]) == (7, 7)
    be_row = stats.backend_row(own, own.backends[0], 0.0)
    sv_row = stats.server_row(own, own.backends[0], server(own, "s1"), 0.0)
    assert (be_row["qcur"], be_row["qmax"]) == (sv_row["qcur"], sv_row["qmax"]) == (3, 6)


def test_clear_counters_reaches_every_worker_once_and_drops_older_counters_lines(
        fe_cfg: HaproxyConfig) -> None:
    from keeplb.lb.runtime import CliSession

    def counted(rt: ProcessRuntime, n: int) -> None:
        c = rt.frontends[0].counters
        c.cur_sess, c.max_sess, c.total_sess, c.conn_rate_max = 1, n, n, n

    checker = app.LoadBalancer(fe_cfg, app.build_runtime(fe_cfg, resolve=False))
    checker.control = app.AppControl(checker)
    lines: list[bytes] = []
    checker.on_counters_clear = lambda n, everything: lines.append(
        sync.encode(sync.clear_record(n, everything)))
    follower = app.build_runtime(fe_cfg, resolve=False)
    follower.worker = 2
    follower_lb = app.LoadBalancer(fe_cfg, follower)
    follower_lb.control = app.AppControl(follower_lb)
    for rt in (checker.runtime, follower):
        counted(rt, 9)
    stale = sync.encode(sync.counters_record(follower, 2))  # sent before the clear
    checker.runtime.peer_counters[2] = sync.decode(stale) or {}
    follower.peer_counters[1] = sync.decode(sync.encode(
        sync.counters_record(checker.runtime, 1))) or {}

    cli = CliSession(checker.runtime, checker.control)
    assert cli.execute("clear counters") == ""
    assert cli.execute("clear counters all") == ""
    assert [sync.decode(x) for x in lines] == [{"clear": "max", "n": 1}, {"clear": "all", "n": 2}]
    # the master relays them to the followers and keeps the last one's number
    relay = sync.Relay()
    w1, w2 = FakeWriter(), FakeWriter()
    relay.add_worker(1, cast(Any, w1))
    relay.add_worker(2, cast(Any, w2))
    for line in lines:
        relay.on_line(1, line)
    assert w1.data == sync.SYNCED and w2.data == sync.SYNCED + b"".join(lines)
    assert list(relay.snapshot.values()) == [lines[1]]

    for line in lines:
        assert sync.apply_live(follower_lb, sync.decode(line.rstrip(b"\n")) or {})
    for rt in (checker.runtime, follower):  # its own counters and its copy of the other's
        other = next(iter(rt.peer_counters.values()))
        assert other["fe"]["fe"][:3] == [1, 1, 0] and other["clr"] == 2
        c = rt.frontends[0].counters
        assert (c.cur_sess, c.max_sess, c.total_sess, c.conn_rate_max) == (1, 1, 0, 0)
        assert rt.clear_epoch == 2
    counted(follower, 5)
    assert sync.apply_live(follower_lb, sync.decode(lines[1].rstrip(b"\n")) or {})
    assert follower.frontends[0].counters.total_sess == 5  # a clear applies once

    # a restarted worker takes the number over from the snapshot, clears nothing
    restarted = app.build_runtime(fe_cfg, resolve=False)
    counted(restarted, 3)
    assert sync.apply_static(restarted, [sync.decode(x.rstrip(b"\n")) or {}
                                         for x in relay.snapshot.values()]) == 1
    assert (restarted.clear_epoch, restarted.frontends[0].counters.total_sess) == (2, 3)

    # worker 1 ignores the follower's counters line sent before the clear
    mine, theirs = socket.socketpair()
    fresh = sync.encode(sync.counters_record(follower, 2))
    mine.sendall(stale + fresh)
    mine.close()
    checker.runtime.peer_counters.clear()
    kept: list[int] = []

    async def follow() -> None:
        link = sync.WorkerLink(theirs.detach())
        link.sock.setblocking(False)
        orig = checker.runtime.peer_counters

        class Spy(dict[int, dict[str, Any]]):
            def __setitem__(self, k: int, v: dict[str, Any]) -> None:
                kept.append(v["fe"]["fe"][2])
                super().__setitem__(k, v)

        checker.runtime.peer_counters = Spy(orig)
        await link.follow(checker, 1, apply=False)
        link.sock.close()
        await checker.close()
        await follower_lb.close()

    asyncio.run(follow())
    assert kept == [5]  # the fresh line only (stot 5), not the stale one (9)


def test_a_followers_request_goes_to_the_checker_only_and_is_not_kept() -> None:
    relay = sync.Relay()
    checker, f2, f3 = FakeWriter(), FakeWriter(), FakeWriter()
    for rid, w in ((1, checker), (2, f2), (3, f3)):
        relay.add_worker(rid, cast(Any, w))
    req = sync.encode({"req": "admin", "b": "be", "s": "s1", "v": "maint"})
    relay.on_line(2, req)
    relay.on_line(1, req)  # the checker asks nobody
    assert checker.data == sync.SYNCED + req
    assert f2.data == f3.data == sync.SYNCED
    assert relay.snapshot == {}


@pytest.mark.usefixtures("lb_filters")
def test_the_checker_applies_a_request_through_its_control_and_publishes(
        cfg: HaproxyConfig) -> None:
    seen: list[tuple[str, str, int]] = []

    async def run() -> None:
        lb = app.LoadBalancer(cfg, app.build_runtime(cfg, resolve=False))
        lb.control = app.AppControl(lb)
        lb.on_server_change = lambda s: seen.append((s.name, s.admin.value, s.uweight))
        s1 = server(lb.runtime, "s1")
        assert sync.apply_request(lb, sync.request_record(s1, "admin", "maint"))
        assert sync.apply_request(lb, sync.request_record(s1, "weight", 7))
        assert picks(lb) == {"s2"}
        for bad in ({"req": "admin", "b": "be", "s": "s1", "v": "sideways"},
                    {"req": "weight", "b": "be", "s": "s1", "v": -1},
                    {"req": "weight", "b": "be", "s": "s1", "v": True},
                    {"req": "addr", "b": "be", "s": "s1", "v": "127.0.0.1"},
                    {"req": "reboot", "b": "be", "s": "s1", "v": 1},
                    {"req": "admin", "b": "be", "s": "nope", "v": "ready"}):
            assert not sync.apply_request(lb, bad)
        await lb.close()

    asyncio.run(run())
    assert seen == [("s1", "maint", 1), ("s1", "maint", 7)]


def at_rate(ctr: FreqCtr, n: int) -> None:
    """`ctr` with `n` events in the second that begins now (its rate() is `n`
    for that second)."""
    ctr.start, ctr.curr, ctr.prev = time.monotonic(), n, 0


def info(rt: ProcessRuntime) -> dict[str, Any]:
    from keeplb.lb import stats

    return dict(stats.info_fields(rt))


def test_rates_add_up_every_workers_and_an_older_line_counts_as_zero(
        fe_cfg: HaproxyConfig) -> None:
    from keeplb.lb import stats

    own, peer = (app.build_runtime(fe_cfg, resolve=False) for _ in range(2))
    for rt, conns, sess in ((own, 5, 4), (peer, 7, 6)):
        at_rate(rt.conn_rate, conns)
        at_rate(rt.sess_rate, sess)
        at_rate(rt.frontends[0].sess_rate, sess)
        rt.max_conn_rate, rt.max_sess_rate = conns, sess
    line = sync.counters_record(peer, 2)
    assert (line["cr"], line["sr"], line["mcr"], line["msr"], line["fr"]) == (
        7, 6, 7, 6, {"fe": 6})
    own.peer_counters[2] = sync.decode(sync.encode(line)) or {}
    got = info(own)
    assert (got["ConnRate"], got["SessRate"]) == (12, 10)
    row = stats.frontend_row(own, own.frontends[0])
    assert (row["rate"], row["conn_rate"]) == (10, 10)
    # no line has arrived through follow() here: the maxima are each worker's
    assert (got["MaxConnRate"], got["MaxSessRate"]) == (7, 6)
    assert (row["rate_max"], row["conn_rate_max"]) == (0, 0)
    stats.note_rate_peaks(own, time.monotonic())  # as when it arrives
    got = info(own)
    assert (got["MaxConnRate"], got["MaxSessRate"]) == (12, 10)
    row = stats.frontend_row(own, own.frontends[0])
    assert (row["rate_max"], row["conn_rate_max"]) == (10, 10)
    # an older worker's line has no rates: it adds nothing (and breaks nothing)
    for key in ("cr", "sr", "mcr", "msr", "fr"):
        del own.peer_counters[2][key]
    got = info(own)
    assert (got["ConnRate"], got["SessRate"], got["MaxConnRate"]) == (5, 4, 12)
    assert stats.frontend_row(own, own.frontends[0])["rate"] == 4
    own.peer_counters[2].update(cr="x", sr=-3, fr={"fe": None})  # nor does a broken one
    assert (info(own)["ConnRate"], info(own)["SessRate"]) == (5, 4)


def test_max_rates_are_the_sums_seen_as_lines_arrive_not_the_sum_of_the_maxima(
        fe_cfg: HaproxyConfig) -> None:
    from keeplb.lb import stats

    own, peer = (app.build_runtime(fe_cfg, resolve=False) for _ in range(2))
    own.frontends[0].counters.conn_rate_max = own.max_conn_rate = 9  # an earlier peak of its own
    at_rate(own.conn_rate, 5)
    at_rate(own.frontends[0].sess_rate, 5)
    at_rate(peer.conn_rate, 7)
    at_rate(peer.frontends[0].sess_rate, 7)
    peer.frontends[0].counters.conn_rate_max = peer.max_conn_rate = 8
    own.peer_counters[2] = sync.counters_record(peer, 2)
    stats.note_rate_peaks(own, time.monotonic())  # the line arrived: 5 + 7 now
    assert own.max_conn_rate == own.frontends[0].counters.conn_rate_max == 12
    # both workers calm down: the peak of the sum stays, the sum of the two
    # workers' peaks (9 + 8, never reached together) is not reported
    at_rate(own.conn_rate, 0)
    at_rate(own.frontends[0].sess_rate, 0)
    at_rate(peer.conn_rate, 1)
    at_rate(peer.frontends[0].sess_rate, 1)
    own.peer_counters[2] = sync.counters_record(peer, 2)
    stats.note_rate_peaks(own, time.monotonic())
    got = info(own)
    assert (got["ConnRate"], got["MaxConnRate"]) == (1, 12)
    row = stats.frontend_row(own, own.frontends[0])
    assert (row["rate"], row["rate_max"], row["conn_rate_max"]) == (1, 12, 12)
    # a peer's own peak between two of its lines counts too
    own.peer_counters[2]["mcr"] = 15
    assert info(own)["MaxConnRate"] == 15
    # `clear counters`: every maximum restarts at 0, as haproxy's, until the
    # next event or line raises it (the peer's is cleared until its next line)
    own.clear_counters(False)
    got = info(own)
    assert (got["ConnRate"], got["MaxConnRate"], got["MaxSessRate"]) == (1, 0, 0)
    assert stats.frontend_row(own, own.frontends[0])["rate_max"] == 0
    stats.note_rate_peaks(own, time.monotonic())
    assert info(own)["MaxConnRate"] == 1


def test_a_counters_line_arriving_raises_the_maxima_to_the_sum(fe_cfg: HaproxyConfig) -> None:
    own, peer = (app.build_runtime(fe_cfg, resolve=False) for _ in range(2))
    lb = app.LoadBalancer(fe_cfg, own)
    at_rate(own.sess_rate, 3)
    at_rate(peer.sess_rate, 4)
    mine, theirs = socket.socketpair()
    mine.sendall(sync.encode(sync.counters_record(peer, 2)))
    mine.close()

    async def follow() -> None:
        link = sync.WorkerLink(theirs.detach())
        link.sock.setblocking(False)
        await link.follow(lb, 1, apply=False)
        link.sock.close()
        await lb.close()

    asyncio.run(follow())
    assert (own.max_sess_rate, own.max_conn_rate) == (7, 0)


@pytest.mark.usefixtures("lb_filters")
def test_a_lifted_rate_limit_resumes_a_followers_frontends_at_once(
        fe_cfg: HaproxyConfig) -> None:
    async def run() -> None:
        rt = app.build_runtime(fe_cfg, resolve=False)
        rt.rate_limits = {"connections": 4, "sessions": 6}
        follower = app.LoadBalancer(fe_cfg, rt)
        follower.control = app.AppControl(follower)
        follower.control.shared_sockets = True
        sync.silence_follower(follower)
        front = follower.frontends[0]
        at_rate(rt.conn_rate, 9)
        front.pause()  # as its listener does at the limit, with a timer up to 2 s away
        lowered = sync.global_record(rt) | {"rl": {"connections": 3, "sessions": 6}}
        assert sync.apply_live(follower, lowered)
        assert front.paused and rt.rate_limits == {"connections": 3, "sessions": 6}
        assert sync.apply_live(follower, sync.global_record(rt) | {"rl": {"sessions": 6}})
        assert not front.paused and not front.rt.paused  # at once, not at the timer
        assert rt.rate_limits == {"sessions": 6}
        await follower.close()

    asyncio.run(run())
