"""Loader of golden-vector and rejection files (wycheproof layout: header, notes, testGroups, tests).

A vector file ``<suite>.json`` may have a sidecar ``<suite>.npz`` holding arrays keyed ``<tcId>/<name>``.
The loader checks the header, ``numberOfTests``, unique tcIds, flags defined in ``notes`` and that every array a
test needs is present, and raises VectorFormatError otherwise (truncated or malformed files never pass).
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

VECTOR_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")
SCHEMAS = ("adapter_forward.schema.json", "rejection.schema.json")
HEADER = ("suite", "schema", "specVersion", "generator", "numberOfTests", "notes", "testGroups")
RESULTS = ("valid", "invalid", "acceptable")


class VectorFormatError(ValueError):
    """A vector file is malformed, truncated or inconsistent with its header."""


def _fail(path, msg):
    raise VectorFormatError(f"{os.path.basename(path)}: {msg}")


def load(path: str) -> dict:
    """Parse and validate one vector file; returns the JSON with ``_arrays`` (dict or None) attached."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        _fail(path, f"cannot parse JSON: {e}")
    if not isinstance(doc, dict):
        _fail(path, "top level must be an object")
    missing = [k for k in HEADER if k not in doc]
    if missing:
        _fail(path, f"header lacks {missing}")
    if doc["schema"] not in SCHEMAS:
        _fail(path, f"schema={doc['schema']!r}, but should be one of {SCHEMAS}")
    tests = [t for g in doc["testGroups"] for t in g.get("tests", [])]
    if doc["numberOfTests"] != len(tests):
        _fail(path, f"numberOfTests={doc['numberOfTests']}, but the file holds {len(tests)} tests (truncated?)")
    ids = [t.get("tcId") for t in tests]
    if len(set(ids)) != len(ids) or any(not isinstance(i, int) for i in ids):
        _fail(path, "tcId values must be unique integers")
    for t in tests:
        if t.get("result") not in RESULTS:
            _fail(path, f"tcId {t.get('tcId')}: result={t.get('result')!r}, but should be one of {RESULTS}")
        undefined = [fl for fl in t.get("flags", []) if fl not in doc["notes"]]
        if undefined:
            _fail(path, f"tcId {t['tcId']}: flags {undefined} are not defined in notes")
        if not t.get("spec"):
            _fail(path, f"tcId {t['tcId']}: no spec IDs")
    doc["_arrays"] = None
    if doc["schema"] == "adapter_forward.schema.json":
        doc["_arrays"] = _load_arrays(path, tests)
    return doc


def _load_arrays(path, tests):
    npz = os.path.splitext(path)[0] + ".npz"
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        _fail(path, f"cannot read sidecar {os.path.basename(npz)}: {type(e).__name__}: {e}")
    for t in tests:
        need = [f"{t['tcId']}/{n}" for n in ("input_ids", "attention_mask")]
        if t["result"] == "valid":
            need.append(f"{t['tcId']}/expected")
        for a in t.get("adapters", []):
            need += [f"{t['tcId']}/w/{a['name']}/{k}" for k in a.get("weights", [])]
        for fu in t.get("fusions", []):
            need += [f"{t['tcId']}/f/{fu['name']}/{k}" for k in fu.get("weights", [])]
        absent = [k for k in need if k not in arrays]
        if absent:
            _fail(path, f"tcId {t['tcId']}: sidecar lacks arrays {absent[:3]}")
    return arrays


def vector_files(kind="adapter_forward.schema.json"):
    """Paths of the shipped vector files of one schema, sorted."""
    out = []
    for n in sorted(os.listdir(VECTOR_DIR)) if os.path.isdir(VECTOR_DIR) else []:
        if n.endswith(".json"):
            p = os.path.join(VECTOR_DIR, n)
            with open(p) as f:
                head = f.read(400)
            if kind in head:
                out.append(p)
    return out


def cases(kind="adapter_forward.schema.json"):
    """(file, group, test) for every test in the shipped files of ``kind``."""
    out = []
    for p in vector_files(kind):
        doc = load(p)
        for g in doc["testGroups"]:
            for t in g["tests"]:
                out.append((doc, g, t))
    return out
