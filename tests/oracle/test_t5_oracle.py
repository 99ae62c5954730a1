"""Oracle: T5 / MT5 match transformers 4.57.6 (base model, 1e-5) and adapters 1.3.0 (every method at its locations in
both stacks, blocks, files both ways, merge / reset). Spec: T5-1 .. T5-5, T5-RELPOS-1, T5-RELPOS-2, T5-NORM.

Awkward sizes (d_model 36, d_kv 7 with 5 heads: inner 35 ≠ d_model, d_ff 37, 8 buckets, max distance 20 < the
23-token batch so the logarithmic buckets are used), eager attention, every base weight perturbed, padded encoder and
decoder batches.
"""
import os

import numpy as np
import pytest

import minadapters as ma

pytest.importorskip("adapters", reason="oracle: needs adapters==1.3.0 and torch (pip install -e .[oracle])")
import torch  # noqa: E402
import adapters  # noqa: E402
import adapters.composition as ac  # noqa: E402
from encdec_oracle_utils import T5_BATCH, EncDecEnv, encdec_batch, flex_pair, hf_encdec, torch_encdec  # noqa: E402
from oracle_utils import assert_close, perturb_adapter, save_model  # noqa: E402

BASE_CASES = [
    ("t5", {}),                                                                    # ReLU FFN, tied
    ("t5", dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_decoder_layers=2)),   # v1.1
    ("mt5", {}),                                                                   # gated-gelu, untied
    ("mt5", dict(feed_forward_proj="gated-silu", relative_attention_num_buckets=6,
                 relative_attention_max_distance=9, d_kv=9)),
]


def t5_batch(seed=0, pad_side="right", decoder_mask=True, **kw):
    """(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask): 23 encoder tokens, 6 decoder tokens;
    ``pad_side=None``: no masks at all; ``decoder_mask=False``: no decoder mask."""
    ids, mask, dec, dmask = encdec_batch(seed=seed, pad_side=pad_side or "none", **dict(T5_BATCH, **kw))
    if pad_side is None:
        mask = dmask = None
    return ids, mask, dec, dmask if decoder_mask else None


def _torch_out(model, b, **kw):
    return torch_encdec(model, *b, **kw)


def _ours_out(model, b, **kw):
    return model(*b, **kw)


@pytest.mark.spec("T5-1")
@pytest.mark.spec("T5-2")
@pytest.mark.spec("T5-3")
@pytest.mark.spec("T5-4")
@pytest.mark.spec("T5-NORM")
@pytest.mark.spec("T5-RELPOS-2")
@pytest.mark.parametrize("model_type,overrides", BASE_CASES, ids=lambda c: str(c))
def test_base_model_matches_transformers(model_type, overrides, tmp_path):
    """No adapter: decoder and encoder outputs equal T5Model / MT5Model's (eager) to 1e-5, for padded batches
    (right and left padding in the encoder, padding in the decoder) and with no masks at all; both backends."""
    m = hf_encdec(model_type, **overrides)
    save_model(m, tmp_path)
    ours = ma.AutoModel.from_pretrained(tmp_path)
    for seed, side in ((0, "right"), (1, "left"), (2, None)):
        b = t5_batch(seed=seed, pad_side=side)
        exp, got = _torch_out(m, b), _ours_out(ours, b)
        assert_close(got.last_hidden_state, exp.last_hidden_state.numpy(), rtol=1e-5, what=f"decoder pad={side}")
        assert_close(got.encoder_last_hidden_state, exp.encoder_last_hidden_state.numpy(), rtol=1e-5,
                     what=f"encoder pad={side}")
    b = t5_batch(seed=4, pad_side="left")
    exp = _torch_out(m, b, output_hidden_states=True, output_attentions=True)
    got = _ours_out(ours, b, output_hidden_states=True, output_attentions=True)
    for field in ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_hidden_states",
                  "encoder_attentions"):
        e, g = getattr(exp, field), getattr(got, field)
        assert len(g) == len(e), f"{field}: {len(g)} entries, but should be {len(e)}"
        for i, (x, y) in enumerate(zip(g, e)):
            assert_close(x, y.numpy(), rtol=1e-5, what=f"{field}[{i}]")
    again = ours(encoder_outputs=got, attention_mask=b[1], decoder_input_ids=b[2][:, :3],
                 decoder_attention_mask=b[3][:, :3])
    assert_close(again.last_hidden_state, got.last_hidden_state[:, :3], rtol=1e-5, what="encoder_outputs reuse")
    emb = ours.params["shared.weight"][b[0]] * 1.5                              # inputs_embeds: any vectors
    with torch.no_grad():
        exp = m(inputs_embeds=torch.tensor(emb), attention_mask=torch.tensor(b[1]),
                decoder_input_ids=torch.tensor(b[2]))
    got = ours(inputs_embeds=emb, attention_mask=b[1], decoder_input_ids=b[2])
    assert_close(got.last_hidden_state, exp.last_hidden_state.numpy(), rtol=1e-5, what="inputs_embeds")
    ours.set_backend("native")
    b = t5_batch(seed=3)
    assert_close(_ours_out(ours, b).last_hidden_state, _torch_out(m, b).last_hidden_state.numpy(), rtol=1e-4,
                 what="native backend")


