"""The package's import graph against docs/architecture.md's layers: no module imports one in
a higher layer, and no import cycle exists, counting function-local imports too."""

from __future__ import annotations

import ast
import os
import re

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "segnode_jax")


def _modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (``from segnode_jax import
    api`` counts as ``segnode_jax.api``; relative imports resolved)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "segnode_jax"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                if base.split(".")[0] == "segnode_jax":
                    found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        graph[name] = {m for m in found if m != name}
    return graph


def documented_layers() -> list[list[str]]:
    """The layers of docs/architecture.md's code map, bottom up (its "Layers, bottom up:" sentence)."""
    with open(os.path.join(REPO, "docs", "architecture.md")) as f:
        text = " ".join(f.read().split())
    sentence = re.search(r"Layers, bottom up: (.*?) -> the package's", text).group(1)
    return [re.findall(r"`([a-z_]+)`", layer) for layer in sentence.split("->")]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycles():
    assert _cycles(import_graph()) == []


def test_no_module_imports_a_higher_layer():
    layers = documented_layers()
    rank = {name: i for i, layer in enumerate(layers) for name in layer}
    graph = import_graph()
    tops = {m.split(".")[1] for m in graph if "." in m}
    assert tops <= set(rank), f"modules missing from the layers in docs/architecture.md: {sorted(tops - set(rank))}"
    upward = [
        f"{a} -> {b}"
        for a, imported in sorted(graph.items())
        for b in sorted(imported)
        if "." in a
        and "." in b
        and a.split(".")[1] != b.split(".")[1]
        and rank[b.split(".")[1]] > rank[a.split(".")[1]]
    ]
    assert upward == []
    # Only the package's __init__ may import the package itself.
    assert [a for a, imported in graph.items() if "segnode_jax" in imported and a != "segnode_jax"] == []


def test_the_cycle_finder_finds_a_cycle_through_a_third_module():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


# Function-local imports of this package that are kept on purpose (module: the reason).
LOCAL_IMPORTS_ALLOWED = {
    "segnode_jax": "segnode_jax.load imports scoring on first use: `import segnode_jax` stays free of orbax and TFDS",
}


def function_local_imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of this package inside a function of ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and (sub.level or (sub.module or "").startswith("segnode_jax")):
                    found.append((sub.lineno, "." * sub.level + (sub.module or "")))
                elif isinstance(sub, ast.Import):
                    found += [(sub.lineno, a.name) for a in sub.names if a.name.startswith("segnode_jax")]
    return found


def test_the_package_imports_its_own_modules_at_module_level():
    local = {
        f"{name}:{line} imports {module}"
        for name, path in _modules().items()
        if name not in LOCAL_IMPORTS_ALLOWED
        for line, module in function_local_imports(open(path).read())
    }
    assert sorted(local) == []
    # The finder finds one (the check can fail).
    assert function_local_imports("def f():\n    from segnode_jax import ode\n") == [(2, "segnode_jax")]
