"""`minadapters conformance --driver NAME [--reference NAME] [pytest args...]`: run the conformance suite.

The CLI wires ``main(argv)``; it finds the conformance directory (the installed ``conformance`` package, or the
source tree beside ``minadapters/``) and runs pytest on it. Returns pytest's exit code.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys


def suite_dir() -> str:
    """The conformance suite directory: installed package first, else the source tree."""
    spec = importlib.util.find_spec("conformance")
    if spec is not None and spec.submodule_search_locations:
        return list(spec.submodule_search_locations)[0]
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conformance")
    if os.path.isdir(here):
        return here
    raise FileNotFoundError("conformance suite not found: install minadapters from a source checkout "
                            "or put the repository root on PYTHONPATH.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="minadapters conformance",
                                 description="Run the conformance suite against a driver.")
    ap.add_argument("--driver", default=None, help="driver under test: minadapters, minadapters-native, adapters, "
                    "reference, or module:factory (default $MINADAPTERS_DRIVER or minadapters)")
    ap.add_argument("--reference", default=None, help="reference driver (default reference)")
    ap.add_argument("--profile", default="ci", choices=["ci", "dev", "thorough"], help="hypothesis profile")
    args, rest = ap.parse_known_args(argv)
    try:  # deferred: pytest and hypothesis are test extras (minadapters[test]); only this command needs them
        import pytest
        import hypothesis  # noqa: F401  (the suite's conftest needs it; fail here with the install hint)
    except ImportError as e:
        raise SystemExit(f"minadapters conformance needs pytest and hypothesis (pip install minadapters[test]): {e}")
    d = suite_dir()
    root = os.path.dirname(d)
    opts = [d, "-p", "no:cacheprovider", "--rootdir", root, f"--hypothesis-profile={args.profile}"]
    if args.driver:
        opts.append(f"--driver={args.driver}")
    if args.reference:
        opts.append(f"--reference={args.reference}")
    if root not in sys.path:
        sys.path.insert(0, root)
    return int(pytest.main(opts + rest))
