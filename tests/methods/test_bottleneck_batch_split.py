"""BatchSplit of bottleneck adapters: the fused row-wise path (one up-projection buffer, one BN-1 close over the
batch, no per-child state slices / concatenation) gives the generic composition's outputs, on both backends, and
setups it does not cover (gates, LN after, mixed residual rules, nested blocks) still take the generic path.
Spec: COMP-BATCHSPLIT, BN-1."""
import numpy as np
import pytest

import minadapters as ma
from minadapters.bench import write_random_bert
from minadapters.methods.base import ComposableLayer
from minadapters.methods.bottleneck import BottleneckLayer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_random_bert(str(tmp_path_factory.mktemp("bert")), layers=2, hidden=32, heads=2, ffn=64, seed=5)


def build(path, backend, adds):
    m = ma.AutoModel.from_pretrained(path, backend=backend, seed=0)
    for name, cfg in adds:
        m.add_adapter(name, config=cfg)
        for _, (d, leaf) in m.adapter_param_refs(name).items():
            d[leaf] = d[leaf] + np.float32(0.1) * np.random.default_rng(len(name)).standard_normal(
                np.shape(d[leaf])).astype(np.float32)
    return m


def run(m, setup, B=6, T=5):
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 1000, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 3:] = 0
    m.active_adapters = setup
    return m(input_ids=ids, attention_mask=mask).last_hidden_state


SEQ = [("b1", "seq_bn[reduction_factor=4]"), ("b2", "seq_bn[reduction_factor=8]"), ("b3", "double_seq_bn"),
       ("b4", "seq_bn[reduction_factor=2, non_linearity='gelu']")]
CASES = [  # (adapters, setup, fused everywhere / nowhere / None: only where every child is present)
    (SEQ, lambda: ma.BatchSplit("b1", "b2", "b4", batch_sizes=[1, 3, 2]), True),
    (SEQ, lambda: ma.BatchSplit("b1", "b2", "b3", "b4", batch_sizes=[2, 0, 3, 1]), None),  # b3 alone at mh_adapter
    ([("p1", "par_bn"), ("p2", "par_bn[reduction_factor=4]")], lambda: ma.BatchSplit("p1", "p2", batch_sizes=[4, 2]),
     True),
    ([("b1", "seq_bn"), ("g", "seq_bn[use_gating=True]")], lambda: ma.BatchSplit("b1", "g", batch_sizes=[3, 3]),
     False),
    ([("b1", "seq_bn"), ("p1", "par_bn")], lambda: ma.BatchSplit("b1", "p1", batch_sizes=[3, 3]), False),
    (SEQ, lambda: ma.BatchSplit(ma.Stack("b1", "b2"), "b4", batch_sizes=[3, 3]), False),
]


@pytest.mark.spec("COMP-BATCHSPLIT")
@pytest.mark.parametrize("backend", ["numpy", pytest.param("native", marks=pytest.mark.native)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_batch_split_matches_generic(ckpt, monkeypatch, backend, case):
    adds, setup, fused = CASES[case]
    if backend == "native":
        pytest.importorskip("minadapters.ops.native")
    slices = []
    orig = BottleneckLayer.vslice
    monkeypatch.setattr(BottleneckLayer, "vslice", lambda self, *a: slices.append(1) or orig(self, *a))
    out = run(build(ckpt, backend, adds), setup())
    if fused is not None:
        assert (not slices) == fused                   # the fused path never slices a state
    monkeypatch.setattr(BottleneckLayer, "compose_batch_split", ComposableLayer.compose_batch_split)
    generic = run(build(ckpt, backend, adds), setup())
    np.testing.assert_allclose(out, generic, rtol=1e-5, atol=1e-6)
