"""minadapters/io has no import circle and imports at module top (issue 10 part 7). Spec: IO-13."""
import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(__file__), "..", "..", "minadapters")
MODULES = {f"io.{n[:-3]}": os.path.join(PKG, "io", n) for n in os.listdir(os.path.join(PKG, "io")) if n.endswith(".py")}
MODULES.update({"jsonio": os.path.join(PKG, "jsonio.py"), "validation": os.path.join(PKG, "validation.py"),
                "concurrency": os.path.join(PKG, "concurrency.py")})


def _imports(path, package):
    """(module-level imports, imports inside functions) of minadapters modules, as dotted names under the package."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
            base = [b for b in base if b]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] + [f"{target}.{a.name}" if target else a.name for a in node.names]
            (top if node in tree.body else nested).update(n for n in names if n in MODULES or n.split(".")[0] in
                                                           ("io", "jsonio", "errors", "validation", "concurrency"))
    return top, nested


@pytest.mark.spec("IO-13")
def test_io_has_no_import_circle_and_no_function_level_imports():
    graph = {}
    for name, path in MODULES.items():
        package = name.rsplit(".", 1)[0] if "." in name else ""
        top, nested = _imports(path, package)
        assert not nested, f"minadapters/{name}.py imports inside functions: {sorted(nested)}"
        graph[name] = {t for t in top if t in MODULES and t != name}
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for m in graph[n]:
            assert state.get(m) != "open", f"import circle: {' -> '.join(stack + [n, m])}"
            if m not in state:
                visit(m, stack + [n])
        state[n] = "done"
    for n in graph:
        if n not in state:
            visit(n, [])
    assert graph["io.atomic"] == set() and "io.files" not in graph["io.safetensors_io"] | graph["io.torch_save"]
