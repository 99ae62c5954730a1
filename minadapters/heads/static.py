"""Static task heads of transformers checkpoints become flex heads named "default". Spec: HEAD-9.

adapters 1.3.0 converts a checkpoint whose config.json names a task class (``architectures[0]``) into a head of
its table: a head config, and for each index of the head's nn.Sequential the checkpoint module whose weights
go there. The table below declares the same conversions for the families minadapters has.
"""
from __future__ import annotations

import numpy as np

from ..loading import assign_weights

_CLS_POOLER = {"head_type": "classification", "layers": 1, "activation_function": None, "use_pooler": True}
_MC_POOLER = {"head_type": "multiple_choice", "layers": 1, "activation_function": None, "use_pooler": True}
_TAG = {"head_type": "tagging", "layers": 1, "activation_function": None}
_QA = {"head_type": "question_answering", "layers": 1, "activation_function": None}
_BERT_LM = {"layers": 2, "activation_function": "gelu", "layer_norm": True, "bias": True}
_BERT_LM_MODULES = ("cls.predictions.transform.dense", None, "cls.predictions.transform.LayerNorm",
                    "cls.predictions.decoder")
_ROBERTA_CLS = {"head_type": "classification", "layers": 2, "activation_function": "tanh", "use_pooler": False}
_ROBERTA_CLS_MODULES = (None, "classifier.dense", None, None, "classifier.out_proj")
_ROBERTA_LM_MODULES = ("lm_head.dense", None, "lm_head.layer_norm", "lm_head.decoder")


def _roberta_like(prefix: str) -> dict:
    return {
        f"{prefix}ForSequenceClassification": (_ROBERTA_CLS, _ROBERTA_CLS_MODULES),
        f"{prefix}ForMultipleChoice": (_MC_POOLER, (None, "classifier")),
        f"{prefix}ForTokenClassification": (_TAG, (None, "classifier")),
        f"{prefix}ForQuestionAnswering": (_QA, (None, "qa_outputs")),
        f"{prefix}ForMaskedLM": (dict(_BERT_LM, head_type="masked_lm"), _ROBERTA_LM_MODULES),
        f"{prefix}ForCausalLM": (dict(_BERT_LM, head_type="causal_lm"), _ROBERTA_LM_MODULES),
    }


_DEBERTA_POOLED = {"layers": 2, "activation_function": "gelu", "use_pooler": False}   # ContextPooler + classifier
_DEBERTA_POOLED_MODULES = (None, "pooler.dense", None, None, "classifier")


def _deberta_like(prefix: str, multiple_choice: bool) -> dict:
    """adapters 1.3.0's head_utils entries of Deberta / DebertaV2 (only V2 lists a multiple-choice class)."""
    out = {
        f"{prefix}ForSequenceClassification": (dict(_DEBERTA_POOLED, head_type="classification"),
                                               _DEBERTA_POOLED_MODULES),
        f"{prefix}ForTokenClassification": (_TAG, ("dropout", "classifier")),
        f"{prefix}ForQuestionAnswering": (_QA, (None, "qa_outputs")),
        f"{prefix}ForMaskedLM": (dict(_BERT_LM, head_type="masked_lm"), _BERT_LM_MODULES),
    }
    if multiple_choice:
        out[f"{prefix}ForMultipleChoice"] = (dict(_DEBERTA_POOLED, head_type="multiple_choice"),
                                             _DEBERTA_POOLED_MODULES)
    return out


# task class -> (head config, checkpoint module per head index; None: no parameters at that index)
STATIC_HEADS = {
    "BertForSequenceClassification": (_CLS_POOLER, (None, "classifier")),
    "BertForMultipleChoice": (_MC_POOLER, (None, "classifier")),
    "BertForTokenClassification": (_TAG, (None, "classifier")),
    "BertForQuestionAnswering": (_QA, (None, "qa_outputs")),
    "BertForMaskedLM": (dict(_BERT_LM, head_type="masked_lm"), _BERT_LM_MODULES),
    "BertLMHeadModel": (dict(_BERT_LM, head_type="causal_lm"), _BERT_LM_MODULES),
    **_roberta_like("Roberta"),
    **_roberta_like("XLMRoberta"),
    **_deberta_like("Deberta", multiple_choice=False),
    **_deberta_like("DebertaV2", multiple_choice=True),
    "GPT2ForSequenceClassification": ({"head_type": "classification", "layers": 1, "activation_function": None,
                                       "bias": False}, (None, "score")),
    "GPT2LMHeadModel": ({"head_type": "causal_lm"}, ("lm_head",)),
    "GPT2ForTokenClassification": (_TAG, (None, "classifier")),
    "GPT2ForQuestionAnswering": (_QA, (None, "qa_outputs")),
    "LlamaForSequenceClassification": ({"head_type": "classification", "layers": 1, "dropout_prob": 0,
                                        "activation_function": None, "bias": False}, (None, "score")),
    "LlamaForCausalLM": ({"head_type": "causal_lm"}, ("lm_head",)),
    "LlamaForQuestionAnswering": (_QA, (None, "qa_outputs")),
    "LlamaForTokenClassification": (_TAG, (None, "score")),
    "GPTJForSequenceClassification": ({"head_type": "classification", "layers": 1, "activation_function": None,
                                       "bias": False}, (None, "score")),
    "GPTJForCausalLM": ({"head_type": "causal_lm", "bias": True}, ("lm_head",)),
    "GPTJForQuestionAnswering": (_QA, (None, "qa_outputs")),
    **_roberta_like("Xmod"),
    **{f"{p}ForSequenceClassification": ({"head_type": "classification", "layers": 2, "activation_function": "tanh"},
                                         (None, "classification_head.dense", None, None,
                                          "classification_head.out_proj")) for p in ("Bart", "MBart", "PLBart")},
    **{f"{p}ForQuestionAnswering": (_QA, (None, "qa_outputs")) for p in ("Bart", "MBart")},
    # adapters maps only lm_head: the converted head drops BART's final_logits_bias (spec ENCDEC-6)
    **{f"{p}ForConditionalGeneration": ({"head_type": "seq2seq_lm"}, ("lm_head",))
       for p in ("Bart", "MBart", "PLBart")},
    # T5 / MT5 (adapters' STATIC_TO_FLEX_HEAD_MAP); a tied T5 projection is the shared embedding
    **{f"{p}ForConditionalGeneration": ({"head_type": "seq2seq_lm"}, ("lm_head",)) for p in ("T5", "MT5")},
    **{f"{p}ForSequenceClassification": ({"head_type": "classification", "layers": 2, "activation_function": "tanh"},
                                         (None, "classification_head.dense", None, None,
                                          "classification_head.out_proj")) for p in ("T5", "MT5")},
    **{f"{p}ForQuestionAnswering": (_QA, (None, "qa_outputs")) for p in ("T5", "MT5")},
}


