"""Listening sockets: bound once, then handed to workers as inherited file descriptors.

Binding is kept apart from serving so that a master can bind before it drops
privileges, keep the sockets across reloads, and pass the same sockets to
each new generation of workers: no connection is refused during a reload,
because the kernel's accept queue never closes.

A listener key names one socket: 'ipv4@127.0.0.1:6443', 'ipv6@:::6443',
'unix@/run/x.sock'. The same key in the next config means the same socket.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keeplb.config.model import Bind, HaproxyConfig
from keeplb.errors import KeeplbError

DEFAULT_BACKLOG = 1024
ENV_FDS = "KEEPLB_LISTEN_FDS"


@dataclass(frozen=True, slots=True)
class ListenSpec:
    key: str
    family: int
    host: str
    port: int
    backlog: int
    v6only: bool
    frontend: str


def _family_of(bind: Bind) -> tuple[int, str]:
    addr = bind.address
    if addr.family == "ipv6":
        return socket.AF_INET6, addr.host or "::"
    if addr.family == "unix":
        return socket.AF_UNIX, addr.host
    if addr.family in ("any", "") or addr.host in ("", "*"):
        # haproxy: '*' and an empty host are IPv4 any unless 'v4v6' asks for both.
        if bind.v4v6:
            return socket.AF_INET6, "::"
        return socket.AF_INET, "0.0.0.0"
    if ":" in addr.host:
        return socket.AF_INET6, addr.host
    return socket.AF_INET, addr.host


def listen_specs(cfg: HaproxyConfig) -> list[ListenSpec]:
    """Every socket the config asks for, one per bind address and port."""
    specs: list[ListenSpec] = []
    for fe in cfg.frontends:
        if fe.disabled:
            continue
        for bind in fe.binds:
            family, host = _family_of(bind)
            backlog = bind.backlog or fe.backlog or fe.maxconn or DEFAULT_BACKLOG
            if family == socket.AF_UNIX:
                specs.append(ListenSpec(f"unix@{host}", family, host, 0, backlog, False, fe.name))
                continue
            fam = "ipv6" if family == socket.AF_INET6 else "ipv4"
            for port in bind.address.ports():
                specs.append(ListenSpec(f"{fam}@{host}:{port}", family, host, port, backlog,
                                        bind.v6only or (family == socket.AF_INET6 and not bind.v4v6
                                                        and host not in ("::",)),
                                        fe.name))
    return specs


def bind_one(spec: ListenSpec) -> socket.socket:
    """A listening, non-blocking socket for `spec`; raises KeeplbError with haproxy's wording."""
    sock = socket.socket(spec.family, socket.SOCK_STREAM)
    try:
        if spec.family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # SO_REUSEPORT lets a new process (-sf) bind beside the old one during a reload.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if spec.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if spec.v6only else 0)
            sock.bind((spec.host, spec.port))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec.host)
            sock.bind(spec.host)
        sock.listen(spec.backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise KeeplbError(
            f"Starting frontend {spec.frontend}: cannot bind socket ({e.strerror}) [{spec.key}]"
        ) from None
    return sock


def bind_all(cfg: HaproxyConfig, keep: Mapping[str, socket.socket] | None = None
             ) -> dict[str, socket.socket]:
    """Binds what `cfg` needs, reusing sockets from `keep` whose key is unchanged."""
    keep = keep or {}
    out: dict[str, socket.socket] = {}
    try:
        for spec in listen_specs(cfg):
            if spec.key in out:
                continue
            out[spec.key] = keep[spec.key] if spec.key in keep else bind_one(spec)
    except KeeplbError:
        for key, s in out.items():
            if key not in keep:
                s.close()
        raise
    return out


def relisten(cfg: HaproxyConfig, sockets: Mapping[str, socket.socket]) -> None:
    """listen() again on kept sockets (a master's reload): undoes the
    shutdown(SHUT_RD) of a runtime `disable`/`shutdown frontend`, and applies
    the new config's backlog; a no-op on a socket that listens already."""
    for spec in listen_specs(cfg):
        sock = sockets.get(spec.key)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.listen(spec.backlog)


def export_fds(sockets: Mapping[str, socket.socket]) -> str:
    """The value of KEEPLB_LISTEN_FDS for a child: 'key=fd' pairs separated by spaces."""
    for s in sockets.values():
        os.set_inheritable(s.fileno(), True)
    return " ".join(f"{k}={s.fileno()}" for k, s in sockets.items())


def import_fds(value: str | None) -> dict[str, socket.socket]:
    """Sockets inherited from a master, from the KEEPLB_LISTEN_FDS value."""
    out: dict[str, socket.socket] = {}
    if not value:
        return out
    for item in value.split():
        key, _, fd = item.rpartition("=")
        if not key or not fd.isdigit():
            continue
        s = socket.socket(fileno=int(fd))
        s.setblocking(False)
        out[key] = s
    return out


def close_all(sockets: Iterable[socket.socket]) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.close()
