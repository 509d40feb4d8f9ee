"""The relay through real loopback sockets: balancing, health transitions, queues,
timeouts, half-close, bulk transfers and many idle connections.

Everything listens on 127.0.0.1 only. Each test runs its own event loop
(uvloop) with keeplb's `serve()` and small asyncio servers as backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import resource
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from keeplb.config.model import (
    SERVER_DEFAULTS,
    Acl,
    Address,
    Balance,
    Bind,
    Condition,
    Global,
    HaproxyConfig,
    LogTarget,
    Proxy,
    ProxyKind,
    Server,
    UseBackend,
)
from keeplb.lb import app
from keeplb.lb.app import LoadBalancer, run_loop
from keeplb.lb.health import CheckStatus

LO = "127.0.0.1"
TIMEOUT = 10.0  # upper bound for any single wait in these tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LO, 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A port p such that p and p+1 are both free (for a port-range bind)."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind((LO, p))
                b.bind((LO, p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no two consecutive free ports")


def addr(port: int, host: str = LO) -> Address:
    return Address("ipv4", host, port, port)


def server(name: str, port: int, **opts: Any) -> Server:
    options = replace(SERVER_DEFAULTS, **opts)
    return Server(name, addr(port), options)


def listen(name: str, port: int, servers: list[Server], *, balance: str = "roundrobin",
           timeouts: dict[str, int] | None = None, options: dict[str, bool] | None = None,
           **kw: Any) -> Proxy:
    t = {"connect": 1000, "client": 5000, "server": 5000}
    t.update(timeouts or {})
    return Proxy(kind=ProxyKind.LISTEN, name=name, binds=[Bind(addr(port))], servers=servers,
                 balance=Balance(balance), timeouts=t, options=options or {}, **kw)


def config(*proxies: Proxy, maxconn: int | None = None,
           logs: list[LogTarget] | None = None) -> HaproxyConfig:
    return HaproxyConfig(global_=Global(maxconn=maxconn, logs=logs or []),
                         proxies=list(proxies))


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------


@dataclass
class Backend:
    """A loopback TCP server. mode 'name': writes its name then echoes;
    'hold': accepts and keeps the connection silent; 'sink': hashes what it gets
    and answers with the digest at EOF; 'source:N': sends N pseudo-random bytes."""

    name: str
    mode: str = "name"
    port: int = 0
    server: asyncio.AbstractServer | None = None
    conns: list[asyncio.StreamWriter] = field(default_factory=list)
    accepted: int = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, LO, self.port or 0,
                                                 reuse_address=True, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.conns.append(w)
        try:
            if self.mode == "name":
                w.write(self.name.encode() + b"\n")
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            elif self.mode == "hold":
                await r.read()  # until the client or keeplb closes
            elif self.mode == "sink":
                h = hashlib.sha256()
                n = 0
                while data := await r.read(1 << 20):
                    h.update(data)
                    n += len(data)
                w.write(f"{n} {h.hexdigest()}\n".encode())
                await w.drain()
            elif self.mode.startswith("source:"):
                total = int(self.mode.split(":")[1])
                for chunk in pattern_chunks(total):
                    w.write(chunk)
                    await w.drain()
            elif self.mode == "halfclose":
                # Reads until the client's FIN, then answers: needs half-close to work.
                data = await r.read()
                w.write(b"got " + str(len(data)).encode() + b"\n")
                await w.drain()
            w.close()
        except (ConnectionError, OSError):
            w.close()
        finally:
            with contextlib.suppress(ValueError):
                self.conns.remove(w)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.conns):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None


def pattern_chunks(total: int, chunk: int = 1 << 20) -> list[bytes]:
    """Deterministic pseudo-random bytes, cheap to produce and to check."""
    seed = hashlib.sha256(b"keeplb").digest() * (chunk // 32)
    out = []
    left = total
    i = 0
    while left > 0:
        n = min(chunk, left)
        out.append(bytes([i & 0xFF]) + seed[1:n])
        left -= n
        i += 1
    return out


# --------------------------------------------------------------------------
# running keeplb in the test's loop
# --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(cfg: HaproxyConfig, **kw: Any) -> AsyncIterator[LoadBalancer]:
    """keeplb serving `cfg` in this loop, without active checks (tests drive the
    transitions); yields the LoadBalancer."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    holder: dict[str, LoadBalancer] = {}
    orig = app.LoadBalancer

    class Capture(orig):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            holder["lb"] = self

    app.LoadBalancer = Capture  # type: ignore[misc]
    try:
        kw.setdefault("checks", False)
        kw.setdefault("drain_timeout", 1.0)
        task = asyncio.create_task(app.serve(cfg, stop=stop, on_ready=ready.set, **kw))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({waiter, task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # serve() failed to start: raise its error here
        assert ready.is_set(), "keeplb did not become ready"
    finally:
        app.LoadBalancer = orig  # type: ignore[misc]
    try:
        yield holder["lb"]
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> int:
        await asyncio.wait_for(coro_fn(), 60)
        return 0
    run_loop(main)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(LO, port), TIMEOUT)


async def ask_name(port: int) -> str:
    """Connect through keeplb, read which backend answered, close."""
    r, w = await connect(port)
    try:
        line = await asyncio.wait_for(r.readline(), TIMEOUT)
        return line.decode().strip()
    finally:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()


async def closed_promptly(r: asyncio.StreamReader, within: float = 2.0) -> bool:
    try:
        data = await asyncio.wait_for(r.read(100), within)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return data == b""


async def settle(lb: LoadBalancer, sessions: int) -> None:
    """Wait until keeplb has seen the end of the sessions the test closed."""
    for _ in range(200):
        if len(lb.limits.sessions) == sessions:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(lb.limits.sessions)} sessions left, expected {sessions}")


