"""Shared pieces of the failover benches: a lab of two balancers, one
backend and one client, the configs they run, and the measurements.

Every address is inside the lab's private bridge (10.77.0.0/24); every wait
is bounded; the caller owns the :class:`Testbed` as a context manager, and
closing it stops every process and removes every namespace, also after an
exception or Ctrl-C.

Measures, for one failover:

* ``vip_move``: seconds from the fault to the moment the other balancer
  holds the virtual address (polled over netlink every 10 ms);
* ``gap``: the longest time between two *successful* client connections
  (a new connection to VIP:6443 every 10 ms, each under a 0.9 s deadline so
  that a retransmitted SYN never hides an outage), counted by completion time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pyroute2 import NetNS
from pyroute2.netlink.exceptions import NetlinkError

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from keeplb.lab.client import Attempt, parse_line  # noqa: E402
from keeplb.lab.netns import Host, Lab, LabError  # noqa: E402
from keeplb.lab.poll import wait_for  # noqa: E402,F401  (the benches import it from here)

__all__ = [
    "BACKENDS",
    "CHECK_SCRIPT",
    "CLIENT",
    "KEEPALIVED",
    "HAPROXY",
    "LBS",
    "PORT",
    "PY",
    "Proc",
    "VIP",
    "Attempt",
    "LabError",
    "Testbed",
    "Vrrp",
    "fmt_s",
    "haproxy_cfg",
    "keepalived_conf",
    "keeplb_works",
    "longest_gap",
    "ratio",
    "seed_haproxy_cfg",
    "wait_for",
    "write_check_script",
]

PY = sys.executable
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
LBS: dict[str, str] = {"lb1": "10.77.0.2", "lb2": "10.77.0.3"}
BACKENDS: dict[str, str] = {"api1": "10.77.0.4", "api2": "10.77.0.5"}
CLIENT = ("client", "10.77.0.100")
VIP = "10.77.0.10"
PORT = 6443
ENV = dict(os.environ, PYTHONPATH=str(REPO))

CLIENT_INTERVAL_S = 0.01
# Below the first SYN retransmission (1 s): an attempt that started before the
# address moved must fail rather than succeed late and shorten the gap.
CLIENT_TIMEOUT_S = 0.9




def keeplb_works(sub: str) -> str | None:
    """None when ``keeplb <sub> --help`` runs here, else why not."""
    try:
        res = subprocess.run([PY, "-m", "keeplb", sub, "--help"], capture_output=True,
                             text=True, timeout=30, env=ENV, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"keeplb {sub} --help: {exc}"
    if res.returncode != 0:
        return f"keeplb {sub} --help exited {res.returncode}: {(res.stderr or res.stdout).strip()[-200:]}"
    return None


@dataclass(frozen=True)
class Vrrp:
    """The VRRP settings a case runs with."""

    version: int = 2
    advert_int: float = 1.0
    multicast: bool = False

    @property
    def label(self) -> str:
        return f"v{self.version} advert_int {self.advert_int:g}{' mcast' if self.multicast else ''}"


def keepalived_conf(
    lb: str,
    vrrp: Vrrp,
    *,
    priority: int,
    state: str = "BACKUP",
    script: str | None = None,
    script_interval: float = 1.0,
    weight: int = 2,
    extra: str = "",
) -> str:
    """keepalived.conf for balancer ``lb``, in the seed's shape (unicast peers,
    PASS auth for v2, track_script with a weight), moved to lab addresses.
    ``script`` is the check command (None: no vrrp_script)."""
    me = LBS[lb]
    peers = [a for n, a in LBS.items() if n != lb]
    out = [
        "global_defs {",
        f"  router_id {lb}",
        "  enable_script_security",
        "  script_user root",
        "  vrrp_skip_check_adv_addr",
        # The seed's `vrrp_garp_interval 0` / `vrrp_gna_interval 0` are config
        # errors for keepalived 2.2.7 (range starts at 0.000001) that it ignores
        # when running; keeplb refuses them, so they are left out for both.
        "}",
    ]
    if script is not None:
        out += [
            "vrrp_script chk {",
            f'  script "{script}"',
            f"  interval {script_interval:g}",
            f"  weight {weight}",
            "  rise 1",
            "  fall 1",
            "}",
        ]
    out += [
        "vrrp_instance haproxy-vip {",
        f"  state {state}",
        f"  priority {priority}",
        "  interface eth0",
        "  virtual_router_id 60",
        f"  advert_int {vrrp.advert_int:g}",
        f"  version {vrrp.version}",
    ]
    if vrrp.version == 2:
        out += ["  authentication {", "    auth_type PASS", "    auth_pass 1111", "  }"]
    if not vrrp.multicast:
        out += [f"  unicast_src_ip {me}", "  unicast_peer {", *[f"    {p}" for p in peers], "  }"]
    out += ["  virtual_ipaddress {", f"    {VIP}/24", "  }"]
    if script is not None:
        out += ["  track_script {", "    chk", "  }"]
    if extra:
        out.append(extra)
    out.append("}")
    return "\n".join(out) + "\n"


def haproxy_cfg(workdir: Path, backends: dict[str, str], *, daemon: bool = False,
                inter: str = "1s", rise: int = 1, fall: int = 1) -> str:
    """A TCP forwarder VIP:6443 -> ``backends``, with checks, pidfile in ``workdir``."""
    lines = [
        "global",
        "    maxconn 4000",
        f"    pidfile {workdir / 'haproxy.pid'}",
        f"    stats socket {workdir / 'haproxy.sock'} level admin",
    ]
    if daemon:
        lines.append("    daemon")
    lines += [
        "defaults",
        "    mode tcp",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "frontend kube-apiserver",
        f"    bind *:{PORT}",
        "    default_backend kube-apiserver",
        "backend kube-apiserver",
        "    balance roundrobin",
        "    option tcp-check",
        f"    default-server inter {inter} rise {rise} fall {fall}",
    ]
    lines += [f"    server {n} {a}:{PORT} check" for n, a in backends.items()]
    return "\n".join(lines) + "\n"


CHECK_SCRIPT = """\
#!/bin/sh
# The seed's check is `killall -0 haproxy`.  Network namespaces share one PID
# namespace, so killall would see the other balancer's haproxy too; this is
# the per-namespace equivalent: is *this host's* balancer (its pidfile) alive?
pid=$(cat {pidfile} 2>/dev/null) || exit 1
[ -n "$pid" ] && kill -0 $pid 2>/dev/null
"""


def write_check_script(d: Path) -> Path:
    """The seed's chk_haproxy, per namespace, for the balancer whose pidfile is ``d/haproxy.pid``."""
    path = d / "chk_haproxy.sh"
    path.write_text(CHECK_SCRIPT.format(pidfile=d / "haproxy.pid"))
    # keepalived's script security refuses scripts writable by anyone but root.
    path.chmod(0o755)
    return path


