"""Run the conformance suite in subprocesses (own pytest session and plugin, derandomized 'ci' profile):
on our own driver against the float64 reference, on the toy LoRA-only example driver (a partial driver must
run clean: declined draws are skips with the driver's reasons, never errors), and on a wrong toy whose failure
report must be short, name the outcome in ``-rf`` and turn into an expected failure by the driver's name."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = "conformance.examples.numpy_lora_driver:make_driver"
WRONG = "tests.conformance_helpers.toy_drivers:make_wrong_scaling"
PARTIAL = "tests.conformance_helpers.toy_drivers:make_partial"


def _suite(*args, timeout=900):
    env = dict(os.environ, MINADAPTERS_HYPOTHESIS_PROFILE="ci", OMP_NUM_THREADS="1", COLUMNS="400")
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "conformance"), "-p", "no:randomly",
           "-p", "no:cacheprovider", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def _count(out, word):
    m = re.search(rf"(\d+) {word}", out.splitlines()[-1] if out.strip() else "")
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("driver", ["minadapters"])
def test_conformance_suite(driver):
    rc, out = _suite(f"--driver={driver}", "--reference=reference", "-q")
    assert "conformance summary" in out, f"the suite printed no summary table:\n{out[-4000:]}"
    failed = "\n".join(ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR", "XPASS")))
    assert rc == 0, f"conformance suite with --driver={driver} failed (rc={rc}):\n{failed}\n{out[-3000:]}"


@pytest.mark.parametrize("driver", [TOY, PARTIAL])
def test_partial_example_driver_runs_clean(driver):
    """Only BERT + plain LoRA + Stack-of-one: passes what it declares, declines the rest with its reasons."""
    rc, out = _suite(f"--driver={driver}", "-q", "-rs")
    assert rc == 0, f"the example driver {driver} did not run clean (rc={rc}):\n{out[-6000:]}"
    assert _count(out, "passed") >= 10, f"too few checks ran on {driver}:\n{out[-3000:]}"
    assert "error" not in out.splitlines()[-1], out[-3000:]
    assert "declined: gated LoRA (use_gating=True) is not implemented in the toy" in out, out[-6000:]
    table = out[out.index("conformance summary"):]
    head = next(line for line in table.splitlines() if line.startswith("method"))
    assert "declined" in head.split(), f"the summary has no declined column: {head!r}"
    rows = [line.split() for line in table.splitlines() if line.startswith("lora ")]
    rows = [r for r in rows if len(r) == 14]      # 2 labels, examples, declined, 10 outcomes
    assert rows and all(int(r[2]) + int(r[3]) > 0 or sum(map(int, r[4:])) > 0 for r in rows), \
        f"summary rows without draws shown:\n{table[:3000]}"
    assert not any(line.startswith("bottleneck ") for line in table.splitlines()), \
        f"rows of a method the driver lacks are shown:\n{table[:3000]}"


def test_wrong_driver_fails_briefly_and_expected_failures_match_driver_name(tmp_path):
    sel = ["-k", "test_single_adapter and bert-lora"]
    rc, out = _suite(f"--driver={WRONG}", "-q", "-rf", *sel)
    assert rc == 1 and _count(out, "failed") == 1, f"the wrong toy should fail once (rc={rc}):\n{out[-5000:]}"
    line = next((x for x in out.splitlines() if x.startswith("FAILED ")), "")
    assert "WRONG_VALUE" in line and "but should be" in line, f"-rf gives no one-line reason: {line!r}"
    body = out[out.index("= FAILURES ="):out.index("conformance summary")]
    n = len([x for x in body.splitlines() if x.strip()])
    assert n <= 24, f"a failure printed {n} lines, but should print at most ~20 by default:\n{body}"
    assert "add_adapter('a', config=" in body, f"the short report lacks the case:\n{body}"
    rc, out_v = _suite(f"--driver={WRONG}", "-q", "--conformance-full-report", *sel)
    full = out_v[out_v.index("= FAILURES ="):out_v.index("conformance summary")]
    assert len(full.splitlines()) > n, "--conformance-full-report printed no more than the short report"

    xf = tmp_path / "my_expected.txt"
    xf.write_text("toy-wrong-scaling test_single_adapter[bert-lora]  # the toy scales by alpha, not alpha / r\n"
                  "toy-wrong-scaling test_no_such_test[*]  # stale entry\n")
    rc, out = _suite(f"--driver={WRONG}", "-q", "-rx", f"--expected-failures={xf}", *sel)
    assert rc == 0 and _count(out, "xfailed") == 1, f"the entry for Driver.name did not apply:\n{out[-4000:]}"
    assert "my_expected.txt:1:" in out, f"the xfail reason does not name the file and line:\n{out[-3000:]}"
    assert f"{xf}:2: entry 'toy-wrong-scaling test_no_such_test[*]' matches no collected test" in out, out[-3000:]
