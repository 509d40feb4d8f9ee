"""nbthread: the servers' `maxconn` and `maxqueue` counted for the whole process.

haproxy's threads share one `srv->served` and one queue count per server, so
`maxconn 2` means two sessions on that server whichever threads carry them.
keeplb's workers are processes: the master gives each generation of workers
one shared memory table (a memfd, inherited by every worker of the
generation) holding, for every server, the sessions it serves and the
clients waiting for it, and for every backend the clients waiting in its
queue, all workers together. A worker takes a server slot only if the
process-wide count is below the server's maxconn (Backend.take), and queues
otherwise; a worker that frees a slot while another worker's clients wait
for it tells them through the master (sync's `wake` line), as haproxy's
process_srv_queue serves any thread's waiter.

Each count is kept twice: the process-wide total, which the workers read and
test, and one cell per worker, which only says how much of the total that
worker holds: when a worker dies its sessions die with it, and the master
takes its cells out of the totals (reclaim) before it starts the replacement.

Every change is an atomic instruction on the shared memory (keeplb/lb/_shared.c,
built with the relay). Where that is not built, each change holds an fcntl
lock on the whole table (lockf) instead: the kernel drops a dead process's
lock, so a worker killed in the middle of a change never blocks the others.
Only servers with a `maxconn` (and backends queueing for them) pay for it;
the others never touch the table.

Layout: one signed 64-bit count per entry, `entries` entries per row; row 0
holds the totals, row w the cells of worker w (1..nbthread). Entry order:
the config's signature (row 0 only), then for each backend in config order,
its queue, then for each of its servers, served and queued. Every worker of a generation reads the same config, so
they agree on the order.
"""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keeplb.lb import native

if TYPE_CHECKING:
    from keeplb.config.model import HaproxyConfig

log = logging.getLogger("keeplb.lb")

ENV_SHARED_FD = "KEEPLB_SHARED_FD"
_COUNT = struct.Struct("=q")
_ATOMIC = native.load_c_extension("keeplb.lb._shared")
Shape = Sequence[tuple[str, Sequence[str]]]


def shape(cfg: HaproxyConfig) -> list[tuple[str, list[str]]]:
    """Each backend (backend or listen section, not disabled) of `cfg` in
    config order, with its servers' names: what the table holds, as the
    master and every worker see it."""
    return [(p.name, [s.name for s in p.servers]) for p in cfg.proxies
            if not p.disabled and p.kind.has_backend]


def entry_count(backends: Shape) -> int:
    return 1 + sum(1 + 2 * len(servers) for _, servers in backends)


def signature(backends: Shape) -> int:
    """What entry 0 of the totals holds: a worker whose config names other
    backends or servers (a file edited since the generation started) must
    not read their counts as its own."""
    return zlib.crc32(json.dumps([[be, list(servers)] for be, servers in backends]).encode())


def entries(backends: Shape) -> dict[tuple[str, str], tuple[int, int]]:
    """(backend, server) -> (served entry, queued entry); (backend, '') ->
    (queue entry, queue entry)."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    i = 1  # entry 0: the signature
    for be, servers in backends:
        found[(be, "")] = (i, i)
        i += 1
        for name in servers:
            found[(be, name)] = (i, i + 1)
            i += 2
    return found


class SharedCounts:
    """One generation's table, in the master or in a worker (`worker` 0: the
    master, which only reclaims), for the backends and servers of `backends`
    (shape())."""

    def __init__(self, fd: int, backends: Shape, workers: int, worker: int) -> None:
        self.fd = fd
        self.index = entries(backends)
        self.entries = entries_ = entry_count(backends)
        self.workers = workers
        self.worker = worker
        size = max(1, (workers + 1) * entries_) * _COUNT.size
        if os.fstat(fd).st_size != size:
            raise ValueError(f"shared table is {os.fstat(fd).st_size} bytes, not {size}")
        self.map = mmap.mmap(fd, size)
        # the C build's atomic operations, or None: the locked ones below
        self.atomic: Any = _ATOMIC
        self._cell = worker * entries_ * _COUNT.size
        if worker == 0 and not any(self.map[:_COUNT.size]):
            _COUNT.pack_into(self.map, 0, signature(backends))
        elif self.get(0) != signature(backends):
            self.map.close()
            raise ValueError("shared table is for other backends or servers")

    @classmethod
    def create(cls, backends: Shape, workers: int) -> SharedCounts:
        """The master's new table (zeroed); its descriptor is passed to the
        workers (pass_fds)."""
        fd = os.memfd_create("keeplb-shared", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, max(1, (workers + 1) * entry_count(backends)) * _COUNT.size)
            return cls(fd, backends, workers, 0)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def from_env(cls, backends: Shape, workers: int, worker: int) -> SharedCounts | None:
        """A worker's view of the table its master passed (None: none passed,
        or not the table of this config; then each worker keeps its part)."""
        fd = os.environ.pop(ENV_SHARED_FD, "")
        if not fd.isdigit():
            return None
        try:
            return cls(int(fd), backends, workers, worker)
        except (OSError, ValueError) as e:
            log.warning("shared server counts unusable (%s): each worker keeps its "
                        "part of every server's maxconn", e)
            return None

    def get(self, i: int) -> int:
        """The process-wide count of entry `i` (read without the lock: a
        64-bit aligned load is never torn; the answer may be a moment old)."""
        return int(_COUNT.unpack_from(self.map, i * 8)[0])

    def mine(self, i: int) -> int:
        return int(_COUNT.unpack_from(self.map, self._cell + i * 8)[0])

    def _lock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def _add(self, i: int, delta: int) -> int:
        total = self.get(i) + delta
        _COUNT.pack_into(self.map, i * 8, total)
        off = self._cell + i * 8
        _COUNT.pack_into(self.map, off, int(_COUNT.unpack_from(self.map, off)[0]) + delta)
        return total

    def try_take(self, i: int, limit: int) -> bool:
        """One more on entry `i` if the total is below `limit` (0: no limit)."""
        if self.atomic is not None:
            return bool(self.atomic.take(self.map, i * 8, self._cell + i * 8, limit))
        self._lock()
        try:
            if limit > 0 and self.get(i) >= limit:
                return False
            self._add(i, 1)
            return True
        finally:
            self._unlock()

    def add(self, i: int, delta: int) -> int:
        """Entry `i` changed by `delta` for this worker; returns the new total."""
        if self.atomic is not None:
            return int(self.atomic.add(self.map, i * 8, self._cell + i * 8, delta))
        self._lock()
        try:
            return self._add(i, delta)
        finally:
            self._unlock()

    def reclaim(self, worker: int) -> int:
        """In the master, once worker `worker` has exited: what it held leaves
        the totals and its cells are zeroed (its replacement starts from 0).
        Returns how much it held."""
        if not 1 <= worker <= self.workers:
            return 0
        held = 0
        base = worker * self.entries * 8
        if self.atomic is not None:
            for i in range(self.entries):
                held += abs(int(self.atomic.reclaim(self.map, i * 8, base + i * 8)))
            return held
        self._lock()
        try:
            for i in range(self.entries):
                n = int(_COUNT.unpack_from(self.map, base + i * 8)[0])
                if n:
                    held += abs(n)
                    _COUNT.pack_into(self.map, i * 8, self.get(i) - n)
                    _COUNT.pack_into(self.map, base + i * 8, 0)
        finally:
            self._unlock()
        return held

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)
