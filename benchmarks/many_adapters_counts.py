"""Load-independent cost of many adapters in one batch: Python function calls and bytes allocated per forward.

    python benchmarks/many_adapters_counts.py [--batch 64] [--tokens 8] [--hidden 64] [--layers 2]

For a BatchSplit of N distinct LoRAs (mixed ranks 4 / 8 / 16) and of N bottleneck adapters over the same batch, N in
1, 16, 64, it counts what one forward costs beside the kernels: the Python function calls (cProfile) and the bytes
NumPy allocates (tracemalloc).  Neither depends on the machine's load, so it shows whether a per-adapter overhead
grows with N on a shared machine where wall times mean nothing.  MA_ROOT selects the checkout to import (default:
this one).  Native backend.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import tracemalloc

sys.path.insert(0, os.environ.get("MA_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minadapters as ma  # noqa: E402
from minadapters.bench import write_random_bert  # noqa: E402

RANKS = (4, 8, 16)


def build(path, kind, n, batch):
    m = ma.AutoModel.from_pretrained(path, backend="native", seed=0)
    names = [f"a{i}" for i in range(n)]
    for i, name in enumerate(names):
        m.add_adapter(name, config=f"lora[r={RANKS[i % 3]}]" if kind == "lora" else "seq_bn")
    if n == 1:
        m.active_adapters = ma.Stack(names[0])
    else:
        m.active_adapters = ma.BatchSplit(*names, batch_sizes=[batch // n] * n)
    return m


def counts(model, ids, mask):
    model(input_ids=ids, attention_mask=mask)                        # warm: lazily built state
    prof = cProfile.Profile()
    prof.enable()
    model(input_ids=ids, attention_mask=mask)
    prof.disable()
    calls = pstats.Stats(prof).total_calls
    tracemalloc.start()
    model(input_ids=ids, attention_mask=mask)
    _, peak = tracemalloc.get_traced_memory()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    del snap
    return calls, peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--ns", default="1,16,64")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1000, (a.batch, a.tokens))
    mask = np.ones((a.batch, a.tokens), np.int64)
    print(f"minadapters from {os.path.dirname(ma.__file__)}; batch {a.batch} x {a.tokens}, hidden {a.hidden}, "
          f"{a.layers} layers")
    with tempfile.TemporaryDirectory() as d:
        write_random_bert(d, layers=a.layers, hidden=a.hidden, heads=max(1, a.hidden // 32), ffn=2 * a.hidden)
        for kind in ("lora", "bottleneck"):
            for n in (int(x) for x in a.ns.split(",")):
                if a.batch % n:
                    continue
                calls, peak = counts(build(d, kind, n, a.batch), ids, mask)
                print(f"{kind:<10} N={n:<3} python calls/forward {calls:>7}  peak bytes allocated {peak:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
