"""Exception classes. Each subclasses the package base and the builtin adapters raises."""


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


class AdapterNotFoundError(AdapterError, KeyError):
    """An adapter name is not known to the model."""

    def __str__(self):  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""
