"""minadapters conformance suite: checks any adapters-1.3.0-compatible implementation through a Driver.

    pytest conformance --driver=minadapters --reference=reference
    pytest conformance --driver=adapters --reference=minadapters
    pytest conformance --driver=yourpkg.testing:make_driver

Core imports only numpy, hypothesis and pytest; see README.md.
"""
__version__ = "0.1.0"
SUITE_DIR = __path__[0]
