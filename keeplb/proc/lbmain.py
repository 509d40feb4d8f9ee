"""The process model around the load balancer: what `keeplb lb` does before and
around `keeplb.lb.app.serve`.

  single process   bind, drop privileges, serve; -D detaches; -sf/-st stop the
                   old process once ready (the classic haproxy reload)
  -W master        keeplb.proc.master: binds once, supervises workers
  --worker N       a master's worker: inherited sockets, READY on a pipe,
                   SIGUSR1 soft stop (finish sessions), SIGTERM hard stop
  --health-fd FD   (`keeplb run`) one JSON line per health change on FD
  nbthread N > 1   always the master path (with or without -W): N workers,
                   worker 1 checks and serves the stats socket, the others
                   follow its server states (keeplb.proc.sync)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence

from keeplb.config.model import HaproxyConfig
from keeplb.errors import KeeplbError
from keeplb.lb import shared
from keeplb.lb.server import AdminState, OpState, ProcessRuntime
from keeplb.proc import listeners, notify, serverstate, sync
from keeplb.proc.affinity import bind_worker
from keeplb.proc.pidfile import remove_pidfile, write_pidfile
from keeplb.proc.privileges import drop_privileges
from keeplb.proc.title import set_title

log = logging.getLogger("keeplb.lb")


def _health_writer(fd: int | None) -> Callable[[dict[str, tuple[int, int]]], None] | None:
    if fd is None:
        return None
    os.set_blocking(fd, False)

    def write(health: dict[str, tuple[int, int]]) -> None:
        line = json.dumps({"backends": {k: list(v) for k, v in health.items()}}) + "\n"
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(fd, line.encode())

    return write


def check_fd_limit(cfg: HaproxyConfig) -> int:
    """Raises the descriptor limit for `maxconn`/`ulimit-n`, or fails as haproxy does.

    haproxy needs two descriptors per session plus a reserve; when the hard
    limit is lower it refuses to start rather than fail under load later.
    """
    from keeplb.lb import app

    g = cfg.global_
    if g.ulimit_n is not None:
        needed = g.ulimit_n
    elif g.maxconn is not None:
        needed = 2 * g.maxconn + 200
    else:
        return app.raise_nofile(0)
    got = app.raise_nofile(needed)
    if got < needed:
        raise KeeplbError(f"[keeplb.main()] Cannot raise FD limit to {needed}, limit is {got}.")
    return got


PR_SET_PDEATHSIG = 1


def _exit_with_master() -> None:
    """A worker whose master died (even by SIGKILL) gets SIGTERM, as haproxy's
    workers leave when the master's pipe closes: no orphan keeps the ports."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError) as e:
        log.warning("cannot ask to follow the master's death: %s", e)
        return
    if os.getppid() == 1:  # the master died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _drop(cfg: HaproxyConfig) -> None:
    g = cfg.global_
    if os.geteuid() != 0:
        return
    drop_privileges(user=g.user, group=g.group, uid=g.uid, gid=g.gid, chroot=g.chroot)


def dump_servers_state(runtime: ProcessRuntime) -> list[str]:
    """The lines haproxy logs on SIGHUP (`sig_dump_state`), one per server and
    one per backend; called from the signal handler, reads the runtime only."""
    lines: list[str] = []
    for be in runtime.backends:
        active = backup = 0
        for srv in be.servers:
            state = "UP" if srv.op is not OpState.STOPPED else "DOWN"
            if srv.admin is AdminState.MAINT:
                state = "MAINT"
            lines.append(f"SIGHUP: Server {be.name}/{srv.name} is {state}. Conn: "
                         f"{srv.counters.cur_sess} act, {srv.queue_cur} pend, "
                         f"{srv.counters.total_sess} tot.")
            if srv.usable:
                if srv.backup:
                    backup += 1
                else:
                    active += 1
        lines.append(f"SIGHUP: Proxy {be.name} has {active} active servers and {backup} "
                     f"backup servers available. Conn: act(BE): {be.counters.cur_sess}, "
                     f"{be.queue_cur} pend, tot(BE): {be.counters.total_sess}.")
    return lines


