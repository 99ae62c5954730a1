"""Families of issue #15 without torch: config validation, checkpoint keys, refusals, block invariants, backends.

Spec: FAM-DB-1, FAM-DB-2. (Parity with transformers / adapters 1.3.0 is in tests/oracle/test_families_oracle.py.)
"""
import json

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import ConfigError, ShapeError
from minadapters.io.safetensors_io import save_safetensors
from minadapters.models import architecture

RAWS = {
    "distilbert": dict(model_type="distilbert", dim=24, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=41,
                       max_position_embeddings=32),
}


def weights(raw, seed=0, scale=0.3):
    arch = architecture(raw["model_type"])
    cfg = arch.config_class.from_dict(raw)
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in arch.expected_shapes(cfg).items():
        w = rng.standard_normal(s) * scale
        if k.endswith(("norm.weight", "LayerNorm.weight", "layer_norm.weight")):
            w += 1.0
        out[k] = w.astype(np.float32)
    return out


def write(tmp_path, raw, w):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    save_safetensors(str(tmp_path / "model.safetensors"), w)
    return ma.AutoModel.from_pretrained(str(tmp_path))


def ids_mask(B=3, T=7, seed=1, vocab=41):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, -2:] = 0
    mask[2, -4:] = 0
    return np.where(mask == 1, ids, 0), mask


@pytest.fixture(params=sorted(RAWS))
def family(request, tmp_path):
    raw = RAWS[request.param]
    return raw, write(tmp_path / "m", raw, weights(raw))


@pytest.mark.spec("FAM-DB-1")
@pytest.mark.parametrize("change,err,pattern", [
    (dict(dim=25), ShapeError, "dim=25 is not a multiple of n_heads=4"),
    (dict(activation="silu"), ConfigError, "activation='silu'.*'gelu' or 'relu'"),
    (dict(n_layers=0), ConfigError, "n_layers=0 must be an integer >= 1"),
    (dict(n_heads="4"), ConfigError, "n_heads='4'"),
    (dict(sinusoidal_pos_embds="yes"), ConfigError, "sinusoidal_pos_embds='yes'"),
])
def test_distilbert_config_errors(change, err, pattern):
    arch = architecture("distilbert")
    with pytest.raises(err, match=pattern):
        arch.config_class.from_dict(dict(RAWS["distilbert"], **change))


@pytest.mark.spec("FAM-DB-1")
def test_distilbert_task_checkpoint_loads_base_model(tmp_path):
    """A DistilBertForSequenceClassification file ('distilbert.' keys + heads) gives the same base model."""
    raw = RAWS["distilbert"]
    w = weights(raw)
    base = write(tmp_path / "base", raw, w)
    task = {"distilbert." + k: v for k, v in w.items()}
    task["pre_classifier.weight"] = np.ones((24, 24), np.float32)
    task["classifier.weight"] = np.ones((2, 24), np.float32)
    other = write(tmp_path / "task", raw, task)
    ids, mask = ids_mask()
    np.testing.assert_array_equal(base(ids, attention_mask=mask).last_hidden_state,
                                  other(ids, attention_mask=mask).last_hidden_state)
    assert not any(k.startswith(("classifier", "pre_classifier")) for k in other.params)


@pytest.mark.spec("FAM-DB-1")
def test_distilbert_refuses_token_type_ids_and_prompt_tuning(tmp_path):
    raw = RAWS["distilbert"]
    m = write(tmp_path, raw, weights(raw))
    ids, mask = ids_mask()
    with pytest.raises(TypeError, match="token_type_ids"):
        m(ids, attention_mask=mask, token_type_ids=np.zeros_like(ids))
    with pytest.raises(ValueError, match="prompt_tuning.*distilbert"):
        m.add_adapter("p", config="prompt_tuning")
    assert "p" not in m.adapters_config.adapters


@pytest.mark.spec("FAM-DB-1")
def test_too_long_input_names_the_limit(family):
    raw, m = family
    ids = np.ones((1, 40), np.int64)
    with pytest.raises(ShapeError, match="at most 32"):
        m(ids)


@pytest.mark.spec("FAM-DB-2")
def test_padding_does_not_change_real_tokens(family):
    _, m = family
    ids, mask = ids_mask()
    m.add_adapter("a", config="seq_bn[reduction_factor=4]|lora[r=2]|prefix_tuning[prefix_length=3]")
    m.active_adapters = "a"
    full = m(ids, attention_mask=mask).last_hidden_state
    short = m(ids[2:, :3], attention_mask=mask[2:, :3]).last_hidden_state
    np.testing.assert_allclose(full[2:, :3], short, rtol=1e-5, atol=1e-5)


@pytest.mark.spec("FAM-DB-2")
def test_batchsplit_and_parallel_invariants(family):
    _, m = family
    for n in ("a", "b"):
        m.add_adapter(n, config="double_seq_bn[reduction_factor=3]")
        for k, v in m.adapter_state_dict(n).items():
            v += np.random.default_rng(len(k)).standard_normal(v.shape).astype(np.float32) * 0.1
    ids, mask = ids_mask()
    m.active_adapters = ma.BatchSplit("a", "b", batch_sizes=[1, 2])
    split = m(ids, attention_mask=mask).last_hidden_state
    m.active_adapters = "a"
    first = m(ids[:1], attention_mask=mask[:1]).last_hidden_state
    m.active_adapters = "b"
    rest = m(ids[1:], attention_mask=mask[1:]).last_hidden_state
    np.testing.assert_allclose(split, np.concatenate([first, rest]), rtol=1e-5, atol=1e-6)
    m.active_adapters = ma.Parallel("a", "b")
    par = m(ids, attention_mask=mask).last_hidden_state
    assert par.shape[0] == 6, f"Parallel gives batch {par.shape[0]}, but should be 6"
    np.testing.assert_allclose(par[:3], _run(m, "a", ids, mask), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(par[3:], _run(m, "b", ids, mask), rtol=1e-5, atol=1e-6)


def _run(m, name, ids, mask):
    m.active_adapters = name
    return m(ids, attention_mask=mask).last_hidden_state


@pytest.mark.native
def test_native_equals_numpy(family):
    _, m = family
    m.add_adapter("a", config="lora[r=2, intermediate_lora=True]|seq_bn")
    m.active_adapters = "a"
    ids, mask = ids_mask()
    want = m(ids, attention_mask=mask).last_hidden_state
    try:
        m.set_backend("native")
    except ma.errors.BackendUnavailableError as e:     # pragma: no cover - depends on the build
        pytest.skip(f"native backend unavailable: {e}")
    np.testing.assert_allclose(m(ids, attention_mask=mask).last_hidden_state, want, rtol=1e-4, atol=1e-5)
