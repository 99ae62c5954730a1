"""Spec equations as small pure functions: no state, no files, no context."""