# transformers saves the MLM decoder bias once, under its tied alias.
# COMPAT(adapters): adapters 1.3.0 maps only "<decoder>.*" and so leaves the converted head's output bias at
# zero; we read the alias, so the converted head gives the task model's logits (spec HEAD-9).
BIAS_ALIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias", "lm_head.decoder.bias": "lm_head.bias"}


def static_head_config(class_name: str, label2id, num_labels=None) -> tuple:
    """(flex head config, module per index) of a task class, labels from config.json's label2id (two
    LABEL_i when absent, as adapters). Spec: HEAD-9."""
    config, modules = STATIC_HEADS[class_name]
    config = dict(config)
    if label2id is None:        # transformers' default labels
        label2id = {"LABEL_0": 0, "LABEL_1": 1}
    label2id = {lab: int(i) for lab, i in label2id.items()}
    n = num_labels or len(label2id)
    if config["head_type"] == "multiple_choice":
        config["num_choices"] = n
        config["label2id"] = label2id
    elif config["head_type"] not in ("causal_lm", "masked_lm", "seq2seq_lm"):
        config["num_labels"] = n
        config["label2id"] = label2id
    return config, modules


def rename_static_weights(modules, weights: dict, name: str) -> dict:
    """``<module>.<leaf>`` -> ``heads.<name>.<i>.<leaf>`` for the head's module list (the MLM decoder bias from
    its tied alias). Spec: HEAD-9."""
    renamed = {}
    for i, module in enumerate(modules):
        if module is None:
            continue
        for k, v in weights.items():
            if k.startswith(module + "."):
                renamed[f"heads.{name}.{i}.{k[len(module) + 1:]}"] = np.asarray(v)
    for i, module in enumerate(modules):
        alias = BIAS_ALIASES.get(f"{module}.bias")
        key = f"heads.{name}.{i}.bias"
        if alias is not None and key not in renamed and alias in weights:
            renamed[key] = np.asarray(weights[alias])
    return renamed


def convert_static_head(model, weights: dict, name: str = "default") -> str | None:
    """Add the checkpoint's task head as flex head ``name`` (active), its weights renamed into
    ``heads.<name>.<i>.*``; returns the name, or None for a base-model checkpoint. Spec: HEAD-9."""
    archs = model.raw_config.get("architectures") or []
    if not archs or archs[0] not in STATIC_HEADS:
        return None
    cls = archs[0]
    label2id = model.raw_config.get("label2id")
    if label2id is None and model.raw_config.get("id2label"):
        label2id = {lab: int(i) for i, lab in model.raw_config["id2label"].items()}
    config, modules = static_head_config(cls, label2id)
    model.add_prediction_head_from_config(name, config, overwrite_ok=True, set_active=True)
    head = model.heads[name]
    renamed = rename_static_weights(modules, weights, name)
    refs = head.param_refs(model)
    if head.tied_key is not None:       # the tied projection is the embedding matrix (already loaded)
        renamed.pop(f"heads.{name}.{head.out_index}.weight", None)
        refs.pop(f"heads.{name}.{head.out_index}.weight")
    missing = sorted(set(refs) - set(renamed))
    if missing:
        del model.heads[name]
        model.active_head = None
        raise ValueError(f"{getattr(model, 'model_dir', '')}: config.json names {cls}, but "
                         f"the checkpoint lacks its head weights {missing[:3]} (expected under "
                         f"{', '.join(m for m in modules if m)}).")
    assign_weights(refs, renamed, what=f"the {cls} head", source=cls)
    return name
