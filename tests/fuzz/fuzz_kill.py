"""kill -9 at random points of every save kind; the directory left behind must never mix two saves.

Spec: IO-14, IO-17. For each kind, version A is saved normally, then a forked child saves version B
(different weights *and* config) over it and is killed with SIGKILL after a random delay in
[0, 1.3 x the measured save time]. The directory is then loaded into a fresh checker model:
  old / new   -- it holds exactly save A or save B;
  refused     -- loading raises a documented error (an interrupted save, a clean refusal);
  mixed       -- it loads, but config and weights are not both A or both B (a failure).
Afterwards one normal save must leave no temporary files and no stale weights of the other format.
"""
from __future__ import annotations

import os
import random
import signal
import time
import warnings

import numpy as np

import minadapters as ma
from minadapters.errors import AdapterError
from minadapters.tiny import write_tiny_model

DOCUMENTED = (AdapterError, FileNotFoundError, NotADirectoryError)


def _perturb(model, refs, seed):
    rng = np.random.default_rng(seed)
    for _, (d, leaf) in refs.items():
        d[leaf] = (d[leaf] + rng.normal(0, 0.5, d[leaf].shape)).astype(d[leaf].dtype)


def _versions(model_dir):
    """Two models holding adapter 'v' / fusion 'a,b' / setup Stack(p, q) in versions A and B."""
    out = {}
    for tag, alpha, temp, seed in (("A", 4, False, 1), ("B", 16, True, 2)):
        m = ma.AutoModel.from_pretrained(model_dir, seed=0)
        m.add_adapter("v", f"lora[r=4, alpha={alpha}]")
        _perturb(m, m.adapter_param_refs("v"), seed)
        for n in ("p", "q"):
            m.add_adapter(n, f"lora[r=2, alpha={alpha}]")
            _perturb(m, m.adapter_param_refs(n), seed + ord(n))
        for n in ("a", "b"):           # fusion layers sit at bottleneck locations
            m.add_adapter(n, "seq_bn")
        m.add_adapter_fusion(["a", "b"], ma.DynamicAdapterFusionConfig(temperature=temp))
        _perturb(m, m.fusion_param_refs("a,b"), seed + 7)
        assert m.fusion_param_refs("a,b"), "the fusion must have weights to tell saves apart"
        out[tag] = m
    return out


def _state(model, refs, name, as_name):
    return {k.replace(f".{name}.", f".{as_name}."): np.array(d[leaf]) for k, (d, leaf) in refs.items()}


def _which(states, got):
    for tag, want in states.items():
        if want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want):
            return tag
    return None


KINDS = ("adapter[torch]", "adapter[safetensors]", "adapter[torch->safetensors]", "fusion", "setup")


def _save(model, kind, d, second):
    if kind.startswith("adapter"):
        st = {"adapter[torch]": False, "adapter[safetensors]": True,
              "adapter[torch->safetensors]": second}[kind]
        model.save_adapter(d, "v", use_safetensors=st)
    elif kind == "fusion":
        model.save_adapter_fusion(d, ["a", "b"])
    else:
        model.save_adapter_setup(d, ma.Stack("p", "q"))


def _check(checker, kind, d, versions):
    """'old' / 'new' / 'refused' / 'mixed' (+ detail) for the directory d."""
    def load_one(sub, name):
        try:
            got_name = checker.load_adapter(sub, load_as="chk")
        except DOCUMENTED as e:
            return "refused", type(e).__name__
        try:
            alpha = checker.adapters_config.get(got_name)["alpha"]
            got = _state(checker, checker.adapter_param_refs(got_name), got_name, "chk")
        finally:
            checker.delete_adapter(got_name)
        states = {t: _state(m, m.adapter_param_refs(name), name, "chk") for t, m in versions.items()}
        tag = _which(states, got)
        want_alpha = {"A": 4, "B": 16}.get(tag)
        if tag is None or alpha != (want_alpha if name == "v" else {"A": 4, "B": 16}[tag]):
            return "mixed", f"{sub}: alpha {alpha}, weights {tag}"
        return {"A": "old", "B": "new"}[tag], ""

    if kind.startswith("adapter"):
        return [load_one(d, "v")]
    if kind == "setup":
        return [load_one(os.path.join(d, n), n) for n in ("p", "q")]
    try:
        name = checker.load_adapter_fusion(d)
    except DOCUMENTED as e:
        return [("refused", type(e).__name__)]
    try:
        temp = checker.adapters_config.fusions[name][0]["temperature"]
        got = _state(checker, checker.fusion_param_refs(name), name, name)
    finally:
        checker.delete_adapter_fusion(name)
    states = {t: _state(m, m.fusion_param_refs("a,b"), "a,b", "a,b") for t, m in versions.items()}
    tag = _which(states, got)
    if tag is None or temp != (tag == "B"):
        return [("mixed", f"fusion: temperature {temp}, weights {tag}")]
    return [({"A": "old", "B": "new"}[tag], "")]


def _leftovers(kind, d):
    bad = []
    for root, _, files in os.walk(d):
        for f in files:
            if f.endswith(".tmp"):
                bad.append(os.path.join(root, f))
    if kind == "adapter[torch->safetensors]" and os.path.exists(os.path.join(d, "pytorch_adapter.bin")):
        bad.append("stale pytorch_adapter.bin beside adapter.safetensors")
    return bad


def _child_save_time(model, kind, d) -> float:
    """Seconds from fork to exit of a child that saves (what a kill delay must span), median of 3."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            try:
                _save(model, kind, d, True)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - t0)
    return sorted(times)[1]


def campaign(workdir: str, trials: int, rng: random.Random) -> int:
    """Run `trials` kill -9 trials per save kind; print counts; return the number of failures."""
    warnings.simplefilter("ignore")
    model_dir = write_tiny_model(os.path.join(workdir, "kill-model"), seed=3)
    versions = _versions(model_dir)
    checker = ma.AutoModel.from_pretrained(model_dir, seed=0)
    for n in ("a", "b"):
        checker.add_adapter(n, "seq_bn")
    failures = 0
    print(f"{'kill -9 during save':30s} {'trials':>6s} {'old':>5s} {'new':>5s} {'refused':>7s} {'mixed':>5s} "
          f"{'leftover':>8s}")
    for kind in KINDS:
        duration = _child_save_time(versions["B"], kind, os.path.join(workdir, "kill-timing"))
        counts = dict(old=0, new=0, refused=0, mixed=0, leftover=0)
        first = {}
        for t in range(trials):
            d = os.path.join(workdir, f"kill-{kind}-{t}")
            _save(versions["A"], kind, d, False)
            delay = rng.uniform(0, 1.3 * duration)
            pid = os.fork()
            if pid == 0:
                try:
                    _save(versions["B"], kind, d, True)
                finally:
                    os._exit(0)
            time.sleep(delay)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            for outcome, detail in _check(checker, kind, d, versions):
                counts[outcome] += 1
                if outcome == "mixed":
                    first.setdefault("mixed", detail)
            _save(versions["B"], kind, d, True)      # the next save repairs and cleans up
            left = _leftovers(kind, d)
            if left:
                counts["leftover"] += 1
                first.setdefault("leftover", left[0])
        failures += counts["mixed"] + counts["leftover"]
        print(f"{kind:30s} {trials:6d} {counts['old']:5d} {counts['new']:5d} {counts['refused']:7d} "
              f"{counts['mixed']:5d} {counts['leftover']:8d}  [save in a child {duration * 1e3:.1f} ms]")
        for k, v in first.items():
            print(f"    first {k}: {v}")
    return failures