def seed_haproxy_cfg(d: Path, *, inter: str = "1s", downinter: str = "1s") -> str:
    """The seed's haproxy.cfg moved into the lab (keeplb.lab.topology), with
    runtime files in ``d``.  Only the check timers change (seed: inter 10s
    downinter 5s), so that a dead backend is seen in ~2 s, not ~20 s."""
    from keeplb.lab.topology import render_haproxy

    (d / "chroot" / "dev").mkdir(parents=True, exist_ok=True)
    text = render_haproxy(d)
    return text.replace("inter 10s downinter 5s", f"inter {inter} downinter {downinter}")


def longest_gap(attempts: list[Attempt], start: float, end: float) -> tuple[float, bool]:
    """Longest time between two successful connections (by completion time)
    within [start, end]; the bool says whether the client was served again
    before ``end`` (if not, the gap runs to ``end``)."""
    done = sorted(a.t + a.d for a in attempts if a.ok and start <= a.t + a.d <= end)
    if not done:
        return end - start, False
    gap = max((b - a for a, b in zip(done, done[1:], strict=False)), default=0.0)
    tail = end - done[-1]
    # A tail longer than a few client periods means service never came back.
    recovered = tail < 0.5
    return max(gap, done[0] - start, tail if not recovered else 0.0), recovered


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    return f"{a / b:.2f}"


