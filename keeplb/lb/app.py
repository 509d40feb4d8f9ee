"""The `keeplb lb` worker: HaproxyConfig -> runtime objects -> listening sockets,
relay, health checks, stats socket and logs, until asked to stop.

Entry points:
- `build_runtime(cfg)`: the ProcessRuntime (counters and states) for a config.
- `open_listeners(cfg)`: bind every `bind` line, keyed as keeplb.proc.listeners
  names them; a master binds once and passes the sockets to each worker
  (`serve(listen_sockets=...)`).
- `serve(cfg, stop=...)`: run until `stop` is set, then stop accepting and
  drain the sessions for at most the drain timeout (`hard-stop-after`, or 10 s).
- `LoadBalancer.on_transition`: the HealthChecker's callback; `AppControl`: the
  runtime API's RuntimeControl / SessionControl.
- `main(paths)`: `keeplb lb -f FILE`, through keeplb.proc.lbmain.

nbthread N: the master (keeplb.proc.master, with or without -W) starts N
worker processes on the same sockets; worker 1 alone runs the health checks
and the stats socket, and every server change it makes is relayed to the
other workers (keeplb.proc.sync), which apply it through on_transition and
AppControl: one health-check state, as haproxy's threads share one. The
runtime API's frontend and process-limit commands travel the same way
(on_frontend_change, on_process_change), and so does `clear counters`
(on_counters_clear).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from keeplb.config.model import HaproxyConfig, Proxy
from keeplb.errors import ConfigError, KeeplbError
from keeplb.lb.balance import BalancedServer, Balancer, make_balancer
from keeplb.lb.checks import HealthChecker
from keeplb.lb.health import BE_WEIGHT_SCALE
from keeplb.lb.log import LogHub
from keeplb.lb.proxy import Backend, Frontend, Limits, Listener, Session, maxaccept
from keeplb.lb.runtime import DirectControl, SessionView, start_stats_socket
from keeplb.lb.server import (
    AdminState,
    BackendRuntime,
    FrontendRuntime,
    OpState,
    ProcessRuntime,
    ServerRuntime,
)
from keeplb.proc import listeners

_log = logging.getLogger("keeplb.lb")

DEFAULT_DRAIN_S = 10.0
HealthCallback = Callable[[dict[str, tuple[int, int]]], None]


# --------------------------------------------------------------------------
# runtime objects
# --------------------------------------------------------------------------


def default_maxconn() -> int:
    """haproxy derives the global maxconn from RLIMIT_NOFILE when none is set:
    two descriptors per session plus a reserve for listeners, checks and logs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(100, (soft - 100) // 2)


def libc_resolve(host: str) -> str | None:
    """`init-addr libc`: the first IPv4 or IPv6 address getaddrinfo() gives."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for family, _, _, _, sa in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return str(sa[0])
    return None


DEFAULT_INIT_ADDR = ("last", "libc")  # haproxy 2.6's default


def init_address(where: str, host: str, methods: Sequence[str], last: str | None,
                 resolve: Callable[[str], str | None]) -> str | None:
    """The server's first address by haproxy's `init-addr` methods, in order:
    `last` (the server-state file), `libc`, an IP literal; None for `none`
    (the server starts in maintenance without an address). `where` names the
    server in haproxy's words; KeeplbError when no method gives an address."""
    try:
        ipaddress.ip_address(host)
        return host  # an address needs no method
    except ValueError:
        pass
    tried_libc = False
    for m in methods:
        if m == "last":
            if last:
                return last
        elif m == "libc":
            tried_libc = True
            found = resolve(host)
            if found is not None:
                return found
        elif m == "none":
            return None
        else:
            if tried_libc:
                _log.warning("%s : could not resolve address '%s', falling back to configured "
                             "address.", where, host)
            return m
    raise KeeplbError(f"{where} : could not resolve address '{host}'.")


def build_runtime(cfg: HaproxyConfig, *, resolve: bool = True,
                  last_addrs: Mapping[tuple[str, str], str] | None = None) -> ProcessRuntime:
    """Counters and states for every frontend, backend and server of `cfg`,
    all servers UP (haproxy starts checked servers UP) unless `disabled`; host
    names resolved by each server's `init-addr` (`last_addrs`: the addresses a
    server-state file holds)."""
    g = cfg.global_
    proc = ProcessRuntime(pid=os.getpid(), started=time.time(),
                          maxconn=g.maxconn or default_maxconn(), nbthread=g.nbthread or 1)
    if g.maxconnrate and g.maxconnrate > 0:
        proc.rate_limits["connections"] = g.maxconnrate  # `set rate-limit connections` changes it
    if g.maxsessrate and g.maxsessrate > 0:  # haproxy: a negative one never limits
        proc.rate_limits["sessions"] = g.maxsessrate  # `set rate-limit sessions` changes it
    now = time.monotonic()
    for iid, p in enumerate(cfg.proxies, start=1):
        if p.disabled:
            continue
        if p.kind.has_frontend:
            proc.frontends.append(FrontendRuntime(config=p, iid=iid, maxconn=p.maxconn or 0))
        if p.kind.has_backend:
            be = BackendRuntime(config=p, iid=iid, last_change=now)
            for sid, s in enumerate(p.servers, start=1):
                host: str | None = s.address.host
                if resolve and s.address.family not in ("unix", "abns") and host:
                    host = init_address(
                        f"'server {p.name}/{s.name}'", host,
                        s.options.init_addr or DEFAULT_INIT_ADDR,
                        (last_addrs or {}).get((p.name, s.name)), libc_resolve)
                weight = s.weight
                rt = ServerRuntime(
                    config=s, backend=p.name, sid=s.options.id or sid, host=host or "",
                    port=s.address.port_low, uweight=weight, eweight=weight,
                    check_enabled=bool(s.options.check), last_change=now,
                    maxconn=s.options.maxconn or 0, maxqueue=s.options.maxqueue or 0,
                    local=s.address.family if s.address.family in ("unix", "abns") else "")
                if s.options.disabled or host is None:
                    rt.admin = AdminState.MAINT
                rt.unresolved = host is None  # haproxy: MAINT (resolution)
                if rt.check_enabled:
                    rise = s.options.rise or 2
                    rt.health = rise  # haproxy 2.6: UP 1/fall until the first check passes
                be.servers.append(rt)
            proc.backends.append(be)
    return proc


def make_backend_balancer(p: Proxy, servers: Sequence[ServerRuntime],
                          process: ProcessRuntime | None = None) -> Balancer:
    """The backend's balancer with its usable servers set up; unsupported
    algorithms fall back to roundrobin (the config checker warns about them).
    `process`: with nbthread, `balance first` fills each server to its maxconn
    when the workers count it together (the master's table: a server another
    worker filled is skipped as full), else this worker's part of it."""
    split = process is not None and process.shared is None
    bs = [BalancedServer(s.name, s.uweight * BE_WEIGHT_SCALE, s.backup,
                         process.server_share(s.maxconn) if split and process and s.maxconn
                         else s.maxconn)
          for s in servers]
    allb = p.option("allbackups")
    try:
        bal = make_balancer(p.balance, bs, allbackups=allb)
    except ValueError as exc:
        _log.warning("backend %s: %s; using roundrobin", p.name, exc)
        from keeplb.config.model import Balance
        bal = make_balancer(Balance(), bs, allbackups=allb)
    for s in servers:
        if s.admin is AdminState.READY and s.op is not OpState.STOPPED:
            bal.set_up(s.name)
    return bal


# --------------------------------------------------------------------------
# listening sockets
# --------------------------------------------------------------------------


def open_listeners(cfg: HaproxyConfig,
                   existing: Mapping[str, socket.socket] | None = None) -> dict[str, socket.socket]:
    """Bind every `bind` line of every enabled frontend (each port of a range),
    keyed as keeplb.proc.listeners names them ('ipv4@127.0.0.1:6443'), the keys a
    master uses to pass sockets to workers. Sockets in `existing` are reused;
    a failure raises KeeplbError in haproxy's words."""
    return listeners.bind_all(cfg, existing)


# --------------------------------------------------------------------------
# the worker
# --------------------------------------------------------------------------


class LoadBalancer:
    """Everything one worker runs for one config."""

    def __init__(self, cfg: HaproxyConfig, runtime: ProcessRuntime | None = None,
                 on_health: HealthCallback | None = None) -> None:
        self.cfg = cfg
        self.runtime = runtime or build_runtime(cfg)
        g = cfg.global_
        self.logs = LogHub(g.logs, tag=g.log_tag, pid=self.runtime.pid)
        self.limits = Limits(self.runtime)
        self.backends: dict[str, Backend] = {}
        self.frontends: list[Frontend] = []
        self.on_health = on_health
        self.checker: HealthChecker | None = None
        self.control: AppControl | None = None
        # nbthread: worker 1 publishes every server change, and every frontend
        # or process limit the runtime API sets, to the other workers.
        self.on_server_change: Callable[[ServerRuntime], None] | None = None
        self.on_frontend_change: Callable[[FrontendRuntime], None] | None = None
        self.on_process_change: Callable[[ProcessRuntime], None] | None = None
        # ... and every `clear counters [all]` (an event: the clear's number, all)
        self.on_counters_clear: Callable[[int, bool], None] | None = None
        for brt in self.runtime.backends:
            bal = make_backend_balancer(brt.config, brt.servers, self.runtime)
            be = Backend(brt, bal, self.runtime, self.logs.for_proxy(brt.config))
            be.on_health = self._health_changed
            self.backends[brt.name] = be
        for frt in self.runtime.frontends:
            fe = Frontend(frt, self.limits, self.backends, self.logs.for_proxy(frt.config))
            self.frontends.append(fe)
            self.limits.frontends.append(fe)

    def health(self) -> dict[str, tuple[int, int]]:
        """{backend: (active servers up, backup servers up)}."""
        return {name: (be.rt.active_up, be.rt.backup_up) for name, be in self.backends.items()}

    def _health_changed(self) -> None:
        if self.on_health is not None:
            self.on_health(self.health())

    def backend(self, name: str) -> Backend | None:
        return self.backends.get(name)

    def server_changed(self, server: ServerRuntime) -> None:
        """Called after any change of `server`'s state (check or operator)."""
        if self.on_server_change is not None:
            self.on_server_change(server)

    def frontend_changed(self, fe: FrontendRuntime) -> None:
        """Called after an operator changed `fe` (disable, enable, shutdown, maxconn)."""
        if self.on_frontend_change is not None:
            self.on_frontend_change(fe)

    def process_changed(self) -> None:
        """Called after an operator changed the global maxconn or a rate limit."""
        if self.on_process_change is not None:
            self.on_process_change(self.runtime)

    def counters_cleared(self, epoch: int, everything: bool) -> None:
        """Called after an operator's `clear counters [all]` (ProcessRuntime.clear_counters)."""
        if self.on_counters_clear is not None:
            self.on_counters_clear(epoch, everything)

    # -- state changes from checks or operators ----------------------------

    def on_transition(self, server: ServerRuntime, went_up: bool, result: Any = None) -> None:
        """HealthChecker callback: `server` just went UP or DOWN after `result`.

        `result` is a CheckResult (status, info, duration, code); any object with
        those attributes, or None for an operator's action, is accepted.
        """
        be = self.backends.get(server.backend)
        if be is None:
            return
        desc, info, duration, code = _result_fields(result, went_up)
        from_cli = info == "changed from CLI" or result is None
        now = time.monotonic()
        if went_up:
            if server.op is OpState.STOPPED and server.last_change:
                server.downtime_s += now - server.last_change
            slowstart = server.config.options.slowstart or 0
            server.op = OpState.STARTING if slowstart > 0 else OpState.RUNNING
            server.eweight = server.uweight
            server.last_change = now
            be.server_up(server, desc, info, duration, code, from_cli=from_cli)
        else:
            server.op = OpState.STOPPED
            server.check_downs += 1
            server.last_change = now
            be.server_down(server, desc, info, duration, code, from_cli=from_cli)
        self.server_changed(server)

    # -- listening ---------------------------------------------------------

    def start_listeners(self, socks: Mapping[str, socket.socket]) -> None:
        by_name = {fe.name: fe for fe in self.frontends}
        g = self.cfg.global_
        batch = maxaccept(g.tune.get("tune.maxaccept"), g.nbthread or 1)
        for spec in listeners.listen_specs(self.cfg):
            fe = by_name.get(spec.frontend)
            sock = socks.get(spec.key)
            if fe is None or sock is None or any(li.key == spec.key for li in fe.listeners):
                continue
            fe.listeners.append(Listener(sock, fe, spec.key, spec.backlog, batch))
        for fe in self.frontends:
            if fe.can_accept():
                fe.resume()

    def stop_listeners(self) -> None:
        """Stop accepting (soft stop); the sockets themselves are closed by serve()."""
        self.limits.stopping = True
        self.runtime.stopping = True
        for fe in self.frontends:
            for li in fe.listeners:
                li.close()

    def sessions(self) -> list[Session]:
        return list(self.limits.sessions)

    async def close(self) -> None:
        if self.checker is not None:
            await self.checker.stop()
            self.checker = None
        self.logs.close()
        for fe in self.frontends:
            if fe.reactor is not None:
                fe.reactor.close()  # its epoll file descriptor, now that sessions are gone


class AppControl(DirectControl):
    """The runtime API's RuntimeControl and SessionControl (keeplb.lb.runtime):
    DirectControl updates the ServerRuntime, this tells the balancer, the
    queue and the checker, and ends sessions."""

    def __init__(self, lb: LoadBalancer) -> None:
        super().__init__()
        self.lb = lb
        # nbthread follower: the listening sockets are shared and worker 1 already
        # shut them down (or listens again); this worker only stops or resumes
        # accepting, so that a late relayed line never undoes a newer change.
        self.shared_sockets = False

    def _backend(self, server: ServerRuntime) -> Backend | None:
        return self.lb.backends.get(server.backend)

    def _sync_balancer(self, server: ServerRuntime) -> None:
        be = self._backend(server)
        if be is None:
            return
        if server.usable:
            be.balancer.set_up(server.name)
            be.balancer.update_weight(server.name, server.eweight * BE_WEIGHT_SCALE)
            be.serve_all()
        else:
            be.balancer.set_down(server.name)
        self.lb._health_changed()

    def set_admin_state(self, server: ServerRuntime, state: AdminState) -> None:
        old = server.admin
        super().set_admin_state(server, state)
        be = self._backend(server)
        if be is not None:
            be.admin_changed(server, old)
        self._sync_balancer(server)
        if state is AdminState.READY and self.lb.checker is not None:
            self.lb.checker.wake(server)
        self.lb.server_changed(server)

    def set_weight(self, server: ServerRuntime, weight: int) -> None:
        super().set_weight(server, weight)
        self._sync_balancer(server)
        self.lb.server_changed(server)

    def set_addr(self, server: ServerRuntime, host: str, port: int | None) -> None:
        super().set_addr(server, host, port)
        self.lb.server_changed(server)

    def enable_health(self, server: ServerRuntime) -> None:
        super().enable_health(server)
        self.lb.server_changed(server)

    def disable_health(self, server: ServerRuntime) -> None:
        super().disable_health(server)
        self.lb.server_changed(server)

    def set_health(self, server: ServerRuntime, op: OpState) -> None:
        if op in (OpState.RUNNING, OpState.STOPPED):
            up = op is OpState.RUNNING
            checker = self.lb.checker
            if checker is not None and checker.health_of(server) is not None:
                # The checker keeps its own counter and reports a change through
                # on_transition (balancer, "changed from CLI" line).
                checker.set_health(server, up)
            elif (server.op is not OpState.STOPPED) != up:
                self.lb.on_transition(server, up, None)
        if server.op is not op and not (op is OpState.RUNNING
                                        and server.op is OpState.STARTING):
            super().set_health(server, op)  # NOLB, or a state the lines above did not set
            self._sync_balancer(server)
        self.lb.server_changed(server)

    def set_maxconn(self, server: ServerRuntime, maxconn: int) -> None:
        super().set_maxconn(server, maxconn)
        be = self._backend(server)
        if be is not None:
            slot = be.slots[server.name]
            if slot.full:
                be.full.add(server.name)
            else:
                be.full.discard(server.name)
                be.serve_queue(slot)
        self.lb.server_changed(server)

    # -- SessionControl ----------------------------------------------------

    def sessions(self) -> Iterable[SessionView]:
        now = asyncio.get_running_loop().time()
        for sess in self.lb.limits.sessions:
            ip = sess.src[0]
            proto = "unix_stream" if ip == "unix" else ("tcpv6" if ":" in ip else "tcpv4")
            yield SessionView(
                ident=id(sess), proto=proto, src=f"{ip}:{sess.src[1]}",
                frontend=sess.fe.name,
                backend=sess.backend.name if sess.backend is not None else None,
                server=sess.slot.name if sess.slot is not None else None,
                age_s=now - sess.t0)

    def shutdown_session(self, ident: int) -> bool:
        for sess in list(self.lb.limits.sessions):
            if id(sess) == ident:
                sess.kill("K")
                return True
        return False

    def shutdown_sessions(self, server: ServerRuntime) -> int:
        be = self._backend(server)
        if be is None:
            return 0
        victims = list(be.slots[server.name].sessions)
        for sess in victims:
            sess.kill("K")
        return len(victims)

    # -- FrontendControl (keeplb.lb.runtime) -------------------------------

    def _frontend(self, frt: FrontendRuntime) -> Frontend | None:
        return next((f for f in self.lb.frontends if f.rt is frt), None)

    def _close_listeners(self, front: Frontend) -> None:
        front.pause()
        # Frontend.paused means "paused by maxconn, resume when a session
        # ends"; an operator's pause must outlive that, so only rt.paused stays.
        front.paused = False
        if self.shared_sockets:
            return
        for li in front.listeners:
            # haproxy's pause: the socket stops listening, so new clients are
            # refused instead of waiting in the backlog (listen() undoes it).
            with contextlib.suppress(OSError):
                li.sock.shutdown(socket.SHUT_RD)

    def _resume_if_possible(self, front: Frontend) -> None:
        if front.rt.disabled or front.rt.stopped or self.lb.limits.stopping:
            return
        if front.can_accept():
            front.resume()
        else:
            front.paused = True  # the maxconn logic resumes it when a session ends

    def disable_frontend(self, fe: FrontendRuntime) -> None:
        super().disable_frontend(fe)
        front = self._frontend(fe)
        if front is not None:
            self._close_listeners(front)
        self.lb.frontend_changed(fe)

    def enable_frontend(self, fe: FrontendRuntime) -> None:
        super().enable_frontend(fe)
        front = self._frontend(fe)
        if front is not None:
            if not self.shared_sockets:
                for li in front.listeners:
                    with contextlib.suppress(OSError):
                        li.sock.listen(li.backlog)
            self._resume_if_possible(front)
        self.lb.frontend_changed(fe)

    def shutdown_frontend(self, fe: FrontendRuntime) -> None:
        super().shutdown_frontend(fe)
        front = self._frontend(fe)
        if front is not None:
            self._close_listeners(front)
            for li in front.listeners:
                li.close()
        self.lb.frontend_changed(fe)

    def set_frontend_maxconn(self, fe: FrontendRuntime, maxconn: int) -> None:
        super().set_frontend_maxconn(fe, maxconn)
        front = self._frontend(fe)
        if front is not None:
            self._apply_limit(front)
        self.lb.frontend_changed(fe)

    def set_global_maxconn(self, rt: ProcessRuntime, maxconn: int) -> None:
        super().set_global_maxconn(rt, maxconn)
        for front in self.lb.frontends:
            self._apply_limit(front)
        self.lb.process_changed()

    def _apply_limit(self, front: Frontend) -> None:
        """After a maxconn change: resume a frontend the old limit paused, or
        pause one already at the new (lower) limit."""
        if front.paused:
            self._resume_if_possible(front)
        elif not (front.rt.disabled or front.rt.stopped or front.can_accept()):
            front.pause()

    def set_rate_limit(self, rt: ProcessRuntime, what: str, value: int) -> None:
        super().set_rate_limit(rt, what, value)
        # haproxy dequeues the waiting listeners at once: a lifted (or raised)
        # limit resumes the frontends it paused without waiting for its timer
        for front in self.lb.frontends:
            self._apply_limit(front)
        self.lb.process_changed()

    def clear_counters(self, rt: ProcessRuntime, everything: bool) -> None:
        self.lb.counters_cleared(rt.clear_counters(everything), everything)


def _result_fields(result: Any, went_up: bool) -> tuple[str, str, int | None, int | None]:
    if result is None:
        return ("Layer4 check passed" if went_up else "Layer4 connection problem", "", None,
                None)
    status = getattr(result, "status", None)
    desc = getattr(status, "description", None) or str(status or "")
    info = getattr(result, "info", "") or ""
    duration = getattr(result, "duration_ms", None)
    if duration is None:
        d = getattr(result, "duration", None)
        duration = int(d * 1000) if isinstance(d, float) else d
    code = getattr(result, "code", None)
    return desc, str(info), duration, code


def _start_checks(lb: LoadBalancer) -> HealthChecker | None:
    """Start the active health checks of servers with `check`; None when there are none."""
    if not any(s.check_enabled for be in lb.runtime.backends for s in be.servers):
        return None
    spread = lb.cfg.global_.tune.get("spread-checks", "0")
    checker = HealthChecker(lb.runtime, on_transition=lb.on_transition,
                            spread_checks=int(spread) if spread.isdigit() else 0)
    for w in checker.warnings:
        _log.warning("%s", w)
    lb.checker = checker
    checker.start()
    return checker


async def serve(cfg: HaproxyConfig, *, stop: asyncio.Event,
                on_ready: Callable[[], None] | None = None,
                on_health: HealthCallback | None = None,
                listen_sockets: Mapping[str, socket.socket] | None = None,
                force: asyncio.Event | None = None,
                soft_stop: asyncio.Event | None = None,
                drain_timeout: float | None = None,
                runtime: ProcessRuntime | None = None,
                checks: bool = True, stats: bool = True,
                on_started: Callable[[LoadBalancer], None] | None = None) -> int:
    """Run the load balancer for `cfg` until `stop` is set; returns 0.

    listen_sockets: sockets bound beforehand (by a master, for a seamless
    reload), keyed as keeplb.proc.listeners names them; the missing ones are
    bound here. On stop
    the listeners close, sessions drain for at most `drain_timeout` seconds
    (default: `hard-stop-after`, else 10 s, or no limit when `soft_stop` was
    set: haproxy's soft stop; `force` cuts it short) and the ones left are
    killed (termination state 'K').

    checks=False / stats=False: no health checks / no stats socket (an
    nbthread follower); on_started(lb) runs once all is started, before
    on_ready (the nbthread sync hooks in there).
    """
    lb = LoadBalancer(cfg, runtime, on_health)
    socks = open_listeners(cfg, listen_sockets)
    given = dict(listen_sockets or {})
    owned = [s for k, s in socks.items() if given.get(k) is not s]
    stats_servers: list[asyncio.AbstractServer] = []
    try:
        lb.start_listeners(socks)
        control = AppControl(lb)
        lb.control = control
        for fe in lb.frontends:
            fe.runtime, fe.control = lb.runtime, control
        timeout = (cfg.global_.stats_timeout or 10000) / 1000
        for ss in cfg.global_.stats_sockets if stats else ():
            stats_servers.append(await start_stats_socket(ss, lb.runtime, control,
                                                          timeout=timeout))
        if checks:
            _start_checks(lb)
        if on_started is not None:
            on_started(lb)
        if on_health is not None:
            on_health(lb.health())
        if on_ready is not None:
            on_ready()
        await stop.wait()
        lb.stop_listeners()
        # Closed now, not after the drain: with SO_REUSEPORT (a `-sf` reload) the
        # kernel would otherwise keep queueing new connections on this socket.
        for sock in owned:
            sock.close()
        if drain_timeout is None:
            hs = cfg.global_.hard_stop_after
            if soft_stop is not None and soft_stop.is_set():
                drain_timeout = hs / 1000 if hs else float("inf")
            else:
                drain_timeout = hs / 1000 if hs else DEFAULT_DRAIN_S
        await _drain(lb, drain_timeout, force)
    finally:
        for srv in stats_servers:
            srv.close()
        lb.stop_listeners()
        # Sockets passed in belong to the caller (a master keeps them for the next
        # generation); the ones bound here are closed.
        for sock in owned:
            sock.close()
        for sess in lb.sessions():
            sess.kill("K")
        await lb.close()
    return 0


async def _drain(lb: LoadBalancer, timeout: float, force: asyncio.Event | None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while lb.limits.sessions and loop.time() < deadline:
        if force is not None and force.is_set():
            break
        await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
    for sess in lb.sessions():
        sess.kill("K")
    # Let the aborted transports deliver connection_lost so every session logs.
    for _ in range(10):
        if not lb.limits.sessions:
            break
        await asyncio.sleep(0.01)


def raise_nofile(target: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `target` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if want > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def load(paths: Sequence[str]) -> HaproxyConfig:
    """Parse haproxy.cfg files; raises ConfigError when they hold errors and logs
    the warnings."""
    from keeplb.config import haproxy

    cfg, diags = haproxy.parse(list(paths))
    for d in diags:
        if not d.is_error:
            _log.warning("%s", d)
    if diags.has_errors:
        raise ConfigError(diags.errors)
    return cfg


def main(paths: Sequence[str], **kwargs: Any) -> int:
    """`keeplb lb -f FILE...`: the process model (single process, -D, -W master and
    workers, -sf/-st, --health-fd) lives in keeplb.proc.lbmain, which calls
    load(), open_listeners() and serve() from here; this is the same entry."""
    from keeplb.proc import lbmain

    return lbmain.main(paths, **kwargs)


def run_loop(fn: Callable[[], Any]) -> int:
    """Run the coroutine function `fn` on uvloop (asyncio's loop if uvloop is absent)."""
    try:
        import uvloop
        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return int(runner.run(fn()))
