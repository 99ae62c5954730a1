"""Oracle: BART, mBART and PLBart (encoder-decoders) match transformers 4.57.6 (base model, 1e-5) and adapters 1.3.0
(every method at its locations in both stacks, composition blocks, files both ways, merge/reset).
Spec: BART-1 .. BART-3, ENCDEC-1 .. ENCDEC-4, plus the method IDs exercised at the encoder-decoder locations.

Tiny models (hidden 36, 2 encoder / 3 decoder layers, FFN 37 / 41, vocab 101), eager attention, every base weight
perturbed, encoder batches padded left and right, decoder batches right-padded; adapter weights perturbed.
"""
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.models.encdec_common import EncDecCache

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import torch  # noqa: E402
import adapters  # noqa: E402
import transformers  # noqa: E402
import adapters.composition as ac  # noqa: E402
from encdec_oracle_utils import (EncDecEnv, compare_encdec, encdec_batch, hf_encdec, ours_block,  # noqa: E402
                                 relink_pool, torch_encdec)
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

FAMILIES = ["bart", "mbart", "plbart"]
BASE_CASES = [
    ("bart", {}),
    ("bart", dict(scale_embedding=True, activation_function="relu")),
    ("bart", dict(encoder_attention_heads=6, decoder_attention_heads=3)),      # heads differ per stack
    ("mbart", {}),                                                              # pre-LN + final layer norms
    ("mbart", dict(scale_embedding=True, activation_function="gelu_new")),
    ("plbart", {}),                                                             # PLBart: scale_embedding=True
]


@pytest.mark.spec("BART-1")
@pytest.mark.spec("BART-2")
@pytest.mark.spec("BART-3")
@pytest.mark.spec("ENCDEC-1")
@pytest.mark.parametrize("model_type,overrides", BASE_CASES, ids=lambda c: str(c))
def test_base_model_matches_transformers(model_type, overrides, tmp_path):
    """No adapter: decoder and encoder states (padding included), hidden states and attentions of both stacks equal
    transformers' eager forward to 1e-5, on numpy and (1e-4) native."""
    m = hf_encdec(model_type, **overrides)
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    for side in ("right", "left", "none"):
        ids, mask, dec, dmask = encdec_batch(pad_side=side, seed=len(side))
        compare_encdec(ours(ids, mask, dec, dmask), torch_encdec(m, ids, mask, dec, dmask), f"{model_type} {side}",
                       rtol=1e-5)
    ids, mask, dec, dmask = encdec_batch()
    exp = torch_encdec(m, ids, mask, dec, dmask, output_hidden_states=True, output_attentions=True)
    got = ours(ids, mask, dec, dmask, output_hidden_states=True, output_attentions=True)
    for field in ("decoder_hidden_states", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                  "encoder_attentions"):
        g, e = getattr(got, field), getattr(exp, field)
        assert len(g) == len(e), f"{field}: {len(g)} entries, but should be {len(e)}"
        for i, (a, b) in enumerate(zip(g, e)):
            assert_close(a, b.numpy(), rtol=1e-5, what=f"{model_type} {field}[{i}]")
    ours.set_backend("native")
    compare_encdec(ours(ids, mask, dec, dmask), torch_encdec(m, ids, mask, dec, dmask), f"{model_type} native")


@pytest.mark.spec("ENCDEC-1")
@pytest.mark.spec("ENCDEC-2")
@pytest.mark.parametrize("model_type", FAMILIES)
def test_default_decoder_inputs_and_encoder_outputs_reuse(model_type, tmp_path):
    """Without decoder_input_ids both shift input_ids right (BART: decoder_start_token_id first; mBART/PLBart: the
    last non-pad token first); given encoder_outputs (ours or a tuple), the encoder is skipped and the result is the
    same."""
    m = hf_encdec(model_type)
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    ids, mask, dec, dmask = encdec_batch(pad_side="right")
    compare_encdec(ours(ids, mask), torch_encdec(m, ids, mask), f"{model_type} shifted decoder inputs", rtol=1e-5)
    full = ours(ids, mask, dec, dmask)
    for enc in (full, (full.encoder_last_hidden_state,), full.encoder_last_hidden_state):
        again = ours(attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask, encoder_outputs=enc)
        np.testing.assert_array_equal(again.last_hidden_state, full.last_hidden_state)
    with torch.no_grad():
        t_enc = m.get_encoder()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    exp = torch_encdec(m, None, mask, dec, dmask, encoder_outputs=t_enc)
    assert_close(ours(attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask,
                      encoder_outputs=t_enc.last_hidden_state.numpy()).last_hidden_state,
                 exp.last_hidden_state.numpy(), rtol=1e-5, what="encoder_outputs from transformers")
    emb = np.random.default_rng(1).normal(0, 1, ids.shape + (m.config.d_model,)).astype(np.float32)
    with torch.no_grad():
        exp = m(inputs_embeds=torch.tensor(emb), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(dec))
    compare_encdec(ours(inputs_embeds=emb, attention_mask=mask, decoder_input_ids=dec), exp, "inputs_embeds (unscaled)",
                   rtol=1e-5)


