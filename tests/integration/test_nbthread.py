"""`nbthread 2`: two worker processes, one health-check state (loopback only).

Which worker carried a connection is read with `ss -p` on the connections
held open to the backend servers: a batch of requests proves something about
both workers only when both pids show up in it. What one worker thinks is read
from the stats page, which any worker serves and which names its pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lbhelpers import ThreadedServer, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)"),
]

INTER_MS = 200


class Holder:
    """A backend server on a thread: sends its name, keeps the connection open
    until release(), and counts every accepted connection (checks included)."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.port = free_port()
        self.accepts = 0
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(256)
        sock.settimeout(0.1)
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self.thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while self.sock is sock:
            try:
                c, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                self.accepts += 1
                self.held.append(c)
            try:
                c.sendall(self.name)
            except OSError:
                pass

    def release(self) -> None:
        with self.lock:
            held, self.held = self.held, []
        for c in held:
            c.close()

    def stop(self) -> None:
        """Close the listening socket: the next check gets 'Connection refused'."""
        sock, self.sock = self.sock, None
        if self.thread is not None:
            self.thread.join(2)
        if sock is not None:
            sock.close()
        self.release()


@pytest.fixture
def servers() -> Iterator[tuple[Holder, Holder]]:
    s1, s2 = Holder(b"s1"), Holder(b"s2")
    yield s1, s2
    s1.stop()
    s2.stop()


def write_config(tmp: Path, port: int, s1: Holder, s2: Holder,
                 page_port: int | None = None) -> tuple[Path, Path]:
    """nbthread 2, frontend fe -> backend be (s1, s2); with `page_port`, a
    stats page (with /metrics) on that port too."""
    stats = tmp / "stats.sock"
    path = tmp / "lb.cfg"
    page = "" if page_port is None else (
        f"listen stats\n    bind 127.0.0.1:{page_port}\n    mode http\n    stats enable\n"
        "    stats uri /\n    http-request use-service prometheus-exporter if { path /metrics }\n")
    path.write_text(
        "global\n"
        "    nbthread 2\n"
        f"    stats socket {stats} level admin\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        "backend be\n"
        f"    server s1 127.0.0.1:{s1.port} check inter {INTER_MS} rise 1 fall 1\n"
        f"    server s2 127.0.0.1:{s2.port} check inter {INTER_MS} rise 1 fall 1\n"
        + page
    )
    return path, stats


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return sorted(int(x) for x in out.stdout.split())


def replaced(p: subprocess.Popen[bytes], gone: set[int]) -> bool:
    """Whether master `p` has two workers again, none of them in `gone` (one
    `ps`: with two, a dead worker reaped in between passes for a new one)."""
    kids = children_of(p.pid)
    return len(kids) == 2 and not gone & set(kids)


