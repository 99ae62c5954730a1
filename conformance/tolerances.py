"""The tolerance table: one place for the numbers the conformance checks (and the oracle tests) compare with.

spec/00-notation.md prints the same table; ``tests/test_tolerances.py`` parses it and fails when the two differ.
Op-level bounds of the native kernels against the NumPy reference are a separate table, in spec/ops.md.

Two rules:
  ``elementwise``  |actual − expected| ≤ atol·s + rtol·|expected| at every element (conformance checks), with
                   s = max(1, RMS of the expected vector along the last axis) (outcomes.vector_scale);
  ``scaled``       max|actual − expected| ≤ rtol·max|expected| over the tensor (oracle tests, atol 0).
"""
from __future__ import annotations

from typing import NamedTuple


class Tolerance(NamedTuple):
    rule: str    # "elementwise" or "scaled" (see the module docstring)
    rtol: float
    atol: float


ELEMENTWISE = "elementwise"
SCALED = "scaled"

# (check group, precision of the driver under test) -> Tolerance. Precision "any": the same for both.
TOLERANCES = {
    # driver under test vs the reference driver (minadapters vs adapters 1.3.0, native vs NumPy, ...)
    ("differential", "float32"): Tolerance(ELEMENTWISE, 1e-4, 2e-5),
    ("differential", "float64"): Tolerance(ELEMENTWISE, 1e-9, 1e-10),
    # same driver, different op shapes or summation order (batch split, padding, composition identities)
    ("metamorphic", "float32"): Tolerance(ELEMENTWISE, 2e-4, 5e-5),
    ("metamorphic", "float64"): Tolerance(ELEMENTWISE, 1e-9, 1e-10),
    # merged vs unmerged weights, and the output after a reset: merged weights round differently
    ("merge", "float32"): Tolerance(ELEMENTWISE, 2e-4, 5e-5),
    ("merge", "float64"): Tolerance(ELEMENTWISE, 1e-8, 1e-9),
    # stored vectors (float32 expected values): every group in conformance/vectors/*.json carries these
    ("vectors", "any"): Tolerance(ELEMENTWISE, 1e-4, 2e-5),
    # tests/oracle: minadapters float32 vs adapters 1.3.0 + torch on the same weights (oracle_utils.RTOL)
    ("oracle", "float32"): Tolerance(SCALED, 1e-4, 0.0),
}
