"""Write golden vectors from adapters 1.3.0 (needs torch + transformers + adapters; never run at import).

    python -m conformance.generate_vectors [--out conformance/vectors]

For each case: the tiny model (conformance.tinymodels, recorded by arch, seed and sha256), adapters added with
adapters 1.3.0 from a config dict, every adapter tensor perturbed with a seeded NumPy generator, a padded batch,
and adapters' last_hidden_state. Arrays go to <suite>.npz keyed "<tcId>/<name>"; the JSON follows wycheproof.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

from conformance.strategies import perturb
from conformance.tinymodels import padded_batch, write_model

BN = {"mh_adapter": False, "output_adapter": True, "reduction_factor": 4, "non_linearity": "relu"}
L = lambda n: {"type": "single", "children": [n]}  # noqa: E731


def blk(kind, children, **kw):
    d = {"type": kind, "children": children}
    if kw:
        d["kwargs"] = kw
    return d


ST = lambda n: blk("Stack", [L(n)])  # noqa: E731
SUITES = {
    "bottleneck": [
        (["BN-1", "BN-2"], "seq_bn preset", [("a", "seq_bn")], ST("a"), []),
        (["BN-1", "BN-2"], "double_seq_bn with gating", [("a", "double_seq_bn[use_gating=True]")], ST("a"), []),
        (["BN-4"], "par_bn, learned scaling", [("a", "scaled_par_bn")], ST("a"), []),
        (["BN-3"], "ln_before, ln_after, channel scaling", [("a", dict(BN, ln_before=True, ln_after=True, scaling="channel"))], ST("a"), []),
        (["BN-2"], "residual_before_ln post_add", [("a", dict(BN, residual_before_ln="post_add", original_ln_before=True))], ST("a"), []),
        (["BN-5"], "per-layer reduction factor, leave_out", [("a", dict(BN, reduction_factor={"1": 2, "default": 5}, leave_out=[0]))], ST("a"), []),
        (["BN-1"], "ZeroUp: zero up-projection is the base model", [("a", "seq_bn")], ST("a"), ["ZeroUp"]),
    ],
    "composition": [
        (["COMP-STACK"], "Stack of two", [("a", "seq_bn"), ("b", "double_seq_bn")], blk("Stack", [L("a"), L("b")]), []),
        (["COMP-PARALLEL"], "Parallel of two", [("a", "seq_bn"), ("b", "seq_bn")], blk("Parallel", [L("a"), L("b")]), []),
        (["COMP-BATCHSPLIT"], "BatchSplit 1+2", [("a", "seq_bn"), ("b", "seq_bn")], blk("BatchSplit", [L("a"), L("b")], batch_sizes=[1, 2]), []),
        (["COMP-SPLIT"], "Split 3+4 tokens", [("a", "seq_bn"), ("b", "seq_bn")], blk("Split", [L("a"), L("b")], splits=[3, 4]), []),
        (["COMP-AVERAGE"], "Average 1:3 (divided by N again)", [("a", "seq_bn"), ("b", "seq_bn")], blk("Average", [L("a"), L("b")], weights=[0.25, 0.75]), []),
        (["COMP-MULTITASK"], "MultiTask (bottleneck pre_block twice)", [("a", "seq_bn"), ("b", "seq_bn")], blk("MultiTask", [L("a"), L("b")]), ["TaskIds"]),
        (["COMP-FUSE", "FUSION-1"], "dynamic Fuse of two", [("a", "seq_bn"), ("b", "seq_bn")], blk("Fuse", [L("a"), L("b")]), ["Fusion"]),
        (["COMP-1", "COMP-STACK", "COMP-BATCHSPLIT"], "Stack(a, BatchSplit(b, c))", [("a", "seq_bn"), ("b", "seq_bn"), ("c", "seq_bn")],
         blk("Stack", [L("a"), blk("BatchSplit", [L("b"), L("c")], batch_sizes=[2, 1])]), []),
    ],
    "lora": [
        (["LORA-1"], "lora q,v", [("a", "lora[r=4, alpha=8]")], ST("a"), []),
        (["LORA-1"], "lora all targets, gated", [("a", {"architecture": "lora", "r": 2, "alpha": 4, "selfattn_lora": True, "intermediate_lora": True, "output_lora": True, "attn_matrices": ["q", "k", "v"], "use_gating": True})], ST("a"), []),
        (["LORA-3"], "ia3 preset", [("a", "ia3")], ST("a"), []),
        (["COMP-STACK", "LORA-8"], "Stack of two LoRAs chains deltas", [("a", "lora[r=2]"), ("b", "lora[r=3]")], blk("Stack", [L("a"), L("b")]), []),
    ],
    "prefix_tuning": [
        (["PREFIX-1"], "prefix MLP", [("a", {"architecture": "prefix_tuning", "prefix_length": 3, "bottleneck_size": 8})], ST("a"), []),
        (["PREFIX-1"], "prefix flat, gated", [("a", {"architecture": "prefix_tuning", "prefix_length": 2, "flat": True, "use_gating": True})], ST("a"), []),
    ],
    "prompt_reft": [
        (["PROMPT-1"], "prompt tuning length 3", [("a", {"architecture": "prompt_tuning", "prompt_length": 3})], ST("a"), []),
        (["REFT-1"], "loreft", [("a", "loreft")], ST("a"), []),
    ],
    # decoders (GPT-2 with its fused c_attn and Conv1D layout, LLaMA with GQA and RoPE), right-padded batches
    "decoders": [
        (["BN-1", "BN-2"], "seq_bn preset", [("a", "seq_bn")], ST("a"), []),
        (["BN-1", "BN-2"], "double_seq_bn with gating", [("a", "double_seq_bn[use_gating=True]")], ST("a"), []),
        (["BN-4"], "par_bn", [("a", "par_bn")], ST("a"), []),
        (["LORA-1"], "lora q,v", [("a", "lora[r=4, alpha=8]")], ST("a"), []),
        (["LORA-1"], "lora all targets, gated", [("a", {"architecture": "lora", "r": 2, "alpha": 4, "selfattn_lora": True, "intermediate_lora": True, "output_lora": True, "attn_matrices": ["q", "k", "v"], "use_gating": True})], ST("a"), []),
        (["LORA-3"], "ia3 preset", [("a", "ia3")], ST("a"), []),
        (["PREFIX-1"], "prefix MLP", [("a", {"architecture": "prefix_tuning", "prefix_length": 3, "bottleneck_size": 8})], ST("a"), []),
        (["REFT-1"], "loreft", [("a", "loreft")], ST("a"), []),
        (["PHM-1", "PHM-2"], "compacter", [("a", "compacter[reduction_factor=5, phm_dim=2]")], ST("a"), []),
        (["INV-1", "INV-4"], "seq_bn_inv (NICE)", [("a", "seq_bn_inv")], ST("a"), []),
        (["CFG-3"], "union seq_bn | lora", [("a", "seq_bn|lora[r=4]")], ST("a"), []),
        (["COMP-STACK"], "Stack of two bottlenecks", [("a", "seq_bn"), ("b", "double_seq_bn")], blk("Stack", [L("a"), L("b")]), []),
        (["COMP-BATCHSPLIT"], "BatchSplit 1+2 (bottleneck)", [("a", "seq_bn"), ("b", "seq_bn")], blk("BatchSplit", [L("a"), L("b")], batch_sizes=[1, 2]), []),
    ],
    # LoRA-family methods and LoRA under blocks other than Stack (BERT and LLaMA; GPT-2's c_attn refuses them)
    "lora_family": [
        (["LORA-4"], "vera on q", [("a", {"architecture": "lora", "r": 4, "alpha": 8, "attn_matrices": ["q"], "init_weights": "vera", "vera_d": 0.1, "vera_b": 0.0})], ST("a"), []),
        (["LORA-5"], "dora q,v", [("a", {"architecture": "lora", "r": 4, "alpha": 8, "use_dora": True})], ST("a"), []),
        (["LORA-5", "LORA-4"], "dvora on q", [("a", {"architecture": "lora", "r": 4, "alpha": 8, "attn_matrices": ["q"], "init_weights": "vera", "vera_d": 0.1, "vera_b": 0.0, "use_dora": True})], ST("a"), []),
        (["LORA-6", "COMP-MULTITASK"], "MTL-LoRA under MultiTask", [("a", {"architecture": "mtl_lora", "r": 2, "alpha": 4, "n_up_projection": 2}), ("b", {"architecture": "mtl_lora", "r": 2, "alpha": 4, "n_up_projection": 2})], blk("MultiTask", [L("a"), L("b")]), ["TaskIds"]),
        (["COMP-BATCHSPLIT"], "LoRA BatchSplit 2+1", [("a", "lora[r=2]"), ("b", "lora[r=3]")], blk("BatchSplit", [L("a"), L("b")], batch_sizes=[2, 1]), []),
        (["COMP-AVERAGE"], "LoRA Average 1:3", [("a", "lora[r=2]"), ("b", "lora[r=2]")], blk("Average", [L("a"), L("b")], weights=[0.25, 0.75]), []),
        (["COMP-MULTITASK"], "LoRA MultiTask", [("a", "lora[r=2]"), ("b", "lora[r=2]")], blk("MultiTask", [L("a"), L("b")]), ["TaskIds"]),
        (["LORA-3", "COMP-BATCHSPLIT"], "IA3 BatchSplit 1+2", [("a", "ia3"), ("b", "ia3")], blk("BatchSplit", [L("a"), L("b")], batch_sizes=[1, 2]), []),
    ],
    # Compacter, invertible adapters and config unions on the encoders
    "families": [
        (["PHM-1", "PHM-2", "PHM-3"], "compacter", [("a", "compacter[reduction_factor=5, phm_dim=2]")], ST("a"), []),
        (["PHM-1", "PHM-2"], "compacter++ with phm_bias, factorised W", [("a", "compacter++[reduction_factor=5, phm_dim=4, phm_bias=True]")], ST("a"), []),
        (["INV-1", "INV-4"], "seq_bn_inv (NICE)", [("a", "seq_bn_inv")], ST("a"), []),
        (["INV-1", "INV-4"], "double_seq_bn_inv (NICE; GLOW crashes upstream, deviations #16)", [("a", "double_seq_bn_inv")], ST("a"), []),
        (["CFG-3"], "union seq_bn | lora", [("a", "seq_bn|lora[r=4]")], ST("a"), []),
        (["CFG-3"], "MAM (prefix + parallel bottleneck)", [("a", "mam")], ST("a"), []),
        (["CFG-3", "GATE-1"], "UniPELT (gated lora, prefix, bottleneck)", [("a", "unipelt")], ST("a"), []),
        (["CFG-3", "COMP-STACK"], "Stack of two unions", [("a", "seq_bn|lora[r=2]"), ("b", "par_bn|lora[r=3]")], blk("Stack", [L("a"), L("b")]), []),
    ],
}
SUITE_ARCHS = {"decoders": ("gpt2", "llama"), "lora_family": ("bert", "llama")}   # default: bert, roberta
NOTES = {"ZeroUp": {"kind": "EDGE_CASE", "description": "adapter_up weight and bias are 0: output equals the base model"},
         "TaskIds": {"kind": "INPUT", "description": "forwardKwargs.task_ids routes rows"},
         "Fusion": {"kind": "INPUT", "description": "fusions lists add_adapter_fusion calls with their weights"}}


def _generate_case(tc, arch, model_dir, spec, comment, adapters_, setup, flags, arrays):
    import adapters
    import torch
    import transformers
    sys.path.insert(0, os.getcwd())
    from conformance.drivers.adapters_driver import AdaptersDriver
    drv = AdaptersDriver()
    m = drv.load_model(model_dir)
    entries = []
    for j, (name, cfg) in enumerate(adapters_):
        cfg_dict = adapters.AdapterConfig.load(cfg).to_dict() if isinstance(cfg, str) else cfg
        drv.add_adapter(m, name, cfg_dict)
        w = perturb(drv.get_adapter_weights(m, name), 1000 * tc + j, scale=0.3)
        if "ZeroUp" in flags:
            w = {k: (np.zeros_like(v) if ".adapter_up." in k else v) for k, v in w.items()}
        drv.set_adapter_weights(m, name, w)
        for k, v in w.items():
            arrays[f"{tc}/w/{name}/{k}"] = v
        entries.append({"name": name, "config": cfg_dict, "weights": sorted(w)})
    fusions = []
    if "Fusion" in flags:
        names = [c["children"][0] for c in setup["children"]]
        fname = drv.add_fusion(m, names, "dynamic")
        fw = perturb(drv.get_fusion_weights(m, fname), 77 * tc, scale=0.2)
        drv.set_fusion_weights(m, fname, fw)
        for k, v in fw.items():
            arrays[f"{tc}/f/{fname}/{k}"] = v
        fusions.append({"name": fname, "adapters": names, "config": "dynamic", "weights": sorted(fw)})
    ids, mask = padded_batch(arch, np.random.default_rng(tc), 3, 7, [7, 5, 2])
    kw = {"task_ids": [0, 1, 0]} if "TaskIds" in flags else {}
    drv.set_active(m, setup)
    out = drv.forward(m, ids, mask, **({"task_ids": np.asarray(kw["task_ids"])} if kw else {}))
    arrays[f"{tc}/input_ids"], arrays[f"{tc}/attention_mask"], arrays[f"{tc}/expected"] = ids, mask, out
    del torch, transformers
    return {"tcId": tc, "spec": spec, "comment": comment, "flags": flags, "adapters": entries, "fusions": fusions,
            "setup": setup, "forwardKwargs": kw, "result": "valid"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors"))
    ap.add_argument("--suites", nargs="*", default=None, help="only these suites (default: all)")
    args = ap.parse_args(argv)
    import adapters
    import torch
    import transformers
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    for suite, cases in SUITES.items():
        if args.suites is not None and suite not in args.suites:
            continue
        arrays, groups, tc = {}, [], 0
        for arch in SUITE_ARCHS.get(suite, ("bert", "roberta")):
            model_dir = write_model(os.path.join(tmp, arch), arch, seed=5)
            with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
            tests = []
            for spec, comment, ads, setup, flags in cases:
                tc += 1
                tests.append(_generate_case(tc, arch, model_dir, spec, comment, ads, setup, flags, arrays))
            groups.append({"model": {"arch": arch, "seed": 5, "sha256": sha}, "rtol": 1e-4, "atol": 2e-5,
                           "tests": tests})
        doc = {"suite": suite, "schema": "adapter_forward.schema.json", "specVersion": "0.1",
               "generator": {"version": "0.1", "script": "conformance/generate_vectors.py",
                             "upstream": {"adapters": adapters.__version__, "transformers": transformers.__version__,
                                          "torch": torch.__version__}},
               "numberOfTests": tc, "notes": NOTES, "testGroups": groups}
        with open(os.path.join(args.out, f"{suite}.json"), "w") as f:
            json.dump(doc, f, indent=1)
        np.savez_compressed(os.path.join(args.out, f"{suite}.npz"), **arrays)
        print(f"{suite}: {tc} tests")


if __name__ == "__main__":
    main()
