"""Bad input never shows a Python traceback and never loses state.

The command line with odd files and odd options (haproxy -c and keepalived -t
run on the same files as oracles), a reload whose workers cannot start, signals
at odd moments, and the runtime API under garbage: after each, the daemon still
answers `show info` and still relays. Loopback and files under tmp_path only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keeplb.lab.poll import wait_for
from tests.integration.lbhelpers import Echo, Lb, free_port, request

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLI_TIMEOUT_S = 20.0
CRASH = re.compile(r"Traceback|internal error|Internal error")


def keeplb(*args: str, cwd: Path | None = None,
           timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    # its own session: a keeplb that signals its process group (kill(0) for
    # `-sf 0`, as it once did) must not hit the test runner
    return subprocess.run([sys.executable, "-m", "keeplb", *args], capture_output=True,
                          text=True, errors="replace", timeout=timeout, cwd=cwd, env=env,
                          start_new_session=True)


def oracle(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                          timeout=CLI_TIMEOUT_S)


def no_crash(out: subprocess.CompletedProcess[str]) -> str:
    text = out.stdout + out.stderr
    assert not CRASH.search(text), text[-2000:]
    return text


# --------------------------------------------------------------------------
# odd files for `lb -c`, `vrrp -t` and `check`
# --------------------------------------------------------------------------


def bad_files(tmp: Path) -> dict[str, Path]:
    """Every kind of file a user may pass by mistake, by name."""
    files: dict[str, Path] = {}
    (tmp / "dir").mkdir()
    shutil.copy(EXAMPLES / "haproxy.cfg", tmp / "dir" / "a.cfg")
    files["directory"] = tmp / "dir"
    (tmp / "emptydir").mkdir()
    files["empty directory"] = tmp / "emptydir"
    files["missing"] = tmp / "missing.cfg"
    files["binary"] = tmp / "binary.cfg"
    files["binary"].write_bytes(bytes(range(256)) * 64)
    files["invalid utf-8"] = tmp / "latin.cfg"
    files["invalid utf-8"].write_bytes(b"global\n    maxconn \xff\xfe 10\n")
    files["1 MB line"] = tmp / "huge.cfg"
    files["1 MB line"].write_text("global\n    log " + "x" * (1 << 20) + "\n")
    files["NUL bytes"] = tmp / "nul.cfg"
    files["NUL bytes"].write_bytes(b"global\n    maxconn 1\x0020\ndefaults\n")
    files["CRLF haproxy"] = tmp / "crlf.cfg"
    files["CRLF haproxy"].write_bytes((EXAMPLES / "haproxy.cfg").read_bytes().replace(b"\n", b"\r\n"))
    files["CRLF keepalived"] = tmp / "crlf.conf"
    files["CRLF keepalived"].write_bytes(
        (EXAMPLES / "keepalived.conf").read_bytes().replace(b"\n", b"\r\n"))
    files["include loop"] = tmp / "loop.conf"
    (tmp / "loop2.conf").write_text(f"include {tmp / 'loop.conf'}\n")
    files["include loop"].write_text(f"include {tmp / 'loop2.conf'}\n")
    files["symlink loop"] = tmp / "self.cfg"
    os.symlink(tmp / "self.cfg", tmp / "self.cfg")
    files["/proc/self/mem"] = Path("/proc/self/mem")
    files["/dev/zero"] = Path("/dev/zero")
    files["/dev/null"] = Path("/dev/null")
    return files


KINDS = ["directory", "empty directory", "missing", "binary", "invalid utf-8", "1 MB line",
         "NUL bytes", "CRLF haproxy", "CRLF keepalived", "include loop", "symlink loop",
         "/proc/self/mem", "/dev/zero", "/dev/null"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", [["lb", "-c", "-f"], ["vrrp", "-t", "-f"], ["check"]],
                         ids=["lb -c", "vrrp -t", "check"])
def test_odd_files_get_a_verdict_not_a_traceback(tmp_path: Path, kind: str,
                                                 command: list[str]) -> None:
    path = bad_files(tmp_path)[kind]
    out = keeplb(*command, str(path))  # a file that never ends (/dev/zero) times out here
    no_crash(out)
    assert out.returncode in (0, 1, 2, 4, 5, 6), out
    if out.returncode:
        assert (out.stdout + out.stderr).strip(), "a refusal says why"


@pytest.mark.parametrize("kind", ["directory", "empty directory", "binary", "invalid utf-8",
                                  "1 MB line", "NUL bytes", "CRLF haproxy", "/dev/zero",
                                  "/dev/null"])
def test_lb_check_verdict_is_haproxys(tmp_path: Path, kind: str) -> None:
    path = bad_files(tmp_path)[kind]
    theirs = oracle(["haproxy", "-c", "-f", str(path)])
    ours = keeplb("lb", "-c", "-f", str(path))
    no_crash(ours)
    # 0 valid, 2 valid without a listener, anything else refused
    assert (ours.returncode == 0, ours.returncode == 2, ours.returncode in (0, 2)) == \
        (theirs.returncode == 0, theirs.returncode == 2, theirs.returncode in (0, 2)), \
        (ours.stderr[-500:], theirs.stderr[-500:])
    assert ours.returncode == 0 or ours.returncode == theirs.returncode


@pytest.mark.parametrize("body", [b"global\n    maxconn 1\x0020\ndefaults\n",
                                  b"global\n    maxconn 1\x0020\n",
                                  b"global\n    log 127.0.0.1 local0\n    \x00\nlisten x\n"])
def test_nul_byte_is_reported_where_haproxy_reports_it(tmp_path: Path, body: bytes) -> None:
    # haproxy reads lines with fgets()/strlen(): the line ends at the NUL and the
    # file stops there; keeplb used to read it as a blank and go on.
    path = tmp_path / "nul.cfg"
    path.write_bytes(body)
    theirs = oracle(["haproxy", "-c", "-f", str(path)])
    m = re.search(r"parsing \[[^:]+:(\d+)\]: (Stray NUL character|Missing LF on last line)"
                  r".* at position (\d+)", theirs.stdout + theirs.stderr)
    assert m, theirs.stderr
    ours = keeplb("lb", "-c", "-f", str(path))
    text = no_crash(ours)
    assert ours.returncode == 1
    assert f"nul.cfg:{m[1]}:{m[3]}: error: {m[2].replace('Missing', 'missing')}" in text, text


@pytest.mark.parametrize("odd", ["\u2028", "\x0c", "\x85", "\x1e"])
def test_odd_line_breaks_keep_haproxys_line_numbers(tmp_path: Path, odd: str) -> None:
    # Only "\n" ends a line for haproxy: str.splitlines() also cut at these,
    # so a comment's end became a statement and every later line was off by one.
    path = tmp_path / "odd.cfg"
    path.write_text(f"global\n    # note{odd}maxconn abc\n    bogus-keyword\n")
    theirs = oracle(["haproxy", "-c", "-f", str(path)])
    assert "odd.cfg:3] : unknown keyword 'bogus-keyword'" in theirs.stdout + theirs.stderr
    ours = keeplb("lb", "-c", "-f", str(path))
    text = no_crash(ours)
    assert "odd.cfg:3:5: error: unknown keyword 'bogus-keyword'" in text, text
    assert "maxconn" not in text, text  # a comment stays a comment


def test_lone_carriage_return_is_a_blank_as_in_haproxy(tmp_path: Path) -> None:
    # Python's universal newlines made every lone CR a line end.
    path = tmp_path / "cr.cfg"
    path.write_bytes(b"global\n    maxconn 10\r    nbthread 1\n    bogus-keyword\n")
    theirs = oracle(["haproxy", "-c", "-f", str(path)])
    assert "cr.cfg:3] : unknown keyword 'bogus-keyword'" in theirs.stdout + theirs.stderr
    ours = keeplb("lb", "-c", "-f", str(path))
    assert "cr.cfg:3:5: error: unknown keyword 'bogus-keyword'" in no_crash(ours)


@pytest.mark.parametrize("odd", ["\u2028", "\x0b", "\x85"])
def test_odd_line_breaks_keep_keepaliveds_line_numbers(tmp_path: Path, odd: str) -> None:
    path = tmp_path / "odd.conf"
    path.write_text(f"global_defs {{\n    # note{odd}router_id a b\n    bogus_kw\n}}\n")
    theirs = oracle(["keepalived", "-t", "-f", str(path)])
    assert "(Line 3) Unknown keyword 'bogus_kw'" in theirs.stdout + theirs.stderr
    ours = keeplb("vrrp", "-t", "-f", str(path))
    text = no_crash(ours)
    assert "odd.conf:3:5: error: unknown keyword 'bogus_kw'" in text, text
    assert "router_id" not in text, text


def test_dev_zero_ends_at_once_as_in_haproxy(tmp_path: Path) -> None:
    theirs = oracle(["haproxy", "-c", "-f", "/dev/zero"])
    assert "/dev/zero:1]: Stray NUL character at position 1" in theirs.stdout + theirs.stderr
    ours = keeplb("lb", "-c", "-f", "/dev/zero", timeout=10.0)
    assert "/dev/zero:1:1: error: Stray NUL character at position 1" in no_crash(ours)
    assert ours.returncode == 1


@pytest.mark.parametrize("command", [["check"], ["run", "-c", "-k", str(EXAMPLES / "keepalived.conf"),
                                                 "-f"]], ids=["check", "run -c"])
def test_empty_config_directory_is_refused_as_by_lb(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "conf.d").mkdir()
    assert keeplb("lb", "-c", "-f", str(tmp_path / "conf.d")).returncode == 1
    out = keeplb(*command, str(tmp_path / "conf.d"))
    text = no_crash(out)
    assert out.returncode == 1, text
    assert "no configuration file found in" in text


# --------------------------------------------------------------------------
# odd options
# --------------------------------------------------------------------------


def listening_config(tmp: Path, port: int, backend: int, extra_global: str = "") -> Path:
    path = tmp / "lb.cfg"
    path.write_text(
        f"global\n{extra_global}"
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n"
        f"backend be\n    server s1 127.0.0.1:{backend}\n")
    return path


@pytest.mark.parametrize(("pids", "expected"), [
    (["abc"], "-sf option: some bytes unconsumed in PID list {abc}"),
    (["1", "12abc"], "-sf option: some bytes unconsumed in PID list {abc}"),
    (["99999999999999999999"], "-sf option: failed to parse {99999999999999999999}: "
                               "Numerical result out of range"),
    # kill(0, ...) or kill(-N, ...) would signal a whole process group, ours included
    (["0"], "-sf option: PID 0 is not a process id"),
    (["-5"], "-sf option: PID -5 is not a process id"),
])
def test_bad_soft_stop_pids_are_refused_before_anything_starts(
        tmp_path: Path, pids: list[str], expected: str) -> None:
    cfg = listening_config(tmp_path, free_port(), free_port())
    theirs = oracle(["haproxy", "-c", "-f", str(cfg), "-sf", *pids])
    assert theirs.returncode == 1
    out = keeplb("lb", "-f", str(cfg), "-sf", *pids, timeout=10.0)
    text = no_crash(out)
    assert out.returncode == 1
    assert expected in text


@pytest.mark.parametrize("pidfile", ["/nonexistent-klb/dir/lb.pid", "/proc/version", "{tmp}"])
@pytest.mark.parametrize("command", [["lb", "-f", "{cfg}"], ["lb", "-W", "-f", "{cfg}"],
                                     ["vrrp", "-n", "-f", str(EXAMPLES / "keepalived.conf")],
                                     ["run", "-f", "{cfg}", "-k",
                                      str(EXAMPLES / "keepalived.conf")]],
                         ids=["lb", "lb -W", "vrrp", "run"])
def test_unwritable_pidfile_is_a_clear_error(tmp_path: Path, pidfile: str,
                                             command: list[str]) -> None:
    cfg = listening_config(tmp_path, free_port(), free_port())
    argv = [a.format(cfg=cfg, tmp=tmp_path) for a in command]
    out = keeplb(*argv, "-p", pidfile.format(tmp=tmp_path), timeout=15.0)
    text = no_crash(out)
    assert out.returncode == 1, text
    assert re.search(r"Cannot (create|open) (pidfile )?\S+ ", text), text


def test_relative_paths_survive_daemon_mode(tmp_path: Path) -> None:
    # haproxy -D stays in its directory; keeplb's daemon went to "/", where the
    # master of -W -D looked for its relative -f, its workers failed, the pidfile
    # went to /, and a relative ACL pattern file was not found by the workers.
    echo = Echo(b"s1")
    port = free_port()
    cfg = listening_config(tmp_path, port, echo.port)
    cfg.write_text(cfg.read_text().replace(
        "    default_backend be\n", "    acl ok src -f allow.lst\n"
        "    tcp-request connection reject if !ok\n    default_backend be\n"))
    (tmp_path / "allow.lst").write_text("127.0.0.1\n")
    name = f"klb-{os.getpid()}-lb.pid"  # unique, so a stray one in / is found and removed
    pidfile = tmp_path / name
    try:
        out = keeplb("lb", "-W", "-D", "-f", "lb.cfg", "-p", name, cwd=tmp_path)
        no_crash(out)
        assert out.returncode == 0, out
        assert wait_for(pidfile.exists, 10.0), "the pidfile is not where -p said"
        master = int(pidfile.read_text())
        assert wait_for(lambda: serving(port, b"s1"), 15.0)
        os.kill(master, signal.SIGUSR2)  # the reload reads lb.cfg again
        time.sleep(1.0)
        assert serving(port, b"s1")
        assert pid_running(master)
        os.kill(master, signal.SIGTERM)
        assert wait_for(lambda: not pid_running(master), 15.0)
        assert not pidfile.exists()
    finally:
        for where in (pidfile, Path("/") / name):
            try:
                pid = int(where.read_text())
            except (OSError, ValueError):
                continue
            if pid_running(pid):
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not pid_running(pid), 15.0)  # noqa: B023 - used at once
            where.unlink(missing_ok=True)
        echo.close()


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------
# a running balancer: reloads, signals, runtime API
# --------------------------------------------------------------------------


def serving(port: int, expect: bytes) -> bool:
    try:
        return request(port, 1.0) == expect
    except OSError:
        return False


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo(b"s1")
    yield e
    e.close()


@pytest.fixture
def start_lb(tmp_path: Path) -> Iterator[Callable[[list[str]], Lb]]:
    started: list[Lb] = []

    def start(args: list[str]) -> Lb:
        lb = Lb(tmp_path, args)
        started.append(lb)
        return lb

    yield start
    for lb in started:
        lb.close()


def test_reload_whose_workers_cannot_start_keeps_the_old_ones(
        tmp_path: Path, echo: Echo, start_lb: Callable[[list[str]], Lb]) -> None:
    # The new file parses (haproxy -c does not bind either) but its stats socket
    # cannot be created: the new worker exits. The master used to send the old
    # workers away once READY_TIMEOUT_S passed and restart the failing one for ever.
    port = free_port()
    cfg = listening_config(tmp_path, port, echo.port)
    lb = start_lb(["-W", "-f", str(cfg)])
    assert wait_for(lambda: serving(port, b"s1"), 15.0), lb.log()
    old = lb.workers()
    listening_config(tmp_path, port, echo.port,
                     extra_global=f"    stats socket {tmp_path}/missing/dir/s.sock\n")
    assert keeplb("lb", "-c", "-f", str(cfg)).returncode == 0
    lb.proc.send_signal(signal.SIGUSR2)
    assert wait_for(lambda: "Reload failed" in lb.log(), 20.0), lb.log()
    assert "cannot listen on stats socket" in lb.log()  # says why
    time.sleep(1.0)  # a restart loop would show by now
    assert lb.workers() == old, lb.log()
    assert serving(port, b"s1"), lb.log()
    # the old configuration is still the master's: a fixed file reloads normally
    listening_config(tmp_path, port, echo.port)
    lb.proc.send_signal(signal.SIGUSR2)
    assert wait_for(lambda: "Reload done" in lb.log(), 20.0), lb.log()
    assert wait_for(lambda: old[0] not in lb.workers(), 15.0), lb.log()
    assert serving(port, b"s1")
    assert lb.proc.poll() is None
    lb.proc.send_signal(signal.SIGTERM)
    assert lb.proc.wait(15) == 0
    assert not CRASH.search(lb.log()), lb.log()


def test_first_workers_that_cannot_start_end_the_master(tmp_path: Path) -> None:
    cfg = listening_config(tmp_path, free_port(), free_port(),
                           extra_global=f"    stats socket {tmp_path}/missing/dir/s.sock\n")
    out = keeplb("lb", "-W", "-f", str(cfg), timeout=30.0)  # used to restart them for ever
    text = no_crash(out)
    assert out.returncode == 3, text
    assert "cannot listen on stats socket" in text


def test_signals_right_after_start_twice_and_during_a_reload(
        tmp_path: Path, echo: Echo, start_lb: Callable[[list[str]], Lb]) -> None:
    port = free_port()
    cfg = listening_config(tmp_path, port, echo.port)
    lb = start_lb(["-W", "-f", str(cfg)])
    # As soon as keeplb runs (it ignores SIGHUP from its first line of main()),
    # before the master's handlers exist: a reload signal must not kill it. A
    # signal during the interpreter's own start-up is beyond keeplb's reach.
    assert wait_for(lambda: ignores(lb.proc.pid, signal.SIGHUP), 15.0), lb.log()
    for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGUSR2):
        lb.proc.send_signal(sig)
        time.sleep(0.02)
    assert wait_for(lambda: serving(port, b"s1"), 15.0), lb.log()
    assert lb.proc.poll() is None, lb.log()
    assert lb.workers()
    # a broken file: refused in haproxy's words, the old one serves
    cfg.write_text(cfg.read_text() + "    balance robin\n")
    lb.proc.send_signal(signal.SIGHUP)
    lb.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "Reload failed" in lb.log(), 20.0), lb.log()
    assert "robin" in lb.log()
    assert serving(port, b"s1")
    # SIGTERM while a reload is starting its workers
    listening_config(tmp_path, port, echo.port)
    lb.proc.send_signal(signal.SIGUSR2)
    time.sleep(0.1)
    lb.workers()
    lb.proc.send_signal(signal.SIGTERM)
    assert lb.proc.wait(20) == 0, lb.log()
    assert wait_for(lambda: not any(pid_running(p) for p in lb.seen), 10.0)
    assert not CRASH.search(lb.log()), lb.log()


def ignores(pid: int, sig: int) -> bool:
    """Whether `pid` ignores or catches `sig` now (SigIgn/SigCgt in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = re.findall(r"^Sig(?:Ign|Cgt):\s*([0-9a-f]+)$", status, re.M)
    return any(int(m, 16) >> (sig - 1) & 1 for m in masks)


def stats_command(path: Path, command: bytes, timeout: float = 5.0) -> bytes:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(timeout)
        c.connect(str(path))
        data = b""
        try:
            # a line over tune.bufsize may be cut off, as haproxy does
            c.sendall(command)
            while chunk := c.recv(65536):
                data += chunk
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
    return data


GARBAGE = ["", "-", "be", "be/", "/s1", "/", "be/s1", "be/nope", "#1/#1", "#0", "fe", "nope",
           "state", "ready", "drain", "maint", "weight", "10", "10%", "-5", "0", "257",
           "99999999999999999999", "addr", "127.0.0.1", "::1", "999.1.1.1", "port", "99999",
           "health", "up", "down", "agent", "check-port", "fqdn", "all", "global", "1s",
           "999999999999d", "desc", "json", "typed", "-1", "2", "é", "\\", "'", '"']
COMMANDS = ["set server be/s1", "set server", "set weight", "set weight be/s1",
            "set maxconn server", "set maxconn server be/s1", "set maxconn frontend",
            "set maxconn global", "show stat", "show info", "show servers state", "show sess",
            "get weight", "disable server", "enable server", "disable health", "enable health",
            "disable frontend", "enable frontend", "shutdown sessions server", "shutdown session",
            "clear counters", "set timeout cli", "help", "show", "set", "bogus command"]


def test_runtime_api_garbage_never_breaks_the_balancer(
        tmp_path: Path, echo: Echo, start_lb: Callable[[list[str]], Lb]) -> None:
    port = free_port()
    stats = tmp_path / "stats.sock"
    cfg = listening_config(tmp_path, port, echo.port,
                           extra_global=f"    stats socket {stats} level admin\n")
    lb = start_lb(["-f", str(cfg)])
    assert wait_for(lambda: serving(port, b"s1") and stats.exists(), 15.0), lb.log()

    def healthy(after: str) -> None:
        info = stats_command(stats, b"show info\n")
        assert b"Pid: " in info, (after, info[:300], lb.log()[-2000:])
        # what the garbage may have changed, set back; then the relay must work
        stats_command(stats, f"set server be/s1 state ready; set server be/s1 weight 1; "
                             f"set server be/s1 addr 127.0.0.1 port {echo.port}; "
                             "set server be/s1 health up; enable health be/s1; "
                             "enable frontend fe; set maxconn frontend fe 1000; "
                             "set maxconn global 1000\n".encode())
        assert serving(port, b"s1"), (after, lb.log()[-2000:])

    payloads: list[bytes] = [b"\n", b"\n\n\n", b"   \n", b";;;\n", b"A" * (1 << 20) + b"\n",
                             b"\xff\xfe\xfd show info\n", bytes(range(1, 256)) + b"\n",
                             b"show info;" * 500 + b"\n", b"\x00\n"]
    for i, command in enumerate(COMMANDS):
        for n in range(4):
            args = [GARBAGE[(5 * i + 7 * n + k) % len(GARBAGE)] for k in range(n)]
            payloads.append((" ".join([command, *args]) + "\n").encode())
        payloads.append((command + " " + " ".join(GARBAGE) + "\n").encode())
    for payload in payloads:
        answer = stats_command(stats, payload)
        assert b"Internal error" not in answer, (payload[:200], answer[:500])
        assert lb.proc.poll() is None, (payload[:200], lb.log()[-2000:])
    healthy("garbage commands")

    # clients that leave mid-answer: a large answer, never read
    for _ in range(20):
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(stats))
            c.sendall(b"show stat;" * 200 + b"\n")
    healthy("clients gone mid-answer")

    # 200 clients at once, every one answered
    answers: list[bytes] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            data = stats_command(stats, b"show info\n", timeout=20.0)
        except OSError as exc:
            data = repr(exc).encode()
        with lock:
            answers.append(data)

    threads = [threading.Thread(target=one) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    assert len(answers) == 200
    assert all(b"Pid: " in a for a in answers), [a[:100] for a in answers if b"Pid: " not in a][:3]
    healthy("200 clients")
    assert not CRASH.search(lb.log()), lb.log()[-3000:]
