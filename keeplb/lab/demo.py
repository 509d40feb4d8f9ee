"""``keeplb demo``: the article's HA setup in network namespaces, failing on purpose.

Three stand-in kube-apiservers (HTTPS :6443), two balancers lb1/lb2 running
the seed's keepalived.conf + haproxy.cfg (moved to the lab's addresses), one
client opening a new TLS connection to VIP:6443 every 10 ms.  Scenarios break
things one at a time; a live view shows who holds the VIP, each balancer's
VRRP state and backend health, and the client's success rate; at the end a
summary table and a report (PNG timeline + markdown) are written.

``--impl keepalived`` runs the real keepalived and haproxy; ``--impl keeplb``
(default) runs ``keeplb run`` (or ``keeplb vrrp`` + ``keeplb lb`` when ``run``
is missing) with the very same files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from keeplb.errors import KeeplbError
from keeplb.lab import topology as topo
from keeplb.lab.backend import make_certs
from keeplb.lab.client import Attempt, parse_line
from keeplb.lab.netns import Host, Lab, LabError, cleanup_stale, list_labs
from keeplb.lab.report import Band, BandSummary, render_markdown, render_png, summarize

__all__ = ["SCENARIOS", "StartupError", "main"]

# Not "klb": a "klb" lab whose random id starts with "d" would look like ours.
PREFIX = "klbdm"
IMPLS = ("keeplb", "keepalived")
_STATE_RE = re.compile(r"\((?P<inst>[^)]+)\) Entering (?P<state>MASTER|BACKUP|FAULT) STATE")
_PRIO_RE = re.compile(r"[Cc]hanging effective priority from (?P<old>\d+) to (?P<new>\d+)")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


class StartupError(KeeplbError):
    """A balancer's daemon exited while the lab was starting."""


