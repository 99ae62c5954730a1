"""Oracle: the families added by issue #15 match transformers 4.57.6 (base model, 1e-5) and adapters 1.3.0 (methods
and blocks with perturbed weights). Spec: FAM-DB-*, FAM-LL-*, FAM-GJ-*, FAM-XM-1.

Odd sizes (hidden 36/40, FFN 37/68, 4 query heads), eager attention, every base weight and bias perturbed,
padded batches (right, left, none).
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import torch  # noqa: E402
import adapters.composition as ac  # noqa: E402
from decoder_oracle_utils import batch  # noqa: E402
from family_oracle_utils import Env, hf_family_model, relink_pool as _relink_pool  # noqa: E402
from family_oracle_utils import torch_hidden as _torch_hidden  # noqa: E402
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

PAD_SIDES = ["right", "left", "none"]
PREFIX_CONFIGS = ("prefix_tuning", "mam")
BASE_CASES = [
    ("distilbert", {}),
    ("distilbert", dict(sinusoidal_pos_embds=True)),
    ("distilbert", dict(activation="relu")),
    ("electra", {}),                                                       # embeddings_project 28 -> 40
    ("electra", dict(embedding_size=40, hidden_act="gelu_new", layer_norm_eps=1e-5)),
    ("albert", {}),                                                        # 4 layers on 2 groups, E 28 -> D 40
    ("albert", dict(num_hidden_groups=1, embedding_size=40, hidden_act="gelu")),
    ("bert-generation", {}),
    ("bert-generation", dict(is_decoder=True, hidden_act="relu")),               # causal self-attention
    ("mistral", {}),                                                       # GQA 4 / 2, window 4096
    ("mistral", dict(sliding_window=3)),                                   # the window cuts a 9-token batch
    ("mistral", dict(head_dim=12, num_key_value_heads=1, sliding_window=None)),
    ("qwen2", {}),                                                         # q/k/v biases
    ("qwen2", dict(use_sliding_window=True, sliding_window=3, max_window_layers=1)),
    ("qwen3", {}),                                                         # q/k RMS norms
    ("qwen3", dict(attention_bias=True, head_dim=12, rope_theta=500.0)),
    ("gemma", dict(head_dim=12)),                                          # (1 + w) RMSNorm, √D, GeGLU
    ("gemma", dict(num_key_value_heads=4, attention_bias=True, hidden_act="gelu")),
    ("xmod", {}),                                                          # post-norm: output LayerNorm twice
    ("xmod", dict(pre_norm=True, adapter_layer_norm=True, hidden_act="gelu_new")),
    ("gptj", {}),                                                          # rotary on 6 of 10 head features
    ("gptj", dict(rotary_dim=10, activation_function="gelu", layer_norm_epsilon=1e-6)),
]
FAMILIES = [mt for mt in dict.fromkeys(c[0] for c in BASE_CASES)]


@pytest.mark.spec("FAM-DB-1")
@pytest.mark.spec("FAM-DB-2")
@pytest.mark.spec("FAM-GJ-1")
@pytest.mark.spec("FAM-GJ-2")
@pytest.mark.spec("FAM-XM-1")
@pytest.mark.parametrize("model_type,overrides", BASE_CASES, ids=lambda c: str(c))
def test_base_model_matches_transformers(model_type, overrides, tmp_path):
    """No adapter: every position (padding included) equals transformers' eager forward to 1e-5."""
    m = hf_family_model(model_type, **overrides)
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    for side in PAD_SIDES:
        ids, mask = batch(pad_side=side, seed=len(side))
        assert_close(ours(ids, attention_mask=mask).last_hidden_state, _torch_hidden(m, ids, mask), rtol=1e-5,
                     what=f"{model_type} {overrides} pad={side}")
    ids, _ = batch(pad_side="none", B=2, T=5)
    assert_close(ours(ids).last_hidden_state, _torch_hidden(m, ids, None), rtol=1e-5, what="no attention_mask")
    ids, mask = batch(pad_side="right")
    extra = {"use_cache": False} if model_type == "bert-generation" else {}
    with torch.no_grad():
        exp = m(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_attentions=True,
                output_hidden_states=True, **extra)
    got = ours(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(got.attentions) == len(exp.attentions) and len(got.hidden_states) == len(exp.hidden_states)
    for i, (a, e) in enumerate(zip(got.attentions, exp.attentions)):
        assert_close(a, e.numpy(), rtol=1e-5, what=f"{model_type} attentions of layer {i}")
    for i, (a, e) in enumerate(zip(got.hidden_states, exp.hidden_states)):
        assert_close(a, e.numpy(), rtol=1e-5, what=f"{model_type} hidden_states[{i}]")
    ours.set_backend("native")
    ids, mask = batch(pad_side="left")
    assert_close(ours(ids, attention_mask=mask).last_hidden_state, _torch_hidden(m, ids, mask), rtol=1e-4,
                 what=f"{model_type} native backend")


@pytest.fixture(scope="module", params=FAMILIES)
def env(request, tmp_path_factory):
    return Env(request.param, str(tmp_path_factory.mktemp(request.param)))


SINGLE = [
    "seq_bn", "double_seq_bn", "par_bn", "seq_bn_inv",
    "double_seq_bn[reduction_factor={'1': 3, 'default': 8}, leave_out=[2], non_linearity='gelu_new']",
    "lora", "lora[r=4, alpha=16, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]",
    "ia3", "ia3[attn_matrices=['q','v'], intermediate_lora=True]",
    "prefix_tuning", "prefix_tuning[prefix_length=5, use_gating=True, shared_gating=False]",
    "mam", "loreft", "compacter[reduction_factor=9, shared_phm_rule=False]",
    "seq_bn[original_ln_after=False]", "noreft[r=3, prefix_positions=2, suffix_positions=1]", "mtl_lora[r=2]",
]


@pytest.mark.spec("FAM-DB-2")
@pytest.mark.spec("FAM-LL-3")
@pytest.mark.parametrize("config", SINGLE)
def test_single_adapter(env, config):
    if config.startswith(PREFIX_CONFIGS) and "prefix_tuning" not in env.ours.arch.methods:
        _both_refuse(env, config)
        return
    if "original_ln_after=False" in config and env.ours.arch.stacks[0].bottleneck_hooked:
        _both_refuse(env, config)          # adapters' LAYER_HOOK_UNSUPPORTED
        return
    if config.startswith("mtl_lora"):      # no plugin interface lists "mtl_lora" among its adapter_methods
        if "mtl_lora" not in env.ours.arch.methods:
            _both_refuse(env, config)
            return
        env.ours.add_adapter("mtl_probe", config=config)     # accepted where adapters accepts it
        env.ours.delete_adapter("mtl_probe")
        env.torch_model.add_adapter("mtl_probe", config=config)
        env.torch_model.delete_adapter("mtl_probe")
        return
    _compare_or_both_fail(env, config)


def _both_refuse(env, config):
    """adapters 1.3.0 refuses the method on this family (plugin interface without it); so do we, by name."""
    with pytest.raises(ValueError):
        env.torch_model.add_adapter("refused", config=config)
    if "refused" in env.torch_model.adapters_config.adapters:
        env.torch_model.delete_adapter("refused")
    with pytest.raises(ValueError, match=env.model_type):
        env.ours.add_adapter("refused", config=config)
    assert "refused" not in env.ours.adapters_config.adapters


@pytest.mark.spec("FAM-LL-3")
def test_stack_parallel_batchsplit(env):
    a = env.add("double_seq_bn[reduction_factor=4]")
    b = env.add("double_seq_bn[reduction_factor=6, non_linearity='relu', use_gating=True]")
    env.compare(ac.Stack(b, a), ma.Stack(b, a), what="Stack")
    env.compare(ac.BatchSplit(b, a, batch_sizes=[1, 2]), ma.BatchSplit(b, a, batch_sizes=[1, 2]), what="BatchSplit")
    if "Parallel" in env.ours.arch.blocks:
        env.compare(ac.Parallel(b, a), ma.Parallel(b, a), what="Parallel", sides=("none", "left", "right"))
        return
    with pytest.raises(ValueError, match="Parallel"):
        env.torch_model.set_active_adapters(ac.Parallel(b, a))
    with pytest.raises(ValueError, match="Parallel"):
        env.ours.active_adapters = ma.Parallel(b, a)


def test_union_lora_bottleneck_prefix(env):
    from adapters import ConfigUnion, LoRAConfig, PrefixTuningConfig, SeqBnConfig
    members = [LoRAConfig(r=4, alpha=4), SeqBnConfig(reduction_factor=5)]
    if "prefix_tuning" in env.ours.arch.methods:
        members.insert(1, PrefixTuningConfig(prefix_length=4, bottleneck_size=6))
    name = env.add(ConfigUnion(*members))
    env.compare(name, name, what=f"union of {len(members)}")


def test_fuse(env):
    a, b = env.add("seq_bn[reduction_factor=4]"), env.add("seq_bn[reduction_factor=6]")
    env.torch_model.add_adapter_fusion([a, b], config="dynamic")
    perturb_adapter(env.torch_model, f"{a},{b}", seed=7)
    env.torch_model.eval()
    d = os.path.join(env.tmp, "fusion")
    env.torch_model.save_adapter_fusion(d, [a, b])
    env.ours.load_adapter_fusion(d)
    env.compare(ac.Fuse(a, b), ma.Fuse(a, b), what="Fuse")


def test_merged_lora_equals_unmerged(env):
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
    assert_close(env.ours(ids, attention_mask=mask).last_hidden_state, exp, what="after reset")


def test_ours_to_adapters(env, tmp_path):
    """An adapter we save loads in adapters 1.3.0 and gives the same output there (files both ways)."""
    name = env.add("lora[r=2, intermediate_lora=True]")
    d = str(tmp_path / "ours")
    env.ours.save_adapter(d, name)
    loaded = env.torch_model.load_adapter(d, load_as=name + "_back")
    env.compare(loaded, name, what="ours->adapters")


def test_prompt_tuning(env):
    """Mistral and the plugin-interface families refuse prompt tuning when it is added; DistilBERT's block prefixes
    a 2-D mask along dims 2 and 3 and fails in the forward: minadapters refuses it when it is added, naming method
    and family. Where adapters runs it (ELECTRA), the outputs match."""
    if "prompt_tuning" in env.ours.arch.methods:
        _compare_or_both_fail(env, "prompt_tuning[prompt_length=3]", sides=("right",))
        return
    with pytest.raises(Exception):
        env.torch_model.add_adapter("pt_up", config="prompt_tuning")
        env.torch_model.set_active_adapters("pt_up")
        ids, mask = batch(pad_side="right")
        _torch_hidden(env.torch_model, ids, mask)
    if "pt_up" in env.torch_model.adapters_config.adapters:
        env.torch_model.delete_adapter("pt_up")
    with pytest.raises(ValueError, match=f"prompt_tuning.*{env.model_type}"):
        env.ours.add_adapter("pt", config="prompt_tuning")


def _compare_or_both_fail(env, config, sides=("left", "right")):
    """Equal outputs, or (ELECTRA with embedding_size != hidden_size: embedding-level methods are sized by
    hidden_size but run before embeddings_project) an error on both sides."""
    name = env.add(config)
    env.torch_model.set_active_adapters(name)
    ids, mask = batch(pad_side=sides[0])
    try:
        _torch_hidden(env.torch_model, ids, mask)
    except RuntimeError:
        env.ours.active_adapters = name
        with pytest.raises(ValueError):
            env.ours(ids, attention_mask=mask)
        return
    env.compare(name, name, what=config, sides=sides)


PRESETS = ["albert-base-v2", "distilbert-base-uncased", "distilbert-base-multilingual-cased", "google/electra-base-discriminator",
           "google/electra-small-discriminator", "google/bert_for_seq_generation_L-24_bbc_encoder",
           "mistral-7b-v0.1", "mistralai/Mistral-7B-v0.1", "Qwen/Qwen2.5-0.5B", "Qwen/Qwen3-0.6B", "google/gemma-2b",
           "EleutherAI/gpt-j-6b", "facebook/xmod-base", "llama-2-7b", "gpt2", "bert-base-uncased", "roberta-base"]


@pytest.mark.spec("API-3")
@pytest.mark.parametrize("preset", PRESETS)
def test_summary_preset_counts_equal_adapters(preset):
    """`summary --arch` presets (configs alone, no weights) count what adapters 1.3.0 counts on the real shapes."""
    from family_oracle_utils import preset_counts
    got, want = preset_counts(preset)
    assert got == want, f"{preset}: counts {got}, but should be {want}"


N_NEW = 16
GEN_CASES = [("mistral", dict(sliding_window=4)), ("qwen2", dict(use_sliding_window=True, sliding_window=5,
                                                                   max_window_layers=1)),
             ("qwen3", {}), ("gemma", dict(head_dim=12)), ("gptj", {})]


@pytest.mark.spec("FAM-LL-2")
@pytest.mark.parametrize("config", ["lora[r=4, alpha=8, intermediate_lora=True, output_lora=True]", "seq_bn"])
@pytest.mark.parametrize("model_type,overrides", GEN_CASES, ids=lambda c: str(c))
def test_greedy_tokens_equal_transformers(model_type, overrides, config, tmp_path):
    """Greedy generate (left-padded batch) with an adapter: our tokens, with and without our KV cache, equal
    transformers' generate(do_sample=False, use_cache=False) under adapters 1.3.0."""
    m = hf_family_model(model_type, lm=True, scale=0.5, **overrides)
    save_model(m, str(tmp_path / "model"))
    ours = ma.AutoModel.from_pretrained(str(tmp_path / "model"))
    m.add_adapter("a", config=config)
    perturb_adapter(m, "a", scale=0.3)
    m.set_active_adapters("a")
    m.eval()
    m.save_adapter(str(tmp_path / "a"), "a")
    ours.load_adapter(str(tmp_path / "a"), set_active=True)
    ids, mask = batch(B=3, T=6, pad_side="left", seed=4)
    with torch.no_grad():
        exp = m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=N_NEW,
                         do_sample=False, use_cache=False, pad_token_id=0, eos_token_id=None).numpy()
    for use_cache in (True, False):
        got = ours.generate(ids, N_NEW, attention_mask=mask, use_cache=use_cache, eos_token_id=None)
        np.testing.assert_array_equal(got, exp, err_msg=f"{model_type} {config} use_cache={use_cache}")


