"""keeplb lb -W: the master keeps serving through worker deaths and reloads (loopback only)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lbhelpers import Echo, children_of, free_port, request

pytestmark = pytest.mark.slow


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo(b"s1")
    yield e
    e.close()


def wait_serving(port: int, expect: bytes, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if request(port, 1.0) == expect:
                return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"port {port} not serving {expect!r}: {last}")


def config(tmp: Path, port: int, backend: int, extra_global: str = "", server_name: str = "s1",
           stats: Path | None = None) -> Path:
    path = tmp / "lb.cfg"
    stats_line = f"    stats socket {stats} level admin\n" if stats else ""
    path.write_text(
        "global\n"
        f"{stats_line}{extra_global}"
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    server {server_name} 127.0.0.1:{backend}\n"
    )
    return path


@pytest.fixture
def master(tmp_path: Path) -> Iterator[dict[str, object]]:
    procs: list[subprocess.Popen[bytes]] = []
    holder: dict[str, object] = {"procs": procs, "log": tmp_path / "master.log"}
    log = open(tmp_path / "master.log", "ab")

    def start(cfg: Path) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-m", "keeplb", "lb", "-W", "-f", str(cfg)],
                             stdout=log, stderr=log)
        procs.append(p)
        return p

    holder["start"] = start
    yield holder
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    log.close()


def test_killed_worker_is_restarted_and_service_resumes(tmp_path, echo, master):
    port = free_port()
    p = master["start"](config(tmp_path, port, echo.port))
    wait_serving(port, b"s1")
    workers = children_of(p.pid)
    assert workers, "the master has no worker"
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = children_of(p.pid)
        if now and workers[0] not in now:
            break
        time.sleep(0.1)
    assert children_of(p.pid) and workers[0] not in children_of(p.pid)
    wait_serving(port, b"s1")
    assert "exited with code" in Path(master["log"]).read_text()


def test_broken_config_on_reload_is_refused_and_old_config_serves(tmp_path, echo, master):
    port = free_port()
    cfg = config(tmp_path, port, echo.port)
    p = master["start"](cfg)
    wait_serving(port, b"s1")
    cfg.write_text(cfg.read_text() + "    balance robin\n")
    p.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "Reload failed" not in Path(master["log"]).read_text():
        time.sleep(0.1)
    text = Path(master["log"]).read_text()
    assert "Reload failed" in text
    assert "robin" in text  # says why
    assert p.poll() is None
    wait_serving(port, b"s1")


def test_reload_switches_to_the_new_config_without_refusing(tmp_path, master):
    a, b = Echo(b"A"), Echo(b"B")
    try:
        port = free_port()
        cfg = config(tmp_path, port, a.port)
        p = master["start"](cfg)
        wait_serving(port, b"A")
        config(tmp_path, port, b.port)
        p.send_signal(signal.SIGUSR2)
        seen = set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and b"B" not in seen:
            seen.add(request(port))  # never refused: an exception fails the test
        assert b"B" in seen
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_worker_drops_privileges(tmp_path, echo, master):
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    port = free_port()
    p = master["start"](config(tmp_path, port, echo.port, extra_global="    user nobody\n    group nogroup\n"))
    wait_serving(port, b"s1")
    worker = children_of(p.pid)[0]
    status = Path(f"/proc/{worker}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(pw.pw_uid)] * 4
    master_status = Path(f"/proc/{p.pid}/status").read_text()
    assert next(line for line in master_status.splitlines() if line.startswith("Uid:")).split()[1] == "0"


def stats_command(path: Path, command: str, timeout: float = 3.0) -> str:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(timeout)
        c.connect(str(path))
        c.sendall(command.encode() + b"\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data.decode()


def test_server_state_set_at_runtime_survives_a_reload(tmp_path, master):
    a, b = Echo(b"A"), Echo(b"B")
    try:
        port = free_port()
        stats = tmp_path / "stats.sock"
        cfg = tmp_path / "lb.cfg"
        cfg.write_text(
            f"global\n    stats socket {stats} level admin\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n"
            "    timeout server 10s\n"
            f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
            f"backend be\n    server s1 127.0.0.1:{a.port}\n    server s2 127.0.0.1:{b.port}\n"
        )
        p = master["start"](cfg)
        deadline = time.monotonic() + 15
        while not stats.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert {request(port) for _ in range(4)} == {b"A", b"B"}
        assert stats_command(stats, "set server be/s1 state maint").strip() == ""
        assert {request(port) for _ in range(4)} == {b"B"}
        old = children_of(p.pid)
        p.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and set(children_of(p.pid)) & set(old):
            time.sleep(0.1)
        assert not set(children_of(p.pid)) & set(old), "old worker did not leave"
        state = stats_command(stats, "show servers state be")
        s1 = next(line.split() for line in state.splitlines() if " s1 " in f" {line} ")
        assert s1[6] == "1"  # SRV_ADMF_FMAINT, still in maintenance
        assert {request(port) for _ in range(6)} == {b"B"}
        # the master's own state file (no server-state-file) lives as long as it
        private = Path(f"/tmp/keeplb-servers-state-{p.pid}")
        assert private.exists()
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        assert not private.exists()
    finally:
        a.close()
        b.close()
