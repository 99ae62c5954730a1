"""Oracle: transformers' EncoderDecoderModel with a BERT encoder and a BERT decoder (BERT2BERT) matches transformers
4.57.6 (base model, 1e-5) and adapters 1.3.0 (EncoderDecoderModelWithAdapters: every method at its locations in both
submodels, blocks, files both ways, merge / reset, greedy generation). Spec: B2B-1 .. B2B-4.

Awkward sizes (hidden 36, 4 heads, encoder 2 layers with FFN 37 and gelu, decoder 3 layers with FFN 41, relu and
LayerNorm eps 1e-6), every base weight perturbed, padded encoder (left and right) and decoder batches.
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import torch  # noqa: E402
import adapters.composition as ac  # noqa: E402
from encdec_oracle_utils import (EncDecEnv, compare_encdec, encdec_batch, hf_encdec, relink_pool,  # noqa: E402
                                 torch_encdec)
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

MT = "encoder-decoder"


def _both(env, b, **kw):
    return env.ours(*b, **kw), torch_encdec(env.torch_model, *b, output_hidden_states=True, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return EncDecEnv(MT, str(tmp_path_factory.mktemp("b2b")))


@pytest.mark.spec("B2B-1")
@pytest.mark.spec("B2B-2")
@pytest.mark.spec("B2B-3")
def test_base_model_matches_transformers(tmp_path):
    """No adapter: logits, decoder and encoder states, every hidden state and attention equal EncoderDecoderModel's
    to 1e-5 (left and right encoder padding, decoder padding); encoder_outputs reuse; inputs_embeds for the encoder;
    native backend to 1e-4."""
    m = hf_encdec(MT)
    save_model(m, str(tmp_path))
    ours = ma.AutoModel.from_pretrained(str(tmp_path))
    for seed, side in ((0, "right"), (1, "left")):
        b = encdec_batch(seed=seed, pad_side=side)
        exp = torch_encdec(m, *b, output_hidden_states=True, output_attentions=True)
        got = ours(*b, output_hidden_states=True, output_attentions=True)
        compare_encdec(got, exp, f"base {side}", rtol=1e-5)
        for field in ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_hidden_states",
                      "encoder_attentions"):
            e, g = getattr(exp, field), getattr(got, field)
            assert len(g) == len(e), f"{field}: {len(g)} entries, but should be {len(e)}"
            for i, (x, y) in enumerate(zip(g, e)):
                assert_close(x, y.numpy(), rtol=1e-5, what=f"{field}[{i}]")
    again = ours(encoder_outputs=got, attention_mask=b[1], decoder_input_ids=b[2][:, :3],
                 decoder_attention_mask=b[3][:, :3])
    assert_close(again.logits, got.logits[:, :3], rtol=1e-5, what="encoder_outputs reuse")
    with pytest.raises(ValueError, match="decoder_input_ids"):
        ours(b[0], b[1])
    emb = ours.params["encoder.embeddings.word_embeddings.weight"][b[0]] * 1.5      # inputs_embeds: any vectors
    with torch.no_grad():
        exp = m(inputs_embeds=torch.tensor(emb), attention_mask=torch.tensor(b[1]), decoder_input_ids=torch.tensor(b[2]))
    got = ours(inputs_embeds=emb, attention_mask=b[1], decoder_input_ids=b[2])
    assert_close(got.logits, exp.logits.numpy(), rtol=1e-5, what="inputs_embeds")
    ours.set_backend("native")
    b = encdec_batch(seed=3)
    assert_close(ours(*b).logits, torch_encdec(m, *b).logits.numpy(), rtol=1e-4, what="native backend")


@pytest.mark.spec("B2B-1")
def test_config_errors(tmp_path):
    """Unsupported composite configs are refused by name: a non-BERT submodel, different encoder/decoder widths."""
    import json
    m = hf_encdec(MT)
    save_model(m, str(tmp_path))
    raw = json.load(open(tmp_path / "config.json"))
    for edit, match in ((lambda d: d["decoder"].update(model_type="gpt2"), "decoder.model_type"),
                        (lambda d: d["decoder"].update(hidden_size=40, num_attention_heads=4), "hidden_size"),
                        (lambda d: d["decoder"].update(add_cross_attention=False), "add_cross_attention")):
        d = json.loads(json.dumps(raw))
        edit(d)
        json.dump(d, open(tmp_path / "config.json", "w"))
        with pytest.raises(ValueError, match=match):
            ma.AutoModel.from_pretrained(str(tmp_path))


SINGLE = [
    "seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn", "seq_bn_inv",
    "compacter[reduction_factor=9]", "compacter++[reduction_factor=9, shared_phm_rule=False]",
    # cross_adapter is never read: the decoder's crossattention.output is a BertSelfOutput (location mh_adapter)
    "seq_bn[cross_adapter=True]", "double_seq_bn[cross_adapter=True, reduction_factor=4]",
    "lora", "lora[r=4, alpha=16, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]",
    "lora[r=3, selfattn_lora=False, intermediate_lora=True]", "dora[r=3, intermediate_lora=True]",
    "ia3", "ia3[attn_matrices=['q','v'], intermediate_lora=True, output_lora=True]",
    "prefix_tuning", "prefix_tuning[cross_prefix=False]",
    # encoder_prefix is never read: the encoder's self-attention location is self_prefix
    "prefix_tuning[encoder_prefix=False]",
    "prefix_tuning[prefix_length=5, use_gating=True, shared_gating=False]", "prefix_tuning[flat=True]",
    "mam", "unipelt",
    # adapters numbers each submodel's layers from 0: leave_out=[0] leaves out encoder AND decoder layer 0
    "double_seq_bn[leave_out=[0], reduction_factor={'1': 3, 'default': 8}]", "lora[r=3, leave_out=[2]]",
    "prefix_tuning[leave_out=[1]]",
]


@pytest.mark.spec("B2B-4")
@pytest.mark.parametrize("config", SINGLE)
def test_single_adapter(env, config):
    """Each method at adapters' locations in both submodels (cross-attention LoRA / prefix, the decoder's
    crossattention.output bottleneck): logits, decoder and encoder states equal adapters 1.3.0's."""
    name = env.add(config)
    env.compare(name, name, what=config)


