"""DuckDB DDL for a workspace's `ceta2vec.duckdb`.

Every statement is idempotent (`IF NOT EXISTS` / `OR REPLACE`) so `apply_schema` can run on every
connection that writes. Bump SCHEMA_VERSION when a table changes and add the migration beside it.
"""

from __future__ import annotations

from schemas.arrow import SEGMENT_SCHEMA, duckdb_columns
from schemas.names import sql_identifier
from schemas.records import ChunkHealth, StepMetrics, sql_columns

# 2: models, checkpoints, train_metrics; 3: embeddings and units; 4: evaluations;
# 5: the run-level tables key on `run`, and `model_id` always means one checkpoint, `run@chunk`;
# 6: ingest_runs.status and writer_tag (a killed run is told apart from a running one), segment_activity
SCHEMA_VERSION = 6

# A run is 'running' until it ends: 'completed', 'failed' (an error stopped it) or 'interrupted'
# (Ctrl-C, a signal, or killed: the next ingest finds its writer gone, `writer_tag`, and says so).
INGEST_RUN_STATUSES = ("running", "completed", "interrupted", "failed")
INGEST_RUNS = f"""
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
        bytes_added         BIGINT,
        status              VARCHAR NOT NULL DEFAULT 'running'
                            CHECK (status IN ({", ".join(f"'{s}'" for s in INGEST_RUN_STATUSES)})),
        writer_tag          VARCHAR  -- the ingesting process's lock file in .writers/ (tasks/workspace/staging.py)
    )
    """

