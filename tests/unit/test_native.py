"""The relay's compiled build (tools/build_native.py, keeplb.lb.native): used
when it is current, never when a source is newer than it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from keeplb.lb import native

ROOT = Path(__file__).resolve().parents[2]


def _tree(tmp: Path) -> Path:
    shutil.copytree(ROOT / "keeplb", tmp / "keeplb",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return tmp


def _fake_build(root: Path, age_s: float) -> None:
    """Files named like a mypyc build (not loadable), dated `age_s` ago."""
    newest = max(os.path.getmtime(root.joinpath(*m.split(".")).with_suffix(".py"))
                 for m in native.COMPILED)
    t = newest - age_s
    for m in native.COMPILED:
        so = root.joinpath(*m.split(".")).with_suffix(".cpython-311-x86_64-linux-gnu.so")
        so.write_bytes(b"not an ELF file")
        os.utime(so, (t, t))


def test_no_build_is_not_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert native.compiled_files(str(root)) == []
    assert not native.stale(str(root))


def test_a_build_older_than_a_source_is_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _fake_build(root, age_s=-60)  # newer than the sources
    assert not native.stale(str(root))
    _fake_build(root, age_s=60)
    assert native.stale(str(root))
    # One module built and not the other: stale too.
    next(iter(root.glob("keeplb/lb/reactor.cpython-*.so"))).unlink()
    _fake_build(root, age_s=-60)
    next(iter(root.glob("keeplb/lb/reactor.cpython-*.so"))).unlink()
    assert native.stale(str(root))


def test_a_stale_build_is_not_imported(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _fake_build(root, age_s=60)
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, "-c", "import keeplb.lb.proxy as p, keeplb.lb.native as n; "
                               "print(p.__file__, n.mode())"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(root / "keeplb/lb/proxy.py"), "interpreted"]
    assert "older than its source" in out.stderr


def test_a_current_build_is_what_runs() -> None:
    import keeplb.lb.proxy  # noqa: F401

    if not native.compiled_files() or native.stale():
        assert native.mode() == "interpreted"
    else:
        assert native.mode() == "compiled"


def test_the_build_loads_from_any_directory(tmp_path: Path) -> None:
    """mypyc's shared library lives in the package, not beside it: keeplb as
    installed (editable) runs compiled from any working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", "import keeplb.lb.proxy, keeplb.lb.native as n; print(n.mode())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    built = bool(native.compiled_files()) and not native.stale()
    assert out.stdout.strip() == ("compiled" if built else "interpreted")
