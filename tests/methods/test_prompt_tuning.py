"""Prompt tuning, our own behaviour (no torch): init, placement, mask, first-adapter rule, files, errors.

Spec: PROMPT-1 .. PROMPT-4.
"""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import minadapters as ma
from minadapters.context import ForwardState
from minadapters.errors import ConfigError
from minadapters.functional.prefix import combine_prompt, prompt_ids
from minadapters.ops import NumpyOps

D = 16


def make_model_dir(path, model_type="bert"):
    from minadapters.models import bert
    raw = dict(model_type=model_type, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=20, vocab_size=30, max_position_embeddings=40, type_vocab_size=2,
               pad_token_id=0 if model_type == "bert" else 1)
    rng = np.random.default_rng(0)
    shapes = bert.expected_shapes(bert.EncoderConfig.from_dict(raw))
    w = {k: (rng.standard_normal(s) * 0.2 + (1.0 if k.endswith("LayerNorm.weight") else 0.0)).astype(np.float32)
         for k, s in shapes.items()}
    os.makedirs(path, exist_ok=True)
    save_file(w, os.path.join(path, "model.safetensors"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(raw, f)
    return str(path)


def write_tokenizer(path):
    tokenizers = pytest.importorskip("tokenizers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(20)]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                                  special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(os.path.join(path, "tokenizer.json"))


@pytest.fixture(scope="module", params=["bert", "roberta"])
def model_dir(request, tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture
def model(model_dir):
    return ma.AutoModel.from_pretrained(model_dir, seed=0)


def inputs(B=3, T=5):
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 30, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, -2:] = 0
    ids[1, -2:] = 0
    return ids, mask


def prompt_of(model, name):
    return model.adapter_state_dict(name)[f"prompt_tuning.prompt_tunings.{name}.prompt_embedding.weight"]


# ---- PROMPT-1: initialisation --------------------------------------------------------------------
@pytest.mark.spec("PROMPT-1")
@pytest.mark.parametrize("n,P,expected", [(3, 7, [0, 1, 2, 0, 1, 2, 0]), (5, 3, [0, 1, 2]), (2, 2, [0, 1]),
                                          (1, 4, [0, 0, 0, 0])])
def test_prompt_ids_repeat_and_truncate(n, P, expected):
    assert prompt_ids(list(range(n)), P) == expected


@pytest.mark.spec("PROMPT-1")
def test_prompt_ids_empty():
    with pytest.raises(ValueError, match="zero tokens"):
        prompt_ids([], 3)


@pytest.mark.spec("PROMPT-1")
def test_random_uniform_init(model):
    model.add_adapter("p", ma.PromptTuningConfig(prompt_length=200))
    w = prompt_of(model, "p")
    assert w.shape == (200, D) and w.dtype == np.float32
    assert w.min() >= -0.5 and w.max() <= 0.5 and w.min() < -0.45 and w.max() > 0.45


@pytest.mark.spec("PROMPT-1")
def test_from_string_init_uses_model_dir_tokenizer(model_dir, tmp_path):
    m = ma.AutoModel.from_pretrained(model_dir)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        m.add_adapter("s", ma.PromptTuningConfig(prompt_length=4, prompt_init="from_string", prompt_init_text="w1"))
    assert "s" not in m.adapters_config
    write_tokenizer(tmp_path)
    m.tokenizer_name_or_path = str(tmp_path)
    m.add_adapter("s", ma.PromptTuningConfig(prompt_length=7, prompt_init="from_string", prompt_init_text="w1 w5"))
    ids = [2, 5, 9, 3, 2, 5, 9]                                      # [CLS] w1 w5 [SEP] repeated, cut to 7
    np.testing.assert_array_equal(prompt_of(m, "s"), m.params["embeddings.word_embeddings.weight"][ids])


@pytest.mark.spec("PROMPT-1")
def test_from_string_out_of_vocabulary(model_dir, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "big": 999}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    m = ma.AutoModel.from_pretrained(model_dir)
    m.tokenizer_name_or_path = str(tmp_path / "tokenizer.json")
    with pytest.raises(ConfigError, match="outside this model's vocabulary"):
        m.add_adapter("s", ma.PromptTuningConfig(prompt_length=2, prompt_init="from_string", prompt_init_text="big"))


# ---- PROMPT-2: placement and mask ----------------------------------------------------------------
@pytest.mark.spec("PROMPT-2")
def test_combine_placement_and_mask():
    rng = np.random.default_rng(0)
    prompt, x = rng.standard_normal((3, D)), rng.standard_normal((2, 5, D))
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    out, m = combine_prompt(prompt, x, mask, combine="prefix", ops=NumpyOps())
    np.testing.assert_array_equal(out[:, :3], np.broadcast_to(prompt, (2, 3, D)))
    np.testing.assert_array_equal(out[:, 3:], x)
    out, m2 = combine_prompt(prompt, x, mask, combine="prefix_after_bos", ops=NumpyOps())
    np.testing.assert_array_equal(out[:, 0], x[:, 0])
    np.testing.assert_array_equal(out[:, 1:4], np.broadcast_to(prompt, (2, 3, D)))
    np.testing.assert_array_equal(out[:, 4:], x[:, 1:])
    for mm in (m, m2):                                               # both modes: P ones in front
        np.testing.assert_array_equal(mm, np.concatenate([np.ones((2, 3), int), mask], axis=1))


@pytest.mark.spec("PROMPT-2")
def test_embedding_hook_sets_prompt_length(model):
    model.add_adapter("p", ma.PromptTuningConfig(prompt_length=4))
    fwd = ForwardState(setup=ma.Stack("p"))
    x = np.zeros((2, 5, D), np.float32)
    out, mask = model.model_level["prompt"].forward(x, np.ones((2, 5), np.int64), fwd)
    assert out.shape == (2, 9, D) and mask.shape == (2, 9) and fwd.prompt_tokens_length == 4


@pytest.mark.spec("PROMPT-2")
@pytest.mark.parametrize("combine", ["prefix", "prefix_after_bos"])
def test_model_output_length_and_padding_invariance(model, combine):
    ids, mask = inputs()
    model.add_adapter("p", ma.PromptTuningConfig(prompt_length=3, combine=combine), set_active=True)
    out = model(input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (3, 8, D)
    ids2 = ids.copy()
    ids2[1, -2:] = 7                                                 # padded tokens never reach real ones
    out2 = model(input_ids=ids2, attention_mask=mask)
    keep = 3 + 3 if combine == "prefix" else 1 + 3 + 2
    np.testing.assert_allclose(out2.last_hidden_state[1, :keep], out.last_hidden_state[1, :keep], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.spec("PROMPT-2")
def test_only_first_adapter_counts(model):
    ids, mask = inputs()
    model.add_adapter("p", ma.PromptTuningConfig(prompt_length=3))
    model.add_adapter("bn", "seq_bn")
    model.active_adapters = ma.Stack("bn", "p")
    assert model(input_ids=ids, attention_mask=mask).last_hidden_state.shape[1] == 5
    model.active_adapters = ma.Stack("p", "bn")
    assert model(input_ids=ids, attention_mask=mask).last_hidden_state.shape[1] == 8
    model.active_adapters = None
    assert model(input_ids=ids, attention_mask=mask).last_hidden_state.shape[1] == 5


# ---- PROMPT-4: files -----------------------------------------------------------------------------
@pytest.mark.spec("PROMPT-4")
def test_save_load_and_load_as_keep_prompt(model, tmp_path):
    ids, mask = inputs()
    model.add_adapter("p", ma.PromptTuningConfig(prompt_length=3), set_active=True)
    exp = model(input_ids=ids, attention_mask=mask).last_hidden_state
    model.save_adapter(str(tmp_path / "p"), "p")
    assert model.load_adapter(str(tmp_path / "p"), load_as="renamed") == "renamed"
    np.testing.assert_array_equal(prompt_of(model, "renamed"), prompt_of(model, "p"))
    model.active_adapters = "renamed"
    np.testing.assert_array_equal(model(input_ids=ids, attention_mask=mask).last_hidden_state, exp)
    model.delete_adapter("p")
    assert "p" not in model.model_level["prompt"].modules


def test_seeded_init(model_dir):
    cfg = ma.PromptTuningConfig(prompt_length=3, init_weights_seed=5)
    a, b = ma.AutoModel.from_pretrained(model_dir, seed=1), ma.AutoModel.from_pretrained(model_dir, seed=2)
    a.add_adapter("p", cfg)
    b.add_adapter("p", cfg)
    np.testing.assert_array_equal(prompt_of(a, "p"), prompt_of(b, "p"))
