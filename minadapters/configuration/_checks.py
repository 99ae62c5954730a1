"""Field checks shared by the config classes. Spec: CFG-6.

Each helper takes the owner (a config instance, for its class name), the field name and the value,
and raises ConfigTypeError (wrong type) or ConfigError (wrong value) with a message of the form

    LoRAConfig.r: got 0; expected an int >= 1.

Numbers follow adapters 1.3.0's run-time use: any numbers.Real (numpy scalars included) but never a
bool; integers are numbers.Integral (numpy ints included) but never a bool.
"""

import math
import numbers
from collections.abc import Mapping

from ..errors import ConfigError, ConfigKeyError, ConfigTypeError

# COMPAT(adapters): `Activation_Function_Class` lowercases the name, maps "leakyrelu" itself and
# looks everything else up in transformers' ACT2FN (transformers 4.57 keys below).
ACTIVATION_NAMES = frozenset(
    {
        "gelu", "gelu_10", "gelu_accurate", "gelu_fast", "gelu_new", "gelu_python",
        "gelu_python_tanh", "gelu_pytorch_tanh", "laplace", "leaky_relu", "leakyrelu", "linear",
        "mish", "prelu", "quick_gelu", "relu", "relu2", "relu6", "sigmoid", "silu", "swish",
        "tanh", "xielu",
    }
)

# Upper bound of every adapter size field (ranks, lengths, bottleneck sizes, PHM dims): far above
# any published adapter, and small enough that a hostile adapter_config.json can't make the model
# allocate gigabytes before the weights file is compared with it. Spec: CFG-6, IO-16.
MAX_ADAPTER_SIZE = 1 << 14
# reduction_factor bounds: bottleneck = hidden_size / reduction_factor must stay within 64 x hidden.
MIN_REDUCTION_FACTOR = 1.0 / 64
MAX_REDUCTION_FACTOR = float(1 << 16)

# `getattr(torch, dtype)` must give a floating dtype usable by nn.Linear.
DTYPE_NAMES = frozenset({"float16", "float32", "float64", "bfloat16", "half", "float", "double"})


def where(owner, name):
    """'ClassName.field' for messages."""
    return f"{type(owner).__name__}.{name}"


def _fail_type(owner, name, value, expected):
    raise ConfigTypeError(f"{where(owner, name)}: got {value!r} ({type(value).__name__}); expected {expected}.")


def _fail_value(owner, name, value, expected):
    raise ConfigError(f"{where(owner, name)}: got {value!r}; expected {expected}.")