def _signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def serve_process(cfg: HaproxyConfig, *, sockets: dict[str, socket.socket] | None = None,
                  ready_fd: int | None = None, health_fd: int | None = None,
                  soft_stop_pids: Sequence[int] = (), hard_stop_pids: Sequence[int] = (),
                  systemd: bool = True, state_file: str | None = None,
                  link: sync.WorkerLink | None = None, role: str = sync.ROLE_CHECKER,
                  worker: int = 1) -> int:
    """Binds what is not inherited, drops privileges, serves until a stop signal.

    With a sync `link` (nbthread), the master's snapshot of the server and
    frontend states is applied first; a follower (`role`) then runs no checks
    and no stats socket and applies the checker's changes; the checker
    publishes them. Every worker sends its counters and keeps the others'.
    """
    from keeplb.lb import app

    saved = serverstate.load(state_file)
    runtime = app.build_runtime(cfg, last_addrs={(s.backend, s.server): s.addr
                                                 for s in saved if s.addr})
    runtime.worker = worker
    if link is not None:
        runtime.shared = shared.SharedCounts.from_env(shared.shape(cfg),
                                                      cfg.global_.nbthread or 1, worker)
    if saved:
        n = serverstate.apply_servers_state(runtime, saved)
        log.info("loaded the state of %d server(s) from %s", n, state_file)
    snapshot = link.read_snapshot() if link is not None else []
    sync.apply_static(runtime, snapshot)
    follower = link is not None and role == sync.ROLE_FOLLOWER
    tasks: list[asyncio.Task[None]] = []

    def on_started(lb: app.LoadBalancer) -> None:
        if link is None:
            return
        loop = asyncio.get_running_loop()
        if follower:
            sync.silence_follower(lb)
            if lb.control is not None:
                lb.control.shared_sockets = True
            # the stats page's admin actions go to the checker, which publishes them
            for fe in lb.frontends:
                if fe.control is not None:
                    fe.control = sync.CheckerRequests(link)
        else:
            sync.restore_health(runtime, snapshot)
            lb.on_server_change = link.publish
            lb.on_frontend_change = link.publish_frontend
            lb.on_process_change = link.publish_global
            lb.on_counters_clear = link.publish_clear
            # Servers set `disabled` in the config or by a state file count too.
            for be in runtime.backends:
                for srv in be.servers:
                    link.publish(srv)
        for relay_be in lb.backends.values():
            relay_be.wake = functools.partial(link.wake, relay_be.name)
        # Every worker's counters reach every other one: the stats page and
        # /metrics count the whole process whichever worker serves them.
        tasks.append(loop.create_task(link.follow(lb, worker, apply=follower)))
        tasks.append(loop.create_task(link.send_counters(runtime, worker)))

    check_fd_limit(cfg)
    socks = app.open_listeners(cfg, sockets)
    on_health = None if follower else _health_writer(health_fd)

    def on_ready() -> None:
        # serve() has bound the listeners and the stats sockets by now: drop root
        # only then, as haproxy does (a stats socket path lives outside the chroot).
        _drop(cfg)
        if ready_fd is not None:
            _exit_with_master()  # again: a change of uid/gid clears the death signal
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"READY\n")
                os.close(ready_fd)
        _signal_pids(soft_stop_pids, signal.SIGUSR1)
        _signal_pids(hard_stop_pids, signal.SIGTERM)
        if systemd:
            notify.ready("serving")

    async def run() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        force = asyncio.Event()
        soft = {"on": False}

        def hard() -> None:
            if stop.is_set():
                force.set()
            stop.set()
            if not soft["on"]:
                force.set()

        def soft_stop() -> None:
            # haproxy's SIGUSR1: stop accepting, let the sessions finish.
            soft["on"] = True
            stop.set()

        loop.add_signal_handler(signal.SIGTERM, hard)
        loop.add_signal_handler(signal.SIGINT, hard)
        loop.add_signal_handler(signal.SIGUSR1, soft_stop)

        def dump_state() -> None:
            for line in dump_servers_state(runtime):
                log.info("%s", line)

        def no_reload() -> None:
            # haproxy ignores SIGUSR2 outside master-worker mode; the default
            # action would kill the process and every session with it.
            if ready_fd is not None:
                log.warning("SIGUSR2 ignored by a worker: send it to the master (%d)",
                            os.getppid())
            else:
                log.warning("SIGUSR2 ignored: reloading needs master-worker mode (-W)")

        loop.add_signal_handler(signal.SIGHUP, dump_state)
        loop.add_signal_handler(signal.SIGUSR2, no_reload)
        hs = cfg.global_.hard_stop_after
        rc = await app.serve(cfg, stop=stop, force=force, on_ready=on_ready, on_health=on_health,
                             listen_sockets=socks, runtime=runtime,
                             drain_timeout=hs / 1000 if hs else 24 * 3600.0,
                             checks=not follower, stats=not follower, on_started=on_started)
        if systemd:
            notify.stopping()
        return rc

    return app.run_loop(run)


def main(paths: Sequence[str], *, daemon: bool = False, foreground: bool = False,
         pidfile: str | None = None, master_worker: bool = False,
         soft_stop_pids: Sequence[int] = (), hard_stop_pids: Sequence[int] = (),
         health_fd: int | None = None, worker: int | None = None,
         ready_fd: int | None = None) -> int:
    """`keeplb lb`; the CLI has checked the config already (errors raise ConfigError)."""
    from keeplb.lb import app

    cfg = app.load(paths)
    g = cfg.global_
    if worker is None:
        check_fd_limit(cfg)  # before forking, so the error reaches the terminal
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] (%(process)d) : %(message)s")
    if worker is not None:
        # Bound before the title is set: whoever sees "lb worker N" sees it bound.
        bind_worker(g.cpu_map, worker)
        set_title(f"lb worker {worker}")
        _exit_with_master()
        inherited = listeners.import_fds(os.environ.pop(listeners.ENV_FDS, None))
        link, role = sync.WorkerLink.from_env()
        return serve_process(cfg, sockets=inherited, ready_fd=ready_fd, health_fd=health_fd,
                             systemd=False,
                             state_file=os.environ.get(serverstate.ENV_STATE_FILE),
                             link=link, role=role, worker=worker)
    background = (daemon or g.daemon) and not foreground
    if master_worker or g.master_worker or (g.nbthread or 1) > 1:
        from keeplb.proc import master

        return master.main(paths, cfg, daemon=background, pidfile=pidfile or g.pidfile,
                           health_fd=health_fd, soft_stop_pids=soft_stop_pids,
                           hard_stop_pids=hard_stop_pids)
    if background:
        # Bind before detaching, so that a bind error reaches the terminal.
        socks = app.open_listeners(cfg)
        from keeplb.proc.daemonize import daemonize

        daemonize(keep_cwd=True)
    else:
        socks = None
    bind_worker(g.cpu_map, 1)
    set_title("lb")
    pf = pidfile or g.pidfile
    if pf:
        write_pidfile(pf)
    try:
        return serve_process(cfg, sockets=socks, health_fd=health_fd,
                             soft_stop_pids=soft_stop_pids, hard_stop_pids=hard_stop_pids)
    finally:
        if pf:
            with contextlib.suppress(OSError):
                remove_pidfile(pf)
