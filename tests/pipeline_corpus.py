"""A tiny synthetic corpus and the pipeline settings the pipeline tests share: 6 recordings of 4 s
(tones and click trains, labelled), a 2-layer tiny model, small report."""

from __future__ import annotations

import csv
from pathlib import Path

from signals import click_train, noise, tone, write

from schemas.settings import PipelineSettings

TINY = dict(segment_seconds=2.0, preset="tiny", chunks=2, steps_per_chunk=3, batch_size=4, crop_seconds=1.0,
            model_overrides={"num_hidden_layers": 2}, units_k=8, kmeans_sample_frames=500, bootstrap=10,
            atlas_units=3, exemplars=1, media_points=12, features_budget=0)


def tones_and_clicks(root: Path, n: int = 6) -> Path:
    """`n` recordings of 4 s (two 2-s segments each), tones and click trains, with labels.csv."""
    rows = []
    for i in range(n):
        kind = "tone" if i % 2 == 0 else "clicks"
        x = tone(600 + 50 * i, 4.0, 16000, 0.3) if kind == "tone" else click_train(4.0, 16000, 0.05, 0.5)
        write(root / "rec" / f"r{i}.wav", x + noise(4.0, 16000, 0.01, seed=i), 16000, "PCM_16")
        rows.append([f"r{i}.wav", kind])
    with open(root / "labels.csv", "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["file", "sound"])
        w.writerows(rows)
    return root


def settings_for(root: Path, ws: Path, **extra) -> PipelineSettings:
    return PipelineSettings(sources=[str(root / "rec")], workspace=str(ws), site="syn", labels=str(root / "labels.csv"),
                            label_column="sound", **{**TINY, **extra})


def cli_args(root: Path, ws: Path) -> list[str]:
    """The same run as `settings_for`, as `ceta2vec run` options."""
    args = ["run", str(root / "rec"), "--workspace", str(ws), "--site", "syn", "--labels", str(root / "labels.csv"),
            "--label-column", "sound"]
    for name, value in TINY.items():
        option = "--" + name.replace("_", "-")
        args += [option] + ([f"{k}={v}" for k, v in value.items()] if isinstance(value, dict) else [str(value)])
    return args


def reference_run(root: Path):
    """The pipeline, uninterrupted, in this process: (corpus root, result, flow run id)."""
    from flows.pipeline import pipeline

    tones_and_clicks(root)
    state = pipeline(settings_for(root, root / "ws"), return_state=True)
    assert state.is_completed(), state.message
    return root, state.result(), state.state_details.flow_run_id
