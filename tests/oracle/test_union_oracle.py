"""Oracle: method combinations (ConfigUnion, MAM, UniPELT) incl. gating scores, on bert and roberta.

Spec: CFG-3 (union validation), GATE-1, GATE-2, and the member methods' sections.
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
from oracle_utils import assert_close, batch, hf_model, perturb_adapter, save_model, torch_forward  # noqa: E402

UNIONS = {
    "mam": "mam",
    "unipelt": "unipelt",
    "lora+seq_bn": "lora[r=4, alpha=8, intermediate_lora=True]|seq_bn",
    "prefix+double": "prefix_tuning[prefix_length=5, bottleneck_size=16]|double_seq_bn",
    "loreft+seq_bn+lora": "loreft[r=2]|seq_bn[reduction_factor=4]|lora[attn_matrices=['k']]",
    "par_bn+prompt": "par_bn|prompt_tuning[prompt_length=3]",
    "mh+output bottleneck": "seq_bn[mh_adapter=True, output_adapter=False]|double_seq_bn[mh_adapter=False]",
    "ia3+prefix": "ia3|prefix_tuning_flat[prefix_length=4]",
}


@pytest.fixture(scope="module", params=["bert", "roberta"])
def env(request, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("union" + request.param))
    m = hf_model(request.param, seed=4)
    save_model(m, os.path.join(tmp, "model"))
    ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
    return m, ours, tmp, batch(model_type=request.param)


@pytest.mark.parametrize("key", list(UNIONS))
def test_union(env, key):
    m, ours, tmp, (ids, mask) = env
    name = "u" + str(list(UNIONS).index(key))
    m.add_adapter(name, config=UNIONS[key])
    perturb_adapter(m, name, seed=list(UNIONS).index(key))
    m.eval()  # upstream creates ReFT units in training mode (dropout) even on an eval model
    m.set_active_adapters(name)
    gating = key in ("unipelt",)
    out = torch_forward(m, ids, mask, output_adapter_gating_scores=gating)
    d = os.path.join(tmp, name)
    m.save_adapter(d, name)
    ours.load_adapter(d)
    ours.active_adapters = name
    got = ours(input_ids=ids, attention_mask=mask, output_adapter_gating_scores=gating)
    assert_close(got.last_hidden_state, out.last_hidden_state.numpy(), what=f"union {key}")
    if gating:
        want = out.adapter_gating_scores[name]
        have = got.adapter_gating_scores[name]
        assert set(have) == set(want)
        for layer in want:
            assert set(have[layer]) == set(want[layer]), f"layer {layer}: {set(have[layer])} vs {set(want[layer])}"
            for loc, arr in want[layer].items():
                assert np.asarray(have[layer][loc]).shape == np.asarray(arr).shape, (layer, loc)
                assert_close(have[layer][loc], arr, rtol=1e-4, what=f"gate {layer}/{loc}")


@pytest.mark.parametrize("bad", ["seq_bn|double_seq_bn", "lora|ia3", "prefix_tuning|prefix_tuning_flat",
                                 "lora|vera", "seq_bn|seq_bn"])
def test_invalid_unions_rejected_like_upstream(bad):
    import adapters
    with pytest.raises(ValueError):
        adapters.AdapterConfig.load(bad)
    with pytest.raises(ValueError):
        ma.AdapterConfig.load(bad)
