"""The configs the failover benches and the `keeplb run` test generate are
valid for the originals (keepalived -t, haproxy -c) and for keeplb, and the
gap measurement counts what it says.  No namespaces needed: checks only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench._lab import (
    HAPROXY,
    PY,
    Attempt,
    Vrrp,
    keepalived_conf,
    longest_gap,
    seed_haproxy_cfg,
    write_check_script,
)

KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("vrrp", [Vrrp(2, 1.0), Vrrp(3, 0.1), Vrrp(2, 1.0, multicast=True)],
                         ids=lambda v: v.label.replace(" ", "-"))
def test_keepalived_conf_is_valid_for_both(vrrp: Vrrp, tmp_path: Path) -> None:
    if not Path(KEEPALIVED).exists():
        pytest.skip("keepalived is not installed")
    chk = write_check_script(tmp_path)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(keepalived_conf("lb1", vrrp, priority=100, script=str(chk), script_interval=2))
    ka = _run([KEEPALIVED, "-t", "-l", "-f", str(conf)])
    assert ka.returncode == 0, ka.stdout + ka.stderr
    kl = _run([PY, "-m", "keeplb", "vrrp", "-t", "-f", str(conf)])
    assert kl.returncode == 0, kl.stdout + kl.stderr
    text = conf.read_text()
    assert ("unicast_peer" in text) is (not vrrp.multicast)
    assert ("auth_type PASS" in text) is (vrrp.version == 2)


def test_seed_haproxy_cfg_is_valid_for_both(tmp_path: Path) -> None:
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(seed_haproxy_cfg(tmp_path))
    text = cfg.read_text()
    assert "10.77.0.4:6443" in text and "172.16.0." not in text
    assert "inter 1s downinter 1s rise 2 fall 2" in text
    ha = _run([HAPROXY, "-c", "-f", str(cfg)])
    assert ha.returncode == 0, ha.stdout + ha.stderr
    kl = _run([PY, "-m", "keeplb", "lb", "-c", "-f", str(cfg)])
    assert kl.returncode == 0, kl.stdout + kl.stderr


def _ok(t: float, d: float = 0.001) -> Attempt:
    return Attempt(t, d, True)


def test_longest_gap_uses_completion_times_and_flags_no_recovery() -> None:
    attempts = [_ok(0.0), _ok(0.01), Attempt(0.02, 0.9, False), _ok(0.05, 0.8), _ok(1.0), _ok(1.01)]
    # Successes complete at 0.001, 0.011, 0.85, 1.001, 1.011: the longest gap is
    # 0.011 -> 0.85 (by start times it would be 0.05 -> 1.0).
    gap, recovered = longest_gap(attempts, 0.0, 1.02)
    assert recovered and gap == pytest.approx(0.839)
    gap, recovered = longest_gap(attempts[:2], 0.0, 3.0)
    assert not recovered and gap == pytest.approx(3.0 - 0.011)
    assert longest_gap([], 1.0, 2.0) == (1.0, False)