def fail(lb: LoadBalancer, be: str, srv: str) -> None:
    rt = lb.backends[be].slots[srv].rt
    lb.on_transition(rt, False, _Result(CheckStatus.L4CON, "Connection refused", 0))


def recover(lb: LoadBalancer, be: str, srv: str) -> None:
    rt = lb.backends[be].slots[srv].rt
    lb.on_transition(rt, True, _Result(CheckStatus.L4OK, "", 0))


@dataclass
class _Result:
    status: CheckStatus
    info: str
    duration_ms: int
    code: int | None = None


async def backends(*names: str, mode: str = "name") -> list[Backend]:
    return [await Backend(n, mode).start() for n in names]


async def sessions_end(lb: LoadBalancer, within: float, step: float = 0.025) -> None:
    """Wait up to `within` seconds for the balancer to hold no session."""
    for _ in range(round(within / step)):
        if not lb.limits.sessions:
            break
        await asyncio.sleep(step)
    assert not lb.limits.sessions


async def stop_all(bs: list[Backend]) -> None:
    for b in bs:
        await b.stop()


# --------------------------------------------------------------------------
# balancing through the relay
# --------------------------------------------------------------------------


def test_roundrobin_exact_over_cycles() -> None:
    async def body() -> None:
        bs = await backends("s1", "s2", "s3")
        port = free_port()
        cfg = config(listen("fe", port, [server(b.name, b.port, weight=w)
                                         for b, w in zip(bs, (1, 2, 1), strict=True)]))
        try:
            async with running(cfg):
                got = [await ask_name(port) for _ in range(8)]
        finally:
            await stop_all(bs)
        # Two full cycles of weights 1:2:1; smooth WRR interleaves s2.
        assert sorted(got[:4]) == ["s1", "s2", "s2", "s3"]
        assert got[:4] == got[4:]
        assert got[0] != got[1] or got[0] != "s2"
    run(body)


def test_leastconn_picks_least_loaded() -> None:
    async def body() -> None:
        bs = await backends("s1", "s2", "s3")
        port = free_port()
        cfg = config(listen("fe", port, [server(b.name, b.port) for b in bs],
                            balance="leastconn"))
        held = []
        try:
            async with running(cfg) as lb:
                # Hold two connections open: they land on two different servers.
                for _ in range(2):
                    r, w = await connect(port)
                    held.append((await r.readline(), w))
                busy = {n.decode().strip() for n, _ in held}
                assert len(busy) == 2
                free = ({"s1", "s2", "s3"} - busy).pop()
                # Every new short connection goes to the only idle server.
                for _ in range(3):
                    assert await ask_name(port) == free
                    await settle(lb, 2)
                for _, w in held:
                    w.close()
        finally:
            await stop_all(bs)
    run(body)


def test_source_is_sticky() -> None:
    async def body() -> None:
        bs = await backends("s1", "s2", "s3")
        port = free_port()
        cfg = config(listen("fe", port, [server(b.name, b.port) for b in bs], balance="source"))
        try:
            async with running(cfg):
                got = {await ask_name(port) for _ in range(6)}
        finally:
            await stop_all(bs)
        assert len(got) == 1
    run(body)