def title(pid: int) -> str:
    """The process title, or '' once the process is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def fd_targets(pid: int) -> set[str]:
    out: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile
    return out


def owners(ports: list[int]) -> set[int]:
    """Pids of the processes holding established connections to `ports`."""
    flt = " or ".join(f"dport = :{p}" for p in ports)
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( {flt} )"],
                         capture_output=True, text=True, timeout=10).stdout
    pids: set[int] = set()
    for part in out.split("pid=")[1:]:
        digits = part.split(",", 1)[0]
        if digits.isdigit():
            pids.add(int(digits))
    return pids


def burst(port: int, n: int) -> list[socket.socket]:
    """`n` non-blocking connections started at once (connecting still)."""
    conns: list[socket.socket] = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        conns.append(c)
    return conns


def batch(port: int, servers: tuple[Holder, Holder], n: int = 40) -> tuple[list[bytes], set[int]]:
    """`n` connections held open at once: the server names they reached and the
    pids of the workers that carried them."""
    conns: list[socket.socket] = []
    names: list[bytes] = []
    try:
        conns += burst(port, n)
        deadline = time.monotonic() + 3
        pending = list(conns)
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], pending, [], 0.2)
            pending = [c for c in pending if c not in writable]
        for c in conns:
            c.settimeout(3)
        for c in conns:
            try:
                names.append(c.recv(16))
            except OSError:
                names.append(b"")
        pids = owners([s.port for s in servers])
    finally:
        for c in conns:
            c.close()
        for s in servers:
            s.release()
    return names, pids


def batch_on_both(port: int, servers: tuple[Holder, Holder], workers: list[int]
                  ) -> list[bytes]:
    """One batch carried by each worker in turn: the others are stopped
    (SIGSTOP) meanwhile, so the kernel cannot hand it all to one worker
    (which one accepts a burst is otherwise a race that one may win every time)."""
    names: list[bytes] = []
    for w in workers:
        others = [o for o in workers if o != w]
        for _ in range(3):
            for o in others:
                os.kill(o, signal.SIGSTOP)
            try:
                got, pids = batch(port, servers, n=20)
            finally:
                for o in others:
                    os.kill(o, signal.SIGCONT)
            if pids == {w}:
                break
            # A worker stopped with a server connection still open (a session
            # its client had just closed, a health check under way) shows up
            # in `ss` too: let it finish, and try again.
            time.sleep(0.2)
        assert pids == {w}, f"worker {w} alone should have carried the batch, not {pids}"
        names += got
    return names


def settled(port: int, servers: tuple[Holder, Holder], workers: list[int],
            expect: set[bytes]) -> None:
    """The relay is one hop (checker -> master -> worker) behind: wait for a
    batch carried by both workers to reach only `expect`, then check that a
    second such batch agrees."""
    wait_for(lambda: set(batch_on_both(port, servers, workers)) == expect, 5,
             f"both workers to use only {expect}")
    assert set(batch_on_both(port, servers, workers)) == expect


def admin(stats: Path, cmd: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(3)
        s.connect(str(stats))
        s.sendall(cmd.encode() + b"\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data.decode()


def wait_for(pred: object, timeout: float = 10.0, what: str = "") -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[dict[str, object]]:
    procs: list[subprocess.Popen[bytes]] = []
    logf = open(tmp_path / "lb.log", "ab")

    def start(cfg: Path, health_fd: int | None = None) -> subprocess.Popen[bytes]:
        # No -W: nbthread 2 alone makes the light parent and its two workers.
        extra = ["--health-fd", str(health_fd)] if health_fd is not None else []
        p = subprocess.Popen([sys.executable, "-m", "keeplb", "lb", "-f", str(cfg), *extra],
                             stdout=logf, stderr=logf,
                             pass_fds=[health_fd] if health_fd is not None else [])
        procs.append(p)
        return p

    yield {"start": start, "log": tmp_path / "lb.log"}
    for p in procs:
        kids = children_of(p.pid) if p.poll() is None else []
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for k in kids:  # only our own workers, if the master could not stop them
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
    logf.close()


def start_two(lb: dict[str, object], cfg: Path, port: int, health_fd: int | None = None
              ) -> tuple[subprocess.Popen[bytes], list[int]]:
    start = lb["start"]
    assert callable(start)
    p = start(cfg, health_fd)
    wait_for(lambda: len(children_of(p.pid)) == 2, what="two workers")

    def serving() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.settimeout(1)
                return bool(c.recv(16))
        except OSError:
            return False

    wait_for(serving, 15, "the frontend to serve")
    return p, children_of(p.pid)


def test_two_workers_one_checker(tmp_path: Path, servers: tuple[Holder, Holder],
                                 lb: dict[str, object]) -> None:
    s1, s2 = servers
    port = free_port()
    cfg, _ = write_config(tmp_path, port, s1, s2)
    r, w = os.pipe()
    try:
        p, workers = start_two(lb, cfg, port, health_fd=w)
    finally:
        os.close(w)
    assert title(p.pid) == "keeplb: lb master"
    wait_for(lambda: sorted(title(w) for w in workers) == ["keeplb: lb worker 1",
                                                           "keeplb: lb worker 2"],
             what="the workers' titles")
    s1.release()
    before = s1.accepts
    window = 2.0
    time.sleep(window)
    checks = s1.accepts - before
    one_worker = window * 1000 / INTER_MS  # 10 checks; two checkers would make 20
    assert 0.5 * one_worker <= checks <= 1.4 * one_worker, checks
    # `keeplb run`'s health pipe: held and written by the checking worker only.
    pipe = os.readlink(f"/proc/self/fd/{r}")
    holders = [wk for wk in workers if pipe in fd_targets(wk)]
    assert [title(h) for h in holders] == ["keeplb: lb worker 1"]
    os.set_blocking(r, False)
    assert os.read(r, 4096) == b'{"backends": {"be": [2, 0]}}\n'
    os.close(r)
    # A master killed outright takes its workers with it (no orphan on the port).
    os.kill(p.pid, signal.SIGKILL)
    p.wait(5)
    try:
        wait_for(lambda: not any(title(w).startswith("keeplb") for w in workers), 10,
                 "the workers to exit")
    finally:
        for w in workers:
            if title(w).startswith("keeplb: lb worker"):  # ours, if it outlived the test
                os.kill(w, signal.SIGKILL)


def test_down_maint_and_restarts_agree_in_both_workers(
        tmp_path: Path, servers: tuple[Holder, Holder], lb: dict[str, object]) -> None:
    s1, s2 = servers
    port = free_port()
    cfg, stats = write_config(tmp_path, port, s1, s2)
    log = lb["log"]
    assert isinstance(log, Path)
    p, workers = start_two(lb, cfg, port)
    names = batch_on_both(port, servers, workers)
    assert set(names) == {b"s1", b"s2"}

    # An operator's maint on the checker's stats socket reaches the other worker.
    assert admin(stats, "set server be/s1 state maint") == "\n"
    settled(port, servers, workers, {b"s2"})
    assert admin(stats, "set server be/s1 state ready") == "\n"
    wait_for(lambda: b"s1" in batch(port, servers)[0], what="s1 back in use")

    # A server killed is marked DOWN by the one checker, in both workers.
    s1.stop()
    wait_for(lambda: "Server be/s1 is DOWN" in log.read_text(), what="s1 DOWN")
    settled(port, servers, workers, {b"s2"})
    assert log.read_text().count("Server be/s1 is DOWN") == 1  # logged once, by the checker

    # A killed follower is restarted and starts from the shared state (s1 DOWN).
    os.kill(workers[1], signal.SIGKILL)
    wait_for(lambda: replaced(p, {workers[1]}), what="worker 2 restarted")
    workers = children_of(p.pid)
    time.sleep(1.0)  # the new worker's interpreter starts before it accepts
    # From its first connection on: the snapshot is applied before it accepts.
    assert set(batch_on_both(port, servers, workers)) == {b"s2"}

    # A killed checker is restarted; it keeps checking and its stats socket answers.
    checker = next(w for w in workers if title(w) == "keeplb: lb worker 1")
    os.kill(checker, signal.SIGKILL)
    wait_for(lambda: replaced(p, {checker}), what="worker 1 restarted")
    wait_for(lambda: stats.exists() and "be,s1," in _show_stat(stats), what="stats socket")
    s1.start()
    wait_for(lambda: "Server be/s1 is UP" in log.read_text(), what="s1 UP")
    workers = children_of(p.pid)
    settled(port, servers, workers, {b"s1", b"s2"})


def _show_stat(stats: Path) -> str:
    try:
        return admin(stats, "show stat")
    except OSError:
        return ""


def _stat(stats: Path, px: str, sv: str, field: str) -> int:
    lines = admin(stats, "show stat").splitlines()
    cols = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        cells = line.split(",")
        if cells[:2] == [px, sv]:
            return int(cells[cols.index(field)] or 0)
    raise AssertionError(f"no {px}/{sv} row")


def test_show_stat_counts_both_workers(tmp_path: Path, servers: tuple[Holder, Holder],
                                       lb: dict[str, object]) -> None:
    s1, s2 = servers
    port = free_port()
    cfg, stats = write_config(tmp_path, port, s1, s2)
    p, workers = start_two(lb, cfg, port)
    time.sleep(1.5)  # the follower's counters of the probes above have reached worker 1
    before = _stat(stats, "fe", "FRONTEND", "stot")
    made = 0
    for _ in range(5):  # until a batch of 40 was carried by both workers
        names, pids = batch(port, servers)
        made += len(names)
        if set(workers) <= pids:
            break
    else:
        raise AssertionError(f"both workers {workers} never carried a batch")
    time.sleep(1.5)  # one counters period and a margin
    assert _stat(stats, "fe", "FRONTEND", "stot") - before == made
    assert _stat(stats, "be", "BACKEND", "stot") >= made
    assert _stat(stats, "be", "s1", "stot") + _stat(stats, "be", "s2", "stot") \
        == _stat(stats, "be", "BACKEND", "stot")


def _http_burst(port: int, path: str, n: int = 6) -> list[str]:
    """`n` GET requests sent at once (a burst, so that both workers answer some)."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(n)]
    out: list[str] = []
    try:
        for c in conns:
            c.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        for c in conns:
            data = b""
            try:
                while chunk := c.recv(65536):
                    data += chunk
            except OSError:
                pass
            out.append(data.decode("latin-1"))
    finally:
        for c in conns:
            c.close()
    return out


