"""The package's shape, checked statically over its imports.

Modules import only downward through these layers, with no cycle and no import of
kgraph code inside a function (the usual way to dodge a cycle):

    ir -> graph data -> rules -> analysis -> passes -> lift/lower -> the public API

Only the command line defers imports, to answer `--help` without loading a backend.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "kgraph"

# Modules of each layer (a trailing ".*" takes a whole package); the rest is the API.
LAYERS: list[tuple[str, list[str]]] = [
    ("ir", ["errors", "deferred", "spaces", "ir", "indices", "criteria", "tables"]),
    ("graph data", ["graph_data", "keras_utils"]),
    ("rules", ["rules", "rules.*"]),
    (
        "analysis",
        ["groups", "stats", "verify", "view", "printing", "page", "dump", "sparse", "sparse.*"],
    ),
    ("passes", ["passes", "passes.*"]),
    ("lift/lower", ["weight_feed", "lower", "graph", "trace", "configs", "lift"]),
]
DEFERRED_IMPORTS_ALLOWED = {"kgraph.cli"}  # start-up time: `kgraph --help` loads no backend


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(name: str) -> int:
    short = name.removeprefix("kgraph").removeprefix(".")
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if member.endswith(".*"):
                if short.startswith(member[:-1]):
                    return index
            elif short == member:
                return index
    return len(LAYERS)  # the public API on top


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "kgraph"]
    if node.module is None or node.module.split(".")[0] != "kgraph" or node.level:
        return []
    found = []
    for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        found.append(candidate if candidate in known else node.module)
    return found


def imports(path: Path, known: dict[str, Path]) -> tuple[set[str], list[tuple[int, str]]]:
    """(kgraph modules imported at module level, (line, module) imported inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    deferred: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return  # annotations only
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(node, known):
                if in_function:
                    deferred.append((node.lineno, target))
                else:
                    top.add(target)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return top, deferred


def import_graph() -> nx.DiGraph:
    known = modules()
    graph = nx.DiGraph()
    for name, path in known.items():
        graph.add_node(name)
        top, _ = imports(path, known)
        for target in top:
            graph.add_edge(name, target)
            # importing a submodule runs its packages' __init__ first, unless the
            # importer is inside that package (then it is already being imported)
            parts = target.split(".")
            for depth in range(1, len(parts)):
                package = ".".join(parts[:depth])
                if not name.startswith(package + ".") and name != package:
                    graph.add_edge(name, package)
    return graph


def test_no_module_imports_kgraph_inside_a_function() -> None:
    known = modules()
    found = [
        f"{name}:{line} imports {target}"
        for name, path in sorted(known.items())
        if name not in DEFERRED_IMPORTS_ALLOWED
        for line, target in imports(path, known)[1]
    ]
    assert found == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], f"import cycles: {cycles[:5]}"


def test_modules_import_only_their_layer_or_below() -> None:
    graph = import_graph()
    upward = [
        f"{src} ({LAYERS[layer_of(src)][0] if layer_of(src) < len(LAYERS) else 'api'}) imports "
        f"{dst} ({LAYERS[layer_of(dst)][0] if layer_of(dst) < len(LAYERS) else 'api'})"
        for src, dst in graph.edges
        if layer_of(dst) > layer_of(src)
    ]
    assert upward == []


def test_the_core_layers_are_where_the_docs_say() -> None:
    # a renamed or moved module must be placed in a layer again, not fall into "api"
    known = modules()
    for _, members in LAYERS:
        for member in members:
            name = f"kgraph.{member.removesuffix('.*')}"
            assert name in known, f"{name} is listed in LAYERS but does not exist"


def test_importing_kgraph_loads_no_backend() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kgraph\n"
        "heavy = [m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert 'prune' in dir(kgraph) and kgraph.__version__\n"
        "assert callable(kgraph.lift) and kgraph.groups.group_of\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_export_table_and_all_agree():
    import kgraph

    assert kgraph.__all__ == list(kgraph._EXPORTS)
