"""pytest plugin of the conformance suite: --driver / --reference, fixtures, hypothesis profiles, report.

    pytest conformance --driver=minadapters [--reference=reference] [--hypothesis-profile=ci|dev|thorough]
    pytest conformance --driver=yourpkg.testing:make_driver

Drivers are resolved lazily in session fixtures (never at import time); a driver that cannot be built turns
every test that needs it into a skip with the reason.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, Phase, settings

from conformance import driver as drvmod
from conformance import report
from conformance.outcomes import ConformanceFailure
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
    g.addoption("--conformance-full-report", action="store_true", default=False,
                help="print pytest's and hypothesis' full failure report (default: at most ~20 lines per failure, "
                     "full under -v)")


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
    for item in items:
        _make_declinable(item)
    d, _ = _names(config)
    path = config.getoption("--expected-failures")
    names = [_driver_name(d), d]      # entries match Driver.name (or the --driver argument)
    entries = [e for e in report.read_expected_failures(path) if report.driver_matches(e[0], names)]
    matched = report.apply_expected_failures(items, names, entries, pytest.mark.xfail, path)
    config._conformance_xfail = [(e, matched.get(e[3], 0)) for e in entries]
    config._conformance_xfail_path = path


def _driver_name(spec):
    """Driver.name of the driver ``spec`` builds, or None when it cannot be built here."""
    got = _RESOLVED.get(spec)
    if got is None:
        try:
            got = _RESOLVED[spec] = drvmod.resolve(spec)
        except Exception as e:  # noqa: BLE001  (reported by the fixture as a skip)
            got = _RESOLVED[spec] = e
    return None if isinstance(got, Exception) else got.name


# ---- declined draws (driver raised Unsupported) ------------------------------------------------------------
_ITEM = {"ok": 0, "declined": Counter(), "label": ("-", "-")}


def _make_declinable(item):
    """Wrap the hypothesis inner test of ``item`` so that an Unsupported ends the example as a declined draw
    (no redraw, no error); the other examples still run."""
    hyp = getattr(getattr(item, "obj", None), "hypothesis", None)
    if hyp is None or getattr(hyp.inner_test, "_conformance_declinable", False):
        return
    inner = hyp.inner_test

    @functools.wraps(inner)
    def declinable(*args, **kwargs):
        report.start_example()
        try:
            inner(*args, **kwargs)
        except drvmod.Unsupported as e:
            _decline(e)
            return
        _ITEM["ok"] += 1

    declinable._conformance_declinable = True
    hyp.inner_test = declinable


def _decline(exc):
    who = getattr(exc, "conformance_who", None) or "the driver"
    _ITEM["declined"][f"{who} declined: {exc}"] += 1
    report.decline_example(_ITEM["label"])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _ITEM.update(ok=0, declined=Counter(), label=report.labels(item))
    report.start_example()


def _as_skip(rep, item, reason):
    if hasattr(rep, "wasxfail"):
        del rep.wasxfail
    rep.outcome = "skipped"
    rep.longrepr = (str(item.path), item.location[1] + 1, f"Skipped: {reason}")


def _declined_reason():
    (top, n), total = _ITEM["declined"].most_common(1)[0], sum(_ITEM["declined"].values())
    more = f"; {len(_ITEM['declined']) - 1} other reason(s)" if len(_ITEM["declined"]) > 1 else ""
    return f"every draw declined ({total}): {top}{more}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    if rep.when == "call" and isinstance(exc, drvmod.Unsupported):      # a test without hypothesis draws
        _decline(exc)
        _as_skip(rep, item, _declined_reason())
    elif rep.when == "call" and rep.passed and not hasattr(rep, "wasxfail") and _ITEM["declined"] \
            and not _ITEM["ok"]:
        _as_skip(rep, item, _declined_reason())
    elif rep.when == "call" and _ITEM["declined"]:
        n = sum(_ITEM["declined"].values())
        rep.sections.append(("declined", f"{n} draw(s) declined: " + "; ".join(_ITEM["declined"])))
    if rep.failed:
        ids = list(dict.fromkeys(i for m in item.iter_markers("spec") for i in m.args))
        if not (item.config.getoption("--conformance-full-report") or item.config.option.verbose > 0):
            rep.longrepr = short_failure(item, rep, exc, ids)
        elif ids:   # every failure names the spec sections the check covers
            rep.sections.append(("spec", "this check covers spec " + ", ".join(ids)))
    report.record_report(item, rep, call.excinfo)


MAX_LINE = 400


class ShortRepr:
    """A failure in at most ~20 lines: outcome and message, the case (driver calls to repeat it), where it
    failed. ``reprcrash.message`` is the one line ``-rf`` prints."""

    def __init__(self, lines, reprcrash):
        self.lines = lines
        self.reprcrash = reprcrash

    def toterminal(self, tw):
        for line in self.lines:
            tw.line(line)

    def __str__(self):
        return "\n".join(self.lines)


def short_failure(item, rep, exc, spec_ids):
    crash = getattr(rep.longrepr, "reprcrash", None)
    if isinstance(exc, ConformanceFailure) or crash is None:    # a check failed: point at the test
        crash = SimpleNamespace(path=str(item.path), lineno=item.location[1] + 1)
    kind = getattr(exc, "outcome", None) or ("ERROR" if exc is not None else "FAILED")
    msg = (str(exc).strip().splitlines() or [""])[0] if exc is not None else str(rep.longrepr).splitlines()[-1]
    if kind == "ERROR" and type(exc) is AssertionError:
        kind = "FAILED"
    elif kind == "ERROR" and rep.when != "call":
        msg = f"{type(exc).__name__} in {rep.when}: {msg}"
    elif kind == "ERROR":
        msg = f"the driver raised {type(exc).__name__}: {msg}"
    spec = f" [spec {', '.join(spec_ids)}]" if spec_ids else ""
    head = f"{kind}{spec}: {msg}"[:MAX_LINE]
    lines = [head]
    case = report.last_case()
    if case:
        lines += ["case:"] + ["  " + c[:MAX_LINE] for c in case.splitlines()[:14]]
    if crash is not None:
        lines.append(f"at {crash.path}:{crash.lineno}")
    lines.append("(full report: -v or --conformance-full-report)")
    where = SimpleNamespace(path=getattr(crash, "path", ""), lineno=getattr(crash, "lineno", 0), message=head)
    return ShortRepr(lines, where)


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
    xf_path = getattr(config, "_conformance_xfail_path", EXPECTED_FAILURES)
    for (drv, pat, reason, n), count in getattr(config, "_conformance_xfail", []):
        if count == 0:
            msg = f"{xf_path}:{n}: entry '{drv} {pat}' matches no collected test"
            tr.write_line("WARNING " + msg)
    for entry, seen in report.XFAIL_USED.items():
        if seen.get("XPASS"):
            msg = f"{entry}: passed {seen['XPASS']} time(s); the deviation may be fixed, remove the entry"
            tr.write_line("WARNING " + msg)
            warnings.warn(msg)


_NA_MARKERS = ("does not support", " lacks ", "no block supported", "is not mergeable", "has no eject",
               "no zero-effect", "are not independent upstream", "is not row-separable", "have no leave_out",
               "declares a quirk", "declares quirk", "declined", "does not run")


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
