"""Embedding and units: shapes, batch independence, idempotency, search, SQL, crash safety."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import CLI
from quick_ingest import ingest_quick
from signals import noise, tone, write
from test_training import synthetic_calls

from schemas.settings import EmbedSettings, PretrainSettings
from tasks.catalog.queries import QueryRefused
from tasks.catalog.search import similar
from tasks.embedding.encode import embed_batch
from tasks.model.config import build_config
from tasks.model.frontend import plan_feature_encoder
from tasks.training.run import resolve_run, train_chunk, training_index
from tasks.workspace import Workspace, database

TINY = dict(preset="tiny", batch_size=4, crop_seconds=1.0, model_overrides={"num_hidden_layers": 2},
            steps_per_chunk=2, chunks=1, run="emb")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with segments of several lengths and a (barely) trained tiny model."""
    root = tmp_path_factory.mktemp("embed")
    synthetic_calls(root / "rec", n=4, seconds=5.0)
    write(root / "rec" / "short.wav", tone(700, 0.8, 16000, 0.3), 16000, "PCM_16")
    # a final segment of 10 ms: shorter than one receptive field (25 ms), so it has no frame to embed
    write(root / "rec" / "just over.wav", noise(2.01, 16000, 0.1, seed=4), 16000, "PCM_16")
    ws = Workspace.at(root / "ws")
    ingest_quick(ws, root / "rec", segment_seconds=2.0)
    settings = PretrainSettings(workspace=str(ws.root), **TINY)
    with database.writing(ws) as conn:
        spec = resolve_run(conn, ws, settings)
        index = training_index(conn, ws, spec)
    train_chunk(spec, index)
    with database.writing(ws) as conn:
        from tasks.catalog.runs import upsert_model
        upsert_model(conn, {"run": "emb", "preset": "tiny", "settings": {}, "model_config": spec.config,
                            "feature_encoder": spec.plan.describe(), "sample_rate": 16000, "frame_rate_hz": 50.0,
                            "receptive_field_ms": 25.0, "parameters": 1, "segments_used": len(index),
                            "hours_used": index.hours, "excluded_recordings": [], "init_from": None, "chunks_done": 1,
                            "steps_done": 2, "latest_checkpoint": None, "best_checkpoint": None})
    return ws


def copy_of(ws: Workspace, tmp_path) -> Workspace:
    shutil.copytree(ws.root, tmp_path / "ws")
    return Workspace.at(tmp_path / "ws")


def run_embed(ws, **options):
    from flows.embed import embed

    return embed(EmbedSettings(workspace=str(ws.root), units_k=8, kmeans_sample_frames=500, **options))


EMBEDDABLE = "SELECT count(*) FROM segments WHERE valid_s >= 0.025"


def rows(ws, sql, params=None):
    with database.reading(ws) as conn:
        return conn.execute(sql, params or []).fetchall()


def test_batch_independence_with_padding():
    model = __import__("transformers").Wav2Vec2ForPreTraining(build_config("tiny", plan_feature_encoder(16000))).eval()
    rng = np.random.default_rng(0)
    a, long, short = (rng.standard_normal(n).astype(np.float32) for n in (16000 * 3, 16000 * 7, 9000))
    device = torch.device("cpu")
    alone = embed_batch(model, ["a"], [a], [0, 1, 4], 0.02, device)[0]
    mixed = embed_batch(model, ["l", "a", "s"], [long, a, short], [0, 1, 4], 0.02, device)[1]
    assert alone.frames == mixed.frames == 149
    for layer in (0, 1, 4):
        np.testing.assert_allclose(alone.layers[layer], mixed.layers[layer], atol=1e-4)
    np.testing.assert_array_equal(alone.codevectors, mixed.codevectors)


