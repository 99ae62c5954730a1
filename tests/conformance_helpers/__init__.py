"""Drivers the suite's own tests run the conformance suite on (tests/test_conformance.py)."""
