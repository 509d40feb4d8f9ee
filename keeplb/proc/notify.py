"""systemd's sd_notify protocol: datagrams to $NOTIFY_SOCKET (Type=notify units)."""

from __future__ import annotations

import os
import socket


def sd_notify(*fields: str, env: dict[str, str] | None = None) -> bool:
    """Sends 'READY=1', 'RELOADING=1', 'STOPPING=1', 'STATUS=...' lines to systemd.

    Returns False (and does nothing) outside systemd, so callers never branch on it.
    """
    environ = os.environ if env is None else env
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    payload = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(payload, addr)
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    return sd_notify("READY=1", f"MAINPID={os.getpid()}", *( [f"STATUS={status}"] if status else []))


def reloading() -> bool:
    return sd_notify("RELOADING=1")


def stopping() -> bool:
    return sd_notify("STOPPING=1")