@pytest.mark.spec("T5-RELPOS-1")
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (7, 13), (6, 9), (16, 100), (4, 3)])
def test_relative_position_buckets_equal_transformers(num_buckets, max_distance):
    """Every relative position in [-3000, 3000), both directions: our bucket equals transformers' (the float32
    logarithm's truncation decides the edges)."""
    from transformers.models.t5.modeling_t5 import T5Attention
    from minadapters.functional.t5 import relative_position_bucket
    r = torch.arange(-3000, 3000)
    for bidirectional in (True, False):
        exp = T5Attention._relative_position_bucket(r, bidirectional=bidirectional, num_buckets=num_buckets,
                                                    max_distance=max_distance).numpy()
        got = relative_position_bucket(r.numpy(), bidirectional=bidirectional, num_buckets=num_buckets,
                                       max_distance=max_distance)
        np.testing.assert_array_equal(got, exp, err_msg=f"bidirectional={bidirectional}")


@pytest.fixture(scope="module", params=["t5", "mt5"])
def env(request, tmp_path_factory):
    return EncDecEnv(request.param, str(tmp_path_factory.mktemp(request.param)))


SINGLE = [
    "seq_bn", "double_seq_bn", "par_bn", "seq_bn[cross_adapter=True]", "double_seq_bn[cross_adapter=True]",
    "seq_bn_inv", "scaled_par_bn", "compacter[reduction_factor=9, shared_phm_rule=False]",
    "lora", "lora[r=4, alpha=16, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]",
    "lora[r=3, selfattn_lora=False, intermediate_lora=True]", "dora[r=3, intermediate_lora=True]",
    "ia3", "ia3[attn_matrices=['q','v'], intermediate_lora=True, output_lora=True]",
    "prefix_tuning", "prefix_tuning[encoder_prefix=False]", "prefix_tuning[cross_prefix=False]",
    "prefix_tuning[prefix_length=5, use_gating=True, shared_gating=False]", "prefix_tuning[flat=True]",
    "mam", "unipelt",
    # adapters' layer indices: encoder 0, 1; decoder 2, 3, 4
    "double_seq_bn[reduction_factor={'1': 3, '3': 5, 'default': 8}, leave_out=[4], cross_adapter=True]",
    "lora[r=3, leave_out=[0, 2], intermediate_lora=True]",
    # no prefix in the first layer of a stack: the next layer's keys are longer than the shared bias, so it (and the
    # layers after it) attend without relative position bias, as upstream (T5-2)
    "prefix_tuning[leave_out=[0]]", "prefix_tuning[leave_out=[2, 3]]",
]
REFT = ["loreft", "noreft[r=3, prefix_positions=2, suffix_positions=1]",
        "loreft[tied_weights=True, prefix_positions=1, suffix_positions=2, r=2]"]


@pytest.mark.spec("T5-5")
@pytest.mark.parametrize("config", SINGLE)
def test_single_adapter(env, config):
    """Each method at adapters' T5 locations (both stacks; cross-attention and cross_adapter / cross_prefix where the
    config asks): decoder and encoder outputs equal adapters 1.3.0's."""
    name = env.add(config)
    env.compare(name, name, what=config)