def test_use_backend_acl_on_dst_port_and_src() -> None:
    async def body() -> None:
        bs = await backends("a", "b", "c")
        p1, p2 = free_port(), free_port()
        fe = Proxy(kind=ProxyKind.FRONTEND, name="fe",
                   binds=[Bind(Address("ipv4", LO, p1, p1)), Bind(Address("ipv4", LO, p2, p2))],
                   timeouts={"client": 5000}, default_backend="be_c",
                   acls=[Acl("second", "dst_port", (), (str(p2),)),
                         Acl("local", "src", (), ("127.0.0.0/8",))],
                   use_backends=[
                       UseBackend("be_b", Condition(False, (("second", "local"),))),
                       UseBackend("be_a", Condition(True, (("local",),))),  # unless local
                   ])
        def be(name: str, b: Backend) -> Proxy:
            return Proxy(kind=ProxyKind.BACKEND, name=name, servers=[server(b.name, b.port)],
                         timeouts={"connect": 1000, "server": 5000})
        cfg = config(fe, be("be_a", bs[0]), be("be_b", bs[1]), be("be_c", bs[2]))
        try:
            async with running(cfg):
                assert await ask_name(p2) == "b"
                assert await ask_name(p1) == "c"  # 'unless local' does not match
        finally:
            await stop_all(bs)
    run(body)


# --------------------------------------------------------------------------
# health transitions
# --------------------------------------------------------------------------


def test_down_server_gets_no_traffic_and_returns_after_up(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        bs = await backends("s1", "s2", "s3")
        port = free_port()
        cfg = config(listen("kube-apiserver", port, [server(b.name, b.port) for b in bs]))
        try:
            async with running(cfg) as lb:
                await bs[0].stop()  # killed
                fail(lb, "kube-apiserver", "s1")
                got = [await ask_name(port) for _ in range(6)]
                assert got.count("s1") == 0 and set(got) == {"s2", "s3"}
                bs[0] = await Backend("s1", port=bs[0].port).start()
                recover(lb, "kube-apiserver", "s1")
                got = [await ask_name(port) for _ in range(6)]
                assert got.count("s1") == 2
        finally:
            await stop_all(bs)
    caplog.set_level("INFO", logger="keeplb.lb")
    run(body)
    text = caplog.text
    assert ('Server kube-apiserver/s1 is DOWN, reason: Layer4 connection problem, info: '
            '"Connection refused", check duration: 0ms. 2 active and 0 backup servers left. '
            '0 sessions active, 0 requeued, 0 remaining in queue.') in text
    assert ('Server kube-apiserver/s1 is UP, reason: Layer4 check passed, check duration: 0ms. '
            '3 active and 0 backup servers online. 0 sessions requeued, 0 total in queue.'
            ) in text


def test_all_servers_down_closes_client_promptly_and_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        bs = await backends("s1", "bk")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port),
                                         server("bk", bs[1].port, backup=True)]))
        try:
            async with running(cfg) as lb:
                fail(lb, "be", "s1")
                assert await ask_name(port) == "bk"  # running on backup
                fail(lb, "be", "bk")
                r, w = await connect(port)
                assert await closed_promptly(r)
                w.close()
                assert lb.backends["be"].rt.active_up == 0
        finally:
            await stop_all(bs)
    caplog.set_level("INFO", logger="keeplb.lb")
    run(body)
    assert "0 active and 1 backup servers left. Running on backup." in caplog.text
    assert "Backup Server be/bk is DOWN" in caplog.text
    assert "backend be has no server available!" in caplog.text


def test_shutdown_sessions_on_marked_down() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port,
                                                on_marked_down="shutdown-sessions")]))
        try:
            async with running(cfg) as lb:
                r, w = await connect(port)
                assert await r.readline() == b"s1\n"
                fail(lb, "be", "s1")
                assert await closed_promptly(r)
                w.close()
        finally:
            await stop_all(bs)
    run(body)


def test_connect_refused_redispatches_to_another_server() -> None:
    async def body() -> None:
        bs = await backends("s2")
        dead = free_port()  # nothing listens there
        port = free_port()
        cfg = config(listen("be", port, [server("s1", dead), server("s2", bs[0].port)],
                            options={"redispatch": True}, retries=1))
        try:
            async with running(cfg) as lb:
                got = [await ask_name(port) for _ in range(4)]
                assert got == ["s2"] * 4
                be = lb.backends["be"].rt
                s1 = lb.backends["be"].slots["s1"].rt
                # s1 is not checked, so it keeps being picked first; each of those
                # connections retries once and is redispatched to s2.
                assert s1.counters.errors_conn >= 1
                assert be.counters.redispatches == be.counters.retries == s1.counters.errors_conn
        finally:
            await stop_all(bs)
    run(body)


