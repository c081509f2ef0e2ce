"""The modules of src/conch import each other one way: no cycle, not even through an import
under ``TYPE_CHECKING`` or inside a function, and the sync core never imports conch.aio."""

from __future__ import annotations

import ast
import collections
import itertools
import pathlib

SOURCE = pathlib.Path(__file__).resolve().parents[1] / "src"
# The packages whose modules make up the sync API (conch.aio aside): `import conch` must not
# bring in asyncio.
SYNC_CORE = ("conch", "conch.backends", "conch.backends.kit")

Graph = dict[str, dict[str, int]]  # module → imported module → line of the first such import


def modules() -> dict[str, pathlib.Path]:
    """Every module of the conch package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted((SOURCE / "conch").rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: dict[str, pathlib.Path]) -> list[str]:
    """The conch modules one import statement names (``from x import y``: ``x.y`` where that
    is a module, else ``x``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                 for alias in node.names]
    found = []
    for name in names:
        while name and name not in known:  # `import conch.x.y` names module conch.x.y
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def import_graph() -> Graph:
    """Each module's imports of other conch modules, wherever in the module they are."""
    known = modules()
    graph: Graph = {}
    for module, path in known.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, module, path.name == "__init__.py", known):
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def shortest_cycle(graph: Graph, start: str) -> list[str] | None:
    """The shortest import path from ``start`` back to itself (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = collections.deque([start])
    while frontier:
        module = frontier.popleft()
        for target in sorted(graph[module]):
            if target == start:
                path = [module]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if target not in came_from:
                came_from[target] = module
                frontier.append(target)
    return None


def cycles(graph: Graph) -> list[list[str]]:
    """One shortest cycle through each module that is on one, each cycle listed once."""
    found: dict[frozenset[str], list[str]] = {}
    for module in sorted(graph):
        cycle = shortest_cycle(graph, module)
        if cycle is not None:
            found.setdefault(frozenset(cycle), cycle)
    return list(found.values())


def in_sync_core(module: str) -> bool:
    return module == "conch" or (module.rpartition(".")[0] in SYNC_CORE
                                 and module != "conch.aio")


def describe(graph: Graph, cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "conch.backends.base" in graph["conch.lock"]  # at the top
    assert "conch.aio.coordinator" in graph["conch.aio.decorators"]  # `from conch.aio.x`
    # inside a function
    assert "conch.backends.memory.async_lock" in graph["conch.backends.memory.backend"]
    assert "conch.coordinator" in graph["conch.aio.native"]  # under TYPE_CHECKING
    assert "conch.metrics" in graph["conch.aio.lock"]  # `from conch import metrics`
    assert "conch" in graph["conch.compat.tooz.errors"]  # `from conch import Error`


def test_no_module_of_conch_imports_itself_back() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_the_sync_core_never_imports_conch_aio() -> None:
    graph = import_graph()
    offenders = [f"{module} imports {target} (line {line})"
                 for module, edges in sorted(graph.items())
                 if in_sync_core(module)
                 for target, line in sorted(edges.items())
                 if target == "conch.aio" or target.startswith("conch.aio.")]
    assert not offenders, "\n".join(offenders)
