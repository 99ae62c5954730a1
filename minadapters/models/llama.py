"""LLaMA decoder (RMSNorm, RoPE, SwiGLU, GQA): one ``LlamaLike`` declaration; the forward is llama_like's.

Spec: DEC-2, DEC-3, DEC-4, DEC-5, FAM-LL-1. adapters 1.3.0 names the MLP LoRA locations the other way round from
BERT: ``intermediate`` is ``mlp.down_proj`` and ``output`` is ``mlp.up_proj`` (adapters:
src/adapters/models/llama/modeling_llama.py); that is llama_like's native (non-plugin) placement, FAM-LL-3.
Mistral, Qwen2/3 and Gemma are declared the same way (llama_like.py), and so can a user's family.
"""
from __future__ import annotations

from .llama_like import DECODER, LlamaLike, declare

MODEL_TYPES = ("llama",)

# q/k/v/o biases iff config.attention_bias, MLP biases iff config.mlp_bias; LlamaForQuestionAnswering keeps its base
# model under 'transformer.'.
LLAMA = LlamaLike(name="llama", model_types=MODEL_TYPES, model_class="LlamaModel", attention_bias="config",
                  mlp_bias=True, task_prefixes=("transformer",))

ARCHITECTURE = declare(LLAMA)
Config = ARCHITECTURE.config_class
STACK = ARCHITECTURE.stacks[0]
expected_shapes = ARCHITECTURE.expected_shapes
forward = ARCHITECTURE.forward

__all__ = ["ARCHITECTURE", "Config", "DECODER", "LLAMA", "MODEL_TYPES", "STACK", "expected_shapes", "forward"]
