"""Which relay modules run compiled (mypyc, see tools/build_native.py).

A compiled module sits next to its source as NAME.cpython-*.so, and Python
imports it in preference to the .py. A build older than any of the sources
(edited since) must not be used: load() then imports the sources explicitly,
so that what runs is always what the .py files say.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
from types import ModuleType

# Compiled together (one mypyc group): calls between them are native. In
# import order: load() brings in each one's dependencies before it.
COMPILED = ("keeplb.lb.server", "keeplb.lb.balance", "keeplb.lb.reactor", "keeplb.lb.proxy")

# Written in C (not mypyc), with a Python twin that runs when they are not built.
C_EXTENSIONS = ("keeplb.lb._fdsock", "keeplb.lb._shared")

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _paths(root: str, module: str) -> tuple[str, list[str]]:
    base = os.path.join(root, *module.split("."))
    return base + ".py", glob.glob(base + ".cpython-*.so")


def compiled_files(root: str = _PACKAGE_ROOT) -> list[str]:
    """The compiled modules, mypyc's shared library for them and the C
    extensions, if built."""
    found = [so for m in COMPILED + C_EXTENSIONS for so in _paths(root, m)[1]]
    shared = glob.glob(os.path.join(root, "keeplb", "lb", "*__mypyc.cpython-*.so"))
    return found + shared


def load_c_extension(module: str, root: str = _PACKAGE_ROOT) -> ModuleType | None:
    """The C extension `module` if it is built and not older than its .c
    source (an installed package may have no source), else None."""
    base = os.path.join(root, *module.split("."))
    sos = glob.glob(base + ".cpython-*.so")
    if not sos:
        return None
    try:
        if min(map(os.path.getmtime, sos)) < os.path.getmtime(base + ".c"):
            print(f"keeplb: {module} is older than its source; using the Python version "
                  "(`make` rebuilds it)", file=sys.stderr)
            return None
    except FileNotFoundError:
        pass
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def stale(root: str = _PACKAGE_ROOT) -> bool:
    """True when a compiled module is missing for one source or older than one."""
    newest_src = 0.0
    oldest_so = float("inf")
    count = 0
    for m in COMPILED:
        src, sos = _paths(root, m)
        newest_src = max(newest_src, os.path.getmtime(src))
        for so in sos:
            count += 1
            oldest_so = min(oldest_so, os.path.getmtime(so))
    return 0 < count and (count < len(COMPILED) or oldest_so < newest_src)


def load() -> None:
    """Called first thing by keeplb.lb: import the sources of a stale build."""
    if not stale():
        return
    print("keeplb: the compiled relay is older than its source; running the source "
          "(`make` rebuilds it)", file=sys.stderr)
    for m in COMPILED:
        src = _paths(_PACKAGE_ROOT, m)[0]
        spec = importlib.util.spec_from_file_location(m, src)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[m] = mod
        spec.loader.exec_module(mod)


def mode() -> str:
    """'compiled' or 'interpreted': how the relay runs in this process."""
    proxy = sys.modules.get("keeplb.lb.proxy")
    return "compiled" if proxy is not None and str(proxy.__file__).endswith(".so") else \
        "interpreted"


def c_mode() -> str:
    """'c' or 'python': which socket calls the relay makes (keeplb.lb.fdsock)."""
    from keeplb.lb import fdsock

    return fdsock.IMPLEMENTATION
