"""The project's layout rules, read from the source (nothing imported):

- no import circles among the project's modules: a module owns its types, and the other side
  takes them as parameters (a Protocol) or from a shared leaf module. Every import counts:
  module-level, inside a function, and under ``if TYPE_CHECKING:``;
- the rack computer's code (actors/node/) never imports the coordinator's (actors.coordinator)
  or its storage (actors.store), not even through another module: a node runs without them.

Importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``, but that is not counted as
an import of ``a.b``: a package that wires its own submodules (actors/control/cli/) would
otherwise be a circle with every submodule that imports a sibling.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "protocol", "registry", "sequences", "virtual", "config")
NODE = "actors.node"
NOT_FOR_THE_NODE = ("actors.coordinator", "actors.store")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported name, line) for every import statement anywhere in the module, relative ones
    resolved; ``from X import Y`` yields X and X.Y (Y may be a submodule)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, node.lineno))
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """Module -> {project module it imports: line of the first such import}."""
    files = module_files(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        for target, line in imports_of(name, path):
            if target in files and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    members = set(cycle)
    edges = [f"  {m} imports {t} (line {line})" for m in cycle
             for t, line in sorted(graph[m].items()) if t in members]
    return "import circle among " + ", ".join(cycle) + ":\n" + "\n".join(edges)


def node_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Each node module that reaches coordinator or store code, with the import chain."""
    out = []
    for start in sorted(m for m in graph if m == NODE or m.startswith(NODE + ".")):
        seen = {start: [start]}
        queue = [start]
        while queue:
            module = queue.pop(0)
            for target in sorted(graph[module]):
                if target in seen:
                    continue
                seen[target] = seen[module] + [target]
                if target.startswith(NOT_FOR_THE_NODE):
                    out.append(" -> ".join(seen[target]))
                else:
                    queue.append(target)
    return out


def test_the_analysis_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A circle closed by a function-level import, one closed under TYPE_CHECKING and a
    relative import are all found, and a package importing its own submodules is not one."""
    pkg = tmp_path / "virtual"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import virtual.b\n")
    (pkg / "b.py").write_text("def f():\n    from virtual import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from virtual.d import D\n")
    (pkg / "d.py").write_text("from .c import C\n")
    (pkg / "sub" / "__init__.py").write_text("from virtual.sub import e\n")
    (pkg / "sub" / "e.py").write_text("from virtual.sub.f import g\n")
    (pkg / "sub" / "f.py").write_text("g = 1\n")
    graph = import_graph(tmp_path)
    assert import_cycles(graph) == [["virtual.a", "virtual.b"], ["virtual.c", "virtual.d"]]


def test_no_import_circles() -> None:
    graph = import_graph()
    assert len(graph) > 100, sorted(graph)  # the walk found the project
    cycles = import_cycles(graph)
    assert not cycles, "\n".join(describe_cycle(graph, c) for c in cycles)


def test_node_code_never_imports_coordinator_or_store_code() -> None:
    graph = import_graph()
    assert any(m.startswith(NODE + ".") for m in graph)
    violations = node_violations(graph)
    assert not violations, ("actors/node must not import actors.coordinator or actors.store:\n"
                            + "\n".join(violations))
