"""Compile the relay's hot modules with mypyc, and its C extensions, in place.

    .venv/bin/python tools/build_native.py [--clean]

The sources stay plain, typed Python and run as such wherever this has not
run (no compiler, `pip install .`); keeplb.lb loads the sources instead of a
build older than them. Compiled, a new connection costs about a third less
CPU (bench/connbench.py). `make` runs this whenever one of them changed.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import sys
from types import ModuleType

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _native() -> ModuleType:
    """keeplb/lb/native.py by its path: importing the keeplb.lb package
    would load the (stale) relay for nothing."""
    spec = importlib.util.spec_from_file_location(
        "_keeplb_native", os.path.join(ROOT, "keeplb", "lb", "native.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


native = _native()
COMPILED: tuple[str, ...] = native.COMPILED
compiled_files = native.compiled_files


def clean() -> None:
    for path in compiled_files(ROOT):
        os.unlink(path)


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution, Extension

    os.chdir(ROOT)
    clean()
    sources = [m.replace(".", "/") + ".py" for m in COMPILED]
    # A dotted group name puts mypyc's shared library inside the package, where
    # it is found wherever keeplb is imported from (not only from this tree).
    exts = mypycify(sources, opt_level="3", target_dir="build/native",
                    group_name="keeplb.lb.relay")
    for name in native.C_EXTENSIONS:
        exts.append(Extension(name, [name.replace(".", "/") + ".c"],
                              extra_compile_args=["-O2", "-Wall", "-Werror"]))
    dist = Distribution({"name": "keeplb-native", "ext_modules": exts})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True  # type: ignore[attr-defined]
    cmd.build_temp = "build/native/temp"  # type: ignore[attr-defined]
    dist.run_command("build_ext")
    # build_ext keeps the build directory's times, and an unchanged shim is
    # not rebuilt at all: date them now, which is what keeplb.lb.native compares.
    for path in compiled_files(ROOT):
        os.utime(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = ap.parse_args()
    if args.clean:
        clean()
    else:
        build()
        print("compiled:", ", ".join(sorted(glob.glob("keeplb/lb/*.so"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
