"""The runtime API: haproxy 2.6's command texts, levels, and the socket
(unix and ipv4@127.0.0.1) under bad input and 100 concurrent clients; hatop
driving it under tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keeplb.config.model import (
    Address,
    Balance,
    Bind,
    Mode,
    Proxy,
    ProxyKind,
    Server,
    ServerOptions,
    StatsSocket,
)
from keeplb.lb.runtime import (
    AccessLevel,
    CliSession,
    DirectControl,
    RuntimeControl,
    SessionControl,
    SessionView,
    find_command,
    split_args,
    split_commands,
    start_stats_socket,
    usage_message,
)
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)
from tests.integration.test_proxy import (
    ask_name,
    backends,
    free_port,
    listen,
    running,
    server,
    settle,
    stop_all,
)
from tests.integration.test_proxy import config as proxy_config
from tests.integration.test_proxy import connect as proxy_connect
from tests.integration.test_proxy import run as run_async
from tests.integration.test_stats import haproxy_query, real_haproxy  # noqa: F401 (fixture)

NOW = 500.0


def make_runtime(algorithm: str = "roundrobin") -> ProcessRuntime:
    """fe1 -> be1 {s1 checked, s2 weight 5, s3 backup}, as the haproxy oracle config."""
    servers = [
        Server("s1", Address("ipv4", "127.0.0.1", 19101, 19101),
               ServerOptions(check=True, rise=2, fall=3, weight=1)),
        Server("s2", Address("ipv4", "127.0.0.1", 19102, 19102), ServerOptions(weight=5)),
        Server("s3", Address("ipv4", "127.0.0.1", 19103, 19103),
               ServerOptions(weight=1, backup=True)),
    ]
    fe_cfg = Proxy(ProxyKind.FRONTEND, "fe1", mode=Mode.TCP, default_backend="be1",
                   binds=[Bind(Address("ipv4", "127.0.0.1", 19001, 19001))])
    be_cfg = Proxy(ProxyKind.BACKEND, "be1", mode=Mode.TCP, balance=Balance(algorithm),
                   servers=servers)
    rt = ProcessRuntime(pid=1, started=time.time(), maxconn=1000, nbthread=1)
    rt.frontends.append(FrontendRuntime(fe_cfg, iid=1))
    be = BackendRuntime(be_cfg, iid=2, last_change=NOW)
    for sid, cfg in enumerate(servers, start=1):
        be.servers.append(ServerRuntime(
            config=cfg, backend="be1", sid=sid, host="127.0.0.1", port=cfg.address.port_low,
            uweight=cfg.weight, eweight=cfg.weight, check_enabled=bool(cfg.options.check),
            health=4 if cfg.options.check else 0, last_change=NOW))
    rt.backends.append(be)
    return rt


class RecordingControl(DirectControl):
    """DirectControl that also records every call, to show the CLI goes through it."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: NOW)
        self.calls: list[tuple[str, str, object]] = []

    def set_admin_state(self, server: ServerRuntime, state: AdminState) -> None:
        self.calls.append(("admin", server.name, state))
        super().set_admin_state(server, state)

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        self.calls.append(("weight", server.name, weight))
        super().set_weight(server, weight)

    def set_addr(self, server: ServerRuntime, host: str, port: int | None) -> None:
        self.calls.append(("addr", server.name, (host, port)))
        super().set_addr(server, host, port)

    def enable_health(self, server: ServerRuntime) -> None:
        self.calls.append(("health", server.name, True))
        super().enable_health(server)

    def disable_health(self, server: ServerRuntime) -> None:
        self.calls.append(("health", server.name, False))
        super().disable_health(server)

    def set_health(self, server: ServerRuntime, op: OpState) -> None:
        self.calls.append(("op", server.name, op))
        super().set_health(server, op)

    def set_maxconn(self, server: ServerRuntime, maxconn: int) -> None:
        self.calls.append(("maxconn", server.name, maxconn))
        super().set_maxconn(server, maxconn)


