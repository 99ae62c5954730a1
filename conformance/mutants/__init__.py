"""Mutants of the reference implementation: single semantic changes, run as the driver against the clean
reference, to measure what the suite can see (README "Mutant kill table")."""
