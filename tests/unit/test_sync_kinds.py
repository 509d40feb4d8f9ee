"""keeplb.proc.sync: the one table of sync line kinds (Kind, kind_of).

The writers' lines must keep their bytes (older and newer workers read each
other's during a reload), every kind must be told as before, and a line of no
known kind must be dropped by the master and ignored by every worker."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keeplb.config import haproxy
from keeplb.config.model import HaproxyConfig
from keeplb.lb import app
from keeplb.lb.server import AdminState, OpState, ProcessRuntime, ServerRuntime
from keeplb.proc import sync
from keeplb.proc.sync import Kind, Route

CFG = """\
defaults
    mode tcp
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend fe
    bind 127.0.0.1:10
    default_backend be
backend be
    server s1 127.0.0.1:1 check
"""


@pytest.fixture
def cfg(tmp_path: Path) -> HaproxyConfig:
    path = tmp_path / "lb.cfg"
    path.write_text(CFG)
    c, diags = haproxy.parse([str(path)])
    assert not diags.has_errors
    return c


def s1(rt: ProcessRuntime) -> ServerRuntime:
    be = rt.backend("be")
    assert be is not None
    s = be.server("s1")
    assert s is not None
    return s


def written(rt: ProcessRuntime) -> dict[Kind, dict[str, Any]]:
    """One line of every kind, as the writers make them."""
    return {
        Kind.SERVER: sync.server_record(s1(rt)),
        Kind.FRONTEND: sync.frontend_record(rt.frontends[0]),
        Kind.GLOBAL: sync.global_record(rt),
        Kind.CLEAR: sync.clear_record(4, True),
        Kind.COUNTERS: sync.counters_record(rt, 2),
        Kind.REQUEST: sync.request_record(s1(rt), "admin", "maint"),
        Kind.WAKE: sync.wake_record("be", "s1"),
    }


def test_every_writer_s_line_is_of_its_kind_with_its_route_and_slot(
        cfg: HaproxyConfig) -> None:
    rt = app.build_runtime(cfg, resolve=False)
    lines = written(rt)
    assert set(lines) == set(Kind)  # the table has no kind that nobody writes
    slots = {Kind.SERVER: ("s", "be", "s1"), Kind.FRONTEND: ("f", "fe"),
             Kind.GLOBAL: ("global",), Kind.CLEAR: ("clear",),
             Kind.COUNTERS: None, Kind.REQUEST: None, Kind.WAKE: None}
    routes = {Kind.COUNTERS: Route.PEERS, Kind.REQUEST: Route.CHECKER, Kind.WAKE: Route.PEERS}
    for kind, rec in lines.items():
        wire = sync.decode(sync.encode(rec).rstrip(b"\n"))
        assert wire is not None
        assert sync.kind_of(wire) is kind, rec
        assert sync.record_key(wire) == slots[kind], rec
        assert kind.value.route is routes.get(kind, Route.FOLLOWERS)


def test_the_wire_format_keeps_its_bytes(cfg: HaproxyConfig) -> None:
    rt = app.build_runtime(cfg, resolve=False)
    fe = rt.frontends[0]
    fe.disabled, fe.maxconn = True, 7
    assert sync.encode(sync.frontend_record(fe)) == (
        b'{"f":"fe","disabled":true,"stopped":false,"maxconn":7}\n')
    assert sync.encode(sync.clear_record(3, False)) == b'{"clear":"max","n":3}\n'
    assert sync.encode(sync.request_record(s1(rt), "weight", 5)) == (
        b'{"req":"weight","b":"be","s":"s1","v":5}\n')
    assert sync.encode(sync.server_record(s1(rt))).startswith(
        b'{"b":"be","s":"s1","admin":"ready","op":"UP",')
    assert sync.encode(sync.global_record(rt)).startswith(b'{"global":true,"maxconn":')
    assert sync.encode(sync.counters_record(rt, 2)).startswith(b'{"ctr":2,"clr":0,')
    assert sync.encode(sync.wake_record("be", "s1")) == b'{"wake":"be","s":"s1"}\n'


@pytest.mark.parametrize("rec", [
    {}, {"ctr": "2"}, {"ctr": None}, {"f": 3}, {"f": None}, {"global": False},
    {"global": "yes"}, {"b": "be"}, {"s": "s1"}, {"n": 1}, {"newkind": 1},
    {"wake": 1}, {"wake": None, "s": "s1"},
])
def test_a_line_of_no_known_kind_has_no_kind_and_no_slot(rec: dict[str, Any]) -> None:
    assert sync.kind_of(rec) is None
    assert sync.record_key(rec) is None


@pytest.mark.parametrize("line", [b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", b"{"])
def test_a_malformed_line_is_no_record(line: bytes) -> None:
    assert sync.decode(line) is None


@pytest.mark.parametrize(("rec", "kind"), [
    # a request names a server ("b", "s"): it is a request, never a server state
    ({"req": "admin", "b": "be", "s": "s1", "v": "maint"}, Kind.REQUEST),
    ({"ctr": 2, "req": "admin"}, Kind.COUNTERS),
    ({"f": "fe", "clear": "all", "n": 1}, Kind.FRONTEND),
    ({"clear": "all", "n": 1, "global": True}, Kind.CLEAR),
    ({"global": True, "b": "be", "s": "s1"}, Kind.GLOBAL),
    ({"f": 3, "b": "be", "s": "s1"}, Kind.SERVER),
    ({"ctr": "x", "b": "be", "s": "s1"}, Kind.SERVER),
])
def test_the_first_matching_kind_wins(rec: dict[str, Any], kind: Kind) -> None:
    assert sync.kind_of(rec) is kind


def old_record_key(rec: dict[str, Any]) -> tuple[str, ...] | None:
    """record_key as it was written before the table (the oracle)."""
    if "req" in rec:
        return None
    f = rec.get("f")
    if isinstance(f, str):
        return ("f", f)
    if "clear" in rec:
        return ("clear",)
    if rec.get("global") is True:
        return ("global",)
    if "b" in rec and "s" in rec:
        return ("s", str(rec.get("b")), str(rec.get("s")))
    return None


values = st.sampled_from([None, True, False, 0, 1, "x", "fe", [1]])
records = st.dictionaries(
    st.sampled_from(["ctr", "req", "f", "clear", "global", "b", "s", "n", "other"]), values)


@given(rec=records)
def test_slots_and_routes_are_the_old_chains_answers(rec: dict[str, Any]) -> None:
    """Relay.on_line and WorkerLink.follow told a counters line first
    (an int "ctr"), then a request ("req"), then asked record_key."""
    kind = sync.kind_of(rec)
    if isinstance(rec.get("ctr"), int):
        assert kind is Kind.COUNTERS
    elif "req" in rec:
        assert kind is Kind.REQUEST
    else:
        assert sync.record_key(rec) == old_record_key(rec)
        assert (kind is None) == (old_record_key(rec) is None)


class FakeWriter:
    def __init__(self) -> None:
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b

    def is_closing(self) -> bool:
        return False


def test_the_master_drops_a_line_of_no_known_kind() -> None:
    relay = sync.Relay()
    w1, w2 = FakeWriter(), FakeWriter()
    relay.add_worker(1, cast(Any, w1))
    relay.add_worker(2, cast(Any, w2))
    for sender in (1, 2):
        relay.on_line(sender, b'{"newkind":1,"b":"be"}\n')
        relay.on_line(sender, b"not json\n")
    assert relay.snapshot == {}
    assert w1.data == w2.data == sync.SYNCED
    state = sync.encode({"b": "be", "s": "s1", "op": "DOWN"})
    relay.on_line(1, state)  # the same relay still passes a known one
    assert w2.data == sync.SYNCED + state and list(relay.snapshot) == [("s", "be", "s1")]


def test_a_wake_goes_to_every_other_worker_and_is_not_kept() -> None:
    relay = sync.Relay()
    writers = {n: FakeWriter() for n in (1, 2, 3)}
    for n, w in writers.items():
        relay.add_worker(n, cast(Any, w))
    wake = sync.encode(sync.wake_record("be", "s1"))
    relay.on_line(2, wake)
    assert {n: w.data for n, w in writers.items()} == {
        1: sync.SYNCED + wake, 2: sync.SYNCED, 3: sync.SYNCED + wake}
    assert relay.snapshot == {}


def test_before_serving_a_line_of_no_known_kind_is_not_counted(cfg: HaproxyConfig) -> None:
    rt = app.build_runtime(cfg, resolve=False)
    before = sync.server_record(s1(rt))
    recs = [{"newkind": 1}, {"ctr": 2, "b": "be", "s": "s1", "op": "DOWN"},
            {"req": "op", "b": "be", "s": "s1", "v": "DOWN", "op": "DOWN"},
            {**before, "admin": "maint"}]
    assert sync.apply_static(rt, recs) == 1  # the server line only
    assert s1(rt).admin is AdminState.MAINT and s1(rt).op is OpState.RUNNING


def test_a_server_line_with_a_newer_field_is_still_a_server_line() -> None:
    """A newer worker may add fields to a kind; only the keys kind_of reads decide."""
    assert sync.kind_of({"b": "be", "s": "s1", "op": "UP", "newfield": 1}) is Kind.SERVER


def test_a_worker_ignores_a_line_of_no_known_kind_and_applies_the_next(
        cfg: HaproxyConfig, caplog: pytest.LogCaptureFixture) -> None:
    lines = (b'{"newkind":1,"b":"be"}\n'
             + sync.encode({"b": "be", "s": "s1", "admin": "maint"})
             + b'{"f":"nope","disabled":true}\n')

    async def follow(apply: bool) -> ServerRuntime:
        lb = app.LoadBalancer(cfg, app.build_runtime(cfg, resolve=False))
        lb.control = app.AppControl(lb)
        assert not sync.apply_live(lb, {"newkind": 1, "b": "be"})
        mine, theirs = socket.socketpair()
        mine.sendall(lines)
        mine.close()
        link = sync.WorkerLink(theirs.detach())
        link.sock.setblocking(False)
        try:
            await asyncio.wait_for(link.follow(lb, 2, apply=apply), 5)
        finally:
            link.sock.close()
            await lb.close()
        return s1(lb.runtime)

    with caplog.at_level(logging.WARNING, "keeplb.sync"):
        assert asyncio.run(follow(apply=True)).admin is AdminState.MAINT
        assert asyncio.run(follow(apply=False)).admin is AdminState.READY  # the checker
    assert [r for r in caplog.records if r.name == "keeplb.sync"] == []


def test_the_counters_line_ends_with_its_rates_and_an_older_one_is_still_counters(
        cfg: HaproxyConfig) -> None:
    rt = app.build_runtime(cfg, resolve=False)
    rt.max_conn_rate, rt.max_sess_rate = 3, 2
    line = sync.encode(sync.counters_record(rt, 2))
    # the new keys come last: an older worker reads the ones it knows, as before
    assert line.endswith(b',"cr":0,"sr":0,"mcr":3,"msr":2,"fr":{"fe":0}}\n')
    older = sync.decode(line.rstrip(b"\n")) or {}
    for key in ("cr", "sr", "mcr", "msr", "fr"):
        del older[key]
    assert sync.kind_of(older) is Kind.COUNTERS and sync.record_key(older) is None