def session(level: AccessLevel = AccessLevel.ADMIN, algorithm: str = "roundrobin"
            ) -> tuple[CliSession, RecordingControl]:
    ctl = RecordingControl()
    assert isinstance(ctl, RuntimeControl)
    return CliSession(make_runtime(algorithm), ctl, level=level, now=lambda: NOW), ctl


def run(sess: CliSession, line: str) -> str:
    sess.closed = False
    return sess.execute_line(line)


def stat_status(sess: CliSession, server: str) -> tuple[str, str]:
    for line in run(sess, "show stat").split("\n"):
        cells = line.split(",")
        if cells[:2] == ["be1", server]:
            return cells[17], cells[18]
    raise AssertionError(f"no row for {server}")


# --------------------------------------------------------------------------
# command texts (each expected string was read from a haproxy 2.6.12 socket)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    ("get weight be1/s2", "5 (initial 5)\n\n"),
    ("get weight be1/zz", "No such server.\n\n"),
    ("get weight zz/s1", "No such backend.\n\n"),
    ("get weight be1", "Require 'backend/server'.\n\n"),
    ("set server be1/s2 state bogus", "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"),
    ("set server be1/s2 weight 300", "Absolute weight can only be between 0 and 256 inclusive.\n\n"),
    ("set server be1/s2 weight abc", "Empty weight string empty or preceded by garbage\n"),
    ("set server be1/s2 weight", "Require <weight> or <weight%>.\n\n"),
    ("set server be1/s2 addr bad", "Invalid addr 'bad' by 'stats socket command'\n\n"),
    ("set server be1/s2 addr", "set server <b>/<s> addr requires an address and optionally a port.\n\n"),
    ("set server be1/s2 addr 127.0.0.2 port 19105",
     "IP changed from '127.0.0.1' to '127.0.0.2', port changed from '19102' to '19105' by 'stats socket command'\n\n"),
    ("set server be1/s2 addr 127.0.0.1 port abc",
     "no need to change the addr, problem converting port 'abc' to an int by 'stats socket command'\n\n"),
    ("set server be1/s2 foo", "usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | agent-send | check-addr | check-port | fqdn | health | ssl | state | weight\n\n"),
    ("set server be1/s1 health foo", "'set server <srv> health' expects 'up', 'stopping', or 'down'.\n\n"),
    ("set maxconn server be1/s2", "Require <maxconn>.\n\n"),
    ("set maxconn server be1/s2 abc", "maxconn string empty or preceded by garbage\n"),
    ("enable health be1/s2", "Health check was not configured on this server, cannot enable.\n\n"),
    ("show servers state nope", "Can't find backend.\n\n"),
    ("show backend", "# name\nbe1\n\n"),
    ("show cli level", "admin\n\n"),
    ("set timeout cli", "Expects an integer value.\n\n"),
    ("set timeout cli 10", "\n"),
    ("help get", "The following commands are valid at this level:\n"
     "  get weight <bk>/<srv>                   : report a server's current weight\n"
     "  help [<command>]                        : list matching or all commands\n"
     "  prompt                                  : toggle interactive mode with prompt\n"
     "  quit                                    : disconnect\n\n"),
])
def test_command_texts_are_haproxy_26(line: str, expected: str) -> None:
    sess, _ = session()
    assert run(sess, line) == expected
    assert sess.closed  # non-interactive: one line, then the connection ends


@pytest.mark.parametrize("line", ["foo", "shw stat", "show foo", "xyz abc def", "set"])
def test_unknown_command_gets_haproxy_answer(line: str) -> None:
    sess, ctl = session()
    out = run(sess, line)
    assert out.startswith("Unknown command, but maybe one of the following ones is a better match:\n")
    assert out.endswith("  quit                                    : disconnect\n\n")
    assert ctl.calls == []


def test_fuzzy_match_proposes_the_close_command() -> None:
    # haproxy 2.6 answers 'shw stat' with only 'show stat' (plus help/prompt/quit)
    out = usage_message(["shw", "stat"])
    assert out.splitlines()[1].startswith("  show stat [desc|json|no-maint|typed|up]*:")
    assert len(out.splitlines()) == 5
    empty = usage_message([])
    assert empty.startswith("Unknown command. Please enter one of the following commands only:\n")


