"""The one JSON reader: every JSON file or string minadapters reads goes through here. Spec: IO-13.

Limits are checked before `json.loads` builds anything: the text's size, and its nesting depth
(counted over brackets outside strings, so a 10⁶-deep file costs one linear scan, never a
RecursionError). `NaN`, `Infinity`, and numbers that overflow to ±inf are refused: every number a
configuration holds is finite.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from .errors import WeightsError

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "loads_json", "read_json"]

MAX_JSON_BYTES = 64 * 1024 * 1024   # config files are kilobytes; a big sharded index is < 10 MB
MAX_JSON_DEPTH = 64                 # transformers / adapters configs nest < 8 deep

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


class _Refused(ValueError):
    pass


def _reject_constant(name):
    raise _Refused(f"{name} is not allowed (every number must be finite)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:40]} overflows a float")
    return value


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise _Refused(f"nesting is deeper than {max_depth} levels")
        else:
            depth -= 1


def loads_json(data: str | bytes, *, source: str = "<json>", error: type = WeightsError,
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text within the limits; anything wrong raises `error` naming `source`. Spec: IO-13."""
    if len(data) > max_bytes:
        raise error(f"{source}: JSON text is {len(data)} bytes; the limit is {max_bytes}.")
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        _check_depth(text, max_depth)
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as e:
        raise error(f"{source}: not UTF-8 text (byte {e.start}).") from None
    except _Refused as e:
        raise error(f"{source}: invalid JSON ({e}).") from None
    except (ValueError, RecursionError) as e:   # JSONDecodeError; int too long to convert
        raise error(f"{source}: invalid JSON ({type(e).__name__}: {str(e)[:200]}).") from None


def read_json(path: str | os.PathLike, *, error: type = WeightsError, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read a UTF-8 JSON file within the limits (size checked before reading). Spec: IO-13.

    A missing file raises FileNotFoundError; bad content raises `error` naming the file."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise error(f"{path}: JSON file is {size} bytes; the limit is {max_bytes}.")
        data = f.read(max_bytes + 1)
    return loads_json(data, source=path, error=error, max_bytes=max_bytes, max_depth=max_depth)
