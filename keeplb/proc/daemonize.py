"""Detaching from the terminal, as haproxy -D and keepalived do."""

from __future__ import annotations

import os


def daemonize(*, keep_cwd: bool = False) -> None:
    """Double-forks into a new session; the caller continues in the grandchild.

    Called before any event loop or thread exists: forking later would copy
    a running loop's state into the child. keepalived moves to "/"; haproxy
    (`keep_cwd`) stays where it was started, so that the relative paths of
    its config (ACL pattern files) mean the same in its workers and reloads.
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    if not keep_cwd:
        os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)
