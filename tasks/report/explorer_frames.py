"""The explorer's frame/unit mode: a capped, seeded sample of frames of the main layer, mapped with UMAP and
labelled with the unit each inventory gave them; and the extra segment columns the explorer colours by.

Frames are drawn first from the segments that have a thumbnail and a clip in the report, so a selection of
frames can be seen and heard (the page crops the segment's thumbnail and plays the segment's clip around the
frame); other segments are added only when those hold too few frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tasks.audio.quality import to_dbfs
from tasks.catalog.embeddings import EmbeddingModel
from tasks.catalog.evaluations import label_columns
from tasks.catalog.recordings import configured_segment_seconds, label_values
from tasks.catalog.units import UnitInventory, frame_units, frame_vectors
from tasks.report.spectrograms import MelConfig, mel_ticks, segment_audio
from tasks.report.umap_maps import layer_map
from tasks.workspace import Workspace, database

FRAMES_PER_SEGMENT = 50  # beyond the media segments: spread the sample over many segments, not a few whole ones
BATCH = 64
WINDOW_S = 1.0  # thumbnail crop and clip around a frame


@dataclass
class ExplorerFrames:
    """One row per sampled frame; `segment` points at the row of its segment in ExplorerData."""

    layer: int
    segment: np.ndarray  # int32 row of the frame's segment
    frame: np.ndarray  # int32 frame index within its segment
    time_s: np.ndarray  # float32 centre of the frame, seconds from the start of its segment
    rms_dbfs: np.ndarray  # float32 level of the audio the frame sees (NaN when unknown)
    coords: np.ndarray  # (n, 2) float32 UMAP coordinates
    units: dict[str, np.ndarray] = field(default_factory=dict)  # inventory name -> int32 unit per frame (-1 none)
    unit_sizes: dict[str, int] = field(default_factory=dict)
    main_units: str | None = None  # the inventory the page colours by first
    window_s: float = WINDOW_S
    method: str = "umap"
    seconds: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


def estimated_frames(valid_s: np.ndarray, mel: MelConfig) -> np.ndarray:
    """Frames the model gives each segment's valid audio (what the encoder's strides leave)."""
    samples = np.round(np.asarray(valid_s, np.float64) * mel.sample_rate)
    return np.maximum(0, np.floor((samples - mel.receptive_field) / mel.hop) + 1).astype(np.int64)


def frame_segments(ids: list[str], media_ids: list[str], frames: np.ndarray, cap: int, seed: int) -> list[str]:
    """Segments to sample frames from: every media segment, then seeded others until they can give `cap` frames
    (counting at most FRAMES_PER_SEGMENT of each)."""
    available = dict(zip(ids, (int(f) for f in frames)))
    chosen = [s for s in media_ids if available.get(s, 0) > 0]
    total = sum(available[s] for s in chosen)
    if total >= cap:
        return chosen
    media = set(chosen)
    for i in np.random.default_rng(seed).permutation(len(ids)):
        sid = ids[int(i)]
        if sid in media or available[sid] <= 0:
            continue
        chosen.append(sid)
        total += min(available[sid], FRAMES_PER_SEGMENT)
        if total >= cap:
            break
    return chosen


def pick_frames(count: int, quota: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted frame indices: all of them up to `quota`, else a seeded sample."""
    if count <= quota:
        return np.arange(count)
    return np.sort(rng.choice(count, quota, replace=False))


def frame_levels(audio: np.ndarray, frames: np.ndarray, mel: MelConfig) -> np.ndarray:
    """RMS dBFS of the receptive field each frame sees (NaN past the audio)."""
    x = np.asarray(audio, np.float64)
    power = np.concatenate([[0.0], np.cumsum(x * x)])
    start = np.asarray(frames, np.int64) * mel.hop
    end = np.minimum(start + mel.receptive_field, len(x))
    out = np.full(len(start), np.nan, np.float32)
    ok = end > start
    out[ok] = [to_dbfs(math.sqrt(p / n)) for p, n in zip(power[end[ok]] - power[start[ok]], end[ok] - start[ok])]
    return out