@pytest.mark.spec("B2B-4")
def test_locations(env):
    """The state-dict paths: a mh_adapter bottleneck sits after both decoder attentions (cross_adapter adds nothing),
    prefixes live in two pools (encoder: self_prefix; decoder: self_prefix and cross_prefix)."""
    a = env.add("double_seq_bn[cross_adapter=True]")
    p = env.add("prefix_tuning")
    want = {k for k in env.torch_model.state_dict() if f".{a}." in k or f".{p}." in k}
    want = {k for k in want if ".prefix_tuning.pool." not in k}
    got = set(env.ours.adapter_state_dict(a)) | set(env.ours.adapter_state_dict(p))
    assert got == want, (sorted(got - want)[:4], sorted(want - got)[:4])
    assert any(".crossattention.output.adapters." in k for k in got)
    assert {k.split(f".{p}.")[0] for k in got if ".prefix_tunings." in k} == {
        "encoder.prefix_tuning.prefix_tunings", "decoder.bert.prefix_tuning.prefix_tunings"}


@pytest.mark.parametrize("config", ["loreft", "noreft[r=3, prefix_positions=2, suffix_positions=1]"])
def test_reft(env, config):
    """ReFT in the decoder counts its positions from the decoder's attention mask (the decoder BertModel opens its
    own ForwardContext), in the encoder from the encoder's: equal for decoders shorter and longer than the encoder."""
    name = env.add(config)
    env.torch_model.set_active_adapters(name)
    env.ours.active_adapters = name
    for side, S, T in (("right", 9, 12), ("left", 9, 6), ("left", 12, 7)):
        b = encdec_batch(seed=env.n, pad_side=side, S=S, T=T)
        got, exp = _both(env, b)
        compare_encdec(got, exp, f"{config} {side} {S}/{T}")


