"""`minadapters run` with prediction heads: one line per input and per head. Spec: HEAD-12."""
import numpy as np
import pytest

import minadapters as ma
from minadapters.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_heads") / "m"
    assert main(["tiny-model", str(d)]) == 0
    m = ma.AutoAdapterModel.from_pretrained(str(d))
    m.load_adapter(str(d / "demo_adapter"))
    m.add_classification_head("demo", num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    m.heads["demo"].params["4.bias"] = np.array([0.0, 0.0, 5.0], np.float32)    # "pos" clearly on top
    m.add_adapter("b", config="seq_bn|lora[r=4]")    # the demo adapter's methods (Parallel needs both)
    m.add_tagging_head("b", num_labels=2, id2label={0: "O", 1: "X"})
    m.heads["b"].params["1.bias"] = np.array([0.0, 9.0], np.float32)
    m.save_adapter(str(d / "demo_h"), "demo")
    m.save_adapter(str(d / "b_h"), "b")
    m.add_masked_lm_head("mlm")
    m.save_head(str(d / "mlm"), "mlm")
    return d


@pytest.mark.spec("HEAD-12")
def test_run_prints_labels_per_input_and_head(saved, capsys, tmp_path):
    d = saved
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_h"), "hello adapters", "the model"]) == 0
    out = capsys.readouterr().out
    assert "active head: 'demo'" in out
    lines = [l for l in out.splitlines() if l.startswith("  [")]
    assert len(lines) == 2 and all(": pos 0.9" in l for l in lines)
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_h"), "--adapter", str(d / "b_h"),
                 "--setup", "Parallel(demo, b)", "--output", str(tmp_path / "o.npz"), "hello adapters",
                 "the model"]) == 0
    out = capsys.readouterr().out
    assert "head 'demo' (classification):" in out and "head 'b' (tagging):" in out
    assert "hello/X" in out and len([l for l in out.splitlines() if l.startswith("  [")]) == 4
    saved_arrays = np.load(tmp_path / "o.npz")
    assert saved_arrays["head0_logits"].shape == (2, 3) and saved_arrays["head1_logits"].shape[::2] == (2, 2)
    assert main(["run", "--model", str(d), "--head", str(d / "mlm"), "hello adapters"]) == 0
    out = capsys.readouterr().out
    assert "head 'mlm' (masked_lm):" in out and "@3: " in out


def test_run_without_heads_and_embed_ignore_heads(saved, capsys):
    d = saved
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_adapter"), "hello"]) == 0
    assert "last_hidden_state: (1, " in capsys.readouterr().out
    assert main(["embed", "--model", str(d), "--adapter", str(d / "demo_h"), "hello"]) == 0
    assert '"embedding": [' in capsys.readouterr().out