METHOD_CONFIGS = [
    ("seq_bn", "seq_bn"),
    ("bn_all_locations", adapters.SeqBnConfig(mh_adapter=True, output_adapter=True, cross_adapter=True,
                                              reduction_factor=4)),
    ("double_seq_bn_cross", adapters.DoubleSeqBnConfig(cross_adapter=True)),
    ("par_bn", "par_bn"),
    ("seq_bn_gated_leave_out", adapters.SeqBnConfig(cross_adapter=True, use_gating=True, leave_out=[0, 3])),
    ("seq_bn_inv", "seq_bn_inv"),
    ("lora_qv", "lora"),
    ("lora_all", adapters.LoRAConfig(r=4, alpha=8, attn_matrices=["q", "k", "v"], intermediate_lora=True,
                               output_lora=True)),
    ("ia3", "ia3"),
    ("prefix", "prefix_tuning"),
    ("prefix_no_encoder", adapters.PrefixTuningConfig(prefix_length=5, encoder_prefix=False)),
    ("prefix_no_cross", adapters.PrefixTuningConfig(prefix_length=5, cross_prefix=False)),
    ("prefix_flat_gated", adapters.PrefixTuningConfig(prefix_length=4, flat=True, use_gating=True, leave_out=[1, 2])),
    ("mam", "mam"),
    ("unipelt", "unipelt"),
    ("loreft", adapters.LoReftConfig(r=3, prefix_positions=2, suffix_positions=0)),
]


BART_ONLY = ("double_seq_bn_cross", "par_bn", "ia3", "unipelt", "prefix_flat_gated")   # mbart/plbart: the rest
METHOD_CASES = [pytest.param(mt, label, cfg, id=f"{mt}-{label}") for mt in FAMILIES for label, cfg in METHOD_CONFIGS
                if mt == "bart" or label not in BART_ONLY]


@pytest.mark.spec("ENCDEC-3")
@pytest.mark.parametrize("model_type,label,config", METHOD_CASES)
def test_method_at_encdec_locations(model_type, label, config, tmp_path):
    """Each method (perturbed, loaded from upstream's file) gives upstream's decoder and encoder states; the
    adapter's state-dict keys are upstream's."""
    env = EncDecEnv(model_type, str(tmp_path))
    name = env.add(config)
    theirs = {k for k in env.torch_model.state_dict() if f".{name}." in k and ".pool." not in k}
    assert set(env.ours.adapter_state_dict(name)) == theirs
    env.compare(name, what=label)


@pytest.mark.spec("ENCDEC-3")
def test_prompt_tuning_is_refused_like_upstream(tmp_path):
    """adapters 1.3.0's BART mixins set support_prompt_tuning = False: adding a prompt is refused in both."""
    env = EncDecEnv("bart", str(tmp_path))
    with pytest.raises(ValueError):
        env.torch_model.add_adapter("p", config="prompt_tuning")
    with pytest.raises(ma.ConfigError, match="prompt_tuning"):
        env.ours.add_adapter("p", config="prompt_tuning")


BLOCK_CASES = ["stack", "fuse", "parallel", "batchsplit", "average", "parallel_prefix", "batchsplit_lora"]