def explorer_frames(ws: Workspace, model: EmbeddingModel, layer: int, inventories: list[UnitInventory],
                    main_inventory: UnitInventory | None, ids: list[str], valid_s: np.ndarray, media_ids: list[str],
                    mel: MelConfig, cap: int, umap_neighbors: int, umap_min_dist: float,
                    seed: int) -> ExplorerFrames | None:
    """Up to `cap` frames of `layer` from the segments `ids` (rows of the explorer), mapped with seeded UMAP;
    None when the model kept no frame vectors or cap is 0."""
    if cap <= 0 or not ids:
        return None
    rng = np.random.default_rng(seed)
    chosen = frame_segments(ids, media_ids, estimated_frames(valid_s, mel), cap, seed)
    quota = max(1, math.ceil(cap / max(1, len(chosen))))
    row_of = {sid: i for i, sid in enumerate(ids)}
    rows, frames, vectors, levels = [], [], [], []
    for start in range(0, len(chosen), BATCH):
        batch = chosen[start:start + BATCH]
        with database.reading(ws) as conn:
            found = frame_vectors(conn, ws, model, layer, batch)
            audio = segment_audio(conn, ws, [s for s in batch if s in found])
        for sid in batch:
            if sid not in found:
                continue
            keep = pick_frames(len(found[sid]), quota, rng)
            rows.append(np.full(len(keep), row_of[sid], np.int32))
            frames.append(keep.astype(np.int32))
            vectors.append(found[sid][keep])
            levels.append(frame_levels(audio[sid], keep, mel) if sid in audio
                          else np.full(len(keep), np.nan, np.float32))
    if not rows:
        return None
    row, frame, x, level = (np.concatenate(rows), np.concatenate(frames), np.concatenate(vectors),
                            np.concatenate(levels))
    if len(frame) > cap:
        keep = np.sort(rng.choice(len(frame), cap, replace=False))
        row, frame, x, level = row[keep], frame[keep], x[keep], level[keep]
    mapped = layer_map(x, layer, 1, umap_neighbors, umap_min_dist, seed)
    del x
    units, sizes = {}, {}
    wanted = sorted({ids[r] for r in np.unique(row)})
    with database.reading(ws) as conn:
        for inv in inventories:
            per_segment = frame_units(conn, model, inv, wanted)
            column = np.full(len(frame), -1, np.int32)
            for i, (r, j) in enumerate(zip(row, frame)):
                seq = per_segment.get(ids[r])
                if seq is not None and j < len(seq):
                    column[i] = seq[j]
            if (column >= 0).any():
                units[inv.name] = column
                sizes[inv.name] = max(inv.size, int(column.max()) + 1)
    main = main_inventory.name if main_inventory is not None and main_inventory.name in units else None
    time_s = (mel.frame_centre_sample(frame.astype(np.float64)) / mel.sample_rate).astype(np.float32)
    return ExplorerFrames(layer, row, frame, time_s, level, mapped.coords, units, sizes,
                          main or next(iter(units), None), WINDOW_S, mapped.method, mapped.seconds)


def explorer_columns(ws: Workspace, ids: list[str], label_column: str | None, mel: MelConfig) -> dict:
    """ExplorerData fields beyond the main label: the other label columns, the segment length, the thumbnails'
    frequency axis."""
    with database.reading(ws) as conn:
        others = [c for c in label_columns(conn) if c != label_column]
        labels = {c: label_values(conn, ids, c) for c in others}
        seconds = configured_segment_seconds(conn)
    return {"labels": labels, "segment_seconds": seconds, "freq_ticks": freq_ticks(mel)}


def freq_ticks(mel: MelConfig) -> list[tuple[float, str]]:
    """kHz ticks of a thumbnail's mel axis as (height fraction from the bottom, label): the page draws the axis."""
    positions, names = mel_ticks(mel)
    return [(float((p + 0.5) / mel.n_mels), name) for p, name in zip(positions, names)]
