"""Environment checks the test suite reports: is the native extension importable from where minadapters is?"""
from __future__ import annotations

import glob
import os
from importlib.metadata import distribution


def installed_native_copy() -> str | None:
    """Path of a compiled _native module that pip installed into site-packages, if any."""
    try:
        dist = distribution("minadapters")
    except Exception:          # PackageNotFoundError, or metadata unreadable: nothing installed to point at
        return None
    for f in dist.files or []:
        if f.name.startswith("_native") and f.suffix in (".so", ".pyd"):
            p = str(dist.locate_file(f))
            if os.path.exists(p):
                return p
    return None


def native_build_notice(package_dir: str, installed: str | None) -> str | None:
    """A warning when the imported package (e.g. the source tree) has no compiled native extension, or None.

    ``pip install .`` builds the extension into site-packages, but pytest run in the source tree imports
    ./minadapters (pyproject's pythonpath), so every native test would skip without saying why."""
    for d in (package_dir, os.path.join(package_dir, "ops")):     # minadapters/_native* or minadapters/ops/_native*
        if glob.glob(os.path.join(d, "_native*.so")) or glob.glob(os.path.join(d, "_native*.pyd")):
            return None
    msg = (f"minadapters is imported from {package_dir}, which has no compiled native extension (_native*.so): "
           "the native backend and its tests are skipped.")
    if installed and not os.path.abspath(installed).startswith(os.path.abspath(package_dir) + os.sep):
        msg += (f" `pip install .` built one into {os.path.dirname(installed)}, but tests run from the source tree "
                "import the source tree.")
    return msg + (" Fix: `pip install -e .` (builds in place) or `python native/build_native.py`, then rerun.")
