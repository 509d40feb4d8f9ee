"""The real haproxy 2.6 as an oracle: `haproxy -c -f` and keeplb agree on every
corpus file, valid or not. Only `-c` runs: nothing listens, nothing is sent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keeplb.config.haproxy import parse

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "haproxy"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)

pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


def haproxy_accepts(path: Path) -> tuple[bool, str]:
    """haproxy -c: exit 0 is valid, 2 'valid but no listener', 1 errors."""
    assert HAPROXY is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPLB_TEST_")}
    proc = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, errors="replace",
                          timeout=30, env=env)
    return proc.returncode != 1, proc.stderr


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.cfg")), ids=lambda p: p.name)
def test_same_verdict_as_haproxy(path: Path) -> None:
    valid, stderr = haproxy_accepts(path)
    _, diags = parse([str(path)], env={})
    assert valid == (not diags.has_errors), (
        f"haproxy says {'valid' if valid else 'invalid'}:\n{stderr}\nkeeplb says:\n"
        + "\n".join(str(d) for d in diags))


def own_warnings(stderr: str) -> list[str]:
    """haproxy's warnings (and the alerts it prints on files it still accepts)."""
    return [line for line in stderr.splitlines() if line.startswith(("[WARNING]", "[ALERT]"))]


@pytest.mark.parametrize("path", sorted(CORPUS.glob("ok-*.cfg")), ids=lambda p: p.name)
def test_same_warnings_as_haproxy(path: Path) -> None:
    """Where haproxy warns keeplb warns, once per haproxy warning; keeplb's own
    'not supported by keeplb' warnings come on top."""
    valid, stderr = haproxy_accepts(path)
    assert valid
    _, diags = parse([str(path)], env={})
    ours = [d for d in diags.warnings if "not supported by keeplb" not in d.message]
    assert len(ours) == len(own_warnings(stderr)), (stderr, [str(d) for d in ours])


@pytest.mark.parametrize("path", sorted((CORPUS.parents[2] / "examples").glob("*.cfg")),
                         ids=lambda p: p.name)
def test_examples_same_warnings_as_haproxy(path: Path) -> None:
    valid, stderr = haproxy_accepts(path)
    _, diags = parse([str(path)])
    assert valid and not diags.has_errors, [str(d) for d in diags]
    # one keeplb warning per haproxy warning, on the same line when haproxy names one
    haproxy_warnings = [line for line in stderr.splitlines() if line.startswith("[WARNING]")]
    assert len(diags.warnings) == len(haproxy_warnings), (stderr, [str(d) for d in diags])
    for ours, theirs in zip(diags.warnings, haproxy_warnings, strict=True):
        if f"{path}:" in theirs and ours.span is not None:
            assert f"{path}:{ours.span.line}]" in theirs


def test_same_first_error_line_on_the_seed() -> None:
    seed = Path("/work/shared/seed/haproxy.cfg")
    if not seed.exists():
        pytest.skip("the seed is not on this machine")
    valid, stderr = haproxy_accepts(seed)
    assert not valid and f"[{seed}:32]" in stderr
    _, diags = parse([str(seed)])
    assert diags.errors[0].span is not None and diags.errors[0].span.line == 32