TABLES: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS workspace_config (
        key   VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    INGEST_RUNS,
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
    f"""
    CREATE TABLE IF NOT EXISTS segments (
        {duckdb_columns(SEGMENT_SCHEMA, skip=("audio",), primary_key="segment_id")},
        site             VARCHAR NOT NULL,
        date             VARCHAR NOT NULL,
        parquet_path     VARCHAR NOT NULL
    )
    """,
    # Activity of a segment above its recording's noise floor (tasks/audio/activity.py), in dB:
    # what `--crop-sampling activity` weights crops by. Filled when a run samples by activity.
    """
    CREATE TABLE IF NOT EXISTS segment_activity (
        segment_id  VARCHAR PRIMARY KEY,
        activity_db DOUBLE NOT NULL,
        method      VARCHAR NOT NULL
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
    # One row per pretraining run. Its checkpoints are the models that embeddings, units and
    # evaluations belong to: their `model_id` is `run@chunk` (schemas/model_ref.py).
    """
    CREATE TABLE IF NOT EXISTS models (
        run                 VARCHAR PRIMARY KEY,
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
        run           VARCHAR NOT NULL,
        chunk         INTEGER NOT NULL,
        step          BIGINT NOT NULL,
        path          VARCHAR NOT NULL,
        state_sha256  VARCHAR NOT NULL,
        export_sha256 VARCHAR NOT NULL,
        mean_loss     DOUBLE NOT NULL,
        created_at    TIMESTAMPTZ NOT NULL,
        kept          BOOLEAN NOT NULL,
        PRIMARY KEY (run, chunk)
    )
    """,
    # Written with the checkpoint that ends the chunk, so a resumed chunk never duplicates steps.
    f"""
    CREATE TABLE IF NOT EXISTS train_metrics (
        run VARCHAR NOT NULL,
        {sql_columns(StepMetrics)},
        PRIMARY KEY (run, step)
    )
    """,
    # Is the run learning? The verdict on each chunk's last log interval (tasks.model.health);
    # a table of its own, so workspaces made before it gain it when the schema is next applied.
    f"""
    CREATE TABLE IF NOT EXISTS chunk_health (
        run   VARCHAR NOT NULL,
        chunk INTEGER NOT NULL,
        {sql_columns(ChunkHealth)},
        PRIMARY KEY (run, chunk)
    )
    """,
    # One row per checkpoint that has been embedded; its vectors live in `embedding_table`, a
    # table of fixed-size FLOAT[dim] arrays (one per embedding model, since widths differ).
    """
    CREATE TABLE IF NOT EXISTS embedding_models (
        model_id        VARCHAR PRIMARY KEY,
        run             VARCHAR NOT NULL,
        chunk           INTEGER NOT NULL,
        checkpoint      VARCHAR NOT NULL,
        export_sha256   VARCHAR NOT NULL,
        dim             INTEGER NOT NULL,
        layers          INTEGER NOT NULL,
        frame_seconds   DOUBLE NOT NULL,
        embedding_table VARCHAR NOT NULL,
        created_at      TIMESTAMPTZ NOT NULL
    )
    """,
    # The ledger of extraction: a (model, segment, layer) is done once its row is here.
    """
    CREATE TABLE IF NOT EXISTS embedded_segments (
        model_id    VARCHAR NOT NULL,
        segment_id  VARCHAR NOT NULL,
        layer       SMALLINT NOT NULL,
        frames      INTEGER NOT NULL,
        frame_file  VARCHAR,
        embedded_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (model_id, segment_id, layer)
    )
    """,
    # Frame-level units, one row per segment and unit source: the quantizer's code per group
    # (source 'codevector', layer NULL) or the k-means unit of a layer (source 'kmeans').
    """
    CREATE TABLE IF NOT EXISTS frame_units (
        model_id      VARCHAR NOT NULL,
        segment_id    VARCHAR NOT NULL,
        source        VARCHAR NOT NULL CHECK (source IN ('codevector', 'kmeans')),
        layer         SMALLINT NOT NULL,
        code_group    SMALLINT NOT NULL,
        frame_seconds DOUBLE NOT NULL,
        units         SMALLINT[] NOT NULL,
        PRIMARY KEY (model_id, segment_id, source, layer, code_group)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS unit_models (
        model_id      VARCHAR NOT NULL,
        layer         SMALLINT NOT NULL,
        k             INTEGER NOT NULL,
        fitted_frames BIGINT NOT NULL,
        inertia       DOUBLE NOT NULL,
        centroids     VARCHAR NOT NULL,
        created_at    TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (model_id, layer)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS unit_stats (
        model_id        VARCHAR NOT NULL,
        source          VARCHAR NOT NULL,
        layer           SMALLINT NOT NULL,
        code_group      SMALLINT NOT NULL,
        unit            SMALLINT NOT NULL,
        frames          BIGINT NOT NULL,
        segments        BIGINT NOT NULL,
        share           DOUBLE NOT NULL,
        mean_run_frames DOUBLE NOT NULL,
        mean_run_s      DOUBLE NOT NULL,
        PRIMARY KEY (model_id, source, layer, code_group, unit)
    )
    """,
    # Optional HNSW indexes, each in its own DuckDB file under indexes/ (the vss extension's
    # on-disk persistence is experimental: the workspace database never holds one).
    """
    CREATE TABLE IF NOT EXISTS vector_indexes (
        model_id      VARCHAR NOT NULL,
        layer         SMALLINT NOT NULL,
        pooling       VARCHAR NOT NULL,
        path          VARCHAR NOT NULL,
        rows          BIGINT NOT NULL,
        build_seconds DOUBLE NOT NULL,
        recall_at_10  DOUBLE NOT NULL,
        queries       INTEGER NOT NULL,
        built_at      TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (model_id, layer, pooling)
    )
    """,
    # One row per (features, label column, metric) of an evaluation; baselines sit beside models.
    """
    CREATE TABLE IF NOT EXISTS evaluations (
        evaluation_id VARCHAR NOT NULL,
        label_column  VARCHAR NOT NULL,
        model_id      VARCHAR NOT NULL,
        kind          VARCHAR NOT NULL CHECK (kind IN ('model', 'baseline')),
        features      VARCHAR NOT NULL,
        layer         SMALLINT,
        metric        VARCHAR NOT NULL,
        value         DOUBLE,
        ci_low        DOUBLE,
        ci_high       DOUBLE,
        segments      INTEGER NOT NULL,
        recordings    INTEGER NOT NULL,
        class_counts  JSON NOT NULL,
        created_at    TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (label_column, model_id, features, metric)
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
    # Labels from `ceta2vec label` (CSV, Raven selection tables, the explorer's export, review
    # decisions): one row per span, positive or negative. Re-importing a source replaces its rows.
    """
    CREATE TABLE IF NOT EXISTS annotations (
        source       VARCHAR NOT NULL,
        source_row   INTEGER NOT NULL,
        source_kind  VARCHAR NOT NULL,
        recording_id VARCHAR NOT NULL,
        label        VARCHAR NOT NULL,
        positive     BOOLEAN NOT NULL,
        start_s      DOUBLE NOT NULL,
        end_s        DOUBLE NOT NULL,
        imported_at  TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (source, source_row, label)
    )
    """,
    # One trained detector per (label, features, windows, training set): `classifier_id` is a hash of
    # them, so re-running on the same labels finds it and scores only windows not yet scored.
    """
    CREATE TABLE IF NOT EXISTS classifiers (
        classifier_id  VARCHAR PRIMARY KEY,
        label          VARCHAR NOT NULL,
        features       VARCHAR NOT NULL,
        model_id       VARCHAR,
        layer          SMALLINT,
        granularity    VARCHAR NOT NULL,
        window_s       DOUBLE NOT NULL,
        hop_s          DOUBLE NOT NULL,
        split_by       VARCHAR NOT NULL,
        positives      INTEGER NOT NULL,
        negatives      INTEGER NOT NULL,
        threshold      DOUBLE NOT NULL,
        validation     JSON NOT NULL,
        settings       JSON NOT NULL,
        path           VARCHAR NOT NULL,
        created_at     TIMESTAMPTZ NOT NULL
    )
    """,
    # A classifier's score for every window of the workspace (start/end in seconds from the
    # recording's start); all of one run's windows are committed in one transaction.
    """
    CREATE TABLE IF NOT EXISTS detections (
        classifier_id VARCHAR NOT NULL,
        label         VARCHAR NOT NULL,
        recording_id  VARCHAR NOT NULL,
        channel       SMALLINT NOT NULL,
        segment_id    VARCHAR NOT NULL,
        start_s       DOUBLE NOT NULL,
        end_s         DOUBLE NOT NULL,
        utc_start     TIMESTAMPTZ,
        score         DOUBLE NOT NULL,
        PRIMARY KEY (classifier_id, recording_id, channel, start_s)
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
    # Recording effort: seconds actually recorded per site and UTC hour, from each recording's start
    # time and duration. Hours without audio have no row (a gap is no effort, not zero calls), and
    # recordings without a start time cannot be placed in time, so they count nowhere.
    """
    CREATE OR REPLACE VIEW effort AS
    WITH spans AS (
        SELECT site, start_time AS t0, start_time + to_microseconds(CAST(duration_s * 1e6 AS BIGINT)) AS t1
        FROM recordings WHERE start_time IS NOT NULL AND duration_s > 0
    ), hours AS (
        SELECT site, t0, t1, unnest(generate_series(date_trunc('hour', t0), t1, INTERVAL 1 HOUR)) AS hour
        FROM spans
    )
    SELECT site, hour,
           sum(epoch(least(t1, hour + INTERVAL 1 HOUR)) - epoch(greatest(t0, hour))) AS seconds
    FROM hours WHERE least(t1, hour + INTERVAL 1 HOUR) > greatest(t0, hour)
    GROUP BY ALL
    """,
    # Each label's current classifier: the most recently trained one.
    """
    CREATE OR REPLACE VIEW current_classifiers AS
    SELECT * FROM classifiers QUALIFY row_number() OVER (PARTITION BY label ORDER BY created_at DESC) = 1
    """,
    # Windows of a label's current classifier scoring at least `min_score`, with where and when.
    """
    CREATE OR REPLACE MACRO detections_above(for_label, min_score) AS TABLE
    SELECT d.label, d.recording_id, r.file_name, r.site, d.channel, d.segment_id, d.start_s, d.end_s,
           d.utc_start, d.score, d.classifier_id
    FROM detections d
    JOIN current_classifiers c USING (classifier_id)
    JOIN recordings r USING (recording_id)
    WHERE d.label = for_label AND d.score >= min_score
    """,
    # Presence per site and hour or day of a label's current classifier, beside the effort of that
    # hour or day: only periods with recorded audio appear, and the rate is per hour of effort.
    """
    CREATE OR REPLACE MACRO presence_by(for_label, period, min_score) AS TABLE
    WITH scored AS (
        SELECT r.site, date_trunc(period, d.utc_start) AS period_start, count(*) AS windows,
               count(*) FILTER (WHERE d.score >= min_score) AS windows_above
        FROM detections d
        JOIN current_classifiers c USING (classifier_id)
        JOIN recordings r USING (recording_id)
        WHERE d.label = for_label AND d.utc_start IS NOT NULL
        GROUP BY ALL
    ), recorded AS (
        SELECT site, date_trunc(period, hour) AS period_start, sum(seconds) AS effort_s FROM effort GROUP BY ALL
    )
    SELECT e.site, e.period_start, e.effort_s, coalesce(s.windows, 0) AS windows,
           coalesce(s.windows_above, 0) AS windows_above, coalesce(s.windows_above, 0) > 0 AS present,
           coalesce(s.windows_above, 0) / (e.effort_s / 3600.0) AS detections_per_hour
    FROM recorded e LEFT JOIN scored s USING (site, period_start)
    ORDER BY e.site, e.period_start
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


def embedding_table(model_id: str) -> str:
    """The table holding one embedding model's vectors (a safe SQL identifier)."""
    return "segment_embeddings__" + sql_identifier(model_id)


def embedding_table_ddl(table: str, dim: int) -> str:
    return f"""
    CREATE TABLE IF NOT EXISTS {table} (
        segment_id VARCHAR NOT NULL,
        layer      SMALLINT NOT NULL,
        pooling    VARCHAR NOT NULL,
        vector     FLOAT[{dim}] NOT NULL,
        PRIMARY KEY (segment_id, layer, pooling)
    )
    """


def segment_embeddings_view(models: list[tuple[str, str]]) -> str:
    """All models' vectors in one view (as FLOAT[] since widths differ); exact cosine search
    through the macros below is correct under any WHERE filter."""
    parts = [
        f"SELECT '{model_id.replace(chr(39), chr(39) * 2)}' AS model_id, segment_id, layer, pooling, vector::FLOAT[] AS vector FROM {table}"
        for model_id, table in models
    ] or ["SELECT NULL::VARCHAR AS model_id, NULL::VARCHAR AS segment_id, NULL::SMALLINT AS layer, "
          "NULL::VARCHAR AS pooling, NULL::FLOAT[] AS vector WHERE false"]
    return "CREATE OR REPLACE VIEW segment_embeddings AS " + " UNION ALL ".join(parts)


# Views and macros over the embeddings; created after segment_embeddings exists.
EMBEDDING_VIEWS: tuple[str, ...] = (
    # Every segment ranked by cosine distance to a query segment. Filter and limit outside:
    #   SELECT * FROM similar_segments('seg', 'tiny@3', 4) WHERE site = 'LK' ORDER BY distance LIMIT 10
    """
    CREATE OR REPLACE MACRO similar_segments(query_segment, for_model, at_layer, use_pooling := 'mean') AS TABLE
    SELECT e.segment_id, list_cosine_distance(e.vector, q.vector) AS distance, s.recording_id, r.file_name,
           s.start_s, s.site, s.start_time, e.layer, e.model_id
    FROM segment_embeddings e
    JOIN (SELECT vector FROM segment_embeddings
          WHERE segment_id = query_segment AND model_id = for_model AND layer = at_layer AND pooling = use_pooling) q ON true
    JOIN segments s ON s.segment_id = e.segment_id
    JOIN recordings r ON r.recording_id = s.recording_id
    WHERE e.model_id = for_model AND e.layer = at_layer AND e.pooling = use_pooling
    """,
    """
    CREATE OR REPLACE MACRO nearest_to_vector(query_vector, for_model, at_layer, use_pooling := 'mean') AS TABLE
    SELECT e.segment_id, list_cosine_distance(e.vector, query_vector::FLOAT[]) AS distance, s.recording_id,
           r.file_name, s.start_s, s.site, s.start_time, e.layer, e.model_id
    FROM segment_embeddings e
    JOIN segments s ON s.segment_id = e.segment_id
    JOIN recordings r ON r.recording_id = s.recording_id
    WHERE e.model_id = for_model AND e.layer = at_layer AND e.pooling = use_pooling
    """,
    # Novelty: each segment's cosine distance to its nearest other segment (exact, O(n^2)).
    """
    CREATE OR REPLACE MACRO novelty(for_model, at_layer, use_pooling := 'mean') AS TABLE
    SELECT a.segment_id, min(list_cosine_distance(a.vector, b.vector)) AS nearest_distance
    FROM segment_embeddings a
    JOIN segment_embeddings b ON a.segment_id <> b.segment_id AND b.model_id = a.model_id
         AND b.layer = a.layer AND b.pooling = a.pooling
    WHERE a.model_id = for_model AND a.layer = at_layer AND a.pooling = use_pooling
    GROUP BY a.segment_id
    """,
    # One row per frame: which unit, when, where.
    """
    CREATE OR REPLACE VIEW frame_unit_rows AS
    SELECT u.model_id, u.source, u.layer, u.code_group, u.segment_id, s.recording_id, s.site, s.channel,
           f.frame, s.start_s + f.frame * u.frame_seconds AS time_s,
           s.start_time + to_microseconds(CAST(f.frame * u.frame_seconds * 1e6 AS BIGINT)) AS time,
           f.unit
    FROM frame_units u
    JOIN segments s USING (segment_id),
    LATERAL (SELECT unnest(range(len(u.units))) AS frame, unnest(u.units) AS unit) f
    """,
    # Unit usage by site, hour of day and label.
    """
    CREATE OR REPLACE VIEW unit_usage AS
    SELECT f.model_id, f.source, f.layer, f.code_group, f.unit, f.site, hour(f.time) AS hour_utc,
           l.label_column, l.label_value, count(*) AS frames
    FROM frame_unit_rows f
    LEFT JOIN segment_labels l USING (segment_id)
    GROUP BY ALL
    """,
    # A recording's unit sequence, segment after segment (overlapping hops repeat frames).
    """
    CREATE OR REPLACE VIEW unit_sequences AS
    SELECT u.model_id, u.source, u.layer, u.code_group, s.recording_id, s.channel,
           flatten(list(u.units ORDER BY s.start_s)) AS units, count(*) AS segments
    FROM frame_units u JOIN segments s USING (segment_id)
    GROUP BY ALL
    """,
)


def frame_vectors_view(frames_glob: str) -> str:
    """Per-frame vectors of every embedding model, straight from Parquet; only committed frames."""
    quoted = frames_glob.replace("'", "''")
    return f"""
    CREATE OR REPLACE VIEW frame_vectors AS
    SELECT m.model_id, f.segment_id, f.layer, f.frame, f.time_s, f.vector
    FROM read_parquet('{quoted}', filename = true) f
    JOIN embedding_models m
      ON m.embedding_table = 'segment_embeddings__' || regexp_extract(f.filename, 'embeddings/([^/]+)/frames/', 1)
    WHERE EXISTS (SELECT 1 FROM embedded_segments e WHERE e.model_id = m.model_id AND e.segment_id = f.segment_id
                  AND e.layer = f.layer AND e.frame_file = regexp_extract(f.filename, '(embeddings/[^/]+/frames/[^/]+)$', 1))
    """


# Tables of a pretraining run, keyed by its name: `model_id` until schema 5, `run` since.
RUN_TABLES = ("models", "checkpoints", "train_metrics", "chunk_health")


def _run_columns_named_run(conn) -> None:
    """5: rename `model_id` to `run` where it named a run (a workspace may predate chunk_health)."""
    for table in RUN_TABLES:
        if conn.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = 'model_id'",
                        [table]).fetchone()[0]:
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN model_id TO run")


def _ingest_run_status(conn) -> None:
    """6: ingest_runs gains `status` and `writer_tag`. DuckDB adds no column with a CHECK, so the
    table is rebuilt with its rows: a finished run completed; an unfinished one is taken as
    interrupted (an older ceta2vec left no writer tag to tell a killed run from a running one)."""
    if not conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ingest_runs'").fetchone()[0]:
        return  # created new, with the rest
    if conn.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'ingest_runs' "
                    "AND column_name = 'status'").fetchone()[0]:
        return
    kept = ("run_id, flow_run_id, started_at, finished_at, settings, files_seen, ingested, skipped, duplicates, "
            "failed, segments_added, audio_seconds_added, bytes_added")
    conn.execute("ALTER TABLE ingest_runs RENAME TO ingest_runs_v5")
    conn.execute(INGEST_RUNS)
    conn.execute(f"INSERT INTO ingest_runs ({kept}, status) SELECT {kept}, "
                 "CASE WHEN finished_at IS NULL THEN 'interrupted' ELSE 'completed' END FROM ingest_runs_v5")
    conn.execute("DROP TABLE ingest_runs_v5")


# (version, upgrade): `apply_schema` runs every upgrade newer than a workspace's version, in order,
# in the transaction that then creates what is missing and records SCHEMA_VERSION.
MIGRATIONS = ((5, _run_columns_named_run), (6, _ingest_run_status))
