"""Steps the properties share: build a model with perturbed adapters on one or two drivers, run a setup.

Core only (numpy, pytest). Every function takes drivers explicitly; nothing is resolved here.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import note

from . import report
from .driver import Unsupported, capabilities, check_supported
from .strategies import leaf, perturb, render
from .tinymodels import pad_side, padded_batch

FUSION_FLAGS = ("key", "query", "value", "query_before_ln", "residual_before", "value_before_softmax")


def need(drv, *caps, role="driver"):
    """Skip (with a reason naming what is missing) unless ``drv`` has every capability."""
    have = capabilities(drv)
    missing = [c for c in caps if c not in have]
    if missing:
        pytest.skip(f"{role} {drv.name!r} lacks {', '.join(missing)}")


def need_method(entry, *drivers, arch=None):
    for d in drivers:
        need(d, f"method:{entry.name}", role="driver")
    if arch is not None and arch not in entry.archs:
        pytest.skip(f"adapters 1.3.0 does not support {entry.name} on {arch} "
                    f"({entry.notes.get(arch, entry.notes.get('decoders', 'see the method entry'))})")


def single(name):
    return {"type": "Stack", "children": [leaf(name)]}


def batch(arch, seed, shape):
    """Padded batch for a drawn (B, T, lengths) and seed; decoders are padded left or right (by the seed)."""
    B, T, lengths = shape
    return padded_batch(arch, np.random.default_rng(seed), B, T, lengths, side=pad_side(arch, seed))


class Built:
    """One driver's model with adapters added and weights set."""

    def __init__(self, drv, model_dir):
        self.drv = drv
        self.model = drv.load_model(model_dir)

    def add(self, name, cfg, tensors=None):
        with declined_by(self.drv):
            check_supported(self.drv, cfg)
            self.drv.add_adapter(self.model, name, cfg)
            if tensors is not None:
                self.drv.set_adapter_weights(self.model, name, tensors)

    def weights(self, name):
        return self.drv.get_adapter_weights(self.model, name)

    def run(self, setup, ids, mask, **kw):
        with declined_by(self.drv):
            self.drv.set_active(self.model, setup)
            return self.drv.forward(self.model, ids, mask, **kw)


class declined_by:
    """Context manager: an Unsupported raised inside gets the driver's name in front of its reason (once)."""

    def __init__(self, drv):
        self.drv = drv

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, Unsupported) and not getattr(exc, "conformance_who", None):
            exc.conformance_who = self.drv.name
        return False


def add_perturbed(primary: Built, others, specs, seed, scale=0.3):
    """Add each (name, cfg) to every model; weights = primary's fresh weights + seeded noise (std ``scale``),
    shared by all."""
    out = {}
    for i, (name, cfg) in enumerate(specs):
        primary.add(name, cfg)
        w = perturb(primary.weights(name), seed + 7919 * i, scale=scale)
        primary.drv.set_adapter_weights(primary.model, name, w)
        for o in others:
            o.add(name, cfg, w)
        out[name] = w
    return out


def add_fusions(primary: Built, others, fusions, fusion_config, seed):
    for j, names in enumerate(fusions):
        fname = primary.drv.add_fusion(primary.model, names, fusion_config)
        w = perturb(primary.drv.get_fusion_weights(primary.model, fname), seed + 31 * j, scale=0.2)
        primary.drv.set_fusion_weights(primary.model, fname, w)
        for o in others:
            o.drv.add_fusion(o.model, names, fusion_config)
            o.drv.set_fusion_weights(o.model, fname, w)


def describe_case(method, arch, specs, setup, shape, seed):
    """A copy-pasteable description for hypothesis' note()."""
    lines = [f"method={method} arch={arch} batch (B, T, lengths)={shape} pad={pad_side(arch, seed)} seed={seed}",
             f"setup={render(setup) if setup else None}"]
    lines += [f"  add_adapter({n!r}, config={c!r})" for n, c in specs]
    note("\n".join(lines))
    report.set_case("\n".join(lines))
    return f"{method}/{arch} {render(setup) if setup else 'base'} B,T={shape[0]},{shape[1]}"


def record(method, block, arch=None):
    report.record_example(method, block, arch)