def test_prompt_tuning_is_refused(env):
    """adapters 1.3.0's EncoderDecoderModel does not support prompt tuning; we refuse it by name."""
    with pytest.raises(ValueError, match="prompt_tuning"):
        env.ours.add_adapter("pt", config="prompt_tuning")


def test_union(env):
    from adapters import ConfigUnion, LoRAConfig, PrefixTuningConfig, SeqBnConfig
    name = env.add(ConfigUnion(LoRAConfig(r=4, alpha=4, intermediate_lora=True),
                               PrefixTuningConfig(prefix_length=4, bottleneck_size=6),
                               SeqBnConfig(reduction_factor=5, mh_adapter=True)))
    env.compare(name, name, what="union lora + prefix + seq_bn")


def test_blocks(env):
    a = env.add("double_seq_bn[reduction_factor=4]")
    b = env.add("double_seq_bn[reduction_factor=6, non_linearity='relu', use_gating=True]")
    env.compare(ac.Stack(b, a), ma.Stack(b, a), what="Stack")
    env.compare(ac.BatchSplit(b, a, batch_sizes=[1, 2]), ma.BatchSplit(b, a, batch_sizes=[1, 2]), what="BatchSplit")
    env.compare(ac.Average(b, a, weights=[0.3, 0.7]), ma.Average(b, a, weights=[0.3, 0.7]), what="Average")
    # adapters 1.3.0 refuses Parallel for model type encoder-decoder (SUPPORTED_MODELS); so do we
    with pytest.raises(ValueError, match="Parallel"):
        env.torch_model.set_active_adapters(ac.Parallel(b, a))
    with pytest.raises(ValueError, match="Parallel"):
        env.ours.active_adapters = ma.Parallel(b, a)
    l1 = env.add("lora[r=3, attn_matrices=['q','k','v']]")
    l2 = env.add("lora[r=2, alpha=5, attn_matrices=['q','k','v']]")
    env.compare(ac.Stack(l1, l2), ma.Stack(l1, l2), what="Stack lora")
    p, q = env.add("prefix_tuning[prefix_length=4]"), env.add("prefix_tuning[prefix_length=4, bottleneck_size=7]")
    env.compare(ac.BatchSplit(p, q, batch_sizes=[2, 1]), ma.BatchSplit(p, q, batch_sizes=[2, 1]),
                what="BatchSplit prefix")


def test_fuse(env):
    a, b = env.add("double_seq_bn[reduction_factor=4]"), env.add("double_seq_bn[reduction_factor=6]")
    env.torch_model.add_adapter_fusion([a, b], config="dynamic")
    perturb_adapter(env.torch_model, f"{a},{b}", seed=7)
    env.torch_model.eval()
    d = os.path.join(env.tmp, "fusion")
    env.torch_model.save_adapter_fusion(d, [a, b])
    env.ours.load_adapter_fusion(d)
    env.compare(ac.Fuse(a, b), ma.Fuse(a, b), what="Fuse")


def test_merged_lora_equals_unmerged(env):
    """merge_adapter writes LoRA into both attentions' and the FFN's weights of both submodels; reset restores every
    base array bit-identically."""
    name = env.add("lora[r=3, alpha=6, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]")
    env.torch_model.set_active_adapters(name)
    b = encdec_batch(seed=5)
    exp = torch_encdec(env.torch_model, *b).logits.numpy()
    env.ours.active_adapters = name
    base = {k: v.copy() for k, v in env.ours.params.items()}
    env.ours.merge_adapter(name)
    try:
        changed = [k for k in base if not np.array_equal(env.ours.params[k], base[k])]
        assert any(".crossattention.self.key." in k for k in changed), changed
        assert any(k.startswith("encoder.encoder.") for k in changed), changed
        assert_close(env.ours(*b).logits, exp, what="merged")
    finally:
        env.ours.reset_adapter()
    for k, v in base.items():
        np.testing.assert_array_equal(env.ours.params[k], v, err_msg=f"{k} after reset")
    assert_close(env.ours(*b).logits, exp, what="after reset")


