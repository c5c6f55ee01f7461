"""The segment dataset on object storage: a real S3 API (moto's server on localhost), written by
the ingest flow, read by SQL, pretraining and the embed flow, with the same results as a workspace
keeping its segments on the local disk."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from quick_ingest import ingest_quick
from test_training import synthetic_calls

from schemas.settings import EmbedSettings, IngestSettings, PretrainSettings
from tasks.training.run import resolve_run, train_chunk, training_index
from tasks.workspace import Workspace, database
from tasks.workspace.storage import StorageError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

BUCKET = "s3://ceta2vec-test/workspaces/a"
TRAIN = dict(run="s", preset="tiny", batch_size=4, crop_seconds=1.0, model_overrides={"num_hidden_layers": 2},
             steps_per_chunk=3, chunks=1)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3-compatible server on localhost, found by s3fs through the standard AWS variables."""
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    patch = pytest.MonkeyPatch()
    for key, value in dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                           AWS_ENDPOINT_URL=f"http://{host}:{port}").items():
        patch.setenv(key, value)
    yield
    patch.undo()
    server.stop()


def rows(ws: Workspace, sql: str) -> list[tuple]:
    with database.reading(ws) as conn:
        return conn.execute(sql).fetchall()


def bucket_files():
    import fsspec

    fs, path = fsspec.core.url_to_fs(BUCKET)
    fs.invalidate_cache()
    return sorted(p[len(path) + 1:] for p in fs.glob(f"{path}/segments/**/*.parquet"))


@pytest.fixture(scope="module")
def workspaces(s3, tmp_path_factory):
    from flows.ingest import ingest

    root = tmp_path_factory.mktemp("storage")
    synthetic_calls(root / "rec", n=4, seconds=5.0)
    local = Workspace.at(root / "local")
    ingest_quick(local, root / "rec", segment_seconds=2.0)
    remote = Workspace.at(root / "remote")
    result = ingest(IngestSettings(sources=[str(root / "rec")], workspace=str(remote.root), segment_seconds=2.0,
                                   storage=BUCKET))
    return root, local, remote, result


def test_ingest_writes_segments_to_s3_and_sql_reads_them(workspaces):
    root, local, remote, result = workspaces
    assert result.ingested == 4
    assert remote.storage.remote and (remote.root / "storage.json").exists()
    assert not list((remote.root / "segments").rglob("*.parquet"))  # nothing on the local disk
    claimed = [r[0] for r in rows(remote, "SELECT parquet_path FROM recordings ORDER BY 1")]
    assert bucket_files() == claimed
    same = "SELECT segment_id, recording_id, start_s, valid_s, rms_dbfs, is_silent, parquet_path FROM segments ORDER BY 1"
    assert rows(remote, same) == rows(local, same)
    audio = "SELECT segment_id, md5(audio::VARCHAR), site, date FROM segment_audio ORDER BY 1"
    assert rows(remote, audio) == rows(local, audio)

    # a file published but never committed (a crash in between) is removed by the next run, which adds nothing
    import fsspec

    fs, path = fsspec.core.url_to_fs(BUCKET)
    fs.copy(f"{path}/{claimed[0]}", f"{path}/segments/site=unknown/date=unknown/rec-orphan.parquet")
    from flows.ingest import ingest

    again = ingest(IngestSettings(sources=[str(root / "rec")], workspace=str(remote.root), segment_seconds=2.0))
    assert again.ingested == 0 and bucket_files() == claimed

    with pytest.raises(StorageError, match="keeps its segments at"):
        ingest(IngestSettings(sources=[str(root / "rec")], workspace=str(remote.root), segment_seconds=2.0,
                              storage="s3://ceta2vec-test/elsewhere"))
    with pytest.raises(StorageError, match="keeps its segments in"):
        ingest(IngestSettings(sources=[str(root / "rec")], workspace=str(local.root), segment_seconds=2.0,
                              storage=BUCKET + "-new"))


