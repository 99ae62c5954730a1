"""Oracle: GPT-2 and LLaMA forwards (base model and with adapters) match transformers 4.57 + adapters 1.3.0.

Spec: DEC-1 .. DEC-4, BN-2 (pre-LN call sites), LORA-*, PREFIX-*, REFT-*. Models: odd sizes (GPT-2 hidden 36,
LLaMA hidden 40 with 4 query / 2 key-value heads), eager attention, every base weight perturbed; padded batches
(right, left, none); adapter weights perturbed.
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import torch  # noqa: E402
import adapters.composition as ac  # noqa: E402
from adapters.methods.prefix_tuning import PrefixTuningLayer as UpstreamPrefixLayer  # noqa: E402
from decoder_oracle_utils import batch, hf_decoder  # noqa: E402
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

PAD_SIDES = ["right", "left", "none"]
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
BASE_CASES = [
    ("gpt2", {}),
    ("gpt2", dict(activation_function="relu", layer_norm_epsilon=1e-3)),
    ("gpt2", dict(scale_attn_by_inverse_layer_idx=True)),
    ("gpt2", dict(scale_attn_weights=False)),
    ("llama", {}),                                                   # GQA 4 / 2
    ("llama", dict(num_key_value_heads=4)),                          # MHA
    ("llama", dict(num_key_value_heads=1, rms_norm_eps=1e-3)),       # MQA
    ("llama", dict(head_dim=12, attention_bias=True, mlp_bias=True)),  # explicit head_dim != hidden / heads
    ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 2.0}, rope_theta=500.0)),
    ("llama", dict(rope_scaling={"type": "linear", "factor": 3.0})),  # legacy "type" key
    ("llama", dict(rope_scaling=LLAMA3, rope_theta=500.0)),            # all three llama3 frequency bands
    ("llama", dict(hidden_act="gelu_new", intermediate_size=31)),
]


def _relink_pool(model):
    """save_pretrained drops the pool alias of every PrefixTuningLayer; put it back."""
    for mod in model.modules():
        if isinstance(mod, UpstreamPrefixLayer):
            mod.set_pool(model.prefix_tuning)


def _torch_hidden(model, ids, mask, **kw):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).last_hidden_state.numpy()


@pytest.mark.spec("DEC-1")
@pytest.mark.spec("DEC-2")
@pytest.mark.spec("DEC-3")
@pytest.mark.spec("DEC-4")
@pytest.mark.parametrize("model_type,overrides", BASE_CASES, ids=lambda c: str(c))
def test_base_model_matches_transformers(model_type, overrides, tmp_path):
    """No adapter: every position (padding included) equals transformers' eager forward."""
    m = hf_decoder(model_type, **overrides)
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    for side in PAD_SIDES:
        ids, mask = batch(pad_side=side, seed=len(side))
        assert_close(ours(ids, attention_mask=mask).last_hidden_state, _torch_hidden(m, ids, mask), rtol=1e-5,
                     what=f"{model_type} {overrides} pad={side}")
    ids, _ = batch(pad_side="none", B=2, T=5)
    with torch.no_grad():
        exp = m(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    assert_close(ours(ids).last_hidden_state, exp, rtol=1e-5, what="no attention_mask")


@pytest.mark.spec("DEC-1")
def test_gpt2_token_type_ids_use_wte(tmp_path):
    m = hf_decoder("gpt2")
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    ids, mask = batch(pad_side="right")
    tt = (np.arange(ids.shape[1])[None] % 3 + np.arange(3)[:, None]).astype(np.int64)
    exp = _torch_hidden(m, ids, mask, token_type_ids=torch.tensor(tt))
    assert_close(ours(ids, attention_mask=mask, token_type_ids=tt).last_hidden_state, exp, rtol=1e-5)


@pytest.mark.spec("DEC-1")
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_lm_head_checkpoint_loads_base_model(model_type, tmp_path):
    """A ...LMHeadModel / ...ForCausalLM checkpoint ('transformer.' / 'model.' prefixed) gives the same base model."""
    m = hf_decoder(model_type, lm=True)
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    ids, mask = batch(pad_side="left")
    assert_close(ours(ids, attention_mask=mask).last_hidden_state, _torch_hidden(m.base_model, ids, mask), rtol=1e-5)
    if model_type == "llama":           # untied head kept aside for generate, not a base weight
        np.testing.assert_array_equal(ours.lm_head_weight, m.lm_head.weight.detach().numpy())
        assert "lm_head.weight" not in ours.params


class Env:
    """One upstream decoder + our model loaded from its weights; adapters added to both."""

    def __init__(self, model_type, tmp):
        self.model_type, self.tmp, self.n = model_type, tmp, 0
        self.torch_model = hf_decoder(model_type)
        save_model(self.torch_model, os.path.join(tmp, "model"))
        _relink_pool(self.torch_model)
        self.ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))

    def add(self, config):
        self.n += 1
        name = f"a{self.n}"
        self.torch_model.add_adapter(name, config=config)
        perturb_adapter(self.torch_model, name, seed=self.n)
        self.torch_model.eval()              # new modules start in training mode (ReFT dropout)
        d = os.path.join(self.tmp, name)
        self.torch_model.save_adapter(d, name)
        assert self.ours.load_adapter(d) == name
        return name

    def compare(self, theirs, ours, what="", sides=("left", "right"), B=3):
        self.torch_model.set_active_adapters(theirs)
        self.ours.active_adapters = ours
        for side in sides:
            ids, mask = batch(pad_side=side, B=B, seed=self.n)
            got = self.ours(ids, attention_mask=mask).last_hidden_state
            assert_close(got, _torch_hidden(self.torch_model, ids, mask), what=f"{self.model_type} {what} {side}")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


