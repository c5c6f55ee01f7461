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


def test_the_segment_row_is_the_segment_schema_and_a_column_added_to_one_alone_fails(tmp_path):
    from dataclasses import asdict
    from datetime import datetime, timezone

    import numpy as np
    import pyarrow.parquet as pq

    from schemas.arrow import SegmentRow, check_row
    from tasks.workspace.segment_files import SegmentFileWriter

    assert field_names(SegmentRow) == SEGMENT_METADATA_COLUMNS
    with pytest.raises(TypeError, match=r"SegmentRow's fields \[.*\] are not SEGMENT_SCHEMA's columns .*snr_db"):
        check_row(SegmentRow, (*SEGMENT_METADATA_COLUMNS, "snr_db"), "SEGMENT_SCHEMA")
    # the writer writes the row's fields into the schema's columns, the samples beside them
    row = SegmentRow("r-mix-000000", "r", -1, 0, 0.0, 2.0, 1.5, datetime(2024, 5, 1, tzinfo=timezone.utc), None,
                     16000, -20.5, -3.0, 0.0, 0.25, 0.0, False, 0)  # float32-exact values
    writer = SegmentFileWriter(tmp_path, "rec-r")
    writer.add(row, np.arange(4, dtype=np.float32))
    table = pq.read_table(writer.close())
    assert table.schema.names == SEGMENT_SCHEMA.names
    read = table.to_pylist()[0]
    assert read.pop("audio") == [0.0, 1.0, 2.0, 3.0]
    assert read == asdict(row)