def test_haproxy_command_keeplb_lacks_is_named() -> None:
    sess, _ = session()
    assert run(sess, "show ssl cert") == "'show ssl cert' is not supported by keeplb.\n\n"


@pytest.mark.parametrize(("level", "line"), [
    (AccessLevel.USER, "set server be1/s2 state maint"),
    (AccessLevel.USER, "disable server be1/s2"),
    (AccessLevel.USER, "clear counters"),
    (AccessLevel.OPER, "set weight be1/s2 3"),
    (AccessLevel.OPER, "clear counters all"),
    (AccessLevel.USER, "operator"),
])
def test_too_low_level_is_refused(level: AccessLevel, line: str) -> None:
    sess, ctl = session(level)
    assert run(sess, line) == "Permission denied\n\n"
    assert ctl.calls == []
    assert sess.runtime.backends[0].servers[1].admin is AdminState.READY


def test_user_level_can_read_but_not_see_addresses() -> None:
    sess, _ = session(AccessLevel.USER)
    assert run(sess, "get weight be1/s2") == "5 (initial 5)\n\n"
    out = run(sess, "show stat")
    assert "127.0.0.1:19102" not in out and ",no check," in out
    admin, _ = session()
    assert "127.0.0.1:19102" in run(admin, "show stat")


def test_lowering_level_in_one_line() -> None:
    sess, _ = session(AccessLevel.OPER)
    assert run(sess, "user; show cli level; operator") == "\nuser\n\nPermission denied\n\n"


@pytest.mark.parametrize(("state", "status", "admin"), [
    ("maint", "MAINT", AdminState.MAINT),
    ("drain", "DRAIN", AdminState.DRAIN),
    ("ready", "no check", AdminState.READY),
])
def test_set_server_state_through_control_and_in_show_stat(
        state: str, status: str, admin: AdminState) -> None:
    sess, ctl = session()
    if state == "ready":
        run(sess, "set server be1/s2 state maint")
    assert run(sess, f"set server be1/s2 state {state}") == "\n"
    assert ctl.calls[-1] == ("admin", "s2", admin)
    assert sess.runtime.backends[0].servers[1].admin is admin
    assert stat_status(sess, "s2") == (status, "5")
    state_line = [ln for ln in run(sess, "show servers state be1").split("\n") if " s2 " in ln][0]
    assert state_line.split()[6] == {"maint": "1", "drain": "8", "ready": "0"}[state]


def test_disable_enable_server_and_health() -> None:
    sess, ctl = session()
    run(sess, "disable server be1/s1; disable health be1/s1")
    assert stat_status(sess, "s1")[0] == "MAINT"
    assert sess.runtime.backends[0].servers[0].check_enabled is False
    run(sess, "enable server be1/s1; enable health be1/s1")
    assert stat_status(sess, "s1")[0] == "UP"
    assert [c[0] for c in ctl.calls] == ["admin", "health", "admin", "health"]


def test_set_server_health_down_and_up() -> None:
    sess, ctl = session()
    run(sess, "set server be1/s1 health down")
    assert stat_status(sess, "s1")[0] == "DOWN"
    run(sess, "set server be1/s1 health up")
    assert stat_status(sess, "s1")[0] == "UP"
    assert ctl.calls == [("op", "s1", OpState.STOPPED), ("op", "s1", OpState.RUNNING)]


@pytest.mark.parametrize(("arg", "weight"), [("10", 10), ("50%", 2), ("0", 0), ("150%", 7)])
def test_weights(arg: str, weight: int) -> None:
    sess, ctl = session()
    assert run(sess, f"set server be1/s2 weight {arg}") == "\n"
    assert ctl.calls == [("weight", "s2", weight)]
    assert run(sess, "get weight be1/s2") == f"{weight} (initial 5)\n\n"
    assert run(sess, f"set weight be1/s2 {arg}") == "\n"  # hatop's deprecated form


