"""keeplb.lb.shared: nbthread workers count each server's sessions and waiters
together, as haproxy's threads share srv->served and the queues."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keeplb.config import haproxy
from keeplb.lb import app, native, shared
from keeplb.lb.proxy import Session
from keeplb.lb.shared import SharedCounts

SHAPE = [("be", ["s1", "s2"]), ("other", ["x"])]


ATOMIC = native.load_c_extension("keeplb.lb._shared")
# the C build's atomic operations and shared.py's locked ones must agree
IMPLEMENTATIONS = [pytest.param(ATOMIC, id="c", marks=pytest.mark.skipif(
    ATOMIC is None, reason="keeplb/lb/_shared.c not built")), pytest.param(None, id="python")]


@pytest.fixture(params=IMPLEMENTATIONS)
def table(request: pytest.FixtureRequest) -> Iterator[SharedCounts]:
    t = SharedCounts.create(SHAPE, 2)
    t.atomic = request.param
    yield t
    t.close()


def view(table: SharedCounts, worker: int, shape: shared.Shape = SHAPE) -> SharedCounts:
    v = SharedCounts(os.dup(table.fd), shape, 2, worker)
    v.atomic = table.atomic
    return v


def test_the_entries_follow_the_config_order() -> None:
    assert shared.entries(SHAPE) == {("be", ""): (1, 1), ("be", "s1"): (2, 3),
                                     ("be", "s2"): (4, 5), ("other", ""): (6, 6),
                                     ("other", "x"): (7, 8)}
    assert shared.entry_count(SHAPE) == 9


def test_a_limit_holds_for_every_worker_together(table: SharedCounts) -> None:
    w1, w2 = view(table, 1), view(table, 2)
    s1 = w1.index[("be", "s1")][0]
    assert w1.try_take(s1, 2) and w1.try_take(s1, 2)
    assert not w2.try_take(s1, 2) and not w1.try_take(s1, 2)
    assert w2.try_take(s1, 0)  # no limit (a retry on its own server)
    assert (table.get(s1), w1.mine(s1), w2.mine(s1)) == (3, 2, 1)
    w1.add(s1, -1)
    w2.add(s1, -1)
    assert w2.try_take(s1, 2)  # 2 taken: w1 1, w2 1
    assert not w2.try_take(s1, 2)
    w1.add(s1, -1)
    assert w2.try_take(s1, 2)
    assert (table.get(s1), w1.mine(s1), w2.mine(s1)) == (2, 0, 2)


def test_the_master_takes_back_what_a_dead_worker_held(table: SharedCounts) -> None:
    w1, w2 = view(table, 1), view(table, 2)
    served, queued = w2.index[("be", "s2")]
    w1.add(served, 1)
    w2.add(served, 2)
    w2.add(queued, 3)
    assert table.reclaim(2) == 5
    assert (table.get(served), table.get(queued)) == (1, 0)
    assert (w2.mine(served), w2.mine(queued), w1.mine(served)) == (0, 0, 1)
    assert table.reclaim(2) == 0 and table.reclaim(0) == 0 and table.reclaim(3) == 0


def test_a_worker_killed_holding_the_lock_blocks_nobody(table: SharedCounts) -> None:
    import fcntl

    pid = os.fork()
    if pid == 0:  # the child: takes the lock and never lets it go
        try:
            fcntl.lockf(table.fd, fcntl.LOCK_EX)
            os.write(1, b"")
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
    finally:
        os.waitpid(pid, 0)
    start = time.monotonic()
    assert view(table, 1).try_take(1, 1)
    assert time.monotonic() - start < 5


def test_a_worker_refuses_a_table_of_another_shape(table: SharedCounts,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(shared.ENV_SHARED_FD, str(os.dup(table.fd)))
    with caplog.at_level(logging.WARNING, "keeplb.lb"):
        assert SharedCounts.from_env([("be", ["s1"])], 2, 1) is None
        # the same size, other names: a server renamed in the file since
        monkeypatch.setenv(shared.ENV_SHARED_FD, str(os.dup(table.fd)))
        assert SharedCounts.from_env([("be", ["s1", "s3"]), ("other", ["x"])], 2, 1) is None
    assert "each worker keeps its part" in caplog.text
    assert shared.ENV_SHARED_FD not in os.environ
    assert SharedCounts.from_env(SHAPE, 2, 1) is None  # nothing passed
    monkeypatch.setenv(shared.ENV_SHARED_FD, str(os.dup(table.fd)))
    got = SharedCounts.from_env(SHAPE, 2, 1)
    assert got is not None and got.worker == 1
    got.close()


CFG = """\
defaults
    mode tcp
    timeout connect 1s
    timeout client 1s
    timeout server 1s
    timeout queue 1s
