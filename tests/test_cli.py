"""The minadapters command line. Spec: API-3, API-4."""
import pytest

import minadapters as ma
from minadapters.cli import main, parse_setup


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "run" in out and "summary" in out


def test_tiny_model_and_run(tmp_path, capsys):
    d = tmp_path / "m"
    assert main(["tiny-model", str(d)]) == 0
    assert (d / "demo_adapter" / "adapter_config.json").exists()
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_adapter"), "hello adapters", "the model"]) == 0
    out = capsys.readouterr().out
    assert "active: Stack('demo')" in out and "last_hidden_state: (2, " in out


def test_run_with_setup_and_errors(tmp_path, capsys):
    d = tmp_path / "m"
    main(["tiny-model", str(d)])
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_adapter"), "--setup", "Parallel(demo, demo)",
                 "hello"]) == 0
    assert "last_hidden_state: (2, " in capsys.readouterr().out
    assert main(["run", "--model", str(d), "--setup", "Stack(nope)", "hello"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.spec("API-4")
def test_parse_setup():
    assert parse_setup("Stack(a, Split(b, c, splits=3))") == ma.Stack("a", ma.Split("b", "c", splits=3))
    assert parse_setup("BatchSplit('a', b, batch_sizes=[1, 2])") == ma.BatchSplit("a", "b", batch_sizes=[1, 2])
    for bad in ["__import__('os').system('true')", "Stack(a, open('x'))", "Stack(a, splits=f(1))", "Stack(a"]:
        with pytest.raises(ValueError):
            parse_setup(bad)


@pytest.mark.spec("API-3")
def test_summary_presets(capsys):
    assert main(["summary", "--arch", "bert-base-uncased", "--config", "seq_bn", "lora"]) == 0
    out = capsys.readouterr().out
    assert "894,528" in out            # seq_bn on bert-base: 12 layers × (768·48 + 48 + 48·768 + 768)
    assert "294,912" in out            # lora r=8 on q, v: 12 × 2 × (8·768 + 768·8)
    assert main(["summary", "--arch", "nope", "--config", "seq_bn"]) == 2


@pytest.mark.spec("ENCDEC-5")
@pytest.mark.parametrize("arch", ["bart", "t5"])
def test_tiny_encdec_run_prints_generated_text(arch, tmp_path, capsys):
    """`minadapters run` on an encoder-decoder (random tiny BART, T5) generates greedily and prints the decoded text
    per input; the text is the tokenizer's decoding of model.generate's tokens (the demo adapter active)."""
    d = tmp_path / arch
    assert main(["tiny-model", str(d), "--arch", arch, "--adapter", "seq_bn[cross_adapter=True]|lora[r=4]"]) == 0
    assert main(["run", "--model", str(d), "--adapter", str(d / "demo_adapter"), "--max-new-tokens", "7",
                 "hello adapters world", "the model"]) == 0
    out = capsys.readouterr().out
    assert f"({arch}, 2+2 layers" in out and "generated: (2, 8)" in out, out
    m = ma.AutoModel.from_pretrained(d)
    m.load_adapter(str(d / "demo_adapter"), set_active=True)
    tok = ma.AutoTokenizer.from_pretrained(d)
    enc = tok(["hello adapters world", "the model"], padding=True)
    ids = m.generate(enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=7)
    decoded = [tok.decode(row.tolist(), skip_special_tokens=True) for row in ids]
    assert decoded[0].strip(), "the demo should print some words"
    for b, text in enumerate(decoded):
        assert f"[{b}] " in out and f"-> {text!r}" in out, (text, out)
