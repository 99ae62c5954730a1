"""The package's import graph, read statically: no import circle, and every import inside a function says why.

Every ``minadapters/**/*.py`` is parsed with ``ast`` (nothing is imported). An import statement that runs when
its module is imported (module body, class body, ``try``/``if`` at top level) is a *module-level* edge; one inside
a function body runs later and is a *deferred* edge. ``if TYPE_CHECKING:`` blocks never run and give no edge.

Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit parent edges are left out, as
pylint's cyclic-import check leaves them out: the package root re-exports everything, so with them every module
would be "in a circle" with the root, and the graph would say nothing about which module needs which.
"""
from __future__ import annotations

import ast
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "minadapters"
# A comment that only silences a tool does not say why an import is deferred.
_PRAGMA = re.compile(r"(noqa(:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(\[[^\]]*\])?"
                     r"|pragma:\s*no\s+(cover|branch)|pylint:\s*disable=[\w,-]+|fmt:\s*(on|off|skip)|isort:\s*skip)")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module inside the package, dotted
    path: str    # file of the import statement, relative to the repository root
    line: int
    deferred: bool  # inside a function body


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_files() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PKG).rglob("*.py"))}


def _extension_modules() -> set[str]:
    """Compiled modules the cffi build scripts declare (``ffi.set_source("minadapters._native", ...)``), so that
    ``from .. import _native`` resolves to that module and not to the package that holds it."""
    names = set()
    for script in [*(ROOT / "native").glob("*.py"), *(ROOT / PKG).rglob("*.py")]:
        text = script.read_text(encoding="utf-8")
        names.update(re.findall(r"set_source\(\s*[\"']([\w.]+)[\"']", text))
        names.update(re.findall(r"^MODULE\s*=\s*[\"']([\w.]+)[\"']", text, re.M))   # set_source(MODULE, ...)
    return {n for n in names if n.startswith(PKG + ".")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """(node, deferred) for every import statement that can run, in source order."""
    out = []

    def visit(node, deferred):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub, deferred)
                continue
            visit_stmt(child, deferred)

    def visit_stmt(child, deferred):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            out.append((child, deferred))
        inner = deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(child, inner)

    visit(tree, False)
    return out


def _resolve(node, module: str, is_package: bool, known: set[str]) -> list[str]:
    """Package modules that an import statement loads, by dotted name."""
    def known_prefix(name):
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    if isinstance(node, ast.Import):
        return [t for t in (known_prefix(a.name) for a in node.names) if t]
    if node.level:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        origin = f"{base}.{node.module}" if node.module else base
    else:
        origin = node.module or ""
    if not (origin == PKG or origin.startswith(PKG + ".")):
        return []
    targets = []
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        targets.append(sub if sub in known else known_prefix(origin))
    return [t for t in targets if t]


def import_edges() -> list[Edge]:
    files = _package_files()
    known = set(files) | _extension_modules()
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = str(path.relative_to(ROOT))
        for node, deferred in _imports(tree):
            for target in _resolve(node, module, path.name == "__init__.py", known):
                if target != module:
                    edges.append(Edge(module, target, rel, node.lineno, deferred))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One concrete cycle (as its edges) per strongly connected component with more than one module."""
    graph = defaultdict(dict)  # source -> target -> first edge
    for e in edges:
        graph[e.source].setdefault(e.target, e)
    index, low, on_stack, stack, comps = {}, {}, set(), [], []

    def strongconnect(v):  # Tarjan; the package has ~80 modules, so recursion depth is no concern
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(set(graph) | {e.target for e in edges}):
        if v not in index:
            strongconnect(v)
    cycles, seen = [], set()
    for comp in comps:  # a shortest cycle through each module of the component, each distinct cycle once
        for start in sorted(comp):
            cyc = _cycle_through(start, comp, graph)
            key = frozenset((e.source, e.target) for e in cyc)
            if key not in seen:
                seen.add(key)
                cycles.append(cyc)
    return cycles


def _cycle_through(start: str, comp: set[str], graph) -> list[Edge]:
    """A shortest cycle through ``start`` inside its strongly connected component (breadth-first)."""
    parent = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, e in sorted(graph[v].items()):
                if w not in comp:
                    continue
                if w == start:
                    path = [e]
                    while parent[v] is not None:
                        path.append(parent[v])
                        v = parent[v].source
                    return path[::-1]
                if w not in parent:
                    parent[w] = e
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in component {sorted(comp)}")


def _describe(cycles: list[list[Edge]]) -> str:
    lines = []
    for cyc in cycles:
        lines.append(" -> ".join([cyc[0].source] + [e.target for e in cyc]))
        lines.extend(f"    {e.path}:{e.line} {e.source} imports {e.target}{' (in a function)' if e.deferred else ''}"
                     for e in cyc)
    return "\n".join(lines)


def _comments(path: Path) -> dict[int, str]:
    """Line number -> comment text (without '#') for every comment in a file."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for tok in tokenize.generate_tokens(fh.readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def _says_why(comment: str | None) -> bool:
    """A comment says why unless it is empty or only tool pragmas ("x  # noqa: F401  (why)" does say why)."""
    rest = _PRAGMA.sub("", comment or "").strip(" ()")
    return bool(rest)


