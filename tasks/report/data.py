"""What a report reads from a workspace: the embedding model, segment vectors and metadata, frame-level
units, unit statistics and training health. Read-only: every function takes an open connection
(`tasks.workspace.database.reading`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from tasks.training.frontend import receptive_field
from tasks.workspace import Workspace
from tasks.workspace.database import WorkspaceError

# The evaluation metric that picks the default layer (the one `ceta2vec evaluate` names best).
LAYER_METRIC = "knn5_macro_f1"


@dataclass(frozen=True)
class ReportModel:
    model_id: str  # "<run>@<chunk>"
    run: str
    chunk: int
    dim: int
    layers: int  # layers 0..layers-1 (0 = conv encoder)
    frame_seconds: float
    sample_rate: int
    receptive_field: int  # samples one frame sees
    table: str
    embedded_layers: tuple[int, ...]  # layers with mean-pooled segment vectors

    @property
    def slug(self) -> str:
        return self.table.removeprefix("segment_embeddings__")

    @property
    def hop(self) -> int:
        return int(round(self.frame_seconds * self.sample_rate))


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def resolve_model(conn: duckdb.DuckDBPyConnection, wanted: str | None) -> ReportModel:
    """The embedding model to report on: `wanted` (run@chunk) or the latest embedded one."""
    if not _has_table(conn, "embedding_models"):
        raise WorkspaceError("this workspace has no embeddings: run `ceta2vec pretrain` and `ceta2vec embed` first")
    known = conn.execute("SELECT model_id FROM embedding_models ORDER BY created_at DESC").fetchall()
    if not known:
        raise WorkspaceError("this workspace has no embeddings: run `ceta2vec embed` first")
    model_id = wanted or known[0][0]
    row = conn.execute(
        "SELECT model_id, run, chunk, dim, layers, frame_seconds, embedding_table, checkpoint FROM embedding_models "
        "WHERE model_id = ?", [model_id]).fetchone()
    if row is None:
        raise WorkspaceError(f"no embedding model '{model_id}' in this workspace (embedded: "
                             f"{', '.join(k[0] for k in known)}); run `ceta2vec embed --run RUN --chunk N` first")
    model_id, run, chunk, dim, layers, frame_seconds, table, checkpoint = row
    layer_rows = conn.execute(f"SELECT DISTINCT layer FROM {table} WHERE pooling = 'mean' ORDER BY layer").fetchall()
    if not layer_rows:
        raise WorkspaceError(f"embedding model '{model_id}' has no mean-pooled segment vectors: run `ceta2vec embed`")
    config = dict(conn.execute("SELECT key, value FROM workspace_config").fetchall())
    sample_rate = int(config.get("sample_rate", round(1 / frame_seconds)))
    rf = _receptive_field(conn, run)
    hop = int(round(frame_seconds * sample_rate))
    return ReportModel(model_id, run, int(chunk), int(dim), int(layers), float(frame_seconds), sample_rate,
                       rf if rf else int(round(hop * 1.25)), table, tuple(int(r[0]) for r in layer_rows))


def _receptive_field(conn: duckdb.DuckDBPyConnection, run: str) -> int | None:
    row = conn.execute("SELECT feature_encoder FROM models WHERE model_id = ?", [run]).fetchone()
    if not row:
        return None
    plan = json.loads(row[0])
    if "receptive_field_samples" in plan:
        return int(plan["receptive_field_samples"])
    if "strides" in plan and "kernels" in plan:
        return receptive_field(tuple(plan["strides"]), tuple(plan["kernels"]))
    return None


def label_columns(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Label columns that label at least one segment: evaluated ones first (most recent first), then by name."""
    columns = [r[0] for r in conn.execute(
        "SELECT DISTINCT label_column FROM segment_labels ORDER BY label_column").fetchall()]
    evaluated = [r[0] for r in conn.execute(
        "SELECT label_column FROM evaluations GROUP BY label_column ORDER BY max(created_at) DESC").fetchall()]
    return [c for c in evaluated if c in columns] + [c for c in columns if c not in evaluated]