def page_of(port: int, pid: int, timeout: float = 10.0) -> str:
    """The stats page as worker `pid` serves it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for page in _http_burst(port, "/"):
            if f"Statistics Report for pid {pid}<" in page:
                return page
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} never served the stats page")


def worker_pid(p: subprocess.Popen[bytes], n: int, former: int | None = None) -> int:
    """The pid of worker `n` of master `p` (once its title is set), not `former`."""
    found: list[int] = []

    def named() -> bool:
        found[:] = [w for w in children_of(p.pid)
                    if w != former and title(w) == f"keeplb: lb worker {n}"]
        return bool(found)

    wait_for(named, 10, f"worker {n}")
    return found[0]


def count_served(port: int, n: int, wait: float = 1.5) -> int:
    """How many of `n` connections opened at once reached a server within
    `wait` seconds (the others may wait in the backlog)."""
    conns = []
    try:
        conns += burst(port, n)
        got: set[socket.socket] = set()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            readable, _, _ = select.select([c for c in conns if c not in got], [], [], 0.1)
            for c in readable:
                with contextlib.suppress(OSError):
                    if c.recv(16):
                        got.add(c)
        return len(got)
    finally:
        for c in conns:
            c.close()


def page_row(page: str, px: str, sv: str) -> dict[str, str]:
    """A row of the stats page: the Queue, Sessions, ... Status cells by name."""
    table = page.split(f'<a name="{px}">', 1)[1].split("</table>", 1)[0]
    m = re.search(rf'<td class="name">{sv}</td>(.*?)</tr>', table)
    assert m is not None, (px, sv)
    cells = re.findall(r"<td>(.*?)</td>", m.group(1))
    names = ("qcur", "qmax", "qlimit", "scur", "smax", "slim", "stot", "lbtot", "bin", "bout",
             "dreq", "dresp", "ereq", "econ", "eresp", "wretr", "wredis", "status")
    return dict(zip(names, cells, strict=False))


def served(port: int, n: int = 10) -> int:
    """How many of `n` connections made one after another reached a server."""
    ok = 0
    for _ in range(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.settimeout(1)
                ok += bool(c.recv(16))
        except OSError:
            pass
    return ok


def hold(port: int, n: int) -> list[socket.socket]:
    """`n` connections, each relayed to a server (its name received), left open."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(n)]
    for c in conns:
        assert c.recv(16) in (b"s1", b"s2")
    return conns


