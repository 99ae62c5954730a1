"""Hook points of the explicit forward, and the hook views: NullHooks (base model) and ModelHooks. Spec: HOOK-1.

A forward asks ``hooks.layer(stack, i)`` for the view of one layer and calls it at named points; the keys are
the ``Hook`` constants (adapters 1.3.0's location names). Which hooks a stack has is declared in its
``Architecture`` record; a forward that calls a hook its stack does not declare raises KeyError.

| hook call                          | adapters location                         | methods                |
|------------------------------------|-------------------------------------------|------------------------|
| linear(Hook.ATTN_Q, ...) (K, V, QKV)| selfattn_lora + attn_matrices             | LoRA, IA³, VeRA, DoRA  |
| linear(Hook.INTERMEDIATE / OUTPUT) | intermediate_lora / output_lora           | same                   |
| prefix(Hook.SELF_PREFIX / ENCODER_PREFIX / CROSS_PREFIX) | prefix location | prefix tuning        |
| residual_block(Hook.MH_ADAPTER / CROSS_ADAPTER / OUTPUT_ADAPTER) | bottleneck locations | bottleneck, fusion |
| embeddings(stack, ...)             | post-embedding (first stack)              | invertible, prompt     |
| layer_output(x)                    | layer forward hook (output_reft)          | ReFT                   |
"""
from __future__ import annotations

from .functional.bottleneck import sublayer_close


class Hook:
    """Hook-location keys. LoRA keys name adapters' location and attention matrix (``selfattn.q``)."""
    ATTN_Q = "selfattn.q"
    ATTN_K = "selfattn.k"
    ATTN_V = "selfattn.v"
    ATTN_QKV = "selfattn.qkv"
    CROSS_Q = "crossattn.q"
    CROSS_K = "crossattn.k"
    CROSS_V = "crossattn.v"
    INTERMEDIATE = "intermediate"
    OUTPUT = "output"
    MH_ADAPTER = "mh_adapter"
    CROSS_ADAPTER = "cross_adapter"
    OUTPUT_ADAPTER = "output_adapter"
    SELF_PREFIX = "self_prefix"
    ENCODER_PREFIX = "encoder_prefix"     # self-attention of an encoder-decoder's encoder stack
    CROSS_PREFIX = "cross_prefix"
    LAYER_OUTPUT = "output_reft"


LINEAR_HOOKS = (Hook.ATTN_Q, Hook.ATTN_K, Hook.ATTN_V, Hook.ATTN_QKV, Hook.CROSS_Q, Hook.CROSS_K, Hook.CROSS_V,
                Hook.INTERMEDIATE, Hook.OUTPUT)
RESIDUAL_HOOKS = (Hook.MH_ADAPTER, Hook.CROSS_ADAPTER, Hook.OUTPUT_ADAPTER)
PREFIX_HOOKS = (Hook.SELF_PREFIX, Hook.ENCODER_PREFIX, Hook.CROSS_PREFIX)
KIND_OF_HOOK = {**{h: "lora" for h in LINEAR_HOOKS}, **{h: "bottleneck" for h in RESIDUAL_HOOKS},
                **{h: "prefix" for h in PREFIX_HOOKS}, Hook.LAYER_OUTPUT: "reft"}


class NullHooks:
    """Every hook is the identity: the plain base model. Also the view of one layer (``layer`` returns self)."""

    def __init__(self, ops):
        self.ops = ops

    def embeddings(self, stack, x, mask):
        return x, mask

    def layer(self, stack, i):
        return self

    def linear(self, key, x, w, b=None):
        return self.ops.linear(x, w, b)

    def prefix(self, key, k, v, mask, attn_input):
        return k, v, mask

    def residual_block(self, key, h, x, layer_norm):
        return sublayer_close(h, x, layer_norm)

    def layer_output(self, x):
        return x


class LayerHooks:
    """The hooks of one layer of one stack under one forward: each calls the method layer declared there."""

    __slots__ = ("stack", "index", "table", "fwd", "ops")

    def __init__(self, stack, index, table, fwd, ops):
        self.stack, self.index, self.table, self.fwd, self.ops = stack, index, table, fwd, ops

    def _at(self, key):
        try:
            return self.table[key]
        except KeyError:
            raise KeyError(f"hook {key!r} is not declared for layer {self.index} of stack {self.stack!r}; declared: "
                           f"{', '.join(sorted(self.table))}. Declare it in the family's Architecture record.") from None

    def linear(self, key, x, w, b=None):
        return self._at(key).forward(x, w, b, self.fwd)

    def prefix(self, key, k, v, mask, attn_input):
        return self._at(key).forward(k, v, mask, attn_input, self.fwd)

    def residual_block(self, key, h, x, layer_norm):
        return self._at(key).forward(h, x, layer_norm, self.fwd)

    def layer_output(self, x):
        layer = self.table.get(Hook.LAYER_OUTPUT)
        return x if layer is None else layer.forward(x, self.fwd)


class ModelHooks(NullHooks):
    """Dispatches each hook to the model's method layer at (stack, layer, location), with the forward state."""

    def __init__(self, model, fwd):
        super().__init__(model.ops)
        self.model = model
        self.fwd = fwd

    def embeddings(self, stack, x, mask):
        for obj in self.model.embedding_methods(stack):
            x, mask = obj.forward(x, mask, self.fwd)
        return x, mask

    def layer(self, stack, i):
        return LayerHooks(stack, i, self.model.hook_table[stack][i], self.fwd, self.ops)