def resolve_label_column(conn: duckdb.DuckDBPyConnection, wanted: str | None) -> str | None:
    columns = label_columns(conn)
    if wanted is None:
        return columns[0] if columns else None
    if wanted not in columns:
        raise WorkspaceError(f"no segment has a '{wanted}' label (label columns: {', '.join(columns) or 'none'}); "
                             "add labels with `ceta2vec ingest --labels CSV` or `ceta2vec evaluate --labels CSV`")
    return wanted


def resolve_layer(conn: duckdb.DuckDBPyConnection, model: ReportModel, label_column: str | None,
                  wanted: int | None) -> tuple[int, str]:
    """(layer, why): `wanted`, else the best evaluated layer for the label column, else the middle layer."""
    if wanted is not None:
        if wanted not in model.embedded_layers:
            raise WorkspaceError(f"{model.model_id} has segment vectors for layers "
                                 f"{', '.join(map(str, model.embedded_layers))}, not layer {wanted}")
        return wanted, "chosen"
    if label_column is not None:
        row = conn.execute(
            """SELECT layer, value FROM evaluations WHERE model_id = ? AND label_column = ? AND kind = 'model'
               AND features LIKE 'layer %' AND metric = ? AND value IS NOT NULL ORDER BY value DESC, layer LIMIT 1""",
            [model.model_id, label_column, LAYER_METRIC]).fetchone()
        if row and row[0] in model.embedded_layers:
            return int(row[0]), f"best 5-NN macro-F1 for '{label_column}' in `ceta2vec evaluate` ({row[1]:.3f})"
    middle = model.embedded_layers[len(model.embedded_layers) // 2]
    return middle, "middle layer (no evaluation of this model)"


def embedded_segment_ids(conn: duckdb.DuckDBPyConnection, model: ReportModel, layers: list[int]) -> list[str]:
    """Segments with a mean-pooled vector at every one of `layers`, sorted."""
    return [r[0] for r in conn.execute(
        f"""SELECT segment_id FROM {model.table} WHERE pooling = 'mean' AND list_contains(?, layer)
            GROUP BY segment_id HAVING count(DISTINCT layer) = ? ORDER BY segment_id""",
        [list(layers), len(set(layers))]).fetchall()]


def sample_ids(ids: list[str], max_points: int, seed: int) -> list[str]:
    """A seeded sample of `max_points` ids (all of them when fewer), in the given order."""
    if len(ids) <= max_points:
        return list(ids)
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), max_points, replace=False))
    return [ids[i] for i in keep]


def _register_ids(conn: duckdb.DuckDBPyConnection, ids: list[str], name: str = "report_ids") -> str:
    conn.register(name, pa.table({"segment_id": pa.array(ids, pa.string()),
                                  "position": pa.array(np.arange(len(ids), dtype=np.int64))}))
    return name


@dataclass
class SegmentInfo:
    """Metadata of segments, in the order asked for."""

    segment_id: list[str]
    recording_id: list[str]
    recording: list[str]  # file name
    site: list[str]
    start_time: list[str]  # ISO-8601 UTC, "" when unknown
    hour_utc: np.ndarray  # float hour of day of the segment's start (UTC), NaN when unknown
    start_s: np.ndarray
    valid_s: np.ndarray
    rms_dbfs: np.ndarray
    label: list[str]  # "" unlabelled; several values of the column joined with " + "

    def __len__(self) -> int:
        return len(self.segment_id)


def segment_info(conn: duckdb.DuckDBPyConnection, ids: list[str], label_column: str | None) -> SegmentInfo:
    name = _register_ids(conn, ids)
    table = conn.execute(
        f"""SELECT s.segment_id, s.recording_id, r.file_name, s.site,
                   coalesce(strftime(s.start_time AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'), '') AS start_time,
                   CASE WHEN s.start_time IS NULL THEN 'NaN'::DOUBLE
                        ELSE extract('epoch' FROM s.start_time) % 86400 / 3600.0 END AS hour_utc,
                   s.start_s, s.valid_s, s.rms_dbfs,
                   coalesce((SELECT string_agg(DISTINCT l.label_value, ' + ' ORDER BY l.label_value)
                             FROM segment_labels l WHERE l.segment_id = s.segment_id AND l.label_column = ?), '') AS label
            FROM {name} w JOIN segments s USING (segment_id) JOIN recordings r USING (recording_id)
            ORDER BY w.position""", [label_column or ""]).to_arrow_table()
    conn.unregister(name)
    if table.num_rows != len(ids):
        found = set(table.column("segment_id").to_pylist())
        missing = [s for s in ids if s not in found][:3]
        raise WorkspaceError(f"segments {missing} have vectors but no row in `segments`: the workspace is inconsistent")
    col = {n: table.column(n) for n in table.column_names}
    return SegmentInfo(
        segment_id=col["segment_id"].to_pylist(), recording_id=col["recording_id"].to_pylist(),
        recording=col["file_name"].to_pylist(), site=col["site"].to_pylist(), start_time=col["start_time"].to_pylist(),
        hour_utc=col["hour_utc"].to_numpy().astype(np.float64), start_s=col["start_s"].to_numpy().astype(np.float64),
        valid_s=col["valid_s"].to_numpy().astype(np.float64), rms_dbfs=col["rms_dbfs"].to_numpy().astype(np.float32),
        label=col["label"].to_pylist(),
    )


