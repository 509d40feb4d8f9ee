"""`keeplb lb -W`: haproxy's master-worker model.

The master binds the listeners once, starts the workers with the sockets as
inherited descriptors, restarts a worker that dies, and reloads on SIGUSR2
(or SIGHUP): the new config is parsed completely first; a bad one is refused
and logged, and the old workers go on serving. A good one starts a new
generation of workers on the same sockets; once they report ready, the old
ones get SIGUSR1 (soft stop: stop accepting, finish their sessions) and, after
`hard-stop-after`, SIGTERM.

Signals to the master: SIGUSR2/SIGHUP reload, SIGUSR1 soft stop, SIGTERM/SIGINT hard stop.

`nbthread N` starts N workers per generation; worker 1 runs the checks, the
stats socket and `--health-fd`, and the master relays its server changes to
the others (keeplb.proc.sync). Without -W, `nbthread N` > 1 takes this same
path (the master is the light parent): one code path, one set of tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from keeplb.config.diagnostics import Diagnostics
from keeplb.config.model import HaproxyConfig
from keeplb.lb import shared
from keeplb.proc import listeners, notify, serverstate, sync
from keeplb.proc.pidfile import remove_pidfile, write_pidfile
from keeplb.proc.title import set_title

log = logging.getLogger("keeplb.master")

READY_TIMEOUT_S = 15.0
RESTART_DELAY_S = 0.5
STARTUP_FAILURE = 3  # cli.STARTUP_FAILURE: the first workers could not start


@dataclass(eq=False)
class Worker:
    relative_id: int
    generation: int
    proc: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    leaving: bool = False
    link: asyncio.StreamWriter | None = None
    # A worker of a generation being started: if it dies before READY the
    # generation (and the reload) fails instead of the worker being restarted.
    starting: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def _parse(paths: Sequence[str]) -> tuple[HaproxyConfig, Diagnostics]:
    from keeplb.config import haproxy

    return haproxy.parse(list(paths))


def _open_listeners(cfg: HaproxyConfig, existing: dict[str, socket.socket] | None
                    ) -> dict[str, socket.socket]:
    from keeplb.lb import app

    return app.open_listeners(cfg, existing)


class Master:
    def __init__(self, paths: Sequence[str], cfg: HaproxyConfig, *,
                 extra_worker_args: Sequence[str] = (), python: str = sys.executable,
                 health_fd: int | None = None, soft_stop_pids: Sequence[int] = (),
                 hard_stop_pids: Sequence[int] = ()) -> None:
        self.paths = list(paths)
        self.cfg = cfg
        self.python = python
        self.extra_worker_args = list(extra_worker_args)
        self.sockets: dict[str, socket.socket] = {}
        self.workers: list[Worker] = []
        self.generation = 0
        self.stop = asyncio.Event()
        self.soft = False
        self.reload_requested = asyncio.Event()
        self.reloads_ok = 0
        self.state_file: str | None = None
        self.reloads_failed = 0
        self.health_fd = health_fd
        if health_fd is not None:
            # Inherited as inheritable: without this every worker (uvloop spawns
            # keep inheritable descriptors) would hold the pipe, not worker 1 only.
            os.set_inheritable(health_fd, False)
        self.last_generation = 0  # generation numbers are never reused, even a failed one's
        self.soft_stop_pids = list(soft_stop_pids)
        self.hard_stop_pids = list(hard_stop_pids)
        self.relays: dict[int, sync.Relay] = {}
        # nbthread: each generation's table of the servers' sessions and queues
        self.tables: dict[int, shared.SharedCounts] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def nbproc(self) -> int:
        return max(1, self.cfg.global_.nbthread or 1)

    async def _spawn(self, relative_id: int, *, starting: bool = False) -> Worker:
        rfd, wfd = os.pipe()
        env = dict(os.environ)
        env[listeners.ENV_FDS] = listeners.export_fds(self.sockets)
        if self.state_file:
            env[serverstate.ENV_STATE_FILE] = self.state_file
        argv = [self.python, "-m", "keeplb", "lb", "--worker", str(relative_id),
                "--ready-fd", str(wfd), *self.extra_worker_args]
        for p in self.paths:
            argv += ["-f", p]
        fds = [wfd, *(s.fileno() for s in self.sockets.values())]
        if relative_id == 1 and self.health_fd is not None:
            # `keeplb run` hears the health of the one worker that checks.
            argv += ["--health-fd", str(self.health_fd)]
            fds.append(self.health_fd)
        mine: socket.socket | None = None
        table = self.tables.get(self.generation)
        if table is not None:
            env[shared.ENV_SHARED_FD] = str(table.fd)
            fds.append(table.fd)
        if self.nbproc > 1:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            env[sync.ENV_SYNC_FD] = str(theirs.fileno())
            env[sync.ENV_SYNC_ROLE] = sync.ROLE_CHECKER if relative_id == 1 else sync.ROLE_FOLLOWER
            fds.append(theirs.fileno())
        try:
            proc = await asyncio.create_subprocess_exec(*argv, pass_fds=fds, env=env)
        finally:
            os.close(wfd)
            if mine is not None:
                theirs.close()
        worker = Worker(relative_id, self.generation, proc, starting=starting)
        self.workers.append(worker)
        if mine is not None:
            reader, writer = await asyncio.open_unix_connection(sock=mine)
            worker.link = writer
            relay = self.relays.setdefault(worker.generation, sync.Relay())
            relay.add_worker(relative_id, writer)
            self._background(relay.read_worker(relative_id, reader))
        self._background(self._watch(worker, rfd))
        return worker

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: a watcher collected by
        # the GC mid-await never sees its worker's READY (a reload then waits
        # READY_TIMEOUT_S) nor its exit (no restart).
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch(self, worker: Worker, rfd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(rfd, "rb", 0))
        try:
            while line := await reader.readline():
                if line.strip() == b"READY":
                    worker.ready.set()
        finally:
            transport.close()
        rc = await worker.proc.wait()
        worker.exited.set()
        self.workers.remove(worker)
        table = self.tables.get(worker.generation)
        if table is not None:
            # its sessions and waiters died with it; its replacement starts at 0
            table.reclaim(worker.relative_id)
        relay = self.relays.get(worker.generation)
        if relay is not None and worker.link is not None:
            relay.remove_worker(worker.relative_id, worker.link)
        if not any(w.generation == worker.generation for w in self.workers) \
                and worker.generation != self.generation:
            self.relays.pop(worker.generation, None)
            gone = self.tables.pop(worker.generation, None)
            if gone is not None:
                gone.close()
        if worker.leaving or self.stop.is_set():
            log.info("Former worker #%d (%d) exited with code %d", worker.relative_id, worker.pid, rc)
            return
        if worker.starting:
            # _start_generation() sees it and refuses the generation: restarting a
            # worker whose config cannot start would loop while the old ones leave.
            log.warning("New worker #%d (%d) exited with code %d before it was ready",
                        worker.relative_id, worker.pid, rc)
            return
        log.warning("Current worker #%d (%d) exited with code %d; restarting",
                    worker.relative_id, worker.pid, rc)
        await asyncio.sleep(RESTART_DELAY_S)
        if not self.stop.is_set() and not worker.leaving:
            await self._spawn(worker.relative_id)

    async def _start_generation(self) -> list[Worker] | None:
        """Starts nbproc workers of a new generation and waits until each is
        READY (a slow one is kept after READY_TIMEOUT_S) or a stop is asked.
        Returns them, or None when one exited before READY: then the others of
        that generation are stopped and self.generation is the previous one."""
        previous = self.generation
        self.last_generation += 1
        self.generation = self.last_generation
        if self.nbproc > 1:
            try:
                self.tables[self.generation] = shared.SharedCounts.create(
                    shared.shape(self.cfg), self.nbproc)
            except OSError as e:
                log.warning("no shared server counts (%s): each worker keeps its part "
                            "of every server's maxconn", e)
        new = [await self._spawn(i + 1, starting=True) for i in range(self.nbproc)]

        async def settled(w: Worker) -> None:
            ready = asyncio.create_task(w.ready.wait())
            exited = asyncio.create_task(w.exited.wait())
            stop = asyncio.create_task(self.stop.wait())
            try:
                await asyncio.wait({ready, exited, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (ready, exited, stop):
                    t.cancel()

        await asyncio.wait([asyncio.create_task(settled(w)) for w in new],
                           timeout=READY_TIMEOUT_S)
        failed = [w for w in new if w.exited.is_set() and not w.ready.is_set()]
        if not failed:
            for w in new:
                w.starting = False
            return new
        for w in new:
            w.leaving = True
            w.signal(signal.SIGTERM)
        self.generation = previous
        return None

    async def _reload(self) -> None:
        notify.reloading()
        cfg, diags = _parse(self.paths)
        for d in diags:
            log.warning("%s", d)
        if diags.has_errors:
            self.reloads_failed += 1
            log.error("Reload failed: the new configuration has %d error(s); "
                      "the current workers keep serving", len(diags.errors))
            notify.ready("reload refused: configuration errors")
            return
        if not cfg.proxies:
            # haproxy's words for a file (or a config directory) with nothing to run.
            self.reloads_failed += 1
            log.error("Reload failed: %s: no <listen> line. Nothing to do !; "
                      "the current workers keep serving", " ".join(self.paths))
            notify.ready("reload refused: nothing to do")
            return
        try:
            new_sockets = _open_listeners(cfg, self.sockets)
        except Exception as e:  # noqa: BLE001 - any bind failure refuses the reload
            self.reloads_failed += 1
            log.error("Reload failed: %s; the current workers keep serving", e)
            notify.ready("reload refused")
            return
        if not new_sockets:
            self.reloads_failed += 1
            log.error("Reload failed: %s has no error but will not start (no listener); "
                      "the current workers keep serving", " ".join(self.paths))
            notify.ready("reload refused: no listener")
            return
        old_sockets = {k: s for k, s in self.sockets.items() if k not in new_sockets}
        # A frontend disabled or shut down at runtime left its shared socket not
        # listening; the new generation starts every frontend afresh, as haproxy's.
        listeners.relisten(cfg, {k: s for k, s in new_sockets.items() if k in self.sockets})
        old_workers = [w for w in self.workers if not w.leaving]
        # What operators set at runtime (maint, drain, weights) must survive the reload.
        dump = await serverstate.fetch_servers_state(self.cfg)
        if dump is not None:
            path = serverstate.state_file_path(cfg, os.getpid())
            if serverstate.save(path, dump):
                self.state_file = path
        old_cfg, kept_sockets = self.cfg, self.sockets
        self.cfg = cfg
        self.sockets = new_sockets
        if await self._start_generation() is None:
            # A config that parses may still not start (a stats socket in a missing
            # directory, a bind the worker refuses): the old workers never got
            # SIGUSR1, so they serve on with their config and sockets.
            self.cfg, self.sockets = old_cfg, kept_sockets
            kept = {id(s) for s in kept_sockets.values()}
            listeners.close_all(s for s in new_sockets.values() if id(s) not in kept)
            self.reloads_failed += 1
            log.error("Reload failed: the new workers exited before they were ready; "
                      "the current workers keep serving")
            notify.ready("reload refused: the new workers could not start")
            return
        if self.stop.is_set():
            return  # a SIGTERM during the reload: run() stops every worker, old and new
        for w in old_workers:
            w.leaving = True
            w.signal(signal.SIGUSR1)
        listeners.close_all(old_sockets.values())
        self.reloads_ok += 1
        log.info("Reload done: generation %d serving, %d former worker(s) finishing",
                 self.generation, len(old_workers))
        notify.ready(f"generation {self.generation}")
        hard = cfg.global_.hard_stop_after
        if hard:
            def hard_stop() -> None:
                for w in old_workers:
                    w.signal(signal.SIGTERM)

            asyncio.get_running_loop().call_later(hard / 1000, hard_stop)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGUSR2, self.reload_requested.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

        def soft_stop() -> None:
            self.soft = True
            self.stop.set()

        loop.add_signal_handler(signal.SIGUSR1, soft_stop)
        self.sockets = _open_listeners(self.cfg, None)
        if await self._start_generation() is None:
            # haproxy exits when its first workers cannot start; restarting them
            # would loop for ever on the same error.
            log.error("the workers exited before they were ready; exiting")
            listeners.close_all(self.sockets.values())
            notify.stopping()
            return STARTUP_FAILURE
        # -sf/-st (nbthread without -W): the old process goes once the workers serve.
        for pids, sig in ((self.soft_stop_pids, signal.SIGUSR1),
                          (self.hard_stop_pids, signal.SIGTERM)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        notify.ready(f"generation {self.generation}")
        while not self.stop.is_set():
            stop_task = asyncio.create_task(self.stop.wait())
            reload_task = asyncio.create_task(self.reload_requested.wait())
            await asyncio.wait({stop_task, reload_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            reload_task.cancel()
            if self.reload_requested.is_set() and not self.stop.is_set():
                self.reload_requested.clear()
                try:
                    await self._reload()
                except Exception as e:  # noqa: BLE001 - a failed reload must not end the master
                    self.reloads_failed += 1
                    log.error("Reload failed: %s: %s; the current workers keep serving",
                              type(e).__name__, e)
        notify.stopping()
        sig = signal.SIGUSR1 if self.soft else signal.SIGTERM
        for w in list(self.workers):
            w.leaving = True
            w.signal(sig)
        deadline = (self.cfg.global_.hard_stop_after or 30000) / 1000 if self.soft else 10.0
        procs = [w.proc.wait() for w in list(self.workers)]
        if procs:
            try:
                await asyncio.wait_for(asyncio.gather(*procs), deadline)
            except TimeoutError:
                for w in list(self.workers):
                    w.signal(signal.SIGKILL)
        listeners.close_all(self.sockets.values())
        self._remove_private_state()
        return 0

    def _remove_private_state(self) -> None:
        """The state file this master made for its own reloads (no
        `server-state-file` configured) dies with it; a configured one stays,
        as the operator's file."""
        if self.state_file == serverstate.private_state_path(os.getpid()):
            with contextlib.suppress(OSError):
                os.unlink(self.state_file)


def main(paths: Sequence[str], cfg: HaproxyConfig, *, daemon: bool = False,
         pidfile: str | None = None, extra_worker_args: Sequence[str] = (),
         health_fd: int | None = None, soft_stop_pids: Sequence[int] = (),
         hard_stop_pids: Sequence[int] = ()) -> int:
    """Entry point of `keeplb lb -W`, and of `nbthread N` > 1 without -W; the
    config was checked by the CLI already. `health_fd` goes to worker 1 only."""
    if daemon:
        from keeplb.proc.daemonize import daemonize

        daemonize(keep_cwd=True)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] (%(process)d) : %(message)s")
    set_title("lb master")
    if pidfile:
        write_pidfile(pidfile)
    try:
        import uvloop

        return uvloop.run(Master(paths, cfg, extra_worker_args=extra_worker_args,
                                 health_fd=health_fd, soft_stop_pids=soft_stop_pids,
                                 hard_stop_pids=hard_stop_pids).run())
    finally:
        if pidfile:
            remove_pidfile(pidfile)
