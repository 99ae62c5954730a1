"""Model-level gradients without torch: a float64 BERT with padding, each method and head; forward_backward's
gradients equal central differences of the inference forward's loss (the loss written here from its definition).
Spec: TRAIN-2, TRAIN-ENC, GRAD-*, LOSS-*."""
from __future__ import annotations

import numpy as np
import pytest

import minadapters as ma
from minadapters.models import architecture, bert

D, L, NH, F, V = 8, 2, 2, 11, 23


def tiny(seed=0, cls=ma.BertAdapterModel, model_type="bert"):
    """A float64 2-layer encoder with random weights and biases, dropout 0 in its config."""
    rng = np.random.default_rng(seed)
    raw = {"model_type": model_type, "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": NH,
           "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 16, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0 if model_type == "bert" else 1,
           "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    cfg = bert.EncoderConfig.from_dict(raw)
    shapes = dict(bert.expected_shapes(cfg), **{"pooler.dense.weight": (D, D), "pooler.dense.bias": (D,)})
    p = {k: (1.0 if k.endswith("LayerNorm.weight") else 0.0) + 0.4 * rng.standard_normal(s) for k, s in shapes.items()}
    model = cls(architecture(model_type), cfg, p, dtype=np.float64, backend="numpy", seed=seed)
    model.raw_config = raw
    return model


def to64(model, name, seed=1, noise=0.3):
    rng = np.random.default_rng(seed)
    for _, (d, leaf) in model.adapter_param_refs(name).items():
        d[leaf] = d[leaf].astype(np.float64) + noise * rng.standard_normal(d[leaf].shape)


def batch(B=3, T=6, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, V, (B, T))
    mask = np.ones((B, T), np.int64)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return np.where(mask == 1, ids, 0), mask


def ce(logits, y):
    m = logits.max(-1, keepdims=True)
    lp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    return -lp[np.arange(len(y)), y].mean()


METHODS = {
    "seq_bn": "seq_bn",
    "seq_bn_flags": {"mh_adapter": True, "output_adapter": True, "reduction_factor": 4, "non_linearity": "gelu",
                     "original_ln_before": True, "original_ln_after": False, "residual_before_ln": "post_add",
                     "ln_after": True, "adapter_residual_before_ln": True, "scaling": "learned"},
    "double_seq_bn": "double_seq_bn",
    "par_bn": "par_bn",
    "lora": "lora[r=3,alpha=5,intermediate_lora=True,output_lora=True,attn_matrices=['q','k','v']]",
    "ia3": "ia3",
    "prefix_tuning": "prefix_tuning[prefix_length=3,bottleneck_size=5]",
    "mam": "mam",
    "prompt_tuning": "prompt_tuning[prompt_length=3]",
    "seq_bn_gated": "seq_bn[use_gating=True]",
    "lora_gated": "lora[use_gating=True,intermediate_lora=True]",
    "ia3_gated": "ia3[use_gating=True]",
    "prefix_gated": "prefix_tuning[prefix_length=2,use_gating=True]",
    "prefix_gated_shared": "prefix_tuning[prefix_length=2,use_gating=True,shared_gating=True]",
    "unipelt": "unipelt",
    "vera": "vera[r=3,attn_matrices=['q','k','v']]",
    "dora": "lora[r=2,alpha=3,use_dora=True,intermediate_lora=True]",
    "seq_bn_inv": "seq_bn_inv",
    "loreft": "loreft[r=2,dropout=0.0,prefix_positions=1,suffix_positions=2]",
    "noreft": "noreft[r=2,dropout=0.0,prefix_positions=2,suffix_positions=2]",
    "direft_tied_overlap": "direft[r=3,dropout=0.0,prefix_positions=3,suffix_positions=2,tied_weights=True]",
    "compacter": "compacter[reduction_factor=2,phm_dim=2]",
    "compacter_pp": "compacter++[reduction_factor=2,phm_dim=2]",
    "phm_unshared_factorized_rule": {"mh_adapter": False, "output_adapter": True, "reduction_factor": 2,
                                     "non_linearity": "gelu", "original_ln_before": True, "original_ln_after": True,
                                     "residual_before_ln": True, "phm_layer": True, "phm_dim": 2,
                                     "shared_phm_rule": False, "factorized_phm_rule": True,
                                     "factorized_phm_W": False, "phm_c_init": "uniform"},
    "phm_shared_W": {"mh_adapter": False, "output_adapter": True, "reduction_factor": 2, "non_linearity": "relu",
                     "original_ln_before": True, "original_ln_after": True, "residual_before_ln": True,
                     "phm_layer": True, "phm_dim": 4, "shared_W_phm": True, "phm_rank": 2},
    "dora_vera": {"architecture": "lora", "r": 2, "vera_d": 0.5, "vera_b": 0.2, "use_dora": True,
                  "init_weights": "vera"},
    "prompt_tuning_after_bos": {"architecture": "prompt_tuning", "prompt_length": 2, "combine": "prefix_after_bos"},
}


@pytest.mark.spec("TRAIN-2", "TRAIN-ENC", "GRAD-BN-1", "GRAD-BN-2", "GRAD-BN-3", "GRAD-LORA", "GRAD-IA3",
                  "GRAD-PREFIX", "GRAD-PROMPT", "GRAD-GATE", "GRAD-VERA", "GRAD-DORA", "GRAD-PHM", "GRAD-REFT", "GRAD-INV", "GRAD-HEAD",
                  "LOSS-CE")
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_gradients_equal_finite_differences(method, model_type):
    model = tiny(model_type=model_type)
    model.add_adapter("a", config=METHODS[method])
    model.add_classification_head("a", num_labels=3)
    to64(model, "a")
    model.train_adapter("a")
    ids, mask = batch()
    y = np.array([0, 2, 1])
    out = model.forward_backward(ids, mask, labels=y)
    model.eval()
    loss_ref = ce(model(ids, mask).logits, y)
    assert out.loss == pytest.approx(loss_ref, rel=1e-10), "training forward differs from the inference forward"
    params = model.trainable_parameters()
    assert set(model.grads) == set(params), sorted(set(model.grads) ^ set(params))[:4]
    rng = np.random.default_rng(5)
    for key, arr in params.items():
        flat = arr.reshape(-1)
        for j in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + 1e-6
            hi = ce(model(ids, mask).logits, y)
            flat[j] = old - 1e-6
            lo = ce(model(ids, mask).logits, y)
            flat[j] = old
            num = (hi - lo) / 2e-6
            got = model.grads[key].reshape(-1)[j]
            assert abs(got - num) <= 1e-6 + 1e-5 * abs(num), f"{method} d{key}[{j}] = {got}, but should be {num}"


@pytest.mark.spec("TRAIN-2")
def test_bare_model_takes_grad_output():
    """L = Σ G ⊙ h on the bare model (no head): the gradient of a LoRA weight by finite differences."""
    model = tiny(cls=ma.AdapterModel)
    model.add_adapter("a", config="lora")
    to64(model, "a")
    model.train_adapter("a")
    ids, mask = batch()
    G = np.random.default_rng(3).standard_normal((3, 6, D))
    out = model.forward_backward(ids, mask, grad_output=G)
    key = "encoder.layer.1.attention.self.value.loras.a.lora_A"
    A_ = model.trainable_parameters()[key]
    old = A_[0, 1]
    A_[0, 1] = old + 1e-6
    hi = (G * model(ids, mask).last_hidden_state).sum()
    A_[0, 1] = old - 1e-6
    lo = (G * model(ids, mask).last_hidden_state).sum()
    A_[0, 1] = old
    assert model.grads[key][0, 1] == pytest.approx((hi - lo) / 2e-6, rel=1e-5)
    assert out.loss == pytest.approx((G * model(ids, mask).last_hidden_state).sum(), rel=1e-10)
    with pytest.raises(ValueError, match="grad_output"):
        model.forward_backward(ids, mask)


@pytest.mark.spec("LOSS-MSE", "LOSS-BCE", "GRAD-HEAD")
@pytest.mark.parametrize("head", ["regression", "multilabel", "tagging", "pooler"])
def test_head_losses_by_finite_differences(head):
    model = tiny()
    model.add_adapter("a", config="seq_bn")
    to64(model, "a")
    ids, mask = batch()
    rng = np.random.default_rng(2)
    if head == "regression":
        model.add_classification_head("a", num_labels=1)
        y = rng.standard_normal(3)
        loss = lambda o: ((o.logits.reshape(-1) - y) ** 2).mean()  # noqa: E731
    elif head == "multilabel":
        model.add_classification_head("a", num_labels=4, multilabel=True)
        y = rng.integers(0, 2, (3, 4)).astype(float)
        loss = lambda o: (np.logaddexp(0, o.logits) - o.logits * y).mean()  # noqa: E731
    elif head == "pooler":
        model.add_classification_head("a", num_labels=3, use_pooler=True)
        y = np.array([2, 0, 1])
        loss = lambda o: ce(o.logits, y)  # noqa: E731
    else:
        model.add_tagging_head("a", num_labels=4)
        y = rng.integers(0, 4, (3, 6))
        y[0, 0] = -100
        keep = (mask.reshape(-1) == 1) & (y.reshape(-1) != -100)
        loss = lambda o: ce(o.logits.reshape(-1, 4)[keep], y.reshape(-1)[keep])  # noqa: E731
    model.train_adapter("a")
    for k, v in list(model.heads["a"].params.items()):
        model.heads["a"].params[k] = v + 0.3 * rng.standard_normal(v.shape)
    out = model.forward_backward(ids, mask, labels=y)
    model.eval()
    assert out.loss == pytest.approx(loss(model(ids, mask)), rel=1e-10)
    for key, arr in model.trainable_parameters().items():
        flat = arr.reshape(-1)
        j = flat.size // 2
        old = flat[j]
        flat[j] = old + 1e-6
        hi = loss(model(ids, mask))
        flat[j] = old - 1e-6
        lo = loss(model(ids, mask))
        flat[j] = old
        num = (hi - lo) / 2e-6
        assert abs(model.grads[key].reshape(-1)[j] - num) <= 1e-6 + 1e-5 * abs(num), f"{head} d{key}"


def tiny_decoder(model_type, seed=0):
    """A float64 2-layer GPT-2 or LLaMA (GQA: 2 query heads, 1 key/value head) with dropout 0."""
    rng = np.random.default_rng(seed)
    if model_type == "gpt2":
        raw = {"model_type": "gpt2", "n_embd": D, "n_layer": L, "n_head": NH, "n_inner": F, "vocab_size": V,
               "n_positions": 16, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "pad_token_id": 0}
        cls = ma.GPT2AdapterModel
    else:
        raw = {"model_type": "llama", "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": NH,
               "num_key_value_heads": 1, "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 16,
               "attention_dropout": 0.0, "pad_token_id": 0, "rms_norm_eps": 1e-6}
        cls = ma.LlamaAdapterModel
    arch = architecture(model_type)
    cfg = arch.config_class.from_dict(raw)
    p = {k: (1.0 if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "norm.weight", "layernorm.weight"))
             else 0.0) + 0.4 * rng.standard_normal(s) for k, s in arch.expected_shapes(cfg).items()}
    model = cls(arch, cfg, p, dtype=np.float64, backend="numpy", seed=seed)
    model.raw_config = raw
    return model


