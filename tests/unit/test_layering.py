"""Layering: only the IO shell may touch asyncio, socket or pyroute2.

Reads the imports of every module under keeplb/ (ast, not import: nothing is
executed). The pure cores must also not reach an IO module through another
keeplb module, nor read a clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "keeplb"
IO_MODULES = {"asyncio", "socket", "pyroute2", "uvloop"}
# The pure cores also stay away from processes and raw event loops.
CORE_FORBIDDEN = IO_MODULES | {"_socket", "select", "selectors", "subprocess", "threading"}
IO_NAMES = {"net.py", "daemon.py", "checks.py", "proxy.py", "cli.py"}
# vrrp/scripts.py runs vrrp_script / notify processes for daemon.py: shell too.
IO_PATHS = {"lb/app.py", "lb/runtime.py", "lb/log.py", "lb/reactor.py", "lb/fdsock.py",
            "vrrp/scripts.py"}
IO_DIRS = {"proc", "lab"}
PURE_CORES = {
    "keeplb.vrrp.packet",
    "keeplb.vrrp.timers",
    "keeplb.vrrp.machine",
    "keeplb.vrrp.track",
    "keeplb.lb.balance",
    "keeplb.lb.health",
    "keeplb.lb.rules",
}
CLOCKS = {"time", "datetime"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Absolute names of every module `path` imports, at any depth of its code.

    `package` is the package `path` belongs to (for relative imports); by
    default it is worked out from the path under keeplb/.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return found


def may_do_io(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).as_posix()
    return path.name in IO_NAMES or rel in IO_PATHS or rel.split("/")[0] in IO_DIRS


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_shell_does_io(name: str) -> None:
    path = MODULES[name]
    if may_do_io(path):
        return
    bad = sorted(m for m in imports_of(path) if top(m) in IO_MODULES)
    assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}; only the IO shell may"


@pytest.mark.parametrize("core", sorted(PURE_CORES & set(MODULES)))
def test_pure_cores_stay_pure(core: str) -> None:
    seen: set[str] = set()
    todo = [core]
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        path = MODULES[name]
        found = imports_of(path)
        io = sorted(m for m in found if top(m) in CORE_FORBIDDEN)
        assert not io, f"{core} reaches {io} through {name}"
        clocks = sorted(m for m in found if top(m) in CLOCKS)
        assert not clocks, f"{core} reads a clock ({clocks}) through {name}: time is an argument"
        assert not may_do_io(path), f"{core} imports the IO module {name}"
        todo.extend(m for m in found if m in MODULES and m != name)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\n"
        "from asyncio import sleep\n"
        "def f() -> None:\n"
        "    import pyroute2.iproute\n"
        "from .net import VrrpSocket\n"
    )
    names = imports_of(bad, package="keeplb.vrrp")
    assert {"asyncio", "pyroute2.iproute", "keeplb.vrrp.net"} <= names
    assert {top(m) for m in names} & IO_MODULES == {"asyncio", "pyroute2"}
