"""Training API (train_adapter, freezing, names, refusals) and the optimiser pieces from their definitions.
Spec: TRAIN-1, OPT-ADAMW, OPT-SCHED, OPT-CLIP."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minadapters as ma
from minadapters.errors import CompositionError, ConfigError

from test_model_gradients import batch, tiny, to64


def trained(config="seq_bn", **kw):
    model = tiny(**kw)
    model.add_adapter("a", config=config)
    model.add_classification_head("a", num_labels=2)
    to64(model, "a")
    model.train_adapter("a")
    return model


@pytest.mark.spec("TRAIN-1")
def test_train_adapter_sets_mode_freezes_and_activates():
    model = tiny()
    model.add_adapter("a", config="lora")
    model.add_adapter("b", config="seq_bn")
    model.add_classification_head("a", num_labels=2)
    model.add_classification_head("b", num_labels=2)
    assert model.training is False and model.model_frozen is False
    model.train_adapter("a")
    assert model.training and model.model_frozen
    assert model.active_adapters == ma.Stack("a") and model.active_head == "a"
    names = set(model.trainable_parameters())
    want = set(model.adapter_state_dict("a")) | {k for h in ("a", "b") for k in model.heads[h].param_refs(model)}
    assert names == want, sorted(names ^ want)[:4]
    assert model.eval() is model and model.training is False
    assert model.train() is model and model.training
    every = dict(model.named_parameters())
    assert set(model.params) <= set(every) and set(model.adapter_state_dict("b")) <= set(every)


@pytest.mark.spec("TRAIN-1")
def test_gradients_accumulate_until_zero_grad_and_arrays_are_the_models():
    model = trained()
    ids, mask = batch()
    y = np.array([0, 1, 1])
    model.forward_backward(ids, mask, labels=y)
    first = {k: v.copy() for k, v in model.grads.items()}
    model.forward_backward(ids, mask, labels=y)
    for k in first:
        np.testing.assert_allclose(model.grads[k], 2 * first[k], rtol=1e-12)
    model.zero_grad()
    assert model.grads == {}
    key = next(iter(model.trainable_parameters()))
    model.trainable_parameters()[key][...] += 1.0
    assert np.shares_memory(model.trainable_parameters()[key], dict(model.named_parameters())[key])


@pytest.mark.spec("TRAIN-1")
def test_refusals_name_what_is_wrong():
    ids, mask = batch()
    y = np.array([0, 1, 1])
    model = tiny()
    model.add_adapter("a", config="seq_bn")
    model.add_classification_head("a", num_labels=2)
    model.set_active_adapters("a")
    with pytest.raises(ConfigError, match="train_adapter"):
        model.forward_backward(ids, mask, labels=y)
    model.add_adapter("b", config="seq_bn")
    model.train_adapter(ma.Parallel("a", "b"))
    with pytest.raises(CompositionError, match="inference only"):
        model.forward_backward(ids, mask, labels=y)
    model.add_adapter("c", config="lora")
    model.add_adapter("d", config="lora")
    model.train_adapter(ma.Split("c", "d", splits=[2, 4]))
    with pytest.raises(CompositionError, match="Split over LoRA modules is not implemented"):
        model.forward_backward(ids, mask, labels=y)
    model.train_adapter("a")
    model.add_adapter_fusion(["a", "b"])
    model.raw_config = dict(model.raw_config, attention_probs_dropout_prob=0.1)
    model.train_adapter_fusion(ma.Fuse("a", "b"))
    with pytest.raises(ConfigError, match="attention_probs_dropout_prob"):
        model.forward_backward(ids, mask, labels=y)            # AdapterFusion's score dropout: not implemented
    model.eval()
    model.forward_backward(ids, mask, labels=y)                # eval(): no dropout, trains
    with pytest.raises(ConfigError, match="train_embeddings"):
        model.train_adapter("a", train_embeddings=True)


@pytest.mark.spec("TRAIN-1")
@pytest.mark.parametrize("config,field", [("mtl_lora", "MTLLoRAConfig"), ("loreft[r=8]", "orthogonal"),
                                          ("seq_bn_inv[inv_adapter='glow']", "inv_adapter"),
                                          ("lora[dropout=0.1]", "dropout")])
def test_methods_without_backward_are_refused(config, field):
    model = trained(config)
    with pytest.raises(ConfigError, match=field):
        model.forward_backward(*batch(), labels=np.array([0, 1, 1]))


@pytest.mark.spec("TRAIN-1")
def test_head_types_without_loss_backward_are_refused():
    model = tiny()
    model.add_adapter("a", config="seq_bn")
    model.add_dependency_parsing_head("a", num_labels=3)
    model.train_adapter("a")
    with pytest.raises(ConfigError, match="dependency_parsing"):
        model.forward_backward(*batch(), labels=np.array([0, 1, 1]))


@pytest.mark.spec("OPT-ADAMW")
def test_adamw_two_steps_by_hand():
    """p = 1, g = 0.5 then -1, lr 0.1, λ 0.1, β (0.9, 0.999), eps 1e-8: the update written out from OPT-ADAMW."""
    p = np.array([1.0])
    opt = ma.AdamW({"p": p}, lr=0.1, weight_decay=0.1)
    m = v = 0.0
    want = 1.0
    for t, g in enumerate([0.5, -1.0], start=1):
        opt.step({"p": np.array([g])})
        want *= 1 - 0.1 * 0.1
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        want -= 0.1 / (1 - 0.9 ** t) * m / (math.sqrt(v) / math.sqrt(1 - 0.999 ** t) + 1e-8)
        assert p[0] == pytest.approx(want, rel=1e-12)
    q = np.array([2.0])
    opt2 = ma.AdamW({"p": p, "q": q})
    opt2.step({"p": np.array([1.0])})
    assert q[0] == 2.0 and "q" not in opt2.state, "a parameter without gradient is skipped"
    with pytest.raises(KeyError, match="unknown"):
        opt2.step({"r": np.array([1.0])})
    with pytest.raises(ValueError, match="lr"):
        ma.AdamW({"p": p}, lr=-1)
    with pytest.raises(ValueError, match="betas"):
        ma.AdamW({"p": p}, betas=(0.9, 1.0))


@pytest.mark.spec("OPT-SCHED")
def test_linear_schedule_values():
    opt = ma.AdamW({"p": np.zeros(1)}, lr=1.0)
    sched = ma.get_linear_schedule_with_warmup(opt, 2, 6)
    seen = [sched.get_last_lr()[0]]
    for _ in range(7):
        sched.step()
        seen.append(sched.get_last_lr()[0])
    assert seen == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])


@pytest.mark.spec("OPT-CLIP")
def test_clip_grad_norm():
    grads = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert ma.clip_grad_norm_(grads, 10.0) == pytest.approx(5.0)
    assert grads["a"][0] == 3.0, "a norm under max_norm leaves the gradients alone"
    norm = ma.clip_grad_norm_(grads, 1.0)
    assert norm == pytest.approx(5.0, rel=1e-6)
    assert math.hypot(grads["a"][0], grads["b"][0, 0]) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.spec("TRAIN-1", "OPT-ADAMW")
def test_a_few_steps_reduce_the_loss():
    model = trained("lora")
    ids, mask = batch()
    y = np.array([0, 1, 1])
    opt = ma.AdamW(model.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(15):
        model.zero_grad()
        losses.append(model.forward_backward(ids, mask, labels=y).loss)
        opt.step(model.grads)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.spec("TRAIN-2")
def test_adapter_setup_context_overrides_the_trained_setup():
    model = tiny()
    model.add_adapter("a", config="lora")
    model.add_adapter("b", config="lora")
    model.add_classification_head("h", num_labels=2)
    to64(model, "a")
    to64(model, "b")
    model.train_adapter(ma.Stack("a", "b"))
    model.active_head = "h"
    ids, mask = batch()
    with ma.AdapterSetup("b"):
        model.forward_backward(ids, mask, labels=np.array([0, 1, 1]))
    assert model.grads and not any(".a." in k for k in model.grads) and any(".b." in k for k in model.grads)
    with pytest.raises(ValueError, match="attention_mask holds 2"):
        model.forward_backward(ids, mask * 2, labels=np.array([0, 1, 1]))