@pytest.mark.spec("COMP-PARALLEL")
@pytest.mark.spec("COMP-BATCHSPLIT")
@pytest.mark.parametrize("case", BLOCK_CASES)
def test_composition_blocks_through_both_stacks(case, tmp_path):
    """Blocks over bottlenecks with cross adapters (and prefixes / LoRA) equal upstream's, output rows included."""
    env = EncDecEnv("bart", str(tmp_path))
    bn = adapters.SeqBnConfig(mh_adapter=True, cross_adapter=True, reduction_factor=4)
    if case == "parallel_prefix":
        # equal lengths: adapters pads shorter prefixes with attended keys (spec PREFIX-4, upstream deviation)
        a = env.add(adapters.PrefixTuningConfig(prefix_length=4))
        b = env.add(adapters.PrefixTuningConfig(prefix_length=4))
        env.compare(ac.Parallel(a, b), what=case, decoder_mask=False)
        _parallel_with_decoder_mask_equals_channels(env, a, b)
        return
    if case == "batchsplit_lora":
        a, b = env.add("lora"), env.add(adapters.LoRAConfig(r=2, alpha=4))
        env.compare(ac.BatchSplit(a, b, batch_sizes=[1, 2]), what=case)
        return
    a, b = env.add(bn), env.add(bn)
    if case == "fuse":
        env.torch_model.add_adapter_fusion([a, b])
        env.ours.add_adapter_fusion([a, b])
        for k, v in env.torch_model.state_dict().items():
            if "adapter_fusion_layer" in k:
                d, leaf = env.ours.fusion_param_refs(f"{a},{b}")[k]
                d[leaf] = (v.numpy() + np.random.default_rng(len(k)).normal(0, 0.1, v.shape)).astype(np.float32)
                with torch.no_grad():
                    v.copy_(torch.tensor(d[leaf]))
        setup = ac.Fuse(a, b)
    else:
        setup = {"stack": ac.Stack(a, b), "parallel": ac.Parallel(a, b),
                 "batchsplit": ac.BatchSplit(a, b, batch_sizes=[2, 1]),
                 "average": ac.Average(a, b, weights=[0.3, 0.7])}[case]
    env.compare(setup, what=case, decoder_mask=case != "parallel")
    if case == "parallel":
        _parallel_with_decoder_mask_equals_channels(env, a, b)


def _parallel_with_decoder_mask_equals_channels(env, a, b):
    """adapters 1.3.0's Parallel fails with a decoder_attention_mask (it replicates decoder_input_ids, not their
    mask: RuntimeError in _update_causal_mask); ours replicates every batch input at the edge, and channel i equals
    adapter i run alone upstream (spec/deviations.md)."""
    ids, mask, dec, dmask = encdec_batch(seed=11)
    env.torch_model.set_active_adapters(ac.Parallel(a, b))
    with pytest.raises(RuntimeError):                     # the reproduction: upstream cannot run this
        torch_encdec(env.torch_model, ids, mask, dec, dmask)
    env.ours.active_adapters = ma.Parallel(a, b)
    got = env.ours(ids, mask, dec, dmask)
    for i, n in enumerate((a, b)):
        env.torch_model.set_active_adapters(n)
        exp = torch_encdec(env.torch_model, ids, mask, dec, dmask)
        assert_close(got.last_hidden_state[3 * i:3 * i + 3], exp.last_hidden_state.numpy(), what=f"channel {i}")


@pytest.mark.spec("ENCDEC-3")
@pytest.mark.parametrize("config", ["seq_bn", "prefix_tuning", "lora"])
def test_files_both_ways(config, tmp_path):
    """An adapter saved by us loads into upstream (strict: every key used) and gives the same outputs."""
    env = EncDecEnv("bart", str(tmp_path))
    cfg = ma.SeqBnConfig(mh_adapter=True, cross_adapter=True) if config == "seq_bn" else config
    env.ours.add_adapter("mine", cfg)
    rng = np.random.default_rng(3)
    for _, (d, leaf) in env.ours.adapter_param_refs("mine").items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.1, d[leaf].shape)).astype(np.float32)
    env.ours.save_adapter(os.path.join(str(tmp_path), "mine"), "mine")
    env.torch_model.load_adapter(os.path.join(str(tmp_path), "mine"))
    env.compare("mine", what=f"our {config} file in upstream")


@pytest.mark.spec("LORA-MERGE")
def test_merge_and_reset_lora_in_both_stacks(tmp_path):
    """merge_adapter folds LoRA on self-/cross-attention and FFN of both stacks into the weights (same outputs);
    reset_adapter restores the base weights bit for bit."""
    env = EncDecEnv("bart", str(tmp_path))
    name = env.add(adapters.LoRAConfig(r=3, attn_matrices=["q", "k", "v"], intermediate_lora=True, output_lora=True))
    env.compare(name, what="unmerged")
    base = {k: v.copy() for k, v in env.ours.params.items()}
    ids, mask, dec, dmask = encdec_batch()
    before = env.ours(ids, mask, dec, dmask).last_hidden_state
    env.ours.merge_adapter(name)
    assert not np.array_equal(env.ours.params["decoder.layers.2.encoder_attn.k_proj.weight"],
                              base["decoder.layers.2.encoder_attn.k_proj.weight"])
    assert_close(env.ours(ids, mask, dec, dmask).last_hidden_state, before, rtol=1e-5, what="merged")
    env.ours.reset_adapter()
    for k, v in base.items():
        np.testing.assert_array_equal(env.ours.params[k], v, err_msg=k)