@pytest.mark.parametrize("config", ["lora[r=2, intermediate_lora=True, output_lora=True]", "double_seq_bn",
                                    "prefix_tuning[prefix_length=4]", "seq_bn_inv", "ia3[intermediate_lora=True]",
                                    "loreft[prefix_positions=1]"])
def test_ours_to_adapters(env, config, tmp_path):
    """An adapter we save loads in adapters 1.3.0 and gives the same outputs there (files both ways)."""
    name = env.add(config)
    d = str(tmp_path / "ours")
    env.ours.save_adapter(d, name)
    loaded = env.torch_model.load_adapter(d, load_as=name + "_back")
    env.compare(loaded, name, what=f"ours->adapters {config}")


N_NEW = 8
GEN_CONFIGS = [None, "double_seq_bn[reduction_factor=4]",
               "lora[r=4, alpha=8, attn_matrices=['q','k','v'], intermediate_lora=True]",
               "prefix_tuning[prefix_length=4, bottleneck_size=8]"]


@pytest.mark.spec("B2B-3")
@pytest.mark.spec("ENCDEC-5")
@pytest.mark.parametrize("config", GEN_CONFIGS)
def test_greedy_generation_equals_transformers(config, tmp_path):
    """EncoderDecoderModel.generate (greedy, with and without transformers' cache) under adapters 1.3.0 with the
    adapter active: our tokens (BertLMHeadModel's head: transform, LayerNorm, tied decoder embeddings, bias) are
    equal, with and without our cache."""
    m = hf_encdec(MT, scale=0.2)
    save_model(m, str(tmp_path / "model"))
    relink_pool(m)
    ours = ma.AutoModel.from_pretrained(str(tmp_path / "model"))
    if config is not None:
        m.add_adapter("a", config=config)
        perturb_adapter(m, "a", scale=0.3)
        m.set_active_adapters("a")
        m.eval()
        m.save_adapter(str(tmp_path / "a"), "a")
        ours.load_adapter(str(tmp_path / "a"), set_active=True)
    ids, mask, _, _ = encdec_batch(pad_side="left", seed=5)
    for up_cache in (True, False):
        if config is not None and config.startswith("prefix"):
            # adapters 1.3.0's EncoderDecoderModel.generate fails with prefix tuning (its generation ForwardContext
            # has no prefix_states: AttributeError); the reference is then a greedy loop over its full forward
            with pytest.raises(AttributeError, match="prefix_states"):
                with torch.no_grad():
                    m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=2,
                               do_sample=False, num_beams=1, eos_token_id=None, use_cache=up_cache)
            exp = np.full((ids.shape[0], 1), 2, np.int64)
            for _ in range(N_NEW):
                logits = torch_encdec(m, ids, mask, exp).logits.numpy()
                exp = np.concatenate([exp, logits[:, -1].argmax(-1)[:, None]], axis=1)
        else:
            with torch.no_grad():
                exp = m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                 max_new_tokens=N_NEW, do_sample=False, num_beams=1, eos_token_id=None,
                                 use_cache=up_cache).numpy()
        assert exp.shape == (3, N_NEW + 1)
        for cache in (True, False):
            got = ours.generate(ids, max_new_tokens=N_NEW, attention_mask=mask, use_cache=cache, eos_token_id=None)
            np.testing.assert_array_equal(got, exp, err_msg=f"use_cache={cache}, upstream cache {up_cache}")


def test_no_adapter_model_class(tmp_path):
    """adapters 1.3.0 has no AdapterModel class for EncoderDecoderModel (AutoAdapterModel: ValueError); ours refuses
    it too, naming the model type."""
    import adapters
    m = hf_encdec(MT, init=False)
    save_model(m, str(tmp_path))
    with pytest.raises(ValueError):
        adapters.AutoAdapterModel.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="encoder-decoder"):
        ma.AutoAdapterModel.from_pretrained(str(tmp_path))
