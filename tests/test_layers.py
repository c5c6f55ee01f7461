"""The dependency rule of flows/__init__.py, read from the source: deployments → flows → tasks →
schemas, never back; inside flows/, the plumbing (runtime/) never imports a stage flow."""

from __future__ import annotations

import ast
import re
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


SQL_HOMES = ("tasks/catalog", "tasks/workspace", "schemas")  # schemas: the DDL, the one source of truth
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WITH|COPY|ATTACH|PRAGMA|SET|LOAD|"
                       r"CHECKPOINT|INSTALL)\b")
QUERY_METHODS = {"execute", "executemany", "sql", "query"}


def sql_outside_the_catalog(path: Path) -> list[str]:
    """Lines of `path` that run a query (conn.execute(...), .sql(...)) or hold a SQL statement."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in QUERY_METHODS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}()")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} holds SQL: {node.value.strip()[:40]!r}")
    return found


def test_the_sql_check_finds_a_query_and_a_statement():
    probe = ROOT / "tests" / "_sql_probe.py"
    probe.write_text('def f(conn):\n    q = f"SELECT 1 FROM {t}"\n    return conn.execute("DELETE FROM labels")\n')
    try:
        assert len(sql_outside_the_catalog(probe)) == 3  # the f-string's text, the call, its statement
    finally:
        probe.unlink()


def test_no_sql_outside_tasks_catalog_and_tasks_workspace():
    found = [line for layer in ("tasks", "flows", "deployments") for path in sources(layer)
             if not str(path.relative_to(ROOT)).startswith(SQL_HOMES)
             for line in sql_outside_the_catalog(path)]
    assert not found, "\n".join(found)


POSITIONAL_INSERT = re.compile(r"INSERT\s+(?:OR\s+\w+\s+)?INTO\s+[\w{}.]+\s+(?:VALUES|SELECT)\b", re.IGNORECASE)


def test_every_insert_names_its_columns():
    """A positional INSERT silently depends on the column order in schemas/tables.py."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for layer in ("tasks", "flows", "deployments") for path in sources(layer)
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and POSITIONAL_INSERT.search(node.value)]
    assert not found, "\n".join(found)
    assert POSITIONAL_INSERT.search("INSERT OR REPLACE INTO labels VALUES (?, ?)")
    assert not POSITIONAL_INSERT.search("INSERT INTO labels (recording_id) VALUES (?)")