# ---------------------------------------------------------------------------
# one balancer host
@dataclass
class LbNode:
    """A balancer host: its files, processes and what the demo saw of it."""

    name: str
    host: Host
    files: topo.LbFiles
    impl: str
    run_mode: str  # "keepalived", "run" or "split"
    vrrp_proc: subprocess.Popen[Any] | None = None
    lb_proc: subprocess.Popen[Any] | None = None
    state: str = "INIT"
    priority: int = 0
    health: dict[str, str] = field(default_factory=dict)
    link_up: bool = True
    syslog: socket.socket | None = None
    _log_pos: int = 0

    @property
    def log_path(self) -> Path:
        return self.files.dir / ("keepalived.log" if self.impl == "keepalived" else "keeplb.log")

    @property
    def lb_log_path(self) -> Path:
        return self.files.dir / ("haproxy.log" if self.impl == "keepalived" else "keeplb-lb.log")

    def _env(self) -> dict[str, str]:
        # keeplb vrrp writes its state files to one default directory: give
        # each balancer its own, as the two share one filesystem.
        return {**os.environ, "KEEPLB_VRRP_STATE_DIR": str(self.files.dir)}

    def failed_at_start(self) -> str | None:
        """If the VRRP daemon (or `keeplb run`) already exited: why, from its log."""
        if self.vrrp_proc is None or self.vrrp_proc.poll() is None:
            return None
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-6:]
        except OSError:
            tail = []
        return f"exit status {self.vrrp_proc.returncode}: " + " | ".join(tail)

    def _logf(self, path: Path) -> IO[bytes]:
        return open(path, "ab")  # noqa: SIM115 - handed to the child, closed below

    def start(self) -> None:
        """Start the balancer, then VRRP (so the first check already passes)."""
        py = sys.executable
        if self.run_mode == "run":
            with self._logf(self.log_path) as f:
                self.vrrp_proc = self.host.popen(
                    [py, "-m", "keeplb", "run", "-f", str(self.files.haproxy_cfg),
                     "-k", str(self.files.keepalived_conf)],
                    stdout=f, stderr=subprocess.STDOUT, env=self._env(),
                )
            return
        self.start_balancer()
        if self.impl == "keepalived":
            d = self.files.dir
            argv = ["keepalived", "-n", "-l", "-G", "-D", "-P", "-f", str(self.files.keepalived_conf),
                    "-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid"),
                    "-c", str(d / "checkers.pid")]
        else:
            argv = [py, "-m", "keeplb", "vrrp", "-n", "-l", "-f", str(self.files.keepalived_conf),
                    "-p", str(self.files.dir / "keeplb-vrrp.pid")]
        with self._logf(self.log_path) as f:
            env = self._env() if self.impl == "keeplb" else None
            self.vrrp_proc = self.host.popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env)

    def start_balancer(self) -> None:
        """(Re)start the load balancer only."""
        with contextlib.suppress(FileNotFoundError):
            self.files.pidfile.unlink()
        if self.impl == "keepalived":
            # `daemon` in the config: haproxy forks, writes the pidfile, the parent exits.
            with self._logf(self.lb_log_path) as f:
                self.host.run(["haproxy", "-f", str(self.files.haproxy_cfg)], timeout=20,
                              capture_output=False, stdout=f, stderr=subprocess.STDOUT)
        elif self.run_mode == "split":
            with self._logf(self.lb_log_path) as f:
                self.lb_proc = self.host.popen(
                    [sys.executable, "-m", "keeplb", "lb", "-f", str(self.files.haproxy_cfg)],
                    stdout=f, stderr=subprocess.STDOUT, env=self._env(),
                )

    def balancer_pid(self) -> int | None:
        try:
            pid = int(self.files.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return pid

    def stop_balancer(self) -> bool:
        """Stop the load balancer process (from its pidfile).  True if one ran."""
        pid = self.balancer_pid()
        if pid is None and self.lb_proc is not None and self.lb_proc.poll() is None:
            pid = self.lb_proc.pid
        if pid is None:
            return False
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        if self.lb_proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.lb_proc.wait(timeout=1)
        return True

    def reload_vrrp(self, conf: Path) -> None:
        """Put ``conf`` in place of keepalived.conf and SIGHUP the VRRP daemon."""
        shutil.copyfile(conf, self.files.keepalived_conf)
        if self.vrrp_proc is not None and self.vrrp_proc.poll() is None:
            self.vrrp_proc.send_signal(signal.SIGHUP)

    def open_syslog(self) -> None:
        """Listen where the seed's ``log /dev/log`` points once chrooted: the
        balancer's alerts (``Server kube-apiserver/api1 is DOWN, ...``) come here."""
        with contextlib.suppress(FileNotFoundError):
            self.files.log_socket.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.files.log_socket))
        sock.setblocking(False)
        # The balancer writes after dropping to user haproxy.
        os.chmod(self.files.log_socket, 0o666)
        self.syslog = sock

    def syslog_messages(self) -> list[str]:
        """Messages received on the syslog socket since the last call."""
        out: list[str] = []
        while self.syslog is not None and len(out) < 200:
            try:
                data = self.syslog.recv(8192)
            except OSError:
                break
            text = data.decode(errors="replace").strip()
            # "<129>Nov 25 11:49:25 haproxy[42]: Server ... is DOWN, ..."
            out.append(text.split("]: ", 1)[-1])
        return out

    def new_log_lines(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_pos)
                data = f.read(1 << 20)
        except OSError:
            return []
        cut = data.rfind(b"\n") + 1
        self._log_pos += cut
        return data[:cut].decode(errors="replace").splitlines()

    def read_stats(self) -> dict[str, str]:
        """Server status per server of the first backend, from the stats socket
        (HAProxy runtime API ``show stat``); {} when it does not answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.files.stats_socket))
                s.sendall(b"show stat\n")
                buf = b""
                while len(buf) < 1 << 20:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError:
            return {}
        lines = buf.decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        cols = lines[0][2:].split(",")
        try:
            i_sv, i_st = cols.index("svname"), cols.index("status")
        except ValueError:
            return {}
        out: dict[str, str] = {}
        for line in lines[1:]:
            row = line.split(",")
            if len(row) > i_st and row[i_sv] in topo.BACKENDS:
                out[row[i_sv]] = row[i_st]
        return out


# ---------------------------------------------------------------------------
# the demo
class Demo:
    """Builds the lab, runs scenarios, samples what happens, writes the report."""

    def __init__(self, opts: argparse.Namespace, console: Console) -> None:
        self.opts = opts
        self.console = console
        self.out: Path = Path(opts.out).resolve()
        self.lab: Lab | None = None
        self.lbs: dict[str, LbNode] = {}
        self.backends: dict[str, tuple[Host, subprocess.Popen[Any] | None]] = {}
        self.client: Host | None = None
        self.client_proc: subprocess.Popen[Any] | None = None
        self.attempts: list[Attempt] = []
        self.samples: list[tuple[float, str]] = []
        self.events: deque[tuple[float, str]] = deque(maxlen=400)
        self.bands: list[Band] = []
        self.current = "setting up"
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.stop_evt = threading.Event()
        self.threads: list[threading.Thread] = []
        self.run_mode = "keepalived"
        self.cert: tuple[Path, Path, Path] | None = None

    # -- output -------------------------------------------------------------
    def rel(self, t: float) -> float:
        return t - self.t0

    def event(self, text: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.events.append((now, text))
        if self.opts.no_live:
            self.console.print(f"[{self.rel(now):7.2f}s] {text}", markup=False, highlight=False,
                               soft_wrap=True)

    def announce(self, text: str) -> None:
        self.event(f"== {text}")

    # -- build --------------------------------------------------------------
    def build(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        labdir = self.out / "lab"
        if labdir.exists():
            shutil.rmtree(labdir)
        labdir.mkdir()
        self.cert = make_certs(labdir / "tls", [topo.VIP, *topo.BACKENDS.values()])
        self.run_mode = "keepalived" if self.opts.impl == "keepalived" else self._keeplb_mode()
        lab = Lab(prefix=PREFIX, subnet=topo.SUBNET, keep=self.opts.keep)
        self.lab = lab
        for name, addr in topo.BACKENDS.items():
            self.backends[name] = (lab.add_host(name, f"{addr}/24"), None)
        for name, addr in topo.LBS.items():
            files = topo.write_lb_files(name, labdir)
            node = LbNode(name, lab.add_host(name, f"{addr}/24"), files, self.opts.impl,
                          self.run_mode, priority=topo.PRIORITIES[name])
            node.open_syslog()
            self.lbs[name] = node
        self.client = lab.add_host(*topo.CLIENT[:1], f"{topo.CLIENT[1]}/24")
        self.event(f"lab {lab.id}: namespaces {PREFIX}{lab.id}-*, files in {labdir}")
        for name in self.backends:
            self.start_backend(name)
        logs = [self.out / "lab" / f"{name}.log" for name in self.backends]
        self.wait_for(lambda: all(b"listening" in _read(p) for p in logs), 15, "the servers to listen")
        self.start_threads()
        self.event(f"impl {self.opts.impl} ({self.run_mode}); starting lb1, waiting for it to take the VIP")
        lb1 = self.lbs["lb1"]
        lb1.start()
        self.wait_for(lambda: self.holder() == "lb1" or lb1.failed_at_start() is not None, 20,
                      "lb1 to become master")
        self.lbs["lb2"].start()
        time.sleep(2)
        for node in self.lbs.values():
            why = node.failed_at_start()
            if why is not None:
                hint = "; try --impl keepalived" if self.opts.impl == "keeplb" else ""
                raise StartupError(f"{node.name}: {self.run_mode} stopped at startup ({why}); "
                                   f"log: {node.log_path}{hint}")

    def _keeplb_mode(self) -> str:
        res = subprocess.run([sys.executable, "-m", "keeplb", "run", "--help"],
                             capture_output=True, timeout=30, check=False)
        return "run" if res.returncode == 0 else "split"

    def start_backend(self, name: str) -> None:
        host, _ = self.backends[name]
        assert self.cert is not None
        _, cert, key = self.cert
        log = (self.out / "lab" / f"{name}.log").open("ab")
        with log:
            proc = host.popen([sys.executable, "-m", "keeplb.lab.backend", "--name", name,
                               "--cert", str(cert), "--key", str(key)],
                              stdout=log, stderr=subprocess.STDOUT)
        self.backends[name] = (host, proc)

    def stop_backend(self, name: str) -> None:
        host, proc = self.backends[name]
        if proc is not None:
            host.stop(proc)
        self.backends[name] = (host, None)

    # -- sampling -----------------------------------------------------------
    def holders(self) -> list[str]:
        with self.lock:
            h = self.samples[-1][1] if self.samples else "none"
        return [] if h == "none" else h.split("+")

    def holder(self) -> str:
        with self.lock:
            return self.samples[-1][1] if self.samples else "none"

    def _sampler(self) -> None:
        from pyroute2 import NetNS  # the sampler thread owns these handles

        handles: dict[str, Any] = {}
        try:
            for name, node in self.lbs.items():
                handles[name] = NetNS(node.host.netns)
            last_slow = 0.0
            while not self.stop_evt.is_set():
                now = time.monotonic()
                held = []
                for name, ns in handles.items():
                    if not self.lbs[name].link_up:
                        continue  # a host cut off the switch serves nobody
                    try:
                        addrs = {a.get_attr("IFA_ADDRESS") for a in ns.get_addr(family=socket.AF_INET)}
                    except Exception:  # noqa: BLE001 - a dying namespace; next sample decides
                        continue
                    if topo.VIP in addrs:
                        held.append(name)
                h = "+".join(held) or "none"
                with self.lock:
                    changed = not self.samples or self.samples[-1][1] != h
                    self.samples.append((now, h))
                if changed:
                    self.event(f"VIP {topo.VIP} now on {h}")
                if now - last_slow >= 0.5:
                    last_slow = now
                    self._poll_lbs()
                self.stop_evt.wait(0.05)
        finally:
            for ns in handles.values():
                with contextlib.suppress(Exception):
                    ns.close()

    def _poll_lbs(self) -> None:
        for node in self.lbs.values():
            for msg in node.syslog_messages():
                self.event(f"{node.name} log: {msg[:160]}")
            for line in node.new_log_lines():
                m = _STATE_RE.search(line)
                if m and m["state"] != node.state:
                    node.state = m["state"]
                    self.event(f"{node.name}: ({m['inst']}) Entering {m['state']} STATE")
                m = _PRIO_RE.search(line)
                if m:
                    node.priority = int(m["new"])
                    self.event(f"{node.name}: effective priority {m['old']} -> {m['new']}")
            health = node.read_stats()
            if not health:
                continue  # a busy or restarting socket; keep what we knew
            for srv, st in health.items():
                old = node.health.get(srv)
                if old is not None and old.split()[0] != st.split()[0]:
                    self.event(f"{node.name} sees {srv} {st}")
            node.health = health

    def _client_reader(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            a = parse_line(line)
            if a is not None:
                with self.lock:
                    self.attempts.append(a)

    def start_threads(self) -> None:
        for target in (self._sampler,):
            th = threading.Thread(target=target, daemon=True, name=target.__name__)
            th.start()
            self.threads.append(th)

    def start_client(self, duration: float) -> None:
        assert self.client is not None and self.cert is not None
        self.client_proc = self.client.popen(
            [sys.executable, "-m", "keeplb.lab.client", f"{topo.VIP}:{topo.PORT}",
             "--ca", str(self.cert[0]), "--interval", "0.01", "--duration", str(duration)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        th = threading.Thread(target=self._client_reader, args=(self.client_proc,), daemon=True)
        th.start()
        self.threads.append(th)
        self.wait_for(lambda: any(a.ok for a in self.attempts[-50:]), 15, "the client's first answer")
        with self.lock:
            self.t0 = self.attempts[0].t if self.attempts else time.monotonic()

    def stop_client(self) -> None:
        if self.client_proc is not None and self.client is not None:
            self.client.stop(self.client_proc, grace=4)
        for th in self.threads:
            if th.name != "_sampler":
                th.join(timeout=3)
        if self.client_proc is not None and self.client_proc.stdout is not None:
            self.client_proc.stdout.close()

    # -- helpers for scenarios ----------------------------------------------
    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        self.event(f"gave up waiting {timeout:.0f}s for {what}")
        return False

    def master(self) -> LbNode:
        hs = self.holders()
        return self.lbs[hs[0]] if hs else self.lbs["lb1"]

    def other(self, node: LbNode) -> LbNode:
        return next(n for n in self.lbs.values() if n is not node)

    @contextlib.contextmanager
    def band(self, name: str) -> Iterator[Band]:
        b = Band(name, time.monotonic())
        with self.lock:
            self.bands.append(b)
            self.current = name
        try:
            yield b
        finally:
            b.end = b.end or time.monotonic()

    def restore(self) -> None:
        """Bring back whatever a previous scenario left broken."""
        assert self.lab is not None
        todo = [n for n in self.lbs.values() if not n.link_up]
        self.lab.heal()
        for node in todo:
            self.event(f"restore: link up on {node.name}")
            node.host.link_up()
            node.link_up = True
        for node in self.lbs.values():
            if node.run_mode != "run" and node.balancer_pid() is None:
                self.event(f"restore: starting the balancer on {node.name}")
                node.start_balancer()
        for name, (_, proc) in self.backends.items():
            if proc is None or proc.poll() is not None:
                self.start_backend(name)
        if todo:
            time.sleep(5)

    def crash(self, node: LbNode) -> None:
        node.host.link_down()
        node.link_up = False
        self.event(f"{node.name}: link down (crash)")

    def comeback(self, node: LbNode) -> None:
        node.host.link_up()
        node.link_up = True
        self.event(f"{node.name}: link up (comeback)")

    # -- the live view ------------------------------------------------------
    def render(self) -> Group:
        now = time.monotonic()
        with self.lock:
            # Attempts are recorded when they finish: look at the second that
            # ended 0.5 s ago, when nearly all of its attempts have finished.
            last = [a for a in self.attempts[-600:] if now - 1.5 <= a.t < now - 0.5]
            events = list(self.events)[-8:]
            total = len(self.attempts)
            failed = sum(not a.ok for a in self.attempts)
            current = self.current
        tbl = Table(title=f"keeplb demo ({self.opts.impl}) - scenario: {current}", expand=False)
        for col in ("host", "VIP", "VRRP", "prio", "balancer", *topo.BACKENDS):
            tbl.add_column(col)
        held = self.holders()
        for node in self.lbs.values():
            vip = Text("VIP", style="bold green") if node.name in held else Text("-")
            link = "" if node.link_up else " (link down)"
            bal = "up" if node.balancer_pid() or (node.lb_proc and node.lb_proc.poll() is None) else "down"
            cells = [node.health.get(s, "?") for s in topo.BACKENDS]
            tbl.add_row(node.name + link, vip, node.state, str(node.priority or "?"), bal,
                        *[Text(c, style="green" if c.startswith("UP") else "red") for c in cells])
        client = Text(
            f"client: {sum(a.ok for a in last)} ok/s   failed/s: {sum(not a.ok for a in last)}   "
            f"total {total} attempts, {failed} failed"
        )
        ev = Text("\n".join(f"{self.rel(t):7.2f}s  {e}" for t, e in events))
        return Group(tbl, client, ev)

    # -- scenarios ----------------------------------------------------------
    def run_scenarios(self, names: list[str]) -> None:
        for name in names:
            if name not in ("comeback", "comeback-nopreempt"):
                self.restore()
            desc, fn = SCENARIOS[name]
            with self.band(name) as b:
                self.announce(f"scenario {name}: {desc}")
                fn(self, b)
                time.sleep(1)


def _steady(d: Demo, b: Band) -> None:
    time.sleep(5)


def _backend_dies(d: Demo, b: Band) -> None:
    d.stop_backend("api1")
    d.event("api1: server stopped")
    # inter 10s fall 2: haproxy needs up to ~20 s to mark it DOWN.
    d.wait_for(lambda: all(n.health.get("api1", "").startswith("DOWN") for n in d.lbs.values()),
               35, "both balancers to mark api1 DOWN")
    d.start_backend("api1")
    d.event("api1: server restarted")
    d.wait_for(lambda: all(n.health.get("api1", "").startswith("UP") and "/" not in n.health["api1"]
                           for n in d.lbs.values()), 35, "both balancers to mark api1 UP")


def _lb_stops(d: Demo, b: Band) -> None:
    m = d.master()
    b.note = f"stopped balancer on {m.name}"
    if not m.stop_balancer():
        d.event(f"{m.name}: no balancer process found")
    d.event(f"{m.name}: balancer stopped")
    d.wait_for(lambda: d.holder() == d.other(m).name, 15, "the VIP to move")
    time.sleep(2)
    if m.run_mode != "run":
        m.start_balancer()
        d.event(f"{m.name}: balancer started again")
    time.sleep(5)


def _crash(d: Demo, b: Band) -> None:
    m = d.master()
    b.note = f"{m.name} link down"
    d.crash(m)
    d.wait_for(lambda: d.holder() == d.other(m).name, 15, "the VIP to move")
    time.sleep(3)


def _comeback(d: Demo, b: Band) -> None:
    down = [n for n in d.lbs.values() if not n.link_up]
    if not down:
        m = d.master()
        d.crash(m)
        d.wait_for(lambda: d.holder() == d.other(m).name, 15, "the VIP to move")
        time.sleep(2)
        down = [m]
    b.note = f"{down[0].name} back, preempt"
    d.comeback(down[0])
    time.sleep(7)


def _comeback_nopreempt(d: Demo, b: Band) -> None:
    for n in d.lbs.values():
        n.reload_vrrp(n.files.keepalived_nopreempt)
    d.event("both: reloaded with nopreempt")
    time.sleep(2)
    down = [n for n in d.lbs.values() if not n.link_up]
    if not down:
        m = d.master()
        d.crash(m)
        d.wait_for(lambda: d.holder() == d.other(m).name, 15, "the VIP to move")
        time.sleep(2)
        down = [m]
    b.note = f"{down[0].name} back, nopreempt"
    d.comeback(down[0])
    time.sleep(7)
    # The band ends here: putting preemption back moves the VIP again, and
    # that move belongs to no scenario.
    b.end = time.monotonic()
    for n in d.lbs.values():
        conf = n.files.dir / "keepalived.conf"
        conf.write_text(topo.render_keepalived(n.name, n.files.dir), encoding="utf-8")
        if n.vrrp_proc is not None and n.vrrp_proc.poll() is None:
            n.vrrp_proc.send_signal(signal.SIGHUP)
    d.event("both: reloaded with the original (preempting) config")
    # lb1's higher priority takes the VIP back now that preemption is on again.
    d.wait_for(lambda: d.holder() == "lb1", 8, "lb1 to preempt after the reload")


def _partition(d: Demo, b: Band) -> None:
    assert d.lab is not None
    d.lab.partition([d.lbs["lb1"].host], [d.lbs["lb2"].host])
    d.event("lb1 | lb2 partitioned (both still reach clients and backends)")
    d.wait_for(lambda: len(d.holders()) == 2, 10, "both to claim the VIP")
    time.sleep(3)
    d.lab.heal()
    d.event("partition healed")
    d.wait_for(lambda: len(d.holders()) == 1, 10, "one master again")
    time.sleep(4)


SCENARIOS: dict[str, tuple[str, Callable[[Demo, Band], None]]] = {
    "steady": ("nothing breaks for 5 s", _steady),
    "backend-dies": ("stop api1's server, then start it again", _backend_dies),
    "lb-stops": ("stop the balancer process on the master", _lb_stops),
    "crash": ("the master's link goes down", _crash),
    "comeback": ("the crashed host's link comes back (preemption on)", _comeback),
    "comeback-nopreempt": ("same, with nopreempt: the VIP stays where it is", _comeback_nopreempt),
    "partition": ("lb1 and lb2 cannot see each other, then heal", _partition),
}
_BUDGET = {"steady": 8, "backend-dies": 80, "lb-stops": 40, "crash": 30, "comeback": 40,
           "comeback-nopreempt": 70, "partition": 40}


# ---------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keeplb demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", help="'shell HOST' opens a shell in a kept lab's host")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                   help="run only these (repeatable); default: all, in order")
    p.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    p.add_argument("--impl", choices=IMPLS, default="keeplb")
    p.add_argument("--clean", action="store_true", help="remove labs left behind, then exit")
    p.add_argument("--out", default="demo-out", help="directory for configs and the report")
    return p


def _shell(host: str, console: Console) -> int:
    labs = [lab for lab in list_labs(PREFIX) if host in lab.get("hosts", {})]
    if not labs:
        console.print("no kept demo lab; run `keeplb demo --keep` first")
        return 1
    ns = labs[-1]["hosts"][host]["netns"]
    shell = os.environ.get("SHELL", "/bin/sh")
    console.print(f"entering {ns} (exit to leave)")
    return subprocess.call(["ip", "netns", "exec", ns, shell])


def _summary_table(rows: list[BandSummary]) -> Table:
    t = Table(title="summary")
    for col in ("scenario", "failed", "longest gap (ms)", "VIP before", "VIP after", "moved after (s)", "note"):
        t.add_column(col)
    for s in rows:
        t.add_row(s.name, str(s.failed), f"{s.longest_gap_ms:.0f}", s.master_start, s.master_end,
                  "" if s.moved_at is None else f"{s.moved_at:.2f}", s.note)
    return t


def _write_report(d: Demo) -> Path:
    with d.lock:
        attempts = list(d.attempts)
        samples = list(d.samples)
    summaries = summarize(d.bands, attempts, samples)
    diffs: dict[str, str] = {}
    lb1 = d.lbs.get("lb1")
    if lb1 is not None:
        diffs["lb1/haproxy.cfg"] = topo.seed_diff(lb1.files.haproxy_cfg.read_text(encoding="utf-8"),
                                                  topo.SEED_HAPROXY_CFG, "haproxy.cfg")
        diffs["lb1/keepalived.conf"] = topo.seed_diff(
            lb1.files.keepalived_conf.read_text(encoding="utf-8"), topo.SEED_KEEPALIVED_CONF,
            "keepalived.conf")
    png: Path | None = d.out / "timeline.png"
    try:
        assert png is not None
        render_png(png, d.t0, d.bands, attempts, samples, f"keeplb demo, impl {d.opts.impl}")
    except ImportError:
        png = None
    totals = {"attempts": len(attempts), "failed": sum(not a.ok for a in attempts)}
    md = d.out / "report.md"
    md.write_text(render_markdown(summaries, impl=d.opts.impl, png=png, diffs=diffs, totals=totals),
                  encoding="utf-8")
    (d.out / "summary.json").write_text(json.dumps(
        {"impl": d.opts.impl, "mode": d.run_mode, "totals": totals,
         "lab_id": d.lab.id if d.lab is not None else None,
         "scenarios": [s.as_dict() for s in summaries],
         "events": [(round(d.rel(t), 3), e) for t, e in d.events]}, indent=1))
    with (d.out / "client.jsonl").open("w") as f:
        for a in attempts:
            f.write(json.dumps({"t": round(a.t - d.t0, 4), "d": a.d, "ok": a.ok, "srv": a.srv, "err": a.err}) + "\n")
    d.console.print(_summary_table(summaries))
    return md


def main(argv: list[str]) -> int:
    """Entry point of ``keeplb demo``.  Returns the exit status."""
    opts = _parser().parse_args(argv)
    console = Console(force_terminal=None if not opts.no_live else False, highlight=False)
    if opts.no_live and not console.is_terminal:
        console.width = max(console.width, 132)  # pipes get 80 columns: too narrow for the table
    if os.geteuid() != 0:
        console.print("keeplb demo needs root: it creates network namespaces, veth pairs and a "
                      "bridge (try: sudo keeplb demo).")
        return 1
    if shutil.which("ip") is None:
        console.print("keeplb demo needs iproute2 (the `ip` command).")
        return 1
    if opts.clean:
        removed = cleanup_stale(PREFIX, include_kept=True)
        console.print(f"removed {len(removed)} namespaces" + (": " + " ".join(removed) if removed else ""))
        return 0
    if opts.what:
        if opts.what[0] == "shell" and len(opts.what) == 2:
            return _shell(opts.what[1], console)
        console.print("usage: keeplb demo [options] | keeplb demo shell HOST")
        return 2
    if opts.impl == "keepalived":
        missing = [b for b in ("keepalived", "haproxy") if shutil.which(b) is None]
        if missing:
            console.print(f"--impl keepalived needs {' and '.join(missing)} installed")
            return 1
    names = opts.scenario or list(SCENARIOS)
    demo = Demo(opts, console)
    owner = os.getpid()

    def on_term(signum: int, frame: object) -> None:
        # pyroute2's forked helpers inherit this handler; they must just go.
        if os.getpid() != owner:
            os._exit(1)
        raise KeyboardInterrupt

    # SIGTERM gets the same clean teardown as Ctrl-C; SIGINT is set too since
    # a shell starts background jobs with it ignored.
    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(signal.SIGINT, on_term)
    live: Live | None = None
    try:
        demo.build()
        demo.start_client(sum(_BUDGET[n] for n in names) + 30)
        if not opts.no_live:
            live = Live(get_renderable=demo.render, console=console, refresh_per_second=4,
                        transient=False)
            live.start()
        demo.run_scenarios(names)
    except KeyboardInterrupt:
        if os.getpid() != owner:
            os._exit(130)
        console.print("interrupted: removing the lab")
        return 130
    except LabError as exc:
        console.print(f"keeplb demo: {exc}", markup=False)
        return 1
    except StartupError as exc:
        console.print(f"keeplb demo: {exc}", markup=False, soft_wrap=True)
        return 3
    finally:
        if live is not None:
            live.stop()
        demo.stop_client()
        demo.stop_evt.set()
        for th in demo.threads:
            th.join(timeout=3)
        for node in demo.lbs.values():
            if node.syslog is not None:
                node.syslog.close()
        if demo.lab is not None:
            demo.lab.close()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    md = _write_report(demo)
    console.print(f"configs: {demo.out / 'lab' / 'lb1'} and {demo.out / 'lab' / 'lb2'}")
    console.print(f"report: {md}  timeline: {demo.out / 'timeline.png'}")
    if opts.keep and demo.lab is not None:
        console.print("lab kept: `keeplb demo shell lb1`; remove with `keeplb demo --clean`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
