"""Runners for keepalived's external inputs: vrrp_script, track_file, notify scripts.

These only observe and report; what a result means (rise/fall, weights,
FAULT) is decided by the pure trackers the daemon feeds. Like keepalived, a
script line is split into words and executed directly (no shell), its exit
status 0 means success, and a script that outlives its timeout is killed
and counts as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Callable, Sequence

from keeplb.config.model import TrackFileDef, VrrpScript

__all__ = ["FileWatcher", "NotifyRunner", "ScriptRunner", "read_track_file", "run_command"]

log = logging.getLogger("keeplb.vrrp")

# How often a tracked file is looked at; keepalived uses inotify, a stat()
# every quarter second costs nothing and needs no extra watcher.
FILE_POLL_INTERVAL = 0.25


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
    user: str | None = None,
    group: str | None = None,
) -> int | None:
    """Runs argv to completion; its exit status, or None when it could not start or timed out.

    A timed-out script is killed with its whole process group, so a hung
    `curl` started by a shell script does not linger.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=group,
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
        default_user: str | None = None,
    ) -> None:
        self.script = script
        self.on_result = on_result
        self.user = script.user or default_user
        self.group = script.group
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
        status = await run_command(self.argv, timeout=timeout, user=self.user, group=self.group)
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


class FileWatcher:
    """Watches one track_file and reports its value whenever it changes.

    With `init_file` set and the file missing, the file is created holding that
    value (keepalived's init_file); `on_value(name, value)` gets 0 for a file that
    cannot be read, as keepalived treats a missing file.
    """

    def __init__(self, track: TrackFileDef, on_value: Callable[[str, int], None]) -> None:
        self.track = track
        self.on_value = on_value
        self._task: asyncio.Task[None] | None = None
        self._last: int | None = None

    def current(self) -> int:
        value = read_track_file(self.track.file)
        if value is None and self.track.init_file is not None:
            with contextlib.suppress(OSError):
                with open(self.track.file, "w", encoding="ascii") as f:
                    f.write(f"{self.track.init_file}\n")
            value = self.track.init_file
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


class NotifyRunner:
    """Starts notify scripts without waiting for them, and reaps them in the background."""

    def __init__(self, *, user: str | None = None) -> None:
        self.user = user
        self._tasks: set[asyncio.Task[int | None]] = set()

    def run(self, line: str, args: Sequence[str] = ()) -> None:
        """Starts `line` (split like a vrrp_script) with extra arguments `args`."""
        argv = split_command(line)
        if argv is None:
            log.warning("notify script %r: cannot split the command line", line)
            return
        task = asyncio.get_running_loop().create_task(
            run_command([*argv, *args], timeout=60.0, user=self.user)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Waits (bounded) for the notify scripts still running, e.g. notify_stop on exit."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
