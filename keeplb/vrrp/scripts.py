"""Runners for keepalived's external inputs: vrrp_script, track_file, notify
scripts, and the vrrp_notify_fifo they write to.

These only observe and report; what a result means (rise/fall, weights,
FAULT) is decided by the pure trackers the daemon feeds. Like keepalived, a
script line is split into words and executed directly (no shell), its exit
status 0 means success, and a script that outlives its timeout is killed
and counts as a failure.

Scripts run as keepalived runs them (lib/notify.c): as the script's own
`user [group]`, else global_defs `script_user [group]`, else the user
`keepalived_script` if it exists, else keeplb's own user; the group is the
user's primary group unless one is named, and the supplementary groups are
just that group (keepalived's setgroups(1, &gid)), never root's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import pwd
import shlex
import signal
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keeplb.config.model import TrackFileDef, VrrpScript

__all__ = [
    "DEFAULT_SCRIPT_USER",
    "FileWatcher",
    "NotifyFifo",
    "NotifyRunner",
    "ScriptIdentity",
    "ScriptRunner",
    "init_file_value",
    "read_track_file",
    "resolve_identity",
    "run_command",
]

log = logging.getLogger("keeplb.vrrp")

# How often a tracked file is looked at; keepalived uses inotify, a stat()
# every quarter second costs nothing and needs no extra watcher.
FILE_POLL_INTERVAL = 0.25

# keepalived's default script user (lib/notify.c get_default_script_user).
DEFAULT_SCRIPT_USER = "keepalived_script"


@dataclass(frozen=True, slots=True)
class ScriptIdentity:
    """The uid and gid a script runs with; `name` ('user:group') is for log lines."""

    uid: int
    gid: int
    name: str


def _lookup(user: str, group: str | None) -> ScriptIdentity | None:
    try:
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group is not None else pw.pw_gid
    except KeyError:
        return None
    return ScriptIdentity(pw.pw_uid, gid, f"{user}:{group}" if group else user)


def resolve_identity(
    user: str | None,
    group: str | None = None,
    *,
    default_user: str | None = None,
    default_group: str | None = None,
    script_security: bool = False,
) -> ScriptIdentity | None:
    """Who a script runs as, by keepalived's rules; None when the user or group
    does not exist (keepalived then does not run the script at all).

    `user`/`group` are the script's own (vrrp_script `user`), `default_user`/
    `default_group` global_defs `script_user`. Without either, the user
    keepalived_script, else keeplb's own user, unless `script_security`
    (enable_script_security) is on: then a missing keepalived_script is a
    failure, as in keepalived's get_default_script_user. Called when a runner
    is built, so a user added later is seen at the next start or reload.
    """
    if user is not None:
        return _lookup(user, group)
    if default_user is not None:
        return _lookup(default_user, default_group)
    fallback = _lookup(DEFAULT_SCRIPT_USER, None)
    if fallback is not None or script_security:
        return fallback
    uid, gid = os.geteuid(), os.getegid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return ScriptIdentity(uid, gid, name)


def _credentials(identity: ScriptIdentity | None) -> ScriptIdentity | None:
    """The identity the child must switch to, or None for no switch at all.

    As root, always: keepalived clears root's supplementary groups even for a
    script that runs as root. Not root: only a different identity is asked
    for (and fails, as it would for keepalived); our own needs no switch.
    """
    if identity is None:
        return None
    if os.geteuid() != 0 and (identity.uid, identity.gid) == (os.geteuid(), os.getegid()):
        return None
    return identity


def split_command(line: str) -> list[str] | None:
    """argv for a script line as keepalived splits it (quotes honoured); None if unbalanced."""
    try:
        argv = shlex.split(line)
    except ValueError:
        return None
    return argv or None


async def run_command(
    argv: Sequence[str],
    *,
    timeout: float | None,
    identity: ScriptIdentity | None = None,
) -> int | None:
    """Runs argv to completion; its exit status, or None when it could not start or timed out.

    `identity`: the uid/gid to run as (see resolve_identity); None runs it as
    keeplb's own user, untouched. A timed-out script is killed with its whole
    process group, so a hung `curl` started by a shell script does not linger.
    """
    switch = _credentials(identity)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            user=switch.uid if switch else None,
            group=switch.gid if switch else None,
            extra_groups=[switch.gid] if switch else None,
        )
    except (OSError, ValueError, KeyError) as e:
        log.warning("cannot run %s: %s", " ".join(argv), e)
        return None
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None


class ScriptRunner:
    """Runs one vrrp_script every `interval` seconds and reports each result.

    `on_result(name, ok, detail)` is called after every run; it is the
    daemon's job to apply rise/fall and weights.
    """

    def __init__(
        self,
        script: VrrpScript,
        on_result: Callable[[str, bool, str], None],
        *,
        identity: ScriptIdentity | None = None,
    ) -> None:
        self.script = script
        self.on_result = on_result
        self.identity = identity
        self.argv = split_command(script.script)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> tuple[bool, str]:
        """One run: (success, 'exited with status N' / 'timed out' / 'could not run')."""
        if self.argv is None:
            return False, "could not run (bad quoting)"
        # keepalived: a missing timeout means the interval.
        timeout = self.script.timeout if self.script.timeout else self.script.interval
        status = await run_command(self.argv, timeout=timeout, identity=self.identity)
        if status is None:
            return False, "timed out or could not run"
        return status == 0, f"exited with status {status}"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            ok, detail = await self.run_once()
            self.on_result(self.script.name, ok, detail)
            elapsed = loop.time() - started
            await asyncio.sleep(max(0.0, self.script.interval - elapsed))


def read_track_file(path: str) -> int | None:
    """The integer a tracked file holds (keepalived reads the first number); None if unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    word = text.split()[0] if text.split() else "0"
    try:
        return int(word)
    except ValueError:
        return 0