# --------------------------------------------------------------------------
# maxconn, queues, timeouts
# --------------------------------------------------------------------------


def test_maxconn_queues_excess_then_serves_it() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port, maxconn=1)],
                            timeouts={"queue": 5000}))
        try:
            async with running(cfg) as lb:
                r1, w1 = await connect(port)
                assert await r1.readline() == b"s1\n"
                r2, w2 = await connect(port)
                await asyncio.sleep(0.2)
                be = lb.backends["be"]
                assert be.queue_len == 1 and bs[0].accepted == 1
                w1.close()  # frees the slot: the queued one is served
                assert await asyncio.wait_for(r2.readline(), TIMEOUT) == b"s1\n"
                assert be.queue_len == 0 and be.rt.queue_max == 1
                w2.close()
        finally:
            await stop_all(bs)
    run(body)


def test_queue_timeout_closes_waiting_client() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port, maxconn=1)],
                            timeouts={"queue": 300}))
        try:
            async with running(cfg) as lb:
                r1, w1 = await connect(port)
                assert await r1.readline() == b"s1\n"
                r2, w2 = await connect(port)
                assert await closed_promptly(r2, within=3.0)
                assert lb.backends["be"].queue_len == 0
                assert bs[0].accepted == 1
                w1.close()
                w2.close()
        finally:
            await stop_all(bs)
    run(body)


def test_maxqueue_with_source_balance_rejects_beyond_queue() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port, maxconn=1, maxqueue=1)],
                            balance="source", timeouts={"queue": 5000}))
        try:
            async with running(cfg) as lb:
                r1, w1 = await connect(port)
                assert await r1.readline() == b"s1\n"
                r2, w2 = await connect(port)  # waits in s1's queue
                await asyncio.sleep(0.2)
                r3, w3 = await connect(port)  # queue full: closed
                assert await closed_promptly(r3)
                assert lb.backends["be"].slots["s1"].queue_len == 1
                w1.close()
                assert await asyncio.wait_for(r2.readline(), TIMEOUT) == b"s1\n"
                for w in (w2, w3):
                    w.close()
        finally:
            await stop_all(bs)
    run(body)


def test_frontend_maxconn_leaves_excess_in_backlog() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)], maxconn=1))
        try:
            async with running(cfg):
                r1, w1 = await connect(port)
                assert await r1.readline() == b"s1\n"
                r2, w2 = await connect(port)  # kernel completes the handshake...
                with pytest.raises(TimeoutError):  # ...but keeplb does not accept it
                    await asyncio.wait_for(r2.readline(), 0.4)
                assert bs[0].accepted == 1
                w1.close()
                assert await asyncio.wait_for(r2.readline(), TIMEOUT) == b"s1\n"
                w2.close()
        finally:
            await stop_all(bs)
    run(body)


def test_client_timeout_closes_idle_session() -> None:
    async def body() -> None:
        bs = await backends("s1", mode="hold")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)],
                            timeouts={"client": 300, "server": 300}))
        try:
            async with running(cfg):
                r, w = await connect(port)
                assert await closed_promptly(r, within=3.0)
                w.close()
        finally:
            await stop_all(bs)
    run(body)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def test_half_close_reaches_server_and_response_flows_back() -> None:
    async def body() -> None:
        bs = await backends("s1", mode="halfclose")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)]))
        try:
            async with running(cfg):
                r, w = await connect(port)
                w.write(b"x" * 1000)
                w.write_eof()  # shutdown(SHUT_WR)
                answer = await asyncio.wait_for(r.read(), TIMEOUT)
                assert answer == b"got 1000\n"
                w.close()
        finally:
            await stop_all(bs)
    run(body)


def test_one_failing_connection_does_not_disturb_another() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)]))
        try:
            async with running(cfg):
                r1, w1 = await connect(port)
                assert await r1.readline() == b"s1\n"
                r2, w2 = await connect(port)
                assert await r2.readline() == b"s1\n"
                sock = w2.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                w2.transport.abort()  # RST
                w1.write(b"still here\n")
                assert await asyncio.wait_for(r1.readline(), TIMEOUT) == b"still here\n"
                w1.close()
        finally:
            await stop_all(bs)
    run(body)


async def _upload(port: int, total: int) -> str:
    r, w = await connect(port)
    for chunk in pattern_chunks(total):
        w.write(chunk)
        await w.drain()
    w.write_eof()
    line = await asyncio.wait_for(r.readline(), 60)
    w.close()
    return line.decode().strip()


