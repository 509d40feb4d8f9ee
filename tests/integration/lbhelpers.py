"""Small loopback helpers shared by the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """A loopback server whose thread calls handle() for each connection it
    accepts, until close(). A subclass sets its own attributes before calling
    this __init__, which starts the thread."""

    def __init__(self, backlog: int = 128) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:  # a timeout included: look at `stopped` again
                continue
            self.handle(c)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopped = True
        self.thread.join(5)
        self.sock.close()


class Echo(ThreadedServer):
    """A backend that answers every connection with its name, on a thread."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(self.name)


def request(port: int, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.settimeout(timeout)
        data = b""
        while chunk := c.recv(4096):
            data += chunk
        return data


class UdpLog:
    """The syslog datagrams keeplb sends, read on a loopback UDP socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])

    def lines(self, until: float = 2.0, quiet: float = 0.4) -> list[str]:
        """Datagrams until `until` s have passed or none came for `quiet` s."""
        out: list[str] = []
        end = time.monotonic() + until
        last = time.monotonic()
        while time.monotonic() < end and time.monotonic() - last < quiet:
            try:
                out.append(self.sock.recv(65535).decode())
                last = time.monotonic()
            except TimeoutError:
                continue
        return out

    def close(self) -> None:
        self.sock.close()


def default_signals() -> None:
    """A Popen preexec_fn: the child starts with the signal dispositions a
    service manager gives, whatever the test runner inherited (a runner started
    with nohup or `&` ignores SIGHUP or SIGINT, and a child would inherit that)."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)


def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it is still there after 5 s; reaped either way."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


class Lb:
    """One `keeplb lb` process with its output in a file; every pid it ever
    had as a child is remembered, so the teardown can kill leftovers too."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.log_path = tmp / "lb.log"
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "keeplb", "lb", *args],
                                         stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                         preexec_fn=default_signals)
        finally:
            out.close()
        self.seen: set[int] = set()

    def workers(self) -> list[int]:
        now = children_of(self.proc.pid)
        self.seen.update(now)
        return now

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        self.workers()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_all(self) -> None:
        for pid in [self.proc.pid, *self.seen]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Teardown: SIGTERM, then SIGKILL to whatever is left."""
        self.stop()
        self.kill_all()
