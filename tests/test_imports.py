"""The package's import graph has no cycle, read from the source.

Every ``import`` and ``from ... import`` of a ``branching_ops`` module counts
as an edge, at module level or inside a function alike: a lazy import hides a
cycle from Python at start-up, not from a reader. A cycle means two modules
that cannot be understood (or loaded) one without the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "branching_ops"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # "from package import module" imports the module; else the module itself.
            targets.update(f"{base}.{alias.name}" for alias in node.names)
            targets.add(base)
    return {target for target in targets if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(path, name, set(known)) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read() -> None:
    """Proof the test below can fail: known edges are found."""
    graph = import_graph()

    assert "branching_ops.tracking" in graph["branching_ops.databases"]
    assert "branching_ops.tracking" in graph["branching_ops.apps"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_inside_the_package() -> None:
    assert cycles(import_graph()) == []


def test_the_netbox_plugin_outside_netbox_says_what_it_is() -> None:
    imported = subprocess.run(
        [sys.executable, "-c", "import branching_ops_netbox"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert imported.returncode == 1
    assert imported.stderr.rstrip().splitlines()[-1] == (
        "ImportError: branching_ops_netbox is a NetBox plugin: list it in NetBox's "
        'configuration, PLUGINS = ["netbox_branching", "branching_ops_netbox"], and run '
        'NetBox. Outside NetBox, add "branching_ops" to INSTALLED_APPS instead.'
    )
