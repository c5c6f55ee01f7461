"""Read-only SQL over a workspace.

Two locks, either of which alone would hold: the parser admits one SELECT-like statement only
(EXPLAIN included, but only of a SELECT, since EXPLAIN ANALYZE runs its statement), and the
engine it runs on is opened read-only with file access limited to the workspace's data folders,
no extension installed or loaded, and its configuration locked (`database.querying`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from tasks.workspace import Workspace, database

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(r"EXPLAIN\b", re.IGNORECASE)
_ANALYZE = re.compile(r"ANALY[SZ]E\b", re.IGNORECASE)
_OPTIONS = re.compile(r"\([^()]*\)")


class QueryRefused(ValueError):
    """A query that would change the workspace or the file system."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def _refused(kind: str) -> QueryRefused:
    return QueryRefused(
        f"ceta2vec sql is read-only: {kind} statements are refused (only SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE "
        "and EXPLAIN of those run). Export with `--format csv > file.csv` instead of COPY."
    )


def _skip_leading(text: str, pattern: re.Pattern | None = None) -> str:
    text = text[_LEADING.match(text).end():]
    if pattern is not None and (match := pattern.match(text)):
        text = text[match.end():]
        text = text[_LEADING.match(text).end():]
    return text


def _explained(query: str) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] statement explains (and, with ANALYZE, runs)."""
    rest = _skip_leading(query)
    if not _EXPLAIN.match(rest):
        raise _refused("EXPLAIN of a non-SELECT")  # fail closed on a form this does not recognise
    rest = _skip_leading(rest, _EXPLAIN)
    rest = _skip_leading(rest, _ANALYZE)
    return _skip_leading(rest, _OPTIONS)


def check_read_only(query: str) -> None:
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise QueryRefused(f"cannot parse the query: {exc}") from None
    if not statements:
        raise QueryRefused("the query is empty")
    for statement in statements:
        if statement.type not in READ_ONLY_STATEMENTS:
            raise _refused(statement.type.name)
        if statement.type == duckdb.StatementType.EXPLAIN:
            try:
                inner = duckdb.extract_statements(_explained(statement.query))
            except duckdb.Error:
                raise _refused("EXPLAIN of a non-SELECT") from None
            if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
                kind = inner[0].type.name if inner else "empty"
                raise _refused(f"EXPLAIN of {kind}")
    if len(statements) > 1:
        raise QueryRefused(f"ceta2vec sql runs one statement at a time; the query has {len(statements)}")


def run_query(workspace: Workspace, query: str) -> QueryResult:
    """Run a read-only query, waiting briefly if an ingest is committing at that moment."""
    check_read_only(query)
    with database.querying(workspace) as conn:
        cursor = conn.execute(query)
        columns = [d[0] for d in cursor.description or []]
        return QueryResult(columns, cursor.fetchall())
