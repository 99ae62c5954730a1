"""AutoTokenizer: NumPy ids / masks from tokenizer.json, padding to longest (never the file's fixed padding),
truncation, pairs, and ``model(**tok(texts))``. Spec: TOK-1."""
import numpy as np
import pytest
from tokenizers import Tokenizer as RawTokenizer

import minadapters as ma
from minadapters.tiny import write_tiny_model


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = write_tiny_model(str(tmp_path_factory.mktemp("tokbert")), seed=0)
    raw = RawTokenizer.from_file(f"{d}/tokenizer.json")       # like all-MiniLM-L6-v2: pad every input to 16
    raw.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    raw.enable_truncation(16)
    raw.save(f"{d}/tokenizer.json")
    return d


TEXTS = ["hello adapters", "a small random model with more words", "the"]


def _raw_ids(d, text, pair=None):
    raw = RawTokenizer.from_file(f"{d}/tokenizer.json")
    raw.no_padding()
    raw.no_truncation()
    return raw.encode(text, pair).ids


@pytest.mark.spec("TOK-1")
def test_pads_to_longest_with_the_tokenizers_own_mask(bert_dir):
    tok = ma.AutoTokenizer.from_pretrained(bert_dir)
    enc = tok(TEXTS)
    assert isinstance(enc, dict) and set(enc) == {"input_ids", "token_type_ids", "attention_mask"}
    want = [_raw_ids(bert_dir, t) for t in TEXTS]
    T = max(map(len, want))
    assert enc["input_ids"].shape == (3, T) and enc["input_ids"].dtype == np.int64, enc["input_ids"].shape
    for b, ids in enumerate(want):
        assert enc.input_ids[b, :len(ids)].tolist() == ids
        assert enc.attention_mask[b].tolist() == [1] * len(ids) + [0] * (T - len(ids))
        assert (enc.input_ids[b, len(ids):] == tok.pad_token_id).all()
    assert not enc.token_type_ids.any()
    single = tok("hello adapters")
    assert single["input_ids"].shape == (1, 4)


@pytest.mark.spec("TOK-1")
def test_pairs_truncation_and_padding_modes(bert_dir):
    tok = ma.AutoTokenizer.from_pretrained(bert_dir)
    a, b = ["hello adapters", "the model"], ["a small random model", "text"]
    enc = tok(a, text_pair=b)
    same = tok(list(zip(a, b)))
    for k in enc:
        np.testing.assert_array_equal(enc[k], same[k], err_msg=k)
    ids0 = _raw_ids(bert_dir, a[0], b[0])
    assert enc.input_ids[0, :len(ids0)].tolist() == ids0
    first = len(_raw_ids(bert_dir, a[0]))
    assert enc.token_type_ids[0, :len(ids0)].tolist() == [0] * first + [1] * (len(ids0) - first)
    short = tok(TEXTS, max_length=5)                      # max_length alone truncates (transformers)
    assert short.input_ids.shape == (3, 5) and short.attention_mask.sum(1).tolist() == [4, 5, 3]
    assert short.input_ids[1, -1] == tok.sep_token_id     # special tokens kept when truncating
    only2 = tok(a, text_pair=b, truncation="only_second", max_length=6)
    assert only2.input_ids[0, :4].tolist() == _raw_ids(bert_dir, a[0])[:4]
    fixed = tok(TEXTS, padding="max_length", max_length=12)
    assert fixed.input_ids.shape == (3, 12)
    with pytest.raises(ValueError, match="different lengths"):
        tok(TEXTS, padding=False)
    with pytest.raises(ValueError, match="return_tensors='pt'.*NumPy"):
        tok(TEXTS, return_tensors="pt")
    with pytest.raises(TypeError, match=r"text\[1\] is int"):
        tok(["a", 3])
    with pytest.raises(ValueError, match="truncation='sideways'"):
        tok(TEXTS, truncation="sideways")


@pytest.mark.spec("TOK-1")
def test_model_call_with_tokenizer_output_ignores_pads(bert_dir):
    tok = ma.AutoTokenizer.from_pretrained(bert_dir)
    model = ma.AutoModel.from_pretrained(bert_dir)
    out = model(**tok(TEXTS))
    for b, text in enumerate(TEXTS):
        ids = np.array([_raw_ids(bert_dir, text)])
        alone = model(input_ids=ids)
        n = ids.shape[1]
        np.testing.assert_allclose(out.last_hidden_state[b, :n], alone.last_hidden_state[0], rtol=1e-5, atol=1e-5,
                                   err_msg=f"text {text!r}: padded batch differs from the text alone")
        np.testing.assert_allclose(out.pooler_output[b], alone.pooler_output[0], rtol=1e-5, atol=1e-5)


def test_roberta_has_no_token_type_ids_and_left_padding(tmp_path):
    d = write_tiny_model(str(tmp_path / "rob"), model_type="roberta")
    tok = ma.AutoTokenizer.from_pretrained(d)
    enc = tok(TEXTS)
    assert set(enc) == {"input_ids", "attention_mask"}
    assert tok.pad_token == "<pad>" and (enc.input_ids[enc.attention_mask == 0] == 1).all()
    left = ma.AutoTokenizer.from_pretrained(d, padding_side="left")(TEXTS)
    assert left.attention_mask[2].tolist()[-3:] == [1, 1, 1] and left.attention_mask[2, 0] == 0
    assert "model_max_length" in repr(tok) and len(tok) == tok.vocab_size
    assert tok.decode(enc.input_ids[0]) == "hello adapters"
