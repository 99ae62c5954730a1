"""The performance-round-two rows of ``minadapters bench`` (``--rows decode,batchsplit,long``). Spec: spec/ops.md.

decode      greedy generation, 16-token prompt, 32 new tokens, LoRA (q, v) active, batch 1 and 8: a GPT-2-small
            shape and a 12-layer 768-wide LLaMA shape with GQA (12 query / 4 kv heads); time per token (generate
            time / new tokens, prefill included on both sides) against adapters+torch, and at batch 1 against the
            bandwidth roofline: bytes of weights read per token ÷ this machine's measured copy bandwidth.
batchsplit  BatchSplit of 64 distinct LoRAs (ranks 4 / 8 / 16) vs one LoRA over 64 × 32 tokens, 256 LoRAs over
            256 × 32, 16 distinct bottleneck adapters vs one over 64 × 32 (native; and adapters+torch's own ratio).
long        BERT-base 8 × 512 (no adapter, LoRA) vs eager and SDPA torch, 2 × 2048 vs SDPA torch.

Every comparison is interleaved pairs (median, min, max, count of the per-pair ratios, bench.pairs).  ``quick``
shrinks every shape (2 layers, hidden 64, short sequences, 1 pair) so the code path runs in well under a minute;
its numbers mean nothing.  torch runs only through the ``torch`` hooks benchmarks/bench.py passes in (the package
never imports torch): an object with decode(path, family, ids, mask, new_tokens) and bert(path, setup, ids, mask,
attn) factories and batch_split(path, kind, n, batch, ids, mask).
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from . import composition as ma_blocks
from . import bench
from .bench import Setup, _fmt, _our_runner, pairs, write_random_bert
from .io import atomic_write_json, save_safetensors
from .model import AutoModel
from .models import gpt2, llama

ROWS = bench.ROW_NAMES
RANKS = (4, 8, 16)


# ---------------------------------------------------------------- checkpoints both sides read

def decoder_config(family: str, quick: bool) -> dict:
    """config.json of the GPT-2-small or the 12-layer 768-wide GQA LLaMA shape (tiny with quick); no eos, so both
    sides generate exactly the requested tokens."""
    L, D, H = (2, 64, 4) if quick else (12, 768, 12)
    if family == "gpt2":
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": D, "n_layer": L, "n_head": H,
                "n_positions": 1024, "vocab_size": 1000 if quick else 50257, "activation_function": "gelu_new",
                "layer_norm_epsilon": 1e-5, "bos_token_id": None, "eos_token_id": None, "tie_word_embeddings": True}
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D,
            "intermediate_size": 2 * D if quick else 2048, "num_hidden_layers": L, "num_attention_heads": H,
            "num_key_value_heads": H // 3 if H % 3 == 0 else 1, "vocab_size": 1000 if quick else 32000,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
            "tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": None}


def write_random_decoder(directory: str, family: str, quick: bool = False, seed: int = 0) -> dict:
    """A random GPT-2 / LLaMA causal-LM checkpoint in transformers' layout (GPT-2 Conv1D weights stored (in, out),
    LLaMA under 'model.' with its own lm_head); returns the config."""
    raw = decoder_config(family, quick)
    rng = np.random.default_rng(seed)
    weights = {}
    if family == "gpt2":
        shapes = gpt2.expected_shapes(gpt2.Config.from_dict(raw))
        for k, s in shapes.items():
            w = ((1.0 if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0)
                 + 0.02 * rng.standard_normal(s)).astype(np.float32)
            weights[k] = np.ascontiguousarray(w.T) if k.endswith(gpt2.CONV1D_WEIGHTS) else w
    else:
        shapes = llama.expected_shapes(llama.Config.from_dict(raw))
        for k, s in shapes.items():
            base = 1.0 if k.endswith("norm.weight") else 0.0
            weights["model." + k] = (base + 0.02 * rng.standard_normal(s)).astype(np.float32)
        weights["lm_head.weight"] = (0.02 * rng.standard_normal((raw["vocab_size"], raw["hidden_size"]))).astype(
            np.float32)
    os.makedirs(directory, exist_ok=True)
    save_safetensors(os.path.join(directory, "model.safetensors"), weights)
    atomic_write_json(os.path.join(directory, "config.json"), raw)
    return raw


def weight_bytes_per_token(path: str) -> int:
    """Bytes of weights one decode step reads: every parameter of the model but the input embeddings (one row) and
    the position table; the LM head counted once even when tied to the embedding."""
    m = AutoModel.from_pretrained(path, backend="native")
    skip = {m.arch.embed_key, "wpe.weight"}
    total = sum(v.nbytes for k, v in m.params.items() if k not in skip)
    head = m.params[m.arch.embed_key] if m.lm_head_weight is None else m.lm_head_weight
    return int(total + head.nbytes)


def copy_bandwidth(nbytes: int = 256 << 20, reps: int = 5) -> float:
    """Bytes per second of np.copyto over ``nbytes`` (best of ``reps``): the machine's copy bandwidth."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(reps))
    return nbytes / best


