"""Every SQL example in README.md and the guides in docs/ runs on a small real workspace: the ```sql
blocks and the `ceta2vec sql "..."` commands, through the query path of `ceta2vec sql`.

The docs speak of the demo workspace (model tiny@3, site 'sample', label 'humpback' of column
'species'); the test workspace has other names, so the docs' names are mapped onto it and the
test fails if an example names something the map does not cover.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.catalog.queries import run_query
from tasks.workspace import database

ROOT = Path(__file__).resolve().parents[1]
# Where the examples live: the README's demo output and the guides (docs/search-and-sql.md holds most).
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The docs' names (string literals) and where each example names a run or segment.
DEMO_LITERALS = {"tiny@3", "tiny", "sample", "humpback", "species", "kmeans", "codevector", "mean", "error",
                 "d3cd61ae6734d660-mix-000000", "orca_call", "hour", "day"}


def readme_queries(text: str) -> list[str]:
    queries = []
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        body = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("--"))
        queries += [q.strip() for q in body.split(";") if q.strip()]
    queries += [q for q in re.findall(r'ceta2vec sql "([^"]+)"', text) if re.match(r"\s*(SELECT|WITH)\b", q, re.I)]
    return queries


def docs_queries() -> list[str]:
    return [query for doc in DOCS for query in readme_queries(doc.read_text())]


def test_the_readme_has_the_examples_this_test_runs():
    queries = docs_queries()
    assert len(queries) >= 10
    assert any("nearest_to_vector" in q for q in queries) and any("similar_segments" in q for q in queries)


def test_every_readme_sql_example_runs(tiny_workspace):  # conftest's, shared by the session
    ws = tiny_workspace
    with database.reading(ws) as conn:
        model, run = conn.execute("SELECT model_id, run FROM embedding_models LIMIT 1").fetchone()
        segment, site = conn.execute(
            "SELECT s.segment_id, s.site FROM segments s JOIN segment_labels l USING (segment_id) "
            "WHERE l.label_value = 'tone' ORDER BY s.segment_id LIMIT 1").fetchone()
    names = {"tiny@3": model, "tiny": run, "sample": site, "humpback": "tone", "species": "sound", "orca_call": "tone",
             "d3cd61ae6734d660-mix-000000": segment}
    for query in docs_queries():
        literals = set(re.findall(r"'([^']*)'", query))
        unknown = literals - DEMO_LITERALS
        assert not unknown, f"the docs name {unknown}: add them to DEMO_LITERALS and the map ({query})"
        local = re.sub(r"'([^']*)'", lambda m: "'" + names.get(m.group(1), m.group(1)).replace("'", "''") + "'", query)
        try:
            result = run_query(ws, local)
        except Exception as exc:  # the failing example, named, with DuckDB's message
            pytest.fail(f"SQL example of the docs fails: {query}\n{type(exc).__name__}: {exc}")
        if "nearest_to_vector" in query:
            assert len(result.rows) == 5 and result.rows == sorted(result.rows, key=lambda r: r[2])
