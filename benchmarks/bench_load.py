"""Cold load: from_pretrained -> first forward of a LLaMA-shaped checkpoint written by transformers (spec IO-19).

    python benchmarks/bench_load.py [--pairs 3] [--layers 4] [--hidden 2048] [--dir /tmp/ma-bench-llama]

Each measurement is a fresh process (so peak RSS is that load's own): A = transformers LlamaModel.from_pretrained +
adapters.init, B = minadapters AutoModel.from_pretrained (native backend; and once more with MINADAPTERS_MMAP=0,
the read-into-memory path), each followed by one forward of 1x16
tokens. Imports are done before the clock starts. Pairs are interleaved A/B; the page cache is warm for both (the
file is read once before the first pair). Reported: wall time ratio B/A and each side's peak RSS growth over its
post-import RSS divided by the checkpoint's size (median, min, max, pairs). torch gets the same 2 threads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, os, resource, sys, time
side, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss_kb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
import numpy as np
ids = np.arange(3, 19, dtype=np.int64)[None, :]
if side == "torch":
    import torch, adapters, transformers
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(threads)
    base = rss_kb(); t0 = time.perf_counter()
    m = transformers.LlamaModel.from_pretrained(path, attn_implementation="eager")
    adapters.init(m); m.eval()
    with torch.no_grad():
        out = m(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
else:
    sys.path.insert(0, os.environ["MA_ROOT"])
    import minadapters as ma
    ma.set_backend("native")
    base = rss_kb(); t0 = time.perf_counter()
    m = ma.AutoModel.from_pretrained(path)
    out = m(input_ids=ids).last_hidden_state
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall": wall, "grow_kb": peak - base, "first": float(out[0, 0, 0])}))
"""


def write_checkpoint(path, layers, hidden):
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return
    import torch
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers,
                                   num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(path, safe_serialization=True, max_shard_size="20GB")


def run(side, path, threads, root, mmap=True):
    env = dict(os.environ, MA_ROOT=root, OMP_NUM_THREADS=str(threads), MINADAPTERS_BACKEND="native",
               MINADAPTERS_MMAP="1" if mmap else "0")
    out = subprocess.run([sys.executable, "-c", CHILD, side, path, str(threads)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", default="/tmp/ma-bench-llama")
    a = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_checkpoint(a.dir, a.layers, a.hidden)
    f = os.path.join(a.dir, "model.safetensors")
    size_kb = os.path.getsize(f) / 1024
    with open(f, "rb") as fp:                     # warm the page cache once for both sides
        while fp.read(1 << 24):
            pass
    rows, read_rows = [], []
    for _ in range(a.pairs):
        t, n = run("torch", a.dir, a.threads, root), run("minadapters", a.dir, a.threads, root)
        r = run("minadapters", a.dir, a.threads, root, mmap=False)
        for other in (n, r):
            if abs(t["first"] - other["first"]) > 1e-3 * max(1.0, abs(t["first"])):
                raise SystemExit(f"outputs differ: torch {t['first']} vs minadapters {other['first']}")
        rows.append((t, n))
        read_rows.append((t, r))

    def stat(xs):
        return f"median {statistics.median(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f}, {len(xs)} pairs)"

    print(f"checkpoint {f}: {size_kb / 1024:.0f} MiB, {a.layers} layers, hidden {a.hidden}")
    print(f"wall from_pretrained -> first forward: torch {statistics.median(t['wall'] for t, _ in rows):.2f} s, "
          f"native {statistics.median(n['wall'] for _, n in rows):.2f} s; ratio native/torch "
          + stat([n["wall"] / t["wall"] for t, n in rows]))
    print("peak RSS growth / file size: torch " + stat([t["grow_kb"] / size_kb for t, _ in rows]))
    print("peak RSS growth / file size: native " + stat([n["grow_kb"] / size_kb for _, n in rows]))
    print("with MINADAPTERS_MMAP=0 (read, not mapped): wall ratio native/torch "
          + stat([r["wall"] / t["wall"] for t, r in read_rows]) + "; peak RSS growth / file size "
          + stat([r["grow_kb"] / size_kb for _, r in read_rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