@pytest.mark.parametrize("config", REFT)
def test_reft(env, config):
    """ReFT intervenes after every block of both stacks at the positions adapters reads from the encoder's
    attention_mask (the decoder too; T5-5 upstream note): equal outputs while the decoder is long enough; when
    those positions fall outside the decoder, both fail (adapters: RuntimeError; ours: ShapeError)."""
    name = env.add(config)
    env.torch_model.set_active_adapters(name)
    env.ours.active_adapters = name
    for side, T, Td in (("right", 9, 12), ("left", 9, 12), ("right", 23, 6), ("left", 23, 6)):
        b = t5_batch(seed=env.n, pad_side=side, S=T, T=Td)
        try:
            exp = _torch_out(env.torch_model, b)
        except RuntimeError:
            assert Td < T, f"adapters fails with a decoder as long as the encoder ({config})"
            with pytest.raises(ValueError, match="ReFT"):
                _ours_out(env.ours, b)
            continue
        got = _ours_out(env.ours, b)
        assert_close(got.last_hidden_state, exp.last_hidden_state.numpy(), what=f"{config} decoder {side} {T}/{Td}")
        assert_close(got.encoder_last_hidden_state, exp.encoder_last_hidden_state.numpy(), what=f"{config} encoder")


def test_prompt_tuning_is_refused(env):
    """adapters 1.3.0's T5 does not support prompt tuning (support_prompt_tuning = False); we refuse it by name."""
    with pytest.raises(ValueError):
        env.torch_model.add_adapter("pt_up", config="prompt_tuning")
    if "pt_up" in env.torch_model.adapters_config.adapters:
        env.torch_model.delete_adapter("pt_up")
    with pytest.raises(ValueError, match=f"prompt_tuning.*{env.model_type}"):
        env.ours.add_adapter("pt", config="prompt_tuning")


def test_union(env):
    from adapters import ConfigUnion, LoRAConfig, PrefixTuningConfig, SeqBnConfig
    name = env.add(ConfigUnion(LoRAConfig(r=4, alpha=4, intermediate_lora=True),
                               PrefixTuningConfig(prefix_length=4, bottleneck_size=6),
                               SeqBnConfig(reduction_factor=5, cross_adapter=True)))
    env.compare(name, name, what="union lora + prefix + seq_bn")


def test_stack_parallel_batchsplit(env):
    a = env.add("double_seq_bn[reduction_factor=4, cross_adapter=True]")
    b = env.add("double_seq_bn[reduction_factor=6, non_linearity='relu', use_gating=True, cross_adapter=True]")
    env.compare(ac.Stack(b, a), ma.Stack(b, a), what="Stack")
    env.compare(ac.BatchSplit(b, a, batch_sizes=[1, 2]), ma.BatchSplit(b, a, batch_sizes=[1, 2]), what="BatchSplit")
    env.compare(ac.Average(b, a, weights=[0.3, 0.7]), ma.Average(b, a, weights=[0.3, 0.7]), what="Average")
    # Split cuts the token axis of both stacks: it runs when encoder and decoder have the same length
    env.torch_model.set_active_adapters(ac.Split(b, a, splits=[3, 5]))
    env.ours.active_adapters = ma.Split(b, a, splits=[3, 5])
    batch = t5_batch(seed=2, S=8, T=8)
    assert_close(_ours_out(env.ours, batch).last_hidden_state,
                 _torch_out(env.torch_model, batch).last_hidden_state.numpy(), what="Split")
    batch = t5_batch(seed=2, S=8, T=6)
    with pytest.raises(IndexError):
        _torch_out(env.torch_model, batch)
    with pytest.raises(IndexError):
        _ours_out(env.ours, batch)
    # adapters 1.3.0 replicates decoder_input_ids for Parallel but not decoder_attention_mask (RuntimeError):
    # compared without one; with one, see test_parallel_replicates_the_decoder_mask
    env.compare(ac.Parallel(b, a), ma.Parallel(b, a), what="Parallel", decoder_mask=False)


