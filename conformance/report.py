"""Outcome bookkeeping and the end-of-run summary table (per method and block), plus expected failures."""
from __future__ import annotations

import fnmatch
import os
from collections import Counter, defaultdict

from .outcomes import OUTCOMES, classify

EXAMPLES: Counter = Counter()            # (method, block) -> hypothesis examples drawn
ARCH_EXAMPLES: Counter = Counter()       # (method, arch) -> hypothesis examples drawn
RESULTS: dict = defaultdict(Counter)     # (method, block) -> outcome -> tests
XFAIL_USED: dict = {}                    # expected-failure entry -> outcomes seen
DECLINED: Counter = Counter()            # (method, block) -> draws the driver declined (Unsupported)
_EXAMPLE: list = []                      # (method, block, arch) recorded by the example now running
COLUMNS = OUTCOMES + ("XFAIL", "XPASS")
HERE = os.path.dirname(os.path.abspath(__file__))


def record_example(method, block, arch=None):
    EXAMPLES[(method, block)] += 1
    if arch is not None:
        ARCH_EXAMPLES[(method, arch)] += 1
    _EXAMPLE.append((method, block, arch))


_CASE = [""]                             # the description of the example now running (harness.describe_case)


def start_example():
    _EXAMPLE.clear()
    _CASE[0] = ""


def set_case(text):
    _CASE[0] = text


def last_case():
    """The case the last example described (for a failure's short report)."""
    return _CASE[0]


def decline_example(label):
    """The example now running was declined: it no longer counts as drawn; ``label`` (method, block) gets one
    declined draw instead."""
    for method, block, arch in _EXAMPLE:
        EXAMPLES[(method, block)] -= 1
        if arch is not None:
            ARCH_EXAMPLES[(method, arch)] -= 1
    _EXAMPLE.clear()
    DECLINED[label] += 1


def labels(item):
    """(method, block) of a test item from its parameters / markers."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    method = params.get("method")
    method = getattr(method, "name", method)
    block = params.get("block")
    for m in item.iter_markers("conformance"):
        method = m.kwargs.get("method", method)
        block = m.kwargs.get("block", block)
    return str(method or "-"), str(block or "-")


def record_report(item, rep, call_excinfo):
    if rep.when == "call" or (rep.when == "setup" and (rep.skipped or rep.failed)):
        key = labels(item)
        if hasattr(rep, "wasxfail"):
            outcome = "XPASS" if rep.passed else "XFAIL"
            XFAIL_USED.setdefault(rep.wasxfail, Counter())[outcome] += 1
        elif rep.skipped:
            outcome = "SKIPPED"
        elif rep.passed:
            outcome = "PASSED"
        else:
            outcome = classify(call_excinfo)
        RESULTS[key][outcome] += 1


# ---- expected failures --------------------------------------------------------------------------------
def read_expected_failures(path):
    """Lines: ``<driver glob> <test id glob>  # reason``. Returns [(driver, pattern, reason, line)]."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for n, line in enumerate(f, 1):
            body, _, reason = line.partition("#")
            parts = body.split()
            if not parts:
                continue
            if len(parts) != 2 or not reason.strip():
                raise ValueError(f"{path}:{n}: expected '<driver glob> <test id glob>  # reason'; got {line!r}")
            out.append((parts[0], parts[1], reason.strip(), n))
    return out


def glob_match(text, pattern):
    """fnmatch with only '*' and '?' as wildcards ('[' in test ids is literal)."""
    return fnmatch.fnmatchcase(text, pattern.replace("[", "[[]"))


def driver_matches(pattern, names) -> bool:
    """An entry's driver glob matches the driver's ``Driver.name`` (or, for drivers that cannot be built here,
    the ``--driver`` argument): ``names`` lists those that apply."""
    return any(glob_match(n, pattern) for n in names if n)


def apply_expected_failures(items, driver_names, entries, mark_factory, path="expected_failures.txt"):
    """Mark every item an entry matches as xfail (not strict); returns {line: items matched}."""
    if isinstance(driver_names, str):
        driver_names = [driver_names]
    fname = os.path.basename(path)
    matched = Counter()
    for item in items:
        for drv, pat, reason, n in entries:
            if driver_matches(drv, driver_names) and glob_match(item.nodeid.split("::", 1)[-1], pat):
                item.add_marker(mark_factory(reason=f"{fname}:{n}: {reason}", strict=False))
                matched[n] += 1
    return matched


def summary_lines():
    """Per (method, block): examples drawn, declined draws, then one column per outcome. Rows with nothing
    but skips are left out (one line counts them)."""
    keys = sorted(set(RESULTS) | {k for k, v in EXAMPLES.items() if v} | {k for k, v in DECLINED.items() if v})
    shown = [k for k in keys if EXAMPLES.get(k, 0) or DECLINED.get(k, 0)
             or any(RESULTS[k].get(c, 0) for c in COLUMNS if c != "SKIPPED")]
    hidden = len(keys) - len(shown)
    head = ["method", "block", "examples", "declined"] + [c.lower().replace("_", " ") for c in COLUMNS]
    rows = [[m, b, str(EXAMPLES.get((m, b), 0)), str(DECLINED.get((m, b), 0))]
            + [str(RESULTS[(m, b)].get(c, 0)) for c in COLUMNS] for (m, b) in shown]
    tot = ["total", "", str(sum(EXAMPLES.values())), str(sum(DECLINED.values()))] + \
        [str(sum(RESULTS[k].get(c, 0) for k in RESULTS)) for c in COLUMNS]
    widths = [max(len(r[i]) for r in [head, tot] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(x.ljust(w) for x, w in zip(r, widths))  # noqa: E731
    out = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows] + [fmt(tot)]
    if hidden:
        out.append(f"({hidden} method x block rows with no draw, only skips, are not shown)")
    return out + arch_lines()


def arch_lines():
    """Examples drawn per method and base architecture."""
    archs = sorted({a for _, a in ARCH_EXAMPLES})
    if not archs:
        return []
    methods = sorted({m for m, _ in ARCH_EXAMPLES})
    methods = [m for m in methods if any(ARCH_EXAMPLES.get((m, a), 0) for a in archs)]
    rows = [["method"] + archs] + [[m] + [str(ARCH_EXAMPLES.get((m, a), 0)) for a in archs] for m in methods]
    rows.append(["total"] + [str(sum(ARCH_EXAMPLES[(m, a)] for m in methods)) for a in archs])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["", "examples per architecture"] + ["  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in rows]