def init_file_value(track: TrackFileDef, exists: bool) -> int | None:
    """What keepalived's init_file writes at start: the value (default 0) when
    the file is missing, or always with `overwrite`; None when nothing is written."""
    if track.init_file is None or (exists and not track.init_file_overwrite):
        return None
    return track.init_file


class FileWatcher:
    """Watches one track_file and reports its value whenever it changes.

    `init_file` is applied once, on the first read (start): keepalived writes
    it at startup only, so a file removed later reads as 0 and is not written
    again. `on_value(name, value)` gets 0 for a file that cannot be read, as
    keepalived treats a missing file.
    """

    def __init__(self, track: TrackFileDef, on_value: Callable[[str, int], None]) -> None:
        self.track = track
        self.on_value = on_value
        self._task: asyncio.Task[None] | None = None
        self._last: int | None = None
        self._initialised = False

    def _init_file(self) -> None:
        self._initialised = True
        value = init_file_value(self.track, os.path.lexists(self.track.file))
        if value is None:
            return
        try:
            with open(self.track.file, "w", encoding="ascii") as f:
                f.write(f"{value}\n")
        except OSError as e:
            log.warning("track_file %s: cannot write init_file value to %s: %s",
                        self.track.name, self.track.file, e)

    def current(self) -> int:
        if not self._initialised:
            self._init_file()
        value = read_track_file(self.track.file)
        return value if value is not None else 0

    def start(self) -> None:
        self._last = self.current()
        self.on_value(self.track.name, self._last)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_INTERVAL)
            value = self.current()
            if value != self._last:
                self._last = value
                self.on_value(self.track.name, value)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def value(self) -> int | None:
        """The value last reported, None before start."""
        return self._last


class NotifyRunner:
    """Starts notify scripts without waiting for them, and reaps them in the background.

    `identity` is who they run as (resolve_identity with global_defs
    script_user); None when that user does not exist, and then, as keepalived,
    notify scripts do not run at all.
    """

    def __init__(self, *, identity: ScriptIdentity | None = None, runnable: bool = True) -> None:
        self.identity = identity
        self.runnable = runnable
        self._tasks: set[asyncio.Task[int | None]] = set()
        self._refused_logged = False

    def run(self, line: str, args: Sequence[str] = ()) -> None:
        """Starts `line` (split like a vrrp_script) with extra arguments `args`."""
        if not self.runnable:
            if not self._refused_logged:
                log.warning("notify scripts are not run: the script user does not exist")
                self._refused_logged = True
            return
        argv = split_command(line)
        if argv is None:
            log.warning("notify script %r: cannot split the command line", line)
            return
        task = asyncio.get_running_loop().create_task(
            run_command([*argv, *args], timeout=60.0, identity=self.identity)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Waits (bounded) for the notify scripts still running, e.g. notify_stop on exit."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


def fifo_line(kind: str, name: str, state: str, priority: int) -> str:
    """One vrrp_notify_fifo line as keepalived 2.2 writes it (vrrp_notify.c
    notify_fifo): `INSTANCE "VI_1" MASTER 100`; a GROUP line carries priority 0."""
    return f'{kind} "{name}" {state} {priority}\n'


class NotifyFifo:
    """vrrp_notify_fifo, held open as keepalived holds it (lib/notify.c fifo_open).

    The FIFO is created (mode 0644, less the umask) when missing, and removed
    at close only if keeplb created it. It is opened read-write and
    non-blocking: with our own read end open, a write never fails for want of
    a reader (a reader attaching later gets the lines the pipe still holds),
    and a full pipe drops the line instead of stalling VRRP.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.created = False
        self._full_logged = False

    def open(self) -> bool:
        """Creates and opens the FIFO; False (and logged) when it cannot."""
        try:
            os.mkfifo(self.path, 0o644)
            self.created = True
        except FileExistsError:
            pass
        except OSError as e:
            log.warning("Unable to create notify fifo %s: %s", self.path, e)
            return False
        try:
            st = os.lstat(self.path)
            if not stat.S_ISFIFO(st.st_mode):
                # keepalived would write into a regular file here; a status
                # line overwriting someone's file is never what was meant.
                log.warning("notify fifo %s exists and is not a FIFO; not used", self.path)
                return False
            self.fd = os.open(
                self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
            )
        except OSError as e:
            log.warning("Unable to open notify fifo %s: %s", self.path, e)
            if self.created:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                self.created = False
            return False
        return True

    def write(self, line: str) -> None:
        """Writes one whole line; dropped (logged once per episode) when the pipe is full."""
        if self.fd is None:
            return
        try:
            os.write(self.fd, line.encode())
            self._full_logged = False
        except OSError as e:
            if not self._full_logged:
                why = "the pipe is full (no reader?)" if e.errno == errno.EAGAIN else str(e)
                log.warning("notify fifo %s: line dropped, %s", self.path, why)
                self._full_logged = True

    def close(self) -> None:
        # Unlinked first, as keepalived does, so a reader looping on open()
        # cannot reopen a FIFO nobody writes to any more.
        if self.created:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.created = False
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