def test_lora_and_prefix_blocks(env):
    # both at the same locations: adapters 1.3.0 crashes when a Parallel child lacks a LoRA where another has one
    a = env.add("lora[r=3, attn_matrices=['q','k','v'], intermediate_lora=True]")
    b = env.add("lora[r=2, alpha=5, attn_matrices=['q','k','v'], intermediate_lora=True]")
    # Stack chains one LoRA's delta (width 35 = heads · d_kv) into the next one's A (width d_model 36): adapters
    # 1.3.0 fails with RuntimeError; so do we, with a ShapeError naming the layer
    env.torch_model.set_active_adapters(ac.Stack(a, b))
    with pytest.raises(RuntimeError):
        _torch_out(env.torch_model, t5_batch())
    env.ours.active_adapters = ma.Stack(a, b)
    with pytest.raises(ValueError):
        _ours_out(env.ours, t5_batch())
    env.compare(ac.Parallel(a, b), ma.Parallel(a, b), what="Parallel lora", decoder_mask=False)
    # equal prefix lengths at every location: deviation 8 (PREFIX-4) for different ones
    p, q = env.add("prefix_tuning[prefix_length=4]"), env.add("prefix_tuning[prefix_length=4, bottleneck_size=7]")
    env.compare(ac.BatchSplit(p, q, batch_sizes=[2, 1]), ma.BatchSplit(p, q, batch_sizes=[2, 1]),
                what="BatchSplit prefix")


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
    name = env.add("lora[r=3, alpha=6, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]")
    env.torch_model.set_active_adapters(name)
    b = t5_batch(seed=5)
    exp = _torch_out(env.torch_model, b).last_hidden_state.numpy()
    env.ours.active_adapters = name
    base = {k: v.copy() for k, v in env.ours.params.items()}
    env.ours.merge_adapter(name)
    try:
        changed = [k for k in base if not np.array_equal(env.ours.params[k], base[k])]
        assert any(".EncDecAttention.k." in k for k in changed) and any(".wi" in k for k in changed), changed
        assert_close(_ours_out(env.ours, b).last_hidden_state, exp, what="merged")
    finally:
        env.ours.reset_adapter()
    for k, v in base.items():
        np.testing.assert_array_equal(env.ours.params[k], v, err_msg=f"{k} after reset")
    assert_close(_ours_out(env.ours, b).last_hidden_state, exp, what="after reset")


@pytest.mark.parametrize("config", ["lora[r=2, intermediate_lora=True, output_lora=True]",
                                    "double_seq_bn[cross_adapter=True]", "prefix_tuning[prefix_length=4]",
                                    "seq_bn_inv", "ia3[intermediate_lora=True]", "loreft[prefix_positions=1]"])
def test_ours_to_adapters(env, config, tmp_path):
    """An adapter we save loads in adapters 1.3.0 and gives the same outputs there (files both ways)."""
    name = env.add(config)
    d = str(tmp_path / "ours")
    env.ours.save_adapter(d, name)
    loaded = env.torch_model.load_adapter(d, load_as=name + "_back")
    env.compare(loaded, name, what=f"ours->adapters {config}")


def test_parallel_replicates_the_decoder_mask(env):
    """adapters 1.3.0 replicates decoder_input_ids for Parallel but not decoder_attention_mask (RuntimeError in the
    causal mask); we replicate every input at the model's edge, so channel c equals adapter c alone — which is what
    adapters gives without a decoder mask (deviation recorded in spec/deviations.md)."""
    a = env.add("double_seq_bn[reduction_factor=4, cross_adapter=True]")
    b = env.add("double_seq_bn[reduction_factor=6, cross_adapter=True, non_linearity='relu']")
    batch = t5_batch(seed=9, pad_side="left")
    env.ours.active_adapters = ma.Parallel(a, b)
    both = _ours_out(env.ours, batch).last_hidden_state
    B = batch[0].shape[0]
    for c, name in enumerate((a, b)):
        env.torch_model.set_active_adapters(name)
        assert_close(both[c * B:(c + 1) * B], _torch_out(env.torch_model, batch).last_hidden_state.numpy(),
                     what=f"Parallel channel {c} ({name}) vs adapters' {name} alone")
    env.torch_model.set_active_adapters(ac.Parallel(a, b))
    with pytest.raises(RuntimeError):         # last: the failed forward leaves adapters' context behind
        _torch_out(env.torch_model, batch)


N_NEW = 10
GEN_CONFIGS = [None, "seq_bn[reduction_factor=4, mh_adapter=True, cross_adapter=True]",
               "lora[r=4, alpha=8, attn_matrices=['q','k','v'], intermediate_lora=True]",
               "prefix_tuning[prefix_length=4, bottleneck_size=8]"]