def test_static_algorithm_only_takes_0_or_initial_weight() -> None:
    sess, ctl = session(algorithm="static-rr")
    out = run(sess, "set server be1/s2 weight 3")
    assert out.startswith("Backend is using a static LB algorithm")
    assert run(sess, "set server be1/s2 weight 0%") == "\n"
    assert ctl.calls == [("weight", "s2", 0)]


def test_set_addr_and_maxconn() -> None:
    sess, ctl = session()
    run(sess, "set server be1/s2 addr 127.0.0.3 port 20000; set maxconn server be1/s2 10")
    s2 = sess.runtime.backends[0].servers[1]
    assert (s2.host, s2.port, s2.maxconn) == ("127.0.0.3", 20000, 10)
    assert ctl.calls == [("addr", "s2", ("127.0.0.3", 20000)), ("maxconn", "s2", 10)]
    assert "127.0.0.3:20000" in run(sess, "show stat")
    assert run(sess, "set server be1/s2 addr 127.0.0.3") == \
        "no need to change the addr by 'stats socket command'\n\n"


def test_prompt_mode_and_quit() -> None:
    sess, _ = session()
    assert sess.execute_line("prompt\n") == "\n> "
    assert not sess.closed
    assert sess.execute_line("get weight be1/s2; show backend\n") == \
        "5 (initial 5)\n\n> # name\nbe1\n\n> "
    assert sess.execute_line("\n").startswith("Unknown command. Please enter one of")
    assert not sess.closed
    assert sess.execute_line("quit\n") == ""
    assert sess.closed


def test_clear_counters() -> None:
    sess, _ = session()
    c = sess.runtime.frontends[0].counters
    c.session_started()
    c.session_started()
    c.session_ended()
    run(sess, "clear counters")
    assert (c.cur_sess, c.max_sess, c.total_sess) == (1, 1, 2)
    run(sess, "clear counters all")
    assert (c.cur_sess, c.total_sess) == (1, 0)


def test_splitting() -> None:
    assert split_commands(r"show stat; get weight a/b\;c") == ["show stat", r" get weight a/b\;c"]
    assert split_args(r"  set  server a/b\ c  state ") == ["set", "server", "a/b c", "state"]


def test_garbage_never_raises() -> None:
    sess, _ = session()
    for line in ["\x00\xff", "set server /", "set server be1/ state ready", "get weight /s1",
                 "show stat a b c", "show stat -1 x y", "set maxconn server", "a" * 5000,
                 "set server be1/s2 addr 127.0.0.1 port 99999", "show servers state a b c"]:
        out = run(sess, line)
        assert out.endswith("\n") and "Traceback" not in out


class SessionsControl(RecordingControl):
    """RecordingControl with two relay sessions, for `show sess` and `shutdown`."""

    def __init__(self) -> None:
        super().__init__()
        self.live = {
            0xA1: SessionView(0xA1, "tcpv4", "127.0.0.1:50001", "fe1", "be1", "s2", 75.0),
            0xA2: SessionView(0xA2, "tcpv4", "127.0.0.1:50002", "fe1", None, None, 3.0),
        }

    def sessions(self) -> list[SessionView]:
        return list(self.live.values())

    def shutdown_session(self, ident: int) -> bool:
        return self.live.pop(ident, None) is not None

    def shutdown_sessions(self, server: ServerRuntime) -> int:
        gone = [k for k, v in self.live.items() if v.server == server.name]
        for k in gone:
            del self.live[k]
        return len(gone)


