"""Schema 5 renamed the run-level key `model_id` to `run` (models, checkpoints, train_metrics,
chunk_health): a workspace written by an older ceta2vec is upgraded in place, its rows kept, the
first time it is opened, for reading as for writing."""

from __future__ import annotations

import duckdb
import pytest

from schemas.tables import SCHEMA_VERSION
from tasks.catalog import runs, status
from tasks.workspace import Workspace, database

# The run tables as schema 4 created them (copied from that release, not derived from today's DDL).
SCHEMA_4 = [
    "CREATE TABLE workspace_config (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE models (model_id VARCHAR PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL,
       updated_at TIMESTAMPTZ NOT NULL, preset VARCHAR NOT NULL, settings JSON NOT NULL, model_config JSON NOT NULL,
       feature_encoder JSON NOT NULL, sample_rate INTEGER NOT NULL, frame_rate_hz DOUBLE NOT NULL,
       receptive_field_ms DOUBLE NOT NULL, parameters BIGINT NOT NULL, segments_used BIGINT NOT NULL,
       hours_used DOUBLE NOT NULL, excluded_recordings VARCHAR[], init_from VARCHAR, chunks_done INTEGER NOT NULL,
       steps_done BIGINT NOT NULL, latest_checkpoint VARCHAR, best_checkpoint VARCHAR)""",
    """CREATE TABLE checkpoints (model_id VARCHAR NOT NULL, chunk INTEGER NOT NULL, step BIGINT NOT NULL,
       path VARCHAR NOT NULL, state_sha256 VARCHAR NOT NULL, export_sha256 VARCHAR NOT NULL, mean_loss DOUBLE NOT NULL,
       created_at TIMESTAMPTZ NOT NULL, kept BOOLEAN NOT NULL, PRIMARY KEY (model_id, chunk))""",
    """CREATE TABLE train_metrics (model_id VARCHAR NOT NULL, step BIGINT NOT NULL, chunk INTEGER NOT NULL,
       loss DOUBLE NOT NULL, contrastive_loss DOUBLE NOT NULL, diversity_loss DOUBLE NOT NULL,
       perplexity DOUBLE[] NOT NULL, unused_code_share DOUBLE NOT NULL, accuracy DOUBLE NOT NULL,
       grad_norm DOUBLE NOT NULL, learning_rate DOUBLE NOT NULL, temperature DOUBLE NOT NULL,
       masked_frames INTEGER NOT NULL, audio_seconds DOUBLE NOT NULL, audio_seconds_per_second DOUBLE NOT NULL,
       PRIMARY KEY (model_id, step))""",
    "INSERT INTO workspace_config VALUES ('schema_version', '4')",
    """INSERT INTO models VALUES ('old', now(), now(), 'tiny', '{"chunks": 2}', '{}', '{}', 8000, 50, 25, 1000, 10,
       0.1, [], NULL, 2, 20, 'checkpoints/old/chunk-0002', 'checkpoints/old/chunk-0001')""",
    "INSERT INTO checkpoints VALUES ('old', 1, 10, 'p1', 's', 'e', 3.0, now(), true), "
    "('old', 2, 20, 'p2', 's', 'e', 2.9, now(), true)",
    "INSERT INTO train_metrics VALUES ('old', 20, 2, 2.9, 2.8, 0.1, [10.0], 0.1, 0.2, 1.0, 1e-4, 1.0, 40, 8.0, 4.0)",
]


@pytest.fixture
def old_workspace(tmp_path) -> Workspace:
    ws = Workspace.at(tmp_path / "ws").create()
    with duckdb.connect(str(ws.db_path)) as conn:
        for statement in SCHEMA_4:
            conn.execute(statement)
    return ws


def columns(ws: Workspace, table: str) -> list[str]:
    with duckdb.connect(str(ws.db_path), read_only=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]).fetchall()]


def test_reading_an_old_workspace_upgrades_it_in_place_and_keeps_its_rows(old_workspace):
    assert "model_id" in columns(old_workspace, "models")
    with database.reading(old_workspace) as conn:
        assert database.schema_version(conn) == SCHEMA_VERSION
        assert runs.chunks_done(conn, "old") == 2
        assert runs.run_progress(conn, "old").steps_done == 20
        assert [r.run for r in status.training_runs(conn)] == ["old"]
        assert conn.execute("SELECT run, step FROM train_metrics").fetchall() == [("old", 20)]
    for table in ("models", "checkpoints", "train_metrics"):
        assert columns(old_workspace, table)[0] == "run", table
        assert "model_id" not in columns(old_workspace, table)
    assert "run" in columns(old_workspace, "chunk_health")  # a table schema 4 lacked is created new


def test_the_upgrade_runs_once_and_a_newer_workspace_is_refused(old_workspace):
    with database.writing(old_workspace) as conn:
        database.apply_schema(conn, old_workspace)
        database.apply_schema(conn, old_workspace)  # again: nothing left to rename
        assert conn.execute("SELECT count(*) FROM checkpoints WHERE run = 'old'").fetchone()[0] == 2
        conn.execute("UPDATE workspace_config SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with database.writing(old_workspace) as conn, pytest.raises(database.WorkspaceError, match="newer ceta2vec"):
        database.apply_schema(conn, old_workspace)


# ingest_runs as schema 5 created it (copied from that release), with a finished run and one a kill left.
SCHEMA_5_INGEST_RUNS = [
    "CREATE TABLE workspace_config (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE ingest_runs (run_id VARCHAR PRIMARY KEY, flow_run_id VARCHAR, started_at TIMESTAMPTZ NOT NULL,
       finished_at TIMESTAMPTZ, settings JSON NOT NULL, files_seen INTEGER, ingested INTEGER, skipped INTEGER,
       duplicates INTEGER, failed INTEGER, segments_added BIGINT, audio_seconds_added DOUBLE, bytes_added BIGINT)""",
    "INSERT INTO workspace_config VALUES ('schema_version', '5')",
    """INSERT INTO ingest_runs VALUES
       ('ingest-done', 'f1', '2025-01-01 10:00:00+00', '2025-01-01 10:05:00+00', '{"workers": 2}', 4, 3, 0, 0, 1, 30,
        300.0, 1000),
       ('ingest-killed', 'f2', '2025-01-02 10:00:00+00', NULL, '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
]


def test_schema_5_ingest_runs_gain_a_status_and_keep_their_rows(tmp_path):
    from tasks.catalog.status import ingest_runs

    ws = Workspace.at(tmp_path / "ws").create()
    with duckdb.connect(str(ws.db_path)) as conn:
        for statement in SCHEMA_5_INGEST_RUNS:
            conn.execute(statement)
    with database.reading(ws) as conn:
        assert database.schema_version(conn) == SCHEMA_VERSION
        rows = conn.execute("SELECT run_id, status, writer_tag, files_seen, ingested, bytes_added, settings->>'workers' "
                            "FROM ingest_runs ORDER BY run_id").fetchall()
        shown = ingest_runs(conn, ws)
    assert rows == [("ingest-done", "completed", None, 4, 3, 1000, "2"),
                    ("ingest-killed", "interrupted", None, None, None, None, None)]
    assert (shown["completed"], shown["interrupted"], shown["latest"]["run_id"]) == (1, 1, "ingest-killed")
    with database.writing(ws) as conn:  # the rebuilt table refuses a status it does not know
        with pytest.raises(duckdb.ConstraintException):
            conn.execute("UPDATE ingest_runs SET status = 'lost' WHERE run_id = 'ingest-done'")
