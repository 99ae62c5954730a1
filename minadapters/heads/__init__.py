"""Prediction heads and the AdapterModel classes that carry them (adapters 1.3.0's flexible heads). Spec: HEAD-0.

types.py declares the head types (HEAD_TYPES), head.py one head's parameters and forward, model.py the
AdapterModel classes and AutoAdapterModel, files.py head_config.json and the head weight files.
"""
from .head import PredictionHead
from .model import (ADAPTER_MODEL_CLASSES, AutoAdapterModel, BertAdapterModel, GPT2AdapterModel, LlamaAdapterModel,
                    ModelWithHeads, RobertaAdapterModel, XLMRobertaAdapterModel, parse_heads_from_composition)
from .types import HEAD_TYPES, HeadType, head_type

__all__ = ["AutoAdapterModel", "BertAdapterModel", "RobertaAdapterModel", "XLMRobertaAdapterModel", "GPT2AdapterModel",
           "LlamaAdapterModel", "ModelWithHeads", "PredictionHead", "HEAD_TYPES", "HeadType", "head_type",
           "ADAPTER_MODEL_CLASSES", "parse_heads_from_composition"]
