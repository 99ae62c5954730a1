"""Prediction heads and AdapterModel classes without torch: classes, keys, equations by hand, activation rules,
multi-head outputs, head files and their errors. Spec: HEAD-0 .. HEAD-11 (the oracle is
tests/oracle/test_heads_oracle.py).
"""
import json
import os
import warnings

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import CompositionError, ShapeError
from minadapters.functional.activations import gelu
from minadapters.models import gpt2
from minadapters.tiny import write_tiny_model

D = 32


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return write_tiny_model(str(tmp_path_factory.mktemp("heads_bert")), "bert", hidden=D, layers=2, heads=4, ffn=37)


@pytest.fixture
def model(bert_dir):
    return ma.AutoAdapterModel.from_pretrained(bert_dir, seed=0)


def ids_mask():
    ids = np.array([[2, 5, 6, 7, 9, 3], [2, 8, 9, 3, 0, 0], [2, 11, 3, 0, 0, 0]])
    return ids, (ids != 0).astype(np.int64)


def gpt2_model(pad_token_id=0, seed=0):
    raw = dict(model_type="gpt2", n_embd=24, n_layer=2, n_head=4, n_inner=40, vocab_size=37, n_positions=32,
               pad_token_id=pad_token_id)
    cfg = gpt2.Config.from_dict(raw)
    rng = np.random.default_rng(seed)
    params = {k: (rng.standard_normal(s) * 0.3 + (1.0 if k.endswith("ln_1.weight") or k.endswith("ln_2.weight")
                                                   or k.endswith("ln_f.weight") else 0)).astype(np.float32)
              for k, s in gpt2.expected_shapes(cfg).items()}
    m = ma.GPT2AdapterModel(gpt2.ARCHITECTURE, cfg, params, seed=seed)
    m.raw_config = dict(raw)
    return m


def perturb(head, rng, scale=0.3):
    for k in head.params:
        head.params[k] = (head.params[k] + rng.standard_normal(head.params[k].shape) * scale).astype(np.float32)


# ---- classes and records ---------------------------------------------------------------------------------
@pytest.mark.spec("HEAD-0")
def test_auto_adapter_model_class_and_bare_model(bert_dir, tmp_path):
    m = ma.AutoAdapterModel.from_pretrained(bert_dir)
    assert type(m) is ma.BertAdapterModel and m.heads == {} and m.active_head is None
    assert type(ma.AutoModel.from_pretrained(bert_dir)) is ma.AdapterModel
    rdir = write_tiny_model(str(tmp_path / "r"), "roberta", hidden=D, layers=1, heads=4, ffn=20)
    assert type(ma.AutoAdapterModel.from_pretrained(rdir)) is ma.RobertaAdapterModel
    ids, mask = ids_mask()
    base = ma.AutoModel.from_pretrained(bert_dir)(ids, attention_mask=mask)
    out = m(ids, attention_mask=mask)          # no head: the base model's output
    np.testing.assert_array_equal(out.last_hidden_state, base.last_hidden_state)
    np.testing.assert_array_equal(out.pooler_output, base.pooler_output)