def is_int(value):
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def is_real(value):
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _is_bool(value):
    kind = type(value)  # numpy.bool_ (named "bool" in numpy 2) without importing numpy
    return isinstance(value, bool) or (kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"))


def check_bool(owner, name, value):
    if not _is_bool(value):
        _fail_type(owner, name, value, "True or False")


def check_int(owner, name, value, *, minimum=None, optional=False):
    if optional and value is None:
        return
    if not is_int(value):
        _fail_type(owner, name, value, "an int" + (" or None" if optional else ""))
    if minimum is not None and value < minimum:
        _fail_value(owner, name, value, f"an int >= {minimum}")


def check_real(owner, name, value, *, low=None, high=None, positive=False, optional=False):
    """A finite real number, optionally within [low, high] or > 0."""
    if optional and value is None:
        return
    if not is_real(value):
        _fail_type(owner, name, value, "a number" + (" or None" if optional else ""))
    if not math.isfinite(value):
        _fail_value(owner, name, value, "a finite number")
    if positive and not value > 0:
        _fail_value(owner, name, value, "a number > 0")
    if (low is not None and value < low) or (high is not None and value > high):
        _fail_value(owner, name, value, f"a number in [{low}, {high}]")


def check_size(owner, name, value, *, minimum=1, maximum=MAX_ADAPTER_SIZE, optional=False):
    """An int size field (rank, length, bottleneck size) in [minimum, maximum]. Spec: CFG-6, IO-16."""
    if optional and value is None:
        return
    check_int(owner, name, value, minimum=minimum)
    if value > maximum:
        _fail_value(owner, name, value, f"an int in [{minimum}, {maximum}] (larger sizes are refused before "
                                        "anything is allocated)")


def check_probability(owner, name, value, *, optional=False):
    check_real(owner, name, value, low=0.0, high=1.0, optional=optional)


def check_choice(owner, name, value, choices, *, optional=False):
    """A string (or None if optional) out of `choices`."""
    if optional and value is None:
        return
    allowed = ", ".join(repr(c) for c in choices) + (" or None" if optional else "")
    if not isinstance(value, str):
        _fail_type(owner, name, value, f"one of {allowed}")
    if value not in choices:
        _fail_value(owner, name, value, f"one of {allowed}")


def check_str(owner, name, value, *, optional=False):
    if optional and value is None:
        return
    if not isinstance(value, str):
        _fail_type(owner, name, value, "a string" + (" or None" if optional else ""))


def check_activation(owner, name, value, *, optional=False):
    """An activation name as adapters resolves it (case-insensitive), or None if optional."""
    if optional and value is None:
        return
    allowed = "an activation name (" + ", ".join(sorted(ACTIVATION_NAMES)) + ")"
    if not isinstance(value, str):
        _fail_type(owner, name, value, allowed + (" or None" if optional else ""))
    if value.lower() not in ACTIVATION_NAMES:   # adapters: KeyError from transformers' ACT2FN lookup
        raise ConfigKeyError(f"{where(owner, name)}: got {value!r}; expected {allowed}"
                             f"{' or None' if optional else ''}.")


def check_dtype(owner, name, value):
    """None or the name of a floating torch dtype (adapters calls getattr(torch, dtype))."""
    if value is None:
        return
    check_choice(owner, name, value, sorted(DTYPE_NAMES), optional=True)


def check_int_list(owner, name, value, *, minimum=0):
    """A list (or tuple) of ints >= minimum; names the bad entry."""
    if not isinstance(value, (list, tuple)):
        _fail_type(owner, name, value, f"a list of ints >= {minimum}")
    for i, item in enumerate(value):
        if not is_int(item):
            _fail_type(owner, f"{name}[{i}]", item, f"an int >= {minimum}")
        if item < minimum:
            _fail_value(owner, f"{name}[{i}]", item, f"an int >= {minimum}")


def check_str_list(owner, name, value, choices):
    """A list (or tuple) of strings out of `choices`; names the bad entry."""
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, (list, tuple)):
        _fail_type(owner, name, value, f"a list of strings out of {allowed}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            _fail_type(owner, f"{name}[{i}]", item, f"one of {allowed}")
        if item not in choices:
            _fail_value(owner, f"{name}[{i}]", item, f"one of {allowed}")


def check_seed(owner, name, value):
    # COMPAT(adapters): torch.manual_seed wraps negative seeds; NumPy's generators (ours) need >= 0,
    # and the random streams differ from torch's anyway. Spec: IO-16.
    check_int(owner, name, value, minimum=0, optional=True)


def check_reduction_factor(owner, name, value, *, optional=False):
    """A number > 0, or a Mapping from layer-index strings / 'default' to numbers > 0. Spec: CFG-6."""
    if optional and value is None:
        return
    if isinstance(value, Mapping):
        if not value:
            _fail_value(owner, name, value, "a non-empty mapping such as {'1': 8, 'default': 16}")
        for key, item in value.items():
            # COMPAT(adapters): only str(layer_idx) and "default" are looked up; other keys
            # (e.g. int 1) are silently ignored there, so we reject them.
            if not isinstance(key, str) or not (key == "default" or key.isdigit()):
                raise ConfigError(
                    f"{where(owner, name)}: mapping key {key!r} is not a layer index string or 'default'; "
                    "expected keys like '0', '11' or 'default' (e.g. {'1': 8, 'default': 16})."
                )
            check_factor(owner, f"{name}[{key!r}]", item)
        return
    if not is_real(value):
        _fail_type(owner, name, value, "a number > 0 or a mapping such as {'1': 8, 'default': 16}")
    check_factor(owner, name, value)


def check_factor(owner, name, value, *, optional=False):
    """A reduction factor: a finite number > 0 within [MIN_REDUCTION_FACTOR, MAX_REDUCTION_FACTOR]."""
    if optional and value is None:
        return
    check_real(owner, name, value, positive=True)
    if not MIN_REDUCTION_FACTOR <= value <= MAX_REDUCTION_FACTOR:
        _fail_value(owner, name, value, f"a number in [1/64, {MAX_REDUCTION_FACTOR:g}] (hidden_size / "
                                        "reduction_factor is the bottleneck size)")
