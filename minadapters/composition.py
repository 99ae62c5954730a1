"""Composition blocks as data: Stack, Fuse, Split, BatchSplit, Parallel, MultiTask, Average.

Spec: COMP-0 (block data model), COMP-1 (nesting rules). The forward semantics of each block
live in ``minadapters/methods/base.py`` (one function per block).
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence


from .errors import CompositionError

__all__ = [
    "AdapterCompositionBlock", "Stack", "Fuse", "Split", "BatchSplit", "Parallel", "MultiTask",
    "Average", "ALLOWED_NESTINGS", "SUPPORTED_MODELS", "parse_composition", "validate_composition",
    "composition_from_dict",
]


MAX_COMPOSITION_DEPTH = 32   # adapters' own setups nest at most 3 deep


class AdapterCompositionBlock(Sequence):
    """Base block: an ordered list of children, each an adapter name or a nested block. Spec: COMP-0."""

    def __init__(self, *children):
        if not children:
            raise CompositionError(f"{type(self).__name__}() needs at least one child (an adapter name or a block).")
        self.children = [parse_composition(c, None) for c in children]
        # Bounded nesting: every walk over a block (repr, hash, flatten, validation) recurses.
        self.depth = 1 + max((c.depth for c in self.children if isinstance(c, AdapterCompositionBlock)), default=0)
        if self.depth > MAX_COMPOSITION_DEPTH:
            raise CompositionError(f"{type(self).__name__}(...) nests blocks {self.depth} deep; at most "
                                   f"{MAX_COMPOSITION_DEPTH} levels are accepted.")

    def __getitem__(self, key):
        return self.children[key]

    def __len__(self):
        return len(self.children)

    def __eq__(self, other):
        # COMPAT(adapters): upstream compares children with zip() only, so Stack("a") == Stack("a", "b");
        # we also compare lengths and block arguments (spec COMP-0, upstream note).
        return (type(other) is type(self) and len(other) == len(self)
                and all(a == b for a, b in zip(self.children, other.children))
                and self._get_save_kwargs() == other._get_save_kwargs())

    def __hash__(self):
        return hash((type(self).__name__, tuple(self.children)))

    def __repr__(self):
        args = [repr(c) if isinstance(c, str) else repr(c) for c in self.children]
        args += [f"{k}={v!r}" for k, v in (self._get_save_kwargs() or {}).items()]
        return f"{type(self).__name__}({', '.join(args)})"

    __str__ = __repr__

    def first(self) -> str:
        c = self.children[0]
        return c if isinstance(c, str) else c.first()

    def last(self) -> str:
        c = self.children[-1]
        return c if isinstance(c, str) else c.last()

    @property
    def parallel_channels(self) -> int:
        return max(c.parallel_channels if isinstance(c, AdapterCompositionBlock) else 1 for c in self.children)

    def flatten(self) -> set:
        return set(itertools.chain.from_iterable([c] if isinstance(c, str) else c.flatten() for c in self.children))

    def _get_save_kwargs(self):
        return None

    def to_dict(self) -> dict:
        d = {"type": type(self).__name__,
             "children": [c.to_dict() if isinstance(c, AdapterCompositionBlock) else {"type": "single", "children": [c]}
                          for c in self.children]}
        kwargs = self._get_save_kwargs()
        if kwargs:
            d["kwargs"] = kwargs
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterCompositionBlock":
        return composition_from_dict(data)


def _int_list(values, n: int, block: str, field: str) -> list:
    if isinstance(values, bool) or not isinstance(values, (int, list, tuple)):
        raise CompositionError(f"{block}: {field}={values!r} must be an int or a list of ints.")
    out = list(values) if isinstance(values, (list, tuple)) else [values] * n
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CompositionError(f"{block}: {field}={values!r} has entry {v!r}; entries must be ints >= 0.")
    if len(out) != n:
        raise CompositionError(f"{block}: {field}={values!r} has {len(out)} entries but the block has {n} children.")
    return out


class Stack(AdapterCompositionBlock):
    """Children run one after another. Spec: COMP-STACK."""


class Fuse(AdapterCompositionBlock):
    """AdapterFusion over the children's outputs. Spec: COMP-FUSE, FUSION-1."""

    def __init__(self, *children, name: str | None = None):
        super().__init__(*children)
        self._name = name

    @property
    def name(self) -> str:
        return self._name or ",".join(c if isinstance(c, str) else c.last() for c in self.children)