@pytest.mark.spec("HEAD-0", "HEAD-1")
def test_state_dict_keys_follow_adapters_indices(model):
    model.add_classification_head("c", num_labels=3)
    model.add_classification_head("c1", num_labels=3, layers=1)
    model.add_classification_head("c3", num_labels=3, layers=3, activation_function=None)
    model.add_masked_lm_head("lm")
    model.add_causal_lm_head("clm")
    model.add_qa_head("qa")
    keys = {n: sorted(model.head_state_dict(n)) for n in model.heads}
    assert keys["c"] == ["heads.c.1.bias", "heads.c.1.weight", "heads.c.4.bias", "heads.c.4.weight"]
    assert keys["c1"] == ["heads.c1.1.bias", "heads.c1.1.weight"]
    assert keys["c3"] == [f"heads.c3.{i}.{l}" for i in (1, 3, 5) for l in ("bias", "weight")]
    assert keys["lm"] == [f"heads.lm.{i}.{l}" for i in (0, 2, 3) for l in ("bias", "weight")]
    assert keys["clm"] == [f"heads.clm.{i}.{l}" for i in (0, 2, 3) for l in ("bias", "weight")]
    sd = model.head_state_dict("c")
    assert sd["heads.c.1.weight"].shape == (D, D) and sd["heads.c.4.weight"].shape == (3, D)
    # tied: the LM projection is the embedding matrix itself (one array, as adapters shares one parameter)
    assert model.head_state_dict("lm")["heads.lm.3.weight"] is model.params["embeddings.word_embeddings.weight"]
    assert model.active_head == "qa"                         # add_*_head activates the new head
    assert model.heads["c"].config == {"head_type": "classification", "num_labels": 3, "layers": 2,
                                       "activation_function": "tanh", "use_pooler": False, "bias": True,
                                       "dropout_prob": None, "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}}
    assert model.heads["lm"].config["vocab_size"] == model.config.vocab_size


@pytest.mark.spec("HEAD-0")
@pytest.mark.parametrize("call,needle", [
    (lambda m: m.add_qa_head("q", num_labels=3), "num_labels=3"),
    (lambda m: m.add_classification_head("c", num_labels=0), "num_labels=0"),
    (lambda m: m.add_tagging_head("t", layers=0), "layers=0"),
    (lambda m: m.add_classification_head("c", activation_function="swoosh"), "swoosh"),
    (lambda m: m.add_prediction_head_from_config("c", {"head_type": "seq2seq_lm"}), "seq2seq_lm"),
    (lambda m: m.add_prediction_head_from_config("c", {"head_type": "nope"}), "nope"),
])
def test_bad_head_configs_name_the_field(model, call, needle):
    with pytest.raises(ValueError, match=needle):
        call(model)
    assert not model.heads


def test_unknown_config_key_and_duplicates(model):
    with pytest.raises(TypeError, match="colour"):
        model.add_prediction_head_from_config("c", {"head_type": "tagging", "colour": 1})
    model.add_tagging_head("t")
    with pytest.raises(ValueError, match="overwrite_ok"):
        model.add_tagging_head("t")
    model.add_tagging_head("t", num_labels=4, overwrite_ok=True)
    assert model.heads["t"].config["num_labels"] == 4
    with pytest.raises(ValueError, match="'zzz'"):
        model.active_head = "zzz"
    with pytest.raises(ValueError, match="'zzz'"):
        model(*ids_mask(), head="zzz")


@pytest.mark.spec("HEAD-0")
def test_decoder_classes_list_their_head_types():
    m = gpt2_model()
    with pytest.raises(ValueError, match="multiple_choice"):
        m.add_multiple_choice_head("mc")
    with pytest.raises(ValueError, match="masked_lm"):
        m.add_masked_lm_head("lm")


# ---- equations ------------------------------------------------------------------------------------------
@pytest.mark.spec("HEAD-1", "HEAD-2", "HEAD-3")
def test_classification_and_tagging_by_hand(model):
    rng = np.random.default_rng(1)
    model.add_classification_head("c", num_labels=3)
    model.add_classification_head("p", num_labels=2, layers=1, use_pooler=True)
    model.add_tagging_head("t", num_labels=5, layers=2, activation_function="gelu")
    for h in model.heads.values():
        perturb(h, rng)
    ids, mask = ids_mask()
    model.active_head = None
    base = model(ids, attention_mask=mask)
    h, pooled = base.last_hidden_state.astype(np.float64), base.pooler_output.astype(np.float64)
    P = {n: {k: v.astype(np.float64) for k, v in model.heads[n].params.items()} for n in model.heads}
    c = P["c"]
    want = np.tanh(h[:, 0] @ c["1.weight"].T + c["1.bias"]) @ c["4.weight"].T + c["4.bias"]
    np.testing.assert_allclose(model(ids, attention_mask=mask, head="c").logits, want, rtol=1e-5, atol=1e-6)
    p = P["p"]
    np.testing.assert_allclose(model(ids, attention_mask=mask, head="p").logits,
                               pooled @ p["1.weight"].T + p["1.bias"], rtol=1e-5, atol=1e-6)
    t = P["t"]
    want = gelu(h @ t["1.weight"].T + t["1.bias"]) @ t["4.weight"].T + t["4.bias"]
    np.testing.assert_allclose(model(ids, attention_mask=mask, head="t").logits, want, rtol=1e-5, atol=1e-6)


@pytest.mark.spec("HEAD-4", "HEAD-5")
def test_multiple_choice_and_qa_by_hand(model):
    rng = np.random.default_rng(2)
    model.add_multiple_choice_head("mc", num_choices=3)
    model.add_qa_head("qa")
    for h in model.heads.values():
        perturb(h, rng)
    ids, mask = ids_mask()
    mc = model(np.stack([ids, ids[::-1]]), attention_mask=np.stack([mask, mask[::-1]]), head="mc").logits
    assert mc.shape == (2, 3)
    model.active_head = None
    h = model(ids, attention_mask=mask).last_hidden_state.astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in model.heads["mc"].params.items()}
    s = (np.tanh(h[:, 0] @ w["1.weight"].T + w["1.bias"]) @ w["4.weight"].T + w["4.bias"])[:, 0]
    np.testing.assert_allclose(mc[0], s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mc[1], s[::-1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_choices=3"):
        model(ids[:2], attention_mask=mask[:2], head="mc")
    q = model(ids, attention_mask=mask, head="qa")
    w = {k: v.astype(np.float64) for k, v in model.heads["qa"].params.items()}
    z = h @ w["1.weight"].T + w["1.bias"]
    assert q.keys() == ["start_logits", "end_logits"]
    np.testing.assert_allclose(q.start_logits, z[..., 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q.end_logits, z[..., 1], rtol=1e-5, atol=1e-6)
    assert q.to_tuple()[0] is q.start_logits


@pytest.mark.spec("HEAD-6")
def test_masked_lm_tied_projection_by_hand(model):
    model.add_masked_lm_head("lm")
    perturb(model.heads["lm"], np.random.default_rng(3))
    ids, mask = ids_mask()
    out = model(ids, attention_mask=mask, head="lm").logits
    model.active_head = None
    h = model(ids, attention_mask=mask).last_hidden_state.astype(np.float64)
    w = {k: v.astype(np.float64) for k, v in model.heads["lm"].params.items()}
    x = gelu(h @ w["0.weight"].T + w["0.bias"])
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    x = (x - mu) / np.sqrt(var + 1e-12) * w["2.weight"] + w["2.bias"]
    E = model.params["embeddings.word_embeddings.weight"].astype(np.float64)
    np.testing.assert_allclose(out, x @ E.T + w["3.bias"], rtol=1e-4, atol=1e-5)


@pytest.mark.spec("HEAD-2", "HEAD-6")
def test_decoder_cls_is_last_non_pad_token_and_llama_style_untied():
    m = gpt2_model(pad_token_id=0)
    m.add_classification_head("c", num_labels=2, layers=1)
    perturb(m.heads["c"], np.random.default_rng(4))
    ids = np.array([[5, 6, 7, 8], [5, 6, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    logits = m(ids, attention_mask=mask).logits
    m.active_head = None
    h = m(ids, attention_mask=mask).last_hidden_state
    w = m.heads["c"].params
    np.testing.assert_allclose(logits, h[[0, 1], [3, 1]] @ w["1.weight"].T + w["1.bias"], rtol=1e-5, atol=1e-6)
    m2 = gpt2_model(pad_token_id=None)
    m2.add_classification_head("c", num_labels=2, layers=1)
    m2.heads["c"].params = dict(w)
    np.testing.assert_allclose(m2(ids, attention_mask=mask).logits, m2(ids, attention_mask=mask, head="c").logits)
    m2.active_head = None
    h2 = m2(ids, attention_mask=mask).last_hidden_state
    np.testing.assert_allclose(m2(ids, attention_mask=mask, head="c").logits,
                               h2[:, -1] @ w["1.weight"].T + w["1.bias"], rtol=1e-5, atol=1e-6)
    m.add_causal_lm_head("lm")                           # GPT-2 ties by default
    assert m.head_state_dict("lm")["heads.lm.3.weight"] is m.params["wte.weight"]


# ---- activation and composition ------------------------------------------------------------------------
@pytest.mark.spec("HEAD-7")
def test_adapter_activation_selects_same_named_head(model):
    model.add_adapter("a", config="seq_bn")
    model.add_adapter("b", config="seq_bn")
    model.add_tagging_head("a")
    model.add_classification_head("x")
    assert model.active_head == "x"
    model.set_active_adapters("a")
    assert model.active_head == "a"
    model.set_active_adapters("b")                      # no head "b": the active head stays
    assert model.active_head == "a"
    model.add_classification_head("b")
    model.set_active_adapters(ma.Stack("a", "b"))
    assert model.active_head == "b"
    model.delete_head("b")
    assert model.active_head is None and "b" not in model.heads
    model.delete_head("b")                               # absent: nothing happens


@pytest.mark.spec("HEAD-7")
def test_parallel_heads_equal_each_alone_and_batchsplit(model):
    rng = np.random.default_rng(5)
    for n, k in (("a", 2), ("b", 3)):
        model.add_adapter(n, config="seq_bn")
        for obj_key, (d, leaf) in model.adapter_param_refs(n).items():
            d[leaf] = (d[leaf] + rng.standard_normal(d[leaf].shape) * 0.2).astype(np.float32)
        model.add_classification_head(n, num_labels=k)
        perturb(model.heads[n], rng)
    ids, mask = ids_mask()
    model.set_active_adapters(ma.Parallel("a", "b"))
    out = model(ids, attention_mask=mask)
    assert isinstance(out, ma.MultiHeadOutput) and len(out) == 2
    o1, o2 = out
    assert out[0] is o1 and out["head_outputs"][1] is o2
    for n, o in (("a", o1), ("b", o2)):
        model.set_active_adapters(n)
        np.testing.assert_allclose(o.logits, model(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-6)
    model.set_active_adapters(ma.BatchSplit("a", "b", batch_sizes=[2, 1]))
    bs = model(ids, attention_mask=mask)
    assert [o.logits.shape for o in bs] == [(2, 2), (1, 3)]
    model.set_active_adapters("a")
    np.testing.assert_allclose(bs[0].logits, model(ids[:2], attention_mask=mask[:2]).logits, rtol=1e-5, atol=1e-6)
    model.set_active_adapters(ma.Parallel("a", "b"))
    model.active_head = "a"
    with pytest.raises(CompositionError, match="must match"):
        model(ids, attention_mask=mask)
    model.active_head = ["a", "b"]
    model.set_active_adapters(None)
    both = model(ids, attention_mask=mask)       # two heads, one channel: each head reads every row
    assert [o.logits.shape for o in both] == [(3, 2), (3, 3)]
    with pytest.raises(ValueError):
        both.logits   # noqa: B018  (vstack of (3, 2) and (3, 3) fails as torch.vstack does)


# ---- files ----------------------------------------------------------------------------------------------
@pytest.mark.spec("HEAD-8")
@pytest.mark.parametrize("safetensors", [False, True])
def test_save_load_roundtrip(bert_dir, model, tmp_path, safetensors):
    model.add_adapter("a", config="seq_bn")
    model.add_classification_head("a", num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    perturb(model.heads["a"], np.random.default_rng(6))
    model.set_active_adapters("a")
    d = str(tmp_path / "a")
    model.save_adapter(d, "a", use_safetensors=safetensors)
    want = {"adapter_config.json", "head_config.json"} | (
        {"adapter.safetensors", "model_head.safetensors"} if safetensors else
        {"pytorch_adapter.bin", "pytorch_model_head.bin"})
    assert set(os.listdir(d)) == want
    saved = json.load(open(os.path.join(d, "head_config.json")))
    assert saved["model_class"] == "BertAdapterModel" and saved["name"] == "a"
    assert saved["config"]["label2id"] == {"neg": 0, "neu": 1, "pos": 2}
    ids, mask = ids_mask()
    m2 = ma.AutoAdapterModel.from_pretrained(bert_dir, seed=1)
    assert m2.load_adapter(d, load_as="b", set_active=True) == "b"
    assert m2.active_head == "b" and m2.get_labels() == ["neg", "neu", "pos"]
    np.testing.assert_array_equal(m2(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    m3 = ma.AutoAdapterModel.from_pretrained(bert_dir)
    m3.load_head(d, id2label={0: "A", 1: "B", 2: "C"})
    assert m3.get_labels_dict("a") == {0: "A", 1: "B", 2: "C"} and m3.active_head == "a"


@pytest.mark.spec("HEAD-8")
def test_heads_never_skipped_silently(bert_dir, model, tmp_path):
    model.add_adapter("a", config="seq_bn")
    model.add_tagging_head("a")
    d = str(tmp_path / "a")
    model.save_adapter(d, "a")
    bare = ma.AutoModel.from_pretrained(bert_dir)
    with pytest.warns(UserWarning, match="not loaded"):
        bare.load_adapter(d)
    m = ma.AutoAdapterModel.from_pretrained(bert_dir)
    with pytest.warns(UserWarning, match="with_head=False"):
        m.load_adapter(d, with_head=False)
    assert not m.heads
    # a head of another model class: load_head raises, load_adapter warns and loads the adapter alone
    cfg_path = os.path.join(d, "head_config.json")
    saved = json.load(open(cfg_path))
    saved["model_class"] = "GPT2AdapterModel"
    json.dump(saved, open(cfg_path, "w"))
    with pytest.raises(ValueError, match="GPT2AdapterModel"):
        m.load_head(d)
    with pytest.warns(UserWarning, match="GPT2AdapterModel"):
        m.load_adapter(d, load_as="z")
    assert "z" in m.adapters and not m.heads
    os.remove(os.path.join(d, "pytorch_model_head.bin"))
    with pytest.warns(UserWarning, match="no head weights"):
        m.load_adapter(d, load_as="y")
    with pytest.raises(ValueError, match="no head weights"):
        m.load_head(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # an adapter directory without head files loads quietly
        model.save_adapter(str(tmp_path / "plain"), "a", with_head=False)
        m.load_adapter(str(tmp_path / "plain"), load_as="w")


@pytest.mark.spec("HEAD-8")
def test_bad_head_weights_keep_the_previous_head(bert_dir, model, tmp_path):
    model.add_classification_head("c", num_labels=3)
    d = str(tmp_path / "c")
    model.save_head(d, "c")
    m = ma.AutoAdapterModel.from_pretrained(bert_dir)
    m.add_classification_head("c", num_labels=2)
    before = m.heads["c"]
    cfg_path = os.path.join(d, "head_config.json")
    saved = json.load(open(cfg_path))
    saved["config"]["num_labels"] = 4            # the file's weights have 3 rows
    json.dump(saved, open(cfg_path, "w"))
    with pytest.raises(ShapeError, match="heads.c.4.weight"):
        with pytest.warns(UserWarning, match="Overwriting"):
            m.load_head(d)
    assert m.heads["c"] is before and m.active_head == "c"


# ---- static task heads ----------------------------------------------------------------------------------
@pytest.mark.spec("HEAD-9")
def test_static_sequence_classification_checkpoint(bert_dir, tmp_path):
    from minadapters.io.files import atomic_write_json, read_json
    from minadapters.io.safetensors_io import load_safetensors, save_safetensors
    d = tmp_path / "task"
    d.mkdir()
    raw = read_json(os.path.join(bert_dir, "config.json"))
    raw.update(architectures=["BertForSequenceClassification"], label2id={"no": 0, "yes": 1, "maybe": 2})
    w = {"bert." + k: v for k, v in load_safetensors(os.path.join(bert_dir, "model.safetensors")).items()}
    rng = np.random.default_rng(8)
    w["classifier.weight"] = rng.standard_normal((3, D)).astype(np.float32)
    w["classifier.bias"] = rng.standard_normal(3).astype(np.float32)
    save_safetensors(str(d / "model.safetensors"), w)
    atomic_write_json(str(d / "config.json"), raw)
    m = ma.AutoAdapterModel.from_pretrained(str(d))
    assert m.active_head == "default" and m.get_labels_dict() == {0: "no", 1: "yes", 2: "maybe"}
    assert m.heads["default"].config["use_pooler"] is True and m.heads["default"].config["layers"] == 1
    ids, mask = ids_mask()
    pooled = ma.AutoModel.from_pretrained(str(d))(ids, attention_mask=mask).pooler_output
    np.testing.assert_allclose(m(ids, attention_mask=mask).logits,
                               pooled @ w["classifier.weight"].T + w["classifier.bias"], rtol=1e-5, atol=1e-6)
    del w["classifier.bias"]
    save_safetensors(str(d / "model.safetensors"), w)
    with pytest.raises(ValueError, match="heads.default.1.bias"):
        ma.AutoAdapterModel.from_pretrained(str(d))


@pytest.mark.spec("HEAD-10")
def test_generate_uses_the_active_causal_lm_head():
    m = gpt2_model(pad_token_id=None)
    ids = np.array([[5, 6, 7], [8, 9, 10]])
    plain = m.generate(ids, 4, eos_token_id=None)          # no head: the tied checkpoint projection
    m.add_causal_lm_head("lm", layers=1)                  # layers=1: the projection alone, tied, bias zero
    np.testing.assert_array_equal(m.generate(ids, 4, eos_token_id=None), plain)
    m.heads["lm"].params["0.bias"] = np.zeros(37, np.float32)
    m.heads["lm"].params["0.bias"][3] = 1e4              # the head, not the checkpoint, picks the tokens
    assert (m.generate(ids, 4, eos_token_id=None, use_cache=False)[:, 3:] == 3).all()
    m.add_classification_head("c")
    with pytest.raises(ma.ConfigError, match="causal_lm"):
        m.generate(ids, 2)


@pytest.mark.spec("HEAD-11")
def test_dependency_parsing_by_hand(model):
    model.add_dependency_parsing_head("dp", num_labels=3)
    rng = np.random.default_rng(9)
    perturb(model.heads["dp"], rng)
    ids, mask = ids_mask()
    ws = np.array([[1, 3, 4, 5, 0, 0], [1, 2, 3, 0, 0, 0], [1, 2, 0, 0, 0, 0]])
    out = model(ids, attention_mask=mask, word_starts=ws)
    assert out.keys() == ["rel_preds", "arc_preds"]
    T = ids.shape[1]
    assert out.arc_preds.shape == (3, T, T + 1) and out.rel_preds.shape == (3, T, T + 1, 3)
    model.active_head = None
    h = model(ids, attention_mask=mask).last_hidden_state.astype(np.float64)
    A = model.heads["dp"].params["biaffine_arcs.weight"][0].astype(np.float64)
    R = model.heads["dp"].params["biaffine_rels.weight"].astype(np.float64)
    words = np.zeros_like(h)
    words[0, 0], words[0, 1], words[0, 2] = h[0, 1:3].mean(0), h[0, 3], h[0, 4]
    words[1, 0], words[1, 1] = h[1, 1], h[1, 2]
    words[2, 0] = h[2, 1]
    heads = np.concatenate([h[:, :1], words], 1)
    wx = np.concatenate([words, np.ones((3, T, 1))], -1)
    hy = np.concatenate([heads, np.ones((3, T + 1, 1))], -1)
    np.testing.assert_allclose(out.arc_preds, wx @ A @ heads.transpose(0, 2, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.rel_preds[..., 2], wx @ R[2] @ hy.transpose(0, 2, 1), rtol=1e-4, atol=1e-5)
    model.active_head = "dp"
    with pytest.raises(ValueError, match="word_starts"):
        model(ids, attention_mask=mask)


@pytest.mark.spec("HEAD-7")
def test_parallel_pooler_heads_read_their_channel(model):
    """use_pooler heads under Parallel read their channel's pooler rows (adapters hands them all rows, #29)."""
    rng = np.random.default_rng(11)
    for n in ("a", "b"):
        model.add_adapter(n, config="seq_bn")
        for _, (d, leaf) in model.adapter_param_refs(n).items():
            d[leaf] = (d[leaf] + rng.standard_normal(d[leaf].shape) * 0.2).astype(np.float32)
        model.add_classification_head(n, num_labels=2, use_pooler=True)
        perturb(model.heads[n], rng)
    ids, mask = ids_mask()
    model.set_active_adapters(ma.Parallel("a", "b"))
    o1, o2 = model(ids, attention_mask=mask)
    for n, o in (("a", o1), ("b", o2)):
        model.set_active_adapters(n)
        np.testing.assert_allclose(o.logits, model(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-6)


def test_hidden_states_and_tuple_output(model):
    model.add_tagging_head("t")
    ids, mask = ids_mask()
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    assert out.keys() == ["logits", "hidden_states"] and len(out.hidden_states) == model.num_layers + 1
    tup = model(ids, attention_mask=mask, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1 and tup[0].shape == (3, 6, 2)


@pytest.mark.spec("HEAD-0")
def test_family_without_class_gets_one_from_its_record(bert_dir, monkeypatch, tmp_path):
    from minadapters.heads import model as hm
    monkeypatch.setattr(hm, "ADAPTER_MODEL_CLASSES", {k: v for k, v in hm.ADAPTER_MODEL_CLASSES.items()
                                                      if k != "roberta"})
    rdir = write_tiny_model(str(tmp_path / "r"), "roberta", hidden=D, layers=1, heads=4, ffn=20)
    m = ma.AutoAdapterModel.from_pretrained(rdir)
    assert type(m).__name__ == "RobertaAdapterModel" and type(m) is not ma.RobertaAdapterModel
    assert "multiple_choice" in m.head_types and "masked_lm" in m.head_types
    with pytest.raises(ValueError, match="model_type='whisper'"):
        hm.adapter_model_class("whisper")


# ---- average_head (HEAD-13) ------------------------------------------------------------------------------
@pytest.mark.spec("HEAD-13")
def test_average_head_of_one_layer_heads_averages_their_logits(model):
    """A 1-layer classification head is linear in its parameters: the averaged head's logits are Σ w_i logits_i
    (weights normalised), and it is added without being activated, with the first head's config."""
    rng = np.random.default_rng(4)
    for n in "abc":
        model.add_classification_head(n, num_labels=3, layers=1)
        perturb(model.heads[n], rng)
    ids, mask = ids_mask()
    logits = {n: model(ids, attention_mask=mask, head=n).logits for n in "abc"}
    model.active_head = "a"
    model.average_head("avg", ["a", "b", "c"], weights=[1.0, 3.0, 0.5])
    assert model.active_head == "a" and model.heads["avg"].config == model.heads["a"].config
    want = sum(w * logits[n] for n, w in zip("abc", [1 / 4.5, 3 / 4.5, 0.5 / 4.5]))
    np.testing.assert_allclose(model(ids, attention_mask=mask, head="avg").logits, want, rtol=1e-5, atol=1e-6)
    model.average_head("raw", {"a": 1.0, "b": 3.0}, normalize_weights=False, set_active=True)
    assert model.active_head == "raw"
    np.testing.assert_allclose(model(ids, attention_mask=mask).logits, logits["a"] + 3 * logits["b"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.spec("HEAD-13")
def test_average_head_keeps_a_tied_projection_tied(model):
    """Masked LM heads tied to the input embeddings: the averaged head reads the (unchanged) embedding matrix,
    its other parameters (dense, LayerNorm, output bias) are the weighted sums."""
    rng = np.random.default_rng(5)
    for n in "ab":
        model.add_masked_lm_head(n)
        perturb(model.heads[n], rng)
    emb = model.params[model.arch.embed_key].copy()
    model.average_head("avg", ["a", "b"], weights=[0.25, 0.75])
    head = model.heads["avg"]
    assert head.tied_key == model.arch.embed_key
    np.testing.assert_array_equal(model.params[model.arch.embed_key], emb)
    for k in head.params:
        np.testing.assert_allclose(head.params[k], 0.25 * model.heads["a"].params[k] + 0.75 * model.heads["b"].params[k],
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.spec("HEAD-13")
def test_average_head_refusals_and_overwrite(model):
    model.add_classification_head("a", num_labels=3)
    model.add_classification_head("b", num_labels=3)
    model.add_classification_head("four", num_labels=4)
    model.add_tagging_head("tag", num_labels=3)
    with pytest.raises(ValueError, match="different configurations"):
        model.average_head("x", ["a", "four"])
    with pytest.raises(ValueError, match="different classes"):
        model.average_head("x", ["a", "tag"])
    with pytest.raises(KeyError, match="unknown head 'zz'"):
        model.average_head("x", ["a", "zz"])
    with pytest.raises(ValueError, match="No heads to average"):
        model.average_head("x", [])
    with pytest.raises(ValueError, match="already contains a head with name 'b'"):
        model.average_head("b", ["a", "b"])
    assert "x" not in model.heads
    before = {k: v.copy() for k, v in model.heads["a"].params.items()}
    model.average_head("a", ["a", "b"], weights=[1.0, 0.0], overwrite_ok=True)   # computed before replacing 'a'
    for k, v in before.items():
        np.testing.assert_allclose(model.heads["a"].params[k], v, rtol=1e-6)
