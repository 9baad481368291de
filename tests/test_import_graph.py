"""The import graph of the orderwatch package, read statically: no cycles (TYPE_CHECKING and
function-local imports count too), and `handlers/` never imports `streams/`.

A module's imports are every `import x` / `from x import y` anywhere in its source (module level,
under `if TYPE_CHECKING:`, inside functions), relative imports resolved, `from pkg import mod`
resolved to the submodule when it is one. A package's `__init__` is a node like any module; an
import of `a.b.c` is an edge to `a.b.c` only (importing a package's child runs the parent's
`__init__`, but none of ours imports anything).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import orderwatch

ROOT = Path(orderwatch.__file__).resolve().parent
"""The package: orderwatch/ and the folders it links to (schemas, detectors, streams, handlers)."""


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package, by dotted name (through the symlinked sub-packages)."""
    out: dict[str, Path] = {}

    def walk(folder: Path, name: str) -> None:
        for path in sorted(folder.iterdir()):
            if path.is_dir() and (path / "__init__.py").exists():
                walk(path, f"{name}.{path.name}")
            elif path.suffix == ".py":
                out[name if path.stem == "__init__" else f"{name}.{path.stem}"] = path

    walk(root, "orderwatch")
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported orderwatch module, line) for every import in a module's source, wherever it sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _nearest(alias.name, known)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                target = child if child in known else _nearest(base, known)
                if target:
                    yield target, node.lineno


def _nearest(name: str, known: set[str]) -> str | None:
    """`name` if it is a module of ours, else its closest enclosing module of ours (None: not ours)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {imported module: first line}, orderwatch modules only, self-imports dropped."""
    modules = _modules(root)
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path, known):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module, spelled out:
    [a, b, ..., a] (a shortest one from the component's first module)."""
    return [_one_cycle(graph, set(c), c[0]) for c in components(graph)]


def components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _one_cycle(graph: dict[str, dict[str, int]], members: set[str], start: str) -> list[str]:
    """A shortest cycle from `start` back to it inside one strongly connected component (BFS)."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return [start]


def _spell(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return " -> ".join(
        f"{a} (line {graph[a][b]})" if i < len(cycle) - 1 else a
        for i, (a, b) in enumerate(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
    )


# -- the rules --------------------------------------------------------------------------------------


def test_the_graph_sees_every_module_and_every_import_form() -> None:
    graph = import_graph()
    assert {"orderwatch.cli", "orderwatch.streams.app", "orderwatch.handlers.service"} <= set(graph)
    assert "orderwatch.streams.console.pages" in graph
    # A module-level import, and a package's child named by `from package import child`.
    assert "orderwatch.errors" in graph["orderwatch.handlers.service"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    knots = components(graph)
    assert not knots, "import cycles:\n" + "\n".join(
        f"{_spell(graph, _one_cycle(graph, set(c), c[0]))}\n  (every module of that knot: {', '.join(c)})"
        for c in knots
    )


def test_handlers_never_import_streams() -> None:
    graph = import_graph()
    bad = [
        f"{module} imports {target} (line {line})"
        for module, edges in graph.items()
        if module.startswith("orderwatch.handlers")
        for target, line in edges.items()
        if target.startswith("orderwatch.streams")
    ]
    assert not bad, "handlers/ must not import streams/:\n" + "\n".join(bad)


# -- the checker itself, on a package made for it -----------------------------------------------------


def _package(tmp: Path, files: dict[str, str]) -> Path:
    root = tmp / "orderwatch"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    ("a_source", "b_source"),
    [
        ("from orderwatch.b import x\n", "import orderwatch.a\n"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from orderwatch.b import B\n", "from . import a\n"),
        ("def f():\n    from orderwatch import b\n", "def g():\n    from .a import f\n"),
    ],
    ids=["module-level", "type-checking-and-relative", "function-local"],
)
def test_a_cycle_is_found_and_named_whatever_the_import_form(tmp_path: Path, a_source: str, b_source: str) -> None:
    root = _package(tmp_path, {"a.py": a_source, "b.py": b_source, "c.py": "from orderwatch import a\n"})
    graph = import_graph(root)
    cycles = find_cycles(graph)
    assert cycles == [["orderwatch.a", "orderwatch.b", "orderwatch.a"]]
    assert _spell(graph, cycles[0]).startswith("orderwatch.a (line ")


def test_a_longer_cycle_is_spelled_out_and_an_acyclic_graph_passes(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "p/x.py": "from orderwatch.p import y\n",
            "p/y.py": "import orderwatch.q.z as z\n",
            "q/z.py": "from ..p.x import thing\n",
            "q/w.py": "from orderwatch.p.x import thing\n",
        },
    )
    assert find_cycles(import_graph(root)) == [["orderwatch.p.x", "orderwatch.p.y", "orderwatch.q.z", "orderwatch.p.x"]]
    acyclic = _package(tmp_path / "ok", {"a.py": "from orderwatch import b\n", "b.py": "import json\n"})
    assert find_cycles(import_graph(acyclic)) == []
