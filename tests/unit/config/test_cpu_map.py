"""`cpu-map`: parsed as haproxy 2.6 parses it (checked against `haproxy -c`),
resolved to thread -> CPUs, applied by each worker (keeplb.proc.affinity)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keeplb.config.haproxy import parse_text
from keeplb.proc.affinity import bind_worker, cpu_list

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

# (cpu-map line, keeplb's thread -> CPUs for threads 1-4, or the error text)
CASES = [
    ("cpu-map 1/1 0", {1: {0}}),
    ("cpu-map 1/all 0-3", {t: {0, 1, 2, 3} for t in range(1, 5)}),
    ("cpu-map 1 0-1", {t: {0, 1} for t in range(1, 5)}),  # "1" is "1/all"
    ("cpu-map auto:1/1-4 0-3", {1: {0}, 2: {1}, 3: {2}, 4: {3}}),
    ("cpu-map auto:1/1-4 3 2 1 0", {1: {0}, 2: {1}, 3: {2}, 4: {3}}),
    ("cpu-map auto:1/1-4 0-1 2-3", {1: {0}, 2: {1}, 3: {2}, 4: {3}}),
    ("cpu-map auto:1/even 0-31", {2: {0}, 4: {1}}),
    ("cpu-map auto:1/odd 4-35", {1: {4}, 3: {5}}),
    ("cpu-map auto:1/1-4 0", {t: {0} for t in range(1, 5)}),
    ("cpu-map 1/2-1 5", {1: {5}, 2: {5}}),  # a reversed range is read upwards
    ("cpu-map 1/1 3-1", {1: {1, 2, 3}}),
    ("cpu-map 1/3- 1", {3: {1}, 4: {1}}),
    ("cpu-map 2/1 0", {}),  # "Any process IDs above 1 ... are ignored"
    ("cpu-map 1/1 x", "cpu-map : 'x' is not a CPU range."),
    ("cpu-map 1/x 0", "cpu-map : 'x' is not a valid number/range."),
    ("cpu-map 1/70 0", "cpu-map : '70' is not a valid number/range. It supports numbers from 1 to 64."),
    ("cpu-map 0/1 0", "cpu-map : '0' is not a valid number/range. It supports numbers from 1 to 64."),
    ("cpu-map 1/-2 1", "cpu-map : '-2' is not a valid number/range. It supports numbers from 1 to 64."),
    ("cpu-map auto:1/1 0-3", "cpu-map : PROC/THREAD range and CPU sets must have the same size to be "
                             "automatically bound"),
    ("cpu-map auto:1/all 0-1", "cpu-map : PROC/THREAD range and CPU sets must have the same size to be "
                               "automatically bound"),
    ("cpu-map 1", "cpu-map expects a process number"),
]


def config(line: str) -> str:
    return (f"global\n    nbthread 4\n    {line}\ndefaults\n    mode tcp\n    timeout client 1s\n"
            "    timeout server 1s\n    timeout connect 1s\nlisten a\n    bind 127.0.0.1:1\n"
            "    server s 127.0.0.1:2\n")


@pytest.mark.parametrize(("line", "want"), CASES, ids=[c[0] for c in CASES])
def test_cpu_map_resolves_as_documented(line: str, want: dict[int, set[int]] | str) -> None:
    cfg, diags = parse_text(config(line))
    if isinstance(want, str):
        assert [d.message for d in diags.errors][:1] and diags.errors[0].message.startswith(want)
        return
    assert not diags.has_errors and not diags.warnings, [str(d) for d in diags]
    got = {t: set(c) for t, c in cfg.global_.cpu_map.items() if t <= 4}
    assert got == want


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
@pytest.mark.parametrize(("line", "want"), CASES, ids=[c[0] for c in CASES])
def test_same_verdict_and_message_as_haproxy(line: str, want: object, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config(line))
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)
    if isinstance(want, str):
        assert proc.returncode == 1 and want in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr


def test_later_lines_replace_earlier_ones_where_they_overlap() -> None:
    cfg, diags = parse_text(config("cpu-map 1/all 0-3\n    cpu-map 1/2 1"))
    assert not diags.has_errors
    assert cfg.global_.cpu_map[1] == {0, 1, 2, 3} and cfg.global_.cpu_map[2] == {1}


def test_cpu_list_uses_the_kernel_notation() -> None:
    assert cpu_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert cpu_list([3]) == "3"


def test_bind_worker_binds_only_a_mapped_worker() -> None:
    before = os.sched_getaffinity(0)
    one = min(before)
    try:
        assert bind_worker({1: frozenset({one})}, 2) is None
        assert os.sched_getaffinity(0) == before
        assert bind_worker({1: frozenset({one})}, 1) == {one}
        assert os.sched_getaffinity(0) == {one}
    finally:
        os.sched_setaffinity(0, before)


def test_bind_worker_on_a_missing_cpu_warns_and_runs_unbound(caplog: pytest.LogCaptureFixture) -> None:
    before = os.sched_getaffinity(0)
    missing = (os.cpu_count() or 1) + 1000
    assert bind_worker({1: frozenset({missing})}, 1) is None
    assert os.sched_getaffinity(0) == before
    assert f"cpu-map: cannot bind worker 1 to CPU {missing}" in caplog.text
