"""Read-only SQL over a workspace."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from tasks import store
from tasks.workspace import Workspace

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class QueryRefused(ValueError):
    """A query that would change the workspace or the file system."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def check_read_only(query: str) -> None:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryRefused(f"cannot parse the query: {exc}") from None
    if not statements:
        raise QueryRefused("the query is empty")
    for statement in statements:
        if statement.type not in READ_ONLY_STATEMENTS:
            kind = statement.type.name
            raise QueryRefused(
                f"ceta2vec sql is read-only: {kind} statements are refused (only SELECT, WITH, DESCRIBE, "
                "SHOW, SUMMARIZE and EXPLAIN run). Export with `--format csv > file.csv` instead of COPY."
            )


def run_query(workspace: Workspace, query: str) -> QueryResult:
    """Run a read-only query, waiting briefly if an ingest is committing at that moment."""
    check_read_only(query)
    with store.reading(workspace) as conn:
        cursor = conn.execute(query)
        columns = [d[0] for d in cursor.description or []]
        return QueryResult(columns, cursor.fetchall())