async def _download(port: int) -> tuple[int, str]:
    r, w = await connect(port)
    h = hashlib.sha256()
    n = 0
    while data := await asyncio.wait_for(r.read(1 << 20), 30):
        h.update(data)
        n += len(data)
    w.close()
    return n, h.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("splice", [False, True], ids=["copy", "splice-auto"])
def test_100mb_both_directions_byte_exact(splice: bool) -> None:
    total = 100 * 1024 * 1024
    want = hashlib.sha256(b"".join(pattern_chunks(total))).hexdigest()
    opts = {"splice-auto": True} if splice else {}

    async def body() -> None:
        sink = await Backend("sink", "sink").start()
        source = await Backend("src", f"source:{total}").start()
        p1, p2 = free_port(), free_port()
        cfg = config(listen("up", p1, [server("sink", sink.port)], options=opts),
                     listen("down", p2, [server("src", source.port)], options=opts))
        from keeplb.lb.reactor import reactor_of

        reactor = reactor_of(asyncio.get_running_loop())
        before = reactor.spliced
        try:
            async with running(cfg) as lb:
                up, down = await asyncio.gather(_upload(p1, total), _download(p2))
                assert up == f"{total} {want}"
                assert down == (total, want)
                for _ in range(100):  # counters are added when the session ends
                    if lb.runtime.cur_conns == 0:
                        break
                    await asyncio.sleep(0.02)
                assert lb.backends["up"].rt.counters.bytes_in == total
                assert lb.backends["down"].rt.counters.bytes_out == total
                moved = reactor.spliced - before
                # Spliced once a read fills the buffer: nearly all of it, or nothing.
                assert (moved > 1.8 * total) if splice else moved == 0
        finally:
            await stop_all([sink, source])
    run(body)


HOLDER = """
import socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    socks.append(s)
print("ok", len(socks), flush=True)
sys.stdin.read()  # hold until the test closes our stdin
"""


