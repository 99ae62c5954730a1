"""pytest plugin of the conformance suite: --driver / --reference, fixtures, hypothesis profiles, report.

    pytest conformance --driver=minadapters [--reference=reference] [--hypothesis-profile=ci|dev|thorough]
    pytest conformance --driver=yourpkg.testing:make_driver

Drivers are resolved lazily in session fixtures (never at import time); a driver that cannot be built turns
every test that needs it into a skip with the reason.
"""
from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import HealthCheck, Phase, settings

from conformance import driver as drvmod
from conformance import report
from conformance.tinymodels import ARCHS, write_model

_HC = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
       HealthCheck.filter_too_much]
# ci: no shrinking, so a failure reports its first example quickly (the note() carries a full repro)
settings.register_profile("ci", max_examples=10, derandomize=True, deadline=None, database=None,
                          suppress_health_check=_HC, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("dev", max_examples=20, deadline=None, suppress_health_check=_HC, print_blob=True)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=_HC, print_blob=True)
settings.load_profile(os.environ.get("MINADAPTERS_HYPOTHESIS_PROFILE", "ci"))

EXPECTED_FAILURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected_failures.txt")


def pytest_addoption(parser):
    g = parser.getgroup("conformance")
    g.addoption("--driver", default=None, help="driver under test: a built-in name "
                f"({', '.join(drvmod.BUILTIN_DRIVERS)}) or module:factory (fallback ${drvmod.ENV_DRIVER}, "
                "default minadapters)")
    g.addoption("--reference", default=None, help="reference driver for differential checks "
                f"(fallback ${drvmod.ENV_REFERENCE}, default reference = minadapters NumPy float64)")
    g.addoption("--expected-failures", default=EXPECTED_FAILURES, help="file of documented upstream deviations")


def pytest_configure(config):
    config.addinivalue_line("markers", "spec(id): the spec section a check covers")
    config.addinivalue_line("markers", "conformance(method=..., block=...): labels for the summary table")
    config.addinivalue_line("markers", "upstream: needs torch + adapters")


def _names(config):
    return (drvmod.default_driver_name(config.getoption("--driver")),
            drvmod.default_reference_name(config.getoption("--reference")))


def pytest_report_header(config):
    d, r = _names(config)
    env = {k: v for k, v in os.environ.items() if k.startswith("MINADAPTERS_")}
    return [f"conformance: driver={d} reference={r}", f"conformance env: {env or '{}'}"]


def pytest_collection_modifyitems(config, items):
    d, _ = _names(config)
    entries = [e for e in report.read_expected_failures(config.getoption("--expected-failures"))
               if report.glob_match(d, e[0])]
    matched = report.apply_expected_failures(items, d, entries, pytest.mark.xfail)
    config._conformance_xfail = [(e, matched.get(e[3], 0)) for e in entries]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        ids = [i for m in item.iter_markers("spec") for i in m.args]
        if ids:   # every failure names the spec sections the check covers
            rep.sections.append(("spec", "this check covers spec " + ", ".join(dict.fromkeys(ids))))
            rep.longrepr = f"[spec {', '.join(dict.fromkeys(ids))}] " + str(rep.longrepr)
    report.record_report(item, rep, call.excinfo)


_RESOLVED = {}


def _resolve(name):
    if name not in _RESOLVED:
        try:
            _RESOLVED[name] = drvmod.resolve(name)
        except Exception as e:  # noqa: BLE001  (missing torch, bad factory, unavailable backend ...)
            _RESOLVED[name] = e
    got = _RESOLVED[name]
    if isinstance(got, Exception):
        pytest.skip(f"driver {name!r} unavailable: {type(got).__name__}: {got}")
    return got


@pytest.fixture(scope="session")
def driver(pytestconfig):
    return _resolve(_names(pytestconfig)[0])


@pytest.fixture(scope="session")
def reference(pytestconfig):
    return _resolve(_names(pytestconfig)[1])


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {a: write_model(str(root / a), a, seed=11) for a in ARCHS}


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    tr.section("conformance summary")
    for name, got in _RESOLVED.items():
        if isinstance(got, Exception):
            tr.write_line(f"driver {name}: UNAVAILABLE ({type(got).__name__}: {got})")
        else:
            tr.write_line(f"driver {name}: {drvmod.describe(got)}")
    for line in report.summary_lines():
        tr.write_line(line)
    na, other = _skip_counts(tr.stats.get("skipped", []))
    if na or other:
        tr.write_line(f"skipped: {na} not applicable (a method x block x architecture combination that the driver, "
                      f"or adapters 1.3.0 itself, does not support: nothing to compare), {other} for other reasons; "
                      "`-rs` lists each reason")
    for (drv, pat, reason, n), count in getattr(config, "_conformance_xfail", []):
        if count == 0:
            msg = f"expected_failures.txt:{n}: entry '{drv} {pat}' matches no collected test"
            tr.write_line("WARNING " + msg)
    for entry, seen in report.XFAIL_USED.items():
        if seen.get("XPASS"):
            msg = f"{entry}: passed {seen['XPASS']} time(s); the deviation may be fixed, remove the entry"
            tr.write_line("WARNING " + msg)
            warnings.warn(msg)


_NA_MARKERS = ("does not support", " lacks ", "no block supported", "is not mergeable", "has no eject",
               "no zero-effect", "are not independent upstream", "is not row-separable", "have no leave_out",
               "declares a quirk")


def _skip_counts(reports):
    """(not-applicable skips, other skips) by their reason text."""
    na = other = 0
    for rep in reports:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else str(rep.longrepr)
        if any(m in reason for m in _NA_MARKERS):
            na += 1
        else:
            other += 1
    return na, other
