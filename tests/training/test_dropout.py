"""Seeded dropout in train()-mode training: mask statistics, reproducibility, finite differences through fixed masks.
Spec: GRAD-DROPOUT. (Torch's generator cannot be matched, so no oracle: the masks are checked by their law.)"""
from __future__ import annotations

import numpy as np
import pytest

from minadapters.functional.backward import dropout_mask

from test_model_gradients import batch, tiny, tiny_decoder, to64

DROPS = {"bert": dict(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3),
         "gpt2": dict(resid_pdrop=0.2, embd_pdrop=0.1, attn_pdrop=0.3),
         "llama": dict(attention_dropout=0.3)}


@pytest.mark.spec("GRAD-DROPOUT")
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mask_rate_and_scale(p):
    m = dropout_mask(np.random.default_rng(0), (400, 500), p, np.float64)
    n = m.size
    dropped = (m == 0).mean()
    assert abs(dropped - p) < 4 * np.sqrt(p * (1 - p) / n), f"dropped share {dropped}, but should be {p}"
    assert np.allclose(m[m != 0], 1 / (1 - p)), "kept entries are scaled by 1 / (1 − p)"
    assert abs(m.mean() - 1) < 4 * np.sqrt(p / (1 - p) / n), "E[mask] = 1"
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_mask(np.random.default_rng(0), (2,), 1.0, np.float64)


def model_for(family, method="lora"):
    model = tiny() if family == "bert" else tiny_decoder(family)
    model.raw_config = dict(model.raw_config, **DROPS[family])
    model.add_adapter("a", config=method)
    model.add_classification_head("a", num_labels=3)
    to64(model, "a")
    model.train_adapter("a")
    return model


@pytest.mark.spec("GRAD-DROPOUT")
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_seeded_dropout_is_reproducible_and_differs_from_eval(family):
    model = model_for(family)
    ids, mask = batch()
    y = np.array([0, 2, 1])
    model.manual_seed(3)
    a = model.forward_backward(ids, mask, labels=y).loss
    ga = {k: v.copy() for k, v in model.grads.items()}
    model.zero_grad()
    model.manual_seed(3)
    b = model.forward_backward(ids, mask, labels=y).loss
    assert a == b and all(np.array_equal(ga[k], model.grads[k]) for k in ga), "same seed, same masks"
    model.zero_grad()
    c = model.forward_backward(ids, mask, labels=y).loss            # the generator moved on: new masks
    assert c != a
    model.eval()
    model.zero_grad()
    d = model.forward_backward(ids, mask, labels=y).loss
    model.raw_config = {k: (0.0 if k in DROPS[family] else v) for k, v in model.raw_config.items()}
    model.train()
    model.zero_grad()
    assert d != a and model.forward_backward(ids, mask, labels=y).loss == pytest.approx(d, rel=1e-12), \
        "at p = 0 train() equals eval()"


@pytest.mark.spec("GRAD-DROPOUT")
@pytest.mark.parametrize("family,method", [("bert", "seq_bn"), ("bert", "lora"), ("gpt2", "lora"),
                                           ("llama", "prefix_tuning[prefix_length=2]")])
def test_gradients_through_fixed_masks_equal_finite_differences(family, method):
    model = model_for(family, method)
    model.heads["a"].config["dropout_prob"] = 0.25               # the head's own dropout too
    ids, mask = batch()
    y = np.array([1, 0, 2])

    def loss():
        model.manual_seed(11)
        model.zero_grad()
        return model.forward_backward(ids, mask, labels=y).loss
    loss()
    grads = {k: v.copy() for k, v in model.grads.items()}
    rng = np.random.default_rng(0)
    for key, arr in model.trainable_parameters().items():
        flat = arr.reshape(-1)
        j = int(rng.integers(flat.size))
        old = flat[j]
        flat[j] = old + 1e-6
        hi = loss()
        flat[j] = old - 1e-6
        lo = loss()
        flat[j] = old
        num = (hi - lo) / 2e-6
        assert abs(grads[key].reshape(-1)[j] - num) <= 1e-6 + 1e-5 * abs(num), f"{family} {method} d{key}"
