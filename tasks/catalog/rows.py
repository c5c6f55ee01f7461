"""Query results as typed rows: a frozen dataclass whose fields are the query's columns, in order, checked
against the cursor's description once per query, so a renamed or added column fails with its names
instead of shifting every value one place."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import duckdb

Row = TypeVar("Row")


def _checked(cursor: duckdb.DuckDBPyConnection, row_type: type[Row]) -> None:
    columns = tuple(d[0] for d in cursor.description)
    fields = tuple(f.name for f in dataclasses.fields(row_type))
    if columns != fields:
        raise ValueError(f"the query's columns {columns} are not {row_type.__name__}'s fields {fields}")


def typed_rows(cursor: duckdb.DuckDBPyConnection, row_type: type[Row]) -> list[Row]:
    """Every row of an executed query as `row_type`."""
    _checked(cursor, row_type)
    return [row_type(*row) for row in cursor.fetchall()]


def typed_row(cursor: duckdb.DuckDBPyConnection, row_type: type[Row]) -> Row | None:
    """The first row of an executed query as `row_type`, or None."""
    _checked(cursor, row_type)
    row = cursor.fetchone()
    return None if row is None else row_type(*row)
