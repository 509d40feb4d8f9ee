"""`cpu-map`: each worker process runs on the CPUs its thread number is mapped to.

keeplb's worker N stands for haproxy's thread N, so `cpu-map auto:1/1-2 0-1`
puts worker 1 on CPU 0 and worker 2 on CPU 1; the master is not bound, as
haproxy's master is not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

log = logging.getLogger("keeplb.lb")


def cpu_list(cpus: Iterable[int]) -> str:
    """0,1,2,5 -> '0-2,5' (the kernel's and taskset's notation)."""
    parts: list[str] = []
    run: list[int] = []
    for c in sorted(set(cpus)):
        if run and c != run[-1] + 1:
            parts.append(_span(run))
            run = []
        run.append(c)
    if run:
        parts.append(_span(run))
    return ",".join(parts)


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def bind_worker(cpu_map: Mapping[int, frozenset[int]], worker: int) -> frozenset[int] | None:
    """Binds this process as `cpu-map` maps thread `worker`; returns the CPUs
    bound, None when the thread is not mapped or the kernel refused (logged,
    and the worker runs unbound rather than not at all)."""
    cpus = cpu_map.get(worker)
    if not cpus:
        return None
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        log.warning("cpu-map: cannot bind worker %d to CPU %s: %s; it runs unbound",
                    worker, cpu_list(cpus), exc.strerror or exc)
        return None
    return cpus
