"""Every spec ID has an implementing function (docstring `Spec: ID`) and at least one check (conformance mark,
test mark or vector), unless listed in spec/coverage_exemptions.txt (reported, not failed)."""
import os

import pytest

from conformance import spec_coverage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_spec_ids_have_implementation_and_checks():
    rows, unknown = spec_coverage.coverage(ROOT)
    assert rows, "spec/*.md defines no '### ID · title' headings, but should define some"
    exempt = spec_coverage.exemptions(ROOT)
    miss = spec_coverage.missing(rows, exempt)
    assert not miss, "spec IDs without implementing function or check: " + ", ".join(
        f"{r['id']} (impl={r['impl']}, checks={r['conformance'] + r['tests'] + r['vectors']})" for r in miss)


def test_exemptions_are_known_ids_with_reasons():
    ids = spec_coverage.spec_ids(ROOT)
    for i, reason in spec_coverage.exemptions(ROOT).items():
        assert i in ids, f"coverage_exemptions.txt names {i!r}, but spec/ does not define it"
        assert reason, f"coverage_exemptions.txt: {i} has no reason"


def test_checks_name_defined_ids():
    _, unknown = spec_coverage.coverage(ROOT)
    if unknown:
        pytest.fail(f"checks or vectors name spec IDs that spec/ does not define: {unknown}")
