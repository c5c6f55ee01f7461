"""The explorer's Review mode: for each label with a classifier, the windows `ceta2vec suggest` picks
(near the threshold, diverse, spread over recordings), each with a spectrogram thumbnail and a clip of
the window and a little audio either side.

The page marks each window yes, no or skip and exports the decisions as the CSV `suggest` writes
(file, start_s, end_s, label, positive, score, segment_id, recording_id) with its `positive` column
filled, so `ceta2vec label` reads it back like any labels CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.names import file_stem
from tasks.catalog import detections as detections_catalog
from tasks.report.spectrograms import MelConfig, log_mel, save_thumbnail, write_clip
from tasks.workspace import Workspace, database

REVIEW_K = 24  # windows per label: a sitting's worth of listening
CONTEXT_S = 0.5  # audio shown and played either side of a window, inside its segment
REVIEW_DIR = "review"  # under the report's media folder


@dataclass
class ReviewBatch:
    """The windows to review for one label; one entry per window in each list."""

    label: str
    classifier_id: str
    threshold: float
    features: str
    file: list[str] = field(default_factory=list)  # the recording's file name (what `label` matches)
    recording_id: list[str] = field(default_factory=list)
    segment_id: list[str] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)  # the window, seconds from the recording's start
    end_s: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    clip_start_s: list[float] = field(default_factory=list)  # what the thumbnail and clip span
    clip_end_s: list[float] = field(default_factory=list)
    thumbnail: list[str] = field(default_factory=list)  # relative to the report folder, "" when missing
    audio: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start_s)


def review_batches(ws: Workspace, out_dir: Path, media_dir: str, mel: MelConfig, k: int = REVIEW_K,
                   seed: int = 0) -> list[ReviewBatch]:
    """A batch per label with a current classifier, its thumbnails and clips written under
    out_dir/media_dir/review/<label>/; [] when the workspace has no classifier."""
    from tasks.detection.suggest import suggest  # scikit-learn: only when there is something to review

    batches = []
    with database.reading(ws) as conn:
        labels = detections_catalog.classifier_labels(conn) if detections_catalog.has_classifiers(conn) else []
        for label in labels:
            record = detections_catalog.current_classifier(conn, label)
            picks = suggest(conn, ws, record, k, record["threshold"], seed)
            batch = ReviewBatch(label, record["classifier_id"], float(record["threshold"]), record["features"])
            spans = detections_catalog.segment_spans(conn, sorted({p.segment_id for p in picks}))
            audio = detections_catalog.segment_samples(conn, ws, sorted(spans))
            folder = Path(media_dir) / REVIEW_DIR / file_stem(label)
            for n, p in enumerate(picks):
                seg_start, valid, rate = spans[p.segment_id]
                a, b = max(seg_start, p.start_s - CONTEXT_S), min(seg_start + valid, p.end_s + CONTEXT_S)
                thumb = wav = ""
                samples = audio.get(p.segment_id)
                if samples is not None and rate == mel.sample_rate:
                    piece = samples[int(round((a - seg_start) * rate)):int(round((b - seg_start) * rate))]
                    if len(piece):
                        name = f"{n:03d}-{file_stem(p.segment_id)}-{p.start_s:.2f}"
                        save_thumbnail(out_dir / folder / f"{name}.png", log_mel(piece, mel))
                        write_clip(out_dir / folder / f"{name}.wav", piece, rate)
                        thumb, wav = (folder / f"{name}.png").as_posix(), (folder / f"{name}.wav").as_posix()
                for column, value in (("file", p.file_name), ("recording_id", p.recording_id),
                                      ("segment_id", p.segment_id), ("start_s", p.start_s), ("end_s", p.end_s),
                                      ("score", p.score), ("clip_start_s", a), ("clip_end_s", b),
                                      ("thumbnail", thumb), ("audio", wav)):
                    getattr(batch, column).append(value)
            if len(batch):
                batches.append(batch)
    return batches


def review_payload(batches: list[ReviewBatch] | None) -> list[dict]:
    """What explorer.js reads: one entry per label, windows as rows (a few dozen: plain JSON is small)."""
    out = []
    for b in batches or []:
        rows = [{"file": f, "recording_id": r, "segment_id": s, "start_s": round(float(t0), 3),
                 "end_s": round(float(t1), 3), "score": round(float(sc), 4), "clip_start_s": round(float(c0), 3),
                 "clip_end_s": round(float(c1), 3), "thumbnail": th, "audio": au}
                for f, r, s, t0, t1, sc, c0, c1, th, au in zip(
                    b.file, b.recording_id, b.segment_id, b.start_s, b.end_s, b.score, b.clip_start_s,
                    b.clip_end_s, b.thumbnail, b.audio)]
        out.append({"label": b.label, "classifier_id": b.classifier_id, "threshold": round(b.threshold, 4),
                    "features": b.features, "windows": rows})
    return out


def check_review(batches: list[ReviewBatch] | None) -> None:
    """A clear error naming the column when a batch's columns disagree."""
    for b in batches or []:
        n = len(b)
        for name in ("file", "recording_id", "segment_id", "end_s", "score", "clip_start_s", "clip_end_s",
                     "thumbnail", "audio"):
            if len(getattr(b, name)) != n:
                raise ValueError(f"explorer review '{b.label}': column {name!r} has {len(getattr(b, name))} rows, "
                                 f"start_s has {n}")
        if not np.all(np.asarray(b.end_s) > np.asarray(b.start_s)):
            raise ValueError(f"explorer review '{b.label}': a window ends before it starts")
