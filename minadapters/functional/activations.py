"""Activation functions by the names adapters / transformers use. Spec: ACT-1."""
from __future__ import annotations

import numpy as np

# Coefficients of W. J. Cody's rational Chebyshev approximation would be more code; this one
# (Numerical Recipes erfc, fractional error < 1.2e-7 everywhere) is evaluated in float64, which
# is far inside the float32 tolerance of the GELU it feeds.
_ERFC_COEF = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
              0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def erf(x):
    """Error function, |error| < 1.2e-7, computed in float64. Spec: ACT-1."""
    z = np.abs(np.asarray(x, dtype=np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = _ERFC_COEF[-1]
    for c in reversed(_ERFC_COEF[:-1]):
        poly = poly * t + c
    erfc = t * np.exp(-z * z + poly)
    return np.sign(x) * (1.0 - erfc)


def _like(y, x):
    return y.astype(x.dtype, copy=False) if isinstance(x, np.ndarray) else y


def gelu(x):
    """Exact GELU x·Φ(x) = x/2·(1 + erf(x/√2)). Spec: ACT-1."""
    return _like(0.5 * x * (1.0 + erf(x / np.sqrt(2.0))), x)


def gelu_new(x):
    """tanh approximation 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))). Spec: ACT-1."""
    c = np.sqrt(2.0 / np.pi).astype(x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + x.dtype.type(0.044715) * x * x * x)))


def gelu_fast(x):
    return 0.5 * x * (1.0 + np.tanh(x * x.dtype.type(0.7978845608) * (1.0 + x.dtype.type(0.044715) * x * x)))


def quick_gelu(x):
    return x * sigmoid(x.dtype.type(1.702) * x)


def sigmoid(x):
    """σ(x) = 1 / (1 + e^(−x)), overflow-safe. Spec: ACT-1."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def silu(x):
    return x * sigmoid(x)


def relu(x):
    return np.maximum(x, 0).astype(x.dtype, copy=False)


def relu6(x):
    return np.clip(x, 0, 6).astype(x.dtype, copy=False)


def leaky_relu(x):
    return np.where(x >= 0, x, x * x.dtype.type(0.01))


def tanh(x):
    return np.tanh(x)


def mish(x):
    return x * np.tanh(np.logaddexp(0, x)).astype(x.dtype, copy=False)


def identity(x):
    return x


def gelu_10(x):
    """GELU clipped to [-10, 10] (transformers ClippedGELUActivation)."""
    return np.clip(gelu(x), -10, 10).astype(x.dtype, copy=False)


def laplace(x, mu=0.707107, sigma=0.282095):
    """0.5·(1 + erf((x − μ)/(σ√2))) (transformers LaplaceActivation)."""
    return _like(0.5 * (1.0 + erf((x - mu) / (sigma * np.sqrt(2.0)))), x)


def relu2(x):
    r = relu(x)
    return r * r


ACTIVATIONS = {
    "relu": relu, "relu6": relu6, "gelu": gelu, "gelu_new": gelu_new, "gelu_fast": gelu_fast,
    "gelu_pytorch_tanh": gelu_new, "quick_gelu": quick_gelu, "gelu_python": gelu, "gelu_accurate": gelu_new,
    "swish": silu, "silu": silu, "tanh": tanh, "sigmoid": sigmoid, "leaky_relu": leaky_relu,
    "leakyrelu": leaky_relu, "linear": identity, "mish": mish, "gelu_10": gelu_10, "laplace": laplace,
    "relu2": relu2, "gelu_python_tanh": gelu_new,
}
# transformers' ACT2FN entries that carry trainable parameters (their weights would be part of the adapter).
PARAMETRIC = ("prelu", "xielu")


def get_activation(name):
    """Resolve an activation name as adapters does (None → identity, lower-cased). Spec: ACT-1."""
    if name is None:
        return identity
    key = str(name).lower()
    if key in PARAMETRIC:
        raise ValueError(f"non_linearity={name!r} has trainable parameters (transformers' {key}); minadapters "
                         f"supports the parameter-free activations: {', '.join(sorted(ACTIVATIONS))}.")
    if key not in ACTIVATIONS:
        raise ValueError(f"non_linearity={name!r} is not a known activation; allowed: {', '.join(sorted(ACTIVATIONS))}.")
    return ACTIVATIONS[key]


# ---- derivatives (training) -------------------------------------------------------------------------------------
def _gelu_grad(x):
    """Φ(x) + x φ(x)."""
    x64 = np.asarray(x, np.float64)
    cdf = 0.5 * (1.0 + erf(x64 / np.sqrt(2.0)))
    return cdf + x64 * np.exp(-0.5 * x64 * x64) / np.sqrt(2.0 * np.pi)


def _gelu_tanh_grad(x, c0=0.7978845608028654, c1=0.044715):
    """d/dx 0.5x(1 + tanh(u)), u = c0 (x + c1 x³)."""
    x64 = np.asarray(x, np.float64)
    t = np.tanh(c0 * (x64 + c1 * x64 ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x64 * (1.0 - t * t) * c0 * (1.0 + 3.0 * c1 * x64 * x64)


def _sigmoid_grad(x):
    s = sigmoid(np.asarray(x, np.float64))
    return s * (1.0 - s)


def _silu_grad(x):
    s = sigmoid(np.asarray(x, np.float64))
    return s * (1.0 + np.asarray(x, np.float64) * (1.0 - s))


# activation name -> f'(x) as a function of the activation's input (float64 where it matters)
ACTIVATION_GRADS = {
    "relu": lambda x: (x > 0).astype(x.dtype), "gelu": _gelu_grad, "gelu_python": _gelu_grad,
    "gelu_new": _gelu_tanh_grad, "gelu_pytorch_tanh": _gelu_tanh_grad, "gelu_accurate": _gelu_tanh_grad,
    "gelu_python_tanh": _gelu_tanh_grad, "gelu_fast": _gelu_tanh_grad, "tanh": lambda x: 1.0 - np.tanh(x) ** 2,
    "sigmoid": _sigmoid_grad, "swish": _silu_grad, "silu": _silu_grad, "linear": lambda x: np.ones_like(x),
    "leaky_relu": lambda x: np.where(x >= 0, 1.0, 0.01).astype(x.dtype),
    "leakyrelu": lambda x: np.where(x >= 0, 1.0, 0.01).astype(x.dtype),
}


def activation_backward(name, x, dy):
    """dL/dx = dy ⊙ f'(x) of the activation called ``name`` at its input x. Spec: GRAD-ACT.

    ValueError naming the activation when minadapters has no derivative for it (those in ACTIVATION_GRADS do)."""
    key = "linear" if name is None else str(name).lower()
    if key not in ACTIVATION_GRADS:
        raise ValueError(f"training: no derivative for activation {name!r}; minadapters trains through "
                         f"{', '.join(sorted(ACTIVATION_GRADS))}.")
    return (dy * ACTIVATION_GRADS[key](x)).astype(dy.dtype, copy=False)
