"""``minadapters train``: rows in, a trained adapter + head out (AdapterHub layout). Spec: TRAIN-CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minadapters as ma
from minadapters.cli import main
from minadapters.io.safetensors_io import load_safetensors, save_safetensors
from minadapters.tiny import write_tiny_model
from minadapters.training.fit import read_rows, split_rows

WORDS = "the a an of to and in is it that for on with as was be by this are or from at".split()


def keyword_task(path, n=120, seed=0):
    """Label 'pos' when the text holds 'hello', 'neg' when it holds 'world' (both never together)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            ws = list(rng.choice(WORDS, rng.integers(3, 8)))
            lab = "pos" if i % 2 == 0 else "neg"
            ws.insert(int(rng.integers(0, len(ws))), "hello" if lab == "pos" else "world")
            f.write(json.dumps({"text": " ".join(ws), "label": lab}) + "\n")
    return path


def sharp_tiny_model(d):
    """The tiny random BERT with its weights scaled up (the default 0.05 std makes every [CLS] nearly alike)."""
    write_tiny_model(d)
    path = os.path.join(d, "model.safetensors")
    w = load_safetensors(path)
    save_safetensors(path, {k: (v if "LayerNorm" in k else v * 8).astype(np.float32) for k, v in w.items()})
    return d


@pytest.mark.spec("TRAIN-CLI")
def test_train_drives_the_loss_down_and_saves_a_loadable_adapter(tmp_path, capsys):
    model_dir = sharp_tiny_model(str(tmp_path / "m"))
    data = keyword_task(str(tmp_path / "rows.jsonl"))
    out_dir = str(tmp_path / "trained")
    assert main(["train", "--model", model_dir, "--data", data, "--config", "lora[r=8,alpha=16]", "--epochs", "10",
                 "--lr", "1e-2", "--output", out_dir, "--batch-size", "16"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "step 60/60" in captured.err and "examples/s" in captured.err, captured.err[-200:]
    assert result["last_loss"] < 0.5 * result["first_loss"], result
    assert result["eval_accuracy"] >= 0.75, result
    assert os.path.isfile(os.path.join(out_dir, "adapter_config.json"))
    assert os.path.isfile(os.path.join(out_dir, "head_config.json"))
    model = ma.AutoAdapterModel.from_pretrained(model_dir)
    name = model.load_adapter(out_dir)
    model.set_active_adapters(name)
    tok = ma.AutoTokenizer.from_pretrained(model_dir)
    rows = read_rows(data)
    _, held = split_rows(rows, 0.2, 0)
    logits = model(**tok([t for t, _ in held], padding=True)).logits
    pred = [model.get_labels()[i] for i in logits.argmax(-1)]
    assert np.mean([p == y for p, (_, y) in zip(pred, held)]) == pytest.approx(result["eval_accuracy"])


@pytest.mark.spec("TRAIN-CLI")
def test_train_rejects_bad_data(tmp_path, capsys):
    model_dir = write_tiny_model(str(tmp_path / "m"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b", "label": 1}\n')
    assert main(["train", "--model", model_dir, "--data", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    one = tmp_path / "one.csv"
    one.write_text("text,label\nhello,x\nworld,x\n")
    assert main(["train", "--model", model_dir, "--data", str(one)]) == 2
    assert "one label" in capsys.readouterr().err
    assert main(["train", "--model", model_dir, "--data", str(one), "--head", "tagging"]) == 2
    assert "classification" in capsys.readouterr().err


def test_rows_from_csv_and_split(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("text,label\n" + "".join(f"t{i},{i % 3}\n" for i in range(10)))
    rows = read_rows(str(p))
    assert rows[0] == ("t0", "0") and len(rows) == 10
    train, held = split_rows(rows, 0.2, 1)
    assert len(held) == 2 and sorted(train + held) == sorted(rows)
