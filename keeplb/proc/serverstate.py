"""Server state across reloads: what an operator set at runtime survives.

haproxy asks the operator to dump `show servers state` into `server-state-file`
before a reload and to load it with `load-server-state-from-file`. keeplb's
master does that itself: before it starts a new generation it asks the
current workers' stats socket for `show servers state`, writes the answer to
the state file, and the new workers apply it before they serve. The file
keeps haproxy's format (version 1), so haproxy can read it and the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from keeplb.config.model import HaproxyConfig
from keeplb.lb.server import AdminState, ProcessRuntime

log = logging.getLogger("keeplb.master")

ENV_STATE_FILE = "KEEPLB_SERVER_STATE_FILE"

# srv_admin_state bits (haproxy's SRV_ADMF_*): forced, inherited, config, resolver maint; drain.
_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20
_DRAIN_BITS = 0x08 | 0x10


@dataclass(frozen=True, slots=True)
class SavedServer:
    backend: str
    server: str
    admin: AdminState
    uweight: int
    addr: str | None = None  # srv_addr ('-': none), for `init-addr last`


def state_file_path(cfg: HaproxyConfig, master_pid: int) -> str:
    """`server-state-file` (relative to `server-state-base`), or a private file."""
    g = cfg.global_
    if g.server_state_file:
        if os.path.isabs(g.server_state_file) or not g.server_state_base:
            return g.server_state_file
        return os.path.join(g.server_state_base, g.server_state_file)
    return private_state_path(master_pid)


def private_state_path(master_pid: int) -> str:
    """Where a master without `server-state-file` keeps the servers' state for
    its next generation of workers; it removes the file when it exits."""
    return f"/tmp/keeplb-servers-state-{master_pid}"


def parse_servers_state(text: str) -> list[SavedServer]:
    """Reads `show servers state` output (version 1); malformed lines are skipped."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "1":
        return []
    out: list[SavedServer] = []
    for line in lines[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        if len(f) < 8:
            continue
        try:
            admin_bits = int(f[6])
            uweight = int(f[7])
        except ValueError:
            continue
        if admin_bits & _MAINT_BITS:
            admin = AdminState.MAINT
        elif admin_bits & _DRAIN_BITS:
            admin = AdminState.DRAIN
        else:
            admin = AdminState.READY
        out.append(SavedServer(f[1], f[3], admin, uweight, None if f[4] == "-" else f[4]))
    return out


def apply_servers_state(runtime: ProcessRuntime, saved: list[SavedServer]) -> int:
    """Applies saved admin states and weights to servers that still exist; returns how many.

    A server whose config says `disabled` stays as the config says unless the
    saved state is an explicit operator choice: the saved state wins, as in haproxy.
    """
    n = 0
    for item in saved:
        be = runtime.backend(item.backend)
        srv = be.server(item.server) if be else None
        if srv is None:
            continue
        srv.admin = item.admin
        if item.uweight >= 0:
            srv.uweight = item.uweight
            if srv.eweight:
                srv.eweight = item.uweight
        n += 1
    return n


async def fetch_servers_state(cfg: HaproxyConfig, timeout: float = 3.0) -> str | None:
    """`show servers state` from the first stats socket of `cfg`, or None if unreachable."""
    for sock in cfg.global_.stats_sockets:
        addr = sock.address
        try:
            if addr.family == "unix":
                conn = asyncio.open_unix_connection(addr.host)
            elif addr.family == "abns":
                conn = asyncio.open_unix_connection("\0" + addr.host)
            elif addr.port_low is not None:
                host = addr.host if addr.host not in ("", "*", "0.0.0.0") else "127.0.0.1"
                conn = asyncio.open_connection(host, addr.port_low)
            else:
                continue
            reader, writer = await asyncio.wait_for(conn, timeout)
            try:
                writer.write(b"show servers state\n")
                await writer.drain()
                data = await asyncio.wait_for(reader.read(), timeout)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            return data.decode("utf-8", "replace")
        except (OSError, TimeoutError) as e:
            log.warning("cannot read server states from the stats socket %s: %s", addr.host, e)
    return None


def save(path: str, text: str) -> bool:
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write server-state-file %s: %s", path, e.strerror)
        return False
    return True


def load(path: str | None) -> list[SavedServer]:
    if not path:
        return []
    try:
        with open(path) as f:
            return parse_servers_state(f.read())
    except OSError:
        return []