GEN_MODELS = [("t5", {}), ("mt5", {}), ("t5", dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False))]


@pytest.mark.spec("T5-3")
@pytest.mark.parametrize("config", GEN_CONFIGS)
@pytest.mark.parametrize("model_type,overrides", GEN_MODELS, ids=lambda c: str(c))
def test_greedy_generation_equals_transformers(model_type, overrides, config, tmp_path):
    """T5ForConditionalGeneration / MT5ForConditionalGeneration (tied with T5's d_model^-0.5 rescaling, or an untied
    lm_head) under adapters 1.3.0 with the adapter active: our greedy tokens equal transformers' generate, with and
    without our cache (self-attention keys appended, cross K/V once, relative bias at the cached position).
    transformers' own cache cannot serve 3 decoder layers after 2 encoder layers (its DynamicCache is sized by
    num_layers: IndexError), so upstream generates without one."""
    m = hf_encdec(model_type, lm=True, scale=0.2, **overrides)
    save_model(m, str(tmp_path / "model"))
    ours = ma.AutoModel.from_pretrained(str(tmp_path / "model"))
    if config is not None:
        m.add_adapter("a", config=config)
        perturb_adapter(m, "a", scale=0.3)
        m.set_active_adapters("a")
        m.eval()
        m.save_adapter(str(tmp_path / "a"), "a")
        ours.load_adapter(str(tmp_path / "a"), set_active=True)
    ids, mask, _, _ = encdec_batch(pad_side="left", seed=5, **T5_BATCH)
    with torch.no_grad():
        exp = m.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=N_NEW,
                         do_sample=False, num_beams=1, eos_token_id=None, use_cache=False).numpy()
    assert exp.shape == (3, N_NEW + 1)
    for cache in (True, False):
        got = ours.generate(ids, max_new_tokens=N_NEW, attention_mask=mask, use_cache=cache, eos_token_id=None)
        np.testing.assert_array_equal(got, exp, err_msg=f"use_cache={cache}")


HEAD_MODELS = [("t5", {}), ("mt5", {}), ("t5", dict(tie_word_embeddings=False))]


@pytest.mark.spec("T5-6")
@pytest.mark.spec("HEAD-6")
@pytest.mark.parametrize("model_type,overrides", HEAD_MODELS, ids=lambda c: str(c))
def test_seq2seq_lm_head_logits_and_generation(model_type, overrides, tmp_path):
    """T5AdapterModel / MT5AdapterModel with add_seq2seq_lm_head: logits equal upstream's (tied: states rescaled by
    d_model^-0.5, projection = shared embedding; untied: the head's own matrix, no rescaling); without
    decoder_input_ids both shift input_ids right; greedy generation with the head equals upstream's generate."""
    m, ours = flex_pair(model_type, str(tmp_path), lambda m: m.add_seq2seq_lm_head("a"), **overrides)
    assert ours.heads["a"].config == m.heads["a"].config
    assert (ours.heads["a"].tied_key is not None) == m.config.tie_word_embeddings
    b = t5_batch(seed=5, pad_side="left")
    exp, got = _torch_out(m, b), _ours_out(ours, b)
    assert_close(got.logits, exp.logits.numpy(), what=f"{model_type} seq2seq_lm logits")
    exp = torch_encdec(m, b[0], b[1])
    assert_close(ours(b[0], b[1]).logits, exp.logits.numpy(), what="decoder inputs = input_ids shifted right")
    with torch.no_grad():
        toks = m.generate(input_ids=torch.tensor(b[0]), attention_mask=torch.tensor(b[1]), max_new_tokens=N_NEW,
                          do_sample=False, num_beams=1, use_cache=False, eos_token_id=None).numpy()
    for cache in (True, False):
        got = ours.generate(b[0], attention_mask=b[1], max_new_tokens=N_NEW, use_cache=cache, eos_token_id=None)
        np.testing.assert_array_equal(got, toks, err_msg=f"use_cache={cache}")


