"""Bad input, continued: leftovers of the traceback hunt in test_bad_input.py.

- `keeplb run` with a balancer that can never start: restarts back off as
  keepalived's parent backs off its children (0, 1, 2, 4 ... s, at most a
  minute), each one logged with the exit status and the delay, and VRRP hears
  "cannot serve" the whole time; a reload restarts a waiting balancer at once.
- the hidden `lb --health-fd` with a descriptor that is closed or read-only;
- `vrrp status --status-file` on a file that is not the daemon's JSON;
- `global ""`: haproxy -c accepts it, `global x` it refuses (oracle).
Loopback and files under tmp_path only; the children of the supervisor are
stand-ins (a small script in place of the Python interpreter), so nothing
touches a network.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeplb.lab.poll import wait_for
from keeplb.proc.supervisor import RespawnDelay, exit_status_text
from tests.integration.lbhelpers import free_port
from tests.integration.test_bad_input import CRASH, keeplb, no_crash, oracle

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------
# keeplb run: a balancer that can never start
# --------------------------------------------------------------------------


def test_respawn_delay_is_keepalived_calc_restart_delay() -> None:
    # keepalived's calc_restart_delay(): 0, 1, 2, 4 ... doubling, at most 60 s;
    # a child that ran for a minute is restarted at once and the series starts over.
    r = RespawnDelay()
    assert [r.after_exit(0.5) for _ in range(10)] == [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert r.after_exit(59.0) == 60
    assert r.after_exit(60.0) == 0
    assert [r.after_exit(3.0) for _ in range(3)] == [0, 1, 2]


def test_exit_status_text_uses_keepaliveds_words() -> None:
    assert exit_status_text(3) == "exited with status 3"
    assert exit_status_text(-signal.SIGKILL) == "exited due to signal 9 (Killed)"


# Stands in for the Python interpreter the supervisor starts its children
# with: the balancer records its start and exits 3 (what `keeplb lb -W` exits
# with when its first workers cannot start) without a health line; the VRRP
# child records every health line the supervisor sends it.
FAKE_CHILD = r"""
import json, os, sys, time
args = sys.argv[1:]  # -m keeplb lb|vrrp ...
role = args[2]
out = os.environ["FAKE_CHILD_LOG"]
def note(**kw):
    with open(out, "a") as f:
        f.write(json.dumps({"role": role, "pid": os.getpid(), "t": time.monotonic(), **kw}) + "\n")
if role == "lb":
    note(event="start")
    sys.exit(3)
fd = int(args[args.index("--lb-health-fd") + 1])
note(event="start")
with os.fdopen(fd, "rb") as r:
    for line in r:
        note(event="health", health=json.loads(line))
