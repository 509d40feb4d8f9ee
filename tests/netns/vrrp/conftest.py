"""Helpers for VRRP tests: keepalived.conf snippets, starting keepalived or
keeplb inside a lab host, and asking who holds the VIP.

The real keepalived 2.2.7 is the reference peer. Each daemon gets its own
pid files, state directory and log file under the test's tmp_path, so
nothing collides with another test or another engineer's daemons.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keeplb.lab.netns import Host, Lab
from keeplb.lab.poll import wait_for

REPO = Path(__file__).resolve().parents[3]
KEEPALIVED = "/usr/sbin/keepalived"


def instance_conf(
    *,
    name: str = "vi",
    vrid: int = 60,
    priority: int = 100,
    advert_int: float = 1.0,
    version: int = 2,
    vips: Sequence[str] = ("10.77.0.100/24",),
    unicast_src: str | None = None,
    peers: Sequence[str] = (),
    nopreempt: bool = False,
    auth_pass: str | None = "1111",
    track_scripts: Sequence[str] = (),
    state: str = "BACKUP",
    extra: str = "",
) -> str:
    """One vrrp_instance block in keepalived's syntax."""
    lines = [
        f"vrrp_instance {name} {{",
        f"  state {state}",
        "  interface eth0",
        f"  virtual_router_id {vrid}",
        f"  priority {priority}",
        f"  advert_int {advert_int:g}",
        f"  version {version}",
    ]
    if nopreempt:
        lines.append("  nopreempt")
    if auth_pass is not None and version == 2:
        lines += ["  authentication {", "    auth_type PASS", f"    auth_pass {auth_pass}", "  }"]
    if unicast_src:
        lines.append(f"  unicast_src_ip {unicast_src}")
    if peers:
        lines += ["  unicast_peer {", *[f"    {p}" for p in peers], "  }"]
    lines += ["  virtual_ipaddress {", *[f"    {v}" for v in vips], "  }"]
    if track_scripts:
        lines += ["  track_script {", *[f"    {s}" for s in track_scripts], "  }"]
    if extra:
        lines.append(extra)
    lines.append("}")
    return "\n".join(lines) + "\n"


GLOBAL_DEFS = """global_defs {
  router_id %s
  enable_script_security
  vrrp_skip_check_adv_addr
  vrrp_garp_master_delay 0
  script_user root
}
"""


def script_conf(name: str, path: str, *, interval: int = 1, weight: int = 2,
                rise: int = 1, fall: int = 1) -> str:
    """A vrrp_script block running `path`."""
    return (
        f"vrrp_script {name} {{\n  script \"{path}\"\n  interval {interval}\n"
        f"  weight {weight}\n  rise {rise}\n  fall {fall}\n  timeout 1\n}}\n"
    )


@dataclass
class Daemon:
    """A VRRP daemon (keepalived or keeplb) running in a lab host."""

    kind: str  # 'keepalived' | 'keeplb'
    host: Host
    conf: Path
    workdir: Path
    proc: subprocess.Popen[Any] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    def start(self) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        if self.kind == "keepalived":
            argv = [
                KEEPALIVED, "-n", "-l", "-D", "-f", str(self.conf),
                "-p", str(self.workdir / "ka.pid"), "-r", str(self.workdir / "vrrp.pid"),
                "-c", str(self.workdir / "chk.pid"), "--vrrp",
            ]
            env = None
        else:
            argv = [sys.executable, "-m", "keeplb", "vrrp", "-n", "-l", "-f", str(self.conf),
                    "-p", str(self.workdir / "keeplb.pid")]
            env = dict(os.environ, PYTHONPATH=str(REPO), KEEPLB_VRRP_STATE_DIR=str(self.workdir))
        try:
            self.proc = self.host.popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        finally:
            out.close()
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """Clean stop (SIGTERM): a master sends priority 0 and drops its VIPs."""
        if self.proc is None:
            return None
        rc = self.host.stop(self.proc, grace=timeout)
        self.proc = None
        return rc

    def kill(self) -> None:
        """Crash: SIGKILL, no priority 0, VIPs left behind."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        """Sends `sig` to the daemon process itself (not `ip netns exec`, which execs it)."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        """keeplb only: SIGUSR1, then the JSON status it writes."""
        assert self.kind == "keeplb"
        path = self.workdir / "keeplb-vrrp.json"
        before = path.stat().st_mtime_ns if path.exists() else 0
        self.signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_mtime_ns != before:
                try:
                    data: dict[str, Any] = json.loads(path.read_text())
                    return data
                except ValueError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"no status from keeplb after {timeout}s\n{self.log()}")




def has_vip(host: Host, vip: str) -> bool:
    """Whether `vip` (address, no prefix) is on the host's eth0 now."""
    return any(a.split("/")[0] == vip for a in host.addresses())


def holders(hosts: Sequence[Host], vip: str) -> list[str]:
    return [h.name for h in hosts if has_vip(h, vip)]


class VrrpLab:
    """A Lab plus the daemons started in it, with configs written under tmp_path."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.daemons: list[Daemon] = []

    def host(self, name: str, addr: str) -> Host:
        return self.lab.add_host(name, addr)

    def daemon(
        self, kind: str, host: Host, conf_text: str, tag: str | None = None, global_extra: str = ""
    ) -> Daemon:
        """Starts `kind` in `host`; `global_extra` are more global_defs lines."""
        work = self.tmp / f"{tag or host.name}-{kind}"
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "keepalived.conf"
        gdefs = GLOBAL_DEFS % host.name
        if global_extra:
            gdefs = gdefs.rstrip().removesuffix("}") + global_extra.rstrip() + "\n}\n"
        conf.write_text(gdefs + conf_text)
        d = Daemon(kind, host, conf, work)
        self.daemons.append(d)
        return d.start()

    def logs(self) -> str:
        return "\n".join(f"==== {d.kind} on {d.host.name}\n{d.log()[-3000:]}" for d in self.daemons)

    def close(self) -> None:
        for d in self.daemons:
            try:
                d.stop(timeout=3)
            except Exception:  # noqa: BLE001 - teardown continues; Lab kills leftovers
                pass


@pytest.fixture
def vlab(lab: Lab, tmp_path: Path) -> Iterator[VrrpLab]:
    v = VrrpLab(lab, tmp_path)
    try:
        yield v
    finally:
        v.close()


def wait_ipv6_ready(host: Host, timeout: float = 5.0) -> bool:
    """Waits until eth0's link-local address has passed DAD (VRRPv3 over IPv6 sends from it)."""

    def ready() -> bool:
        out = host.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0"]).stdout
        return "fe80" in out and "tentative" not in out

    return wait_for(ready, timeout, 0.1)


def read_fifo(fd: int) -> list[str]:
    """Every line waiting in a non-blocking FIFO (bounded: 1000 reads)."""
    chunks = []
    for _ in range(1000):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode().splitlines()
