"""adapters' training API on our models: train_adapter, freeze_model, train / eval, named parameters and their
gradients as NumPy arrays, one forward + backward. Spec: TRAIN-1 (spec/training.md).

Names are adapters 1.3.0's state-dict keys of the bare base model (``encoder.layer.0.output.adapters.a....``,
``prefix_tuning.prefix_tunings.a....``) and ``heads.<name>.<i>.<leaf>`` for heads (a flex-head model's upstream
names carry the base-model prefix, ``bert.``, in front of the adapter keys)."""
from __future__ import annotations

import numpy as np

from ..composition import Fuse, parse_composition
from ..configuration import LoRAConfig
from ..context import AdapterSetup
from ..errors import ConfigError
from ..outputs import ModelOutput
from ..validation import check_forward_inputs
from .engine import forward_backward


class TrainingMixin:
    """Training methods of AdapterModel (state: ``training``, ``model_frozen``, ``grads``, the trained names)."""

    training = False
    model_frozen = False
    _trained: frozenset = frozenset()

    _dropout_rng = None
    dropout_seed = 0

    def manual_seed(self, seed: int) -> None:
        """Restart the dropout generator (numpy.random.default_rng(seed)) of train()-mode training. Spec: GRAD-DROPOUT."""
        self.dropout_seed = int(seed)
        self._dropout_rng = np.random.default_rng(self.dropout_seed)

    def dropout_generator(self):
        """The generator train()-mode masks are drawn from (default_rng(dropout_seed), created on first use)."""
        if self._dropout_rng is None:
            self._dropout_rng = np.random.default_rng(self.dropout_seed)
        return self._dropout_rng

    def train(self, mode: bool = True):
        """Training mode: forward_backward applies the family's dropout (seeded, GRAD-DROPOUT); the inference
        forward never drops. Returns the model. Spec: TRAIN-1."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode (no dropout). Returns the model. Spec: TRAIN-1."""
        return self.train(False)

    def freeze_model(self, freeze: bool = True) -> None:
        """Freeze (or unfreeze) every base-model weight, as adapters does. Spec: TRAIN-1."""
        self.model_frozen = bool(freeze)

    def train_adapter(self, adapter_setup, train_embeddings: bool = False) -> None:
        """train(), freeze the base model, make the setup's adapters the trainable ones and activate them.
        Spec: TRAIN-1."""
        if train_embeddings:
            raise ConfigError("train_adapter(train_embeddings=True): training the input embeddings is not "
                              "implemented in minadapters yet; allowed: False.")
        setup = parse_composition(adapter_setup)
        if setup is None:
            raise ConfigError(f"train_adapter({adapter_setup!r}): name at least one adapter.")
        self._check_names(setup)
        self.train()
        self.freeze_model(True)
        self._trained = frozenset(setup.flatten())
        self.set_active_adapters(setup)
        self.zero_grad()

    def train_adapter_fusion(self, adapter_setup, unfreeze_adapters: bool = False) -> None:
        """train(), freeze the base model, make the setup's fusion layers (a Fuse, or Fuse children of the setup)
        trainable (and its adapters when ``unfreeze_adapters``), activate the setup. Spec: TRAIN-1."""
        setup = parse_composition(adapter_setup)
        if setup is None:
            raise ConfigError(f"train_adapter_fusion({adapter_setup!r}): name a Fuse block.")
        self._check_names(setup)
        self.train()
        self.freeze_model(True)
        # COMPAT(adapters): enable_adapters unfreezes the setup itself if it is a Fuse, and its direct Fuse children
        fusions = [b.name for b in [setup, *setup] if isinstance(b, Fuse)]
        self._trained = frozenset(fusions) | (frozenset(setup.flatten()) if unfreeze_adapters else frozenset())
        self.set_active_adapters(setup)
        self.zero_grad()

    # ---- parameters and gradients ----------------------------------------------------------------------------------
    def _head_param_refs(self) -> dict:
        """``heads.<name>.<i>.<leaf>`` -> (dict, key) of every head (none on the bare model)."""
        return {}

    def named_parameters(self, trainable_only: bool = False):
        """(name, array) of the base weights (frozen while model_frozen), every adapter's and every head's
        parameters, the arrays themselves (in-place updates change the model). Spec: TRAIN-1."""
        if not trainable_only:
            yield from self.params.items()
        names = self._trained if trainable_only else [*self.adapters_config, *self.adapters_config.fusions]
        for name in sorted(names):
            refs = (self.adapter_param_refs(name) if name in self.adapters_config.adapters else
                    self.fusion_param_refs(name))
            frozen_shared = trainable_only and self._is_vera(name)
            for key, (d, leaf) in refs.items():
                # VeRA's shared A / B stay frozen in training (adapters' train_adapter); other shared ones train
                if frozen_shared and key.startswith("shared_parameters."):
                    continue
                if trainable_only and key.endswith(".parametrizations.weight.0.base"):
                    continue                  # LoReFT's orthogonal base is a buffer in torch, not a parameter
                yield key, d[leaf]
        for key, (d, leaf) in self._head_param_refs().items():
            yield key, d[leaf]

    def _is_vera(self, name) -> bool:
        return any(isinstance(c.get("vera_d"), float) or isinstance(c.get("vera_b"), float)
                   for c in self.adapters_config.members(name, LoRAConfig))

    def trainable_parameters(self) -> dict:
        """name -> array of what takes gradients: the adapters named in train_adapter and the heads (adapters
        never freezes heads). Spec: TRAIN-1."""
        return dict(self.named_parameters(trainable_only=True))

    def zero_grad(self) -> None:
        """Forget the accumulated gradients (torch's zero_grad(set_to_none=True))."""
        self.grads = {}

    def _loss_fn(self, targets, attention_mask, grad_output):
        """The bare model's loss: L = Σ grad_output ⊙ last_hidden_state (so dL/dh = grad_output)."""
        if grad_output is None:
            raise ValueError("forward_backward(): the bare model has no head; pass grad_output=dL/d last_hidden_state "
                             "(an array of its shape), or load the model with AutoAdapterModel and add a head.")

        def fn(fields):
            h = fields["last_hidden_state"]
            g = np.asarray(grad_output, h.dtype)
            if g.shape != h.shape:
                raise ValueError(f"grad_output has shape {g.shape}; last_hidden_state has {h.shape}.")
            return h.dtype.type((g * h).sum()), g, {}
        return fn

    def _training_inputs(self, inputs: dict) -> dict:
        """The forward's inputs as the training forward takes them (heads models flatten multiple choices)."""
        return inputs

    def forward_backward(self, input_ids=None, attention_mask=None, token_type_ids=None, *, labels=None,
                         start_positions=None, end_positions=None, grad_output=None, **kwargs):
        """One training forward and backward with the active setup: gradients of the trainable adapters (and
        heads) are added to ``model.grads`` (call zero_grad() between steps, as with torch). ``labels`` (or
        ``start_positions`` / ``end_positions`` for question answering) as adapters' heads take them. Returns a
        ModelOutput with ``loss`` (and the head's logits). Spec: TRAIN-2."""
        inputs = self._training_inputs({"input_ids": input_ids, "attention_mask": attention_mask,
                                        "token_type_ids": token_type_ids, **kwargs})
        inputs = self._check_inputs(**inputs)
        check_forward_inputs(inputs.get("input_ids", np.zeros((1, 1), np.int64)), inputs.get("attention_mask"),
                             inputs.get("token_type_ids"), inputs.get("position_ids"),
                             type_vocab_size=getattr(self.config, "type_vocab_size", None))
        if "past_key_values" in inputs:
            raise ValueError("forward_backward(): past_key_values (a KV cache) is not supported in training.")
        if "attention_mask" in inputs:
            inputs["attention_mask"] = inputs["attention_mask"].astype(np.int64)
        if "grads" not in vars(self):
            self.zero_grad()
        targets = {"labels": labels, "start_positions": start_positions, "end_positions": end_positions}
        fn = self._loss_fn({k: v for k, v in targets.items() if v is not None}, inputs.get("attention_mask"),
                           grad_output)
        ctx = AdapterSetup.get_context()                  # AdapterSetup overrides the active setup, as in forward
        setup = ctx.adapter_setup if ctx is not None and ctx.adapter_setup is not None else \
            self.adapters_config.active_setup
        if ctx is not None and setup is not None:
            self._check_names(setup)
        loss, fields, extra = forward_backward(self, inputs, setup, self._trained, self.grads, fn)
        out = ModelOutput(loss=loss, **extra)
        out.last_hidden_state = fields["last_hidden_state"]
        return out