@pytest.mark.slow
def test_5000_idle_connections_held() -> None:
    """5,000 idle sessions through keeplb at once; the clients live in a child
    process so that this one only holds keeplb's and the backend's descriptors."""
    n = 5000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * n + 300
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))

    async def body() -> None:
        bs = await backends("s1", mode="hold")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)],
                            timeouts={"client": 60000, "server": 60000}), maxconn=n + 100)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, str(n), str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            async with running(cfg) as lb:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line.split() == [b"ok", str(n).encode()]
                for _ in range(200):
                    if bs[0].accepted >= n:
                        break
                    await asyncio.sleep(0.05)
                assert bs[0].accepted == n
                assert lb.runtime.cur_conns == n
                assert lb.frontends[0].rt.counters.cur_sess == n
                assert lb.backends["be"].slots["s1"].rt.counters.cur_sess == n
                assert proc.stdin is not None
                proc.stdin.close()
                await asyncio.wait_for(proc.wait(), 30)
                for _ in range(200):
                    if lb.runtime.cur_conns == 0:
                        break
                    await asyncio.sleep(0.05)
                assert lb.runtime.cur_conns == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await stop_all(bs)
    try:
        run(body)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_bind_errors_are_reported_not_raised_as_traceback() -> None:
    with socket.socket() as taken:
        taken.bind((LO, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = config(listen("fe", port, []))
        with pytest.raises(app.KeeplbError, match=r"Starting frontend fe: cannot bind socket"):
            app.open_listeners(cfg)


def test_listeners_are_keyed_for_a_master() -> None:
    port = free_port()
    socks = app.open_listeners(config(listen("fe", port, [])))
    try:
        assert list(socks) == [f"ipv4@127.0.0.1:{port}"]
        again = app.open_listeners(config(listen("fe", port, [])), socks)
        assert again[f"ipv4@127.0.0.1:{port}"] is socks[f"ipv4@127.0.0.1:{port}"]
    finally:
        for s in socks.values():
            s.close()


def test_real_health_checks_mark_killed_server_down_then_up(
        caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        bs = await backends("api1", "api2")
        port = free_port()
        cfg = config(listen("kube-apiserver", port, [
            server(b.name, b.port, check=True, inter=100, rise=2, fall=2) for b in bs]))
        try:
            async with running(cfg, checks=True) as lb:
                be = lb.backends["kube-apiserver"]
                await bs[0].stop()
                for _ in range(100):
                    if be.rt.active_up == 1:
                        break
                    await asyncio.sleep(0.05)
                assert be.rt.active_up == 1
                assert {await ask_name(port) for _ in range(4)} == {"api2"}
                bs[0] = await Backend("api1", port=bs[0].port).start()
                for _ in range(100):
                    if be.rt.active_up == 2:
                        break
                    await asyncio.sleep(0.05)
                got = [await ask_name(port) for _ in range(4)]
                assert sorted(got) == ["api1", "api1", "api2", "api2"]
        finally:
            await stop_all(bs)
    caplog.set_level("INFO", logger="keeplb.lb")
    run(body)
    assert re.search(r'Server kube-apiserver/api1 is DOWN, reason: Layer4 connection problem, '
                     r'info: "Connection (refused|reset by peer)", check duration: \d+ms\. 1 '
                     r'active and 0 '
                     r'backup servers left\. 0 sessions active, 0 requeued, 0 remaining in '
                     r'queue\.', caplog.text)
    assert re.search(r'Server kube-apiserver/api1 is UP, reason: Layer4 check passed, check '
                     r'duration: \d+ms\. 2 active and 0 backup servers online\. 0 sessions '
                     r'requeued, 0 total in queue\.', caplog.text)


def test_slow_client_does_not_make_keeplb_buffer_without_bound() -> None:
    async def body() -> None:
        total = 64 * 1024 * 1024
        src = await Backend("src", f"source:{total}").start()
        port = free_port()
        cfg = config(listen("be", port, [server("src", src.port)]))
        try:
            async with running(cfg) as lb:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, (LO, port))
                await asyncio.sleep(1.0)  # the client reads nothing meanwhile
                (sess,) = lb.limits.sessions
                buffered = sess.client.transport.get_write_buffer_size()
                # Bounded by the high-water mark plus one read, not by the 64 MB sent.
                assert buffered < 2 * 1024 * 1024
                assert sess.bytes_out < 16 * 1024 * 1024
                # Byte counters are live, not only added when a session ends.
                assert lb.backends["be"].rt.counters.bytes_out == sess.bytes_out > 0
                # Reading resumes the flow: everything arrives.
                got = 0
                while got < total:
                    data = await asyncio.wait_for(
                        asyncio.get_running_loop().sock_recv(sock, 1 << 20), TIMEOUT)
                    if not data:
                        break
                    got += len(data)
                sock.close()
                assert got == total
        finally:
            await src.stop()
    run(body)


def test_backup_sessions_shut_down_when_active_comes_back() -> None:
    async def body() -> None:
        bs = await backends("s1", "bk")
        port = free_port()
        cfg = config(listen("be", port, [
            server("s1", bs[0].port, on_marked_up="shutdown-backup-sessions"),
            server("bk", bs[1].port, backup=True)]))
        try:
            async with running(cfg) as lb:
                fail(lb, "be", "s1")
                r, w = await connect(port)
                assert await r.readline() == b"bk\n"
                recover(lb, "be", "s1")
                assert await closed_promptly(r)
                w.close()
                assert await ask_name(port) == "s1"
        finally:
            await stop_all(bs)
    run(body)


def test_slowstart_ramps_the_weight_up() -> None:
    async def body() -> None:
        bs = await backends("s1", "s2")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port, slowstart=400),
                                         server("s2", bs[1].port)]))
        try:
            async with running(cfg) as lb:
                be = lb.backends["be"]
                bal = be.balancer
                fail(lb, "be", "s1")
                recover(lb, "be", "s1")
                first = bal.weight("s1")  # type: ignore[attr-defined]
                full = bal.weight("s2")  # type: ignore[attr-defined]
                assert 0 < first < full
                assert be.slots["s1"].rt.op.name == "STARTING"
                for _ in range(40):
                    await asyncio.sleep(0.05)
                    if bal.weight("s1") == full:  # type: ignore[attr-defined]
                        break
                assert bal.weight("s1") == full  # type: ignore[attr-defined]
                assert be.slots["s1"].rt.op.name == "RUNNING"
        finally:
            await stop_all(bs)
    run(body)


def test_client_fin_timeout_applies_after_half_close() -> None:
    async def body() -> None:
        bs = await backends("s1", mode="halfclose")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)],
                            timeouts={"client": 30000, "server": 30000, "client-fin": 300}))
        try:
            async with running(cfg) as lb:
                r, w = await connect(port)
                w.write(b"abc")
                w.write_eof()
                assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"got 3\n"
                # The server closed; keeplb passed its FIN on. A client that
                # never closes its side is let go after client-fin, not client.
                assert await asyncio.wait_for(r.read(), TIMEOUT) == b""
                await sessions_end(lb, 3.0, step=0.05)
                w.close()
        finally:
            await stop_all(bs)
    run(body)


