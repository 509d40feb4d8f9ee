"""`keeplb run`: one supervisor, a load-balancer child and a VRRP child.

The two children are separate processes so that a saturated relay never
delays an advertisement. The balancer writes one JSON line per health change
to a pipe; the supervisor forwards it to the VRRP child, and when the
balancer process is gone it tells VRRP at once (the pipe's EOF is the
signal: nothing polls). The VRRP child turns that into FAULT or a lower
priority (keepalived.conf `track_lb`).

Health line, balancer -> supervisor:  {"backends": {"kube-apiserver": [2, 0]}}
Health line, supervisor -> VRRP:      {"lb": true, "backends": {"kube-apiserver": true}}
("lb" is false when the balancer is gone or a backend has no server UP; a backend
is true when at least one of its servers, active or backup, is UP.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from keeplb.proc import notify
from keeplb.proc.pidfile import remove_pidfile, write_pidfile
from keeplb.proc.title import set_title

log = logging.getLogger("keeplb.run")

VRRP_STATUS_ENV = "KEEPLB_VRRP_STATUS_FILE"
STOP_TIMEOUT_S = 10.0


def lb_state_from_health(backends: dict[str, object]) -> dict[str, object]:
    """The VRRP side's view of one health report: can this host serve, per backend and overall."""
    per: dict[str, bool] = {}
    for name, counts in backends.items():
        if isinstance(counts, list | tuple) and len(counts) == 2:
            per[str(name)] = sum(int(c) for c in counts if isinstance(c, int)) > 0
        else:
            per[str(name)] = bool(counts)
    return {"lb": all(per.values()) if per else True, "backends": per}


