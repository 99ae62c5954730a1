"""Run the C kernels under AddressSanitizer + UndefinedBehaviorSanitizer on the fuzzed forward inputs.

Spec: IO-17. Usage (repository root):

    python tests/fuzz/sanitize_forward.py [--per-target N] [--seed S]

Builds a sanitizer variant of the cffi extension `minadapters.ops._native` from native/src (-O1 -g
-fsanitize=address,undefined -fno-sanitize-recover=all, no OpenMP) into a temporary directory,
re-executes itself with the ASan runtime preloaded, puts that directory first on
`minadapters.ops.__path__` (so `minadapters.ops.native` loads the instrumented build, checked), then
feeds the inputs of the `forward[bert]` / `forward[gpt2]` fuzz targets (tests/fuzz/fuzz_targets.py,
the same deterministic generator as fuzz_run.py) to both backends. A sanitizer report aborts the
process (non-zero exit); a numpy/native disagreement or an undocumented error type is counted and
fails the run. native/run_sanitizers.sh can call this after its C tests.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SAN_FLAGS = ["-O1", "-g", "-std=c99", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=all"]
_MARK = "MINADAPTERS_SANITIZED_BUILD"


def _build(outdir: str) -> str:
    """Compile the instrumented extension; returns the directory that holds minadapters/ops/_native*.so."""
    spec = importlib.util.spec_from_file_location("build_native", os.path.join(ROOT, "native", "build_native.py"))
    bn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bn)
    from cffi import FFI
    ffi = FFI()
    with open(bn.HEADER) as f:
        ffi.cdef(f.read())
    ffi.set_source(bn.MODULE, '#include <stdint.h>\n#include "minadapters.h"\n', sources=bn.SOURCES,
                   include_dirs=[bn.INCLUDE], extra_compile_args=SAN_FLAGS,
                   extra_link_args=["-fsanitize=address,undefined", "-lm"])
    so = ffi.compile(tmpdir=outdir)
    pkg = os.path.join(outdir, "san", "minadapters", "ops")
    os.makedirs(pkg, exist_ok=True)
    dest = os.path.join(pkg, os.path.basename(so))
    os.replace(so, dest)
    return pkg


def _runtime() -> str:
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run(["gcc", "-print-file-name=" + name], capture_output=True, text=True).stdout.strip()
        if os.path.isabs(path) and os.path.exists(path):
            libs.append(path)
    return ":".join(libs)


def _run(pkg: str, per_target: int, seed: int, self_test: bool = False) -> int:
    sys.path[:0] = [HERE, ROOT]
    import minadapters.ops
    minadapters.ops.__path__.insert(0, pkg)                  # the instrumented _native wins
    from minadapters.ops import native  # noqa: F401  (loads the extension through the package path)
    import minadapters.ops._native as ext
    if not os.path.abspath(ext.__file__).startswith(os.path.abspath(pkg)):
        print(f"sanitize_forward: loaded {ext.__file__}, not the sanitizer build", file=sys.stderr)
        return 2
    if self_test:        # prove the build is instrumented: read past a heap buffer; ASan must abort here
        import numpy as np
        x, w, y = np.zeros(1024, np.float32), np.zeros(1024, np.float32), np.zeros(4096, np.float32)
        ptr = lambda a: ext.ffi.from_buffer("float[]", a)  # noqa: E731
        ext.lib.ma_linear_f32(ptr(y), ptr(x), ptr(w), ext.ffi.NULL, 4, 1024, 4)
        print("sanitize_forward: self-test read out of bounds without a report", file=sys.stderr)
        return 3
    import fuzz_targets
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        for target in (fuzz_targets.Forward("bert"), fuzz_targets.Forward("gpt2")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target.setup(work)
            counts = {"accepted": 0, "rejected": 0, "undocumented": 0, "disagree": 0}
            for i in range(per_target):
                data = target.generate(random.Random(f"{seed}:{target.name}:{i}"), i)
                try:
                    target.run(data)
                    counts["accepted"] += 1
                except fuzz_targets.BackendDisagreement:
                    counts["disagree"] += 1
                except target.allowed:
                    counts["rejected"] += 1
                except Exception as e:  # noqa: BLE001
                    counts["undocumented"] += 1
                    print(f"  input {i}: {type(e).__name__}: {str(e)[:200]}")
            failures += counts["undocumented"] + counts["disagree"]
            print(f"sanitize_forward {target.name}: {per_target} inputs, " +
                  ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"sanitize_forward: {'FAILED' if failures else 'passed'} (no sanitizer report)")
    return 1 if failures else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-target", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument("--self-test", action="store_true", help="read out of bounds once: must abort with a report")
    ap.add_argument("--pkg", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if os.environ.get(_MARK):
        return _run(args.pkg, args.per_target, args.seed, args.self_test)
    with tempfile.TemporaryDirectory() as out:
        pkg = _build(out)
        env = dict(os.environ, LD_PRELOAD=_runtime(), ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1",
                   UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1", **{_MARK: "1"})
        cmd = [sys.executable, os.path.abspath(__file__), "--pkg", pkg, "--per-target", str(args.per_target),
               "--seed", str(args.seed)] + (["--self-test"] if args.self_test else [])
        return subprocess.run(cmd, env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
