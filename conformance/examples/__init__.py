"""Example drivers written against the Driver protocol only (run by tests/test_conformance.py)."""
