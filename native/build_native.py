"""cffi build script for ``minadapters.ops._native`` (the native CPU backend).  Spec: spec/ops.md.

Used two ways:
  * by setup.py through ``cffi_modules=["native/build_native.py:ffibuilder"]`` (``pip install .``);
  * directly, ``python native/build_native.py``, for an in-place development build that leaves
    ``minadapters/ops/_native*.so`` next to ``minadapters/ops/native.py``, its only importer.

The header native/include/minadapters.h is passed to ``cdef`` unchanged.  OpenMP is used when a
trial compile with ``-fopenmp`` succeeds; otherwise the kernels run on one thread.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INCLUDE = os.path.join(HERE, "include")
HEADER = os.path.join(INCLUDE, "minadapters.h")
SOURCES = sorted(glob.glob(os.path.join(HERE, "src", "*.c")))
MODULE = "minadapters.ops._native"      # lives inside the ops package: only ops/native.py imports it
BASE_FLAGS = ["-O3", "-std=c99", "-fno-math-errno", "-Wall"]


def _compiler() -> list:
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def openmp_flags() -> list:
    """["-fopenmp"] when the C compiler accepts it and can link a tiny OpenMP program, else []."""
    if os.environ.get("MINADAPTERS_NO_OPENMP"):
        return []
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n>0?0:1;}\n"
    with tempfile.TemporaryDirectory() as d:
        c = os.path.join(d, "t.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(_compiler() + ["-fopenmp", c, "-o", os.path.join(d, "t")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return []
    return ["-fopenmp"] if r.returncode == 0 else []


def make_ffibuilder(relative: bool = True) -> FFI:
    """The FFI for minadapters.ops._native; ``relative`` gives setuptools root-relative source paths."""
    with open(HEADER) as f:
        cdef = f.read()
    omp = openmp_flags()
    ffi = FFI()
    ffi.cdef(cdef)
    ffi.set_source(MODULE, '#include <stdint.h>\n#include "minadapters.h"\n',
                   sources=[os.path.relpath(p, ROOT) if relative else p for p in SOURCES], include_dirs=[INCLUDE],
                   extra_compile_args=BASE_FLAGS + omp, extra_link_args=omp + ["-lm"])
    return ffi


if __name__ == "__main__":
    ffibuilder = make_ffibuilder(relative=False)
    # In-place build: compile in a temp dir, then copy the extension into minadapters/ops/.
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        so = ffibuilder.compile(tmpdir=tmp, verbose=bool(os.environ.get("VERBOSE")))
        dest = os.path.join(ROOT, *MODULE.split(".")[:-1], os.path.basename(so))
        shutil.copy2(so, dest)
    print(f"built {os.path.relpath(dest, os.getcwd())}", file=sys.stderr)
else:
    ffibuilder = make_ffibuilder()
