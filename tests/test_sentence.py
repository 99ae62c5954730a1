"""Sentence embeddings: pooling modes and normalisation (hand-computed), model.encode batching / padding
invariance, sentence-transformers directories, and `minadapters embed`. Spec: ST-1, ST-2."""
import json

import numpy as np
import pytest

import minadapters as ma
from minadapters.cli import main
from minadapters.sentence import load_sentence_config, normalize, pool, write_sentence_config
from minadapters.tiny import write_tiny_model

TEXTS = ["hello adapters", "a small random model with more words", "the", "some text in a layer", "world"]


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    d = write_tiny_model(str(tmp_path_factory.mktemp("st")), seed=4)
    return write_sentence_config(d, pooling=("mean_tokens",), normalize=True)


@pytest.mark.spec("ST-1")
def test_pool_modes_by_hand():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [0, 1, 1, 1]])              # right and left padding
    for b in range(2):
        rows = [h[b, t] for t in range(4) if mask[b, t]]
        pos = [t + 1 for t in range(4) if mask[b, t]]
        want = {
            "cls_token": h[b, 0],
            "max_tokens": np.max(rows, axis=0),
            "mean_tokens": np.sum(rows, axis=0) / len(rows),
            "mean_sqrt_len_tokens": np.sum(rows, axis=0) / np.sqrt(len(rows)),
            "weightedmean_tokens": np.sum([p * r for p, r in zip(pos, rows)], axis=0) / sum(pos),
            "lasttoken": rows[-1],
        }
        for mode, w in want.items():
            np.testing.assert_allclose(pool(h, mask, (mode,))[b], w, rtol=1e-6, atol=1e-6, err_msg=f"{mode}, row {b}")
        both = pool(h, mask, ("cls_token", "mean_tokens"))
        assert both.shape == (2, 6)
        np.testing.assert_allclose(both[b, 3:], want["mean_tokens"], rtol=1e-6)


@pytest.mark.spec("ST-2")
def test_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(normalize(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.spec("ST-1")
def test_encode_equals_pooled_forward_of_each_text_alone(st_dir):
    model = ma.AutoModel.from_pretrained(st_dir)
    tok = ma.AutoTokenizer.from_pretrained(st_dir)
    emb = model.encode(TEXTS, batch_size=2)
    assert emb.shape == (len(TEXTS), model.hidden_size) and emb.dtype == np.float32
    for i, text in enumerate(TEXTS):
        enc = tok([text])
        h = model(**enc).last_hidden_state[0]                  # (T, D), no padding at all
        want = h.mean(axis=0)
        want = want / np.linalg.norm(want)
        np.testing.assert_allclose(emb[i], want, rtol=1e-5, atol=1e-6, err_msg=f"text {i} {text!r}")
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=len(TEXTS)), emb, rtol=1e-5, atol=1e-6)
    one = model.encode("hello adapters")
    assert one.shape == (model.hidden_size,)
    np.testing.assert_allclose(one, emb[0], rtol=1e-5, atol=1e-6)


def test_encode_config_errors_and_plain_dirs(tmp_path):
    plain = write_tiny_model(str(tmp_path / "plain"))
    m = ma.AutoModel.from_pretrained(plain)
    with pytest.warns(UserWarning, match="no modules.json"):
        e = m.encode(TEXTS[:2])
    assert not np.allclose(np.linalg.norm(e, axis=1), 1.0)
    e2 = m.encode(TEXTS[:2], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(e2, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="batch_size=0"):
        m.encode(TEXTS, batch_size=0)
    with pytest.raises(TypeError, match=r"sentences\[1\] is int"):
        m.encode(["a", 1])
    d = write_sentence_config(str(tmp_path / "plain"), pooling=("cls_token",), normalize=False, max_seq_length=4)
    cfg = load_sentence_config(d)
    assert cfg.pooling == ("cls_token",) and not cfg.normalize and cfg.max_seq_length == 4
    with open(f"{d}/modules.json") as f:
        mods = json.load(f)
    mods.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    with open(f"{d}/modules.json", "w") as f:
        json.dump(mods, f)
    with pytest.raises(ma.ConfigError, match="Dense.*not supported"):
        load_sentence_config(d)


def test_embed_cli_jsonl_npy_and_progress(st_dir, tmp_path, capsys):
    model = ma.AutoModel.from_pretrained(st_dir)
    want = model.encode(TEXTS)
    assert main(["embed", "--model", st_dir, *TEXTS]) == 0
    cap = capsys.readouterr()
    rows = [json.loads(line) for line in cap.out.splitlines()]
    assert [r["text"] for r in rows] == TEXTS and "embedding" not in cap.err
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), want, rtol=1e-6, atol=1e-7)
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(TEXTS * 3) + "\n")
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", st_dir, "--input", str(inp), "--batch-size", "4", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "embedding 15/15 [" in err and "saved (15, 32)" in err, err
    np.testing.assert_allclose(np.load(out), np.concatenate([want] * 3), rtol=1e-5, atol=1e-6)
    assert main(["embed", "--model", st_dir, "--output", str(tmp_path / "x.csv"), "a"]) == 2
    assert main(["embed", "--model", st_dir]) == 2
    assert "no texts" in capsys.readouterr().err
