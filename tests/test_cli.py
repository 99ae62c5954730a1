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