def test_ipv6_and_port_range_binds() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    async def body() -> None:
        bs = await backends("s1")
        base = free_port_pair()
        v6 = free_port()
        fe = Proxy(kind=ProxyKind.LISTEN, name="fe",
                   binds=[Bind(Address("ipv4", LO, base, base + 1)),
                          Bind(Address("ipv6", "::1", v6, v6))],
                   servers=[server("s1", bs[0].port)],
                   timeouts={"connect": 1000, "client": 5000, "server": 5000})
        try:
            async with running(config(fe)):
                for p in (base, base + 1):
                    assert await ask_name(p) == "s1"
                r, w = await asyncio.open_connection("::1", v6)
                assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"s1\n"
                w.close()
        finally:
            await stop_all(bs)
    run(body)


async def stats_cmd(path: str, line: str) -> str:
    r, w = await asyncio.wait_for(asyncio.open_unix_connection(path), TIMEOUT)
    w.write(line.encode() + b"\n")
    out = await asyncio.wait_for(r.read(), TIMEOUT)
    w.close()
    return out.decode()


def test_runtime_api_drives_the_relay(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from keeplb.config.model import StatsSocket

    async def body() -> None:
        bs = await backends("s1", "s2")
        port = free_port()
        path = str(tmp_path / "stats.sock")
        cfg = config(listen("be", port, [server(b.name, b.port) for b in bs]))
        cfg.global_.stats_sockets.append(StatsSocket(Address("unix", path)))
        try:
            async with running(cfg) as lb:
                await stats_cmd(path, "set server be/s1 state maint")
                assert {await ask_name(port) for _ in range(4)} == {"s2"}
                await stats_cmd(path, "set server be/s1 state ready")
                await stats_cmd(path, "set server be/s2 weight 0")
                assert {await ask_name(port) for _ in range(4)} == {"s1"}
                await stats_cmd(path, "set server be/s2 weight 1")
                r, w = await connect(port)
                name = (await r.readline()).decode().strip()
                out = await stats_cmd(path, f"shutdown sessions server be/{name}")
                assert await closed_promptly(r), out
                w.close()
                await settle(lb, 0)
                csv = await stats_cmd(path, "show stat")
                row = next(x for x in csv.splitlines() if x.startswith("be,BACKEND,"))
                assert int(row.split(",")[7]) >= 9  # stot: every session went through be
                await stats_cmd(path, "set server be/s2 state drain")
                await stats_cmd(path, "set server be/s2 state ready")
                await stats_cmd(path, "set server be/s2 health down")
                assert {await ask_name(port) for _ in range(3)} == {"s1"}
        finally:
            await stop_all(bs)
    caplog.set_level("INFO", logger="keeplb.lb")
    run(body)
    # haproxy 2.6's lines for the same commands (checked against it on loopback)
    for line in ("Server be/s1 is going DOWN for maintenance. 1 active and 0 backup servers "
                 "left. 0 sessions active, 0 requeued, 0 remaining in queue.",
                 "Server be/s1 is UP/READY (leaving forced maintenance).",
                 "Server be/s2 enters drain state. 1 active and 0 backup servers online. "
                 "0 sessions requeued, 0 total in queue.",
                 "Server be/s2 is UP (leaving forced drain).",
                 "Server be/s2 is DOWN, changed from CLI. 1 active and 0 backup servers left. "
                 "0 sessions active, 0 requeued, 0 remaining in queue."):
        assert line in caplog.text


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    r, w = await connect(port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(r.read(), TIMEOUT)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_stats_page_and_prometheus_exporter_frontends() -> None:
    from keeplb.config.model import Mode, Rule, StatsPage

    async def body() -> None:
        bs = await backends("api1")
        port, prom, st = free_port(), free_port(), free_port()
        kube = listen("kube", port, [server("api1", bs[0].port)])
        metrics = Proxy(kind=ProxyKind.FRONTEND, name="prom", mode=Mode.HTTP,
                        binds=[Bind(addr(prom))], timeouts={"client": 5000},
                        rules=[Rule("http-request", "use-service", ("prometheus-exporter",),
                                    Condition(False, (("{ path /metrics }",),)))])
        page = Proxy(kind=ProxyKind.LISTEN, name="stats", mode=Mode.HTTP,
                     binds=[Bind(addr(st))], timeouts={"client": 5000},
                     stats=StatsPage(enabled=True, uri="/stats"))
        try:
            async with running(config(kube, metrics, page)):
                assert await ask_name(port) == "api1"
                status, text = await http_get(prom, "/metrics")
                assert status == 200
                assert b'haproxy_backend_sessions_total{proxy="kube"} 1' in text
                status, _ = await http_get(prom, "/elsewhere")
                assert status == 503
                status, csv = await http_get(st, "/stats;csv")
                assert status == 200 and b"\nkube,api1," in csv
        finally:
            await stop_all(bs)
    run(body)


def test_tunnel_timeout_replaces_client_and_server_timeouts() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        cfg = config(listen("be", port, [server("s1", bs[0].port)],
                            timeouts={"client": 200, "server": 200, "tunnel": 5000}))
        try:
            async with running(cfg):
                r, w = await connect(port)
                assert await r.readline() == b"s1\n"
                await asyncio.sleep(0.6)  # idle three times the client timeout
                w.write(b"ping\n")
                assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"ping\n"
                w.close()
        finally:
            await stop_all(bs)
    run(body)


@pytest.mark.parametrize(("balance", "on_down"), [
    ("leastconn", None), ("roundrobin", "shutdown-sessions"), ("source", None)])
def test_no_leaked_slots_under_load_with_flapping_server(balance: str,
                                                         on_down: str | None) -> None:
    """300 short sessions, 40 at a time, through servers with maxconn 2 while one
    server flaps DOWN/UP: every client gets an answer or a clean close, and at
    the end every count (sessions, slots, queues, balancer) is back to zero."""
    async def body() -> None:
        bs = await backends("s1", "s2", "s3")
        port = free_port()
        cfg = config(listen("be", port, [server(b.name, b.port, maxconn=2,
                                                on_marked_down=on_down) for b in bs],
                            balance=balance, timeouts={"queue": 5000}))
        answers: list[str] = []
        flaps: list[int] = []
        try:
            async with running(cfg) as lb:
                done = asyncio.Event()

                async def flap() -> None:
                    while not done.is_set():
                        fail(lb, "be", "s1")
                        flaps.append(1)
                        await asyncio.sleep(0.01)
                        recover(lb, "be", "s1")
                        await asyncio.sleep(0.01)

                sem = asyncio.Semaphore(40)

                async def client(i: int) -> None:
                    async with sem:
                        try:
                            r, w = await connect(port)
                        except OSError:
                            return
                        try:
                            line = await asyncio.wait_for(r.readline(), TIMEOUT)
                            await asyncio.sleep(0.005)  # hold the slot: others queue
                            w.write(b"x%d\n" % i)
                            echo = await asyncio.wait_for(r.readline(), TIMEOUT)
                            if line and echo == b"x%d\n" % i:
                                answers.append(line.decode().strip())
                        except (ConnectionError, TimeoutError):
                            pass
                        finally:
                            w.close()

                flapper = asyncio.create_task(flap())
                await asyncio.gather(*(client(i) for i in range(300)))
                done.set()
                await flapper
                recover(lb, "be", "s1")
                await settle(lb, 0)
                be = lb.backends["be"]
                assert be.queue_len == 0 and be.sessions == 0
                for slot in be.slots.values():
                    assert not slot.sessions and slot.queue_len == 0
                    assert be.balancer.conns(slot.name) == 0  # type: ignore[attr-defined]
                    assert slot.rt.counters.cur_sess == 0
                assert lb.runtime.cur_conns == 0
                assert be.rt.counters.cur_sess == 0
                # the queues were used: the backend's, or s1's for `source` (one client IP)
                assert be.rt.queue_max + sum(x.rt.queue_max for x in be.slots.values()) > 0
        finally:
            await stop_all(bs)
        assert len(flaps) >= 5
        # A few may be cut by the flapping (all of s1's with shutdown-sessions);
        # none may hang.
        assert len(answers) >= 150
    run(body)


def test_slow_reader_draining_its_buffer_is_not_idle() -> None:
    async def body() -> None:
        total = 4 * 1024 * 1024
        src = await Backend("src", f"source:{total}").start()
        port = free_port()
        cfg = config(listen("be", port, [server("src", src.port)],
                            timeouts={"client": 300, "server": 300}))
        loop = asyncio.get_running_loop()
        try:
            async with running(cfg):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
                sock.setblocking(False)
                await loop.sock_connect(sock, (LO, port))
                got = 0
                end = loop.time() + 20
                # ~1 MB/s in small reads: slower than keeplb could send, for
                # longer than the 300 ms timeouts, but never idle.
                while got < total and loop.time() < end:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 16384), TIMEOUT)
                    if not data:
                        break
                    got += len(data)
                    await asyncio.sleep(0.01)
                sock.close()
                assert got == total
        finally:
            await src.stop()
    run(body)
