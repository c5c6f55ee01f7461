"""The explorer's data: one row per shown segment, with a thumbnail and a clip for `media_points` seeded
segments, the frame/unit mode and the Review mode.

Unlike the report's sections, it reads the workspace itself: the media audio is read AUDIO_BATCH segments
at a time as its files are written, so memory holds one batch whatever `media_points` is.
"""

from __future__ import annotations

import numpy as np

from schemas.names import file_stem
from tasks.catalog.embeddings import sample_ids
from tasks.report.content import ExplorerData
from tasks.report.drawing import MEDIA, Drawing
from tasks.report.explorer_frames import explorer_columns, explorer_frames
from tasks.report.explorer_review import review_batches
from tasks.report.inputs import AUDIO_BATCH, ReportInputs, spectrograms
from tasks.report.spectrograms import save_thumbnail, write_clip
from tasks.workspace import Workspace


def explorer_data(ws: Workspace, inputs: ReportInputs, drawing: Drawing) -> ExplorerData:
    """The explorer's columns, its media written under the report folder."""
    say, settings, out_dir = drawing.say, inputs.settings, drawing.out_dir
    say("explorer thumbnails and audio", 0.92)
    scope, info, mel, maps = inputs.scope, inputs.scope.info, inputs.mel, inputs.maps
    thumbnails, audio_paths = [""] * len(scope.ids), [""] * len(scope.ids)
    media_ids = sample_ids(scope.ids, settings.media_points, settings.seed + 1)
    position = {sid: i for i, sid in enumerate(scope.ids)}
    for start in range(0, len(media_ids), AUDIO_BATCH):
        batch = media_ids[start:start + AUDIO_BATCH]
        specs, audio = spectrograms(ws, batch, mel, keep_audio=True)
        for sid in batch:
            if sid not in specs:
                continue
            thumb = out_dir / MEDIA / "thumbs" / f"{file_stem(sid)}.png"
            wav = out_dir / MEDIA / "audio" / f"{file_stem(sid)}.wav"
            save_thumbnail(thumb, specs[sid])
            write_clip(wav, audio[sid], mel.sample_rate)
            thumbnails[position[sid]] = drawing.relative(thumb)
            audio_paths[position[sid]] = drawing.relative(wav)
        say("explorer thumbnails and audio", 0.92 + 0.07 * (start + len(batch)) / len(media_ids))
    say(f"explorer frames: UMAP of up to {settings.frame_points:,} frames", 0.99)
    frames = explorer_frames(ws, scope.model, scope.layer, inputs.inventories, inputs.main_inventory, scope.ids,
                             info.valid_s, media_ids, mel, settings.frame_points, settings.umap_neighbors,
                             settings.umap_min_dist, settings.seed)
    say("explorer review: suggested windows of each classifier", 0.995)
    review = review_batches(ws, out_dir, MEDIA, mel, seed=settings.seed)
    return ExplorerData(
        segment_id=list(scope.ids), recording=info.recording, site=info.site, start_time=info.start_time,
        start_s=info.start_s.astype(np.float64), label=info.label, cluster=inputs.clusters.astype(np.int32),
        coords={k: m.coords for k, m in maps.items()}, neighbours={k: m.neighbours for k, m in maps.items()},
        distances={k: m.distances for k, m in maps.items()}, thumbnail=thumbnails, audio=audio_paths,
        label_column=scope.label_column, main_layer=scope.layer, valid_s=info.valid_s, rms_dbfs=info.rms_dbfs,
        hour_utc=info.hour_utc, frames=frames, review=review,
        **explorer_columns(ws, scope.ids, scope.label_column, mel))
