"""A short run of the fuzz campaign inside the test suite (CI also runs the bounded campaign). Spec: IO-17."""
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.mark.spec("IO-17")
def test_fuzz_campaign_smoke(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MINADAPTERS_FUZZ_ARTIFACTS=str(tmp_path))
    env.pop("MINADAPTERS_FUZZ_LONG", None)
    r = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_run.py"), "--per-target", "25", "--kill-trials", "2",
                        "--seed", "5"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    rows = re.findall(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+0\s+0\s+0\s+0\s+0\s+0\s", out, re.M)
    names = {name for name, *_ in rows}
    for want in ("load_adapter[torch]", "load_adapter[safetensors]", "adapter_config.json",
                 "adapter_fusion_config.json", "adapter_setup.json", "from_pretrained[config]",
                 "from_pretrained[weights]", "from_pretrained[index]", "config_string", "composition", "forward[bert]", "forward[gpt2]"):
        assert want in names, f"target {want} missing or has failures:\n{out[-4000:]}"
    for name, tried, accepted, rejected in rows:
        assert int(tried) == 25 == int(accepted) + int(rejected), (name, tried, accepted, rejected)
    kills = re.findall(r"^(adapter\[\S+\]|fusion|setup)\s+2\s+\d+\s+\d+\s+\d+\s+0\s+0", out, re.M)
    assert len(kills) == 5, f"kill -9 rows with 0 mixed / 0 leftover: {kills}\n{out[-2000:]}"
    assert os.listdir(tmp_path) == [], "no failing inputs should have been saved"


def test_fuzz_campaign_counts_a_crash_and_an_undocumented_error(tmp_path, monkeypatch):
    """The runner itself: a target that segfaults / raises a stray type is counted, not hidden."""
    sys.path.insert(0, HERE)
    import fuzz_run
    import fuzz_targets

    class Bad(fuzz_targets.Target):
        name = "bad"
        seeds = [b"x"]

        def setup(self, workdir):
            pass

        def generate(self, rng, index):
            return b"x" * (index + 1)

        def run(self, data):
            if len(data) % 3 == 0:
                os.kill(os.getpid(), 11)
            if len(data) % 3 == 1:
                raise AttributeError("stray")
            raise fuzz_targets.AdapterError("fine")
    counts, rejected, undoc, _ = fuzz_run.run_target(Bad(), 30, 1, 20.0, str(tmp_path))
    assert counts["tried"] == 30
    assert counts["crash"] + counts["undocumented"] + counts["rejected"] == 30
    assert (counts["crash"], counts["undocumented"], counts["rejected"]) == (10, 10, 10), counts
    assert undoc["AttributeError"] == 10
    assert any(f.startswith("crash-bad") for f in os.listdir(tmp_path))
