"""k-means units are a pure function of (seed, the frames embedded): the same frames written into
other files in another order (what a resumed embed writes) give the same sample and centroids.
Frame vectors reach NumPy through Arrow, units are every frame's nearest centroid, and the unit
statistics DuckDB computes agree with plain counting."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.arrow import FRAME_SCHEMA
from schemas.model_ref import ModelRef
from tasks.catalog.embeddings import EmbeddingModel
from tasks.catalog.units import frames_in_file
from tasks.embedding.units import assign_units, fit_kmeans, nearest_centroid, refresh_unit_stats
from tasks.workspace import Workspace, database
from tasks.workspace.database import WorkspaceError

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


def test_frames_of_a_file_come_as_numpy_in_segment_and_frame_order(tmp_path):
    ws = embedded(tmp_path / "ws", parts=2, seed=1)
    file = ws.root / "embeddings" / MODEL.slug / "frames" / "part-0001.parquet"  # frames written in reverse
    with database.reading(ws) as conn:
        ids, vectors = frames_in_file(conn, str(file), 0, MODEL.dim)
    assert isinstance(ids, pa.Array) and isinstance(vectors, np.ndarray)
    assert vectors.dtype == np.float32 and vectors.shape == (len(ids), MODEL.dim) and vectors.flags.c_contiguous
    table = pq.read_table(file).to_pylist()
    expected = sorted(table, key=lambda r: (r["segment_id"], r["frame"]))
    assert ids.to_pylist() == [r["segment_id"] for r in expected]
    np.testing.assert_array_equal(vectors, np.asarray([r["vector"] for r in expected], np.float32))


def test_a_frame_vector_of_the_wrong_length_is_one_line_naming_the_file(tmp_path):
    ws = embedded(tmp_path / "ws", parts=2, seed=1)
    file = ws.root / "embeddings" / MODEL.slug / "frames" / "part-0000.parquet"
    rows = pq.read_table(file).to_pylist()
    rows[3]["vector"] = rows[3]["vector"][:-1]
    pq.write_table(pa.Table.from_pylist(rows, FRAME_SCHEMA), file)
    with database.reading(ws) as conn, pytest.raises(WorkspaceError) as error:
        frames_in_file(conn, str(file), 0, MODEL.dim)
    assert str(file) in str(error.value) and "wrong length" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(WorkspaceError, match="wrong length"):
        fit(ws, 5000)


def test_units_are_the_nearest_centroid_of_every_frame_in_frame_order(tmp_path):
    ws = embedded(tmp_path / "ws", parts=3, seed=1)
    centroids, _, _ = fit(ws, 5000)
    with database.writing(ws) as conn:
        assert assign_units(conn, ws, MODEL, 0, centroids) == SEGMENTS
        assert assign_units(conn, ws, MODEL, 0, centroids) == 0  # every segment has its units now
        stored = dict(conn.execute("SELECT segment_id, units FROM frame_units WHERE source = 'kmeans'").fetchall())
        assert conn.execute("SELECT DISTINCT layer, code_group, frame_seconds FROM frame_units").fetchall() == [
            (0, 0, MODEL.frame_seconds)]
    vectors = np.asarray([r["vector"] for r in frames()], np.float32).reshape(SEGMENTS, FRAMES, MODEL.dim)
    for s in range(SEGMENTS):
        brute = ((vectors[s][:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
        assert stored[f"seg-{s:03d}"] == brute.tolist()
    # batched products give what one product gives
    flat = vectors.reshape(-1, MODEL.dim)
    np.testing.assert_array_equal(nearest_centroid(flat, centroids, rows=7), nearest_centroid(flat, centroids))


def reference_stats(units_by_inventory: dict, frame_seconds: float) -> dict:
    """Usage of every unit by plain Python counting: frames, segments, share, mean run."""
    out = {}
    for (source, layer, group), lists in units_by_inventory.items():
        frames, segments, runs = Counter(), Counter(), Counter()
        for units in lists:
            frames.update(units)
            segments.update(set(units))
            runs.update(u for i, u in enumerate(units) if i == 0 or units[i - 1] != u)
        total = sum(frames.values())
        for unit, count in frames.items():
            out[(source, layer, group, unit)] = (count, segments[unit], count / total, count / runs[unit],
                                                 count / runs[unit] * frame_seconds)
    return out


def test_unit_statistics_agree_with_plain_counting(tmp_path):
    ws = Workspace.at(tmp_path / "ws").create()
    rng = np.random.default_rng(3)
    inventories = {("kmeans", 0, 0): [[1], [1, 1, 2, 1], [3, 3, 3], [2, 1, 2, 2, 2, 1]],  # runs split by others
                   ("codevector", -1, 1): [rng.integers(0, 5, n).tolist() for n in (1, 2, 17, 40)],
                   ("kmeans", 2, 0): [rng.integers(0, 9, n).repeat(rng.integers(1, 4, n)).tolist() for n in (5, 30)]}
    rows = [(MODEL.model_id, f"seg-{i}", source, layer, group, MODEL.frame_seconds, units)
            for (source, layer, group), lists in inventories.items() for i, units in enumerate(lists)]
    rows.append(("other@1", "seg-0", "kmeans", 0, 0, 0.02, [7, 7]))  # another model's units count for nothing here
    with database.writing(ws) as conn:
        database.apply_schema(conn, ws)
        conn.executemany("INSERT INTO frame_units VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        expected = reference_stats(inventories, MODEL.frame_seconds)
        assert refresh_unit_stats(conn, MODEL) == len(expected)
        got = {tuple(r[:4]): r[4:] for r in conn.execute(
            """SELECT source, layer, code_group, unit, frames, segments, share, mean_run_frames, mean_run_s
               FROM unit_stats WHERE model_id = ?""", [MODEL.model_id]).fetchall()}
        assert refresh_unit_stats(conn, MODEL) == len(expected)  # replaced, not doubled
    assert got.keys() == expected.keys()
    for key, (frames_, segments, share, mean_run, mean_run_s) in expected.items():
        assert got[key][:2] == (frames_, segments), key
        assert got[key][2:] == pytest.approx((share, mean_run, mean_run_s)), key
    assert got[("kmeans", 0, 0, 1)] == pytest.approx((6, 3, 6 / 14, 6 / 5, 6 / 5 * MODEL.frame_seconds))