def undocumented_deferred_imports() -> list[str]:
    """``path:line`` of each function-level import with no comment on its line or on the line above its group.

    A group is a run of import statements directly after one another in one function body, so one comment above
    ``from .a import x`` / ``from .b import y`` covers both."""
    offenders = []
    for module, path in _package_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        comments = _comments(path)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for body in _statement_lists(func):
                head = None
                for i, stmt in enumerate(body):
                    if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        head = None
                        continue
                    prev = body[i - 1] if i else None
                    if head is None or prev is None or prev.end_lineno != stmt.lineno - 1:
                        head = stmt
                    lines = range(stmt.lineno, stmt.end_lineno + 1)
                    if any(_says_why(comments.get(n)) for n in lines) or _says_why(comments.get(head.lineno - 1)):
                        continue
                    offenders.append(f"{path.relative_to(ROOT)}:{stmt.lineno}: {ast.unparse(stmt)}")
    return offenders


def _statement_lists(func):
    """Every statement list directly inside a function (its body and nested blocks, not nested functions)."""
    todo = [func]
    while todo:
        node = todo.pop()
        for name in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, name, None)
            if not isinstance(block, list):
                continue
            if name != "handlers":
                yield block
            for stmt in block:
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    todo.append(stmt)
        if hasattr(ast, "Match") and isinstance(node, ast.Match):
            todo.extend(node.cases)


# --- the tests ------------------------------------------------------------------------------------------------

def test_the_graph_sees_the_package():
    edges = import_edges()
    assert len(_package_files()) > 30, "expected the whole package under minadapters/"
    # Known edges that must be found, so a resolver bug cannot make the cycle checks pass vacuously.
    found = {(e.source, e.target) for e in edges}
    assert ("minadapters", "minadapters.model") in found
    assert ("minadapters.configuration.bottleneck", "minadapters.configuration._checks") in found
    assert ("minadapters.configuration.bottleneck", "minadapters.configuration.base") in found


def test_find_cycles_reports_a_planted_cycle():
    e = [Edge("p.a", "p.b", "a.py", 1, False), Edge("p.b", "p.c", "b.py", 2, True),
         Edge("p.c", "p.a", "c.py", 3, False), Edge("p.c", "p.d", "c.py", 4, False)]
    (cyc,) = find_cycles(e)
    assert [x.source for x in cyc] == ["p.a", "p.b", "p.c"]
    assert "b.py:2 p.b imports p.c (in a function)" in _describe([cyc])
    assert find_cycles(e[:2] + e[3:]) == []


def test_says_why_rejects_bare_pragmas():
    assert _says_why("deferred: tokenizers is optional")
    assert _says_why("noqa: F401  (optional dependency, only needed to probe)")
    assert not _says_why("noqa: F401")
    assert not _says_why("type: ignore")
    assert not _says_why(None)


def test_no_import_cycle_at_module_level():
    cycles = find_cycles([e for e in import_edges() if not e.deferred])
    assert not cycles, "import cycles among module-level imports:\n" + _describe(cycles)


def test_no_import_cycle_through_deferred_imports():
    """An import moved into a function still closes a circle; the issue counts those too."""
    cycles = find_cycles(import_edges())
    assert not cycles, "import cycles (counting imports inside functions):\n" + _describe(cycles)


def test_function_level_imports_say_why():
    offenders = undocumented_deferred_imports()
    assert not offenders, (f"{len(offenders)} imports inside functions without a comment saying why "
                           "(same line or line above, e.g. '# deferred: optional dependency'):\n"
                           + "\n".join(offenders))


# An absolute filesystem path (``/work/shared/x.md``): a reader of the repository cannot open it.
_ABSOLUTE_PATH = re.compile(r"(?:^|[\s(`\"'])(/[A-Za-z_][\w.-]*/[\w./-]+)")


def test_spec_cites_no_document_outside_the_repository():
    """Spec pages cite upstream source paths (adapter-hub/adapters ``src/adapters/...``) and repository files,
    not absolute paths on one machine nor a private digest."""
    offenders = []
    for page in sorted((ROOT / "spec").glob("*.md")):
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for m in _ABSOLUTE_PATH.finditer(line):
                offenders.append(f"spec/{page.name}:{n}: {m.group(1)}")
            if re.search(r"\bdigest §", line):
                offenders.append(f"spec/{page.name}:{n}: cites the semantics digest, not an upstream source file")
    assert not offenders, "spec pages cite documents outside the repository:\n" + "\n".join(offenders)


def test_absolute_path_pattern():
    assert _ABSOLUTE_PATH.search("(digest `/work/shared/reference/adapters-semantics.md` §4)")
    assert not _ABSOLUTE_PATH.search("`src/adapters/methods/lora.py`, x/y, (B, T)/2, a/b/c")
