"""Head losses as (value, gradient) pairs, with torch's reductions. Spec: LOSS-CE, LOSS-MSE, LOSS-BCE.

Each returns the mean loss (a float in the logits' dtype) and dL/dlogits of the logits' shape."""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100          # torch.nn.CrossEntropyLoss's default ignore_index


def cross_entropy(logits, labels, *, ignore_index=IGNORE_INDEX):
    """L = mean over rows with label ≠ ignore_index of −log softmax(z)[y]. Spec: LOSS-CE.

        dL/dz = (softmax(z) − onehot(y)) / n_valid on valid rows, 0 on ignored ones
    logits (N, C), labels (N,) int. No valid row: nan and zero gradient (torch returns nan)."""
    labels = np.asarray(labels).reshape(-1)
    z = logits.reshape(-1, logits.shape[-1])
    if labels.shape[0] != z.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries; the logits have {z.shape[0]} rows.")
    valid = labels != ignore_index
    C = z.shape[1]
    if np.any(valid & ((labels < 0) | (labels >= C))):
        bad = labels[valid & ((labels < 0) | (labels >= C))][0]
        raise ValueError(f"labels contains {int(bad)}; expected class ids in [0, {C}) or {ignore_index} (ignored).")
    m = z.max(-1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
    n = int(valid.sum())
    grad = np.zeros_like(z)
    if n == 0:
        return z.dtype.type(np.nan), grad.reshape(logits.shape)
    rows = np.nonzero(valid)[0]
    loss = -logp[rows, labels[rows]].sum() / n
    grad[rows] = np.exp(logp[rows])
    grad[rows, labels[rows]] -= 1.0
    return z.dtype.type(loss), (grad / n).astype(z.dtype).reshape(logits.shape)


def mse(pred, target):
    """L = mean((p − t)²) over all entries; dL/dp = 2 (p − t) / n. Spec: LOSS-MSE."""
    t = np.asarray(target, pred.dtype).reshape(pred.shape) if np.size(target) == pred.size else None
    if t is None:
        raise ValueError(f"labels has {np.size(target)} entries; the regression head outputs {pred.size}.")
    diff = pred - t
    return pred.dtype.type((diff * diff).mean()), (2.0 * diff / diff.size).astype(pred.dtype)


def bce_with_logits(logits, targets):
    """L = mean(max(z, 0) − z t + log(1 + e^(−|z|))) (stable); dL/dz = (σ(z) − t) / n. Spec: LOSS-BCE."""
    t = np.asarray(targets, logits.dtype)
    if t.shape != logits.shape:
        raise ValueError(f"labels has shape {t.shape}; the multilabel head outputs {logits.shape}.")
    z = logits
    loss = (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean()
    sig = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
    return z.dtype.type(loss), ((sig - t) / z.size).astype(z.dtype)