HEAD_CASES = [("xmod", "add_classification_head", dict(num_labels=3)), ("xmod", "add_tagging_head", dict(num_labels=5)),
              ("xmod", "add_masked_lm_head", dict()), ("gptj", "add_classification_head", dict(num_labels=3)),
              ("gptj", "add_causal_lm_head", dict())]


@pytest.mark.spec("FAM-XM-1")
@pytest.mark.parametrize("model_type,method,kw", HEAD_CASES, ids=lambda c: str(c))
def test_adapter_model_heads(model_type, method, kw, tmp_path):
    """AutoAdapterModel gives adapters' class (XmodAdapterModel, GPTJAdapterModel); an adapter + head saved by
    adapters 1.3.0 gives the same logits here (padded batch)."""
    import adapters
    from oracle_utils import perturb_adapter
    mdir = save_model(hf_family_model(model_type), str(tmp_path / "model"))
    up = adapters.AutoAdapterModel.from_pretrained(mdir, attn_implementation="eager")
    up.add_adapter("t", config="seq_bn")
    getattr(up, method)("t", **kw)
    perturb_adapter(up, "t")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, p in up.heads["t"].named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    up.eval()
    up.set_active_adapters("t")
    up.save_adapter(str(tmp_path / "t"), "t")
    ours = ma.AutoAdapterModel.from_pretrained(mdir)
    assert type(ours).__name__ == type(up).__name__
    ours.load_adapter(str(tmp_path / "t"), set_active=True)
    ids, mask = batch(pad_side="right")
    with torch.no_grad():
        exp = up(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    assert_close(ours(ids, attention_mask=mask).logits, exp, what=f"{model_type} {method}")


@pytest.mark.spec("FAM-XM-1")
def test_xmod_checkpoint_with_language_adapters(tmp_path):
    """A transformers X-MOD checkpoint carries its language adapters; adapters 1.3.0 deletes them when it wraps the
    model, so do we: the output equals the wrapped model's, and lang_ids is refused on both sides."""
    from family_oracle_utils import _config
    torch.manual_seed(0)
    cfg, cls = _config("xmod", dict(pre_norm=True, adapter_layer_norm=True))
    m = cls(cfg)
    with torch.no_grad():
        for _, p in m.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    m.eval()
    m.save_pretrained(str(tmp_path), safe_serialization=True)       # before adapters.init: adapter_modules saved
    import adapters
    from safetensors.numpy import load_file
    assert any(".output.adapter_modules.de_DE." in k for k in load_file(str(tmp_path / "model.safetensors")))
    adapters.init(m)
    ours = ma.AutoModel.from_pretrained(str(tmp_path))
    ids, mask = batch(pad_side="left")
    assert_close(ours(ids, attention_mask=mask).last_hidden_state, _torch_hidden(m, ids, mask), rtol=1e-5,
                 what="xmod without language adapters")
    for config in ("seq_bn", "lora[intermediate_lora=True]", "prefix_tuning[prefix_length=4]"):
        name = config.split("[")[0]
        m.add_adapter(name, config=config)
        perturb_adapter(m, name)
        m.eval()
        m.save_adapter(str(tmp_path / name), name)
        ours.load_adapter(str(tmp_path / name))
        m.set_active_adapters(name)
        ours.active_adapters = name
        _relink_pool(m)
        assert_close(ours(ids, attention_mask=mask).last_hidden_state, _torch_hidden(m, ids, mask),
                     what=f"xmod pre_norm, adapter_layer_norm, {config}")
    with pytest.raises(ValueError, match="lang_ids"):
        m(input_ids=torch.tensor(ids), lang_ids=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="lang_ids"):
        ours(ids, lang_ids=np.zeros(3, np.int64))
