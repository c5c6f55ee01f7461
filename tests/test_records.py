"""One definition per record: the tables that copy a record or a dataset are built from it, and the
code that writes them uses the same names."""

from __future__ import annotations

from dataclasses import fields

import duckdb
import pyarrow as pa
import pytest

from schemas.arrow import SEGMENT_METADATA_COLUMNS, SEGMENT_SCHEMA, duckdb_columns
from schemas.records import ChunkHealth, StepMetrics, field_names
from schemas.tables import TABLES
from tasks.catalog.runs import HEALTH_COLUMNS, METRIC_COLUMNS
from tasks.model.health import training_health


def table_columns(table: str) -> list[tuple[str, str, bool]]:
    conn = duckdb.connect()
    for statement in TABLES:
        conn.execute(statement)
    return [(name, kind, nullable == "YES") for name, kind, nullable in conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = ? ORDER BY ordinal_position", [table]).fetchall()]


def test_segments_table_is_the_segment_schema_without_samples_plus_where_it_lives():
    columns = table_columns("segments")
    assert [c[0] for c in columns] == [*SEGMENT_METADATA_COLUMNS, "site", "date", "parquet_path"]
    arrow = {f.name: f for f in SEGMENT_SCHEMA}
    for name, kind, nullable in columns[: len(SEGMENT_METADATA_COLUMNS)]:
        assert nullable == (arrow[name].nullable and name != "segment_id"), name
    types = dict((name, kind) for name, kind, _ in columns)
    assert types["channel"] == "SMALLINT" and types["rms_dbfs"] == "FLOAT" and types["start_time"].startswith(
        "TIMESTAMP WITH TIME ZONE")


def test_train_metrics_and_chunk_health_are_their_records():
    assert [c[0] for c in table_columns("train_metrics")] == ["run", *field_names(StepMetrics)]
    assert [c[0] for c in table_columns("chunk_health")] == ["run", "chunk", *field_names(ChunkHealth)]
    assert METRIC_COLUMNS == field_names(StepMetrics) and HEALTH_COLUMNS == field_names(ChunkHealth)
    nullable = {name: null for name, _, null in table_columns("chunk_health")}
    assert [f.name for f in fields(ChunkHealth) if nullable[f.name]] == [
        "accuracy", "perplexity", "code_usage", "loss"]


def test_the_health_verdict_fills_every_stored_column():
    verdict = training_health({"accuracy": 0.3, "contrastive_loss": 2.0, "perplexity": [40.0, 41.0],
                               "unused_code_share": 0.1}, num_negatives=20, codes_per_group=64, groups=2)
    assert set(HEALTH_COLUMNS) <= set(verdict)
    ChunkHealth(**{k: verdict[k] for k in HEALTH_COLUMNS})


def test_duckdb_columns_refuses_a_type_it_does_not_know():
    with pytest.raises(KeyError):  # an int8 column has no DuckDB name in the map: never guessed
        duckdb_columns(pa.schema([pa.field("x", pa.int8())]))