SINGLE = [
    "seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn",
    "seq_bn[original_ln_after=False]",                                   # pre-LN: the main residual is dropped
    "seq_bn[original_ln_before=False, residual_before_ln=False]",
    "seq_bn[ln_before=True, ln_after=True, use_gating=True, residual_before_ln=False, scaling='channel']",
    "double_seq_bn[reduction_factor={'1': 3, 'default': 8}, leave_out=[2], non_linearity='gelu_new']",
    "seq_bn_inv", "double_seq_bn_inv",
    "lora", "lora[r=4, alpha=16, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]",
    "lora[attn_matrices=['k'], use_gating=True]", "ia3", "ia3[attn_matrices=['q','v'], intermediate_lora=True]",
    "prefix_tuning", "prefix_tuning[prefix_length=5, use_gating=True, shared_gating=False]",
    "prefix_tuning[flat=True, prefix_length=3, leave_out=[1]]",
    "mam", "loreft", "noreft[r=3, prefix_positions=2, suffix_positions=1]", "loreft[tied_weights=True, r=2]",
]


@pytest.mark.spec("BN-2")
@pytest.mark.parametrize("config", SINGLE)
def test_single_adapter(env, config):
    name = env.add(config)
    env.compare(name, name, what=config)


@pytest.mark.spec("BN-2")
def test_stack_parallel_batchsplit_of_bottlenecks(env):
    """Both adapters at both locations: adapters 1.3.0 crashes (KeyError / None residual) when a composed adapter
    is absent at a location of a decoder block."""
    a = env.add("double_seq_bn[reduction_factor=4]")
    b = env.add("double_seq_bn[reduction_factor=6, non_linearity='relu', use_gating=True]")
    env.compare(ac.Stack(b, a), ma.Stack(b, a), what="Stack")
    env.compare(ac.BatchSplit(b, a, batch_sizes=[1, 2]), ma.BatchSplit(b, a, batch_sizes=[1, 2]), what="BatchSplit")
    env.compare(ac.Parallel(b, a), ma.Parallel(b, a), what="Parallel", sides=("none", "left", "right"))


@pytest.mark.spec("BN-2")
def test_union_lora_bottleneck_prefix(env):
    from adapters import ConfigUnion, LoRAConfig, PrefixTuningConfig, SeqBnConfig
    name = env.add(ConfigUnion(LoRAConfig(r=4, alpha=4), PrefixTuningConfig(prefix_length=4, bottleneck_size=6),
                               SeqBnConfig(reduction_factor=5)))
    env.compare(name, name, what="union lora+prefix+seq_bn")


@pytest.mark.spec("DEC-1")
def test_merged_lora_equals_unmerged(env):
    """Merging into the fused GPT-2 c_attn / LLaMA q,k,v (ours) gives the unmerged forward of adapters."""
    name = env.add("lora[r=3, alpha=6, attn_matrices=['q','v'], intermediate_lora=True]")
    env.torch_model.set_active_adapters(name)
    ids, mask = batch(pad_side="left")
    exp = _torch_hidden(env.torch_model, ids, mask)
    env.ours.active_adapters = name
    env.ours.merge_adapter(name)
    try:
        assert_close(env.ours(ids, attention_mask=mask).last_hidden_state, exp, what="merged")
    finally:
        env.ours.reset_adapter()
