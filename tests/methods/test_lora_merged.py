"""Fused-qkv LoRA / IA³ (GPT-2 c_attn, adapters' LoRAMergedLinear) against hand computations. Spec: LORA-7, LORA-9.

Uses a one-layer stand-in architecture whose only LoRA location is "selfattn.qkv" (weight (3·D, D), out × in).
"""
import types

import numpy as np
import pytest

import minadapters as ma
from minadapters.composition import parse_composition
from minadapters.context import ForwardState
from minadapters.model import AdapterModel
from minadapters.models.base import Architecture, LayerStack

D = 6
WK, BK = "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias"


def fused_model(seed=0):
    stack = LayerStack("decoder", layers="h.{i}", num_layers="num_hidden_layers", attn_qkv="attn.c_attn", reft=None)
    arch = Architecture(name="fake", model_types=("fake",), config_class=types.SimpleNamespace, stacks=(stack,),
                        forward=None, normalize_keys=None, expected_shapes=None, model_class={}, base_model_prefix={})
    cfg = types.SimpleNamespace(model_type="fake", hidden_size=D, num_hidden_layers=1, num_attention_heads=2)
    rng = np.random.default_rng(seed)
    p = {WK: rng.normal(size=(3 * D, D)).astype(np.float32), BK: rng.normal(size=3 * D).astype(np.float32)}
    return AdapterModel(arch, cfg, p, seed=seed)


def perturb(m, name, seed=1):
    rng = np.random.default_rng(seed)
    for _, (d, leaf) in m.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.3, d[leaf].shape)).astype(d[leaf].dtype)


def fwd_layer(m, setup, scores=False):
    x = np.random.default_rng(5).normal(size=(3, 4, D)).astype(np.float32)
    fwd = ForwardState(setup=parse_composition(setup), output_gating_scores=scores)
    y = m.method_layer("lora", "selfattn.qkv", 0).forward(x, m.params[WK], m.params[BK], fwd)
    return y, x, fwd


def P(m, name):
    return m.method_layer("lora", "selfattn.qkv", 0).modules[name].params


@pytest.mark.spec("LORA-7")
def test_shapes_and_keys():
    m = fused_model()
    m.add_adapter("a", ma.LoRAConfig(r=2, attn_matrices=["q", "v"]))
    sd = m.adapter_state_dict("a")
    assert sd["h.0.attn.c_attn.loras.a.lora_A"].shape == (4, D)
    assert sd["h.0.attn.c_attn.loras.a.lora_B"].shape == (2 * D, 2)
    m.add_adapter("g", ma.LoRAConfig(r=3, attn_matrices=["q", "k", "v"], use_gating=True))
    assert P(m, "g")["gate.weight"].shape == (3, D)


@pytest.mark.spec("LORA-7")
def test_add_mode_scatter_into_enabled_thirds():
    m = fused_model()
    m.add_adapter("a", ma.LoRAConfig(r=2, alpha=4, attn_matrices=["q", "v"]))
    perturb(m, "a")
    p = P(m, "a")
    y, x, _ = fwd_layer(m, "a")
    A, B = p["lora_A"], p["lora_B"]
    dq = (x @ A[:2].T) @ B[:D].T
    dv = (x @ A[2:].T) @ B[D:].T
    expected = x @ m.params[WK].T + m.params[BK] + 2.0 * np.concatenate([dq, np.zeros_like(dq), dv], -1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-7")
def test_ia3_pads_with_one_times_alpha():
    m = fused_model()
    m.add_adapter("s", ma.IA3Config(alpha=3, attn_matrices=["k"]))
    perturb(m, "s")
    l = P(m, "s")["lora_B"][:, 0]
    y, x, _ = fwd_layer(m, "s")
    v = np.concatenate([np.ones(D), l, np.ones(D)]) * 3
    np.testing.assert_allclose(y, (x @ m.params[WK].T + m.params[BK]) * v, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("LORA-7")
def test_gating_per_third_and_scores():
    m = fused_model()
    m.add_adapter("g", ma.LoRAConfig(r=1, alpha=8, attn_matrices=["q", "v"], use_gating=True))
    perturb(m, "g")
    p = P(m, "g")
    y, x, fwd = fwd_layer(m, "g", scores=True)
    g = (1 / (1 + np.exp(-(x @ p["gate.weight"].T + p["gate.bias"])))).mean(axis=1)     # (B, 2)
    A, B = p["lora_A"], p["lora_B"]
    dq = (x @ A[:1].T) @ B[:D].T * g[:, None, :1]
    dv = (x @ A[1:].T) @ B[D:].T * g[:, None, 1:]
    expected = x @ m.params[WK].T + m.params[BK] + np.concatenate([dq, np.zeros_like(dq), dv], -1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fwd.gating_scores["g"][0]["selfattn_lora"], g, rtol=1e-6)


@pytest.mark.spec("LORA-7")
@pytest.mark.parametrize("setup", [lambda: ma.Stack("a", "b"), lambda: ma.Parallel("a", "b"),
                                   lambda: ma.BatchSplit("a", "b", batch_sizes=[1, 2]),
                                   lambda: ma.Average("a", "b")], ids=["Stack", "Parallel", "BatchSplit", "Average"])
def test_multi_adapter_setups_rejected(setup):
    m = fused_model()
    m.add_adapter("a", "lora")
    m.add_adapter("b", "lora")
    with pytest.raises(ma.CompositionError, match="Cannot use"):
        fwd_layer(m, setup())


@pytest.mark.spec("LORA-7")
@pytest.mark.parametrize("config", [ma.VeraConfig(), ma.DoRAConfig(), ma.MTLLoRAConfig()], ids=["vera", "dora", "mtl"])
def test_unsupported_methods_rejected_at_add(config):
    m = fused_model()
    with pytest.raises(ma.ConfigError, match="fused qkv"):
        m.add_adapter("x", config)
    assert "x" not in m.adapters_config


@pytest.mark.spec("LORA-7")
def test_no_qkv_matrix_means_no_module():
    m = fused_model()
    m.add_adapter("a", ma.LoRAConfig(attn_matrices=[]))
    assert m.adapter_state_dict("a") == {}


@pytest.mark.spec("LORA-9")
@pytest.mark.parametrize("config", [ma.LoRAConfig(r=2, alpha=5, attn_matrices=["k", "v"]),
                                    ma.IA3Config(alpha=2, attn_matrices=["q", "v"])], ids=["lora", "ia3"])
def test_merge_is_exact_and_reset_bit_identical(config):
    m = fused_model()
    m.add_adapter("a", config)
    perturb(m, "a")
    W, b = m.params[WK], m.params[BK]
    unmerged, x, _ = fwd_layer(m, "a")
    m.merge_adapter("a")
    assert m.params[WK] is not W
    merged, _, _ = fwd_layer(m, "a")
    np.testing.assert_allclose(merged, unmerged, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x @ m.params[WK].T + m.params[BK], unmerged, rtol=1e-5, atol=1e-5)
    m.reset_adapter()
    assert m.params[WK] is W and m.params[BK] is b
