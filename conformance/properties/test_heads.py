"""Prediction heads (capability ``op:heads``): differential against the reference for every head type an
architecture offers, Parallel heads = each adapter + head alone, head files saved and loaded = the same logits.

Head configs are drawn as adapters' head_config.json ``config`` dicts; head weights are the reference's fresh
weights plus seeded noise, handed to both drivers. Spec: HEAD-0 .. HEAD-8.
"""
import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from conformance.harness import Built, batch, need, record, single
from conformance.outcomes import assert_close, tolerance
from conformance.strategies import batch_shapes, perturb, seeds

ENCODER = ("classification", "multilabel_classification", "tagging", "multiple_choice", "question_answering",
           "masked_lm", "causal_lm")
DECODER = ("classification", "multilabel_classification", "tagging", "question_answering", "causal_lm")
DEBERTA = ("classification", "multilabel_classification", "tagging", "multiple_choice", "question_answering",
           "masked_lm")                        # adapters 1.3.0's Deberta(V2)AdapterModel.head_types
# BART's and T5's sentence heads read the last <eos> of input_ids (the drawn batches hold none): QA and seq2seq LM only
HEAD_TYPES = {"bert": ENCODER, "roberta": ENCODER, "gpt2": DECODER, "llama": DECODER, "deberta-v2": DEBERTA,
              "bart": ("question_answering", "seq2seq_lm"),
              "t5": ("question_answering", "seq2seq_lm")}
ACTS = st.sampled_from(["tanh", "relu", "gelu", None])


def _heads_drawn(arch):
    """Heads are drawn on the architectures above; the families added later (DistilBERT, Mistral, Qwen2: the last
    has no AdapterModel class in adapters 1.3.0) are not drawn here yet."""
    if arch not in HEAD_TYPES:
        pytest.skip(f"heads are not drawn on {arch} by this suite (drawn on {', '.join(HEAD_TYPES)})")
ACTS = st.sampled_from(["tanh", "relu", "gelu", None])


@st.composite
def head_configs(draw, arch):
    """One head config of a type ``arch`` offers, every field drawn within its valid range."""
    ht = draw(st.sampled_from(HEAD_TYPES[arch]), label="head_type")
    if ht in ("masked_lm", "causal_lm", "seq2seq_lm"):
        return {"head_type": ht, "layers": draw(st.integers(1, 3), label="layers"),
                "activation_function": draw(ACTS, label="activation_function"),
                "layer_norm": draw(st.booleans(), label="layer_norm"), "bias": draw(st.booleans(), label="bias")}
    cfg = {"head_type": ht, "layers": draw(st.integers(1, 3), label="layers"),
           "activation_function": draw(ACTS, label="activation_function")}
    if ht == "multiple_choice":
        cfg["num_choices"] = draw(st.integers(2, 4), label="num_choices")
    else:
        cfg["num_labels"] = 2 if ht == "question_answering" else draw(st.integers(1, 6), label="num_labels")
    if ht in ("classification", "multilabel_classification", "multiple_choice") and arch in ("bert", "roberta"):
        cfg["use_pooler"] = draw(st.booleans(), label="use_pooler")
    if ht in ("classification", "multilabel_classification"):
        cfg["bias"] = draw(st.booleans(), label="bias")
    return cfg


class HeadBuilt(Built):
    def __init__(self, drv, model_dir):
        self.drv = drv
        self.model = drv.load_head_model(model_dir)

    def add_head(self, name, cfg, tensors=None):
        self.drv.add_head(self.model, name, cfg)
        if tensors is not None:
            self.drv.set_head_weights(self.model, name, tensors)

    def heads(self, setup, ids, mask, **kw):
        self.drv.set_active(self.model, setup)
        return self.drv.forward_heads(self.model, ids, mask, **kw)


def _inputs(arch, cfg, seed, shape):
    ids, mask = batch(arch, seed, shape)
    if cfg["head_type"] == "multiple_choice":        # (batch, choices, tokens): the rows rotated per choice
        C = cfg["num_choices"]
        ids = np.stack([np.roll(ids, c, axis=0) for c in range(C)], axis=1)
        mask = np.stack([np.roll(mask, c, axis=0) for c in range(C)], axis=1)
    return ids, mask


def _add_perturbed_head(primary, others, name, cfg, seed):
    primary.add_head(name, cfg)
    w = perturb(primary.drv.get_head_weights(primary.model, name), seed, scale=0.3)
    primary.drv.set_head_weights(primary.model, name, w)
    for o in others:
        o.add_head(name, cfg, w)
    return w


def _compare(got, want, rtol, atol, ctx):
    assert len(got) == len(want), f"{len(got)} head outputs, but should be {len(want)} [{ctx}]"
    for g, w in zip(got, want):
        fields = [k for k in ("logits", "start_logits", "end_logits") if k in w]
        for f in fields:
            assert f in g, f"head output lacks {f!r} (has {sorted(g)}) [{ctx}]"
            assert_close(g[f], w[f], rtol=rtol, atol=atol, what=f, context=ctx)


