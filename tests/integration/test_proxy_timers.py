"""The relay's timers: the coarse TimerWheel, and `timeout connect` carried by
the session's one deadline (no asyncio.timeout per attempt).

Loopback only: the black-holed server is a listening socket on 127.0.0.1
whose accept queue is full, so that further SYNs are dropped and connect()
hangs as it would towards a silent host.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import time
from typing import cast

import pytest

from keeplb.lb.app import run_loop
from keeplb.lb.proxy import Session, TimerWheel
from tests.integration.test_proxy import (
    LO,
    TIMEOUT,
    config,
    connect,
    listen,
    run,
    running,
    server,
    sessions_end,
)

TICK = 1 / TimerWheel.TICKS_PER_S


class FakeSession:
    """What the wheel touches on a session: its key and its callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timer = 0
        self.fired: list[float] = []

    def _on_timer(self) -> None:
        self.timer = 0
        self.fired.append(self.loop.time())


def test_wheel_fires_not_early_and_at_most_a_tick_late() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        now = loop.time()
        sessions = [FakeSession(loop) for _ in range(5)]
        dues = [now + 0.02 + 0.013 * i for i in range(5)]
        for s, at in zip(sessions, dues, strict=True):
            s.timer = wheel.add(cast(Session, s), at)
        await asyncio.sleep(0.2)
        for s, at in zip(sessions, dues, strict=True):
            assert len(s.fired) == 1
            # uvloop rounds its timers to the millisecond.
            assert at - 0.001 <= s.fired[0] <= at + TICK + 0.05
        assert not wheel.slots  # fired slots are dropped
        return 0
    run_loop(main)


def test_wheel_skips_removed_and_moved_sessions() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        wheel = TimerWheel(loop)
        now = loop.time()
        removed, moved, kept = FakeSession(loop), FakeSession(loop), FakeSession(loop)
        for s in (removed, moved, kept):
            s.timer = wheel.add(cast(Session, s), now + 0.03)
        wheel.remove(cast(Session, removed), removed.timer)
        removed.timer = 0
        # A session re-armed without remove() (as a callback may do) fires once,
        # at its new deadline only.
        moved.timer = wheel.add(cast(Session, moved), now + 0.12)
        await asyncio.sleep(0.08)
        assert removed.fired == [] and moved.fired == [] and len(kept.fired) == 1
        await asyncio.sleep(0.1)
        assert len(moved.fired) == 1 and moved.fired[0] >= now + 0.12 - 0.001
        assert removed.fired == [] and len(kept.fired) == 1
        return 0
    run_loop(main)


def _black_hole() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener that never accepts, its accept queue filled."""
    lsn = socket.socket()
    lsn.bind((LO, 0))
    lsn.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(lsn.getsockname())
        fillers.append(c)
    time.sleep(0.05)
    return lsn, fillers


def test_connect_timeout_with_retries_ends_the_session() -> None:
    lsn, fillers = _black_hole()
    port = lsn.getsockname()[1]

    async def body() -> None:
        from tests.integration.test_proxy import free_port

        fport = free_port()
        retries = 2
        cfg = config(listen("be", fport, [server("s1", port)],
                            timeouts={"connect": 200, "client": 5000, "server": 5000},
                            retries=retries))
        async with running(cfg) as lb:
            r, w = await connect(fport)
            w.write(b"hello")
            t0 = time.monotonic()
            assert await asyncio.wait_for(r.read(), TIMEOUT) == b""
            took = time.monotonic() - t0
            # Each attempt waits its own `timeout connect`; a timed-out attempt
            # is retried at once (no turn-around delay as after a refusal).
            assert 3 * 0.2 - 0.01 <= took < 3 * 0.2 + 1.0
            counters = lb.backends["be"].slots["s1"].rt.counters
            assert counters.errors_conn == retries + 1
            assert counters.retries == retries
            await sessions_end(lb, 1.0)
            w.close()
    try:
        run(body)
    finally:
        for c in fillers:
            c.close()
        lsn.close()


def test_client_gone_while_connecting_is_not_a_connect_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    lsn, fillers = _black_hole()
    port = lsn.getsockname()[1]

    async def body() -> None:
        from tests.integration.test_proxy import free_port

        fport = free_port()
        cfg = config(listen("be", fport, [server("s1", port)],
                            timeouts={"connect": 3000, "client": 5000, "server": 5000}))
        async with running(cfg) as lb:
            r, w = await connect(fport)
            w.write(b"hello")
            await asyncio.sleep(0.1)
            # A reset, not a FIN: a half-closed client would still be connected for.
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                  struct.pack("ii", 1, 0))
            w.close()
            await sessions_end(lb, 2.0)  # ended long before the 3 s connect timeout
            counters = lb.backends["be"].slots["s1"].rt.counters
            assert counters.errors_conn == 0 and counters.retries == 0
            assert lb.backends["be"].rt.counters.cli_aborts == 1
    try:
        run(body)
        gc.collect()
    finally:
        for c in fillers:
            c.close()
        lsn.close()
    # The abandoned connect leaves no future with an exception nobody read.
    assert "never retrieved" not in caplog.text
