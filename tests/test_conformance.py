"""Run the conformance suite on our own driver (minadapters, NumPy float32) against the float64 reference,
with the derandomized 'ci' hypothesis profile, in a subprocess (its own pytest session and plugin)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("driver", ["minadapters"])
def test_conformance_suite(driver):
    env = dict(os.environ, MINADAPTERS_HYPOTHESIS_PROFILE="ci")
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "conformance"), f"--driver={driver}",
           "--reference=reference", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert "conformance summary" in out, f"the suite printed no summary table:\n{out[-4000:]}"
    assert proc.returncode == 0, f"conformance suite with --driver={driver} failed (rc={proc.returncode}):\n{out[-8000:]}"