class Split(AdapterCompositionBlock):
    """Child i processes tokens [sum(splits[:i]), sum(splits[:i+1])). Spec: COMP-SPLIT."""

    def __init__(self, *children, splits=None, split_index=None):
        super().__init__(*children)
        if splits is None:
            splits = split_index  # the spelling of older docs, accepted as an alias
        if splits is None:
            raise CompositionError("Split(...) needs splits=<int or list of ints> (one token count per child).")
        self.splits = _int_list(splits, len(children), "Split", "splits")

    def _get_save_kwargs(self):
        return {"splits": self.splits}


class BatchSplit(AdapterCompositionBlock):
    """Child i processes batch rows [sum(batch_sizes[:i]), sum(batch_sizes[:i+1])). Spec: COMP-BATCHSPLIT."""

    def __init__(self, *children, batch_sizes=None):
        super().__init__(*children)
        if batch_sizes is None:
            raise CompositionError("BatchSplit(...) needs batch_sizes=<int or list of ints> (rows per child).")
        self.batch_sizes = _int_list(batch_sizes, len(children), "BatchSplit", "batch_sizes")

    def _get_save_kwargs(self):
        return {"batch_sizes": self.batch_sizes}


class Parallel(AdapterCompositionBlock):
    """The batch is replicated once per child; child i gets copy i. Spec: COMP-PARALLEL."""

    @property
    def parallel_channels(self) -> int:
        return len(self.children)


class MultiTask(AdapterCompositionBlock):
    """Rows are routed to children by task_ids. Spec: COMP-MULTITASK."""


class Average(AdapterCompositionBlock):
    """Weighted mean of the children's outputs, divided by N once more. Spec: COMP-AVERAGE."""

    def __init__(self, *children, weights=None, normalize_weights: bool = True):
        super().__init__(*children)
        if weights is not None:
            if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
                raise CompositionError(f"Average: weights={weights!r} must be a list of numbers, one per child.")
            weights = [float(w) for w in weights]
            if len(weights) != len(children):
                raise CompositionError(
                    f"Average: weights={weights!r} has {len(weights)} entries but the block has {len(children)} children.")
            if normalize_weights:
                total = sum(weights) if weights else 1.0
                if total == 0:
                    raise CompositionError(f"Average: weights={weights!r} sum to 0 and cannot be normalized; "
                                           "pass normalize_weights=False or other weights.")
                weights = [w / total for w in weights]
            self.weights = weights
        else:
            self.weights = [1 / len(children)] * len(children)

    def _get_save_kwargs(self):
        return {"weights": self.weights}


BLOCKS = {c.__name__: c for c in (Stack, Fuse, Split, BatchSplit, Parallel, MultiTask, Average)}

# Spec: COMP-1. Which child types each block accepts (adapters 1.3.0 composition.py).
ALLOWED_NESTINGS = {
    Stack: [str, Fuse, Split, Parallel, BatchSplit, Average, MultiTask],
    Fuse: [str, Stack],
    Split: [str, Split, Stack, BatchSplit, Average],
    Parallel: [str, Stack, BatchSplit, Average],
    MultiTask: [str, Stack, Average, Fuse],
    BatchSplit: [str, Stack, Split, BatchSplit, Average],
    Average: [str, Stack, Split, BatchSplit],
}

SUPPORTED_MODELS = {Parallel: ["albert", "bert", "roberta", "distilbert", "deberta-v2", "deberta", "bart", "mbart",
                               "mt5", "plbart", "gpt2", "gptj", "t5", "vit", "xlm-roberta", "bert-generation",
                               "llama", "mistral", "electra", "whisper", "xmod"]}


def _tname(t) -> str:
    return "str" if t is str else t.__name__


