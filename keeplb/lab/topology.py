"""The demo's topology and its configs: the article's two files, moved into the lab.

The seed configs (``SEED_HAPROXY_CFG``, ``SEED_KEEPALIVED_CONF``, verbatim
from the article in /work/shared/seed) are rewritten line by line, so that a
diff against the seed shows only what a lab needs to change:

* addresses 172.16.0.x -> 10.77.0.x (same last octet), ASCII server names;
* chroot, pidfile and stats socket -> a per-host directory of this lab;
* ``killall -0 haproxy`` -> a pidfile check.  ``killall`` looks at every
  process on the machine, and network namespaces share one PID namespace:
  lb1's check would see lb2's haproxy and never fail;
* ``unicast_src_ip``/``unicast_peer`` -> this host and the other balancer;
* lb1's priority 101 (seed: 100 on both) so that preemption on comeback is
  visible; with equal priorities a returning master never takes the VIP back.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BACKENDS",
    "CLIENT",
    "LBS",
    "SEED_HAPROXY_CFG",
    "SEED_KEEPALIVED_CONF",
    "VIP",
    "LbFiles",
    "render_haproxy",
    "render_keepalived",
    "seed_diff",
    "write_lb_files",
]

SEED_HAPROXY_CFG = """\
global
    log /dev/log  local0 warning
    chroot      /var/lib/haproxy
    pidfile     /var/run/haproxy.pid
    maxconn     4000
    user        haproxy
    group       haproxy
    daemon
   
   stats socket /var/lib/haproxy/stats
   
defaults
  log global
  option  httplog
  option  dontlognull
        timeout connect 5000
        timeout client 50000
        timeout server 50000
   
frontend kube-apiserver
  bind *:6443
  mode tcp
  option tcplog
  default_backend kube-apiserver
   
backend kube-apiserver
    mode tcp
    option tcplog
    option tcp-check
    balance roundrobin
    default-server inter 10s downinter 5s rise 2 fall 2 slowstart 60s maxconn 250 maxqueue 256 weight 100
    server 后端服务器1的主机名 172.16.0.4:6443 check
    server 后端服务器2的主机名 172.16.0.5:6443 check
    server 后端服务器13的主机名 172.16.0.6:6443 check
"""  # noqa: W291, W293 - verbatim, trailing blanks included

SEED_KEEPALIVED_CONF = """\
global_defs {
  notification_email {
  }
  router_id LVS_DEVEL
  vrrp_skip_check_adv_addr
  vrrp_garp_interval 0
  vrrp_gna_interval 0
}
   
vrrp_script chk_haproxy {
  script "killall -0 haproxy"
  interval 2
  weight 2
}
   