def test_sessions_through_session_control() -> None:
    ctl = SessionsControl()
    assert isinstance(ctl, SessionControl)
    sess = CliSession(make_runtime(), ctl, level=AccessLevel.ADMIN)
    out = run(sess, "show sess")
    assert out == ("0xa1: proto=tcpv4 src=127.0.0.1:50001 fe=fe1 be=be1 srv=s2 ts=00 epoch=0 "
                   "age=1m15s calls=0 rate=0 cpu=0 lat=0\n"
                   "0xa2: proto=tcpv4 src=127.0.0.1:50002 fe=fe1 be=<NONE> srv=<none> ts=00 "
                   "epoch=0 age=3s calls=0 rate=0 cpu=0 lat=0\n\n")
    assert run(sess, "show sess 0x1234") == "Session not found.\n\n"
    assert run(sess, "shutdown session zz") == "Session pointer expected (use 'show sess').\n\n"
    assert run(sess, "shutdown session 0x1234") == "No such session (use 'show sess').\n\n"
    assert run(sess, "shutdown sessions server be1/s2") == "\n"
    assert list(ctl.live) == [0xA2]
    assert run(sess, "shutdown session 0xa2") == "\n" and not ctl.live
    plain, _ = session(AccessLevel.OPER)
    assert run(plain, "show sess").endswith("is not supported by keeplb here.\n\n")
    user, _ = session(AccessLevel.USER)
    assert run(user, "show sess") == "Permission denied\n\n"


# --------------------------------------------------------------------------
# the socket
# --------------------------------------------------------------------------


async def _ask(path: Path | tuple[str, int], data: bytes) -> bytes:
    if isinstance(path, Path):
        reader, writer = await asyncio.open_unix_connection(str(path))
    else:
        reader, writer = await asyncio.open_connection(*path)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return out


def test_unix_socket_mode_and_non_interactive(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"

    async def main() -> None:
        rt = make_runtime()
        server = await start_stats_socket(
            StatsSocket(Address("unix", str(path)), mode=0o600, level="operator"), rt,
            DirectControl())
        try:
            assert path.stat().st_mode & 0o777 == 0o600
            assert await _ask(path, b"show cli level\n") == b"operator\n\n"
            assert await _ask(path, b"set server be1/s2 state maint\n") == b"Permission denied\n\n"
            assert await _ask(path, b"show backend; get weight be1/s2\n") == \
                b"# name\nbe1\n\n5 (initial 5)\n\n"
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_bad_command_keeps_the_socket_serving(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"

    async def main() -> None:
        server = await start_stats_socket(StatsSocket(Address("unix", str(path))),
                                          make_runtime(), DirectControl())
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"prompt\n")
            assert await reader.readuntil(b"> ") == b"\n> "
            for junk in (b"foo bar\n", b"\xff\xfe\x00\n", b"set server be1/zz state x\n"):
                writer.write(junk)
                reply = await asyncio.wait_for(reader.readuntil(b"\n> "), 5)
                assert reply.startswith((b"Unknown command", b"No such server."))
            writer.write(b"set server be1/s2 state drain\nshow stat\n")
            await asyncio.wait_for(reader.readuntil(b"\n> "), 5)
            table = await asyncio.wait_for(reader.readuntil(b"\n> "), 5)
            assert b"be1,s2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DRAIN,5," in table
            writer.write(b"quit\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # a new client is served too
            assert await _ask(path, b"show backend\n") == b"# name\nbe1\n\n"
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_oversized_line_and_abrupt_clients_do_not_hurt_the_server(tmp_path: Path) -> None:
    path = tmp_path / "big.sock"

    async def main() -> None:
        server = await start_stats_socket(StatsSocket(Address("unix", str(path))),
                                          make_runtime(), DirectControl())
        try:
            # a line over tune.bufsize ends that session, as in haproxy
            assert await _ask(path, b"show " + b"x" * 40000 + b"\n") == b""
            for _ in range(20):  # connect, write, vanish before the answer
                _, writer = await asyncio.open_unix_connection(str(path))
                writer.write(b"show stat\n")
                writer.transport.abort()
            assert await _ask(path, b"show backend\n") == b"# name\nbe1\n\n"
            # no newline before EOF: the command still runs
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"get weight be1/s2")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b"5 (initial 5)\n\n"
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_abstract_namespace_socket() -> None:
    name = f"klb-stats-{os.getpid()}"

    async def main() -> None:
        server = await start_stats_socket(StatsSocket(Address("abns", name)), make_runtime(),
                                          DirectControl())
        try:
            reader, writer = await asyncio.open_unix_connection("\0" + name)
            writer.write(b"show backend\n")
            assert await asyncio.wait_for(reader.read(), 5) == b"# name\nbe1\n\n"
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_hundred_concurrent_clients_on_loopback_tcp() -> None:
    async def main() -> None:
        rt = make_runtime()
        server = await start_stats_socket(
            StatsSocket(Address("ipv4", "127.0.0.1", 0, 0), level="admin"), rt, DirectControl())
        try:
            port = server.sockets[0].getsockname()[1]
            replies = await asyncio.gather(
                *(_ask(("127.0.0.1", port), b"show stat\n") for _ in range(100)))
            assert len(replies) == 100
            assert all(r.startswith(b"# pxname,svname,") and r.endswith(b",\n\n")
                       for r in replies)
            assert len({r.count(b"\n") for r in replies}) == 1
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_idle_client_is_dropped_after_timeout(tmp_path: Path) -> None:
    path = tmp_path / "t.sock"

    async def main() -> None:
        server = await start_stats_socket(StatsSocket(Address("unix", str(path))),
                                          make_runtime(), DirectControl(), timeout=0.2)
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 10))