N_NEW = 12
GEN_CONFIGS = [None, "seq_bn[reduction_factor=4, mh_adapter=True, cross_adapter=True]",
               "lora[r=4, alpha=8, attn_matrices=['q','k','v'], intermediate_lora=True]",
               "prefix_tuning[prefix_length=4, bottleneck_size=8]"]


def _lm_setup(model_type, config, tmp, **overrides):
    """Upstream ...ForConditionalGeneration with a perturbed adapter active; ours loaded from its files."""
    m = hf_encdec(model_type, lm=True, scale=0.2, **overrides)             # larger weights: decisive logits
    save_model(m, os.path.join(tmp, "model"))
    relink_pool(m)
    ours = ma.AutoModel.from_pretrained(os.path.join(tmp, "model"))
    if config is not None:
        m.add_adapter("a", config=config)
        perturb_adapter(m, "a", scale=0.3)
        m.set_active_adapters("a")
        m.eval()
        m.save_adapter(os.path.join(tmp, "a"), "a")
        ours.load_adapter(os.path.join(tmp, "a"), set_active=True)
    return m, ours


def _upstream_generate(m, ids, mask, use_cache, **kw):
    with torch.no_grad():
        return m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=N_NEW,
                          do_sample=False, num_beams=1, use_cache=use_cache, **kw).numpy()


@pytest.mark.spec("ENCDEC-4")
@pytest.mark.spec("ENCDEC-5")
@pytest.mark.parametrize("model_type,config", [(mt, c) for mt in FAMILIES for c in GEN_CONFIGS
                                               if mt == "bart" or c in (None, GEN_CONFIGS[1])])
def test_greedy_generation_equals_transformers(model_type, config, tmp_path):
    """Greedy tokens (left-padded encoder batch) equal transformers' generate with the adapter active, with and
    without our cache; eos stops rows (finished rows pad) when the config's eos is kept."""
    m, ours = _lm_setup(model_type, config, str(tmp_path))
    ids, mask, _, _ = encdec_batch(pad_side="left", seed=5)
    exp = _upstream_generate(m, ids, mask, use_cache=True, eos_token_id=None)
    assert exp.shape == (3, N_NEW + 1)
    np.testing.assert_array_equal(_upstream_generate(m, ids, mask, use_cache=False, eos_token_id=None), exp)
    for cache in (True, False):
        got = ours.generate(ids, max_new_tokens=N_NEW, attention_mask=mask, use_cache=cache, eos_token_id=None)
        np.testing.assert_array_equal(got, exp, err_msg=f"use_cache={cache}")
    eos = int(exp[0, 4])                      # a token row 0 emits: rows stop there (or run to the end)
    exp = _upstream_generate(m, ids, mask, use_cache=True, eos_token_id=eos)
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=N_NEW, attention_mask=mask, eos_token_id=eos), exp)


@pytest.mark.spec("ENCDEC-5")
def test_forced_bos_and_eos_from_the_config(tmp_path):
    """BART configs carry forced_bos_token_id / forced_eos_token_id; transformers forces them at the first and the
    last new token, and so do we."""
    m, ours = _lm_setup("bart", GEN_CONFIGS[1], str(tmp_path), forced_bos_token_id=0, forced_eos_token_id=2)
    ids, mask, _, _ = encdec_batch(pad_side="right", seed=6)
    exp = _upstream_generate(m, ids, mask, use_cache=True)
    assert (exp[:, 1] == 0).all()
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=N_NEW, attention_mask=mask), exp)


