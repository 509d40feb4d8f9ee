"""Dropping root after the listening sockets are bound, as haproxy does."""

from __future__ import annotations

import contextlib
import grp
import importlib
import os
import pwd

from keeplb.errors import KeeplbError


def resolve_ids(user: str | None, group: str | None, uid: int | None = None,
                gid: int | None = None) -> tuple[int | None, int | None]:
    """Names to numeric ids; raises KeeplbError naming what does not exist."""
    if user is not None:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise KeeplbError(f"unknown user '{user}'") from None
        uid = pw.pw_uid
        if gid is None and group is None:
            gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise KeeplbError(f"unknown group '{group}'") from None
    return uid, gid


# Imported before chroot/setuid: afterwards the interpreter may no longer be able to
# read its own library (a chroot, or a Python installed under a private home).
PRELOAD = (
    "encodings.idna", "encodings.ascii", "encodings.latin_1", "ssl", "json", "hashlib",
    "logging.handlers", "email.utils", "http", "urllib.parse", "uuid", "ipaddress",
    "prometheus_client", "keeplb.lb.checks", "keeplb.lb.runtime", "keeplb.lb.stats",
    "keeplb.lb.metrics", "keeplb.lb.log", "keeplb.lb.proxy",
)


def preload_modules(names: tuple[str, ...] = PRELOAD) -> None:
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # socket.getaddrinfo's IDNA codec is looked up on first use.
    with contextlib.suppress(LookupError):
        "localhost".encode("idna")


def drop_privileges(*, user: str | None = None, group: str | None = None, uid: int | None = None,
                    gid: int | None = None, chroot: str | None = None) -> None:
    """chroot, then setgid/setgroups, then setuid: the order that cannot be undone by the process.

    Called once, after binding and before serving. Does nothing for what is not set.
    """
    uid, gid = resolve_ids(user, group, uid, gid)
    if chroot or uid is not None or gid is not None:
        preload_modules()
    if chroot:
        try:
            os.chroot(chroot)
            os.chdir("/")
        except OSError as e:
            raise KeeplbError(f"cannot chroot to '{chroot}': {e.strerror}") from None
    try:
        if gid is not None:
            os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    except OSError as e:
        raise KeeplbError(f"cannot drop privileges: {e.strerror}") from None
