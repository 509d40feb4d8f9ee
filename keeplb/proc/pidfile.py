"""PID files, written atomically and removed only if they still name us."""

from __future__ import annotations

import contextlib
import os


def write_pidfile(path: str, pid: int | None = None) -> None:
    """Writes `pid` (default: ours) to `path` atomically; the directory must exist."""
    pid = os.getpid() if pid is None else pid
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def read_pidfile(path: str) -> int | None:
    """The PID in `path`, or None when the file is missing or does not hold a number."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def remove_pidfile(path: str, pid: int | None = None) -> None:
    """Removes `path` if it names `pid` (default: ours), so a successor's file survives."""
    pid = os.getpid() if pid is None else pid
    if read_pidfile(path) == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
