"""minadapters.bench runs end to end on a tiny model and prints interleaved ratio rows."""
import pytest

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
