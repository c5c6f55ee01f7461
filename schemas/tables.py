"""DuckDB DDL for a workspace's `ceta2vec.duckdb`.

Every statement is idempotent (`IF NOT EXISTS` / `OR REPLACE`) so `apply_schema` can run on every
connection that writes. Bump SCHEMA_VERSION when a table changes and add the migration beside it.
"""

from __future__ import annotations

SCHEMA_VERSION = 2  # 2: models, checkpoints, train_metrics

TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS workspace_config (
        key   VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS ingest_runs (
        run_id              VARCHAR PRIMARY KEY,
        flow_run_id         VARCHAR,
        started_at          TIMESTAMPTZ NOT NULL,
        finished_at         TIMESTAMPTZ,
        settings            JSON NOT NULL,
        files_seen          INTEGER,
        ingested            INTEGER,
        skipped             INTEGER,
        duplicates          INTEGER,
        failed              INTEGER,
        segments_added      BIGINT,
        audio_seconds_added DOUBLE,
        bytes_added         BIGINT
    )
    """,
    # One row per distinct audio content (content_hash); the first path it was seen under.
    """
    CREATE TABLE IF NOT EXISTS recordings (
        recording_id       VARCHAR PRIMARY KEY,
        content_hash       VARCHAR NOT NULL UNIQUE,
        path               VARCHAR NOT NULL,
        file_name          VARCHAR NOT NULL,
        size_bytes         BIGINT NOT NULL,
        format             VARCHAR NOT NULL,
        subtype            VARCHAR NOT NULL,
        sample_rate        INTEGER NOT NULL,
        channels           INTEGER NOT NULL,
        frames             BIGINT NOT NULL,
        duration_s         DOUBLE NOT NULL,
        start_time         TIMESTAMPTZ,
        start_time_source  VARCHAR,
        site               VARCHAR NOT NULL,
        partition_date     VARCHAR NOT NULL,
        stored_sample_rate INTEGER NOT NULL,
        channel_policy     VARCHAR NOT NULL,
        segment_count      INTEGER NOT NULL,
        stored_bytes       BIGINT NOT NULL,
        parquet_path       VARCHAR NOT NULL,
        warnings           VARCHAR[],
        ingest_run_id      VARCHAR NOT NULL,
        ingested_at        TIMESTAMPTZ NOT NULL
    )
    """,
    # Every path seen, so an unchanged file (same size and mtime) is skipped without re-hashing,
    # and a renamed copy is recorded as a duplicate of the recording it repeats.
    """
    CREATE TABLE IF NOT EXISTS source_files (
        path         VARCHAR PRIMARY KEY,
        size_bytes   BIGINT NOT NULL,
        mtime_ns     BIGINT NOT NULL,
        content_hash VARCHAR NOT NULL,
        recording_id VARCHAR NOT NULL,
        status       VARCHAR NOT NULL CHECK (status IN ('ingested', 'duplicate')),
        seen_at      TIMESTAMPTZ NOT NULL
    )
    """,
    # Segment metadata; the samples stay in the Parquet dataset (view `segment_audio`).
    """
    CREATE TABLE IF NOT EXISTS segments (
        segment_id       VARCHAR PRIMARY KEY,
        recording_id     VARCHAR NOT NULL,
        channel          SMALLINT NOT NULL,
        segment_index    INTEGER NOT NULL,
        start_s          DOUBLE NOT NULL,
        end_s            DOUBLE NOT NULL,
        valid_s          DOUBLE NOT NULL,
        start_time       TIMESTAMPTZ,
        end_time         TIMESTAMPTZ,
        sample_rate      INTEGER NOT NULL,
        rms_dbfs         REAL NOT NULL,
        peak_dbfs        REAL NOT NULL,
        clipped_fraction REAL NOT NULL,
        dc_offset        REAL NOT NULL,
        dropout_fraction REAL NOT NULL,
        is_silent        BOOLEAN NOT NULL,
        nonfinite_count  INTEGER NOT NULL,
        site             VARCHAR NOT NULL,
        date             VARCHAR NOT NULL,
        parquet_path     VARCHAR NOT NULL
    )
    """,
    # One row per (path, stage): re-running on the same bad file updates it rather than adding
    # another; a later successful ingest of the path removes its errors (warnings stay).
    """
    CREATE TABLE IF NOT EXISTS ingest_errors (
        path        VARCHAR NOT NULL,
        stage       VARCHAR NOT NULL,
        severity    VARCHAR NOT NULL CHECK (severity IN ('error', 'warning')),
        reason      VARCHAR NOT NULL,
        size_bytes  BIGINT,
        run_id      VARCHAR NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (path, stage)
    )
    """,
    # One row per pretraining run (model_id = the run's name).
    """
    CREATE TABLE IF NOT EXISTS models (
        model_id            VARCHAR PRIMARY KEY,
        created_at          TIMESTAMPTZ NOT NULL,
        updated_at          TIMESTAMPTZ NOT NULL,
        preset              VARCHAR NOT NULL,
        settings            JSON NOT NULL,
        model_config        JSON NOT NULL,
        feature_encoder     JSON NOT NULL,
        sample_rate         INTEGER NOT NULL,
        frame_rate_hz       DOUBLE NOT NULL,
        receptive_field_ms  DOUBLE NOT NULL,
        parameters          BIGINT NOT NULL,
        segments_used       BIGINT NOT NULL,
        hours_used          DOUBLE NOT NULL,
        excluded_recordings VARCHAR[],
        init_from           VARCHAR,
        chunks_done         INTEGER NOT NULL,
        steps_done          BIGINT NOT NULL,
        latest_checkpoint   VARCHAR,
        best_checkpoint     VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS checkpoints (
        model_id      VARCHAR NOT NULL,
        chunk         INTEGER NOT NULL,
        step          BIGINT NOT NULL,
        path          VARCHAR NOT NULL,
        state_sha256  VARCHAR NOT NULL,
        export_sha256 VARCHAR NOT NULL,
        mean_loss     DOUBLE NOT NULL,
        created_at    TIMESTAMPTZ NOT NULL,
        kept          BOOLEAN NOT NULL,
        PRIMARY KEY (model_id, chunk)
    )
    """,
    # Written with the checkpoint that ends the chunk, so a resumed chunk never duplicates steps.
    """
    CREATE TABLE IF NOT EXISTS train_metrics (
        model_id                 VARCHAR NOT NULL,
        step                     BIGINT NOT NULL,
        chunk                    INTEGER NOT NULL,
        loss                     DOUBLE NOT NULL,
        contrastive_loss         DOUBLE NOT NULL,
        diversity_loss           DOUBLE NOT NULL,
        perplexity               DOUBLE[] NOT NULL,
        unused_code_share        DOUBLE NOT NULL,
        accuracy                 DOUBLE NOT NULL,
        grad_norm                DOUBLE NOT NULL,
        learning_rate            DOUBLE NOT NULL,
        temperature              DOUBLE NOT NULL,
        masked_frames            INTEGER NOT NULL,
        audio_seconds            DOUBLE NOT NULL,
        audio_seconds_per_second DOUBLE NOT NULL,
        PRIMARY KEY (model_id, step)
    )
    """,
    # start_s/end_s NULL: a label of the whole recording; otherwise an event span inside it.
    """
    CREATE TABLE IF NOT EXISTS labels (
        recording_id VARCHAR NOT NULL,
        label_column VARCHAR NOT NULL,
        label_value  VARCHAR NOT NULL,
        start_s      DOUBLE,
        end_s        DOUBLE,
        labels_file  VARCHAR NOT NULL
    )
    """,
)

VIEWS: tuple[str, ...] = (
    # A segment takes a label when the label covers the whole recording, or when the overlap of
    # the span and the segment's valid audio covers at least half of the shorter of the two.
    """
    CREATE OR REPLACE VIEW segment_labels AS
    SELECT s.segment_id, s.recording_id, l.label_column, l.label_value, l.start_s AS span_start_s,
           l.end_s AS span_end_s
    FROM segments s
    JOIN labels l USING (recording_id)
    WHERE l.start_s IS NULL
       OR (least(l.end_s, s.start_s + s.valid_s) - greatest(l.start_s, s.start_s))
          >= 0.5 * least(l.end_s - l.start_s, s.valid_s)
    """,
    """
    CREATE OR REPLACE VIEW segments_with_recordings AS
    SELECT s.*, r.file_name, r.path AS recording_path, r.sample_rate AS original_sample_rate,
           r.duration_s AS recording_duration_s, r.start_time AS recording_start_time
    FROM segments s JOIN recordings r USING (recording_id)
    """,
)


def segment_audio_view(parquet_glob: str) -> str:
    """The view that reaches the samples in the Parquet dataset from SQL.

    Only files a committed recording points at are visible, so a file left behind by a crash
    between its rename and its commit never shows through.
    """
    quoted = parquet_glob.replace("'", "''")
    return f"""
    CREATE OR REPLACE VIEW segment_audio AS
    SELECT p.* FROM read_parquet('{quoted}', hive_partitioning = true, union_by_name = true) p
    WHERE p.recording_id IN (SELECT recording_id FROM recordings)
    """
