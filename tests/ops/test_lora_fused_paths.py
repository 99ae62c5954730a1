"""LoRA on NativeOps: the fused kernels (ops.lora_add for one LoRA, ops.sgmv_lora_add for a BatchSplit /
Parallel of LoRAs) give the generic composition's outputs, and other setups still take the generic path.
Spec: LORA-8, OPS-8, OPS-9."""
import numpy as np
import pytest

import minadapters as ma
from minadapters.bench import write_random_bert
from minadapters.methods.lora import LoRALayer

pytestmark = pytest.mark.native


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, native):
    return write_random_bert(str(tmp_path_factory.mktemp("bert")), layers=2, hidden=64, heads=2, ffn=128, seed=3)


def build(path, backend, adds):
    m = ma.AutoModel.from_pretrained(path, backend=backend, seed=0)
    for name, cfg in adds:
        m.add_adapter(name, config=cfg)
    rng = np.random.default_rng(7)
    for layer in m.method_layers.values():
        if isinstance(layer, LoRALayer):
            for mod in layer.modules.values():
                for leaf in ("lora_A", "lora_B"):
                    if leaf in mod.params:
                        mod.params[leaf][...] = 0.3 * rng.standard_normal(mod.params[leaf].shape)
    return m


def run(m, setup, B=6, T=9):
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 1000, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 6:] = 0
    m.active_adapters = setup
    return m(input_ids=ids, attention_mask=mask).last_hidden_state


LORAS = [(f"l{i}", f"lora[r={r}]") for i, r in zip(range(1, 5), (4, 4, 4, 4))]
MIXED = [("l1", "lora[r=4]"), ("l2", "lora[r=8,alpha=3]"), ("l3", "lora[r=2,alpha=5]")]
CASES = [
    (LORAS, lambda: "l1"),
    (LORAS, lambda: ma.Stack("l2")),
    (LORAS, lambda: ma.BatchSplit("l1", "l2", "l3", batch_sizes=[1, 3, 2])),
    (LORAS, lambda: ma.BatchSplit("l1", "l2", "l3", "l4", batch_sizes=[2, 0, 3, 1])),
    (LORAS, lambda: ma.Parallel("l1", "l2")),
    (LORAS, lambda: ma.Parallel("l1", "l2", "l3")),
    (MIXED, lambda: ma.BatchSplit("l1", "l2", "l3", batch_sizes=[2, 2, 2])),
    (MIXED, lambda: ma.Parallel("l2", "l3")),
    (LORAS + [("bn", "seq_bn")], lambda: ma.Parallel("l1", "l2")),
    (LORAS, lambda: ma.Stack("l1", "l2")),                       # generic path (chained deltas)
]


@pytest.mark.spec("LORA-8")
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_lora_matches_generic_and_numpy(ckpt, monkeypatch, case):
    adds, setup = CASES[case]
    fused = run(build(ckpt, "native", adds), setup())
    ref = run(build(ckpt, "numpy", adds), setup())
    calls = []
    orig = LoRALayer._fused_add

    def spy(self, *a):
        out = orig(self, *a)
        calls.append(out is not None)
        return out
    monkeypatch.setattr(LoRALayer, "_fused_add", spy)
    run(build(ckpt, "native", adds), setup())
    monkeypatch.setattr(LoRALayer, "_fused_add", lambda self, *a: None)
    generic = run(build(ckpt, "native", adds), setup())
    assert fused.shape == generic.shape == ref.shape
    np.testing.assert_allclose(fused, generic, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused, ref, rtol=1e-4, atol=1e-4)
    assert any(calls) == (case != len(CASES) - 1)      # the fused kernels ran (except the chained Stack)


@pytest.mark.spec("OPS-9")
def test_mixed_rank_batch_split_is_one_sgmv_call_per_projection(ckpt, native, monkeypatch):
    calls = {"sgmv": 0, "lora_add": 0}
    nat = type(native)
    orig_sgmv, orig_add = nat.sgmv_lora_add, nat.lora_add

    def sgmv(self, y, x, a, b, *rest):
        calls["sgmv"] += 1
        assert isinstance(a, list) and len({t.shape[0] for t in a}) == 3       # the children's own arrays, 3 ranks
        return orig_sgmv(self, y, x, a, b, *rest)

    def add(self, *args):
        calls["lora_add"] += 1
        return orig_add(self, *args)
    monkeypatch.setattr(nat, "sgmv_lora_add", sgmv)
    monkeypatch.setattr(nat, "lora_add", add)
    run(build(ckpt, "native", MIXED), ma.BatchSplit("l1", "l2", "l3", batch_sizes=[2, 2, 2]))
    assert calls == {"sgmv": 2 * 2, "lora_add": 0}      # 2 layers x (q, v); no per-child call
