"""The fuzz and fault campaign (spec IO-17). Run from the repository root:

    python tests/fuzz/fuzz_run.py                    # bounded, deterministic (CI): a few minutes
    MINADAPTERS_FUZZ_LONG=1 python tests/fuzz/fuzz_run.py      # release mode: 25x the inputs
    python tests/fuzz/fuzz_run.py --per-target 50 --targets forward --kill-trials 5   # a slice

Each target runs in a forked worker process with RLIMIT_AS = its starting address space + 256 MiB,
so a crash (signal) or a hang (no answer within --timeout seconds) is counted against the input
that caused it and the worker restarts after it. Inputs are derived from (seed, target, index)
only, so every count reproduces; failing inputs are written to --artifacts for replay
(`--replay FILE --targets NAME`). Then kill -9 lands at random points of every save kind and the
directory left behind is loaded: it must hold the old save, the new save, or be refused with a
documented error, never a mix. Exit status 1 if any failure count is not zero.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")          # no OpenMP pool across fork()
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for p in (HERE, ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)

import fuzz_kill  # noqa: E402
import fuzz_targets  # noqa: E402

MEMORY_HEADROOM = 256 * 1024 * 1024
FAILURES = ("crash", "hang", "undocumented", "overalloc", "trace", "disagree")


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _classify(target, data) -> tuple[str, str]:
    try:
        target.run(data)
        return "accepted", ""
    except MemoryError:
        return "overalloc", "MemoryError"
    except fuzz_targets.BackendDisagreement as e:
        return "disagree", str(e)[:300]
    except target.allowed as e:
        return "rejected", type(e).__name__
    except BaseException as e:  # noqa: BLE001  (this is what the campaign counts)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "undocumented", f"{type(e).__name__} at {os.path.basename(tb.filename)}:{tb.lineno}: {str(e)[:200]}"


def _worker(target, seed, start, stop, wfd, replay=None):
    """Child: limit memory, then run inputs start..stop-1, reporting each over the pipe."""
    limit = _vm_size() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    out = os.fdopen(wfd, "w", buffering=1)
    for i in range(start, stop):
        out.write(f"S {i}\n")
        data = replay if replay is not None else _generate(target, seed, i)
        kind, detail = _classify(target, data)
        out.write(json.dumps([i, kind, detail]) + "\n")
        trace = target.trace()
        if trace is not None:
            out.write(json.dumps([i, "trace", trace[:300]]) + "\n")
    out.close()
    os._exit(0)


def _generate(target, seed, i) -> bytes:
    """The input for index i; a mutator that fails (a fuzzer bug, not a finding) falls back to the seed."""
    try:
        return target.generate(random.Random(f"{seed}:{target.name}:{i}"), i)
    except Exception:  # noqa: BLE001
        return target.seeds[i % len(target.seeds)]


def run_target(target, n, seed, timeout, artifacts, replay=None):
    counts = collections.Counter()
    rejected, undocumented, examples = collections.Counter(), collections.Counter(), {}
    i = 0
    while i < n:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _worker(target, seed, i, n, w, replay)
            finally:
                os._exit(3)
        os.close(w)
        reader = os.fdopen(r, "r")
        current, last_done = None, i - 1
        while True:
            ready, _, _ = select.select([reader], [], [], timeout)
            if not ready:                               # hang: no answer for `timeout` seconds
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                counts["hang"] += 1
                _save(artifacts, target, seed, current, "hang")
                break
            line = reader.readline()
            if not line:                                # worker exited
                _, status = os.waitpid(pid, 0)
                if current is not None and current != last_done and not (os.WIFEXITED(status)
                                                                          and os.WEXITSTATUS(status) == 0):
                    counts["crash"] += 1
                    examples.setdefault("crash", f"input {current}: status {status}")
                    _save(artifacts, target, seed, current, "crash")
                break
            if line.startswith("S "):
                current = int(line.split()[1])
                continue
            idx, kind, detail = json.loads(line)
            if kind == "trace":
                counts["trace"] += 1
                examples.setdefault("trace", f"input {idx}: {detail}")
                continue
            last_done = idx
            counts["tried"] += 1
            counts[kind] += 1
            if kind == "rejected":
                rejected[detail] += 1
            elif kind in FAILURES:
                if kind == "undocumented":
                    undocumented[detail.split(" ")[0]] += 1
                examples.setdefault(kind, f"input {idx}: {detail}")
                _save(artifacts, target, seed, idx, kind)
        reader.close()
        if current is None:                             # died before its first input: count it on input i
            counts["crash"] += 1
            examples.setdefault("crash", f"worker died before input {i}")
            current = i
        elif current != last_done:
            counts["tried"] += 1                        # the crashing / hanging input was tried too
        i = current + 1
    return counts, rejected, undocumented, examples


def _save(artifacts, target, seed, index, kind):
    if artifacts is None or index is None:
        return
    os.makedirs(artifacts, exist_ok=True)
    data = _generate(target, seed, index)
    name = f"{kind}-{target.name.replace('[', '_').replace(']', '')}-{seed}-{index}.bin"
    with open(os.path.join(artifacts, name), "wb") as f:
        f.write(data)


def main(argv=None) -> int:
    long_mode = os.environ.get("MINADAPTERS_FUZZ_LONG") == "1"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-target", type=int, default=20000 if long_mode else 800)
    ap.add_argument("--kill-trials", type=int, default=300 if long_mode else 20, help="kill -9 trials per save kind")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MINADAPTERS_FUZZ_SEED", "20260101")))
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds one input may take")
    ap.add_argument("--targets", default="", help="comma-separated substrings of target names")
    ap.add_argument("--artifacts", default=os.environ.get("MINADAPTERS_FUZZ_ARTIFACTS"))
    ap.add_argument("--replay", help="run one saved input file against --targets")
    args = ap.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix="minadapters-fuzz-")
    selected = [t for t in fuzz_targets.all_targets()
                if not args.targets or any(s and s in t.name for s in args.targets.split(","))]
    replay = open(args.replay, "rb").read() if args.replay else None
    failures = 0
    t0 = time.time()
    print(f"fuzz: seed {args.seed}, {args.per_target} inputs per target, memory limit +{MEMORY_HEADROOM >> 20} MiB, "
          f"timeout {args.timeout:g} s, {'long' if long_mode else 'bounded'} mode")
    hdr = f"{'target':30s} {'tried':>6s} {'accept':>6s} {'reject':>6s} {'crash':>5s} {'hang':>4s} {'undoc':>5s} " \
          f"{'alloc':>5s} {'trace':>5s} {'disagr':>6s}  rejected by type"
    print(hdr)
    try:
        for target in selected:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                target.setup(workdir)
            n = 1 if replay is not None else args.per_target
            ts = time.time()
            counts, rejected, undoc, examples = run_target(target, n, args.seed, args.timeout, args.artifacts, replay)
            bad = sum(counts[k] for k in FAILURES)
            failures += bad
            print(f"{target.name:30s} {counts['tried']:6d} {counts['accepted']:6d} {counts['rejected']:6d} "
                  f"{counts['crash']:5d} {counts['hang']:4d} {counts['undocumented']:5d} {counts['overalloc']:5d} "
                  f"{counts['trace']:5d} {counts['disagree']:6d}  "
                  + ", ".join(f"{k} {v}" for k, v in rejected.most_common()) + f"  [{time.time() - ts:.0f} s]")
            for k, v in undoc.most_common():
                print(f"    undocumented {k}: {v}")
            for k, ex in examples.items():
                print(f"    first {k}: {ex}")
            sys.stdout.flush()
        if args.kill_trials and replay is None and (not args.targets or "kill" in args.targets):
            failures += fuzz_kill.campaign(workdir, args.kill_trials, random.Random(args.seed))
    finally:
        fuzz_targets.cleanup(workdir)
    print(f"fuzz: {'FAILED' if failures else 'passed'}: {failures} failures in {time.time() - t0:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