@pytest.mark.spec("T5-6")
@pytest.mark.parametrize("kind", ["classification", "qa"])
def test_sentence_and_span_heads(kind, tmp_path):
    """Classification reads the (unscaled) decoder state at the last <eos> of input_ids; QA reads the rescaled
    states (tied T5). Logits equal upstream's."""
    add = {"classification": lambda m: m.add_classification_head("a", num_labels=3),
           "qa": lambda m: m.add_qa_head("a")}[kind]
    m, ours = flex_pair("t5", str(tmp_path), add)
    ids, mask, _, _ = t5_batch(seed=7)
    for r in range(ids.shape[0]):
        ids[r, mask[r].sum() - 1] = 1                           # one </s> (eos 1) per row, before the padding
    exp, got = torch_encdec(m, ids, mask), ours(ids, mask)
    for f in (("start_logits", "end_logits") if kind == "qa" else ("logits",)):
        assert_close(getattr(got, f), getattr(exp, f).numpy(), what=f"{kind} {f}")


@pytest.mark.spec("T5-6")
@pytest.mark.parametrize("model_type,overrides", HEAD_MODELS, ids=lambda c: str(c))
def test_conditional_generation_checkpoint_becomes_a_seq2seq_head(model_type, overrides, tmp_path):
    """A T5/MT5ForConditionalGeneration checkpoint loads into AutoAdapterModel with its lm_head as the active
    seq2seq_lm head "default": logits equal transformers' ForConditionalGeneration. adapters 1.3.0 loads the tied T5
    the same way, and refuses untied checkpoints (ValueError "state dictionary ... corrupted"; deviation)."""
    m = hf_encdec(model_type, lm=True, scale=0.2, init=False, **overrides)
    save_model(m, str(tmp_path))
    ours = ma.AutoAdapterModel.from_pretrained(str(tmp_path))
    assert ours.active_head == "default" and ours.heads["default"].config["head_type"] == "seq2seq_lm"
    b = t5_batch(seed=8)
    assert_close(_ours_out(ours, b).logits, _torch_out(m, b).logits.numpy(), what=f"{model_type} converted head")
    if m.config.tie_word_embeddings:
        up = adapters.AutoAdapterModel.from_pretrained(str(tmp_path)).eval()
        assert_close(_ours_out(ours, b).logits, _torch_out(up, b).logits.numpy(), what="upstream's AdapterModel")
    else:
        with pytest.raises(ValueError, match="corrupted"):
            adapters.AutoAdapterModel.from_pretrained(str(tmp_path))


@pytest.mark.spec("T5-5")
@pytest.mark.parametrize("config", ["unipelt", "double_seq_bn[use_gating=True, cross_adapter=True]",
                                    "prefix_tuning[use_gating=True, prefix_length=3]"])
def test_gating_scores(env, config):
    """output_adapter_gating_scores: the same (adapters' layer index, location) keys as adapters 1.3.0 — the decoder's
    layers after the encoder's — and the same gate values."""
    name = env.add(config)
    env.torch_model.set_active_adapters(name)
    env.ours.active_adapters = name
    b = t5_batch(seed=3)
    exp = _torch_out(env.torch_model, b, output_adapter_gating_scores=True).adapter_gating_scores[name]
    got = _ours_out(env.ours, b, output_adapter_gating_scores=True).adapter_gating_scores[name]
    assert sorted((i, k) for i, d in got.items() for k in d) == sorted((i, k) for i, d in exp.items() for k in d)
    assert max(exp) >= env.torch_model.config.num_layers                   # decoder layers are numbered after
    for i, d in exp.items():
        for k, v in d.items():
            assert_close(got[i][k], np.asarray(v), what=f"gate {i} {k}")


@pytest.mark.spec("T5-5")
def test_adapter_summary_counts_equal_adapters(env):
    """adapter_summary's parameter counts (LoRA on q/k/v of both attentions and wi/wi_1, bottlenecks incl.
    cross_adapter, prefixes of width N·d_kv, ReFT, IA³) equal adapters 1.3.0's for the same adapters."""
    names = [env.add(c) for c in ("lora[r=3, attn_matrices=['q','k','v'], intermediate_lora=True, output_lora=True]",
                                  "double_seq_bn[cross_adapter=True]", "prefix_tuning[prefix_length=5]", "loreft",
                                  "ia3")]
    want = {r["name"]: r["#param"] for r in env.torch_model.adapter_summary(as_dict=True) if r["name"] in names}
    got = {r["name"]: r["#param"] for r in env.ours.adapter_summary(as_dict=True) if r["name"] in names}
    assert got == want