vrrp_instance haproxy-vip {
  state BACKUP
  priority 100
  interface eth0                       # 每台安装了Keepalived的主机的网卡名称,一般是eth0
  virtual_router_id 60
  advert_int 1
  authentication {
    auth_type PASS
    auth_pass 1111
  }
  unicast_src_ip 172.16.0.2      # 主机IP地址
  unicast_peer {
    172.16.0.3        # 组成Keepalived集群的另外一个主机的IP地址
  }
   
  virtual_ipaddress {
    172.16.0.10/24    # 这个是虚拟IP地址,会在多个Keepalived主机之间漂移
  }
   
  track_script {
    chk_haproxy
  }
}
"""  # noqa: W291, W293

SUBNET = "10.77.0.0/24"
VIP = "10.77.0.10"
VIP_CIDR = f"{VIP}/24"
PORT = 6443
LBS: dict[str, str] = {"lb1": "10.77.0.2", "lb2": "10.77.0.3"}
BACKENDS: dict[str, str] = {"api1": "10.77.0.4", "api2": "10.77.0.5", "api3": "10.77.0.6"}
CLIENT = ("client", "10.77.0.100")
PRIORITIES: dict[str, int] = {"lb1": 101, "lb2": 100}


def _lab_addr(addr: str) -> str:
    return re.sub(r"\b172\.16\.0\.(\d+)\b", r"10.77.0.\1", addr)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def render_haproxy(d: Path) -> str:
    """haproxy.cfg for one balancer whose runtime files live in ``d``."""
    names = iter(BACKENDS)
    out: list[str] = []
    for line in SEED_HAPROXY_CFG.splitlines():
        s = line.strip()
        if s.startswith("chroot"):
            line = re.sub(r"/\S+", str(d / "chroot"), line)
        elif s.startswith("pidfile"):
            line = re.sub(r"/\S+", str(d / "haproxy.pid"), line)
        elif s.startswith("stats socket"):
            line = re.sub(r"/\S+", str(d / "haproxy.sock") + " level admin", line)
        elif s.split()[:1] in (["user"], ["group"]) and not _user_exists("haproxy"):
            line = line.replace(s, f"# {s}   (no user 'haproxy' on this machine)")
        elif s.startswith("server "):
            parts = line.split()
            indent = line[: len(line) - len(line.lstrip())]
            line = indent + " ".join(["server", next(names), _lab_addr(parts[2]), *parts[3:]])
        out.append(line)
    return "\n".join(out) + "\n"


def render_keepalived(lb: str, d: Path, *, nopreempt: bool = False) -> str:
    """keepalived.conf for balancer ``lb`` (runtime files in ``d``)."""
    me = LBS[lb]
    peers = [a for n, a in LBS.items() if n != lb]
    out: list[str] = []
    for line in SEED_KEEPALIVED_CONF.splitlines():
        s = line.strip()
        if s.startswith("script "):
            line = line.replace('"killall -0 haproxy"', f'"{d / "chk_haproxy.sh"}"')
        elif s.startswith("priority "):
            line = line.replace(s, f"priority {PRIORITIES[lb]}")
        elif s.startswith("state ") and nopreempt:
            out.append(line)
            line = line.replace(s, "nopreempt")
        elif s.startswith("unicast_src_ip"):
            line = line.replace("172.16.0.2", me)
        elif s.startswith("172.16.0.3"):
            line = line.replace("172.16.0.3", peers[0])
        elif s.startswith("172.16.0.10/"):
            line = line.replace("172.16.0.10/24", VIP_CIDR)
        out.append(line)
    return "\n".join(out) + "\n"


CHECK_SCRIPT = """\
#!/bin/sh
# The seed's check is `killall -0 haproxy`.  killall sees processes in every
# network namespace of this machine (they share one PID namespace), so it
# would find the other balancer's haproxy.  Test this host's pidfile instead.
pid=$(cat {pidfile} 2>/dev/null) || exit 1
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
"""


@dataclass(frozen=True)
class LbFiles:
    """Where one balancer's generated files and runtime state live."""

    dir: Path
    haproxy_cfg: Path
    keepalived_conf: Path
    keepalived_nopreempt: Path
    check_script: Path
    pidfile: Path
    stats_socket: Path
    log_socket: Path


def write_lb_files(lb: str, root: Path) -> LbFiles:
    """Write haproxy.cfg, keepalived.conf (and a nopreempt variant) and the
    check script for ``lb`` into ``root/lb``; make the chroot with its
    ``dev/`` (haproxy's ``log /dev/log`` resolves inside the chroot)."""
    d = (root / lb).resolve()
    (d / "chroot" / "dev").mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    files = LbFiles(
        dir=d,
        haproxy_cfg=d / "haproxy.cfg",
        keepalived_conf=d / "keepalived.conf",
        keepalived_nopreempt=d / "keepalived-nopreempt.conf",
        check_script=d / "chk_haproxy.sh",
        pidfile=d / "haproxy.pid",
        stats_socket=d / "haproxy.sock",
        log_socket=d / "chroot" / "dev" / "log",
    )
    files.haproxy_cfg.write_text(render_haproxy(d), encoding="utf-8")
    files.keepalived_conf.write_text(render_keepalived(lb, d), encoding="utf-8")
    files.keepalived_nopreempt.write_text(render_keepalived(lb, d, nopreempt=True), encoding="utf-8")
    files.check_script.write_text(CHECK_SCRIPT.format(pidfile=files.pidfile))
    # keepalived refuses scripts writable by others; 0755 root is what it wants.
    files.check_script.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return files


def seed_diff(generated: str, seed: str, name: str) -> str:
    """Unified diff of a generated config against its seed."""
    return "".join(
        difflib.unified_diff(
            seed.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            fromfile=f"seed/{name}",
            tofile=f"lab/{name}",
        )
    )
