"""k-means units are a pure function of (seed, the frames embedded): the same frames written into
other files in another order (what a resumed embed writes) give the same sample and centroids."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import FRAME_SCHEMA
from schemas.model_ref import ModelRef
from tasks.catalog.embeddings import EmbeddingModel
from tasks.embedding.units import fit_kmeans
from tasks.workspace import Workspace, database

MODEL = EmbeddingModel(ref=ModelRef("m", 1), export_dir="", export_sha256="", dim=8, layers=1,
                       frame_seconds=0.02, sample_rate=16000, receptive_field=400, table="segment_embeddings__m_1")
SEGMENTS, FRAMES = 40, 50


def frames() -> list[dict]:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (6, MODEL.dim))
    return [{"segment_id": f"seg-{s:03d}", "layer": 0, "frame": f, "time_s": f * 0.02,
             "vector": (centres[(s + f) % 6] + rng.normal(0, 0.5, MODEL.dim)).astype(np.float32).tolist()}
            for s in range(SEGMENTS) for f in range(FRAMES)]


def embedded(root, parts: int, seed: int) -> Workspace:
    """A workspace whose frames are split into `parts` files, segments shuffled by `seed`, and the
    frames of a segment in reverse order in every other file."""
    ws = Workspace.at(root).create()
    rows = frames()
    order = np.random.default_rng(seed).permutation(SEGMENTS)
    folder = ws.root / "embeddings" / MODEL.slug / "frames"
    folder.mkdir(parents=True)
    ledger = []
    for part, chunk in enumerate(np.array_split(order, parts)):
        name = f"embeddings/{MODEL.slug}/frames/part-{part:04d}.parquet"
        chosen = [r for s in chunk for r in rows[s * FRAMES:(s + 1) * FRAMES][:: -1 if part % 2 else 1]]
        pq.write_table(pa.Table.from_pylist(chosen, FRAME_SCHEMA), ws.root / name, row_group_size=97)
        ledger += [(MODEL.model_id, f"seg-{s:03d}", 0, FRAMES, name, datetime.now(timezone.utc)) for s in chunk]
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        conn.executemany("INSERT INTO embedded_segments VALUES (?, ?, ?, ?, ?, ?)", ledger)
    return ws


def fit(ws: Workspace, sample: int, seed: int = 7):
    with database.reading(ws) as conn:
        return fit_kmeans(conn, ws, MODEL, 0, 6, sample, seed)


def test_the_kmeans_sample_and_units_do_not_depend_on_how_the_frames_were_written(tmp_path):
    one = embedded(tmp_path / "one", parts=3, seed=1)
    other = embedded(tmp_path / "other", parts=7, seed=2)
    for sample in (600, 5000):  # a sample of the frames, and all of them
        (c1, inertia1, n1), (c2, inertia2, n2) = fit(one, sample), fit(other, sample)
        assert n1 == n2 == min(sample, SEGMENTS * FRAMES)
        assert np.array_equal(c1, c2) and inertia1 == inertia2
    assert not np.array_equal(fit(one, 600)[0], fit(one, 600, seed=8)[0])  # the seed does choose


def test_frames_of_a_file_no_segment_claims_are_left_out(tmp_path):
    ws = embedded(tmp_path / "ws", parts=3, seed=1)
    reference = fit(ws, 5000)
    shutil.copy(ws.root / "embeddings" / MODEL.slug / "frames" / "part-0000.parquet",
                ws.root / "embeddings" / MODEL.slug / "frames" / "part-9999.parquet")  # a killed run's leftover
    again = fit(ws, 5000)
    assert again[2] == reference[2] == SEGMENTS * FRAMES and np.array_equal(again[0], reference[0])