@pytest.mark.spec("API-3")
@pytest.mark.parametrize("preset", ["t5-base", "google/mt5-small"])
def test_summary_preset_counts_equal_adapters(preset):
    """`summary --arch t5-base | google/mt5-small` (config alone, no weights) counts what adapters 1.3.0 counts on
    the real shapes (meta device)."""
    import transformers
    from minadapters.summary import ARCH_PRESETS
    from minadapters.tiny import shell_model
    raw = dict(ARCH_PRESETS[preset])
    ours = shell_model(raw)
    configs = [("l", "lora[r=8, intermediate_lora=True, attn_matrices=['q','k','v']]"), ("b", "double_seq_bn"),
               ("c", "seq_bn[cross_adapter=True]"), ("i", "ia3"), ("p", "prefix_tuning[prefix_length=20]")]
    with torch.device("meta"):
        m = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(**raw))
        adapters.init(m)
        for name, config in configs:
            m.add_adapter(name, config=config)
            ours.add_adapter(name, config=config)
    want = {r["name"]: r["#param"] for r in m.adapter_summary(as_dict=True)}
    got = {r["name"]: r["#param"] for r in ours.adapter_summary(as_dict=True)}
    assert got == want, f"{preset}: counts {got}, but should be {want}"


@pytest.mark.spec("T5-2")
@pytest.mark.spec("ENCDEC-4")
def test_cached_decoder_steps_equal_the_full_forward(tmp_path):
    """One decoder token at a time through our cache (encoder outputs reused, cross K/V once, the relative bias of
    query position `past` over the prefixed keys) gives, at every step, upstream's full-sequence decoder state there;
    with encoder / self / cross prefixes, a cross adapter and LoRA on both attentions stacked. 9 decoder tokens reach
    the decoder's logarithmic buckets."""
    from minadapters.models.encdec_common import EncDecCache
    env = EncDecEnv("t5", str(tmp_path))
    a = env.add(adapters.PrefixTuningConfig(prefix_length=3))
    b = env.add(adapters.SeqBnConfig(mh_adapter=True, cross_adapter=True, reduction_factor=4))
    c = env.add(adapters.LoRAConfig(r=2, attn_matrices=["q", "k", "v"], intermediate_lora=True))
    env.torch_model.set_active_adapters(ac.Stack(a, b, c))
    env.ours.active_adapters = ma.Stack(a, b, c)
    ids, mask, dec, _ = encdec_batch(pad_side="left", seed=9, T=9, **T5_BATCH)
    exp = torch_encdec(env.torch_model, ids, mask, dec).last_hidden_state.numpy()
    cache = EncDecCache(env.ours.config.num_decoder_layers)
    enc = None
    for t in range(dec.shape[1]):
        kw = dict(attention_mask=mask, decoder_input_ids=dec[:, t:t + 1], past_key_values=cache)
        out = env.ours(ids, **kw) if enc is None else env.ours(encoder_outputs=enc, **kw)
        enc = out.encoder_last_hidden_state
        assert_close(out.last_hidden_state[:, 0], exp[:, t], what=f"cached step {t}")
    assert cache.length == dec.shape[1] and all(kv is not None for kv in cache.cross)


@pytest.mark.spec("T5-6")
@pytest.mark.parametrize("model_type,overrides", [("t5", {}), ("mt5", {})], ids=lambda c: str(c))
def test_our_adapter_with_head_loads_into_upstream(model_type, overrides, tmp_path):
    """An adapter with its seq2seq_lm head saved by us loads into adapters' T5/MT5AdapterModel (head files both
    ways) and gives our logits there."""
    m, ours = flex_pair(model_type, str(tmp_path), lambda m: m.add_seq2seq_lm_head("a"), **overrides)
    d = str(tmp_path / "ours")
    ours.save_adapter(d, "a")
    m.load_adapter(d, load_as="back", set_active=True)
    m.eval()
    assert m.active_head == "back"
    b = t5_batch(seed=6)
    assert_close(_torch_out(m, b).logits.numpy(), _ours_out(ours, b).logits, what=f"{model_type} head round trip")
