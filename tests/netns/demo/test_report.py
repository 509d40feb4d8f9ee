"""The demo's pure parts: summary numbers and the configs generated from the seed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from keeplb.lab import topology as topo
from keeplb.lab.client import Attempt, parse_line
from keeplb.lab.report import Band, holder_at, render_markdown, summarize


def _attempts(start: float, end: float, ok: bool, step: float = 0.01, d: float = 0.003) -> list[Attempt]:
    n = int(round((end - start) / step))
    return [Attempt(start + i * step, d, ok, "api1" if ok else "", "" if ok else "timeout") for i in range(n)]


def test_summary_counts_gap_move_and_failures_after_move() -> None:
    # ok until 10 s, failing 10-12.5 s, ok again from 12.5 s; VIP moves at 12.5 s.
    attempts = _attempts(5, 10, True) + _attempts(10, 12.5, False) + _attempts(12.5, 20, True)
    attempts.append(Attempt(13.0, 2.0, False, err="timeout"))  # one late failure after the move
    samples = [(0.0, "lb1"), (10.0, "none"), (12.5, "lb2")]
    bands = [Band("steady", 5, 9.5), Band("crash", 9.5, 20)]
    steady, crash = summarize(bands, attempts, samples)
    assert (steady.failed, steady.master_start, steady.master_end, steady.moved_at) == (0, "lb1", "lb1", None)
    assert steady.longest_gap_ms == pytest.approx(10, abs=1)
    assert crash.failed == 251
    assert crash.master_start == "lb1" and crash.master_end == "lb2"
    assert crash.moved_at == pytest.approx(3.0)
    assert crash.failed_after_move == 1
    # last ok completes at 9.99+0.003, next at 12.5+0.003
    assert crash.longest_gap_ms == pytest.approx(2510, abs=2)
    md = render_markdown([steady, crash], impl="x", png=None, diffs={"a": "-x\n+y\n"}, totals={})
    assert "| crash | 10.5 | 1051 | 251 | 2510 | lb1 | lb2 | 3.00 | 1 |" in md


def test_holder_at_before_first_sample_is_none() -> None:
    assert holder_at([(5.0, "lb1")], 1.0) == "none"
    assert holder_at([(5.0, "lb1"), (6.0, "lb2")], 5.5) == "lb1"


@pytest.mark.parametrize("line", ["", "{}", "not json", '{"t": "x", "d": 1, "ok": true}', '{"end": true}'])
def test_parse_line_ignores_garbage(line: str) -> None:
    assert parse_line(line) is None


def test_seed_moves_into_the_lab(tmp_path: Path) -> None:
    files = {lb: topo.write_lb_files(lb, tmp_path) for lb in topo.LBS}
    ha = files["lb1"].haproxy_cfg.read_text(encoding="utf-8")
    assert "172.16." not in ha
    assert "server api1 10.77.0.4:6443 check" in ha
    assert f"pidfile     {files['lb1'].pidfile}" in ha
    ka1 = files["lb1"].keepalived_conf.read_text(encoding="utf-8")
    ka2 = files["lb2"].keepalived_conf.read_text(encoding="utf-8")
    assert "unicast_src_ip 10.77.0.2 " in ka1 and "    10.77.0.3 " in ka1
    assert "unicast_src_ip 10.77.0.3 " in ka2 and "    10.77.0.2 " in ka2
    assert "killall" not in ka1 and str(files["lb1"].check_script) in ka1
    assert "nopreempt" in files["lb2"].keepalived_nopreempt.read_text() and "nopreempt" not in ka2
    diff = topo.seed_diff(ka1, topo.SEED_KEEPALIVED_CONF, "keepalived.conf")
    assert '-  script "killall -0 haproxy"' in diff
    # The check script fails with no haproxy and passes for a live pid.
    check = str(files["lb1"].check_script)
    assert subprocess.run([check], check=False).returncode != 0
    files["lb1"].pidfile.write_text("1\n")
    assert subprocess.run([check], check=False).returncode == 0


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_generated_haproxy_cfg_is_valid_for_haproxy(tmp_path: Path) -> None:
    f = topo.write_lb_files("lb1", tmp_path)
    res = subprocess.run(["haproxy", "-c", "-f", str(f.haproxy_cfg)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr


def test_demo_without_root_says_what_it_needs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from keeplb.lab import demo

    monkeypatch.setattr(demo.os, "geteuid", lambda: 1000)
    assert demo.main(["--no-live", "--scenario", "crash"]) == 1
    assert "needs root" in capsys.readouterr().out