def _timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- rows

def bench_decode(reps, quick, torch, log) -> list:
    rows = []
    prompt, new = (4, 4) if quick else (16, 32)
    bw = copy_bandwidth(16 << 20 if quick else 256 << 20)
    log(f"copy bandwidth {bw / 1e9:.2f} GB/s (np.copyto, best of 5)")
    for family in ("gpt2", "llama"):
        with tempfile.TemporaryDirectory() as d:
            write_random_decoder(d, family, quick)
            wbytes = weight_bytes_per_token(d)
            roof = wbytes / bw
            for B in (1, 8):
                rng = np.random.default_rng(B)
                ids = rng.integers(1, 1000, (B, prompt))
                mask = np.ones((B, prompt), np.int64)
                m = AutoModel.from_pretrained(d, backend="native", seed=0)
                m.add_adapter("l", config="lora[r=8]", set_active=True)

                def ours(m=m, ids=ids, mask=mask):
                    return m.generate(ids, max_new_tokens=new, attention_mask=mask, eos_token_id=None)
                label = f"[decode {family} b{B}] lora r=8, {prompt}+{new}"
                ours()                                                  # warm
                t = statistics.median(_timed(ours) for _ in range(max(1, reps)))
                r = t / new / roof
                rows.append((label, "roofline", {"time_per_token": t / new, "roofline": roof, "ratio": r}))
                log(f"{label:<40} | native {t / new * 1e3:.2f} ms/token | roofline {roof * 1e3:.2f} ms/token "
                    f"({wbytes / 1e6:.0f} MB of weights / copy bandwidth) | native/roofline {r:.3f}")
                if torch is None:
                    continue
                run_t = torch.decode(d, family, ids, mask, new)
                same = bool(np.array_equal(np.asarray(run_t()), ours()))
                r = pairs(run_t, ours, reps)
                r = dict(r, a=r["a"] / new, b=r["b"] / new)
                rows.append((label, "native/torch", r))
                note = (" (adapters' LLaMA never fills its KV cache: spec/deviations.md #18)"
                        if family == "llama" else "")
                log(_fmt(label, r, "torch", "native", u="ms/token") + f" | tokens equal {same}{note}")
    return rows