@pytest.mark.spec("ENCDEC-4")
@pytest.mark.parametrize("model_type", ["bart", "mbart"])
def test_cached_decoder_steps_equal_the_full_forward(model_type, tmp_path):
    """Feeding the decoder one token at a time through our cache (encoder outputs reused, cross K/V computed once)
    gives, at every step, upstream's full-sequence decoder state at that position; with prefix tuning (encoder,
    self and cross prefixes), cross adapters and LoRA on the cross-attention active (a Stack of them)."""
    env = EncDecEnv(model_type, str(tmp_path))
    a = env.add(adapters.PrefixTuningConfig(prefix_length=3))
    b = env.add(adapters.SeqBnConfig(mh_adapter=True, cross_adapter=True, reduction_factor=4))
    c = env.add(adapters.LoRAConfig(r=2, attn_matrices=["q", "k", "v"]))
    env.torch_model.set_active_adapters(ac.Stack(a, b, c))
    env.ours.active_adapters = ma.Stack(a, b, c)
    ids, mask, dec, _ = encdec_batch(pad_side="left", seed=9)
    exp = torch_encdec(env.torch_model, ids, mask, dec).last_hidden_state.numpy()
    cache = EncDecCache(env.ours.config.decoder_layers)
    enc = None
    for t in range(dec.shape[1]):
        kw = dict(attention_mask=mask, decoder_input_ids=dec[:, t:t + 1], past_key_values=cache)
        out = env.ours(ids, **kw) if enc is None else env.ours(encoder_outputs=enc, **kw)
        enc = out.encoder_last_hidden_state
        assert_close(out.last_hidden_state[:, 0], exp[:, t], what=f"{model_type} cached step {t}")
    assert cache.length == dec.shape[1] and all(kv is not None for kv in cache.cross)


ADAPTER_MODELS = {"bart": "BartAdapterModel", "mbart": "MBartAdapterModel", "plbart": "PLBartAdapterModel"}


def _flex_pair(model_type, tmp, head_fn, adapter="seq_bn[mh_adapter=True, cross_adapter=True, reduction_factor=4]"):
    """adapters' XAdapterModel with adapter "a" and a head named "a" (added by ``head_fn``), perturbed; ours from
    the saved model and the adapter directory (with its head), via AutoAdapterModel."""
    m = hf_encdec(model_type, scale=0.2, cls=getattr(adapters, ADAPTER_MODELS[model_type]))
    save_model(m, os.path.join(tmp, "model"))
    relink_pool(m)
    m.add_adapter("a", config=adapter)
    head_fn(m)
    perturb_adapter(m, "a", scale=0.3)
    m.set_active_adapters("a")
    m.eval()
    m.save_adapter(os.path.join(tmp, "a"), "a")
    ours = ma.AutoAdapterModel.from_pretrained(os.path.join(tmp, "model"))
    assert type(ours).__name__ == ADAPTER_MODELS[model_type]
    ours.load_adapter(os.path.join(tmp, "a"), set_active=True)
    assert ours.active_head == "a"
    return m, ours


def _eos_batch(seed=7):
    """input_ids with one <eos> (2) per row before right padding (sentence heads read the last <eos>)."""
    ids, mask, _, _ = encdec_batch(pad_side="right", seed=seed)
    for b in range(ids.shape[0]):
        ids[b, mask[b].sum() - 1] = 2
    return ids, mask


@pytest.mark.spec("HEAD-6")
@pytest.mark.spec("ENCDEC-5")
@pytest.mark.parametrize("model_type", FAMILIES)
def test_seq2seq_lm_head_logits_and_generation(model_type, tmp_path):
    """add_seq2seq_lm_head: logits over the decoder states (tied projection, no bias) equal upstream's, the head's
    keys and config are upstream's, and greedy generation with the head equals upstream's generate."""
    m, ours = _flex_pair(model_type, str(tmp_path), lambda m: m.add_seq2seq_lm_head("a"))
    assert ours.heads["a"].config == m.heads["a"].config
    ids, mask, dec, dmask = encdec_batch(pad_side="left", seed=5)
    exp = torch_encdec(m, ids, mask, dec, dmask)
    got = ours(ids, mask, dec, dmask)
    assert_close(got.logits, exp.logits.numpy(), what=f"{model_type} seq2seq_lm logits")
    assert_close(got.encoder_last_hidden_state, exp.encoder_last_hidden_state.numpy(), what="encoder state")
    with torch.no_grad():
        toks = m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=N_NEW,
                          do_sample=False, num_beams=1).numpy()
    for cache in (True, False):
        np.testing.assert_array_equal(ours.generate(ids, attention_mask=mask, max_new_tokens=N_NEW, use_cache=cache),
                                      toks, err_msg=f"use_cache={cache}")


