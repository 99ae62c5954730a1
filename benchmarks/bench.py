"""Benchmark driver: minadapters.bench plus an adapters 1.3.0 + torch runner when both import.

    python benchmarks/bench.py [--quick] [--no-torch] [--rows decode,batchsplit,long] [minadapters bench options]

torch / adapters are imported only here (an explicitly selected driver), never by the package.
torch gets the same thread count as the native backend.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minadapters import bench_rows  # noqa: E402


def torch_runner_factory(threads):
    """factory(path, setup, ids, mask) -> callable running adapters' BertModel forward, or None."""
    try:
        import adapters
        import torch
        from transformers import BertModel
    except ImportError as e:
        print(f"adapters+torch runner skipped: {e}")
        return None
    import logging

    import transformers
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("adapters").setLevel(logging.ERROR)
    torch.set_num_threads(threads)

    def convert(block):
        import adapters.composition as ac
        import minadapters as ma
        kinds = {ma.Stack: ac.Stack, ma.Parallel: ac.Parallel, ma.BatchSplit: ac.BatchSplit, ma.Fuse: ac.Fuse}
        children = [convert(c) if not isinstance(c, str) else c for c in block]
        if isinstance(block, ma.BatchSplit):
            return ac.BatchSplit(*children, batch_sizes=block.batch_sizes)
        return kinds[type(block)](*children)

    def factory(path, setup, ids, mask, attn="eager"):
        """setup: minadapters.bench.Setup (adds, fusion, active)."""
        import adapters.composition as ac
        model = BertModel.from_pretrained(path, attn_implementation=attn).eval()
        adapters.init(model)
        for name, cfg in setup.adds:
            model.add_adapter(name, config=cfg)
        if setup.fusion:
            model.add_adapter_fusion(ac.Fuse(*setup.fusion))
        if setup.active is not None:
            model.set_active_adapters(convert(setup.active()))
        ti, tm = torch.from_numpy(ids), torch.from_numpy(mask)

        def run():
            with torch.inference_mode():
                return model(input_ids=ti, attention_mask=tm)
        return run
    return factory


class TorchRows:
    """adapters+torch hooks of minadapters/bench_rows.py: decode, bert (eager / sdpa), batch_split."""

    def __init__(self, bert_factory):
        self.bert = bert_factory

    def batch_split(self, path, setup, ids, mask):
        return self.bert(path, setup, ids, mask, "eager")

    def decode(self, path, family, ids, mask, new_tokens):
        """Greedy generate (transformers' default attention, KV cache) with adapters' LoRA r=8 active."""
        import adapters
        import torch
        import transformers
        cls = transformers.GPT2LMHeadModel if family == "gpt2" else transformers.LlamaForCausalLM
        model = cls.from_pretrained(path).eval()
        adapters.init(model)
        model.add_adapter("l", config="lora[r=8]")
        model.set_active_adapters("l")
        ti, tm = torch.from_numpy(ids), torch.from_numpy(mask)

        def run():
            with torch.inference_mode():
                return model.generate(input_ids=ti, attention_mask=tm, max_new_tokens=new_tokens, do_sample=False,
                                      pad_token_id=0).numpy()
        return run


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = {}
    if "--no-torch" in argv:
        argv.remove("--no-torch")
    else:
        from minadapters.ops import get_ops
        threads = get_ops("native").info()["threads"]
        if "--threads" in argv:
            threads = int(argv[argv.index("--threads") + 1])
        f = torch_runner_factory(threads)
        if f is not None:
            extra["torch"] = f
    return bench_rows.main(argv, extra_runners=extra, torch_rows=TorchRows(extra["torch"]) if extra else None)


if __name__ == "__main__":
    raise SystemExit(main())