@pytest.mark.spec("HEAD-1", "HEAD-2", "HEAD-3", "HEAD-4", "HEAD-5", "HEAD-6")
@pytest.mark.conformance(method="heads", block="single")
@given(data=st.data())
def test_head_differential(driver, reference, model_dirs, arch, data):
    """A drawn head of every type the architecture offers, on a perturbed bottleneck adapter, vs the reference."""
    need(driver, "op:heads", f"arch:{arch}")
    _heads_drawn(arch)
    need(reference, "op:heads", f"arch:{arch}", role="reference")
    cfg = data.draw(head_configs(arch), label="head config")
    shape = data.draw(batch_shapes(min_len=2), label="batch")
    seed = data.draw(seeds, label="seed")
    note(f"arch={arch} head={cfg} batch={shape} seed={seed}")
    # an invertible adapter (MAD-X) puts its inverse coupling before LM heads (HEAD-5, INV-1): drawn as well
    adapter = data.draw(st.sampled_from(["seq_bn", "seq_bn_inv"]), label="adapter config")
    ref, dut = HeadBuilt(reference, model_dirs[arch]), HeadBuilt(driver, model_dirs[arch])
    w = perturb(_fresh_adapter(ref, "h", adapter), seed + 1)
    reference.set_adapter_weights(ref.model, "h", w)
    dut.add("h", adapter, w)
    _add_perturbed_head(ref, [dut], "h", cfg, seed)
    ids, mask = _inputs(arch, cfg, seed, shape)
    record("heads", cfg["head_type"], arch)
    rtol, atol = tolerance("differential", driver)
    _compare(dut.heads(single("h"), ids, mask), ref.heads(single("h"), ids, mask), rtol, atol,
             f"{arch} {cfg['head_type']}")


def _fresh_adapter(built, name, config="seq_bn"):
    built.add(name, config)
    return built.weights(name)


@pytest.mark.spec("HEAD-7")
@pytest.mark.conformance(method="heads", block="Parallel")
@given(data=st.data())
def test_parallel_heads_equal_each_alone(driver, model_dirs, arch, data):
    """Parallel(a, b) with heads a, b: one output per head, each equal to running that adapter + head alone."""
    need(driver, "op:heads", f"arch:{arch}", "block:Parallel")
    _heads_drawn(arch)
    # adapters 1.3.0 hands every Parallel head the whole replicated pooler output (only the sequence output and
    # the decoder CLS rows are sliced per channel): use_pooler heads are drawn without Parallel (deviation #29)
    plain = head_configs(arch).filter(lambda c: c["head_type"] != "multiple_choice" and not c.get("use_pooler"))
    cfgs = [data.draw(plain, label=f"head {n}") for n in "ab"]
    shape = data.draw(batch_shapes(min_len=2), label="batch")
    seed = data.draw(seeds, label="seed")
    dut = HeadBuilt(driver, model_dirs[arch])
    for i, (n, cfg) in enumerate(zip("ab", cfgs)):
        w = perturb(_fresh_adapter(dut, n), seed + 3 * i)
        driver.set_adapter_weights(dut.model, n, w)
        _add_perturbed_head(dut, [], n, cfg, seed + 5 * i)
    ids, mask = batch(arch, seed, shape)
    record("heads", "Parallel", arch)
    both = dut.heads({"type": "Parallel", "children": [single("a")["children"][0], single("b")["children"][0]]},
                     ids, mask)
    alone = [dut.heads(single(n), ids, mask)[0] for n in "ab"]
    rtol, atol = tolerance("metamorphic", driver)
    _compare(both, alone, rtol, atol, f"{arch} Parallel heads {[c['head_type'] for c in cfgs]}")


@pytest.mark.spec("HEAD-8")
@pytest.mark.conformance(method="heads", block="files")
@given(data=st.data())
def test_head_files_roundtrip(driver, model_dirs, arch, data, tmp_path_factory):
    """save_adapter with the same-named head, load into a fresh model: the same head outputs."""
    need(driver, "op:heads", f"arch:{arch}", "io:save", "io:load")
    _heads_drawn(arch)
    cfg = data.draw(head_configs(arch), label="head config")
    shape = data.draw(batch_shapes(min_len=2), label="batch")
    seed = data.draw(seeds, label="seed")
    a = HeadBuilt(driver, model_dirs[arch])
    w = perturb(_fresh_adapter(a, "t"), seed)
    driver.set_adapter_weights(a.model, "t", w)
    _add_perturbed_head(a, [], "t", cfg, seed + 1)
    ids, mask = _inputs(arch, cfg, seed, shape)
    want = a.heads(single("t"), ids, mask)
    d = str(tmp_path_factory.mktemp("headfiles") / "t")
    driver.save_adapter(a.model, "t", d)
    b = HeadBuilt(driver, model_dirs[arch])
    assert driver.load_adapter(b.model, d) == "t"
    record("heads", "files", arch)
    rtol, atol = tolerance("metamorphic", driver)
    _compare(b.heads(single("t"), ids, mask), want, rtol, atol, f"{arch} {cfg['head_type']} files")
    # the directory saved from a model with heads also loads into a bare model (its head files are ignored
    # there): the same hidden states as the adapter added to a bare model with the saved weights
    bare, direct = Built(driver, model_dirs[arch]), Built(driver, model_dirs[arch])
    assert driver.load_adapter(bare.model, d) == "t"
    direct.add("t", "seq_bn", w)
    ids2, mask2 = batch(arch, seed, shape)
    assert_close(bare.run(single("t"), ids2, mask2), direct.run(single("t"), ids2, mask2), rtol=rtol, atol=atol,
                 what="bare model's output of the head model's file", context=f"{arch} {cfg['head_type']} files")