def test_frontend_commands_reach_every_worker(tmp_path: Path, servers: tuple[Holder, Holder],
                                              lb: dict[str, object]) -> None:
    s1, s2 = servers
    port, page_port = free_port(), free_port()
    cfg, stats = write_config(tmp_path, port, s1, s2, page_port)
    log = lb["log"]
    assert isinstance(log, Path)
    p, workers = start_two(lb, cfg, port)
    follower = worker_pid(p, 2)
    wait_for(lambda: "fe,FRONTEND" in _show_stat(stats), 10, "the stats socket")

    # disable: no worker takes a new connection; enable: both serve again.
    assert admin(stats, "disable frontend fe") == "\n"
    assert served(port) == 0
    wait_for(lambda: page_row(page_of(page_port, follower), "fe", "FRONTEND")["status"]
             == "PAUSED", 5, "worker 2 to pause fe")
    assert served(port) == 0
    assert admin(stats, "enable frontend fe") == "\n"
    assert set(batch_on_both(port, servers, workers)) == {b"s1", b"s2"}

    # set maxconn frontend: the limit is the process's, as haproxy's over its
    # threads: each worker takes its part (1 -> 1 + 0, 5 -> 3 + 2), the rest wait.
    for limit in (1, 5):
        assert admin(stats, f"set maxconn frontend fe {limit}") == "\n"
        wait_for(lambda lim=limit: page_row(page_of(page_port, follower), "fe", "FRONTEND")["slim"]
                 == str(lim), 5, f"worker 2 to see maxconn {limit}")
        try:
            assert count_served(port, 12) == limit
        finally:
            for s in servers:
                s.release()
    assert admin(stats, "set maxconn frontend fe 100") == "\n"

    # A follower killed while fe is disabled comes back with fe disabled.
    assert admin(stats, "disable frontend fe") == "\n"
    os.kill(follower, signal.SIGKILL)
    follower = worker_pid(p, 2, former=follower)
    workers = children_of(p.pid)
    row = page_row(page_of(page_port, follower), "fe", "FRONTEND")
    assert (row["status"], row["slim"]) == ("PAUSED", "100")
    assert served(port) == 0
    assert admin(stats, "enable frontend fe") == "\n"
    assert set(batch_on_both(port, servers, workers)) == {b"s1", b"s2"}

    # shutdown: stopped in every worker, for good; a reload starts it afresh.
    assert admin(stats, "shutdown frontend fe") == "\n"
    assert served(port) == 0
    wait_for(lambda: page_row(page_of(page_port, follower), "fe", "FRONTEND")["status"]
             == "STOP", 5, "worker 2 to stop fe")
    p.send_signal(signal.SIGUSR2)
    wait_for(lambda: replaced(p, set(workers)), 15, "the new generation")
    workers = children_of(p.pid)
    wait_for(lambda: served(port, 1) == 1, 10, "fe to serve after the reload")
    assert set(batch_on_both(port, servers, workers)) == {b"s1", b"s2"}
    # The follower met worker 1's pauses of the shared socket: no warning for them.
    assert "cannot accept" not in log.read_text()