def segment_vectors(conn: duckdb.DuckDBPyConnection, model: ReportModel, layer: int, ids: list[str],
                    pooling: str = "mean") -> np.ndarray:
    """(len(ids), dim) float32 vectors of one layer, in the order of `ids`."""
    name = _register_ids(conn, ids)
    table = conn.execute(
        f"""SELECT e.vector FROM {name} w JOIN {model.table} e USING (segment_id)
            WHERE e.layer = ? AND e.pooling = ? ORDER BY w.position""", [layer, pooling]).to_arrow_table()
    conn.unregister(name)
    if table.num_rows != len(ids):
        raise WorkspaceError(f"{model.model_id} layer {layer}: {len(ids) - table.num_rows} of {len(ids)} segments "
                             f"have no {pooling}-pooled vector; run `ceta2vec embed` for this layer")
    values = table.column("vector").combine_chunks().flatten().to_numpy()
    return np.ascontiguousarray(values.reshape(len(ids), model.dim), dtype=np.float32)


@dataclass(frozen=True)
class UnitInventory:
    source: str  # 'codevector' or 'kmeans'
    layer: int  # -1 for codevectors
    group: int
    size: int  # codes in the inventory (k, or codevectors per group)

    @property
    def key(self) -> str:
        return f"codevector-g{self.group}" if self.source == "codevector" else f"kmeans-layer{self.layer}"

    @property
    def name(self) -> str:
        return (f"quantizer codevectors, group {self.group}" if self.source == "codevector"
                else f"k-means units of layer {self.layer}")


def unit_inventories(conn: duckdb.DuckDBPyConnection, model: ReportModel) -> list[UnitInventory]:
    """Every unit inventory the model has frame units for: codevector groups first, then k-means layers."""
    per_group = None
    row = conn.execute("SELECT model_config FROM models WHERE model_id = ?", [model.run]).fetchone()
    if row:
        per_group = json.loads(row[0]).get("num_codevectors_per_group")
    k_of = dict(conn.execute("SELECT layer, k FROM unit_models WHERE model_id = ?", [model.model_id]).fetchall())
    out = []
    for source, layer, group, top in conn.execute(
            """SELECT source, layer, code_group, max(unit) FROM unit_stats WHERE model_id = ?
               GROUP BY ALL ORDER BY source, layer, code_group""", [model.model_id]).fetchall():
        size = (per_group if source == "codevector" else k_of.get(layer)) or int(top) + 1
        out.append(UnitInventory(source, int(layer), int(group), int(size)))
    return out