@dataclass
class Proc:
    """A process started in a lab host, with its log file."""

    host: Host
    popen: subprocess.Popen[Any]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Testbed:
    """Two balancers, backends and a client on one lab switch.

    ``root`` holds each host's files (configs, logs, pidfiles); it is a fresh
    temporary directory unless given, and is removed on close unless ``keep``.
    """

    __test__ = False  # not a pytest test class, despite the name

    root: Path | None = None
    keep: bool = False
    backends: dict[str, str] = field(default_factory=lambda: dict(BACKENDS))
    lab: Lab = field(init=False)
    hosts: dict[str, Host] = field(init=False, default_factory=dict)
    _ns: dict[str, NetNS] = field(init=False, default_factory=dict)
    _attempts: list[Attempt] = field(init=False, default_factory=list)
    _client: subprocess.Popen[str] | None = field(init=False, default=None)
    _reader: threading.Thread | None = field(init=False, default=None)
    _own_root: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="keeplb-failover-"))
            self._own_root = True
        self.root.mkdir(parents=True, exist_ok=True)
        self.lab = Lab(prefix="klb", subnet="10.77.0.0/24")
        try:
            for name, addr in LBS.items():
                self.hosts[name] = self.lab.add_host(name, f"{addr}/24")
                self._ns[name] = NetNS(self.hosts[name].netns)
            for name, addr in self.backends.items():
                self.hosts[name] = self.lab.add_host(name, f"{addr}/24")
            self.hosts[CLIENT[0]] = self.lab.add_host(CLIENT[0], f"{CLIENT[1]}/24")
        except BaseException:
            self.close()
            raise

    # -- files and processes -------------------------------------------------
    def dir(self, name: str) -> Path:
        assert self.root is not None
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(self, host: str, argv: list[str], log_name: str, *, env: dict[str, str] | None = None) -> Proc:
        """Start ``argv`` in ``host``; stdout and stderr go to ``host/log_name``."""
        log = self.dir(host) / log_name
        with open(log, "ab") as f:
            p = self.hosts[host].popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env or ENV)
        return Proc(self.hosts[host], p, log)

    def stop(self, proc: Proc, grace: float = 3.0) -> None:
        proc.host.stop(proc.popen, grace=grace)

    def start_backends(self) -> dict[str, Proc]:
        return {n: self.start(n, [PY, "-m", "keeplb.lab.backend", "--name", n], "backend.log")
                for n in self.backends}

    def wait_listening(self, host: str, port: int = PORT, timeout: float = 5.0) -> bool:
        """Whether something in ``host`` listens on TCP ``port`` within ``timeout``."""
        def listening() -> bool:
            out = self.hosts[host].run(["ss", "-Htln", f"sport = :{port}"], timeout=5).stdout
            return bool(out.strip())

        return wait_for(listening, timeout, 0.1)

    def start_vrrp(self, impl: str, lb: str, conf_text: str) -> Proc:
        """keepalived (``impl='keepalived'``) or ``keeplb vrrp`` in ``lb``."""
        d = self.dir(lb)
        conf = d / f"{impl}.conf"
        conf.write_text(conf_text)
        if impl == "keepalived":
            argv = [KEEPALIVED, "-n", "-l", "-D", "--vrrp", "-f", str(conf),
                    "-p", str(d / "ka.pid"), "-r", str(d / "ka-vrrp.pid"), "-c", str(d / "ka-chk.pid")]
            return self.start(lb, argv, "keepalived.log")
        env = dict(ENV, KEEPLB_VRRP_STATE_DIR=str(d))
        argv = [PY, "-m", "keeplb", "vrrp", "-n", "-l", "-f", str(conf), "-p", str(d / "keeplb-vrrp.pid")]
        return self.start(lb, argv, "keeplb-vrrp.log", env=env)

    def start_haproxy(self, lb: str, backends: dict[str, str] | None = None) -> Proc:
        d = self.dir(lb)
        cfg = d / "haproxy.cfg"
        cfg.write_text(haproxy_cfg(d, backends if backends is not None else self.backends))
        return self.start(lb, [HAPROXY, "-db", "-f", str(cfg)], "haproxy.log")

    def isolate(self, names: list[str]) -> None:
        """Bridge-port isolation for these hosts: they no longer reach each
        other, but every one of them still reaches all the other hosts (e.g.
        lb1 + the backends: only lb1 loses its servers; VRRP and the client
        still reach lb1, and lb2 still reaches the servers)."""
        with NetNS(self.lab.switch_ns) as sw:
            for n in names:
                idx = sw.link_lookup(ifname=self.hosts[n].port)[0]
                sw.brport("set", index=idx, isolated=1)

    # -- observing -----------------------------------------------------------
    def holders(self) -> list[str]:
        """The balancers whose eth0 carries the VIP now."""
        out = []
        for name, ns in self._ns.items():
            try:
                idx = ns.link_lookup(ifname="eth0")
                addrs = ns.get_addr(index=idx[0]) if idx else []
            except (NetlinkError, OSError):
                continue
            if any(a.get_attr("IFA_ADDRESS") == VIP for a in addrs):
                out.append(name)
        return out

    def start_client(self, max_duration: float = 20.0) -> None:
        """Start the client: a new connection to VIP:6443 every 10 ms, for at
        most ``max_duration`` seconds (``stop_client`` ends it earlier)."""
        self._attempts = []
        argv = [PY, "-m", "keeplb.lab.client", f"{VIP}:{PORT}", "--interval", str(CLIENT_INTERVAL_S),
                "--duration", str(max_duration), "--timeout", str(CLIENT_TIMEOUT_S)]
        p: subprocess.Popen[str] = self.hosts[CLIENT[0]].popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        self._client = p

        def read(out: IO[str]) -> None:
            for line in out:
                a = parse_line(line)
                if a is not None:
                    self._attempts.append(a)

        assert p.stdout is not None
        self._reader = threading.Thread(target=read, args=(p.stdout,), daemon=True)
        self._reader.start()

    def start_client_before_fault(self) -> float | None:
        """Start the client and let it run 1 s once it is served; returns when it
        started, or None (client stopped) when VIP:6443 never answered within 3 s."""
        self.start_client()
        t0 = time.monotonic()
        if not wait_for(lambda: self.client_ok_since(t0), 3.0, 0.01):
            self.stop_client()
            return None
        time.sleep(1.0)
        return t0

    def client_ok_since(self, t: float) -> bool:
        """Whether a connection started after ``t`` has succeeded."""
        return any(a.ok and a.t >= t for a in list(self._attempts))

    def stop_client(self) -> list[Attempt]:
        client = self._client
        if client is not None:
            self.hosts[CLIENT[0]].stop(client, grace=3)
            self._client = None
        if self._reader is not None:
            self._reader.join(timeout=3)
            self._reader = None
        if client is not None and client.stdout is not None:
            client.stdout.close()
        return list(self._attempts)

    # -- teardown ------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_client()
        for ns in self._ns.values():
            with contextlib.suppress(Exception):
                ns.close()
        self._ns.clear()
        self.lab.close()
        if self._own_root and not self.keep and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

