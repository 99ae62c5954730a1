"""AdamW, the linear warm-up / decay schedule and gradient clipping, with torch's semantics. Spec: OPT-ADAMW,
OPT-SCHED, OPT-CLIP (spec/training.md).

Parameters and gradients are dicts name -> NumPy array (``model.trainable_parameters()``, ``model.grads``); the
optimiser updates the arrays in place, so the model sees the new values without reassignment."""
from __future__ import annotations

import math

import numpy as np


class AdamW:
    """torch.optim.AdamW: decoupled weight decay, bias-corrected moments, eps added after the square root.
    Spec: OPT-ADAMW.

        p ← p (1 − lr·λ);  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²
        p ← p − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
    A parameter without a gradient in a step is left alone (its state does not advance), as torch skips it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        params = dict(params)
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"AdamW: {name}={value!r}; expected a number >= 0.")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW: betas={betas!r}; expected two numbers in [0, 1).")
        for k, v in params.items():
            if not isinstance(v, np.ndarray) or not np.issubdtype(v.dtype, np.floating):
                raise TypeError(f"AdamW: parameter {k!r} is {type(v).__name__}; expected a float NumPy array.")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(betas), float(eps), float(weight_decay)
        self.initial_lr = self.lr
        self.state: dict = {}                 # name -> (step, m, v)

    def step(self, grads: dict) -> None:
        """One update of every parameter that has a gradient in ``grads``. Spec: OPT-ADAMW."""
        unknown = sorted(set(grads) - set(self.params))
        if unknown:
            raise KeyError(f"AdamW.step: gradients for unknown parameters {unknown[:3]}; the optimiser holds "
                           f"{len(self.params)} parameters.")
        b1, b2 = self.betas
        for name, p in self.params.items():
            g = grads.get(name)
            if g is None:
                continue
            t, m, v = self.state.get(name, (0, np.zeros_like(p), np.zeros_like(p)))
            t += 1
            g = np.asarray(g, p.dtype).reshape(p.shape)
            p *= p.dtype.type(1.0 - self.lr * self.weight_decay)
            m += (g - m) * p.dtype.type(1.0 - b1)                     # torch: exp_avg.lerp_(grad, 1 − β₁)
            v *= p.dtype.type(b2)
            v += p.dtype.type(1.0 - b2) * g * g
            denom = np.sqrt(v) / p.dtype.type(math.sqrt(1.0 - b2 ** t)) + p.dtype.type(self.eps)
            p -= p.dtype.type(self.lr / (1.0 - b1 ** t)) * (m / denom)
            self.state[name] = (t, m, v)


class LinearSchedule:
    """transformers' get_linear_schedule_with_warmup: lr = lr₀ · f(step), f rising 0 → 1 over the warm-up steps,
    then falling linearly to 0 at num_training_steps. Like torch's LambdaLR it sets f(0) when built. Spec: OPT-SCHED.

        f(s) = s / max(1, w)  for s < w;      max(0, (n − s) / max(1, n − w))  otherwise"""

    def __init__(self, optimizer: AdamW, num_warmup_steps: int, num_training_steps: int):
        if num_warmup_steps < 0 or num_training_steps < 0:
            raise ValueError(f"LinearSchedule: num_warmup_steps={num_warmup_steps}, num_training_steps="
                             f"{num_training_steps}; expected integers >= 0.")
        self.optimizer, self.warmup, self.total = optimizer, int(num_warmup_steps), int(num_training_steps)
        self.base_lr = optimizer.initial_lr
        self.last_step = 0
        optimizer.lr = self.base_lr * self.factor(0)

    def factor(self, s: int) -> float:
        if s < self.warmup:
            return s / max(1, self.warmup)
        return max(0.0, (self.total - s) / max(1, self.total - self.warmup))

    def step(self) -> None:
        self.last_step += 1
        self.optimizer.lr = self.base_lr * self.factor(self.last_step)

    def get_last_lr(self) -> list:
        return [self.optimizer.lr]


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps) -> LinearSchedule:
    """transformers' name for LinearSchedule. Spec: OPT-SCHED."""
    return LinearSchedule(optimizer, num_warmup_steps, num_training_steps)


def clip_grad_norm_(grads: dict, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_: scale every gradient in place by min(1, max_norm / (‖g‖₂ + 1e-6)), ‖g‖₂ the
    norm of all gradients together; returns that total norm. Spec: OPT-CLIP."""
    if not grads:
        return 0.0
    total = math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads.values()))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return total