# --------------------------------------------------------------------------
# hatop (Debian's HAProxy TUI) under tmux: it lists proxies and servers, and
# its F10/F9 keys put a server into maintenance and back through the socket
# --------------------------------------------------------------------------


class SocketThread:
    """keeplb's stats socket served by an event loop on its own thread."""

    def __init__(self, path: Path, runtime: ProcessRuntime) -> None:
        self.path = path
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(start_stats_socket(
            StatsSocket(Address("unix", str(self.path)), level="admin"), self.runtime,
            DirectControl()))
        self.ready.set()
        self.loop.run_forever()
        server.close()
        # client handlers still reading must end before the loop closes
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def __enter__(self) -> SocketThread:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout


def wait_screen(session: str, pred: Callable[[str], bool], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if pred(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"screen never matched:\n{screen}")


def server_line(screen: str, name: str) -> str:
    return next((ln for ln in screen.splitlines() if ln.startswith(name + " ")), "")


@pytest.fixture
def tmux_session() -> Iterator[str]:
    if shutil.which("tmux") is None or shutil.which("hatop") is None:
        pytest.skip("needs tmux and hatop (apt install tmux hatop)")
    name = f"klb-hatop-{os.getpid()}"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=10)


@pytest.mark.slow
def test_hatop_shows_servers_and_toggles_maintenance(tmp_path: Path, tmux_session: str) -> None:
    path = tmp_path / "hatop.sock"
    runtime = make_runtime()
    s2 = runtime.backends[0].servers[1]
    with SocketThread(path, runtime):
        _tmux("new-session", "-d", "-s", tmux_session, "-x", "160", "-y", "40",
              f"hatop -s {path}")
        screen = wait_screen(tmux_session, lambda s: "BACKEND" in s and "s3" in s)
        assert ">>> fe1" in screen and ">>> be1" in screen
        assert server_line(screen, "s1").split()[:3] == ["s1", "1", "UP"]
        assert "2.6.0-keeplb" in screen
        # the cursor starts on '>>> fe1'; s2 is five rows below
        for _ in range(5):
            _tmux("send-keys", "-t", tmux_session, "Down")
            time.sleep(0.1)
        _tmux("send-keys", "-t", tmux_session, "F10")
        screen = wait_screen(tmux_session, lambda s: "MAINT" in server_line(s, "s2"))
        assert s2.admin is AdminState.MAINT
        _tmux("send-keys", "-t", tmux_session, "F9")
        wait_screen(tmux_session, lambda s: "MAINT" not in server_line(s, "s2")
                    and server_line(s, "s2") != "")
        assert s2.admin is AdminState.READY
        _tmux("send-keys", "-t", tmux_session, "q")


