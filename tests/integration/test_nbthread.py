"""`nbthread 2`: two worker processes, one health-check state (loopback only).

Which worker carried a connection is read with `ss -p` on the connections
held open to the backend servers: a batch of requests proves something about
both workers only when both pids show up in it.
"""

from __future__ import annotations

import os
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

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)"),
]

INTER_MS = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def write_config(tmp: Path, port: int, s1: Holder, s2: Holder) -> tuple[Path, Path]:
    stats = tmp / "stats.sock"
    path = tmp / "lb.cfg"
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
    )
    return path, stats


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return sorted(int(x) for x in out.stdout.split())


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


def batch(port: int, servers: tuple[Holder, Holder], n: int = 40) -> tuple[list[bytes], set[int]]:
    """`n` connections held open at once: the server names they reached and the
    pids of the workers that carried them."""
    conns: list[socket.socket] = []
    names: list[bytes] = []
    try:
        # All at once, as a burst: connections arriving one by one tend to be
        # accepted by whichever worker wakes first, every time.
        for _ in range(n):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            conns.append(c)
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
        for o in others:
            os.kill(o, signal.SIGSTOP)
        try:
            got, pids = batch(port, servers, n=20)
        finally:
            for o in others:
                os.kill(o, signal.SIGCONT)
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
    wait_for(lambda: len(children_of(p.pid)) == 2 and workers[1] not in children_of(p.pid),
             what="worker 2 restarted")
    workers = children_of(p.pid)
    time.sleep(1.0)  # the new worker's interpreter starts before it accepts
    # From its first connection on: the snapshot is applied before it accepts.
    assert set(batch_on_both(port, servers, workers)) == {b"s2"}

    # A killed checker is restarted; it keeps checking and its stats socket answers.
    checker = next(w for w in workers if title(w) == "keeplb: lb worker 1")
    os.kill(checker, signal.SIGKILL)
    wait_for(lambda: len(children_of(p.pid)) == 2 and checker not in children_of(p.pid),
             what="worker 1 restarted")
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