DEC_METHODS = {"seq_bn": "seq_bn", "par_bn": "par_bn", "ia3": "ia3",
               "lora": "lora[r=2,alpha=3,attn_matrices=['q','k','v'],intermediate_lora=True,output_lora=True]",
               "lora_qv": "lora[r=2,alpha=3,attn_matrices=['q','v']]",
               "prefix_tuning": "prefix_tuning[prefix_length=2,bottleneck_size=5]",
               "prefix_gated": "prefix_tuning[prefix_length=2,bottleneck_size=5,use_gating=True]",
               "seq_bn_gated": "seq_bn[use_gating=True]"}


def lm_ce(logits, y):
    z, t = logits[:, :-1].reshape(-1, logits.shape[-1]), y[:, 1:].reshape(-1)
    keep = t != -100
    return ce(z[keep], t[keep])


@pytest.mark.spec("TRAIN-DEC", "GRAD-RMS", "GRAD-ROPE", "GRAD-LORA", "LOSS-LM", "LOSS-CE")
@pytest.mark.parametrize("head", ["causal_lm", "classification"])
@pytest.mark.parametrize("method", sorted(DEC_METHODS))
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_decoder_gradients_equal_finite_differences(model_type, method, head):
    model = tiny_decoder(model_type)
    model.add_adapter("a", config=DEC_METHODS[method])
    if head == "causal_lm":
        model.add_causal_lm_head("a", layers=2)
    else:
        model.add_classification_head("a", num_labels=3)
    to64(model, "a")
    model.train_adapter("a")
    ids, mask = batch()
    if head == "causal_lm":
        y = np.where(mask == 1, ids, -100)
        loss = lambda o: lm_ce(o.logits, y)  # noqa: E731
    else:
        y = np.array([0, 2, 1])
        loss = lambda o: ce(o.logits, y)  # noqa: E731
    out = model.forward_backward(ids, mask, labels=y)
    model.eval()
    assert out.loss == pytest.approx(loss(model(ids, mask)), rel=1e-10)
    params = model.trainable_parameters()
    assert set(model.grads) == set(params), sorted(set(model.grads) ^ set(params))[:4]
    rng = np.random.default_rng(5)
    for key, arr in params.items():
        flat = arr.reshape(-1)
        for j in rng.choice(flat.size, size=min(2, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + 1e-6
            hi = loss(model(ids, mask))
            flat[j] = old - 1e-6
            lo = loss(model(ids, mask))
            flat[j] = old
            num = (hi - lo) / 2e-6
            got = model.grads[key].reshape(-1)[j]
            assert abs(got - num) <= 1e-6 + 1e-5 * abs(num), f"{model_type} {method} d{key}[{j}] = {got}, not {num}"


BLOCKS = {
    "stack_bn": (("seq_bn", "double_seq_bn"), lambda: ma.Stack("x", "y"), "adapter"),
    "stack_lora": (("lora[r=2,alpha=3,attn_matrices=['q','k','v']]", "lora[r=3,alpha=2]"),
                   lambda: ma.Stack("x", "y"), "adapter"),
    "stack_lora_ia3": (("lora[r=2,alpha=3]", "ia3"), lambda: ma.Stack("x", "y"), "adapter"),
    "stack_bn_lora": (("seq_bn", "lora"), lambda: ma.Stack("x", "y"), "adapter"),
    "batchsplit_bn": (("seq_bn", "par_bn"), lambda: ma.BatchSplit("x", "y", batch_sizes=[1, 2]), "adapter"),
    "batchsplit_lora": (("lora", "lora[r=3,alpha=5]"), lambda: ma.BatchSplit("x", "y", batch_sizes=[2, 1]), "adapter"),
    "average_bn": (("seq_bn", "seq_bn[reduction_factor=2]"), lambda: ma.Average("x", "y", weights=[0.3, 0.7]),
                   "adapter"),
    "average_lora": (("lora", "lora[r=2]"), lambda: ma.Average("x", "y", weights=[2.0, 1.0]), "adapter"),
    "split_bn": (("seq_bn", "double_seq_bn"), lambda: ma.Split("x", "y", splits=[2, 4]), "adapter"),
    "stack_prefix": (("prefix_tuning[prefix_length=2]", "prefix_tuning[prefix_length=3,use_gating=True]"),
                     lambda: ma.Stack("x", "y"), "adapter"),
    "batchsplit_prefix": (("prefix_tuning[prefix_length=2]", "prefix_tuning[prefix_length=4,use_gating=True]"),
                          lambda: ma.BatchSplit("x", "y", batch_sizes=[2, 1]), "adapter"),
    "fuse": (("seq_bn", "seq_bn[reduction_factor=2]"), lambda: ma.Fuse("x", "y"), "fusion"),
    "fuse_static_residual_before": (("seq_bn", "seq_bn"), lambda: ma.Fuse("x", "y"), "fusion_static"),
    "fuse_unfreeze": (("seq_bn", "seq_bn[reduction_factor=4]"), lambda: ma.Fuse("x", "y"), "fusion_unfreeze"),
    "stack_fuse": (("seq_bn", "seq_bn"), lambda: ma.Stack("x", ma.Fuse("x", "y")), "fusion_unfreeze"),
}


def fd_check(model, loss, ids, mask, what, n=2, seed=5):
    rng = np.random.default_rng(seed)
    params = model.trainable_parameters()
    assert set(model.grads) == set(params), f"{what}: {sorted(set(model.grads) ^ set(params))[:4]}"
    for key, arr in params.items():
        flat = arr.reshape(-1)
        for j in rng.choice(flat.size, size=min(n, flat.size), replace=False):
            old = flat[j]
            flat[j] = old + 1e-6
            hi = loss(model(ids, mask))
            flat[j] = old - 1e-6
            lo = loss(model(ids, mask))
            flat[j] = old
            num = (hi - lo) / 2e-6
            got = model.grads[key].reshape(-1)[j]
            assert abs(got - num) <= 1e-6 + 1e-5 * abs(num), f"{what} d{key}[{j}] = {got}, but should be {num}"


@pytest.mark.spec("TRAIN-COMP", "GRAD-FUSION")
@pytest.mark.parametrize("case", sorted(BLOCKS))
def test_block_gradients_equal_finite_differences(case):
    (cx, cy), block, mode = BLOCKS[case]
    model = tiny()
    model.add_adapter("x", config=cx)
    model.add_adapter("y", config=cy)
    for n in ("x", "y"):
        to64(model, n, seed=len(n) + (n == "y"))
    model.add_classification_head("h", num_labels=3)
    setup = block()
    if mode.startswith("fusion"):
        model.add_adapter_fusion(ma.Fuse("x", "y"), "static" if mode == "fusion_static" else "dynamic")
        if mode == "fusion_static":
            fcfg = model.adapters_config.fusions["x,y"][0]
            model.adapters_config.fusions["x,y"] = (fcfg.replace(residual_before=True), ["x", "y"])
            for layer in model.layers_of("bottleneck"):
                if "x,y" in layer.fusions:
                    layer.fusions["x,y"].config = model.adapters_config.fusions["x,y"][0]
        for _, (d, leaf) in model.fusion_param_refs("x,y").items():
            d[leaf] = d[leaf].astype(np.float64) + 0.2 * np.random.default_rng(4).standard_normal(d[leaf].shape)
        model.train_adapter_fusion(setup, unfreeze_adapters=mode == "fusion_unfreeze")
    else:
        model.train_adapter(setup)
    model.active_head = "h"
    ids, mask = batch()
    y = np.array([0, 2, 1])
    out = model.forward_backward(ids, mask, labels=y)
    model.eval()
    assert out.loss == pytest.approx(ce(model(ids, mask).logits, y), rel=1e-10), "training ≠ inference forward"
    fd_check(model, lambda o: ce(o.logits, y), ids, mask, case)


@pytest.mark.spec("LOSS-QA", "LOSS-MC", "GRAD-HEAD")
@pytest.mark.parametrize("head", ["question_answering", "multiple_choice"])
def test_span_and_choice_heads_by_finite_differences(head):
    model = tiny()
    model.add_adapter("a", config="lora")
    to64(model, "a")
    ids, mask = batch()
    if head == "question_answering":
        model.add_qa_head("a")
        targets = {"start_positions": np.array([1, 2, 7]), "end_positions": np.array([3, 2, 0])}

        def loss(o):
            T = o.start_logits.shape[1]
            parts = []
            for z, pos in ((o.start_logits, targets["start_positions"]), (o.end_logits, targets["end_positions"])):
                pos = np.clip(pos, 0, T)
                keep = pos != T
                parts.append(ce(z[keep], pos[keep]))
            return sum(parts) / 2
        call = lambda: model(ids, mask)  # noqa: E731
    else:
        model.add_multiple_choice_head("a", num_choices=3)
        ids, mask = ids.reshape(1, 3, -1), mask.reshape(1, 3, -1)
        targets = {"labels": np.array([2])}
        loss = lambda o: ce(o.logits, targets["labels"])  # noqa: E731
        call = lambda: model(ids, mask)  # noqa: E731
    model.train_adapter("a")
    rng = np.random.default_rng(2)
    for k, v in list(model.heads["a"].params.items()):
        model.heads["a"].params[k] = v + 0.3 * rng.standard_normal(v.shape)
    out = model.forward_backward(ids, mask, **targets)
    model.eval()
    assert out.loss == pytest.approx(loss(call()), rel=1e-10)
    fd_check(model, lambda o: loss(o), ids, mask, head)
