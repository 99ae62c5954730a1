"""average_adapter (no torch): every strategy checked against its equation on the source tensors. Spec: API-5."""
import warnings

import numpy as np
import pytest

import minadapters as ma
from minadapters.configuration.strings import get_adapter_config_hash

IDS = np.array([[2, 5, 7, 9, 11, 3], [2, 6, 8, 3, 0, 0]])
MASK = (IDS != 0).astype(np.int64)


def perturb(model, name, seed=0):
    """Random values for every parameter of ``name`` (fresh LoRA has B = 0)."""
    rng = np.random.default_rng(seed)
    for k, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.2, d[leaf].shape)).astype(d[leaf].dtype)


def add(model, names, config, seed=0):
    for i, n in enumerate(names):
        model.add_adapter(n, config)
        perturb(model, n, seed + i)


def sd(model, name):
    """state dict with the adapter name replaced by '@', for comparing adapters key by key."""
    out = {}
    for k, v in model.adapter_state_dict(name).items():
        out[k.replace(f".{name}.", ".@.").replace(f"shared_parameters.{name}.", "shared_parameters.@.")] = v
    return out


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("config", ["seq_bn", "lora[r=4, intermediate_lora=True, use_gating=True]", "ia3", "vera",
                                    "dora", "mtl_lora[n_up_projection=2]", "prefix_tuning[prefix_length=3]",
                                    "prompt_tuning[prompt_length=3]", "loreft[r=2]", "seq_bn_inv", "mam",
                                    "compacter[reduction_factor=4, phm_dim=2]"])
def test_linear_is_weighted_sum_of_every_tensor(model, config):
    add(model, ["a", "b", "c"], config)
    model.average_adapter("avg", ["a", "b", "c"], weights=[1.0, 2.0, -1.0])
    w = [0.5, 1.0, -0.5]                                   # normalised by the sum 2
    A, B, C, N = sd(model, "a"), sd(model, "b"), sd(model, "c"), sd(model, "avg")
    assert sorted(N) == sorted(A) and N
    for k in A:
        np.testing.assert_allclose(N[k], w[0] * A[k] + w[1] * B[k] + w[2] * C[k], rtol=1e-5, atol=1e-6, err_msg=k)
    model.active_adapters = "avg"
    assert np.isfinite(model(IDS, MASK).last_hidden_state).all()


@pytest.mark.spec("API-5")
def test_default_weights_are_equal_even_unnormalized(model):
    add(model, ["a", "b"], "seq_bn")
    model.average_adapter("avg", ["a", "b"], normalize_weights=False)
    A, B, N = sd(model, "a"), sd(model, "b"), sd(model, "avg")
    for k in A:
        np.testing.assert_allclose(N[k], (A[k] + B[k]) / 2, rtol=1e-6, atol=1e-7)


