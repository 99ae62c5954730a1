"""Benchmark: native vs numpy backend (and any extra runner, e.g. adapters+torch from
benchmarks/bench.py) on a random BERT-base-shaped model, plus SGEMM GFLOP/s.  Spec: spec/ops.md.

    python -m minadapters bench [--quick] [--layers N] [--reps N] [--threads N] [--rows gemm,models,decode,...]

Rows (--rows, comma-separated; default gemm,models): gemm (SGEMM GFLOP/s), models (BERT-base shapes x adapter
setups), and the rows of minadapters/bench_rows.py: decode, batchsplit, long (or "all").

Every comparison interleaves A B A B ... pairs and reports the median time of each side and the
median (min, max) of the per-pair ratios B/A (< 1: B is faster).  Pairs cancel slow drift
(thermal, other load) that back-to-back blocks of A then B would fold into the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from . import composition as ma_blocks
from .io import atomic_write_json, save_safetensors
from .model import AutoModel
from .models import bert
from .ops import get_ops

SHAPES = {"8x128": (8, 128), "1x32": (1, 32)}
ROW_NAMES = ("decode", "batchsplit", "long")          # minadapters/bench_rows.py (kept equal to bench_rows.ROWS)
GEMMS = [(1024, 768, 768), (1024, 768, 3072)]


def write_random_bert(directory, layers=12, hidden=768, heads=12, ffn=3072, vocab=1000, seed=0,
                      max_positions=512) -> str:
    """A random BERT checkpoint (config.json + model.safetensors via minadapters.io). vocab is small:
    the embedding lookup does not depend on it."""
    raw = {"model_type": "bert", "architectures": ["BertModel"], "hidden_size": hidden,
           "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ffn,
           "vocab_size": vocab, "max_position_embeddings": max_positions, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
           "hidden_act": "gelu", "pad_token_id": 0, "position_embedding_type": "absolute"}
    rng = np.random.default_rng(seed)
    weights = {}
    shapes = dict(bert.expected_shapes(bert.EncoderConfig.from_dict(raw)),
                  **{"pooler.dense.weight": (hidden, hidden), "pooler.dense.bias": (hidden,)})
    for k, s in shapes.items():
        base = 1.0 if k.endswith("LayerNorm.weight") else 0.0
        weights[k] = (base + 0.02 * rng.standard_normal(s)).astype(np.float32)
    os.makedirs(directory, exist_ok=True)
    save_safetensors(os.path.join(directory, "model.safetensors"), weights)
    atomic_write_json(os.path.join(directory, "config.json"), raw)
    return directory


def pairs(fa, fb, reps: int, warmup: int = 1) -> dict:
    """Interleaved timing of fa (A) and fb (B): medians and per-pair ratio stats."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = [b / a for a, b in zip(ta, tb)]
    return {"a": statistics.median(ta), "b": statistics.median(tb), "ratio": statistics.median(ratios),
            "min": min(ratios), "max": max(ratios), "n": reps}


LEGEND = ("each row: [batch x tokens] setup | A: median time | B: median time | B/A: median of the per-pair time "
          "ratios (< 1: B is faster), min, max, pairs")


def _fmt(label, r, a_name, b_name, unit=1e3, u="ms"):
    """One row naming both sides: '<label> | A numpy 12.00 ms | B native 5.00 ms | B/A 0.417 (min, max, pairs)'."""
    return (f"{label:<34} | A {a_name.strip()} {r['a'] * unit:.2f} {u} | B {b_name.strip()} {r['b'] * unit:.2f} {u} | "
            f"B/A {r['ratio']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}, {r['n']} pairs)")


# ---------------------------------------------------------------- adapter setups

class Setup:
    """One benchmarked configuration: adapters to add [(name, config)], an optional fusion over some of them,
    the active setup (a factory: setups are built per model), and whether methods/lora.py is needed."""

    def __init__(self, label, adds, active=None, fusion=None):
        self.label, self.adds, self.active, self.fusion = label, adds, active, fusion