def test_show_stat_and_info_typed_and_json() -> None:
    import json

    sess, _ = session()
    doc = json.loads(run(sess, "show stat json"))
    assert [obj[1]["value"]["value"] for obj in doc] == ["FRONTEND", "s1", "s2", "s3", "BACKEND"]
    typed = run(sess, "show stat 2 4 2 typed").splitlines()
    assert typed[0] == "S.2.2.0.pxname.1:KNS:str:be1" and typed[-1] == ""
    assert run(sess, "show info typed").startswith("0.Name.1:POS:str:HAProxy\n")
    assert json.loads(run(sess, "show info json"))[6]["field"] == {"pos": 6, "name": "Pid"}


def test_a_failing_control_costs_one_command_only(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(DirectControl):
        def set_weight(self, server: ServerRuntime, weight: int) -> None:
            raise RuntimeError("balancer refused")

    sess = CliSession(make_runtime(), Broken(), level=AccessLevel.ADMIN)
    out = run(sess, "set weight be1/s2 3; get weight be1/s2")
    assert out == "Internal error: balancer refused\n\n5 (initial 5)\n\n"
    assert "runtime command 'set weight be1/s2 3' failed" in caplog.text


# --------------------------------------------------------------------------
# frontends and process limits: texts against a real haproxy 2.6, effects on
# a live relay
# --------------------------------------------------------------------------

# (command, what to compare): "text" compares the whole answer; "fe1" the
# status and slim cells of fe1 in `show stat`; "info" the limit lines of `show info`.
FRONTEND_SCRIPT: tuple[tuple[str, str], ...] = (
    ("disable frontend", "text"), ("disable frontend nope", "text"),
    ("disable frontend be1", "text"), ("disable frontend fe1", "text"),
    ("show stat", "fe1"), ("disable frontend fe1", "text"),
    ("operator; enable frontend fe1", "text"), ("enable frontend fe1", "text"),
    ("show stat", "fe1"), ("enable frontend fe1", "text"), ("enable frontend", "text"),
    ("set maxconn frontend", "text"), ("set maxconn frontend fe1", "text"),
    ("set maxconn frontend fe1 -3", "text"), ("set maxconn frontend nope 5", "text"),
    ("user; set maxconn frontend fe1 3", "text"), ("set maxconn frontend fe1 77", "text"),
    ("show stat", "fe1"), ("set maxconn global", "text"), ("set maxconn global 2000", "text"),
    ("set maxconn global 100", "text"), ("show info", "info"),
    ("set maxconn global 0", "text"), ("show info", "info"),
    ("set rate-limit", "text"), ("set rate-limit connections", "text"),
    ("set rate-limit connections local 3", "text"),
    ("set rate-limit connections global", "text"),
    ("set rate-limit connections global 10", "text"),
    ("set rate-limit http-compression global 5", "text"),
    ("set rate-limit sessions global 7", "text"), ("set rate-limit sessions global x", "text"),
    ("set rate-limit ssl-sessions global -1", "text"),
    ("operator; set rate-limit connections global 4", "text"), ("show info", "info"),
    ("shutdown frontend", "text"), ("shutdown frontend nope", "text"),
    ("shutdown frontend fe1", "text"), ("show stat", "fe1"),
    ("shutdown frontend fe1", "text"), ("enable frontend fe1", "text"),
    ("disable frontend fe1", "text"),
)
LIMIT_INFO = ("Maxconn", "Hard_maxconn", "ConnRateLimit", "SessRateLimit", "SslRateLimit",
              "CompressBpsRateLim")


def _compared(kind: str, text: str) -> object:
    if kind == "fe1":
        for line in text.split("\n"):
            cells = line.split(",")
            if cells[:2] == ["fe1", "FRONTEND"]:
                return cells[17], cells[6]
        raise AssertionError("no fe1 row")
    if kind == "info":
        pairs = dict(line.split(": ", 1) for line in text.split("\n") if ": " in line)
        return {k: pairs[k] for k in LIMIT_INFO}
    return text


def test_frontend_and_limit_commands_match_real_haproxy(
        real_haproxy: tuple[Path, str]) -> None:  # noqa: F811 (the imported fixture)
    sock, _ = real_haproxy
    sess, _ = session()
    for line, kind in FRONTEND_SCRIPT:
        sess.level = AccessLevel.ADMIN
        ours = _compared(kind, run(sess, line))
        theirs = _compared(kind, haproxy_query(sock, line))
        assert ours == theirs, line


def test_new_usage_lines_are_haproxy_26(
        real_haproxy: tuple[Path, str]) -> None:  # noqa: F811 (the imported fixture)
    sock, _ = real_haproxy
    theirs = haproxy_query(sock, "help")
    for words in (("disable", "frontend"), ("enable", "frontend"), ("shutdown", "frontend"),
                  ("set", "maxconn", "frontend"), ("set", "maxconn", "global"),
                  ("set", "rate-limit")):
        cmd = find_command(list(words))
        assert cmd is not None and cmd.usage is not None
        assert f"  {cmd.usage}\n" in theirs, words


async def _refused(port: int) -> bool:
    try:
        _, w = await proxy_connect(port)
    except ConnectionRefusedError:
        return True
    w.close()
    return False


def test_frontend_commands_act_on_a_live_relay() -> None:
    async def body() -> None:
        bs = await backends("s1")
        port = free_port()
        try:
            async with running(proxy_config(listen("px", port, [server("s1", bs[0].port)]))) as lb:
                assert lb.control is not None
                sess = CliSession(lb.runtime, lb.control)
                r1, w1 = await proxy_connect(port)
                assert await r1.readline() == b"s1\n"
                assert run(sess, "disable frontend px") == "\n"
                assert await _refused(port)
                # a session ending while disabled must not resume accepting
                w1.close()
                await settle(lb, 0)
                assert await _refused(port)
                assert stat_cells(sess, "px") == ("PAUSED", str(lb.runtime.maxconn))
                assert run(sess, "enable frontend px") == "\n"
                assert await ask_name(port) == "s1"
                assert stat_cells(sess, "px")[0] == "OPEN"
                # a lowered frontend maxconn holds the second client back...
                assert run(sess, "set maxconn frontend px 1") == "\n"
                r1, w1 = await proxy_connect(port)
                assert await r1.readline() == b"s1\n"
                r2, w2 = await proxy_connect(port)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(r2.readline(), 0.4)
                # ...and raising it lets it in without waiting for a session to end
                assert run(sess, "set maxconn frontend px 2") == "\n"
                assert await asyncio.wait_for(r2.readline(), 5) == b"s1\n"
                assert run(sess, "shutdown frontend px") == "\n"
                assert await _refused(port)
                assert stat_cells(sess, "px")[0] == "STOP"
                assert await asyncio.wait_for(r1.read(0), 1) == b""  # sessions go on
                w1.write(b"ping\n")
                assert await asyncio.wait_for(r1.readline(), 5) == b"ping\n"
                assert run(sess, "enable frontend px") == (
                    "Frontend was previously shut down, cannot enable.\n\n")
                w1.close()
                w2.close()
        finally:
            await stop_all(bs)
    run_async(body)


def stat_cells(sess: CliSession, frontend: str) -> tuple[str, str]:
    """(status, slim) of a frontend's `show stat` row."""
    for line in run(sess, "show stat").split("\n"):
        cells = line.split(",")
        if cells[:2] == [frontend, "FRONTEND"]:
            return cells[17], cells[6]
    raise AssertionError(f"no row for {frontend}")


def test_frontend_commands_without_frontend_control_are_refused() -> None:
    class OnlyServers:
        """A RuntimeControl without the FrontendControl methods."""

        def __getattr__(self, name: str) -> object:
            if name in ("disable_frontend", "set_global_maxconn", "set_rate_limit"):
                raise AttributeError(name)
            return getattr(DirectControl(), name)

    sess = CliSession(make_runtime(), OnlyServers())  # type: ignore[arg-type]
    assert "not supported" in run(sess, "disable frontend fe1")
    assert "not supported" in run(sess, "set maxconn global 5")
    assert sess.runtime.maxconn == 1000