@pytest.mark.spec("ENCDEC-6")
@pytest.mark.parametrize("kind", ["classification", "multilabel", "qa"])
def test_sentence_and_span_heads(kind, tmp_path):
    """Classification heads read the decoder state at the last <eos> of input_ids (adapters'
    get_cls_from_eos_tokens); the QA head reads every decoder state. Logits equal upstream's."""
    add = {"classification": lambda m: m.add_classification_head("a", num_labels=3),
           "multilabel": lambda m: m.add_classification_head("a", num_labels=4, multilabel=True),
           "qa": lambda m: m.add_qa_head("a")}[kind]
    m, ours = _flex_pair("bart", str(tmp_path), add)
    ids, mask = _eos_batch()
    exp = torch_encdec(m, ids, mask)
    got = ours(ids, mask)
    fields = ("start_logits", "end_logits") if kind == "qa" else ("logits",)
    for f in fields:
        assert_close(getattr(got, f), getattr(exp, f).numpy(), what=f"{kind} {f}")
    if kind == "classification":
        bad = ids.copy()
        bad[0, 0] = 2                                   # row 0 now has two <eos>, the others one
        with pytest.raises(ValueError, match="same number of <eos> tokens"):
            ours(bad, mask)


@pytest.mark.spec("HEAD-9")
@pytest.mark.parametrize("model_type", FAMILIES)
def test_conditional_generation_checkpoint_becomes_a_seq2seq_head(model_type, tmp_path):
    """A ...ForConditionalGeneration checkpoint loads into AutoAdapterModel with its lm_head as the active
    seq2seq_lm head "default", as adapters converts it: the same logits as upstream's AutoAdapterModel, which (like
    us) leaves out final_logits_bias; the bare model's generate keeps the bias (transformers' tokens)."""
    m = hf_encdec(model_type, lm=True, scale=0.2, init=False)
    save_model(m, str(tmp_path))
    up = adapters.AutoAdapterModel.from_pretrained(str(tmp_path)).eval()
    ours = ma.AutoAdapterModel.from_pretrained(str(tmp_path))
    assert ours.active_head == "default" and ours.heads["default"].config["head_type"] == "seq2seq_lm"
    ids, mask, dec, dmask = encdec_batch(seed=8)
    exp = torch_encdec(up, ids, mask, dec, dmask).logits.numpy()
    assert_close(ours(ids, mask, dec, dmask).logits, exp, what=f"{model_type} converted head")
    full = torch_encdec(m, ids, mask, dec, dmask).logits.numpy()
    assert_close(exp + m.final_logits_bias.numpy(), full, what="upstream's converted head = lm logits - bias")


@pytest.mark.spec("BART-1")
def test_untied_config_follows_the_checkpoint(tmp_path):
    """tie_word_embeddings=False: transformers 4.57's BartModel still reads both stacks' embed_tokens from `shared`
    (the only table it saves); adapters' BartAdapterModel leaves encoder/decoder embed_tokens random (its
    _tied_weights_keys skip the tie), so its outputs differ from the checkpoint's. Ours follow the checkpoint
    (spec/deviations.md)."""
    m = hf_encdec("bart", init=False, tie_word_embeddings=False)
    m.save_pretrained(str(tmp_path))
    up = adapters.BartAdapterModel.from_pretrained(str(tmp_path)).eval()
    ids, mask, dec, dmask = encdec_batch()
    exp = torch_encdec(m, ids, mask, dec, dmask).last_hidden_state.numpy()
    theirs = torch_encdec(up, ids, mask, dec, dmask).last_hidden_state.numpy()
    assert np.abs(theirs - exp).max() > 1e-2, "adapters' AdapterModel now loads untied BART checkpoints: revisit"
    assert_close(ma.AutoAdapterModel.from_pretrained(str(tmp_path))(ids, mask, dec, dmask).last_hidden_state, exp,
                 rtol=1e-5, what="ours = the checkpoint's model")


@pytest.mark.spec("ENCDEC-5")
def test_tiny_bart_directory_is_a_transformers_checkpoint(tmp_path):
    """`minadapters tiny-model --arch bart` writes a checkpoint transformers loads; its greedy tokens (forced eos
    from config.json) equal ours."""
    from minadapters.tiny import write_tiny_bart
    d = write_tiny_bart(str(tmp_path))
    m = transformers.BartForConditionalGeneration.from_pretrained(d, attn_implementation="eager").eval()
    ids, mask, _, _ = encdec_batch(pad_side="right", seed=2, vocab=m.config.vocab_size)
    with torch.no_grad():
        exp = m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=9,
                         do_sample=False, num_beams=1).numpy()
    np.testing.assert_array_equal(ma.AutoModel.from_pretrained(d).generate(ids, attention_mask=mask, max_new_tokens=9),
                                  exp)


