"""Run every mutant (or those named) as the driver against the clean reference; print the kill table.

    python -m conformance.mutants.run [--only ID ...] [--timeout 300] [--full]

A mutant is KILLED when the suite fails on it (pytest exit 1), SURVIVED when the suite passes (exit 0), and
INVALID otherwise (no test selected, collection error, timeout). By default each mutant runs the tests of its
``select`` expression (fast: the tests that exercise the mutated function); ``--full`` runs the whole suite.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from conformance.mutants.mutants import ENV, MUTANTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = "conformance.mutants.mutants:make_driver"


def run_one(m, timeout, full):
    env = dict(os.environ, **{ENV: m.id}, MINADAPTERS_HYPOTHESIS_PROFILE="ci", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--driver={DRIVER}", "--reference=reference", "-q", "-x",
           "-p", "no:randomly", "-p", "no:cacheprovider"] + ([] if full else ["-k", m.select])
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "INVALID (timeout)", time.time() - t0, ""
    out = proc.stdout + proc.stderr
    first = next((line for line in out.splitlines() if line.startswith(("WRONG_", "NOT_", "ERROR", "FAILED",
                                                                         "UNREADABLE"))), "")
    verdict = {0: "SURVIVED", 1: "KILLED"}.get(proc.returncode, f"INVALID (pytest exit {proc.returncode})")
    return verdict, time.time() - t0, first[:110]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if a.only is None or m.id in a.only]
    rows, killed = [], 0
    for m in chosen:
        verdict, secs, first = run_one(m, a.timeout, a.full)
        killed += verdict == "KILLED"
        rows.append(f"| `{m.id}` | {m.what} | `{m.target.split(':')[1]}` | {verdict} | {secs:.0f}s | {first} |")
        print(rows[-1], flush=True)
    valid = sum(1 for r in rows if "INVALID" not in r)
    print(f"\nkilled {killed} of {valid} valid mutants ({len(rows)} run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
