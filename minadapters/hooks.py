"""Hook points of the explicit forward, and the two hook views: NullHooks (base model) and AdapterHooks.

Spec: HOOK-1. Location keys are adapters 1.3.0's.

| hook call               | adapters location                           | methods                |
|-------------------------|---------------------------------------------|------------------------|
| linear(i, "selfattn.q") | selfattn_lora + attn_matrices "q" (k, v)    | LoRA, IA³, VeRA, DoRA  |
| linear(i, "intermediate") / "output" | intermediate_lora / output_lora | same                 |
| prefix(i, "self_prefix")| prefix tuning location                      | prefix tuning          |
| residual_block(i, "mh_adapter" / "output_adapter") | bottleneck locations | bottleneck, fusion   |
| embeddings()            | post-embedding                              | invertible, prompt     |
| layer_output(i)         | layer forward hook (output_reft)            | ReFT                   |
"""
from __future__ import annotations

from .functional.bottleneck import sublayer_close

LINEAR_KEYS = ("selfattn.q", "selfattn.k", "selfattn.v", "intermediate", "output")
BOTTLENECK_KEYS = ("mh_adapter", "output_adapter")


class NullHooks:
    """Every hook is the identity: the plain base model."""

    def __init__(self, ops):
        self.ops = ops

    def embeddings(self, x, mask):
        return x, mask

    def linear(self, i, key, x, w, b=None):
        return self.ops.linear(x, w, b)

    def prefix(self, i, location, k, v, mask, attn_input):
        return k, v, mask

    def residual_block(self, i, location, h, x, layer_norm):
        return sublayer_close(h, x, layer_norm)

    def layer_output(self, i, x):
        return x


class AdapterHooks(NullHooks):
    """Dispatches each hook to the model's method layer at (layer, location), with the forward state."""

    def __init__(self, model, fwd):
        super().__init__(model.ops)
        self.model = model
        self.fwd = fwd

    def embeddings(self, x, mask):
        for obj in self.model.embedding_methods():
            x, mask = obj.forward(x, mask, self.fwd)
        return x, mask

    def linear(self, i, key, x, w, b=None):
        layer = self.model.method_layers.get((i, "lora", key))
        if layer is None:
            return self.ops.linear(x, w, b)
        return layer.forward(x, w, b, self.fwd)

    def prefix(self, i, location, k, v, mask, attn_input):
        layer = self.model.method_layers.get((i, "prefix", location))
        if layer is None:
            return k, v, mask
        return layer.forward(k, v, mask, attn_input, self.fwd)

    def residual_block(self, i, location, h, x, layer_norm):
        layer = self.model.method_layers.get((i, "bottleneck", location))
        if layer is None:
            return super().residual_block(i, location, h, x, layer_norm)
        return layer.forward(h, x, layer_norm, self.fwd)

    def layer_output(self, i, x):
        layer = self.model.method_layers.get((i, "reft", "output_reft"))
        if layer is None:
            return x
        return layer.forward(x, self.fwd)