def _setups(batch: int) -> list:
    three = [(f"bn{i}", "seq_bn") for i in range(1, 4)]
    out = [Setup("no adapter", []),
           Setup("seq_bn", [("bn", "seq_bn")], lambda: ma_blocks.Stack("bn")),
           Setup("lora r=8 (q,v)", [("l1", "lora[r=8]")], lambda: ma_blocks.Stack("l1")),
           Setup("prefix_tuning", [("pt", "prefix_tuning")], lambda: ma_blocks.Stack("pt")),
           Setup("Stack(seq_bn, seq_bn)", three[:2], lambda: ma_blocks.Stack("bn1", "bn2")),
           Setup("Parallel(seq_bn, seq_bn)", three[:2], lambda: ma_blocks.Parallel("bn1", "bn2")),
           Setup("Fuse(3 x seq_bn)", three, lambda: ma_blocks.Fuse("bn1", "bn2", "bn3"), fusion=("bn1", "bn2", "bn3"))]
    if batch >= 4 and batch % 4 == 0:
        out.append(Setup("BatchSplit(4 x lora r=8)", [(f"l{i}", "lora[r=8]") for i in range(1, 5)],
                         lambda: ma_blocks.BatchSplit("l1", "l2", "l3", "l4", batch_sizes=[batch // 4] * 4)))
    return out


# (label, baseline setup label, setup label): native-only ratios the issue asks for
NATIVE_RATIOS = [("seq_bn / no adapter", "no adapter", "seq_bn"),
                 ("Fuse(3 x seq_bn) / no adapter", "no adapter", "Fuse(3 x seq_bn)"),
                 ("BatchSplit(4 x lora) / 1 lora", "lora r=8 (q,v)", "BatchSplit(4 x lora r=8)")]


def _our_runner(path, backend, setup: Setup, ids, mask):
    model = AutoModel.from_pretrained(path, backend=backend, seed=0)
    for name, cfg in setup.adds:
        model.add_adapter(name, config=cfg)
    if setup.fusion:
        model.add_adapter_fusion(ma_blocks.Fuse(*setup.fusion))
    if setup.active is not None:
        model.active_adapters = setup.active()
    return lambda: model(input_ids=ids, attention_mask=mask)


def bench_models(path, reps, shapes, extra_runners, log) -> list:
    """Rows of (shape, setup, comparison, results): native/numpy, native/<extra runner> (name -> factory(path,
    setup, ids, mask)) per setup, then the NATIVE_RATIOS between native models."""
    rows = []
    rng = np.random.default_rng(0)
    for shape_name in shapes:
        B, T = SHAPES[shape_name]
        ids = rng.integers(1, 1000, (B, T))
        mask = np.ones((B, T), np.int64)
        native = {}
        for setup in _setups(B):
            label = setup.label
            try:
                run_np = _our_runner(path, "numpy", setup, ids, mask)
                run_nat = _our_runner(path, "native", setup, ids, mask)
            except Exception as e:  # noqa: BLE001 — a method still being written must not stop the run
                log(f"[{shape_name}] {label:<34} skipped: {type(e).__name__}: {e}")
                continue
            if any(label in (base, other) for _, base, other in NATIVE_RATIOS):
                native[label] = run_nat            # kept for the ratio rows (the others are freed)
            r = pairs(run_np, run_nat, reps)
            rows.append((shape_name, label, "native/numpy", r))
            log(_fmt(f"[{shape_name}] {label}", r, "numpy", "native"))
            for name, factory in extra_runners.items():
                try:
                    run_x = factory(path, setup, ids, mask)
                except Exception as e:  # noqa: BLE001
                    log(f"[{shape_name}] {label:<34} {name}: skipped: {type(e).__name__}: {e}")
                    continue
                r = pairs(run_x, run_nat, reps)
                rows.append((shape_name, label, f"native/{name}", r))
                log(_fmt(f"[{shape_name}] {label}", r, f"{name:>5}", "native"))
        for label, base, other in NATIVE_RATIOS:
            if base in native and other in native:
                r = pairs(native[base], native[other], reps)
                rows.append((shape_name, label, "native", r))
                log(_fmt(f"[{shape_name}] {label}", r, f"native, {base}", f"native, {other}"))
    return rows


def bench_gemm(reps, log) -> list:
    """SGEMM y = x wᵀ: native linear vs numpy matmul, GFLOP/s and interleaved ratio."""
    nat = get_ops("native")
    rows = []
    for M, K, N in GEMMS:
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((N, K), dtype=np.float32)
        r = pairs(lambda: x @ w.T, lambda: nat.linear(x, w), reps, warmup=2)
        gf = 2.0 * M * K * N / 1e9
        rows.append((f"{M}x{K}x{N}", r))
        log(f"sgemm {M}x{K}x{N}: numpy {gf / r['a']:7.1f} GFLOP/s  native {gf / r['b']:7.1f} GFLOP/s  "
            f"time ratio native/numpy {r['ratio']:.3f} (min {r['min']:.3f}, max {r['max']:.3f}, {r['n']} pairs)")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minadapters bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 layer, 3 pairs, 8x128 only (CI, < 1 minute)")
    p.add_argument("--layers", type=int, help="encoder layers (default 12; 1 with --quick)")
    p.add_argument("--hidden", type=int, default=768, help="hidden size (heads = hidden/64, ffn = 4*hidden)")
    p.add_argument("--reps", type=int, help="timed A/B pairs per row (default 5; 3 with --quick)")
    p.add_argument("--threads", type=int, help="OpenMP threads for native (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="batch shapes (default both)")
    p.add_argument("--no-models", action="store_true", help="only the SGEMM rows")
    p.add_argument("--rows", default="gemm,models",
                   help=f"comma-separated rows: gemm, models, {', '.join(ROW_NAMES)}, or all (default gemm,models)")
    return p


def parse_rows(text: str) -> list:
    """--rows as a list of known row names; ValueError naming the unknown ones and what is allowed."""
    allowed = ("gemm", "models") + ROW_NAMES
    names = [r.strip() for r in str(text).split(",") if r.strip()]
    if names == ["all"]:
        return list(allowed)
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"--rows={text!r}: unknown row(s) {bad}; allowed: {', '.join(allowed)} or all")
    return names


def main(argv=None, extra_runners=None) -> int:
    """Run the gemm / models rows; ``extra_runners`` maps a name to factory(path, setup: Setup, ids, mask) ->
    callable.  The other rows: bench_rows.main (the ``minadapters bench`` entry), which calls this first."""
    args = build_parser().parse_args(argv)
    try:
        rows = parse_rows(args.rows)
    except ValueError as e:
        build_parser().error(str(e))
    nat = get_ops("native")                       # BackendUnavailableError names the reason
    from .ops.native import tune_malloc           # deferred: importing ops.native loads the compiled extension
    tuned = tune_malloc()                         # opt-in allocator tuning (spec OPS-0); printed below
    if args.threads:
        type(nat)(num_threads=args.threads)
    layers = args.layers or (1 if args.quick else 12)
    reps = args.reps or (3 if args.quick else 5)
    shapes = args.shapes or (["8x128"] if args.quick else ["8x128", "1x32"])
    info = nat.info()
    print(f"native: isa {info['isa']}, openmp {info['openmp']}, threads {info['threads']}, malloc tuned {tuned}; "
          f"model: {layers} layers, hidden {args.hidden}, heads {args.hidden // 64}, ffn {4 * args.hidden}")
    print(LEGEND)
    if "gemm" in rows:
        bench_gemm(reps, print)
    if "models" in rows and not args.no_models:
        with tempfile.TemporaryDirectory() as d:
            write_random_bert(d, layers=layers, hidden=args.hidden, heads=max(1, args.hidden // 64),
                              ffn=4 * args.hidden)
            bench_models(d, reps, shapes, extra_runners or {}, print)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