def start_with_page(tmp_path: Path, servers: tuple[Holder, Holder], lb: dict[str, object]
                    ) -> tuple[int, int, Path, subprocess.Popen[bytes], list[int]]:
    """Two workers behind a stats socket and a stats page: (port, page port,
    stats socket, master, worker pids)."""
    s1, s2 = servers
    port, page_port = free_port(), free_port()
    cfg, stats = write_config(tmp_path, port, s1, s2, page_port)
    p, workers = start_two(lb, cfg, port)
    return port, page_port, stats, p, workers


def test_current_sessions_count_every_worker(tmp_path: Path, servers: tuple[Holder, Holder],
                                             lb: dict[str, object]) -> None:
    port, page_port, stats, p, workers = start_with_page(tmp_path, servers, lb)
    follower = worker_pid(p, 2)
    wait_for(lambda: "fe,FRONTEND" in _show_stat(stats), 10, "the stats socket")
    for s in servers:  # start_two's probes end (their servers kept them half open)
        s.release()
    wait_for(lambda: _stat(stats, "fe", "FRONTEND", "scur") == 0, 5, "no session")
    conns: list[socket.socket] = []
    try:
        for w in workers:  # 20 idle sessions held open, 10 by each worker
            others = [o for o in workers if o != w]
            for o in others:
                os.kill(o, signal.SIGSTOP)
            try:
                conns += hold(port, 10)
            finally:
                for o in others:
                    os.kill(o, signal.SIGCONT)
        assert owners([s.port for s in servers]) == set(workers)

        def scur() -> tuple[int, ...]:
            return (_stat(stats, "fe", "FRONTEND", "scur"), _stat(stats, "be", "BACKEND", "scur"),
                    _stat(stats, "be", "s1", "scur") + _stat(stats, "be", "s2", "scur"))

        # Every worker's counters reach the others within a second.
        wait_for(lambda: scur() == (20, 20, 20), 5, "scur 20 in show stat")
        assert _stat(stats, "fe", "FRONTEND", "smax") >= 20
        assert "CurrConns: 20\n" in admin(stats, "show info")
        # The stats page and /metrics count the whole process, whichever worker serves them.
        wait_for(lambda: page_row(page_of(page_port, follower), "fe", "FRONTEND")["scur"]
                 == "20", 5, "scur 20 on worker 2's stats page")
        for text in _http_burst(page_port, "/metrics"):
            assert re.findall(r'haproxy_frontend_current_sessions\{proxy="fe"\} ([0-9.]+)',
                              text) == ["20.0"]
    finally:
        for c in conns:
            c.close()


def test_clear_counters_all_clears_every_worker(tmp_path: Path, servers: tuple[Holder, Holder],
                                                lb: dict[str, object]) -> None:
    port, page_port, stats, p, workers = start_with_page(tmp_path, servers, lb)
    follower = worker_pid(p, 2)
    batch_on_both(port, servers, workers)
    rows = (("fe", "FRONTEND"), ("be", "BACKEND"), ("be", "s1"), ("be", "s2"))

    def stot() -> list[int]:
        return [_stat(stats, px, sv, "stot") for px, sv in rows]

    # worker 1 counts the follower's 20 sessions once its counters line came
    wait_for(lambda: _stat(stats, "fe", "FRONTEND", "stot") >= 40, 5, "stot 40")
    assert admin(stats, "clear counters all") == "\n"
    wait_for(lambda: stot() == [0, 0, 0, 0], 2, "stot 0 after clear counters all")
    time.sleep(2)  # the follower's next two counters lines have come
    assert stot() == [0, 0, 0, 0]
    # the follower cleared its own counters and its copy of worker 1's
    assert page_row(page_of(page_port, follower), "fe", "FRONTEND")["stot"] == "0"


def allowed_cpus(pid: int) -> set[int]:
    status = Path(f"/proc/{pid}/status").read_text()
    listed = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
    assert listed is not None
    cpus: set[int] = set()
    for part in listed.group(1).split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def test_cpu_map_binds_each_worker(tmp_path: Path, servers: tuple[Holder, Holder],
                                   lb: dict[str, object]) -> None:
    """`cpu-map auto:1/1-2 A B`: worker 1 runs on CPU A only, worker 2 on B only,
    the master where it was started (haproxy binds threads, not its master)."""
    s1, s2 = servers
    port = free_port()
    cfg, _ = write_config(tmp_path, port, s1, s2)
    mine = sorted(os.sched_getaffinity(0))
    a, b = mine[0], mine[-1]
    cfg.write_text(cfg.read_text().replace(
        "    nbthread 2\n", f"    nbthread 2\n    cpu-map auto:1/1-2 {a} {b}\n"
        if a != b else f"    nbthread 2\n    cpu-map 1/1-2 {a}\n"))
    p, _ = start_two(lb, cfg, port)
    assert allowed_cpus(worker_pid(p, 1)) == {a}
    assert allowed_cpus(worker_pid(p, 2)) == {b}
    assert allowed_cpus(p.pid) == set(mine)
    replies, _ = batch(port, servers, 10)
    assert sorted(set(replies)) == [b"s1", b"s2"]