def test_pretraining_and_embedding_read_segments_from_s3_with_local_results(workspaces, tmp_path):
    from flows.embed import embed

    _, local_source, remote_source, _ = workspaces
    results = {}
    for name, source in (("local", local_source), ("remote", remote_source)):
        ws = Workspace.at(tmp_path / name)
        shutil.copytree(source.root, ws.root)  # the remote copy still points at the same bucket
        with database.writing(ws) as conn:
            spec = resolve_run(conn, ws, PretrainSettings(workspace=str(ws.root), **TRAIN))
            index = training_index(conn, ws, spec)
        chunk = train_chunk(spec, index)
        summary = embed(EmbedSettings(workspace=str(ws.root), run="s", units_k=4, kmeans_sample_frames=200))
        vectors = rows(ws, "SELECT segment_id, layer, pooling, vector FROM segment_embeddings ORDER BY ALL")
        results[name] = (index, chunk, summary, vectors)
    (li, lc, ls, lv), (ri, rc, rs, rv) = results["local"], results["remote"]
    assert ri.files[0].startswith(BUCKET) and not li.files[0].startswith("s3://")
    assert ri.segment_ids == li.segment_ids
    # the same crops from the same samples: the same losses, step for step
    assert [m.loss for m in rc.metrics] == pytest.approx([m.loss for m in lc.metrics], rel=1e-6)
    assert rc.checkpoint.path.is_relative_to(tmp_path / "remote")  # checkpoints stay local
    assert rs.segments_embedded == ls.segments_embedded > 0
    assert [r[:3] for r in rv] == [r[:3] for r in lv]
    np.testing.assert_allclose(np.array([r[3] for r in rv]), np.array([r[3] for r in lv]), rtol=1e-5, atol=1e-6)

    # the pretrain flow of a workspace on object storage copies each checkpoint there, manifest
    # last (here it records chunk 1, written outside a flow, as interrupted, and copies it)
    import fsspec

    from flows.pretrain import pretrain

    remote = Workspace.at(tmp_path / "remote")
    assert pretrain(PretrainSettings(workspace=str(remote.root), **TRAIN)).chunks_done == 1
    chunk_dir = rc.checkpoint.path
    fs, base = fsspec.core.url_to_fs(f"{BUCKET}/checkpoints/s/{chunk_dir.name}")
    fs.invalidate_cache()
    local_files = sorted(p.relative_to(chunk_dir).as_posix() for p in chunk_dir.rglob("*") if p.is_file())
    assert sorted(p[len(base) + 1:] for p in fs.find(base)) == local_files
    assert "hf/model.safetensors" in local_files and "manifest.json" in local_files
    assert fs.cat_file(f"{base}/state.pt") == (chunk_dir / "state.pt").read_bytes()
    from tasks.workspace.storage import mirror_checkpoints

    assert mirror_checkpoints(chunk_dir.parent, BUCKET) == []  # the same manifest there: nothing copied
    fs.pipe(f"{BUCKET.removeprefix('s3://')}/checkpoints/s/chunk-0009/manifest.json", b"{}")  # a chunk pruned here
    assert mirror_checkpoints(chunk_dir.parent, BUCKET) == []
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET.removeprefix('s3://')}/checkpoints/s/chunk-0009")
    # a chunk trained by the flow is copied as soon as it is recorded
    assert pretrain(PretrainSettings(workspace=str(remote.root), **{**TRAIN, "chunks": 2})).chunks_trained == 1
    fs.invalidate_cache()
    second = chunk_dir.parent / "chunk-0002"
    assert fs.cat_file(f"{BUCKET.removeprefix('s3://')}/checkpoints/s/chunk-0002/manifest.json") == \
        (second / "manifest.json").read_bytes()


def test_a_report_folder_is_published_to_s3_and_stale_objects_removed(s3, tmp_path):
    import fsspec

    from tasks.workspace.storage import publish_folder

    report = tmp_path / "tiny-3"
    (report / "figures").mkdir(parents=True)
    (report / "index.html").write_text("<p>report</p>")
    (report / "figures" / "map.png").write_bytes(b"\x89PNG" + bytes(range(256)))
    url = "s3://ceta2vec-test/reports/tiny-3"
    fs, base = fsspec.core.url_to_fs(url)
    fs.makedirs("ceta2vec-test", exist_ok=True)
    fs.pipe(f"{base}/figures/old.png", b"from an older report")
    assert publish_folder(report, url) == ["figures/map.png", "index.html"]
    fs.invalidate_cache()
    assert sorted(p[len(base) + 1:] for p in fs.find(base)) == ["figures/map.png", "index.html"]
    assert fs.cat(f"{base}/figures/map.png") == (report / "figures" / "map.png").read_bytes()
    with pytest.raises(StorageError, match="cannot use storage nope://"):
        publish_folder(report, "nope://x")