@pytest.mark.spec("ENCDEC-3")
def test_adapter_summary_counts_both_stacks(tmp_path):
    """adapter_summary: parameters per adapter (prefix pools of three locations, cross adapters, LoRA on both
    attentions) and the base model's count equal adapters 1.3.0's."""
    env = EncDecEnv("bart", str(tmp_path))
    for cfg in ("prefix_tuning", "seq_bn[cross_adapter=True, mh_adapter=True]", "lora[attn_matrices=['q','k','v']]",
                "seq_bn_inv", "mam"):
        env.add(cfg)
    want = {r["name"]: r["#param"] for r in env.torch_model.adapter_summary(as_dict=True)}
    got = {r["name"]: r["#param"] for r in env.ours.adapter_summary(as_dict=True)}
    assert got == want


@pytest.mark.spec("LORA-8")
@pytest.mark.parametrize("block", ["batchsplit", "parallel"])
def test_bottleneck_beside_lora_in_batchsplit_and_parallel(block, tmp_path):
    """adapters 1.3.0 raises TypeError for BatchSplit / Parallel of a bottleneck and a LoRA adapter (the LoRA layer
    multiplies the bottleneck child's missing state); ours gives each child's rows its own adapter: equal to the
    adapter alone upstream (spec/deviations.md). The bottleneck has original_ln_before=False: COMP-BATCHSPLIT's
    one pre_block (the first child's BN-2 pre-processing) then serves the LoRA rows unchanged."""
    env = EncDecEnv("bart", str(tmp_path))
    a = env.add(adapters.SeqBnConfig(mh_adapter=True, cross_adapter=True, reduction_factor=4,
                                     original_ln_before=False))
    b = env.add(adapters.LoRAConfig(r=3, attn_matrices=["q", "k", "v"], intermediate_lora=True))
    ids, mask, dec, dmask = encdec_batch(seed=12)
    theirs = ac.BatchSplit(a, b, batch_sizes=[1, 2]) if block == "batchsplit" else ac.Parallel(a, b)
    env.torch_model.set_active_adapters(theirs)
    with pytest.raises(TypeError):
        torch_encdec(env.torch_model, ids, mask, dec)
    env.ours.active_adapters = ours_block(theirs)
    got = env.ours(ids, mask, dec, dmask).last_hidden_state
    rows = {"batchsplit": [(a, slice(0, 1), slice(0, 1)), (b, slice(1, 3), slice(1, 3))],
            "parallel": [(a, slice(0, 3), slice(0, 3)), (b, slice(3, 6), slice(0, 3))]}[block]
    for name, ours_rows, in_rows in rows:
        env.torch_model.set_active_adapters(name)
        exp = torch_encdec(env.torch_model, ids[in_rows], mask[in_rows], dec[in_rows], dmask[in_rows])
        assert_close(got[ours_rows], exp.last_hidden_state.numpy(), what=f"{block}: rows of {name}")


@pytest.mark.spec("ENCDEC-6")
def test_parallel_classification_heads(tmp_path):
    """Parallel(a, b) with a classification head per adapter: one output per head, each equal to upstream's
    (decoder inputs shifted from input_ids; each head reads its channel's <eos> rows)."""
    m, ours = _flex_pair("bart", str(tmp_path), lambda m: m.add_classification_head("a", num_labels=3))
    m.add_adapter("b", config="seq_bn[mh_adapter=True, cross_adapter=True, reduction_factor=4]")
    m.add_classification_head("b", num_labels=2)
    perturb_adapter(m, "b", seed=9, scale=0.3)
    m.eval()
    m.save_adapter(os.path.join(str(tmp_path), "b"), "b")
    ours.load_adapter(os.path.join(str(tmp_path), "b"))
    m.set_active_adapters(ac.Parallel("a", "b"))
    ours.active_adapters = ma.Parallel("a", "b")
    ids, mask = _eos_batch(seed=3)
    exp, got = torch_encdec(m, ids, mask), ours(ids, mask)
    assert len(got) == len(exp) == 2
    for i in range(2):
        assert_close(got[i].logits, exp[i].logits.numpy(), what=f"head {i}")


@pytest.mark.spec("ENCDEC-3")
def test_reft_suffix_positions_count_encoder_tokens(tmp_path):
    """ReFT's suffix positions come from the encoder's attention mask in both stacks (adapters' context.seqlens):
    decoder rows at least as long as the encoder's agree with upstream; shorter ones fail in both (ours: ShapeError
    naming the positions)."""
    env = EncDecEnv("bart", str(tmp_path))
    a = env.add(adapters.LoReftConfig(r=3, prefix_positions=1, suffix_positions=2))
    env.torch_model.set_active_adapters(a)
    env.ours.active_adapters = a
    for S, T in ((9, 9), (9, 12)):
        ids, mask, dec, dmask = encdec_batch(S=S, T=T, pad_side="right", seed=1)
        compare_encdec(env.ours(ids, mask, dec, dmask), torch_encdec(env.torch_model, ids, mask, dec, dmask),
                       f"reft S={S} T={T}")
    ids, mask, dec, dmask = encdec_batch(S=9, T=6, pad_side="right", seed=1)
    with pytest.raises(RuntimeError):
        torch_encdec(env.torch_model, ids, mask, dec, dmask)
    with pytest.raises(ma.ShapeError, match="suffix positions"):
        env.ours(ids, mask, dec, dmask)