time.sleep(60)
"""

SUPERVISOR = r"""
import asyncio, logging, sys
from keeplb.proc.supervisor import Supervisor
logging.basicConfig(level=logging.INFO, format="%(message)s")
sys.exit(asyncio.run(Supervisor([sys.argv[2]], sys.argv[3], python=sys.argv[1]).run()))
"""


class Run:
    """The supervisor of `keeplb run` with stand-in children, its log in a file."""

    def __init__(self, tmp: Path, notify_path: Path) -> None:
        script = tmp / "fake_child.py"
        script.write_text(FAKE_CHILD)
        self.python = tmp / "python"
        self.python.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
        self.python.chmod(0o755)
        self.events = tmp / "children.jsonl"
        self.log_path = tmp / "run.log"
        env = dict(os.environ, PYTHONPATH=str(REPO), FAKE_CHILD_LOG=str(self.events),
                   NOTIFY_SOCKET=str(notify_path), KEEPLB_VRRP_STATE_DIR=str(tmp))
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR, str(self.python), str(tmp / "haproxy.cfg"),
                 str(tmp / "keepalived.conf")],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        finally:
            out.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict[str, object]]:
        try:
            text = self.events.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def lb_starts(self) -> list[float]:
        return [float(str(r["t"])) for r in self.records()
                if r["role"] == "lb" and r["event"] == "start"]

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        for r in self.records():
            try:
                os.kill(int(str(r["pid"])), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def notify_sock(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.setblocking(False)
    yield s, path
    s.close()


def received(s: socket.socket) -> list[str]:
    got: list[str] = []
    for _ in range(1000):
        try:
            got.append(s.recv(65536).decode())
        except BlockingIOError:
            break
    return got


@pytest.mark.slow
def test_run_backs_off_a_balancer_that_cannot_start(
        tmp_path: Path, notify_sock: tuple[socket.socket, Path]) -> None:
    sock, path = notify_sock
    run = Run(tmp_path, path)
    try:
        # starts at about 0, 0, 1, 3 s; then a delay of 4 s is announced
        assert wait_for(lambda: "delayed 4 seconds" in run.log(), 20.0), run.log()
        # A reload (what `systemctl reload` sends once the cause is fixed)
        # restarts the waiting balancer now, not 4 s later.
        hup = time.monotonic()
        run.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(run.lb_starts()) >= 5, 10.0), run.log()
        starts = run.lb_starts()
        assert run.proc.poll() is None, run.log()
        text = run.log()
    finally:
        rc = run.close()
    assert rc == 0, text
    assert not CRASH.search(text), text
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # each gap is the delay plus the stand-in's start-up (a few tens of ms)
    assert gaps[0] < 0.9, gaps
    assert 1.0 <= gaps[1] < 1.9, gaps
    assert 2.0 <= gaps[2] < 2.9, gaps
    assert starts[4] - hup < 1.5, (starts, hup)  # not the 4 s announced
    # every exit logged with the child's pid and status, then the delay
    lb_pids = [r["pid"] for r in run.records() if r["role"] == "lb"]
    for pid in lb_pids[:4]:
        assert f"load balancer child process({pid}) exited with status 3" in text, text
    delays = re.findall(r"Restart of load balancer process delayed (\d+) seconds "
                        r"to limit respawn rate", text)
    assert delays[:4] == ["0", "1", "2", "4"], text
    assert "Restart of load balancer process brought forward by a reload" in text, text
    # VRRP heard "cannot serve" after the first failure and nothing else.
    heard = [r["health"] for r in run.records() if r["event"] == "health"]
    assert heard and all(h == {"lb": False, "backends": {}} for h in heard), heard
    assert [r for r in run.records() if r["role"] == "vrrp" and r["event"] == "start"][1:] == []
    # systemd sees why in `systemctl status`, and never READY=1
    notes = received(sock)
    assert any("STATUS=load balancer exited with status 3; restart in 4 s" in n for n in notes), notes
    assert not any("READY=1" in n for n in notes), notes


# --------------------------------------------------------------------------
# lb --health-fd
# --------------------------------------------------------------------------


def listening_cfg(tmp: Path) -> Path:
    path = tmp / "lb.cfg"
    path.write_text("global\ndefaults\n    mode tcp\n    timeout connect 2s\n"
                    "    timeout client 10s\n    timeout server 10s\n"
                    f"frontend fe\n    bind 127.0.0.1:{free_port()}\n    default_backend be\n"
                    "backend be\n    server s1 127.0.0.1:9\n")
    return path


@pytest.mark.parametrize(("fd", "expected"), [
    ("57", "--health-fd option: cannot use file descriptor 57 (Bad file descriptor)"),
    ("-3", "--health-fd option: cannot use file descriptor -3 (Bad file descriptor)"),
    ("99999999999999999999", "--health-fd option: cannot use file descriptor "
                             "99999999999999999999 (Bad file descriptor)"),
])
def test_health_fd_that_is_not_open_is_a_clear_error(tmp_path: Path, fd: str,
                                                     expected: str) -> None:
    # subprocess closes every descriptor above 2 in the child: 57 is not open there
    out = keeplb("lb", "-f", str(listening_cfg(tmp_path)), "--health-fd", fd, timeout=15.0)
    no_crash(out)
    assert out.returncode == 1, out  # as for a bad -sf PID
    assert out.stderr.strip().splitlines() == [f"keeplb lb: error: {expected}"], out.stderr


def test_health_fd_open_for_reading_only_is_refused(tmp_path: Path) -> None:
    cfg = listening_cfg(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(cfg, "rb") as f:
        fd = f.fileno()
        out = subprocess.run([sys.executable, "-m", "keeplb", "lb", "-f", str(cfg),
                              "--health-fd", str(fd)], capture_output=True, text=True,
                             timeout=15.0, env=env, pass_fds=(fd,), start_new_session=True)
    no_crash(out)
    assert out.returncode == 1, out
    assert out.stderr.strip().splitlines() == [
        f"keeplb lb: error: --health-fd option: file descriptor {fd} is not open for writing"]


# --------------------------------------------------------------------------
# vrrp status --status-file
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "why"), [
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"not json\n", "not JSON: Expecting value at line 1 column 1"),
    (b'{"instances": [1, 2', "not JSON: Expecting ',' delimiter at line 1 column 20"),
    (b"[1, 2]\n", "no list of instances in it"),
    (b'{"instances": {"VI_1": {}}}\n', "no list of instances in it"),
    (b'{"instances": ["VI_1"]}\n', "no list of instances in it"),
    (b"[" * 100000, "not JSON"),
], ids=["binary", "text", "truncated", "list", "dict of instances", "names only", "deep"])
def test_status_file_that_is_not_the_daemons_is_named_in_one_line(
        tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    out = keeplb("vrrp", "status", "--status-file", str(path))
    text = no_crash(out)
    assert out.returncode == 1, text
    assert out.stderr.splitlines() == [
        f"{path}: cannot read status: not a keeplb status file ({why})"], out.stderr
    assert "codec" not in text


def test_status_file_with_odd_values_still_shows_the_table(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"instances": [
        {"name": "VI_1", "state": "MASTER", "base_priority": 100, "effective_priority": 100,
         "counters": ["x"], "drops": {"TTL": "many", "AUTH": 2}},
        {"name": "VI_2", "state": "BACKUP", "counters": {"adverts_sent": 5,
                                                         "adverts_received": True}},
    ]}))
    out = keeplb("vrrp", "status", "--status-file", str(path))
    no_crash(out)
    assert out.returncode == 0, out
    rows = [line.split() for line in out.stdout.splitlines()]
    assert rows[1] == ["VI_1", "MASTER", "100", "100", "-", "0", "0", "2"], out.stdout
    assert rows[2] == ["VI_2", "BACKUP", "None", "None", "-", "5", "0", "0"], out.stdout


@pytest.mark.parametrize(("target", "expected"), [
    ("missing", ["{p}: cannot read status: No such file or directory",
                 "(send SIGUSR1 to the daemon to write it)"]),
    ("dir", ["{p}: cannot read status: Is a directory"]),
])
def test_status_file_that_cannot_be_read_says_why(tmp_path: Path, target: str,
                                                   expected: list[str]) -> None:
    path = tmp_path / target
    if target == "dir":
        path.mkdir()
    out = keeplb("vrrp", "status", "--status-file", str(path))
    no_crash(out)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [e.format(p=path) for e in expected]


# --------------------------------------------------------------------------
# global followed by words
# --------------------------------------------------------------------------


@pytest.mark.parametrize("header", ['global ""', "global '' extra words", 'global "" ""',
                                    "global foo", "global foo bar", 'global foo ""',
                                    "global \\", "global #comment"])
def test_global_header_arguments_as_haproxy(tmp_path: Path, header: str) -> None:
    # haproxy 2.6's alertif_too_many_args() checks the first extra word only
    # and takes an empty one for the end of the line.
    path = tmp_path / "g.cfg"
    path.write_text(f"{header}\n    maxconn 100\ndefaults\n    mode tcp\n")
    theirs = oracle(["haproxy", "-c", "-f", str(path)])
    ours = keeplb("lb", "-c", "-f", str(path))
    text = no_crash(ours)
    assert ours.returncode == theirs.returncode, (text, theirs.stderr)
    m = re.search(r"'global' cannot handle unexpected argument '([^']*)'", theirs.stderr)
    if m:
        assert f"g.cfg:1:8: error: 'global' cannot handle unexpected argument '{m[1]}'" in text
    else:
        assert "cannot handle" not in text, text
        assert "warning" not in text.lower(), text  # haproxy says nothing either
