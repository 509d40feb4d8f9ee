"""A throw-away network of namespaces on one machine: one switch, N hosts.

``Lab`` makes a *switch* namespace holding a Linux bridge and, per host, a
namespace ``{prefix}{id}-{name}`` with a veth ``eth0`` whose peer is a port of
that bridge.  Links and addresses go through pyroute2 (netlink); processes
are started with ``ip netns exec`` in their own session so that a whole
process tree can be signalled, and everything still alive in a lab namespace
is killed when the lab closes (``ip netns pids`` finds daemons that detached
from their session, e.g. ``haproxy -D`` or keepalived).

A small state file per lab under ``/run/keeplb-lab/`` records the owner PID,
so :func:`cleanup_stale` removes only labs whose owner is gone (or that were
kept on purpose) and never a lab another process is still using.

Example::

    with Lab() as lab:
        a = lab.add_host("a", "10.77.0.1/24")
        b = lab.add_host("b", "10.77.0.2/24")
        assert a.run(["ping", "-c1", "-W1", "10.77.0.2"]).returncode == 0
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from keeplb.errors import KeeplbError
from keeplb.proc.pidfile import pid_alive

__all__ = ["Host", "Lab", "LabError", "cleanup_stale", "list_labs", "STATE_DIR"]

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/keeplb-lab")
_BRIDGE = "br0"
_BRIDGE_B = "br1"  # the far side of a partition between groups larger than one host
_ID_RE = r"[0-9a-f]{6}"


class LabError(KeeplbError):
    """The lab could not be built (not root, no iproute2, netlink refused)."""


def _ns_exists(name: str) -> bool:
    return name in netns.listnetns()


def _ns_pids(name: str) -> list[int]:
    """PIDs of every process whose network namespace is ``name``."""
    try:
        out = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_ns_processes(name: str, grace: float = 2.0) -> None:
    """SIGTERM everything in namespace ``name``, then SIGKILL what is left."""
    pids = _ns_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = _ns_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _remove_ns(name: str) -> None:
    if not _ns_exists(name):
        return
    _kill_ns_processes(name)
    try:
        netns.remove(name)
    except OSError as exc:
        log.warning("could not remove namespace %s: %s", name, exc)


@dataclass
class Host:
    """One namespace on the lab's switch.  Made by :meth:`Lab.add_host` only."""

    lab: Lab
    name: str
    netns: str
    addr_cidr: str
    port: str  # the switch-side veth, in the switch namespace
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def addr(self) -> str:
        """The host's primary address without prefix length."""
        return self.addr_cidr.split("/", 1)[0]

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this host, in a new session (its own process
        group), tracked so that :meth:`Lab.close` stops it.  ``kw`` goes to
        :class:`subprocess.Popen` (``stdout``, ``env``, ``cwd``...)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(self._argv(argv), **kw)
        self.procs.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], timeout: float = 30.0, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host to completion; output captured as text.
        Raises :class:`subprocess.TimeoutExpired` after ``timeout`` seconds."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self._argv(argv), timeout=timeout, check=False, **kw)

    def ping(self, addr: str, timeout: float = 1.0) -> bool:
        """Send one ICMP echo request from this host to ``addr`` (IPv4) and
        wait up to ``timeout`` seconds for the reply.  Needs no ``ping``
        binary (Debian's minimal images lack iputils)."""
        code = _PING_SRC.format(addr=addr, timeout=float(timeout))
        try:
            res = self.run([sys.executable, "-c", code], timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def stop(self, proc: subprocess.Popen[Any], grace: float = 3.0) -> int | None:
        """Stop one process started by :meth:`popen` (its whole process group):
        SIGTERM, then SIGKILL after ``grace`` seconds.  Returns its exit code."""
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            try:
                return proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                return None
        finally:
            with contextlib.suppress(ValueError):
                self.procs.remove(proc)

    def link_down(self) -> None:
        """Set the switch-side port down: to everyone else the host is gone,
        and its ``eth0`` loses carrier, as after a crash or a cable pull."""
        self.lab._set_port(self.port, up=False)

    def link_up(self) -> None:
        """Undo :meth:`link_down`."""
        self.lab._set_port(self.port, up=True)

    def addresses(self, ifname: str = "eth0") -> list[str]:
        """IPv4 and IPv6 addresses (CIDR form) on ``ifname`` in this host, now."""
        try:
            with NetNS(self.netns) as ns:
                idx = ns.link_lookup(ifname=ifname)
                if not idx:
                    return []
                return [
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                    for a in ns.get_addr(index=idx[0])
                ]
        except (NetlinkError, OSError):
            return []


_PING_SRC = """
import os, socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
ident = os.getpid() & 0xffff
hdr = struct.pack('!BBHHH', 8, 0, 0, ident, 1) + b'keeplb-lab-ping'
pkt = hdr[:2] + struct.pack('!H', csum(hdr + b'\\0')) + hdr[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(pkt, ('{addr}', 0))
end = time.monotonic() + {timeout}
while time.monotonic() < end:
    s.settimeout(max(0.01, end - time.monotonic()))
    try:
        data, src = s.recvfrom(2048)
    except OSError:
        break
    ihl = (data[0] & 15) * 4
    if src[0] == '{addr}' and data[ihl] == 0 and struct.unpack('!H', data[ihl+4:ihl+6])[0] == ident:
        sys.exit(0)
sys.exit(1)
"""


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


class Lab:
    """A switch namespace with a bridge, and hosts plugged into it.

    Use as a context manager; :meth:`close` is idempotent and also runs on
    exceptions and KeyboardInterrupt.  ``keep=True`` leaves everything up on
    close (the state file is marked kept; :func:`cleanup_stale` with
    ``include_kept=True`` removes it later).
    """

    def __init__(
        self,
        prefix: str = "klb",
        subnet: str = "10.77.0.0/24",
        *,
        keep: bool = False,
        lab_id: str | None = None,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", prefix):
            raise LabError(f"lab prefix {prefix!r}: use 1-6 lowercase letters/digits")
        self.prefix = prefix
        self.subnet = ipaddress.ip_network(subnet)
        self.id = lab_id or secrets.token_hex(3)
        self.keep = keep
        self.hosts: dict[str, Host] = {}
        self.switch_ns = f"{prefix}{self.id}-sw"
        self._closed = False
        self._built = False
        # pyroute2 forks short-lived helpers to enter namespaces; a signal
        # can wake one up inside our code.  Only the creator may tear down.
        self._owner_pid = os.getpid()
        self._isolated: list[str] = []
        self._moved: list[str] = []
        self.state_file = STATE_DIR / f"{prefix}{self.id}.json"
        self._build_switch()

    # -- building -----------------------------------------------------------
    def _build_switch(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, veth, bridge)")
        try:
            netns.create(self.switch_ns)
            self._built = True
            self._write_state()
            with NetNS(self.switch_ns) as sw:
                for br in (_BRIDGE, _BRIDGE_B):
                    sw.link("add", ifname=br, kind="bridge", br_mcast_snooping=0)
                    sw.link("set", index=sw.link_lookup(ifname=br)[0], state="up")
        except (NetlinkError, OSError) as exc:
            self.close()
            raise LabError(f"cannot build the lab switch: {exc}") from exc

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        state = {
            "id": self.id,
            "prefix": self.prefix,
            "owner": os.getpid(),
            "kept": self.keep,
            "namespaces": [self.switch_ns, *(h.netns for h in self.hosts.values())],
            "hosts": {h.name: {"netns": h.netns, "addr": h.addr_cidr} for h in self.hosts.values()},
        }
        self.state_file.write_text(json.dumps(state, indent=1))

    def add_host(self, name: str, addr_cidr: str) -> Host:
        """Make namespace ``{prefix}{id}-{name}`` with ``eth0`` at ``addr_cidr``
        (inside the lab subnet), plugged into the bridge; ``lo`` and ``eth0`` up."""
        if self._closed:
            raise LabError("lab is closed")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,11}", name) or name in self.hosts:
            raise LabError(f"host name {name!r}: unique, 1-12 chars [a-z0-9_], letter first")
        iface = ipaddress.ip_interface(addr_cidr)
        if iface.ip not in self.subnet:
            raise LabError(f"{addr_cidr} is outside the lab subnet {self.subnet}")
        ns_name = f"{self.prefix}{self.id}-{name}"
        port = f"p{len(self.hosts)}-{name}"[:15]
        host = Host(self, name, ns_name, str(iface), port)
        self.hosts[name] = host
        try:
            netns.create(ns_name)
            self._write_state()
            with NetNS(self.switch_ns) as sw:
                sw.link("add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns_name})
                idx = sw.link_lookup(ifname=port)[0]
                sw.link("set", index=idx, master=sw.link_lookup(ifname=_BRIDGE)[0], state="up")
            with NetNS(ns_name) as ns:
                lo = ns.link_lookup(ifname="lo")[0]
                ns.link("set", index=lo, state="up")
                eth = ns.link_lookup(ifname="eth0")[0]
                ns.addr("add", index=eth, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                ns.link("set", index=eth, state="up")
        except (NetlinkError, OSError) as exc:
            raise LabError(f"cannot add host {name}: {exc}") from exc
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # -- faults -------------------------------------------------------------
    def _set_port(self, port: str, *, up: bool) -> None:
        with NetNS(self.switch_ns) as sw:
            sw.link("set", index=sw.link_lookup(ifname=port)[0], state="up" if up else "down")

    def partition(self, group_a: Iterable[Host | str], group_b: Iterable[Host | str]) -> None:
        """Cut traffic between ``group_a`` and ``group_b``.

        Two single hosts (the usual lb1 | lb2 split) get bridge port isolation:
        they no longer reach each other but both still reach every other host,
        as when a firewall between the two balancers drops VRRP.  Larger groups
        are split onto two bridges instead; the remaining hosts stay with
        ``group_a``.  Call :meth:`heal` to undo.
        """
        a = [self._host(h) for h in group_a]
        b = [self._host(h) for h in group_b]
        if set(x.name for x in a) & set(x.name for x in b):
            raise LabError("partition groups overlap")
        self.heal()
        with NetNS(self.switch_ns) as sw:
            if len(a) == 1 and len(b) == 1:
                for h in (*a, *b):
                    sw.brport("set", index=sw.link_lookup(ifname=h.port)[0], isolated=1)
                    self._isolated.append(h.port)
            else:
                br_b = sw.link_lookup(ifname=_BRIDGE_B)[0]
                for h in b:
                    sw.link("set", index=sw.link_lookup(ifname=h.port)[0], master=br_b)
                    self._moved.append(h.port)

    def heal(self) -> None:
        """Undo :meth:`partition` (a no-op when there is none)."""
        if not (self._isolated or self._moved):
            return
        with NetNS(self.switch_ns) as sw:
            for port in self._isolated:
                sw.brport("set", index=sw.link_lookup(ifname=port)[0], isolated=0)
            br = sw.link_lookup(ifname=_BRIDGE)[0]
            for port in self._moved:
                sw.link("set", index=sw.link_lookup(ifname=port)[0], master=br)
        self._isolated.clear()
        self._moved.clear()

    def _host(self, h: Host | str) -> Host:
        return h if isinstance(h, Host) else self.hosts[h]

    # -- teardown -----------------------------------------------------------
    def close(self) -> None:
        """Stop every process, delete the hosts' and switch's namespaces and
        the state file.  Idempotent.  With ``keep=True`` only marks the lab as
        kept and leaves it running."""
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        if self.keep and self._built:
            self._write_state()
            return
        # Ctrl-C or SIGTERM during teardown must not leave half a lab behind.
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        restore = True
        try:
            for sig in old:
                signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread
            restore = False
        try:
            for host in self.hosts.values():
                for proc in list(host.procs):
                    _signal_group(proc, signal.SIGTERM)
            for host in self.hosts.values():
                for proc in list(host.procs):
                    try:
                        proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        _signal_group(proc, signal.SIGKILL)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(timeout=2)
                host.procs.clear()
            for host in self.hosts.values():
                _remove_ns(host.netns)
            _remove_ns(self.switch_ns)
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
        finally:
            if restore:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort only: closing explicitly or with ``with`` is the contract.
        with contextlib.suppress(Exception):
            if not self._closed and not self.keep and os.getpid() == self._owner_pid:
                self.close()


def list_labs(prefix: str = "klb") -> list[dict[str, Any]]:
    """State of every lab with this prefix recorded on this machine, with
    ``alive`` = its owner process still runs."""
    labs: list[dict[str, Any]] = []
    if not STATE_DIR.is_dir():
        return labs
    for f in sorted(STATE_DIR.glob(f"{prefix}*.json")):
        try:
            state = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if state.get("prefix") != prefix:
            continue
        state["alive"] = pid_alive(int(state.get("owner", 0)))
        state["state_file"] = str(f)
        labs.append(state)
    return labs


def cleanup_stale(prefix: str = "klb", *, include_kept: bool = False) -> list[str]:
    """Remove labs left behind: those whose owner process is gone (and, with
    ``include_kept``, those kept on purpose with ``--keep``).  Labs still in
    use by a live process are left alone, as are namespaces that no
    ``Lab`` recorded.  Returns the namespaces removed."""
    removed: list[str] = []
    pat = re.compile(rf"{re.escape(prefix)}{_ID_RE}-[a-z0-9_]+")
    for state in list_labs(prefix):
        if state["alive"] and not (include_kept and state.get("kept")):
            continue
        if state.get("kept") and not include_kept:
            continue
        names = [n for n in state.get("namespaces", []) if pat.fullmatch(n)]
        # Hosts first, switch last: a host's veth peer dies with either end.
        for name in sorted(names, key=lambda n: n.endswith("-sw")):
            if _ns_exists(name):
                _remove_ns(name)
                removed.append(name)
        with contextlib.suppress(FileNotFoundError):
            Path(state["state_file"]).unlink()
    return removed