def names_within(conns: list[socket.socket], wait: float) -> list[bytes]:
    """What the servers sent to each of `conns` within `wait` seconds."""
    got: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pending = [c for c in conns if c not in got]
        readable, _, _ = select.select(pending, [], [], 0.1) if pending else ([], [], [])
        for c in readable:
            try:
                got[c] = c.recv(16)
            except OSError:
                got[c] = b""
    return [got[c] for c in conns if got.get(c)]


def start_maxconn_2(tmp_path: Path, servers: tuple[Holder, Holder], lb: dict[str, object],
                    balance: str = "roundrobin"
                    ) -> tuple[subprocess.Popen[bytes], list[int], int]:
    """Two workers, `maxconn 2` on each server; the probes' sessions ended."""
    s1, s2 = servers
    port = free_port()
    cfg, _ = write_config(tmp_path, port, s1, s2)
    cfg.write_text(cfg.read_text().replace(" rise 1 fall 1\n", " rise 1 fall 1 maxconn 2\n")
                   .replace("    timeout server 10s\n", "    timeout server 10s\n"
                            "    timeout queue 10s\n")
                   .replace("backend be\n", f"backend be\n    balance {balance}\n"))
    p, _ = start_two(lb, cfg, port)
    workers = [worker_pid(p, 1), worker_pid(p, 2)]
    for s in servers:
        s.release()  # the sessions of start_two's probes end with their servers' side
    wait_for(lambda: not owners([s.port for s in servers]), 5, "the probes' sessions to end")
    return p, workers, port


def alone(worker: int, workers: list[int], port: int, n: int, wait: float = 1.5
          ) -> tuple[list[socket.socket], list[bytes]]:
    """`n` clients accepted by `worker` (the others SIGSTOPped meanwhile), and
    the server names that reached them within `wait` seconds."""
    others = [o for o in workers if o != worker]
    for o in others:
        os.kill(o, signal.SIGSTOP)
    try:
        conns = burst(port, n)
        return conns, names_within(conns, wait)
    finally:
        for o in others:
            os.kill(o, signal.SIGCONT)


def test_server_maxconn_is_the_whole_process(tmp_path: Path, servers: tuple[Holder, Holder],
                                             lb: dict[str, object]) -> None:
    """`maxconn 2` on each server holds the process (both workers) to 2 sessions
    per server, as haproxy's threads share srv->served: worker 1 alone may take
    all 4; worker 2's clients then wait, and are served as soon as worker 1's
    sessions end (worker 1 wakes worker 2 through the master)."""
    p, workers, port = start_maxconn_2(tmp_path, servers, lb)
    w1, w2 = workers
    held: list[socket.socket] = []
    try:
        conns, got = alone(w1, workers, port, 4)
        held += conns
        assert sorted(got) == [b"s1", b"s1", b"s2", b"s2"], got
        waiting, got = alone(w2, workers, port, 2)
        held += waiting
        assert got == [], "the process is at maxconn on both servers: they must wait"
        for c in conns:  # worker 1's four sessions end, both sides closed
            c.close()
        for s in servers:
            s.release()
        assert len(names_within(waiting, 5)) == 2
    finally:
        for c in held:
            c.close()


def test_balance_first_fills_a_server_for_the_whole_process(
        tmp_path: Path, servers: tuple[Holder, Holder], lb: dict[str, object]) -> None:
    """`balance first` with `maxconn 2`: worker 1 puts its two clients on s1
    (its whole maxconn, not a half), and worker 2's next client goes to s2, the
    first server the process has not filled."""
    p, workers, port = start_maxconn_2(tmp_path, servers, lb, balance="first")
    w1, w2 = workers
    held: list[socket.socket] = []
    try:
        for worker, n, names in ((w1, 2, [b"s1", b"s1"]), (w2, 1, [b"s2"])):
            conns, got = alone(worker, workers, port, n)
            held += conns
            assert got == names
    finally:
        for c in held:
            c.close()