def frame_units(conn: duckdb.DuckDBPyConnection, model: ReportModel, inventory: UnitInventory,
                ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """segment_id -> int16 unit per frame."""
    where = "model_id = ? AND source = ? AND layer = ? AND code_group = ?"
    params = [model.model_id, inventory.source, inventory.layer, inventory.group]
    if ids is None:
        table = conn.execute(f"SELECT segment_id, units FROM frame_units WHERE {where}", params).to_arrow_table()
    else:
        name = _register_ids(conn, ids)
        table = conn.execute(f"SELECT u.segment_id, u.units FROM frame_units u JOIN {name} w USING (segment_id) "
                             f"WHERE {where}", params).to_arrow_table()
        conn.unregister(name)
    units = table.column("units").combine_chunks()
    offsets = units.offsets.to_numpy()
    values = units.values.to_numpy(zero_copy_only=False).astype(np.int16)
    return {sid: values[offsets[i]:offsets[i + 1]] for i, sid in enumerate(table.column("segment_id").to_pylist())}


def unit_stats(conn: duckdb.DuckDBPyConnection, model: ReportModel, inventory: UnitInventory) -> list[dict]:
    """Usage of every used unit (frames, segments, share, mean run), most used first."""
    cursor = conn.execute(
        """SELECT unit, frames, segments, share, mean_run_frames, mean_run_s FROM unit_stats
           WHERE model_id = ? AND source = ? AND layer = ? AND code_group = ? ORDER BY frames DESC, unit""",
        [model.model_id, inventory.source, inventory.layer, inventory.group])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def kmeans_centroids(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: ReportModel,
                     layer: int) -> np.ndarray | None:
    row = conn.execute("SELECT centroids FROM unit_models WHERE model_id = ? AND layer = ?",
                       [model.model_id, layer]).fetchone()
    if not row or not (workspace.root / row[0]).exists():
        return None
    return np.load(workspace.root / row[0]).astype(np.float32)


def frame_vectors(conn: duckdb.DuckDBPyConnection, workspace: Workspace, model: ReportModel, layer: int,
                  ids: list[str]) -> dict[str, np.ndarray]:
    """segment_id -> (frames, dim) float32 frame vectors of one layer (committed frame files only);
    segments without frame vectors are left out."""
    name = _register_ids(conn, ids)
    files = [r[0] for r in conn.execute(
        f"""SELECT DISTINCT e.frame_file FROM embedded_segments e JOIN {name} w USING (segment_id)
            WHERE e.model_id = ? AND e.layer = ? AND e.frame_file IS NOT NULL ORDER BY 1""",
        [model.model_id, layer]).fetchall()]
    files = [str(workspace.root / f) for f in files if (workspace.root / f).exists()]
    if not files:
        conn.unregister(name)
        return {}
    table = conn.execute(
        f"""SELECT f.segment_id, f.vector FROM read_parquet(?) f JOIN {name} w USING (segment_id)
            WHERE f.layer = ? ORDER BY w.position, f.frame""", [files, layer]).to_arrow_table()
    conn.unregister(name)
    sids = np.asarray(table.column("segment_id").to_pylist())
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = flat.reshape(len(sids), -1) if len(sids) else flat.reshape(0, model.dim)
    out: dict[str, np.ndarray] = {}
    if len(sids):
        starts = np.flatnonzero(np.r_[True, sids[1:] != sids[:-1]])
        ends = np.r_[starts[1:], len(sids)]
        for a, b in zip(starts, ends):
            out[str(sids[a])] = vectors[a:b]
    return out


def train_metrics(conn: duckdb.DuckDBPyConnection, run: str) -> dict[str, np.ndarray]:
    """Per-step training health of a run; `perplexity` is (steps, groups). Empty arrays when none."""
    cursor = conn.execute(
        """SELECT step, chunk, loss, contrastive_loss, diversity_loss, perplexity, unused_code_share, accuracy,
                  grad_norm, learning_rate, temperature FROM train_metrics WHERE model_id = ? ORDER BY step""", [run])
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    out = {n: np.asarray([r[i] for r in rows], np.float64) for i, n in enumerate(names) if n != "perplexity"}
    groups = max((len(r[5]) for r in rows), default=0)
    out["perplexity"] = np.asarray([list(r[5]) + [np.nan] * (groups - len(r[5])) for r in rows],
                                   np.float64).reshape(len(rows), groups)
    return out


def checkpoint_step(conn: duckdb.DuckDBPyConnection, model: ReportModel) -> int | None:
    row = conn.execute("SELECT step FROM checkpoints WHERE model_id = ? AND chunk = ?", [model.run, model.chunk]).fetchone()
    return int(row[0]) if row else None


def model_record(conn: duckdb.DuckDBPyConnection, run: str) -> dict:
    """The run's row of `models` with its JSON columns parsed ({} when the run is not recorded)."""
    cursor = conn.execute("SELECT * FROM models WHERE model_id = ?", [run])
    row = cursor.fetchone()
    if row is None:
        return {}
    record = dict(zip([d[0] for d in cursor.description], row))
    for key in ("settings", "model_config", "feature_encoder"):
        if isinstance(record.get(key), str):
            record[key] = json.loads(record[key])
    return record


def segment_labels_of(conn: duckdb.DuckDBPyConnection, recording_id: str, label_column: str) -> list[dict]:
    """A recording's labels of one column (event spans with start_s/end_s, or whole-recording ones)."""
    return [dict(label=v, start_s=a, end_s=b) for v, a, b in conn.execute(
        "SELECT label_value, start_s, end_s FROM labels WHERE recording_id = ? AND label_column = ? ORDER BY start_s",
        [recording_id, label_column]).fetchall()]


def data_summary(conn: duckdb.DuckDBPyConnection) -> dict:
    """Counts for the report's summary table."""
    recordings, hours, sites, first, last = conn.execute(
        "SELECT count(*), coalesce(sum(duration_s), 0) / 3600, count(DISTINCT site), min(start_time), max(start_time) "
        "FROM recordings").fetchone()
    segments, audio_hours = conn.execute("SELECT count(*), coalesce(sum(valid_s), 0) / 3600 FROM segments").fetchone()
    return {"recordings": recordings, "recording_hours": float(hours), "sites": sites, "segments": segments,
            "segment_hours": float(audio_hours), "first_start": first, "last_start": last}


def timeline_recording(conn: duckdb.DuckDBPyConnection, model: ReportModel, inventory: UnitInventory,
                       label_column: str | None) -> tuple[str, str] | None:
    """(recording_id, file name) worth a unit timeline: labelled for the column (event labels first),
    then the longest (up to a minute) with non-silent segments that have units."""
    row = conn.execute(
        """WITH candidates AS (
               SELECT s.recording_id, r.file_name, least(sum(s.valid_s), 60) AS seconds
               FROM segments s JOIN recordings r USING (recording_id)
               WHERE NOT s.is_silent AND s.segment_id IN (SELECT segment_id FROM frame_units WHERE model_id = ?
                     AND source = ? AND layer = ? AND code_group = ?)
               GROUP BY ALL),
           labelled AS (
               SELECT recording_id, count(*) AS labels, count(start_s) AS events FROM labels
               WHERE label_column = ? GROUP BY ALL)
           SELECT c.recording_id, c.file_name FROM candidates c LEFT JOIN labelled l USING (recording_id)
           ORDER BY coalesce(l.labels, 0) > 0 DESC, coalesce(l.events, 0) DESC, c.seconds DESC, c.file_name LIMIT 1""",
        [model.model_id, inventory.source, inventory.layer, inventory.group, label_column or ""]).fetchone()
    return (row[0], row[1]) if row else None


def recording_segments(conn: duckdb.DuckDBPyConnection, recording_id: str) -> list[tuple[str, float, float]]:
    """(segment_id, start_s, valid_s) of one channel of a recording (the lowest), in time order."""
    return [(r[0], float(r[1]), float(r[2])) for r in conn.execute(
        """SELECT segment_id, start_s, valid_s FROM segments WHERE recording_id = ?
           AND channel = (SELECT min(channel) FROM segments WHERE recording_id = ?) ORDER BY start_s""",
        [recording_id, recording_id]).fetchall()]


def configured_segment_seconds(conn: duckdb.DuckDBPyConnection) -> float | None:
    """The dataset's nominal segment length (what a padded final segment is padded to), None when not recorded."""
    row = conn.execute("SELECT value FROM workspace_config WHERE key = 'segment_seconds'").fetchone()
    try:
        return float(row[0]) if row else None
    except ValueError:
        return None


def label_values(conn: duckdb.DuckDBPyConnection, ids: list[str], label_column: str) -> list[str]:
    """One label column's value per segment in the order of `ids` ("" unlabelled; several joined with " + ")."""
    name = _register_ids(conn, ids)
    rows = conn.execute(
        f"""SELECT coalesce((SELECT string_agg(DISTINCT l.label_value, ' + ' ORDER BY l.label_value)
                             FROM segment_labels l WHERE l.segment_id = w.segment_id AND l.label_column = ?), '')
            FROM {name} w ORDER BY w.position""", [label_column]).fetchall()
    conn.unregister(name)
    return [r[0] for r in rows]
