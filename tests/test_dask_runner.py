"""Ingest and embed fanned out to Dask worker processes give the same rows as on the flow's own
threads: a LocalCluster started by the flow (ingest), and a running cluster given by address (embed)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from signals import tone, write
from test_training import synthetic_calls

from schemas.settings import EmbedSettings, IngestSettings, PretrainSettings
from tasks.training.run import resolve_run, train_chunk, training_index
from tasks.workspace import Workspace, database

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

SEGMENT_COLUMNS = "* EXCLUDE (parquet_path)"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    synthetic_calls(root / "rec", n=6, seconds=5.0)
    write(root / "rec" / "short.wav", tone(700, 0.8, 16000, 0.3), 16000, "PCM_16")
    (root / "rec" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return root


def ingest(ws: Workspace, corpus, **options) -> dict:
    from flows.ingest import ingest as flow

    # small batches so that several tasks are in flight on the cluster at once
    return flow(IngestSettings(sources=[str(corpus / "rec")], workspace=str(ws.root), segment_seconds=2.0,
                               **options))


def rows(ws: Workspace, sql: str) -> list[tuple]:
    with database.reading(ws) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(scope="module")
def ingested(corpus):
    threads, dask = Workspace.at(corpus / "threads"), Workspace.at(corpus / "dask")
    local = ingest(threads, corpus)
    environment = dict(os.environ)
    distributed = ingest(dask, corpus, task_runner="dask", dask_workers=2)
    # Dask's nanny sets OMP_NUM_THREADS=1 & co in the parent: the flow must give them back, or later
    # subprocesses of the run (torchrun trainers) would run on one thread
    assert dict(os.environ) == environment
    return threads, dask, local, distributed


def test_ingest_on_a_dask_local_cluster_matches_threads(ingested, corpus):
    threads, dask, local, distributed = ingested
    for key in ("ingested", "failed", "segments_added"):
        assert getattr(distributed, key) == getattr(local, key)
    assert local.ingested == 7 and local.failed == 1
    query = f"SELECT {SEGMENT_COLUMNS}, parquet_path FROM segments ORDER BY segment_id"
    expected, got = rows(threads, query), rows(dask, query)
    assert len(expected) == local.segments_added > 0
    assert got == expected
    for path in sorted({r[-1] for r in expected}):
        assert pq.read_table(dask.root / path).equals(pq.read_table(threads.root / path)), path
    recording = "SELECT recording_id, content_hash, frames, duration_s, warnings FROM recordings ORDER BY recording_id"
    assert rows(dask, recording) == rows(threads, recording)
    assert rows(dask, "SELECT path, stage FROM ingest_errors") == rows(threads, "SELECT path, stage FROM ingest_errors")
    assert not any(dask.staging_dir.iterdir())
    # a re-run on the cluster adds nothing (the broken file is checked again)
    again = ingest(dask, corpus, task_runner="dask")
    assert again.ingested == 0 and rows(dask, "SELECT count(*) FROM segments")[0][0] == len(expected)


@pytest.fixture(scope="module")
def cluster():
    """A running cluster (one worker process: the flow's own cluster in the ingest test has two) whose
    task runs report to the tests' Prefect server, marked as this process's (see conftest's prefect_server)."""
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    from flows.runtime.server import OWN_SERVER_ENV

    environment = dict(os.environ)  # the nanny leaks OMP_NUM_THREADS=1 & co into this process
    url = PREFECT_API_URL.value()
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None,
                      env={"PREFECT_API_URL": url, OWN_SERVER_ENV: os.environ.get(OWN_SERVER_ENV, "")}) as running:
        yield running.scheduler_address
    os.environ.clear()
    os.environ.update(environment)


def test_embed_on_a_running_dask_cluster_matches_threads(ingested, cluster, tmp_path):
    from flows.embed import embed

    threads, _, _, _ = ingested
    local = Workspace.at(tmp_path / "local")
    shutil.copytree(threads.root, local.root)
    settings = PretrainSettings(workspace=str(local.root), run="emb", preset="tiny", batch_size=4, crop_seconds=1.0,
                                model_overrides={"num_hidden_layers": 2}, steps_per_chunk=2, chunks=1)
    with database.writing(local) as conn:
        spec = resolve_run(conn, local, settings)
        index = training_index(conn, local, spec)
    train_chunk(spec, index)
    remote = Workspace.at(tmp_path / "remote")
    shutil.copytree(local.root, remote.root)

    options = dict(run="emb", units_k=4, kmeans_sample_frames=200, batch_size=2)
    here = embed(EmbedSettings(workspace=str(local.root), **options))
    there = embed(EmbedSettings(workspace=str(remote.root), dask_address=cluster, **options))
    assert there.segments_embedded == here.segments_embedded > 4  # several batches: several tasks

    vectors = "SELECT segment_id, layer, pooling, vector FROM segment_embeddings ORDER BY ALL"
    expected, got = rows(local, vectors), rows(remote, vectors)
    assert [r[:3] for r in got] == [r[:3] for r in expected]
    # one torch thread per Dask worker against two in the flow: same numbers up to float summation order
    np.testing.assert_allclose(np.array([r[3] for r in got]), np.array([r[3] for r in expected]), rtol=1e-4, atol=1e-5)
    ledger = "SELECT segment_id, layer, frames FROM embedded_segments ORDER BY ALL"
    assert rows(remote, ledger) == rows(local, ledger)
    codes = "SELECT segment_id, code_group, units FROM frame_units WHERE source = 'codevector' ORDER BY ALL"
    assert rows(remote, codes) == rows(local, codes)
