"""Variants of the toy LoRA driver (conformance/examples/numpy_lora_driver.py) for the suite's own tests.

``make_wrong_scaling``: LoRA scaled by alpha instead of alpha / r, a plausible wrong implementation that
the differential and golden-vector checks must report (WRONG_VALUE), briefly, with the case.
``make_partial``: declines every config with more than one adapted location through ``supports`` only.
"""
from conformance.examples.numpy_lora_driver import NumpyLoraDriver


class WrongScaling(NumpyLoraDriver):
    name = "toy-wrong-scaling"

    def _linear(self, model, x, m):
        y = x @ model.w[m + ".weight"].T + model.w[m + ".bias"]
        name = model.active
        if name is not None and name != model.merged and m in model.loras[name][1]:
            cfg, mods = model.loras[name]
            y = y + (x @ mods[m]["lora_A"].T) @ mods[m]["lora_B"].T * cfg["alpha"]
        return y


class Partial(NumpyLoraDriver):
    name = "toy-partial"

    def supports(self, config):
        ok = super().supports(config)
        if ok is True and len(config.get("attn_matrices", ["q", "v"])) > 1:
            return "the partial toy adapts one attention matrix only"
        return ok


def make_wrong_scaling():
    return WrongScaling()


def make_partial():
    return Partial()
