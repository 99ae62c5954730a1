"""AdapterModel classes with flexible prediction heads (adapters 1.3.0's ``XAdapterModel``). Spec: HEAD-0, HEAD-7.

``AutoAdapterModel.from_pretrained(dir)`` builds the family's class (``BertAdapterModel`` ...); ``AutoModel`` stays
the bare model. A class lists the head types it offers (``head_types``, as adapters lists them); the types
themselves are declared in heads/types.py.
"""
from __future__ import annotations

import copy
import os

import numpy as np

from ..composition import AdapterCompositionBlock, BatchSplit, Fuse, Parallel, Stack
from ..concurrency import mutates, reads
from ..configuration import get_adapter_config_hash
from ..context import AdapterSetup
from ..errors import CompositionError, ConfigError
from ..functional import heads as F
from ..functional.averaging import weighted_sum
from .. import averaging, generate as _generate, loading, setup_files
from ..model import AdapterModel, load_pretrained
from ..models import architecture
from ..outputs import ModelOutput, MultiHeadOutput
from . import files
from .head import PredictionHead
from .static import convert_static_head
from ..training.heads import head_loss
from .types import head_type

ENCODER_HEADS = ("classification", "multilabel_classification", "tagging", "multiple_choice", "question_answering",
                 "dependency_parsing", "masked_lm", "causal_lm")
DEBERTA_HEADS = ("classification", "multilabel_classification", "tagging", "question_answering", "multiple_choice",
                 "masked_lm")                  # adapters 1.3.0's Deberta(V2)AdapterModel.head_types
DECODER_HEADS = ("classification", "multilabel_classification", "tagging", "question_answering", "causal_lm")
ENCDEC_HEADS = ("classification", "multilabel_classification", "question_answering", "seq2seq_lm")
# base-output fields an encoder-decoder's head outputs carry along (adapters copies them into its outputs)
SEQ2SEQ_FIELDS = ("decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_last_hidden_state",
                  "encoder_hidden_states", "encoder_attentions")


def parse_heads_from_composition(setup):
    """adapters' head setup of an adapter setup: the last adapter of a Stack, one head per Parallel child, a
    BatchSplit of heads. Spec: HEAD-7."""
    block = setup
    if isinstance(block, Stack):
        block = block.children[-1]
    if isinstance(block, str):
        return block
    if isinstance(block, Parallel):
        return [c if isinstance(c, str) else c.last() for c in block.children]
    if isinstance(block, BatchSplit):
        return BatchSplit(*[c.last() if isinstance(c, AdapterCompositionBlock) else c for c in block.children],
                          batch_sizes=block.batch_sizes)
    return None


