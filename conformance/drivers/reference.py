"""The reference driver: minadapters' NumPy path in float64.

Adapter weights handed in are float32 values (so every driver sees the same numbers); the reference computes
with them in float64, so its outputs carry no float32 rounding and differences measure the driver under test.
"""
from __future__ import annotations

import numpy as np

from .minadapters_driver import MinadaptersDriver


class ReferenceDriver(MinadaptersDriver):
    def __init__(self):
        super().__init__(dtype=np.float64, backend="numpy")
        self.name = "reference"
        self.version = self.version.replace("numpy, float64", "NumPy float64 reference")


def make_driver():
    return ReferenceDriver()
