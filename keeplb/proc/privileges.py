"""Dropping root after the listening sockets are bound, as haproxy does."""

from __future__ import annotations

import grp
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


def drop_privileges(*, user: str | None = None, group: str | None = None, uid: int | None = None,
                    gid: int | None = None, chroot: str | None = None) -> None:
    """chroot, then setgid/setgroups, then setuid: the order that cannot be undone by the process.

    Called once, after binding and before serving. Does nothing for what is not set.
    """
    uid, gid = resolve_ids(user, group, uid, gid)
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