def validate_composition(block, level: int = 0, model_type: str | None = None) -> None:
    """Reject nestings outside ALLOWED_NESTINGS and blocks deeper than level 1. Spec: COMP-1."""
    if level > 1 and not isinstance(block, (Stack, str)):
        raise CompositionError(f"Adapter setup is too deep: cannot have {block!r} at level {level}; "
                               "below level 1 only adapter names and Stack are allowed.")
    if not isinstance(block, AdapterCompositionBlock):
        if not isinstance(block, str):
            raise CompositionError(f"Adapter setup entry {block!r} is neither an adapter name nor a block.")
        return
    if model_type and type(block) in SUPPORTED_MODELS and model_type not in SUPPORTED_MODELS[type(block)]:
        raise CompositionError(f"Models of type {model_type} don't support adapter composition using "
                               f"{type(block).__name__}.")
    allowed = ALLOWED_NESTINGS[type(block)]
    for child in block:
        if type(child) not in allowed:
            raise CompositionError(
                f"Adapter setup is invalid: cannot nest {child!r} in {type(block).__name__}; "
                f"{type(block).__name__} accepts {', '.join(_tname(t) for t in allowed)}.")
        validate_composition(child, level=level + 1)


def parse_composition(setup, level: int | None = 0, model_type: str | None = None):
    """Normalise an active-adapters value (name, block, legacy list) to a block. Spec: COMP-0.

    A name at level 0 becomes Stack(name); a list at level 0 is a Stack, a list inside it a Fuse."""
    if setup is None or (isinstance(setup, (str, list, tuple)) and len(setup) == 0):
        return None
    if isinstance(setup, AdapterCompositionBlock):
        if level is not None:
            validate_composition(setup, level=level, model_type=model_type)
        return setup
    if isinstance(setup, str):
        return Stack(setup) if level == 0 else setup
    if isinstance(setup, (list, tuple)):
        warnings.warn("Passing list objects for adapter activation is deprecated. Please use Stack or Fuse explicitly.",
                      FutureWarning, stacklevel=3)
        cls = Fuse if level == 1 else Stack
        next_level = level + 1 if level is not None else None
        return cls(*[parse_composition(c, next_level) for c in setup])
    raise TypeError(f"Adapter setup must be an adapter name, a composition block or a list; got {type(setup).__name__} "
                    f"{setup!r}.")


def composition_from_dict(data: dict):
    """Inverse of ``to_dict`` (adapter_setup.json). Spec: COMP-0.

    The dict comes from a file: every field is type-checked and messages show only short excerpts."""
    if not isinstance(data, dict) or "type" not in data or "children" not in data:
        raise CompositionError(f"A composition dict needs 'type' and 'children'; got {_excerpt(data)}.")
    kind, children, kwargs = data["type"], data["children"], data.get("kwargs", {})
    if not isinstance(children, list) or not children:
        raise CompositionError(f"Composition 'children' must be a non-empty list; got {_excerpt(children)}.")
    if kind == "single":
        if len(children) != 1 or not _is_name(children[0]):
            raise CompositionError(f"A 'single' composition holds one adapter name; got {_excerpt(children)}.")
        return children[0]
    if not isinstance(kind, str) or kind not in BLOCKS:
        raise CompositionError(f"Unknown composition block type {_excerpt(kind)}; known: {', '.join(BLOCKS)}.")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CompositionError(f"Composition 'kwargs' must be an object; got {_excerpt(kwargs)}.")
    if any(isinstance(c, str) and not _is_name(c) for c in children):
        raise CompositionError(f"Composition children must be non-empty adapter names or blocks; got "
                               f"{_excerpt(children)}.")
    parsed = [c if isinstance(c, str) else composition_from_dict(c) for c in children]
    try:
        return BLOCKS[kind](*parsed, **kwargs)
    except TypeError as e:     # unknown keyword or wrong value type for the block's constructor
        raise CompositionError(f"{kind}(...) from a composition dict: {e}") from None


def _is_name(x) -> bool:
    return isinstance(x, str) and bool(x.strip())


def _excerpt(x) -> str:
    """At most 80 characters of repr(x), for messages about untrusted file content."""
    r = repr(x) if not isinstance(x, (dict, list)) or len(x) < 8 else f"a {type(x).__name__} of {len(x)} items"
    return r if len(r) <= 80 else r[:77] + "..."