class ModelWithHeads(AdapterModel):
    """AdapterModel with named prediction heads (``heads``, ``active_head``, ``add_*_head``). Spec: HEAD-0."""

    head_types: tuple = ()
    use_pooler: bool = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heads: dict = {}
        self._active_heads = []

    def __repr__(self):
        return super().__repr__().replace("AdapterModel(", f"{type(self).__name__}(", 1)[:-1] + \
            f", heads={list(self.heads)}, active_head={self.active_head!r})"

    # ---- head management -------------------------------------------------------------------------
    @property
    def active_head(self):
        """None, one head name, or the list / BatchSplit of heads used together."""
        if not self._active_heads:
            return None
        if isinstance(self._active_heads, list) and len(self._active_heads) == 1:
            return self._active_heads[0]
        return self._active_heads

    @active_head.setter
    @mutates
    def active_head(self, value):
        if value is None or isinstance(value, str):
            if value and value not in self.heads:
                raise ValueError(f"Model does not contain a head with name {value!r}; heads: "
                                 f"{', '.join(map(repr, self.heads)) or 'none'}.")
            self._active_heads = [value] if value else []
            return
        names = list(value) if not isinstance(value, BatchSplit) else list(value.children)
        for n in names:
            if n not in self.heads:
                raise ValueError(f"Model does not contain a head with name {n!r}; heads: "
                                 f"{', '.join(map(repr, self.heads)) or 'none'}.")
        self._active_heads = value if isinstance(value, BatchSplit) else list(value)

    @mutates
    def set_active_adapters(self, adapter_setup, skip_layers=None) -> None:
        """As the bare model, then activate the head(s) named like the setup's last adapter(s). Spec: HEAD-7."""
        super().set_active_adapters(adapter_setup, skip_layers)
        setup = self.active_adapters
        if setup is None:
            return
        heads = parse_heads_from_composition(setup)
        if isinstance(heads, str):
            heads = [heads]
        if heads and all(h in self.heads for h in heads):
            self.active_head = heads

    # ---- training (spec/training.md) -----------------------------------------------------------------
    def _head_param_refs(self) -> dict:
        """Every head's parameters: adapters never freezes heads (train_adapter freezes the base model and the
        input embeddings, so an LM head's projection tied to them stays frozen)."""
        refs = {}
        for head in self.heads.values():
            refs.update(head.param_refs(self))
            if head.tied_key is not None:      # tied to the input embeddings: frozen with them
                refs.pop(f"heads.{head.name}.{head.out_index}.weight", None)
        for key in self._frozen_head_keys:
            refs.pop(key, None)
        return refs

    _frozen_head_keys: frozenset = frozenset()

    def train_adapter(self, adapter_setup, train_embeddings: bool = False) -> None:
        """As the bare model; then, as adapters' freeze_embeddings, the output projection (weight and bias) of every
        active LM head is frozen. Spec: TRAIN-1."""
        super().train_adapter(adapter_setup, train_embeddings)
        active = self._active_heads.children if isinstance(self._active_heads, BatchSplit) else self._active_heads
        frozen = set()
        for name in active or []:
            head = self.heads[name]
            if head.type.output == "lm":
                i = head.out_index
                frozen |= {f"heads.{name}.{i}.weight", f"heads.{name}.{i}.bias"}
        self._frozen_head_keys = frozenset(frozen)

    def train_adapter_fusion(self, adapter_setup, unfreeze_adapters: bool = False) -> None:
        """As the bare model; adapters' flex models do not freeze the LM heads' projection here. Spec: TRAIN-1."""
        super().train_adapter_fusion(adapter_setup, unfreeze_adapters)
        self._frozen_head_keys = frozenset()

    def _training_inputs(self, inputs: dict) -> dict:
        """adapters' encoder classes flatten (B, C, T) multiple-choice inputs (as forward)."""
        if "multiple_choice" in self.head_types:
            return {k: _flatten_choices(k, v) for k, v in inputs.items()}
        return inputs

    def _loss_fn(self, targets, attention_mask, grad_output):
        """The active head's loss (adapters' head losses); without a head, the bare model's. Spec: GRAD-HEAD."""
        used = self._used_heads(None)
        if not used:
            return super()._loss_fn(targets, attention_mask, grad_output)
        if isinstance(used, BatchSplit) or len(used) != 1:
            raise ConfigError(f"forward_backward(): training with several heads ({used!r}) is not implemented in "
                              "minadapters yet; set active_head to one head.")
        head = self.heads[used[0]]
        need = ("start_positions", "end_positions") if head.head_type == "question_answering" else ("labels",)
        missing = [k for k in need if k not in targets]
        if missing:
            raise ValueError(f"forward_backward(): head {used[0]!r} ({head.head_type}) needs "
                             f"{' and '.join(k + '=' for k in missing)} to compute its loss.")

        trainable = frozenset(self._head_param_refs()) | frozenset(self.trainable_parameters())
        inv = self.model_level["invertible"]
        setup = self.active_adapters                   # HEAD-6 reads the active setup (as _lm_inverse)
        inverse = None if setup is None or setup.first() not in inv.blocks else (setup.first(),
                                                                                 inv.blocks[setup.first()])

        def fn(fields):
            fields["inverse_adapter"] = inverse
            loss, logits, d_hidden = head_loss(self, head, fields, targets, attention_mask, self.grads, trainable)
            if head.head_type == "question_answering":
                return loss, d_hidden, {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
            if head.head_type == "multiple_choice":
                return loss, d_hidden, {"logits": logits.reshape(-1, head.config["num_choices"])}
            return loss, d_hidden, {"logits": logits}
        return fn

    def _check_type(self, name):
        if name not in self.head_types:
            raise ValueError(f"This model of type {self.model_type!r} does not support head type {name!r}; it "
                             f"supports {', '.join(self.head_types)}.")

    @mutates
    def add_prediction_head_from_config(self, head_name, config, overwrite_ok=False, set_active=True):
        """Add a head from adapters' config dict (``head_config.json``'s ``config``). Spec: HEAD-0."""
        if not isinstance(config, dict) or "head_type" not in config:
            raise ValueError(f"head {head_name!r}: config must be a dict with 'head_type'; got {config!r}.")
        config = dict(config)
        ht = head_type(config.pop("head_type"))
        self._check_type(ht.name)
        id2label = config.pop("id2label", None)
        label2id = config.pop("label2id", None)
        if id2label is None and label2id is not None:
            id2label = {int(i): lab for lab, i in label2id.items()}
        elif id2label is not None:
            id2label = {int(i): lab for i, lab in id2label.items()}
        if id2label is not None:
            config["id2label"] = id2label
        head = PredictionHead(self, head_name, ht, ht.config(self, **config))
        self.add_prediction_head(head, overwrite_ok=overwrite_ok, set_active=set_active)

    @mutates
    def add_prediction_head(self, head: PredictionHead, overwrite_ok=False, set_active=True):
        if head.name in self.heads and not overwrite_ok:
            raise ValueError(f"Model already contains a head with name {head.name!r}. Use overwrite_ok=True to "
                             "force overwrite.")
        cfg = head.config
        if "label2id" in cfg and cfg["label2id"] is None and head.type.label_key in cfg:
            cfg["label2id"] = {f"LABEL_{i}": i for i in range(cfg[head.type.label_key])}
        self.heads[head.name] = head
        if set_active:
            self.active_head = head.name

    @mutates
    def _add(self, type_name, head_name, overwrite_ok, **config):
        self._check_type(type_name)
        ht = head_type(type_name)
        self.add_prediction_head(PredictionHead(self, head_name, ht, ht.config(self, **config)), overwrite_ok)

    def add_classification_head(self, head_name, num_labels=2, layers=2, activation_function="tanh",
                                overwrite_ok=False, multilabel=False, id2label=None, use_pooler=None):
        """Sentence classification (``multilabel``: the multilabel head). Spec: HEAD-3."""
        self._add("multilabel_classification" if multilabel else "classification", head_name, overwrite_ok,
                  num_labels=num_labels, layers=layers, activation_function=activation_function, id2label=id2label,
                  use_pooler=self.use_pooler if use_pooler is None else use_pooler)

    def add_multiple_choice_head(self, head_name, num_choices=2, layers=2, activation_function="tanh",
                                 overwrite_ok=False, id2label=None, use_pooler=None):
        """One score per choice; input (batch, choices, tokens). Spec: HEAD-4."""
        self._add("multiple_choice", head_name, overwrite_ok, num_choices=num_choices, layers=layers,
                  activation_function=activation_function, id2label=id2label,
                  use_pooler=self.use_pooler if use_pooler is None else use_pooler)

    def add_tagging_head(self, head_name, num_labels=2, layers=1, activation_function="tanh", overwrite_ok=False,
                         id2label=None):
        """Token classification. Spec: HEAD-3."""
        self._add("tagging", head_name, overwrite_ok, num_labels=num_labels, layers=layers,
                  activation_function=activation_function, id2label=id2label)

    def add_qa_head(self, head_name, num_labels=2, layers=1, activation_function="tanh", overwrite_ok=False,
                    id2label=None):
        """Extractive question answering (start / end logits). Spec: HEAD-5."""
        self._add("question_answering", head_name, overwrite_ok, num_labels=num_labels, layers=layers,
                  activation_function=activation_function, id2label=id2label)

    def add_dependency_parsing_head(self, head_name, num_labels=2, overwrite_ok=False, id2label=None):
        """Biaffine dependency parsing (forward needs ``word_starts``). Spec: HEAD-11."""
        self._add("dependency_parsing", head_name, overwrite_ok, num_labels=num_labels, id2label=id2label)

    def add_masked_lm_head(self, head_name, activation_function="gelu", layers=2, overwrite_ok=False):
        """BERT-style masked LM head (transform, LayerNorm, tied projection). Spec: HEAD-6."""
        self._add("masked_lm", head_name, overwrite_ok, layers=layers, activation_function=activation_function)

    def add_seq2seq_lm_head(self, head_name, layers=1, overwrite_ok=False):
        """Sequence-to-sequence LM head over the decoder's states (tied projection, no bias). Spec: HEAD-6."""
        self._add("seq2seq_lm", head_name, overwrite_ok, layers=layers)

    def add_causal_lm_head(self, head_name, activation_function="gelu", layers=2, overwrite_ok=False):
        """Causal LM head (as adapters: LayerNorm and bias on). Spec: HEAD-6."""
        self._add("causal_lm", head_name, overwrite_ok, layers=layers, activation_function=activation_function,
                  layer_norm=True, bias=True)

    @mutates
    @mutates
    def average_head(self, head_name, head_list, weights=None, normalize_weights=True, overwrite_ok=False,
                     set_active=False):
        """Add ``head_name`` whose every parameter is Σ_i w_i · (the same parameter of head i). Spec: HEAD-13.

        ``head_list``: head names (``weights`` one per head; default 1/N each) or a dict name -> weight. Weights
        are divided by their sum when ``normalize_weights``. The heads must be of one type with equal configs
        (``dropout_prob`` aside); the new head copies the first one's config (labels included). A projection tied
        to the input embeddings stays tied (adapters re-ties it after loading the averaged state dict)."""
        names, ws = averaging.resolve_weights(head_list, weights, normalize_weights, what="average_head",
                                              noun="head")
        missing = [n for n in names if n not in self.heads]
        if missing:
            raise KeyError(f"average_head: unknown head {missing[0]!r}; heads: "
                           f"{', '.join(map(repr, self.heads)) or 'none'}.")
        first = self.heads[names[0]]
        ref = get_adapter_config_hash(first.config, ignore_params=["dropout_prob"])
        for n in names[1:]:
            other = self.heads[n]
            if other.type is not first.type:
                raise ValueError(f"Cannot average heads of different classes: {names[0]!r} is a {first.head_type} "
                                 f"head, {n!r} a {other.head_type} head.")
            if get_adapter_config_hash(other.config, ignore_params=["dropout_prob"]) != ref:
                raise ValueError(f"Cannot average heads with different configurations: {names[0]!r} has "
                                 f"{first.config}, {n!r} has {other.config}.")
        if head_name in self.heads and not overwrite_ok:
            raise ValueError(f"Model already contains a head with name {head_name!r}. Use overwrite_ok=True to "
                             "force overwrite.")
        # computed before the model changes, so average_head("a", ["a", "b"], overwrite_ok=True) works
        params = {k: weighted_sum([self.heads[n].params[k] for n in names], ws).astype(v.dtype)
                  for k, v in first.params.items()}
        new = copy.copy(first)
        new.name, new.config, new.params = head_name, copy.deepcopy(first.config), params
        self.add_prediction_head(new, overwrite_ok=overwrite_ok, set_active=set_active)

    def delete_head(self, head_name: str) -> None:
        if head_name not in self.heads:
            return
        del self.heads[head_name]
        if self.active_head == head_name:
            self.active_head = None

    def get_labels_dict(self, head_name=None):
        """id -> label of ``head_name`` (the active head by default); None for heads without labels."""
        if head_name is None:
            head_name = self.active_head
        if head_name is None:
            raise ValueError("No head name given and no active head in the model.")
        if head_name not in self.heads:
            raise ValueError(f"Unknown head_name {head_name!r}; heads: {', '.join(map(repr, self.heads)) or 'none'}.")
        label2id = self.heads[head_name].config.get("label2id")
        return None if label2id is None else {int(i): lab for lab, i in label2id.items()}

    def get_labels(self, head_name=None):
        d = self.get_labels_dict(head_name)
        return None if d is None else list(d.values())

    def get_prediction_heads_config(self) -> dict:
        return {n: h.config for n, h in self.heads.items()}

    @reads
    def head_state_dict(self, head_name: str) -> dict:
        """``heads.<name>.<i>.<leaf>`` -> array (the tied LM projection included, as adapters saves it)."""
        if head_name not in self.heads:
            raise ValueError(f"Unknown head_name {head_name!r}; heads: {', '.join(map(repr, self.heads)) or 'none'}.")
        return self.heads[head_name].state_dict(self)

    # ---- files -----------------------------------------------------------------------------------
    @reads
    def save_head(self, save_directory, head_name=None, use_safetensors=False):
        """head_config.json + pytorch_model_head.bin (model_head.safetensors). Spec: HEAD-8."""
        files.save_head(self, save_directory, head_name, use_safetensors=use_safetensors)

    @mutates
    def load_head(self, save_directory, load_as=None, id2label=None, use_safetensors=False, set_active=True,
                  **kwargs):
        """Add the head saved in ``save_directory``; returns its name. Spec: HEAD-8."""
        return files.load_head(self, save_directory, load_as=load_as, id2label=id2label,
                               use_safetensors=use_safetensors, set_active=set_active)

    @reads
    def save_all_heads(self, save_directory, use_safetensors=False):
        os.makedirs(save_directory, exist_ok=True)
        for name in self.heads:
            self.save_head(os.path.join(save_directory, name), name, use_safetensors=use_safetensors)

    @reads
    def save_adapter(self, save_directory, adapter_name, with_head=True, meta_dict=None, use_safetensors=False):
        """The adapter files, plus the same-named head's files when ``with_head``. Spec: HEAD-8."""
        loading.save_adapter(self, save_directory, adapter_name, meta_dict=meta_dict, use_safetensors=use_safetensors,
                             **self._save_as())
        if with_head and adapter_name in self.heads:
            self.save_head(save_directory, adapter_name, use_safetensors=use_safetensors)

    @mutates
    def load_adapter(self, adapter_name_or_path, config=None, load_as=None, with_head=True, leave_out=None,
                     id2label=None, set_active=False, use_safetensors=None, **kwargs) -> str:
        """As the bare model; with ``with_head`` the directory's head files load too. Spec: HEAD-8."""
        num_labels = kwargs.pop("num_labels", None)
        if num_labels is not None and id2label is None:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        path = files.resolved_dir(adapter_name_or_path, **kwargs)
        name = loading.load_adapter(self, path, load_as=load_as, leave_out=leave_out, set_active=False,
                                    use_safetensors=use_safetensors)
        try:
            if with_head:
                files.load_head(self, path, load_as=load_as, id2label=id2label, use_safetensors=use_safetensors,
                                set_active=set_active, missing_ok=True, main_load_name=name)
            else:
                files.warn_if_head_skipped(path)
        except BaseException:
            self.delete_adapter(name)
            raise
        if set_active:
            self.set_active_adapters(name)
        return name

    @reads
    def save_all_adapters(self, save_directory, with_head=True, meta_dict=None, use_safetensors=False):
        os.makedirs(save_directory, exist_ok=True)
        for name in self.adapters_config:
            meta = dict(meta_dict or {})
            meta["config_id"] = get_adapter_config_hash(self.adapters_config.get(name))
            self.save_adapter(os.path.join(save_directory, name), name, with_head=with_head, meta_dict=meta,
                              use_safetensors=use_safetensors)

    def _save_as(self) -> dict:
        """adapters' flex models write their class name and keys under the base-model prefix ("bert.")."""
        return {"model_class": type(self).__name__,
                "key_prefix": self.arch.base_model_prefix[self.model_type] + "."}

    @reads
    def save_adapter_fusion(self, save_directory, adapter_names, meta_dict=None, use_safetensors=False,
                            with_head=False):
        """The fusion files; ``with_head`` (True: the head named like the fusion, or a head name) adds that
        head's files, which must exist. Spec: HEAD-8."""
        loading.save_adapter_fusion(self, save_directory, adapter_names, meta_dict=meta_dict,
                                    use_safetensors=use_safetensors, **self._save_as())
        if with_head:
            name = with_head if isinstance(with_head, str) else (
                adapter_names.name if isinstance(adapter_names, Fuse) else
                ",".join(adapter_names) if isinstance(adapter_names, (list, tuple)) else adapter_names)
            if name not in self.heads:
                raise ValueError(f"No head with name {name!r} found; heads: "
                                 f"{', '.join(map(repr, self.heads)) or 'none'}.")
            self.save_head(save_directory, name, use_safetensors=use_safetensors)

    @mutates
    def load_adapter_fusion(self, adapter_fusion_name_or_path, load_as=None, set_active=False, use_safetensors=None,
                            with_head=True, **kwargs) -> str:
        """The fusion, and with ``with_head`` the head saved beside it. Spec: HEAD-8."""
        name = super().load_adapter_fusion(adapter_fusion_name_or_path, load_as=load_as, set_active=set_active,
                                           use_safetensors=use_safetensors, **kwargs)
        path = files.resolved_dir(adapter_fusion_name_or_path, "adapter_fusion_config.json", **kwargs)
        if with_head:
            files.load_head(self, path, load_as=load_as, use_safetensors=use_safetensors, set_active=set_active,
                            missing_ok=True)
        else:
            files.warn_if_head_skipped(path)
        return name

    @reads
    def save_adapter_setup(self, save_directory, adapter_setup, head_setup=None, meta_dict=None,
                           use_safetensors=False):
        """adapter_setup.json (with ``head_setup``: a head name, a list or a block), the setup's adapters and
        fusions, and one ``<dir>/<head>`` folder per head of ``head_setup``. Spec: HEAD-8."""
        heads = _head_names(head_setup)
        for h in heads:
            if h not in self.heads:
                raise ValueError(f"save_adapter_setup: unknown head {h!r}; heads: "
                                 f"{', '.join(map(repr, self.heads)) or 'none'}.")
        setup_files.save_adapter_setup(self, save_directory, adapter_setup, meta_dict=meta_dict,
                                       use_safetensors=use_safetensors, head_setup=head_setup)
        for h in heads:
            self.save_head(os.path.join(os.fspath(save_directory), h), h, use_safetensors=use_safetensors)

    @mutates
    def load_adapter_setup(self, adapter_setup_name_or_path, set_active=False, use_safetensors=False, **kwargs):
        """Adapters, fusions and the heads of the saved head_setup; returns (adapter_setup, head_setup).
        Spec: HEAD-8."""
        setup, head_setup = setup_files.load_adapter_setup(self, adapter_setup_name_or_path, set_active=set_active,
                                                           use_safetensors=use_safetensors, heads_supported=True)
        for h in _head_names(head_setup):
            files.load_head(self, os.path.join(os.fspath(adapter_setup_name_or_path), h), load_as=h,
                            use_safetensors=use_safetensors, warn_overwrite=False)   # also in the adapter's dir
        if set_active and head_setup:
            self.active_head = head_setup
        return setup, head_setup

    # ---- forward ---------------------------------------------------------------------------------
    @reads
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, *, head=None, return_dict=True,
                output_hidden_states=False, word_starts=None, **kwargs):
        """The base model, then the used head(s): ``head=``, else the AdapterSetup context's head_setup, else
        ``active_head``; without heads the base model's output. Spec: HEAD-7."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        inputs.update({k: kwargs.pop(k) for k in ("position_ids", "inputs_embeds") if k in kwargs})
        if "multiple_choice" in self.head_types:          # adapters' encoder classes flatten (B, C, T) inputs
            inputs = {k: _flatten_choices(k, v) for k, v in inputs.items()}
        base = super().forward(**inputs, return_dict=True, output_hidden_states=output_hidden_states, **kwargs)
        used = self._used_heads(head)
        if not used:
            return base if return_dict else base.to_tuple()
        hidden = self._head_input(base)
        cls = self._cls_rows(base, inputs.get("input_ids"), hidden.shape[0])     # sentence heads: unscaled states
        inverse = self._lm_inverse()
        ws = None if word_starts is None else np.asarray(word_starts)
        if ws is not None and ws.ndim == 1:
            ws = ws[None]
        extra = {"hidden_states": base.hidden_states, "adapter_gating_scores": base.adapter_gating_scores,
                 "adapter_fusion_attentions": base.adapter_fusion_attentions,
                 **{k: getattr(base, k) for k in SEQ2SEQ_FIELDS}}
        multi = {k: extra[k] for k in ("hidden_states", "adapter_gating_scores", "adapter_fusion_attentions")}
        rows = hidden.shape[0]
        ctx = AdapterSetup.get_context()
        setup = ctx.adapter_setup if ctx is not None else self.active_adapters
        channels = setup.parallel_channels if setup is not None else 1
        if isinstance(used, BatchSplit):
            head_setup, sizes = used, used.batch_sizes
            if sum(sizes) != rows:
                raise CompositionError(f"The specified batch sizes {sizes} do not match the actual batch size {rows}.")
            starts = np.cumsum([0] + list(sizes))
            outs = [self._one(self.heads[n], hidden[a:b], cls[a:b], inverse, {}, None if ws is None else ws[a:b])
                    for n, a, b in zip(head_setup.children, starts[:-1], starts[1:])]
            return MultiHeadOutput(outs, **multi)
        names = list(used)
        if channels > 1:
            if len(names) != channels:
                raise CompositionError(f"The number of parallel adapters ({channels}) and the number of active heads "
                                       f"({len(names)}: {names}) must match.")
            n = rows // channels
            outs = [self._one(self.heads[h], hidden[i * n:(i + 1) * n], cls[i * n:(i + 1) * n], inverse, {}, ws)
                    for i, h in enumerate(names)]
            return MultiHeadOutput(outs, **multi)
        if len(names) > 1:
            return MultiHeadOutput([self._one(self.heads[h], hidden, cls, inverse, extra, ws) for h in names],
                                   **multi)
        out = self._one(self.heads[names[0]], hidden, cls, inverse, extra, ws)
        return out if return_dict else out.to_tuple()

    def generate(self, input_ids, max_new_tokens=20, attention_mask=None, use_cache=True, **kwargs):
        """Greedy decoding; with an active head it must be a causal LM head, whose logits pick the tokens
        (without heads: the checkpoint's LM projection, as the bare model). Spec: HEAD-10."""
        ctx = AdapterSetup.get_context()
        if ctx is not None and ctx.head_setup:
            raise ConfigError("generate(): an AdapterSetup head_setup is not supported; set active_head.")
        heads = self._active_heads
        if not heads:
            return super().generate(input_ids, max_new_tokens, attention_mask=attention_mask, use_cache=use_cache,
                                    **kwargs)
        names = heads.children if isinstance(heads, BatchSplit) else heads
        want = "seq2seq_lm" if self.arch.is_encoder_decoder else "causal_lm"
        if len(names) != 1 or self.heads[names[0]].head_type != want:
            raise ConfigError(f"generate(): the active head {self.active_head!r} is not one {want} head; set "
                              f"active_head to a {want} head (or to None for the checkpoint's LM projection).")

        def logits_fn(out):
            return out.logits
        return _generate.generate(self, input_ids, max_new_tokens=max_new_tokens, attention_mask=attention_mask,
                                  use_cache=use_cache, logits_fn=logits_fn, **kwargs)

    @mutates
    def encode(self, sentences, batch_size=32, normalize_embeddings=False, **kwargs):
        """Sentence embeddings from the base model's output (heads are not run). Spec: ST-1."""
        saved, self._active_heads = self._active_heads, []
        try:
            return super().encode(sentences, batch_size=batch_size, normalize_embeddings=normalize_embeddings,
                                  **kwargs)
        finally:
            self._active_heads = saved

    def loaded_from_checkpoint(self, weights: dict) -> None:
        """A task checkpoint (config.json's architectures[0] in heads/static.py) brings its head. Spec: HEAD-9."""
        convert_static_head(self, weights)

    def _one(self, head, hidden, cls, inverse, extra, ws=None):
        if ws is not None and head.type.output == "parse" and np.asarray(ws).shape[0] != hidden.shape[0]:
            raise ValueError(f"word_starts has {np.asarray(ws).shape[0]} rows; the head reads {hidden.shape[0]}.")
        fields = head.forward(self, hidden, cls, inverse=inverse, word_starts=ws)
        return ModelOutput(**fields, **{k: v for k, v in extra.items() if v is not None})

    def _used_heads(self, head):
        """The heads of this forward (a list of names or a BatchSplit of names)."""
        if head:
            names = [head]
        elif self.heads and AdapterSetup.get_context() is not None and \
                getattr(AdapterSetup.get_context(), "head_setup", None):
            names = AdapterSetup.get_context().head_setup
            names = [names] if isinstance(names, str) else names
        elif self._active_heads:
            names = self._active_heads
        else:
            return []
        for n in (names.children if isinstance(names, BatchSplit) else names):
            if n not in self.heads:
                raise ValueError(f"Unknown head_name {n!r}; heads: {', '.join(map(repr, self.heads)) or 'none'}.")
        return names

    def _head_input(self, base):
        """The states the heads read: the base model's last hidden state (a family's AdapterModel class may
        rescale it, as adapters' T5AdapterModel does for tied embeddings). Spec: HEAD-7."""
        return base.last_hidden_state

    def _cls_rows(self, base, input_ids, rows):
        """The sequence representation per row: last non-padding token (decoders), else [CLS] / pooler (the
        head's use_pooler decides, so both are computed lazily per head). Spec: HEAD-2."""
        if self.arch.is_encoder_decoder:
            def eos_index():            # only sentence heads read it (an LM head needs no <eos> in input_ids)
                idx = F.eos_token_index(input_ids, self.config.eos_token_id, base.last_hidden_state.shape[1])
                return idx if idx.shape[0] == rows else np.tile(idx, rows // idx.shape[0])   # Parallel's rows
            return _ClsRows(base, None, index_fn=eos_index)
        if self.arch.is_causal:
            idx = F.last_token_index(input_ids, getattr(self.config, "pad_token_id", None),
                                     rows if input_ids is None else np.asarray(input_ids).shape[0])
            if idx.shape[0] != rows:
                idx = np.tile(idx, rows // idx.shape[0])
            return _ClsRows(base, idx)
        return _ClsRows(base, None)

    def _lm_inverse(self):
        """The active setup's first adapter's inverse invertible coupling, for LM heads. Spec: HEAD-6."""
        setup = self.active_adapters
        inv = self.model_level["invertible"]
        if setup is None or setup.first() not in inv.blocks:
            return None
        name = setup.first()
        return lambda x: inv.inverse(name, x)



def _head_names(head_setup) -> list:
    if not head_setup:
        return []
    if isinstance(head_setup, str):
        return [head_setup]
    if isinstance(head_setup, AdapterCompositionBlock):
        return sorted(head_setup.flatten())
    if head_setup is True:
        raise ValueError("head_setup=True (a static head) does not apply to AdapterModel classes; name the head(s).")
    return list(head_setup)


class _ClsRows:
    """Rows of the sequence representation, sliced per head group; resolved by the head's use_pooler."""

    def __init__(self, base, idx, rows=None, index_fn=None):
        self.base, self.idx, self.rows, self.index_fn = base, idx, rows, index_fn

    def __getitem__(self, sl):
        rows = np.arange(self.base.last_hidden_state.shape[0]) if self.rows is None else self.rows
        return _ClsRows(self.base, self.idx, rows[sl], self.index_fn)

    def resolve(self, use_pooler):
        h = self.base.last_hidden_state
        rows = np.arange(h.shape[0]) if self.rows is None else self.rows
        if self.idx is None and self.index_fn is not None:
            self.idx = self.index_fn()
        if self.idx is not None:
            return F.cls_input(h[rows], last_index=self.idx[rows])
        pooled = self.base.pooler_output
        return F.cls_input(h[rows], None if pooled is None else pooled[rows], use_pooler)


def _flatten_choices(name, v):
    if v is None:
        return v
    a = np.asarray(v)
    if name == "inputs_embeds":
        return a.reshape(-1, *a.shape[-2:]) if a.ndim == 4 else a
    return a.reshape(-1, a.shape[-1]) if a.ndim == 3 else a


class BertAdapterModel(ModelWithHeads):
    head_types = ENCODER_HEADS


class RobertaAdapterModel(ModelWithHeads):
    head_types = ENCODER_HEADS


class XLMRobertaAdapterModel(ModelWithHeads):
    head_types = ENCODER_HEADS


class DebertaAdapterModel(ModelWithHeads):
    head_types = DEBERTA_HEADS


class DebertaV2AdapterModel(ModelWithHeads):
    head_types = DEBERTA_HEADS


class BartAdapterModel(ModelWithHeads):
    head_types = ENCDEC_HEADS


class MBartAdapterModel(ModelWithHeads):
    head_types = ENCDEC_HEADS


class PLBartAdapterModel(ModelWithHeads):
    head_types = ENCDEC_HEADS


class T5AdapterModel(ModelWithHeads):
    head_types = ENCDEC_HEADS

    def _head_input(self, base):
        """adapters' T5AdapterModel: with tied embeddings the heads read tied_lm_scale · states (d_model^-0.5); the
        sentence heads' <eos> state stays unscaled (_cls_rows). Spec: T5-6."""
        h = base.last_hidden_state
        if not self.config.tie_word_embeddings:
            return h
        return h * np.asarray(self.arch.tied_lm_scale(self.config), h.dtype)


class MT5AdapterModel(T5AdapterModel):
    pass


class GPT2AdapterModel(ModelWithHeads):
    head_types = DECODER_HEADS


class LlamaAdapterModel(ModelWithHeads):
    head_types = DECODER_HEADS


# model_type -> AdapterModel class (a family added later registers its class here).
ADAPTER_MODEL_CLASSES = {"bert": BertAdapterModel, "roberta": RobertaAdapterModel,
                         "xlm-roberta": XLMRobertaAdapterModel, "gpt2": GPT2AdapterModel, "llama": LlamaAdapterModel,
                         "deberta": DebertaAdapterModel, "deberta-v2": DebertaV2AdapterModel,
                         "bart": BartAdapterModel, "mbart": MBartAdapterModel, "plbart": PLBartAdapterModel,
                         "t5": T5AdapterModel, "mt5": MT5AdapterModel}


# model types adapters 1.3.0 offers no AdapterModel (flexible heads) class for
NO_ADAPTER_MODEL = {"encoder-decoder": "EncoderDecoderModel is wrapped as EncoderDecoderModelWithAdapters, and its "
                                       "decoder keeps transformers' own LM head"}


def adapter_model_class(model_type: str):
    """The AdapterModel class of ``model_type``; a family registered later (models/ REGISTRY) without a class
    here gets one from its Architecture record: ``<Base>AdapterModel`` (from ``model_class``) with the decoder
    head types when ``is_causal``, else the encoder ones. Spec: HEAD-0."""
    if model_type in NO_ADAPTER_MODEL:
        raise ConfigError(f"model_type={model_type!r} has no AdapterModel class (adapters 1.3.0: "
                          f"{NO_ADAPTER_MODEL[model_type]}); load it with AutoModel.")
    if model_type not in ADAPTER_MODEL_CLASSES:
        arch = architecture(model_type)          # ValueError naming the supported model types
        base = arch.model_class[model_type]
        name = (base[:-len("Model")] if base.endswith("Model") else base) + "AdapterModel"
        ADAPTER_MODEL_CLASSES[model_type] = type(name, (ModelWithHeads,), {
            "head_types": (ENCDEC_HEADS if arch.is_encoder_decoder else DECODER_HEADS if arch.is_causal
                           else ENCODER_HEADS), "__module__": __name__})
    return ADAPTER_MODEL_CLASSES[model_type]


class AutoAdapterModel:
    """Load a checkpoint as its family's AdapterModel class (flexible heads). Spec: HEAD-0."""

    @staticmethod
    def from_pretrained(path, *, dtype=np.float32, backend=None, seed=None, revision=None, local_files_only=False,
                        cache_dir=None, token=None) -> ModelWithHeads:
        return load_pretrained(None, path, dtype=dtype, backend=backend, seed=seed, revision=revision,
                               local_files_only=local_files_only, cache_dir=cache_dir, token=token,
                               class_for=adapter_model_class)
