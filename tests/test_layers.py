"""The dependency rule of flows/__init__.py, read from the source: deployments → flows → tasks →
schemas, never back; inside flows/, the plumbing (runtime/) never imports a stage flow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("schemas", "tasks", "flows", "deployments")  # each may import only those before it


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at top level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def test_the_rule_sees_imports_inside_functions_too():
    tree = "def f():\n    from flows.runtime import limits\n"
    probe = ROOT / "tests" / "_layer_probe.py"
    probe.write_text(tree)
    try:
        assert imports_of(probe) == [(2, "flows.runtime")]
    finally:
        probe.unlink()


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(layer):
    above = LAYERS[LAYERS.index(layer) + 1:]
    back_edges = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                  for path in sources(layer) for line, module in imports_of(path)
                  if module.split(".")[0] in above]
    assert not back_edges, "\n".join(back_edges)


def test_flow_plumbing_imports_no_stage_flow():
    back_edges = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                  for path in sources("flows/runtime") for line, module in imports_of(path)
                  if module.startswith("flows.") and not module.startswith("flows.runtime")]
    assert not back_edges, "\n".join(back_edges)
