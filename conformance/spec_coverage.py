"""Spec coverage: for every spec ID (``### ID · title`` in spec/*.md), where it is implemented (docstrings with
``Spec: ID`` in minadapters/), checked (``pytest.mark.spec("ID")`` in conformance/ and tests/, method entries)
and shipped as vectors (``"spec": [...]`` in conformance/vectors/*.json). Like onnx's TestCoverage.md.

    python -m conformance.spec_coverage [--root .] [--missing]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

HEADING = re.compile(r"^###\s+([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)\s+·\s+(.*)$")
SPEC_DOC = re.compile(r"Spec:\s*([^\n]+)")
ID = re.compile(r"[A-Z][A-Z0-9]*-(?:[A-Z0-9]+|\*)(?:-[A-Z0-9]+)*")
MARK = re.compile(r"mark\.spec\(([^)]*)\)")
QUOTED = re.compile(r"[\"']([A-Z][A-Z0-9]*-[A-Z0-9-]+)[\"']")
RANGE = re.compile(r"([A-Z][A-Z0-9]*)-(\d+)\s*(?:\.\.|…|–)\s*\1-(\d+)")


def spec_ids(root):
    out = {}
    d = os.path.join(root, "spec")
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if n.endswith(".md"):
            with open(os.path.join(d, n), encoding="utf-8") as f:
                for line in f:
                    m = HEADING.match(line.strip())
                    if m:
                        out[m.group(1)] = (n, m.group(2))
    return out


def _py_files(top):
    for dirpath, dirs, files in os.walk(top):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
        for n in files:
            if n.endswith(".py"):
                yield os.path.join(dirpath, n)


def _expand(text, known):
    """IDs named in a 'Spec:' line: plain IDs, ranges (BN-1 .. BN-5) and wildcards (COMP-*)."""
    ids = set()
    for a, lo, hi in RANGE.findall(text):
        ids |= {f"{a}-{i}" for i in range(int(lo), int(hi) + 1)}
    for tok in ID.findall(text):
        if tok.endswith("*"):
            ids |= {k for k in known if k.startswith(tok[:-1])}
        else:
            ids.add(tok)
    return ids


def implemented(root, known):
    out = {}
    for p in _py_files(os.path.join(root, "minadapters")):
        with open(p, encoding="utf-8") as f:
            text = f.read()
        for m in SPEC_DOC.finditer(text):
            for i in _expand(m.group(1), known):
                out.setdefault(i, set()).add(os.path.relpath(p, root))
    return out


def checked(root, top):
    out = {}
    for p in _py_files(os.path.join(root, top)):
        with open(p, encoding="utf-8") as f:
            text = f.read()
        for m in MARK.finditer(text):
            for i in QUOTED.findall(m.group(1)):
                out.setdefault(i, set()).add(os.path.relpath(p, root))
    return out


def registry_ids():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from conformance.strategies import REGISTRY
    return {i: {f"strategies:{e.name}"} for e in REGISTRY.values() for i in e.spec}


def in_vectors(root):
    out = {}
    d = os.path.join(root, "conformance", "vectors")
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if n.endswith(".json"):
            with open(os.path.join(d, n)) as f:
                doc = json.load(f)
            for g in doc.get("testGroups", []):
                for t in g.get("tests", []):
                    for i in t.get("spec", []):
                        out.setdefault(i, set()).add(f"{n}#{t['tcId']}")
    return out


def coverage(root):
    ids = spec_ids(root)
    impl, conf, tests, vec = implemented(root, ids), checked(root, "conformance"), checked(root, "tests"), in_vectors(root)
    for i, w in registry_ids().items():
        conf.setdefault(i, set()).update(w)
    rows = []
    for i, (f, title) in ids.items():
        rows.append({"id": i, "file": f, "title": title, "impl": len(impl.get(i, ())),
                     "conformance": len(conf.get(i, ())), "tests": len(tests.get(i, ())), "vectors": len(vec.get(i, ()))})
    unknown = sorted((set(conf) | set(vec)) - set(ids))
    return rows, unknown


def exemptions(root):
    p = os.path.join(root, "spec", "coverage_exemptions.txt")
    out = {}
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                body, _, reason = line.partition("#")
                if body.strip():
                    out[body.strip()] = reason.strip()
    return out


def missing(rows, exempt):
    """IDs lacking an implementing function or any check (conformance, tests or vectors), not exempted."""
    return [r for r in rows if r["id"] not in exempt
            and (r["impl"] == 0 or (r["conformance"] + r["tests"] + r["vectors"]) == 0)]


def table(rows):
    head = f"{'id':<16} {'impl':>4} {'conf':>4} {'tests':>5} {'vect':>4}  title"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['id']:<16} {r['impl']:>4} {r['conformance']:>4} {r['tests']:>5} {r['vectors']:>4}  "
                     f"{r['title'][:50]}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description="spec ID coverage")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--missing", action="store_true", help="exit 1 if a non-exempt ID lacks impl or checks")
    a = ap.parse_args(argv)
    rows, unknown = coverage(a.root)
    print("\n".join(table(rows)))
    if unknown:
        print(f"\nIDs used by checks/vectors but not defined in spec/: {', '.join(unknown)}")
    miss = missing(rows, exemptions(a.root))
    if miss:
        print(f"\n{len(miss)} IDs without implementing function or check: {', '.join(r['id'] for r in miss)}")
    return 1 if (a.missing and miss) else 0


if __name__ == "__main__":
    sys.exit(main())
