"""Read-only SQL over a workspace.

Two locks, either of which alone would hold: the parser admits one SELECT-like statement only
(EXPLAIN included, but only of a SELECT, since EXPLAIN ANALYZE runs its statement), and the
engine it runs on is opened read-only with file access limited to the workspace's data folders,
no extension installed or loaded, and its configuration locked (`database.querying`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
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


def run_query(workspace: Workspace, query: str, timeout_s: float | None = None,
              memory_limit: str | None = None) -> QueryResult:
    """Run a read-only query, waiting briefly if an ingest is committing at that moment; stopped
    past `timeout_s` or `memory_limit` (`database.querying`) with a one-line QueryLimitExceeded."""
    check_read_only(query)
    with database.querying(workspace, timeout_s, memory_limit) as conn:
        cursor = conn.execute(query)
        columns = [d[0] for d in cursor.description or []]
        return QueryResult(columns, cursor.fetchall())


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?)b?|b|bytes)?\s*", re.IGNORECASE)


def size_bytes(size: str) -> int | None:
    """Bytes of a DuckDB size such as "4GB" (1000-based) or "512MiB" (1024-based); None if it is none."""
    match = _SIZE.fullmatch(size)
    if not match:
        return None
    unit = "kmgt".index(match[2].lower()) + 1 if match[2] else 0
    return int(float(match[1]) * (1024 if match[3] else 1000) ** unit)


@contextmanager
def process_memory_capped(memory_limit: str | None) -> Iterator[None]:
    """A hard ceiling on this process's memory for the block, in a process that runs nothing but
    typed SQL meanwhile: DuckDB's memory_limit governs its buffers (joins, sorts, aggregates), not
    one huge value such as `repeat('x', 2e9)` or `list(range(2e9))`, which would otherwise take what
    the machine has. An allocation past the ceiling fails as DuckDB's out-of-memory error, which
    `database.querying` words; the ceiling before the block is restored after it."""
    import resource

    limit = size_bytes(memory_limit or database.default_query_memory())
    before = resource.getrlimit(resource.RLIMIT_DATA)
    if limit is None:  # refused with its one line when the connection is set up
        yield
        return
    with open("/proc/self/status") as status:  # what the process holds already (its libraries, Python)
        held = next((int(line.split()[1]) << 10 for line in status if line.startswith("VmData:")), 0)
    ceiling = held + limit + limit // 4 + (512 << 20)  # DuckDB's own bookkeeping beside its buffers
    hard = before[1]
    resource.setrlimit(resource.RLIMIT_DATA, (ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, before)
