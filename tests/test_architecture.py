"""The house's architecture, checked from the code's own imports (docs/architecture.md).

Every module of the package is read with ``ast`` (type-checking imports included: a dependency for
typing is still a dependency), and two rules hold:

- no import circle, of any length;
- only the composition roots build or name a client: the two shells themselves, the command line,
  the Celery integration, the pytest plugin and the lazy top-level ``__init__``. Flows, stores and
  the observability parts take the core, a protocol, or a callable instead.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import aims_snaptrade

PACKAGE = Path(aims_snaptrade.__file__).parent
CLIENT = "aims_snaptrade.client"
MAY_IMPORT_A_CLIENT = ("aims_snaptrade", CLIENT, "aims_snaptrade.cli", "aims_snaptrade.integrations")
MAY_IMPORT_A_CLIENT_EXACTLY = ("aims_snaptrade.testing.pytest_plugin",)


def _modules(root: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in modules else module)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def client_importers(graph: dict[str, set[str]]) -> list[str]:
    """Modules outside the composition roots that import a client."""
    return sorted(
        name
        for name, targets in graph.items()
        if CLIENT in targets
        and name not in MAY_IMPORT_A_CLIENT_EXACTLY
        and not any(name == root or name.startswith(root + ".") for root in MAY_IMPORT_A_CLIENT[1:])
        and name != MAY_IMPORT_A_CLIENT[0]
    )


def test_no_module_is_part_of_an_import_circle():
    assert circles(import_graph()) == []


def test_no_flow_store_or_observability_module_imports_a_client():
    assert client_importers(import_graph()) == []


def test_the_checks_find_a_circle_and_a_client_import(tmp_path):
    # The two rules above must be able to fail: a package with a two-module circle and a flow
    # that imports the client.
    root = tmp_path / "aims_snaptrade"
    (root / "sync").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "client.py").write_text("from aims_snaptrade.sync import flow\n")
    (root / "sync" / "__init__.py").write_text("")
    (root / "sync" / "flow.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from aims_snaptrade.client import X\n"
    )
    graph = import_graph(root)
    assert circles(graph) == [["aims_snaptrade.client", "aims_snaptrade.sync.flow"]]
    assert client_importers(graph) == ["aims_snaptrade.sync.flow"]


@pytest.mark.parametrize("old", sorted(importlib.import_module("aims_snaptrade._moved").MOVED))
def test_an_old_module_path_is_the_new_module_with_a_deprecation_warning(old):
    moved = importlib.import_module("aims_snaptrade._moved").MOVED
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=moved[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(moved[old])


def test_every_module_of_the_package_imports():
    # The graph above is read from the source; this imports each module for real (the package's
    # __main__ excepted: importing it runs the command), so a module that only breaks when loaded
    # (a name removed from the module it imports, an import circle Python cannot resolve) fails.
    for name in sorted(_modules()):
        if not name.endswith(".__main__"):
            importlib.import_module(name)
