"""Exception classes. Each subclasses the package base and the builtin adapters raises. Spec: API-ERR."""


class AdapterError(Exception):
    """Base class of every error minadapters raises on purpose."""


class ConfigError(AdapterError, ValueError):
    """An adapter or fusion configuration is invalid (unknown identifier, bad field value)."""


class ConfigTypeError(AdapterError, TypeError):
    """A configuration has a field of the wrong type or an unknown field."""


class CompositionError(AdapterError, ValueError):
    """An adapter composition (Stack, Fuse, ...) is invalid or cannot run."""


class ShapeError(AdapterError, ValueError):
    """A tensor has a shape other than the one the model or adapter needs."""


class WeightsError(AdapterError, ValueError):
    """Adapter or model weights are missing, unexpected or cannot be read."""


class UnsafePickleError(WeightsError):
    """A pytorch_adapter.bin pickle asks for something other than tensor rebuilding."""


class BackendUnavailableError(AdapterError, RuntimeError):
    """The requested compute backend cannot be used here."""


class AdapterNotFoundError(AdapterError, KeyError, ValueError):
    """An adapter name is not known to the model (adapters 1.3.0 raises ValueError or KeyError, by call)."""

    def __str__(self):  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class CompositionIndexError(CompositionError, IndexError):
    """A Split / BatchSplit size does not match the input (adapters 1.3.0 raises IndexError here)."""


class FusionNotFoundError(CompositionError, KeyError):
    """A Fuse block names a fusion layer the model does not have (adapters 1.3.0 raises KeyError)."""

    def __str__(self):  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class HubFileNotFoundError(AdapterError, FileNotFoundError):
    """A model / adapter named by a Hugging Face id is neither cached nor downloadable; says which file."""


class ConfigKeyError(ConfigError, KeyError):
    """A config value names something with no entry (activation, per-layer reduction factor): KeyError upstream."""

    def __str__(self):  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""