def _split_setup(kind, n, batch):
    names = [f"a{i}" for i in range(n)]
    adds = [(nm, f"lora[r={RANKS[i % 3]}]" if kind == "lora" else "seq_bn") for i, nm in enumerate(names)]
    if n == 1:
        return Setup(f"1 {kind}", adds, lambda: ma_blocks.Stack(names[0]))
    return Setup(f"BatchSplit({n} x {kind})", adds,
                 lambda: ma_blocks.BatchSplit(*names, batch_sizes=[batch // n] * n))


def bench_batchsplit(reps, quick, torch, log) -> list:
    rows = []
    cases = ([("lora", 4, 4, 8), ("lora", 8, 8, 8), ("bottleneck", 4, 4, 8)] if quick else
             [("lora", 64, 64, 32), ("lora", 256, 256, 32), ("bottleneck", 16, 64, 32)])
    with tempfile.TemporaryDirectory() as d:
        if quick:
            write_random_bert(d, layers=2, hidden=64, heads=2, ffn=128)
        else:
            write_random_bert(d)
        for kind, n, B, T in cases:
            rng = np.random.default_rng(n)
            ids = rng.integers(1, 1000, (B, T))
            mask = np.ones((B, T), np.int64)
            one, many = _split_setup(kind, 1, B), _split_setup(kind, n, B)
            label = f"[batchsplit {B}x{T}] {many.label} / 1"
            r = pairs(_our_runner(d, "native", one, ids, mask), _our_runner(d, "native", many, ids, mask), reps)
            rows.append((label, "native", r))
            log(_fmt(label, r, "native, 1", f"native, {n}"))
            if torch is not None:
                r = pairs(torch.batch_split(d, one, ids, mask), torch.batch_split(d, many, ids, mask), reps)
                rows.append((label, "torch", r))
                log(_fmt(label, r, "torch, 1", f"torch, {n}"))
    return rows


def bench_long(reps, quick, torch, log) -> list:
    rows = []
    cases = ([(2, 64, "eager"), (2, 64, "sdpa"), (1, 128, "sdpa")] if quick else
             [(8, 512, "eager"), (8, 512, "sdpa"), (2, 2048, "sdpa")])
    with tempfile.TemporaryDirectory() as d:
        if quick:
            write_random_bert(d, layers=2, hidden=64, heads=2, ffn=128, max_positions=2048)
        else:
            write_random_bert(d, max_positions=2048)
        for B, T, attn in cases:
            rng = np.random.default_rng(T)
            ids = rng.integers(1, 1000, (B, T))
            mask = np.ones((B, T), np.int64)
            setups = [Setup("no adapter", [])]
            if T <= 512:
                setups.append(Setup("lora r=8 (q,v)", [("l1", "lora[r=8]")], lambda: ma_blocks.Stack("l1")))
            for setup in setups:
                label = f"[long {B}x{T}] {setup.label}"
                if torch is None and attn == "sdpa" and (B, T, "eager") in cases:
                    continue                                   # native only: the eager case already ran it
                run_n = _our_runner(d, "native", setup, ids, mask)
                if torch is None:
                    t = statistics.median(_timed(run_n) for _ in range(max(1, reps)))
                    log(f"{label:<40} | native {t * 1e3:.2f} ms (no torch)")
                    continue
                r = pairs(torch.bert(d, setup, ids, mask, attn), run_n, reps)
                rows.append((label, f"native/torch-{attn}", r))
                log(_fmt(label, r, f"torch {attn}", "native"))
    return rows


RUNNERS = {"decode": bench_decode, "batchsplit": bench_batchsplit, "long": bench_long}


def run_rows(names, reps, quick, torch, log) -> list:
    """The rows named (a subset of ROWS), in ROWS order."""
    out = []
    for name in ROWS:
        if name in names:
            out += RUNNERS[name](reps, quick, torch, log)
    return out


def main(argv=None, extra_runners=None, torch_rows=None) -> int:
    """``minadapters bench``: bench.main's gemm / models rows, then the rows of this module that --rows names.
    ``torch_rows``: the adapters+torch hooks (benchmarks/bench.py); None runs the native side only."""
    argv = list(argv) if argv is not None else None
    args = bench.build_parser().parse_args(argv)
    try:
        rows = bench.parse_rows(args.rows)
    except ValueError as e:
        bench.build_parser().error(str(e))
    status = bench.main(argv, extra_runners=extra_runners)
    news = [r for r in rows if r in ROWS]
    if news:
        run_rows(news, args.reps or (1 if args.quick else 5), args.quick, torch_rows, print)
    return status
