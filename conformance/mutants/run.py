"""Run every mutant (or those named) as the driver against the clean reference; print the kill table.

    python -m conformance.mutants.run [--only ID ...] [--record] [--timeout 600]

How a mutant's tests are chosen (honest subset, not a hand-written guess):
  1. Record once: the whole suite runs with the *clean* minadapters driver carrying a recorder on every mutant's
     target function (mutants.RecordingDriver). While a driver call runs (exactly when a mutant would act), a call
     of a target records the current test's node id. The result, {target: [node ids]}, is written to
     ``conformance/mutants/reach.json`` (ignored by git; ``--record`` rewrites it, a missing file is recorded).
  2. Each mutant then runs exactly the tests that reached its target, with ``-x`` (the profile is ``ci``:
     derandomized, so the draws are the recorded ones). Every other test never calls the mutated function during
     a driver call, so it runs the same code as the clean driver, which passes the whole suite (the recording
     run must pass; the runner stops otherwise). Running the whole suite per mutant would give the same verdicts.

A mutant is KILLED when the suite fails on it (pytest exit 1), SURVIVED when its tests pass (exit 0) or when no
test reaches its target (then "not reached": a blind spot), INVALID otherwise (collection error, timeout).
Mutants with ``excluded`` set (equivalent at the suite's precision, or out of the protocol's scope) are listed
with the reason and not run or counted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from conformance.mutants.mutants import ENV, MUTANTS, REACH_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = "conformance.mutants.mutants:make_driver"
RECORDER = "conformance.mutants.mutants:make_recording_driver"
REACH = os.path.join(ROOT, "conformance", "mutants", "reach.json")
BASE = ["-q", "-p", "no:randomly", "-p", "no:cacheprovider", "--reference=reference"]


def _env(**extra):
    return dict(os.environ, MINADAPTERS_HYPOTHESIS_PROFILE="ci", OMP_NUM_THREADS="1", **extra)


def record(timeout):
    """Step 1: the whole suite on the clean driver with recorders; returns {target: [node ids]}."""
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--driver={RECORDER}", "-rf"] + BASE
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(**{REACH_ENV: REACH}), capture_output=True, text=True,
                          timeout=timeout)
    with open(REACH + ".log", "w", encoding="utf-8") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        tail = "\n".join([ln for ln in lines if ln.startswith(("FAILED", "WRONG_", "ERROR", "NOT_"))][:20]
                         + lines[-3:])
        raise SystemExit(f"the recording run (clean driver) did not pass (exit {proc.returncode}):\n{tail}")
    with open(REACH, encoding="utf-8") as f:
        return json.load(f)


def run_one(m, tests, timeout):
    if not tests:
        return "SURVIVED (not reached)", 0.0, ""
    cmd = [sys.executable, "-m", "pytest", f"--driver={DRIVER}", "-x", "-rf"] + BASE + list(tests)
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(**{ENV: m.id}), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "INVALID (timeout)", time.time() - t0, ""
    out = proc.stdout + proc.stderr
    failed = next((line for line in out.splitlines() if line.startswith("FAILED ")), "")
    test = failed.split()[1].split("::")[-1] if failed else ""
    kind = failed.split(" - ", 1)[1].split()[0] if " - " in failed else ""
    verdict = {0: "SURVIVED", 1: "KILLED"}.get(proc.returncode, f"INVALID (pytest exit {proc.returncode})")
    return verdict, time.time() - t0, f"`{test}` {kind}".strip() if test else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--record", action="store_true", help="re-record reach.json first")
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args(argv)
    if a.record or not os.path.exists(REACH):
        reach = record(a.timeout)
    else:
        with open(REACH, encoding="utf-8") as f:
            reach = json.load(f)
    chosen = [m for m in MUTANTS if a.only is None or m.id in a.only]
    killed = counted = 0
    for m in chosen:
        if m.excluded:
            print(f"| `{m.id}` | {m.what} | `{m.target.split(':')[1]}` | EXCLUDED | {m.excluded} |", flush=True)
            continue
        tests = reach.get(m.target, [])
        verdict, secs, first = run_one(m, tests, a.timeout)
        counted += "INVALID" not in verdict
        killed += verdict == "KILLED"
        print(f"| `{m.id}` | {m.what} | `{m.target.split(':')[1]}` | {verdict} | {len(tests)} tests, {secs:.0f}s "
              f"| {first} |", flush=True)
    print(f"\nkilled {killed} of {counted} counted mutants ({len(chosen)} listed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