@pytest.mark.spec("API-5")
def test_unnormalized_weights_and_dict(model):
    add(model, ["a", "b"], "lora[r=2]")
    model.average_adapter("u", ["a", "b"], weights=[2.0, 0.5], normalize_weights=False)
    model.average_adapter("d", {"a": 2.0, "b": 0.5}, normalize_weights=False)
    A, B, U, D = sd(model, "a"), sd(model, "b"), sd(model, "u"), sd(model, "d")
    for k in A:
        np.testing.assert_allclose(U[k], 2.0 * A[k] + 0.5 * B[k], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(D[k], U[k])


@pytest.mark.spec("API-5")
def test_single_adapter_copy_and_forward_equal(model):
    add(model, ["a"], "lora[r=3, output_lora=True]")
    model.average_adapter("copy", ["a"], set_active=True)
    assert model.active_adapters == ma.Stack("copy")
    got = model(IDS, MASK).last_hidden_state
    model.active_adapters = "a"
    np.testing.assert_allclose(got, model(IDS, MASK).last_hidden_state, rtol=1e-6, atol=1e-6)


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("config", ["lora[r=3]", "ia3"])
def test_negate_b(model, config):
    add(model, ["a", "b"], config)
    model.average_adapter("n", ["a", "b"], weights=[1.5, -0.5], normalize_weights=False,
                          combine_strategy="lora_linear_only_negate_b")
    A, B, N = sd(model, "a"), sd(model, "b"), sd(model, "n")
    for k in A:
        wa, wb = (1.5, 0.5) if k.endswith("lora_A") else (1.5, -0.5)
        np.testing.assert_allclose(N[k], wa * A[k] + wb * B[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("rank", [1, 3, 8])
def test_delta_w_svd(model, rank):
    add(model, ["a", "b"], "lora[r=4, alpha=8]")
    w = [0.7, -0.3]
    model.average_adapter("s", ["a", "b"], weights=w, normalize_weights=False, combine_strategy="lora_delta_w_svd",
                          svd_rank=rank)
    assert model.adapters_config.get("s")["r"] == rank and model.adapters_config.get("s")["alpha"] == 8
    A, B, S = sd(model, "a"), sd(model, "b"), sd(model, "s")
    for ka in [k for k in A if k.endswith("lora_A")]:
        kb = ka[:-1] + "B"
        dw = w[0] * A[kb].astype(np.float64) @ A[ka] + w[1] * B[kb].astype(np.float64) @ B[ka]
        U, s, Vh = np.linalg.svd(dw)
        best = (U[:, :rank] * s[:rank]) @ Vh[:rank]            # Eckart-Young: best rank-k approximation
        assert S[ka].shape == (rank, dw.shape[1]) and S[kb].shape == (dw.shape[0], rank)
        np.testing.assert_allclose(S[kb].astype(np.float64) @ S[ka], best, atol=1e-5)
        if rank >= 8:                                           # rank(ΔW) <= 2r = 8: exact
            np.testing.assert_allclose(S[kb].astype(np.float64) @ S[ka], dw, atol=1e-5)
    # forward: scaling alpha / svd_rank (not the sources' alpha / r)
    mod = next(l for l in model.layers_of("lora") if "s" in l.modules)
    assert mod.modules["s"].info["scaling"] == pytest.approx(8 / rank)


@pytest.mark.spec("API-5")
def test_overwrite_source_with_its_average(model):
    add(model, ["a", "b"], "seq_bn")
    A, B = sd(model, "a"), sd(model, "b")
    with pytest.raises(ma.ConfigError, match="already been added"):
        model.average_adapter("a", ["a", "b"])
    model.average_adapter("a", ["a", "b"], overwrite_ok=True)
    N = sd(model, "a")
    for k in A:
        np.testing.assert_allclose(N[k], (A[k] + B[k]) / 2, rtol=1e-6, atol=1e-7)


@pytest.mark.spec("API-5")
def test_configs_must_match_except_dropout_and_init(model):
    model.add_adapter("a", "lora[r=4, dropout=0.1, init_weights='bert']")
    model.add_adapter("b", "lora[r=4]")
    model.add_adapter("c", "lora[r=2]")
    model.average_adapter("ab", ["a", "b"])
    assert get_adapter_config_hash(model.adapters_config.get("ab")) == get_adapter_config_hash(
        model.adapters_config.get("a"))
    with pytest.raises(ValueError, match=r"different configurations.*r: 4 vs 2"):
        model.average_adapter("ac", ["a", "c"])
    assert "ac" not in model.adapters_config


BAD = [
    (dict(adapter_list=[]), ValueError, "at least one adapter"),
    (dict(adapter_list=["a", "a"]), ValueError, "more than once"),
    (dict(adapter_list="a,b"), TypeError, "list of adapter names"),
    (dict(adapter_list=["a", "b"], weights=[1.0]), ValueError, "one weight per adapter"),
    (dict(adapter_list=["a", "b"], weights=[1.0, -1.0]), ValueError, "sum to 0"),
    (dict(adapter_list=["a", "b"], weights=[1.0, float("nan")]), ValueError, "finite"),
    (dict(adapter_list={"a": 1.0, "b": 2.0}, weights=[1, 2]), ValueError, "not both"),
    (dict(adapter_list=["a", "zzz"]), KeyError, "zzz"),
    (dict(adapter_list=["a", "b"], combine_strategy="mean"), ValueError, "Invalid combine_strategy"),
    (dict(adapter_list=["a", "b"], combine_strategy="lora_delta_w_svd"), ValueError, "svd_rank must be set"),
    (dict(adapter_list=["a", "b"], combine_strategy="lora_delta_w_svd", svd_rank=0), ValueError, "int >= 1"),
    (dict(adapter_list=["a", "b"], combine_strategy="lora_delta_w_svd", svd_rank=33), ValueError, "exceeds"),
    (dict(adapter_list=["a", "b"], svd_rank=2), ValueError, "only applies"),
]


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("kw, exc, msg", BAD, ids=[b[2] for b in BAD])
def test_bad_input_changes_nothing(model, kw, exc, msg):
    add(model, ["a", "b"], "lora[r=4]")
    before = {k: v.copy() for k, v in model.adapter_state_dict("a").items()}
    with pytest.raises(exc, match=msg):
        model.average_adapter("new", **kw)
    assert sorted(model.adapters_config) == ["a", "b"]
    for k, v in model.adapter_state_dict("a").items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.spec("API-5")
@pytest.mark.parametrize("config, strategy, msg", [
    ("vera", "lora_linear_only_negate_b", "VeRA only supports linear"),
    ("lora[use_gating=True]", "lora_linear_only_negate_b", "use_gating"),
    ("dora", "lora_delta_w_svd", "use_dora"),
    ("mtl_lora", "lora_linear_only_negate_b", "MTL-LoRA"),
    ("ia3", "lora_delta_w_svd", "IA3"),
    ("seq_bn", "lora_linear_only_negate_b", "only supported for LoRA"),
    ("prefix_tuning", "lora_delta_w_svd", "only supported for LoRA"),
    ("mam", "lora_linear_only_negate_b", "ConfigUnion"),
])
def test_strategy_not_applicable(model, config, strategy, msg):
    add(model, ["a", "b"], config)
    with pytest.raises(ValueError, match=msg), warnings.catch_warnings():
        warnings.simplefilter("ignore")            # non-LoRA: "svd_rank ignored" as upstream
        model.average_adapter("n", ["a", "b"], combine_strategy=strategy,
                              svd_rank=2 if strategy == "lora_delta_w_svd" else None)
    assert "n" not in model.adapters_config


@pytest.mark.spec("API-5")
def test_svd_rank_ignored_with_warning_for_non_lora(model):
    add(model, ["a", "b"], "seq_bn")
    with pytest.warns(UserWarning, match="Ignoring svd_rank"):
        model.average_adapter("n", ["a", "b"], svd_rank=3)
    assert "n" in model.adapters_config


@pytest.mark.spec("API-5")
def test_ejected_prefix_cannot_be_averaged_with_mlp_prefix(model):
    add(model, ["a", "b"], "prefix_tuning[prefix_length=2]")
    model.eject_prefix_tuning("a")
    with pytest.raises(ValueError, match="flat: True vs False"):
        model.average_adapter("n", ["a", "b"])


@pytest.mark.spec("API-5")
def test_unexpected_keyword(model):
    add(model, ["a"], "seq_bn")
    with pytest.raises(TypeError, match="svd_rnak"):
        model.average_adapter("n", ["a"], svd_rnak=2)
