"""minadapters.bench runs end to end on a tiny model and prints interleaved ratio rows."""
import pytest

import minadapters as ma

from minadapters import bench


@pytest.mark.native
def test_bench_quick_tiny(native, capsys):
    assert bench.main(["--quick", "--hidden", "64", "--layers", "1", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert "sgemm 1024x768x768" in out and "sgemm 1024x768x3072" in out
    assert "[8x128] no adapter" in out and "[8x128] seq_bn" in out and "Parallel(seq_bn, seq_bn)" in out
    for row in ("prefix_tuning", "Fuse(3 x seq_bn)", "BatchSplit(4 x lora r=8)", "seq_bn / no adapter",
                "Fuse(3 x seq_bn) / no adapter", "BatchSplit(4 x lora) / 1 lora"):
        assert f"[8x128] {row} " in out, row
    assert out.count("pairs)") >= 6


def test_pairs_statistics():
    r = bench.pairs(lambda: None, lambda: None, 4, warmup=0)
    assert r["n"] == 4 and r["min"] <= r["ratio"] <= r["max"]


@pytest.mark.native
def test_bench_new_rows_quick_native_only(native, capsys):
    from minadapters import bench_rows
    assert bench_rows.main(["--quick", "--rows", "decode,batchsplit,long", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("[decode gpt2 b1]", "[decode gpt2 b8]", "[decode llama b1]", "[decode llama b8]",
                "[batchsplit 4x8] BatchSplit(4 x lora) / 1", "[batchsplit 8x8] BatchSplit(8 x lora) / 1",
                "[batchsplit 4x8] BatchSplit(4 x bottleneck) / 1", "[long 2x64] no adapter", "[long 2x64] lora",
                "[long 1x128] no adapter", "copy bandwidth"):
        assert row in out, row
    assert "native/roofline" in out and "sgemm" not in out          # only the rows asked for


def test_rows_are_checked():
    assert bench.parse_rows("decode, long") == ["decode", "long"]
    assert bench.parse_rows("all") == ["gemm", "models", "decode", "batchsplit", "long"]
    with pytest.raises(ValueError, match=r"unknown row\(s\) \['decod'\]; allowed: gemm, models, decode"):
        bench.parse_rows("decod")


def test_random_decoders_load_with_their_weight_bytes(tmp_path):
    from minadapters import bench_rows
    for family in ("gpt2", "llama"):
        raw = bench_rows.write_random_decoder(str(tmp_path / family), family, quick=True)
        m = ma.AutoModel.from_pretrained(str(tmp_path / family))
        assert m.model_type == family
        D, V, L = raw.get("n_embd", raw.get("hidden_size")), raw["vocab_size"], raw.get("n_layer", 2)
        nbytes = bench_rows.weight_bytes_per_token(str(tmp_path / family))
        assert nbytes > 4 * (V * D + L * 4 * D * D)                   # LM head + at least the attention weights
