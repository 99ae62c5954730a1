"""Build hook for the optional native backend (minadapters.ops._native, via cffi).  Spec: spec/ops.md.

Metadata lives in pyproject.toml.  The extension is optional: if it cannot be compiled (no C
compiler, missing headers ...), the build prints a warning and installs the pure-Python package;
``get_ops("native")`` then raises BackendUnavailableError naming the reason.
"""
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile of the native backend into a warning."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 — any compiler/toolchain failure makes it optional
            self._skip(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self._skip(e, ext.name)

    @staticmethod
    def _skip(err, name="minadapters.ops._native"):
        print(f"WARNING: could not build the optional extension {name} ({type(err).__name__}: {err}); "
              "installing without the native backend (the numpy backend still works).", file=sys.stderr)


setup(cmdclass={"build_ext": OptionalBuildExt},
      cffi_modules=["native/build_native.py:ffibuilder"])
