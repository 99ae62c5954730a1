"""`minadapters run`: masks from the tokenizer (a tokenizer.json with fixed padding must not make pads attended),
Parallel channels, fusion directories, adapters from config strings; readable bench rows. Spec: API-4."""
import numpy as np
import pytest
from tokenizers import Tokenizer as RawTokenizer

import minadapters as ma
from minadapters.cli import main
from minadapters.tiny import write_demo_adapter, write_tiny_model

TEXTS = ["hello adapters", "a small random model with more words"]


@pytest.fixture(scope="module")
def fixed_pad_dir(tmp_path_factory):
    """A tiny BERT whose tokenizer.json pads every input to 24 tokens (like all-MiniLM-L6-v2's, to 128)."""
    d = write_tiny_model(str(tmp_path_factory.mktemp("fixedpad")), seed=5)
    write_demo_adapter(d, config="seq_bn", seed=6)
    raw = RawTokenizer.from_file(f"{d}/tokenizer.json")
    raw.enable_padding(length=24, pad_id=0, pad_token="[PAD]")
    raw.save(f"{d}/tokenizer.json")
    return d


def _alone(model, d, text):
    raw = RawTokenizer.from_file(f"{d}/tokenizer.json")
    raw.no_padding()
    return model(input_ids=np.array([raw.encode(text).ids]))


@pytest.mark.spec("API-4")
def test_run_masks_padding_and_matches_unpadded_forward(fixed_pad_dir, tmp_path, capsys):
    out = tmp_path / "run.npz"
    assert main(["run", "--model", fixed_pad_dir, "--output", str(out), *TEXTS]) == 0
    printed = capsys.readouterr().out
    got = np.load(out)
    lengths = got["attention_mask"].sum(1)
    assert got["input_ids"].shape[1] == lengths.max() < 24, "run must pad to the longest input, not to 24"
    model = ma.AutoModel.from_pretrained(fixed_pad_dir)
    for b, text in enumerate(TEXTS):
        want = _alone(model, fixed_pad_dir, text)
        n = int(lengths[b])
        np.testing.assert_allclose(got["last_hidden_state"][b, :n], want.last_hidden_state[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["pooler_output"][b], want.pooler_output[0], rtol=1e-5, atol=1e-5)
        head = " ".join(f"{v:+.4f}" for v in want.pooler_output[0, :6])
        assert head in printed, f"printed vector for {text!r} should start {head}:\n{printed}"


@pytest.mark.spec("API-4")
def test_run_parallel_prints_every_channel(fixed_pad_dir, tmp_path, capsys):
    out = tmp_path / "par.npz"
    assert main(["run", "--model", fixed_pad_dir, "--adapter", f"{fixed_pad_dir}/demo_adapter", "--add",
                 "x=double_seq_bn", "--setup", "Parallel(demo, x)", "--output", str(out), *TEXTS]) == 0
    printed = capsys.readouterr().out
    assert "demo:\n" in printed and "x:\n" in printed, printed
    pooled = np.load(out)["pooler_output"]
    assert pooled.shape[0] == 4
    model = ma.AutoModel.from_pretrained(fixed_pad_dir)
    model.load_adapter(f"{fixed_pad_dir}/demo_adapter", set_active=True)
    for b, text in enumerate(TEXTS):                   # channel 0 = demo alone
        np.testing.assert_allclose(pooled[b], _alone(model, fixed_pad_dir, text).pooler_output[0], atol=1e-5)
        head = " ".join(f"{v:+.4f}" for v in pooled[2 + b, :6])
        assert printed.index(head) > printed.index("x:\n")
    assert main(["run", "--model", fixed_pad_dir, "--add", "bad", "hello"]) == 2
    assert "NAME=CONFIG" in capsys.readouterr().err


@pytest.mark.spec("API-4")
def test_run_loads_a_fusion_directory(tmp_path, capsys):
    d = write_tiny_model(str(tmp_path / "m"), seed=7)
    m = ma.AutoModel.from_pretrained(d, seed=1)
    for n in ("f1", "f2"):
        m.add_adapter(n, config="seq_bn")
        m.save_adapter(str(tmp_path / n), n)
    m.add_adapter_fusion(["f1", "f2"])
    m.save_adapter_fusion(str(tmp_path / "fusion"), ["f1", "f2"])
    m.set_active_adapters(ma.Fuse("f1", "f2"))
    out = tmp_path / "fuse.npz"
    assert main(["run", "--model", d, "--adapter", str(tmp_path / "f1"), "--adapter", str(tmp_path / "f2"),
                 "--fusion", str(tmp_path / "fusion"), "--output", str(out), *TEXTS]) == 0
    printed = capsys.readouterr().out
    assert "fusions: f1,f2; active: Fuse('f1', 'f2'" in printed, printed
    enc = ma.AutoTokenizer.from_pretrained(d)(TEXTS)
    np.testing.assert_allclose(np.load(out)["pooler_output"], m(**enc).pooler_output, rtol=1e-6, atol=1e-6)


def test_bench_rows_name_both_sides():
    from minadapters.bench import _fmt
    row = _fmt("[8x128] seq_bn", {"a": 0.012, "b": 0.005, "ratio": 0.417, "min": 0.4, "max": 0.5, "n": 3},
               "numpy", "native")
    assert row.startswith("[8x128] seq_bn") and "| A numpy 12.00 ms | B native 5.00 ms | B/A 0.417" in row, row


@pytest.mark.spec("API-3")
def test_summary_model_dir_and_adapter_summary_agree_with_a_position_ids_buffer(tmp_path, capsys):
    from minadapters.io.safetensors_io import load_safetensors, save_safetensors
    d = write_tiny_model(str(tmp_path / "m"))
    w = load_safetensors(f"{d}/model.safetensors")
    w["embeddings.position_ids"] = np.arange(66, dtype=np.int64)[None]     # as in all-MiniLM-L6-v2's file
    save_safetensors(f"{d}/model.safetensors", w)
    m = ma.AutoModel.from_pretrained(d)
    m.add_adapter("0:seq_bn", config="seq_bn")
    full = [r for r in m.adapter_summary(as_dict=True) if r["name"] == "Full model"][0]["#param"]
    assert full == sum(v.size for k, v in w.items() if k != "embeddings.position_ids")
    assert main(["summary", "--model", d, "--config", "seq_bn"]) == 0
    assert f"{full:,}" in capsys.readouterr().out