SIGNAL_RETRY_S = 0.05
SIGNAL_RETRIES = 200  # 10 s: a child still without its handlers by then is stuck anyway


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` now (its SigCgt mask in
    /proc); True when that cannot be read, so the signal is sent as before."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True


RESPAWN_STABLE_S = 60.0  # a child that ran this long is restarted at once, as keepalived does
RESPAWN_MAX_DELAY_S = 60.0


@dataclass
class RespawnDelay:
    """keepalived's calc_restart_delay() for its VRRP and checker children: a
    child that ran for a minute is restarted at once and the delay starts
    over; otherwise each restart waits 0, 1, 2, 4 ... seconds, up to a minute.
    A balancer that can never start (a port in use, an address not there yet)
    is then retried about once a minute, not twice a second for ever."""

    stable_s: float = RESPAWN_STABLE_S
    max_delay_s: float = RESPAWN_MAX_DELAY_S
    next_s: float = 0.0

    def after_exit(self, ran_for: float) -> float:
        """Called once per exit with how long the child ran; the seconds to wait."""
        if ran_for >= self.stable_s:
            self.next_s = 0.0
            return 0.0
        delay = self.next_s
        self.next_s = min(delay * 2, self.max_delay_s) if delay else 1.0
        return delay


def exit_status_text(rc: int) -> str:
    """keepalived's report_child_status() words for a wait status (asyncio's
    returncode: negative for a signal)."""
    if rc < 0:
        try:
            name = signal.strsignal(-rc) or f"signal {-rc}"
        except ValueError:
            name = f"signal {-rc}"
        return f"exited due to signal {-rc} ({name})"
    return f"exited with status {rc}"


class Child:
    """One supervised child process and how to start it again."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.respawn = RespawnDelay()
        self.started_at = 0.0  # time.monotonic() of the last start
        # set by a reload: a child waiting out its respawn delay starts now, so
        # that `systemctl reload` after fixing the cause needs no full restart
        self.wake = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def deliver(self, sig: int, retries: int = SIGNAL_RETRIES) -> None:
        """Sends `sig` once the child handles it: a reload or dump signal that
        arrives while the child is still importing would otherwise take the
        default action and end it. Called on the supervisor's loop."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if retries > 0 and not catches(proc.pid, sig):
            asyncio.get_running_loop().call_later(
                SIGNAL_RETRY_S, self._deliver_to, proc, sig, retries - 1)
            return
        self.signal(sig)

    def _deliver_to(self, proc: asyncio.subprocess.Process, sig: int, retries: int) -> None:
        if proc is self.proc:  # a restarted child read the config afresh
            self.deliver(sig, retries)


class Supervisor:
    def __init__(self, haproxy_paths: Sequence[str], keepalived_path: str, *,
                 track_lb: bool = True, python: str = sys.executable) -> None:
        self.haproxy_paths = list(haproxy_paths)
        self.keepalived_path = keepalived_path
        self.track_lb = track_lb
        self.python = python
        self.stop = asyncio.Event()
        # None until the balancer first reports: VRRP starts in BACKUP as usual and
        # hears "cannot serve" only from a balancer that failed or reported so.
        self.lb_state: dict[str, object] | None = None
        self._vrrp_writer: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.vrrp: Child | None = None  # set when each child's loop starts
        self.lb: Child | None = None
        self._ready_sent = False

    # --- the VRRP side ------------------------------------------------------

    def _send_vrrp(self) -> None:
        if self._vrrp_writer is None or not self.track_lb or self.lb_state is None:
            return
        line = (json.dumps(self.lb_state) + "\n").encode()
        try:
            os.write(self._vrrp_writer, line)
        except (BrokenPipeError, BlockingIOError, OSError):
            # The VRRP child is being restarted; it gets the state again when it is back.
            pass

    async def _run_vrrp(self) -> None:
        child = Child("VRRP", [])
        self.vrrp = child  # a reload finds it even before a first start succeeded
        while not self.stop.is_set():
            rfd, wfd = os.pipe()
            os.set_blocking(wfd, False)
            argv = [self.python, "-m", "keeplb", "vrrp", "-n", "-l", "-f", self.keepalived_path]
            if self.track_lb:
                argv += ["--lb-health-fd", str(rfd)]
            child.argv = argv
            child.started_at = time.monotonic()
            try:
                child.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(rfd,))
            except OSError as exc:
                os.close(wfd)
                log.warning("Unable to start %s process: %s", child.name, exc.strerror or exc)
                if self.stop.is_set():
                    return
                await self._respawn(child, None, 127)  # 127: a shell's "cannot run"
                continue
            finally:
                os.close(rfd)
            self._vrrp_writer = wfd
            self._send_vrrp()
            rc = await child.proc.wait()
            self._vrrp_writer = None
            os.close(wfd)
            if self.stop.is_set():
                return
            await self._respawn(child, child.proc.pid, rc)

    # --- the balancer side --------------------------------------------------

    async def _run_lb(self) -> None:
        child = Child("load balancer", [])
        self.lb = child
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            rfd, wfd = os.pipe()
            # -W: the balancer reloads on SIGUSR2 without refusing a connection, and a
            # worker that dies is restarted by its master without VRRP noticing.
            argv = [self.python, "-m", "keeplb", "lb", "-W", "-db", "--health-fd", str(wfd)]
            for p in self.haproxy_paths:
                argv += ["-f", p]
            child.argv = argv
            env = dict(os.environ)
            # The balancer's /metrics adds keeplb_vrrp_* from the VRRP child's status file.
            env.setdefault(VRRP_STATUS_ENV, os.path.join(
                os.environ.get("KEEPLB_VRRP_STATE_DIR") or "/tmp", "keeplb-vrrp.json"))
            child.started_at = time.monotonic()
            try:
                child.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(wfd,), env=env)
            except OSError as exc:
                os.close(rfd)
                log.warning("Unable to start %s process: %s", child.name, exc.strerror or exc)
                self.lb_state = {"lb": False, "backends": {}}
                self._send_vrrp()
                if self.stop.is_set():
                    return
                await self._respawn(child, None, 127)
                continue
            finally:
                os.close(wfd)
            reader = asyncio.StreamReader()

            def protocol(r: asyncio.StreamReader = reader) -> asyncio.StreamReaderProtocol:
                return asyncio.StreamReaderProtocol(r)

            transport, _ = await loop.connect_read_pipe(protocol, os.fdopen(rfd, "rb", 0))
            try:
                while True:
                    line = await reader.readline()
                    if not line:
                        break
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        log.warning("ignoring a malformed health line from the balancer")
                        continue
                    if isinstance(msg, dict) and isinstance(msg.get("backends"), dict):
                        self.lb_state = lb_state_from_health(msg["backends"])
                        self._send_vrrp()
                        if not self._ready_sent:
                            # The balancer has bound its listeners and reported health.
                            notify.ready("load balancer and VRRP running")
                            self._ready_sent = True
            finally:
                transport.close()
            # EOF: the balancer is gone (or going); VRRP hears it now, not at the next poll.
            self.lb_state = {"lb": False, "backends": {}}
            self._send_vrrp()
            rc = await child.proc.wait()
            if self.stop.is_set():
                return
            await self._respawn(child, child.proc.pid, rc)

    async def _respawn(self, child: Child, pid: int | None, rc: int) -> None:
        """After `child` exited with `rc` (the supervisor not stopping): logs it
        as keepalived's parent does and waits out the respawn delay, cut short
        by a stop or a reload."""
        child.restarts += 1
        delay = child.respawn.after_exit(time.monotonic() - child.started_at)
        what = f"{child.name} child process({pid})" if pid else f"{child.name} child process"
        log.warning("%s %s", what, exit_status_text(rc))
        # One line with the exit and the delay for `systemctl status`; the
        # balancer's health was sent to VRRP as "lb": false at its pipe's EOF
        # and stays so until a new balancer reports.
        notify.sd_notify(f"STATUS={child.name} {exit_status_text(rc)}; "
                         f"restart in {delay:.0f} s")
        log.warning("Restart of %s process delayed %.0f seconds to limit respawn rate",
                    child.name, delay)
        child.wake.clear()
        if delay > 0 and await self._sleep_or_wake(delay, child.wake):
            log.warning("Restart of %s process brought forward by a reload", child.name)

    async def _sleep_or_wake(self, delay: float, wake: asyncio.Event) -> bool:
        """Sleeps `delay` seconds or until a stop or `wake`; True when woken by `wake`."""
        waiters = [asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return wake.is_set() and not self.stop.is_set()

    # --- lifecycle ----------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        # keepalived's parent passes its dump signals on to the VRRP child; the
        # default action would end the supervisor and orphan both children.
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            loop.add_signal_handler(sig, self._relay_to_vrrp, sig)
        self._tasks = [asyncio.create_task(self._run_vrrp()), asyncio.create_task(self._run_lb())]
        await self.stop.wait()
        notify.stopping()
        # VRRP first: the priority-0 advertisement lets the peer take the address
        # while this balancer still serves what is in flight.
        for child in (self.vrrp, self.lb):
            if child is not None:
                child.signal(signal.SIGTERM)
                if child.proc is not None:
                    try:
                        await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT_S)
                    except TimeoutError:
                        child.signal(signal.SIGKILL)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return 0

    def _relay_to_vrrp(self, sig: int) -> None:
        child = self.vrrp
        if child is not None:
            child.deliver(sig)

    def _reload(self) -> None:
        notify.reloading()
        for child in (self.vrrp, self.lb):
            if child is not None:
                child.wake.set()  # a child waiting to be restarted starts now
                child.deliver(signal.SIGHUP if child is self.vrrp else signal.SIGUSR2)


def main(haproxy_paths: Sequence[str], keepalived_path: str, *, daemon: bool = False,
         pidfile: str | None = None, track_lb: bool = True) -> int:
    """Entry point of `keeplb run`; configs were checked by the CLI already."""
    if daemon:
        from keeplb.proc.daemonize import daemonize

        daemonize(keep_cwd=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s keeplb-run: %(message)s")
    set_title("run")
    if pidfile:
        write_pidfile(pidfile)
    try:
        try:
            import uvloop

            return uvloop.run(Supervisor(haproxy_paths, keepalived_path, track_lb=track_lb).run())
        except ImportError:
            return asyncio.run(Supervisor(haproxy_paths, keepalived_path, track_lb=track_lb).run())
    finally:
        if pidfile:
            remove_pidfile(pidfile)