frontend fe
    bind 127.0.0.1:10
    default_backend be
backend be
    server s1 127.0.0.1:1 maxconn 1
"""


@pytest.mark.parametrize("atomic", IMPLEMENTATIONS)
def test_a_waiter_of_one_worker_gets_the_slot_another_frees(tmp_path: Path,
                                                            atomic: Any) -> None:
    """Two workers' backends on one table (in one process here): worker 1 holds
    s1's only slot, worker 2's client queues; worker 1's release wakes worker 2
    (sync relays the wake line), which serves its waiter."""
    path = tmp_path / "lb.cfg"
    path.write_text(CFG)
    cfg, diags = haproxy.parse([str(path)])
    assert not diags.has_errors
    table = SharedCounts.create(shared.shape(cfg), 2)
    table.atomic = atomic

    async def run() -> None:
        lbs = []
        for w in (1, 2):
            rt = app.build_runtime(cfg, resolve=False)
            rt.nbthread, rt.worker = 2, w
            rt.shared = view(table, w, shared.shape(cfg))
            lbs.append(app.LoadBalancer(cfg, rt))
        be1, be2 = (lb.backends["be"] for lb in lbs)
        woken: list[str] = []
        be1.wake = woken.append
        loop = asyncio.get_running_loop()
        a, b = Session(lbs[0].frontends[0], loop), Session(lbs[1].frontends[0], loop)
        try:
            slot1 = be1.slots["s1"]
            assert be1.take(slot1, a)
            slot, must_queue = be2.pick(None, None)
            assert must_queue and be2.slots["s1"].full
            assert not be2.take(be2.slots["s1"], b)  # at maxconn for the process
            waiter = be2.enqueue(b, None, 1)
            be2.recheck(None)
            assert not waiter.future.done()
            be1.release(slot1, a)
            assert woken == ["s1"]
            be2.on_wake("s1")
            assert waiter.future.result() is be2.slots["s1"]
            assert table.get(slot1.served_i) == 1 and table.get(be2.queue_i) == 0
            # maxqueue counts every worker's waiters too
            slot1.rt.maxqueue = 1
            assert not slot1.queue_full()
            c = Session(lbs[1].frontends[0], loop)
            be2.enqueue(c, be2.slots["s1"], 2)
            assert slot1.queue_full() and slot1.queue_len == 0
        finally:
            for lb in lbs:
                await lb.close()

    try:
        asyncio.run(run())
    finally:
        table.close()


@pytest.mark.skipif(ATOMIC is None, reason="keeplb/lb/_shared.c not built")
@pytest.mark.parametrize("offsets", [(-8, 8), (8, 4), (0, 9 * 8 * 3), (3, 8)])
def test_the_c_build_refuses_an_offset_outside_the_table(offsets: tuple[int, int]) -> None:
    t = SharedCounts.create(SHAPE, 2)
    try:
        with pytest.raises(ValueError, match="outside the table"):
            ATOMIC.take(t.map, *offsets, 1)
        with pytest.raises(TypeError):
            ATOMIC.add(t.map, 8, 8)
    finally:
        t.close()