class Counting(ThreadedServer):
    """A backend server on a thread that holds each connection `hold` seconds,
    sends its name and closes; it records the most connections it ever had open
    at once (any connection counts, so no health checks may reach it)."""

    def __init__(self, name: bytes, hold: float = 0.05) -> None:
        self.name, self.hold = name, hold
        self.lock = threading.Lock()
        self.open = self.most = self.served = 0
        super().__init__(backlog=256)

    def handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.open += 1
            self.most = max(self.most, self.open)
        threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            time.sleep(self.hold)
            with contextlib.suppress(OSError):
                conn.sendall(self.name)
            with self.lock:
                self.open -= 1
                self.served += 1


def fetch_all(port: int, n: int, timeout: float) -> list[bytes]:
    """`n` clients at once, each reading until the server closes, then closing:
    what each got."""
    conns = burst(port, n)
    got: dict[socket.socket, bytes] = {c: b"" for c in conns}
    pending = set(conns)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            readable, _, _ = select.select(list(pending), [], [], 0.1)
            for c in readable:
                try:
                    data = c.recv(64)
                except OSError:
                    data = b""
                got[c] += data
                if not data:  # the server is done: this side closes too, so the session ends
                    pending.discard(c)
                    c.close()
    finally:
        for c in conns:
            c.close()
    return [got[c] for c in conns]


def test_maxconn_holds_for_the_process_under_load(tmp_path: Path, lb: dict[str, object]
                                                  ) -> None:
    """60 clients at once through two workers onto two `maxconn 3` servers:
    each server never has more than 3 connections open, whichever worker
    carries them, and every client is served (the waiters of both workers
    get the slots the other one frees)."""
    backends = (Counting(b"s1"), Counting(b"s2"))
    try:
        port = free_port()
        cfg = tmp_path / "lb.cfg"
        cfg.write_text(
            "global\n    nbthread 2\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 20s\n"
            "    timeout server 20s\n    timeout queue 20s\n"
            f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
            "backend be\n"
            + "".join(f"    server {b.name.decode()} 127.0.0.1:{b.port} maxconn 3\n"
                      for b in backends))
        start = lb["start"]
        assert callable(start)
        p = start(cfg, None)
        wait_for(lambda: len(children_of(p.pid)) == 2, what="two workers")
        wait_for(lambda: all(title(w).startswith("keeplb: lb worker")
                             for w in children_of(p.pid)), what="workers titled")
        wait_for(lambda: fetch_all(port, 1, 5) != [b""], 15, "the frontend to serve")
        got = fetch_all(port, 60, 30)
        assert sorted(set(got)) == [b"s1", b"s2"] and got.count(b"") == 0, (
            got.count(b""), [b.served for b in backends], [b.most for b in backends])
        assert [b.most for b in backends] == [3, 3]
    finally:
        for b in backends:
            b.close()


def test_a_dead_workers_server_slots_come_back(tmp_path: Path, servers: tuple[Holder, Holder],
                                               lb: dict[str, object]) -> None:
    """Worker 2 killed while it holds every server's maxconn: its sessions died
    with it, so the master gives their slots back before it restarts it; worker 1
    may then take all 4 again."""
    p, workers, port = start_maxconn_2(tmp_path, servers, lb)
    w1, w2 = workers
    held: list[socket.socket] = []
    try:
        conns, got = alone(w2, workers, port, 4)
        held += conns
        assert sorted(got) == [b"s1", b"s1", b"s2", b"s2"], got
        os.kill(w2, signal.SIGKILL)
        w2 = worker_pid(p, 2, former=w2)
        conns, got = alone(w1, [w1, w2], port, 4)
        held += conns
        assert sorted(got) == [b"s1", b"s1", b"s2", b"s2"], got
    finally:
        for c in held:
            c.close()


