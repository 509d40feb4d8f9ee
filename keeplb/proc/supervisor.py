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
from collections.abc import Sequence

from keeplb.proc import notify
from keeplb.proc.pidfile import remove_pidfile, write_pidfile
from keeplb.proc.title import set_title

log = logging.getLogger("keeplb.run")

RESTART_DELAY_S = 1.0
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


class Child:
    """One supervised child process and how to start it again."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0

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
        self.vrrp: Child | None = None  # set once each child has been started
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
        child = Child("vrrp", [])
        while not self.stop.is_set():
            rfd, wfd = os.pipe()
            os.set_blocking(wfd, False)
            argv = [self.python, "-m", "keeplb", "vrrp", "-n", "-l", "-f", self.keepalived_path]
            if self.track_lb:
                argv += ["--lb-health-fd", str(rfd)]
            child.argv = argv
            child.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(rfd,))
            os.close(rfd)
            self._vrrp_writer = wfd
            self.vrrp = child
            self._send_vrrp()
            rc = await child.proc.wait()
            self._vrrp_writer = None
            os.close(wfd)
            if self.stop.is_set():
                return
            child.restarts += 1
            log.warning("VRRP child exited with status %s, restarting", rc)
            await self._sleep_or_stop(RESTART_DELAY_S)

    # --- the balancer side --------------------------------------------------

    async def _run_lb(self) -> None:
        child = Child("lb", [])
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
            child.proc = await asyncio.create_subprocess_exec(*argv, pass_fds=(wfd,), env=env)
            os.close(wfd)
            self.lb = child
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
            child.restarts += 1
            log.warning("load balancer child exited with status %s, restarting", rc)
            await self._sleep_or_stop(RESTART_DELAY_S)

    async def _sleep_or_stop(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)

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
                child.deliver(signal.SIGHUP if child.name == "vrrp" else signal.SIGUSR2)


def main(haproxy_paths: Sequence[str], keepalived_path: str, *, daemon: bool = False,
         pidfile: str | None = None, track_lb: bool = True) -> int:
    """Entry point of `keeplb run`; configs were checked by the CLI already."""
    if daemon:
        from keeplb.proc.daemonize import daemonize

        daemonize()
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
