"""The dependency rule of flows/__init__.py, read from the source: deployments → flows → tasks →
schemas, never back; inside flows/, the plumbing (runtime/) never imports a stage flow; inside
tasks/, the floors of docs/architecture.md, lower never importing higher, with no circles."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


# The floors inside tasks/ (docs/architecture.md). A package may import its own floor's package and
# any lower floor; packages that share a floor never import each other.
FLOORS = (
    ("audio", "workspace"),
    ("model",),
    ("catalog",),
    ("ingest", "training", "embedding"),
    ("evaluation",),
    ("detection",),
    ("report",),
    ("pipeline",),
)
FLOOR_OF = {package: floor for floor, packages in enumerate(FLOORS) for package in packages}


def task_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tasks" else None


def floor_violations(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        here = path.relative_to(ROOT / "tasks").parts[0]
        for line, module in imports_of(path):
            there = task_package(module)
            if there is None or there == here:
                continue
            if FLOOR_OF[there] >= FLOOR_OF[here]:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module} "
                             f"(floor {FLOOR_OF[there]} from floor {FLOOR_OF[here]})")
    return found


def test_every_package_of_tasks_has_a_floor():
    packages = {p.name for p in (ROOT / "tasks").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(FLOOR_OF), f"packages with no floor in FLOORS: {sorted(packages - set(FLOOR_OF))}"


def test_the_floor_rule_finds_an_upward_and_a_sideways_import():
    folder = ROOT / "tasks" / "catalog"
    probe = folder / "_floor_probe.py"
    probe.write_text("from tasks.training import loop\nimport tasks.ingest.labels\nfrom tasks.model import metrics\n")
    try:
        assert len(floor_violations([probe])) == 2  # training and ingest sit above catalog; model below
    finally:
        probe.unlink()
    probe = ROOT / "tasks" / "embedding" / "_floor_probe.py"
    probe.write_text("from tasks.training.data import build_index\n")
    try:
        assert len(floor_violations([probe])) == 1  # a neighbour on the same floor
    finally:
        probe.unlink()


def test_tasks_packages_import_only_lower_floors():
    found = floor_violations(sources("tasks"))
    assert not found, "\n".join(found)


def test_tasks_modules_have_no_import_circles():
    """Module-level circles: each would make the import order of two modules matter."""
    graph: dict[str, set[str]] = {}
    for path in sources("tasks"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {m for _, m in imports_of(path) if m.startswith("tasks.")}
    known = set(graph)
    graph = {m: {d for d in deps if d in known and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_sql_floor_loads_neither_torch_nor_transformers():
    """tasks.catalog is imported by every command, `sql` and `status` included: they must stay light."""
    probe = ("import importlib, pkgutil, sys, tasks.catalog as c\n"
             "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('tasks.catalog.' + m.name)\n"
             "print(sorted(k for k in ('torch', 'transformers') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