def post_form(port: int, body: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(f"POST / HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data.decode("latin-1")


def test_stats_page_admin_on_a_follower_reaches_every_worker(
        tmp_path: Path, servers: tuple[Holder, Holder], lb: dict[str, object]) -> None:
    """The stats page's admin form, answered by worker 2 (worker 1 stopped
    meanwhile), puts s1 in MAINT in both workers: the request goes to the
    checker, which applies and publishes it."""
    s1, s2 = servers
    port, page_port = free_port(), free_port()
    cfg, _ = write_config(tmp_path, port, s1, s2, page_port)
    cfg.write_text(cfg.read_text().replace("    stats uri /\n",
                                           "    stats uri /\n    stats admin if TRUE\n"))
    p, _ = start_two(lb, cfg, port)
    w1, w2 = worker_pid(p, 1), worker_pid(p, 2)
    os.kill(w1, signal.SIGSTOP)
    try:
        answer = post_form(page_port, "b=be&s=s1&action=maint")
    finally:
        os.kill(w1, signal.SIGCONT)
    assert answer.startswith("HTTP/1.1 303") and "st=DONE" in answer, answer
    for pid in (w1, w2):
        wait_for(lambda pid=pid: page_row(page_of(page_port, pid), "be", "s1")["status"]
                 .startswith("MAINT"), 10, f"s1 in MAINT in worker {pid}")
    names, _ = batch(port, servers, 20)
    assert set(names) == {b"s2"}, names


def show_info(stats: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in admin(stats, "show info").splitlines()
                if ": " in line)


def through(port: int, worker: int, workers: list[int]) -> bytes:
    """One connection carried by `worker`: the others are stopped (SIGSTOP)
    until it has been served (the backend's name came back)."""
    others = [o for o in workers if o != worker]
    for o in others:
        os.kill(o, signal.SIGSTOP)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
            c.settimeout(3)
            return c.recv(16)
    finally:
        for o in others:
            os.kill(o, signal.SIGCONT)


def test_rates_are_the_whole_process(tmp_path: Path, servers: tuple[Holder, Holder],
                                     lb: dict[str, object]) -> None:
    """haproxy's ConnRate, SessRate and a frontend's rate count every thread:
    keeplb's count every worker (the others' part as of their last counters
    line, at most a second old: at a steady rate that is the same)."""
    s1, s2 = servers
    port = free_port()
    cfg, stats = write_config(tmp_path, port, s1, s2)
    p, workers = start_two(lb, cfg, port)
    rate, seconds = 24, 3.0  # connections per second in all, half through each worker
    n = int(rate * seconds)
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        assert through(port, workers[i % 2], workers) in (b"s1", b"s2")
    made = n / (time.monotonic() - start)  # what was made, should the pace have slipped
    info = show_info(stats)
    row = {k: _stat(stats, "fe", "FRONTEND", k)
           for k in ("rate", "conn_rate", "rate_max", "conn_rate_max")}
    for name, got in [(k, int(info[k])) for k in ("ConnRate", "SessRate", "MaxConnRate",
                                                  "MaxSessRate")] + list(row.items()):
        # one worker's alone would be about half of it
        assert 0.75 * made <= got <= 1.3 * rate + 2, (name, got, made, info, row)


def test_a_lifted_rate_limit_serves_the_waiting_clients_at_once(
        tmp_path: Path, servers: tuple[Holder, Holder], lb: dict[str, object]) -> None:
    """`set rate-limit connections global 0` on worker 1's stats socket resumes
    the other worker's accepting at once, not at its rate timer. Worker 1 is
    kept full (its part of `maxconn 4`: 2 sessions held open), so only worker
    2, paused by its part of `maxconnrate 4` (2 a second) until the clock's
    next second, can take the waiting clients."""
    s1, s2 = servers
    port = free_port()
    stats = tmp_path / "stats.sock"
    cfg = tmp_path / "lb.cfg"
    cfg.write_text(
        "global\n    nbthread 2\n    maxconn 4\n    maxconnrate 4\n"
        f"    stats socket {stats} level admin\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    server s1 127.0.0.1:{s1.port}\n    server s2 127.0.0.1:{s2.port}\n")
    p, workers = start_two(lb, cfg, port)
    wait_for(lambda: "keeplb: lb worker 1" in map(title, workers), what="the workers' titles")
    w1 = next(w for w in workers if title(w) == "keeplb: lb worker 1")
    w2 = next(w for w in workers if w != w1)
    s1.release()
    s2.release()
    time.sleep(2.0)  # the probes' sessions have ended and the rates are back to 0
    # A rate counts per second of the monotonic clock (FreqCtr): begin right
    # after one starts, so that worker 2's pause lasts most of a second.
    deadline = time.monotonic() + 2
    while not 0.02 < time.monotonic() % 1.0 < 0.1 and time.monotonic() < deadline:
        time.sleep(0.005)
    # worker 2 reaches its rate limit; its sessions end (it is not full)
    assert b"" not in [through(port, w2, workers) for _ in range(2)]
    s1.release()
    s2.release()
    # worker 1 fills its part of maxconn (the servers hold these open)
    assert b"" not in [through(port, w1, workers) for _ in range(2)]
    time.sleep(0.05)  # worker 2's sessions have ended
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(2)]
    try:
        assert select.select(waiting, [], [], 0.1)[0] == []  # nobody takes them
        assert time.monotonic() % 1.0 < 0.5, "too slow to test within one second"
        t0 = time.monotonic()
        assert admin(stats, "set rate-limit connections global 0") == "\n"
        for c in waiting:
            c.settimeout(2)
            assert c.recv(16) in (b"s1", b"s2")
        took = time.monotonic() - t0
    finally:
        for c in waiting:
            c.close()
    assert took < 0.3, f"served {took:.2f} s after the limit was lifted"
