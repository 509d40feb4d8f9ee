"""Rule 3 of the house for `keeplb lb`: signals in bursts and at odd moments,
an unreadable or missing config on reload, and abusive runtime-API clients
never crash the process; it keeps serving, says what it refused, and SIGTERM
still stops it cleanly (exit 0, no worker left). Loopback only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keeplb.lab.poll import wait_for
from tests.integration.lbhelpers import Echo, Lb, default_signals, free_port, request

pytestmark = pytest.mark.slow

BURST = 20
BURST_SPAN_S = 0.2


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo(b"s1")
    yield e
    e.close()




def serving(port: int, expect: bytes) -> bool:
    try:
        return request(port, 1.0) == expect
    except OSError:
        return False


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie has exited; only its parent has not collected it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def burst(pid: int, sigs: list[signal.Signals], count: int = BURST,
          span: float = BURST_SPAN_S) -> None:
    for i in range(count):
        os.kill(pid, sigs[i % len(sigs)])
        time.sleep(span / count)


@pytest.fixture
def start_lb(tmp_path: Path) -> Iterator[Callable[[list[str]], Lb]]:
    started: list[Lb] = []

    def start(args: list[str]) -> Lb:
        lb = Lb(tmp_path, args)
        started.append(lb)
        return lb

    yield start
    for lb in started:
        if lb.proc.poll() is None:
            lb.stop(5.0)
        lb.kill_all()


def write_config(path: Path, port: int, backend: int, *, extra_global: str = "",
                 stats: Path | None = None) -> Path:
    stats_line = f"    stats socket {stats} level admin\n" if stats else ""
    path.write_text(
        f"global\n{stats_line}{extra_global}"
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    server s1 127.0.0.1:{backend}\n"
    )
    return path


def stats_command(path: Path, command: bytes, timeout: float = 3.0) -> bytes:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(timeout)
        c.connect(str(path))
        c.sendall(command)
        data = b""
        try:
            while chunk := c.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def abuse_stats_socket(path: Path) -> None:
    """A 1 MB line, binary garbage, and clients that leave mid-command or hold
    a connection open: none of them may stop the socket serving the next one."""
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(str(path))
    try:
        for payload in (b"A" * (1 << 20) + b"\n", bytes(range(256)) * 16 + b"\n",
                        b"\xff\xfe\x00show info\x00\n", b"show se"):
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(3.0)
                c.connect(str(path))
                try:
                    c.sendall(payload)
                    if payload.endswith(b"\n"):
                        c.recv(65536)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass  # refusing or cutting off the abuser is fine; the socket must stay
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(path))  # and straight away gone
        answer = stats_command(path, b"show servers state be\n")
        assert b" s1 " in answer, answer[:300]
    finally:
        idle.close()


def test_single_process_survives_signal_bursts_and_abusive_clients(
        tmp_path: Path, echo: Echo, start_lb: Callable[[list[str]], Lb]) -> None:
    port = free_port()
    stats = tmp_path / "stats.sock"
    cfg = write_config(tmp_path / "lb.cfg", port, echo.port, stats=stats)
    lb = start_lb(["-f", str(cfg)])
    assert wait_for(lambda: serving(port, b"s1") and stats.exists(), 15.0), lb.log()

    # SIGHUP dumps the server states (haproxy's sig_dump_state); SIGUSR2 has
    # nothing to reload without -W. Neither may end the process.
    burst(lb.proc.pid, [signal.SIGHUP, signal.SIGUSR2])
    assert wait_for(lambda: "SIGHUP: Server be/s1 is UP" in lb.log(), 5.0), lb.log()
    assert lb.alive(), lb.log()
    assert serving(port, b"s1"), lb.log()
    assert "SIGUSR2 ignored" in lb.log()

    abuse_stats_socket(stats)
    assert lb.alive(), lb.log()
    assert serving(port, b"s1"), lb.log()

    assert lb.stop() == 0, lb.log()
    assert "Traceback" not in lb.log(), lb.log()
    assert "Task was destroyed" not in lb.log(), lb.log()


def test_master_nbthread_survives_signal_storms_and_a_vanished_config(
        tmp_path: Path, echo: Echo, start_lb: Callable[[list[str]], Lb]) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "lb.cfg", port, echo.port, extra_global="    nbthread 2\n")
    lb = start_lb(["-W", "-f", str(cfg)])

    # SIGHUP while the first workers start: their handlers are in place once a
    # worker exists, and none of them has said READY yet (python starts slowly).
    assert wait_for(lambda: bool(lb.workers()), 10.0, 0.005), lb.log()
    os.kill(lb.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: serving(port, b"s1"), 20.0), lb.log()

    # A storm of reload requests, most of them while a reload is in progress:
    # they coalesce; the generations settle to nbthread workers again, well
    # before the master's READY timeout (15 s), which a lost READY would cost.
    burst(lb.proc.pid, [signal.SIGUSR2])
    assert lb.alive(), lb.log()
    assert wait_for(lambda: len(lb.workers()) == 2 and "Reload done" in lb.log(), 10.0, 0.1), \
        (lb.workers(), lb.log())
    assert serving(port, b"s1"), lb.log()

    # An operator's `kill -HUP/-USR2` on every keeplb pid reaches the workers too.
    workers = lb.workers()
    for pid in workers:
        burst(pid, [signal.SIGHUP, signal.SIGUSR2], count=4, span=0.04)
    assert wait_for(lambda: lb.log().count("SIGUSR2 ignored by a worker") >= 2, 5.0), lb.log()
    assert lb.workers() == workers, lb.log()
    refused = lb.log().count("Reload failed")

    # The config replaced by a directory, then deleted: each reload is refused
    # with the reason, the running workers go on.
    backup = tmp_path / "lb.cfg.bak"
    shutil.move(cfg, backup)
    cfg.mkdir()
    os.kill(lb.proc.pid, signal.SIGUSR2)
    assert wait_for(lambda: lb.log().count("Reload failed") > refused, 10.0), lb.log()
    assert lb.alive() and serving(port, b"s1"), lb.log()
    cfg.rmdir()
    os.kill(lb.proc.pid, signal.SIGHUP)
    assert wait_for(lambda: lb.log().count("Reload failed") > refused + 1, 10.0), lb.log()
    assert lb.alive() and serving(port, b"s1"), lb.log()
    assert str(cfg) in lb.log()  # the refusal names the file

    shutil.move(backup, cfg)
    before = set(lb.workers())
    assert lb.stop() == 0, lb.log()
    assert wait_for(lambda: all(gone(p) for p in lb.seen | before), 5.0), \
        [p for p in lb.seen if not gone(p)]
    assert "Traceback" not in lb.log(), lb.log()
    assert "Task was destroyed" not in lb.log(), lb.log()


def test_catches_reads_the_handler_mask() -> None:
    from keeplb.proc.supervisor import catches

    child = subprocess.Popen([sys.executable, "-c",
                              "import signal, sys, time\n"
                              "signal.signal(signal.SIGUSR2, lambda *a: None)\n"
                              "sys.stdout.write('ok\\n'); sys.stdout.flush(); time.sleep(30)"],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             preexec_fn=default_signals)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ok\n"
        assert catches(child.pid, signal.SIGUSR2)
        assert catches(child.pid, signal.SIGINT)  # Python's KeyboardInterrupt
        assert not catches(child.pid, signal.SIGHUP)
        assert catches(2**22 + 12345, signal.SIGHUP)  # unreadable: send as before
    finally:
        child.kill()
        child.communicate()