@pytest.mark.usefixtures("prefect_server")
def test_shapes_frame_times_units_and_idempotency(trained, tmp_path):
    ws = copy_of(trained, tmp_path)
    first = run_embed(ws)
    segments = rows(ws, EMBEDDABLE)[0][0]
    assert rows(ws, "SELECT count(*) FROM segments")[0][0] == segments + 1
    assert first.model_id == "emb@1" and first.segments_embedded == segments
    assert rows(ws, "SELECT count(*) FROM segment_embeddings WHERE list_any_value(list_transform(vector, v -> isnan(v)))") == [(0,)]
    layers = rows(ws, "SELECT DISTINCT layer FROM segment_embeddings ORDER BY 1")
    assert [r[0] for r in layers] == [0, 1, 2]  # conv encoder + 2 transformer layers
    dims = rows(ws, "SELECT DISTINCT len(vector) FROM segment_embeddings")
    assert dims == [(192,)]
    assert rows(ws, "SELECT data_type FROM information_schema.columns WHERE table_name = 'segment_embeddings__emb_1' "
                    "AND column_name = 'vector'") == [("FLOAT[192]",)]
    # frames: one per 20 ms of valid audio, times in seconds from the segment start
    frames = rows(ws, """SELECT s.valid_s, count(*), max(f.time_s) FROM read_parquet(?) f
                         JOIN segments s USING (segment_id) WHERE f.layer = 1 GROUP BY s.segment_id, s.valid_s""",
                  [str(ws.root / "embeddings" / "emb_1" / "frames" / "*.parquet")])
    for valid_s, count, last in frames:
        assert count == int((valid_s * 16000 - 400) // 320 + 1)
        assert last == pytest.approx((count - 1) * 0.02)
    assert rows(ws, "SELECT count(*) FROM frame_vectors WHERE layer = 1") == [(sum(f[1] for f in frames),)]
    # one row group per layer in every frame file: what reads one layer (k-means units) skips the others
    for file in (ws.root / "embeddings" / "emb_1" / "frames").glob("*.parquet"):
        meta, column = pq.ParquetFile(file).metadata, pq.ParquetFile(file).schema_arrow.get_field_index("layer")
        stats = [meta.row_group(g).column(column).statistics for g in range(meta.num_row_groups)]
        assert [(s.min, s.max) for s in stats] == [(0, 0), (1, 1), (2, 2)], file
    units = rows(ws, "SELECT source, layer, count(*), min(len(units)) FROM frame_units GROUP BY ALL ORDER BY ALL")
    assert units == [("codevector", -1, 2 * segments, 39), ("kmeans", 0, segments, 39), ("kmeans", 1, segments, 39),
                     ("kmeans", 2, segments, 39)]
    stats = rows(ws, "SELECT source, layer, code_group, sum(share), sum(frames) FROM unit_stats GROUP BY ALL ORDER BY ALL")
    total_frames = rows(ws, "SELECT sum(len(units)) FROM frame_units WHERE source = 'kmeans' AND layer = 0")[0][0]
    assert all(s[3] == pytest.approx(1.0) and s[4] == total_frames for s in stats)
    # again: nothing new
    before = rows(ws, "SELECT count(*) FROM segment_embeddings")[0][0]
    again = run_embed(ws)
    assert again.segments_embedded == 0 and rows(ws, "SELECT count(*) FROM segment_embeddings")[0][0] == before
    # a new recording: only its segment is embedded, with the k-means already fitted
    ingest_quick(ws, write(tmp_path / "new" / "new.wav", noise(1.5, 16000, 0.2, seed=9), 16000, "PCM_16").parent,
                 segment_seconds=2.0)
    third = run_embed(ws)
    assert third.segments_embedded == 1
    assert rows(ws, "SELECT count(*) FROM unit_models")[0][0] == 3
    assert rows(ws, "SELECT count(*), count(DISTINCT (segment_id, layer, pooling)) FROM segment_embeddings") == [(before + 6, before + 6)]


@pytest.mark.usefixtures("prefect_server")
def test_similar_agrees_with_numpy_including_filters(trained, tmp_path):
    ws = copy_of(trained, tmp_path)
    run_embed(ws, layers=[1], poolings=["mean"], frame_vectors=False)
    data = rows(ws, """SELECT e.segment_id, e.vector, r.file_name FROM segment_embeddings e
                       JOIN segments_with_recordings r USING (segment_id) WHERE e.layer = 1 ORDER BY e.segment_id""")
    ids = [d[0] for d in data]
    x = np.asarray([d[1] for d in data], np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    query = 3
    distance = 1 - x @ x[query]
    with database.reading(ws) as conn:
        found = similar(conn, ids[query], 5, 1, "emb@1")
        assert found.rows[0][0] == ids[query]
        expected = [ids[i] for i in np.argsort(distance, kind="stable")[:5]]
        assert [r[0] for r in found.rows] == [ids[query]] + [i for i in expected if i != ids[query]][:4]
        got = [r[-1] for r in found.rows[1:]]
        np.testing.assert_allclose(got, sorted(distance[[ids.index(r[0]) for r in found.rows[1:]]]), atol=1e-5)
        # filtered: only short.wav's and call_01's segments; exact search ranks inside the filter
        keep = [i for i, d in enumerate(data) if d[2] in ("short.wav", "call_01.wav")]
        filtered = similar(conn, ids[query], 3, 1, "emb@1", where="file_name IN ('short.wav', 'call_01.wav')")
        expected = [ids[i] for i in sorted(keep, key=lambda i: (distance[i], ids[i]))[:3]]
        assert [r[0] for r in filtered.rows] == expected
    # `similar --where` runs on the sandboxed connection of `ceta2vec sql`: the same answer there,
    # and a filter that tries to end the query and start another is refused before it runs
    with database.querying(ws) as conn:
        sandboxed = similar(conn, ids[query], 3, 1, "emb@1", where="file_name IN ('short.wav', 'call_01.wav')")
        assert sandboxed.rows == filtered.rows
        before = ws.db_path.read_bytes()
        for hostile in [f"true); COPY (SELECT 'x' AS x) TO '{ws.db_path}' (FORMAT csv); SELECT 1 WHERE (true",
                        "true) UNION ALL SELECT * FROM read_text('/etc/passwd') WHERE (true"]:
            with pytest.raises((QueryRefused, duckdb.Error)):
                similar(conn, ids[query], 3, 1, "emb@1", where=hostile)
        assert ws.db_path.read_bytes() == before


def test_sql_during_a_concurrent_embedding_run_succeeds(trained, tmp_path, cli_env):
    ws = copy_of(trained, tmp_path)
    writer = subprocess.Popen([CLI, "embed", "--workspace", ws.root, "--units-k", "8", "--batch-size", "1"], env=cli_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    results = []
    while writer.poll() is None:
        q = subprocess.run([CLI, "sql", "SELECT count(*) FROM segments", "--workspace", ws.root, "--format", "csv"],
                           capture_output=True, text=True, timeout=120)
        results.append((q.returncode, q.stdout.split()[-1] if q.stdout else q.stderr))
        time.sleep(0.5)  # a query every ~1.5 s all through the run, without taking a core from it
    assert writer.returncode == 0, writer.stderr.read()
    assert results and all(code == 0 and value == str(rows(ws, "SELECT count(*) FROM segments")[0][0])
                           for code, value in results), results


def test_kill_9_mid_extraction_then_rerun_leaves_one_row_per_key(trained, tmp_path, cli_env):
    ws = copy_of(trained, tmp_path)
    process = subprocess.Popen([CLI, "embed", "--workspace", ws.root, "--batch-size", "1", "--units-k", "8"], env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    frames_dir = ws.root / "embeddings" / "emb_1" / "frames"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if frames_dir.exists() and len(list(frames_dir.glob("*.parquet"))) >= 1:
            break
        time.sleep(0.01)
    assert process.poll() is None, "embedding finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = subprocess.run([CLI, "embed", "--workspace", ws.root, "--batch-size", "1", "--units-k", "8"],
                          capture_output=True, text=True, timeout=300, env=cli_env)
    assert done.returncode == 0, done.stderr
    segments = rows(ws, EMBEDDABLE)[0][0]
    assert rows(ws, "SELECT count(*), count(DISTINCT (segment_id, layer, pooling)) FROM segment_embeddings") == [
        (segments * 3 * 2, segments * 3 * 2)]
    assert rows(ws, "SELECT count(*) FROM embedded_segments") == [(segments * 3,)]
    keys = []
    for file in frames_dir.glob("*.parquet"):
        t = pq.read_table(file, columns=["segment_id", "layer", "frame"])
        keys.extend(zip(*(t.column(c).to_pylist() for c in ("segment_id", "layer", "frame"))))
    assert len(keys) == len(set(keys))
    assert {k[0] for k in keys} == {r[0] for r in rows(ws, "SELECT segment_id FROM segments WHERE valid_s >= 0.025")}


@pytest.mark.usefixtures("prefect_server")
def test_optional_hnsw_index_with_measured_recall(trained, tmp_path):
    from tasks.catalog.vector_index import build_hnsw
    from tasks.workspace.database import WorkspaceError

    ws = copy_of(trained, tmp_path)
    run_embed(ws, layers=[1], poolings=["mean"], frame_vectors=False)
    with database.writing(ws) as conn:
        info = build_hnsw(conn, ws, "emb@1", 1)
    assert info.path.exists() and info.rows == rows(ws, EMBEDDABLE)[0][0]
    assert 0.9 <= info.recall_at_10 <= 1.0
    assert rows(ws, "SELECT layer, recall_at_10 FROM vector_indexes") == [(1, info.recall_at_10)]
    assert rows(ws, "SELECT count(*) FROM duckdb_indexes()") == [(0,)]  # the workspace DB holds no HNSW index
    query = rows(ws, "SELECT min(segment_id) FROM segments")[0][0]
    with database.reading(ws) as conn:
        approx = similar(conn, query, 5, 1, "emb@1", approximate=True, workspace=ws)
        exact = similar(conn, query, 5, 1, "emb@1")
        assert approx.rows[0][0] == query and len(approx.rows) == 5
        assert len({r[0] for r in approx.rows} & {r[0] for r in exact.rows}) >= 4
        with pytest.raises(WorkspaceError, match="unfiltered queries only"):
            similar(conn, query, 5, 1, "emb@1", where="site = 'x'", approximate=True, workspace=ws)