@pytest.mark.spec("HEAD-8")
def test_our_adapter_with_head_loads_into_upstream(tmp_path):
    """An adapter + seq2seq_lm head saved by our BartAdapterModel loads into adapters' BartAdapterModel (keys under
    its `model.` prefix, head config and weights) and gives the same logits."""
    m = hf_encdec("bart", scale=0.2, cls=adapters.BartAdapterModel)
    save_model(m, os.path.join(str(tmp_path), "model"))
    relink_pool(m)
    ours = ma.AutoAdapterModel.from_pretrained(os.path.join(str(tmp_path), "model"))
    ours.add_adapter("mine", "prefix_tuning[prefix_length=3]|seq_bn[cross_adapter=True]")
    ours.add_seq2seq_lm_head("mine")
    rng = np.random.default_rng(4)
    for _, (d, leaf) in ours.adapter_param_refs("mine").items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.1, d[leaf].shape)).astype(np.float32)
    ours.set_active_adapters("mine")
    ours.save_adapter(os.path.join(str(tmp_path), "mine"), "mine")
    assert m.load_adapter(os.path.join(str(tmp_path), "mine"), set_active=True) == "mine"
    m.eval()
    ids, mask, dec, dmask = encdec_batch(seed=13)
    assert_close(ours(ids, mask, dec, dmask).logits, torch_encdec(m, ids, mask, dec, dmask).logits.numpy(),
                 what="our adapter + head in upstream")


@pytest.mark.spec("API-3")
@pytest.mark.parametrize("preset", ["facebook/bart-base", "facebook/mbart-large-cc25", "uclanlp/plbart-base"])
def test_summary_presets_count_what_adapters_counts(preset):
    """`minadapters summary --arch` presets of the BART family (config alone) count adapters' numbers on the real
    shapes (meta device): cross adapters, prefixes of three locations, LoRA on both attentions, the base model."""
    from minadapters.summary import ARCH_PRESETS
    from minadapters.tiny import shell_model
    raw = dict(ARCH_PRESETS[preset])
    ours = shell_model(raw)
    configs = [("l", "lora[r=8, intermediate_lora=True]"), ("b", "seq_bn[cross_adapter=True]"), ("i", "ia3"),
               ("p", "prefix_tuning[prefix_length=20]")]
    with torch.device("meta"):
        m = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(**raw))
        adapters.init(m)
        for name, config in configs:
            m.add_adapter(name, config=config)
            ours.add_adapter(name, config=config)
    want = {r["name"]: r["#param"] for r in m.adapter_summary(as_dict=True)}
    assert {r["name"]: r["#param"] for r in ours.adapter_summary(as_dict=True)} == want


@pytest.mark.spec("FUSION-1")
def test_fusion_files_from_upstream(tmp_path):
    """A fusion over cross adapters saved by adapters (fusion layers at mh_adapter and cross_adapter locations of
    the decoder, perturbed) loads into ours: same keys, same outputs."""
    env = EncDecEnv("bart", str(tmp_path))
    bn = adapters.SeqBnConfig(mh_adapter=True, cross_adapter=True, output_adapter=False, reduction_factor=4)
    a, b = env.add(bn), env.add(bn)
    env.torch_model.add_adapter_fusion([a, b])
    perturb_adapter(env.torch_model, f"{a},{b}", seed=5)
    env.torch_model.eval()
    d = os.path.join(str(tmp_path), "fusion")
    env.torch_model.save_adapter_fusion(d, [a, b])
    assert env.ours.load_adapter_fusion(d) == f"{a},{b}"
    keys = {k for k in env.torch_model.state_dict() if "adapter_fusion_layer" in k}
    assert any(".cross_attention_adapters.adapter_fusion_layer." in k for k in keys)
    assert set(env.ours.fusion_state_dict(f"{a},{b}")) == keys
    env.compare(ac.Fuse(a, b), what="fusion from upstream's files")
