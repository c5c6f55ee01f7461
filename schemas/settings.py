"""Typed settings, one object per flow.

Prefect renders each as the parameter form of its flow in the UI, and the CLI maps its options
onto the same fields, so the two can never drift apart.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from schemas.model_ref import ModelRef

StageSettings = TypeVar("StageSettings", bound=BaseModel)

WORKSPACE_ENV = "CETA2VEC_WORKSPACE"
DEFAULT_WORKSPACE = "ceta2vec-workspace"


def default_workspace() -> str:
    return os.environ.get(WORKSPACE_ENV, DEFAULT_WORKSPACE)


TaskRunnerChoice = Literal["threads", "processes", "dask"]
# Fields shared by the flows that fan out (ingest, embed, pipeline) and that place the segments.
DaskAddress = Annotated[str | None, Field(
    description="Scheduler of a running Dask cluster, e.g. tcp://10.0.0.5:8786 (implies task_runner dask).")]
DaskWorkers = Annotated[int, Field(ge=1, le=1024, description="Worker processes of the LocalCluster started when no address is given.")]
SegmentStorageUrl = Annotated[str | None, Field(
    description="fsspec URL where the Parquet segments live (s3://bucket/prefix, gs://..., file:///mnt/...), fixed by a "
                "workspace's first ingest; the DuckDB file stays in the workspace folder.")]


def _model_ref(value: object) -> ModelRef | None:
    if value is None or isinstance(value, ModelRef):
        return value
    if isinstance(value, str):
        return ModelRef.parse(value)
    raise ValueError(f"{value!r} names no model: expected RUN@CHUNK, for example tiny@3")


# An embedded checkpoint: a ModelRef, parsed once when the settings are validated. The Prefect form,
# the CLI and a settings dump see it as the `run@chunk` text the user types.
ModelChoice = Annotated[
    ModelRef | None,
    PlainValidator(_model_ref),
    PlainSerializer(lambda ref: None if ref is None else str(ref), return_type=str | None),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "null"}]}),
]


def _imply_dask(settings):
    """A Dask scheduler address only makes sense with the dask runner: given alone, it picks it."""
    if settings.dask_address:
        if "task_runner" in settings.model_fields_set and settings.task_runner != "dask":
            raise ValueError(f"dask_address is for task_runner 'dask', not {settings.task_runner!r}")
        settings.task_runner = "dask"
    return settings


class IngestSettings(BaseModel):
    """Recordings in, validated and segmented Parquet out."""

    sources: list[str] = Field(
        description="Files, folders (searched recursively) or glob patterns of recordings.",
        min_length=1,
    )
    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    sample_rate: int = Field(
        16000, ge=50, le=384000, description="Target sample rate (Hz) of the stored audio."
    )
    segment_seconds: float = Field(10.0, gt=0, le=3600, description="Segment length in seconds.")
    hop_seconds: float | None = Field(
        None, gt=0, description="Hop between segment starts in seconds (default: segment length)."
    )
    channels: str = Field(
        "mix",
        description="'mix' (mono mixdown), 'all' (every channel its own stream) or a channel index from 0.",
    )
    final_segment: Literal["pad", "drop"] = Field(
        "pad",
        description="The last, partial segment: 'pad' with zeros (its valid_s records the real length) or 'drop'.",
    )
    site: str | None = Field(None, description="Site / deployment name for these recordings.")
    start_time: datetime | None = Field(
        None, description="Start time of the recordings, when their file names do not carry it."
    )
    labels: str | None = Field(
        None, description="CSV with a 'file' column, optional start_s/end_s, and label columns."
    )
    strict: bool = Field(False, description="Fail the run when any file fails.")
    silence_dbfs: float = Field(
        -90.0, description="Segments quieter than this RMS level (dBFS) are flagged silent."
    )
    workers: int = Field(2, ge=1, le=64, description="Files processed in parallel (threads or processes runner).")
    task_runner: TaskRunnerChoice = Field(
        "threads", description="Where file tasks run: threads of the flow's process, a local process pool, or a Dask cluster."
    )
    dask_address: DaskAddress = None
    dask_workers: DaskWorkers = 2
    storage: SegmentStorageUrl = None

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: str) -> str:
        value = str(value).strip().lower()
        if value in {"mix", "all"} or value.isdigit():
            return value
        raise ValueError("channels must be 'mix', 'all' or a channel index such as 0")

    @model_validator(mode="after")
    def _check_hop(self) -> "IngestSettings":
        if self.hop_seconds is None:
            self.hop_seconds = self.segment_seconds
        return self

    @model_validator(mode="after")
    def _check_task_runner(self) -> "IngestSettings":
        return _imply_dask(self)

    @property
    def workspace_path(self) -> Path:
        return Path(self.workspace).expanduser().resolve()


# Settings a run may change when it is continued; everything else defines the run.
# `nproc` only splits each global batch of `batch_size` crops between processes: the data order,
# position and schedule are those of one process, so a run may continue on another count (its
# numbers then differ as they do on another --device: dropout/Gumbel draws, per-shard perplexity).
PRETRAIN_MUTABLE = frozenset({"workspace", "run", "chunks", "keep_last", "device", "init_from", "nproc"})


class PretrainSettings(BaseModel):
    """Self-supervised wav2vec 2.0 pretraining in resumable chunks."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    run: str | None = Field(
        None, description="Name of the run (the model id); re-running a name continues it. Default: the preset's name."
    )
    preset: Literal["tiny", "small", "base"] = Field("tiny", description="Model size: tiny (CPU demo), small, base (the paper's BASE).")
    chunks: int = Field(3, ge=1, description="Chunks the run should have in total; raise it to continue a finished run.")
    steps_per_chunk: int = Field(50, ge=1, description="Optimiser steps per chunk (each chunk ends in a checkpoint).")
    batch_size: int = Field(8, ge=1, description="Crops per optimiser step (per micro-batch with gradient accumulation).")
    grad_accum: int = Field(1, ge=1, description="Micro-batches accumulated per optimiser step.")
    crop_seconds: float = Field(4.0, gt=0, description="Length of the random crops fed to the model, in seconds.")
    frame_ms: float = Field(20.0, gt=0, description="Frame duration of the feature encoder, in milliseconds.")
    receptive_field_ms: float = Field(25.0, gt=0, description="Minimum receptive field of one frame, in milliseconds.")
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Wav2Vec2Config fields to override, e.g. {'num_hidden_layers': 6}."
    )
    init_from: str | None = Field(
        None, description="Local checkpoint folder (a save_pretrained export) to start from instead of random weights."
    )
    seed: int = Field(0, description="Seed of data order, crops, masks, negatives and weights.")
    learning_rate: float = Field(
        5e-4, gt=0, description="Peak learning rate (AdamW) for an effective batch of 32 s of audio (8 x 4 s); "
                                "other batches scale it by --lr-scaling.")
    lr_scaling: Literal["sqrt", "linear", "none"] = Field(
        "sqrt", description="How the peak learning rate follows the effective batch S = batch_size x grad_accum x "
                            "crop_seconds: learning_rate x sqrt(S/32), x S/32, or unscaled.")
    feature_grad_mult: float = Field(
        0.1, gt=0, le=1, description="Scale of the feature encoder's gradient (0.1 in the wav2vec 2.0 paper; 1 = none).")
    warmup_fraction: float = Field(0.08, ge=0, lt=1, description="Share of the schedule spent warming up.")
    schedule_steps: int | None = Field(
        None, ge=1, description="Steps of the warm-up/decay schedule (default: chunks x steps_per_chunk at creation)."
    )
    final_lr_ratio: float = Field(0.05, ge=0, le=1, description="Learning rate at the end of the schedule, as a share of the peak.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(10.0, gt=0, description="Gradient clipping norm.")
    gumbel_max: float = Field(2.0, gt=0, description="Gumbel-softmax temperature at the start.")
    gumbel_min: float = Field(0.5, gt=0, description="Gumbel-softmax temperature floor (reached at 70% of the schedule).")
    mask_time_prob: float = Field(0.65, gt=0, lt=1, description="Share of frames that start a masked span (upper bound).")
    mask_time_length: int = Field(10, ge=1, description="Masked span length in frames.")
    targets: Literal["contrastive", "data2vec", "logmel-rq", "logmel-mse"] = Field(
        "contrastive", description="What masked frames predict: contrastive (wav2vec 2.0's own loss), data2vec "
                                   "(an EMA teacher's top layers on the unmasked audio), or log-mel codes/bands.")
    frontend_init: Literal["random", "mel"] = Field(
        "random", description="First convolution at the start: random (the paper) or a mel-spaced band-pass bank.")
    crop_sampling: Literal["uniform", "activity"] = Field(
        "uniform", description="Which segments and offsets crops come from: uniformly, or weighted towards "
                               "activity above each recording's noise floor (segment_activity).")
    activity_temperature_db: float = Field(
        4.0, gt=0, description="Activity sampling: a crop's weight grows by e for every this many dB of activity.")
    activity_floor: float = Field(
        0.25, ge=0, le=1, description="Activity sampling: share of draws made uniformly, so plain background is still seen.")
    exclude_recordings: list[str] = Field(
        default_factory=list, description="Recordings held out (recording ids or file names): never trained on."
    )
    max_clipped_fraction: float = Field(0.01, ge=0, le=1, description="Segments clipped more than this are not used.")
    keep_last: int = Field(3, ge=1, description="Checkpoints kept besides the best one.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train: auto picks a GPU when there is one.")
    nproc: int = Field(
        1, ge=0, le=64,
        description="Training processes (DDP launched by torchrun), each taking its share of every batch: 1 = this "
                    "process, N > 1 = N processes (one GPU each on CUDA), 0 = one per visible GPU.",
    )

    @property
    def run_name(self) -> str:
        return self.run or self.preset


class EmbedSettings(BaseModel):
    """Embeddings and units of every segment from a trained checkpoint."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    run: str | None = Field(None, description="Pretraining run to embed with (default: the most recently trained).")
    chunk: int | None = Field(None, ge=1, description="Checkpoint (chunk number) of the run (default: its latest).")
    layers: list[int] | None = Field(
        None, description="Layers to extract: 0 = conv feature encoder, 1..L = transformer layers (default: all)."
    )
    poolings: list[Literal["mean", "std", "max"]] = Field(
        default_factory=lambda: ["mean", "std"], description="Segment vectors pooled over time."
    )
    batch_size: int = Field(8, ge=1, description="Segments per forward pass.")
    units_k: int = Field(50, ge=2, le=32767, description="k of the k-means units fitted per layer.")
    kmeans_layers: list[int] | None = Field(None, description="Layers that get k-means units (default: all extracted).")
    kmeans_sample_frames: int = Field(20000, ge=100, description="Frames sampled to fit each layer's k-means.")
    frame_vectors: bool = Field(True, description="Write per-frame vectors to Parquet (needed for k-means units).")
    frame_dtype: Literal["float32", "float16"] = Field("float32", description="Precision of the frame vectors in Parquet.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run the model.")
    seed: int = Field(0, description="Seed of the k-means sample and initialisation.")
    workers: int = Field(
        1, ge=1, le=64, description="Batch tasks in flight with the threads or processes runner (one batch already uses every core)."
    )
    task_runner: TaskRunnerChoice = Field(
        "threads", description="Where batch tasks run: threads of the flow's process, a local process pool, or a Dask cluster."
    )
    dask_address: DaskAddress = None
    dask_workers: DaskWorkers = 2

    @model_validator(mode="after")
    def _check_task_runner(self) -> "EmbedSettings":
        return _imply_dask(self)


class EvaluateSettings(BaseModel):
    """Scorecard of embeddings and units against labels, beside honest baselines."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    labels: str | None = Field(
        None, description="Labels CSV (file, optional start_s/end_s, label columns); default: the labels given at ingest."
    )
    label_column: str = Field(description="Label column to score against, e.g. species or call_type.")
    background: str | None = Field(
        None, description="Label for segments of event-labelled recordings that overlap no event (call vs no call)."
    )
    model: ModelChoice = Field(None, description="Embedding model (run@chunk) to score (default: the latest embedded).")
    all_checkpoints: bool = Field(
        False, description="Embed and score every kept checkpoint of the model's run, to see whether quality still rises."
    )
    bootstrap: int = Field(200, ge=10, description="Bootstrap resamples (over recordings) for confidence intervals.")
    seed: int = Field(0, description="Seed of folds, probes, k-means and bootstrap.")


class ClassifySettings(BaseModel):
    """A detector per label on a model layer or a baseline, validated by groups, scoring every window."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    label: list[str] | None = Field(
        None, description="Annotated labels to learn (`ceta2vec label`); default: every annotated label, "
                          "unless --label-column is given.")
    label_column: str | None = Field(
        None, description="Also learn each value of this labels-table column, one against the rest (as `evaluate`).")
    labels: str | None = Field(
        None, description="Labels CSV (file, optional start_s/end_s, label columns) to store first, as `evaluate --labels`.")
    background: str | None = Field(
        None, description="Windows of labelled recordings that no label touches are negatives; with --label-column, "
                          "the column's value that means none (not learnt itself).")
    features: str | None = Field(
        None, description="RUN@CHUNK:LAYER (a layer of an embedded checkpoint), logmel or mfcc; default: the best "
                          "evaluated layer of the latest embedded model (log-mel when nothing is embedded).")
    granularity: Literal["windows", "segments"] = Field(
        "windows", description="Score windows of --window-seconds (frame vectors averaged, or their audio), or whole segments.")
    window_seconds: float = Field(2.0, gt=0, le=600, description="Window length in seconds.")
    hop_seconds: float | None = Field(None, gt=0, description="Hop between windows in seconds (default: half a window).")
    split_by: Literal["recording", "site", "day"] = Field(
        "recording", description="Validation holds out whole recordings, sites or days.")
    regularization: float = Field(1.0, gt=0, description="Inverse regularisation strength C of the logistic regression.")
    bootstrap: int = Field(200, ge=10, description="Bootstrap resamples (over groups) for the 95% intervals.")
    seed: int = Field(0, description="Seed of folds, bootstrap and solver.")

    @model_validator(mode="after")
    def _default_hop(self) -> "ClassifySettings":
        if self.hop_seconds is None:
            self.hop_seconds = self.window_seconds / 2
        return self


class ReportSettings(BaseModel):
    """Figures, a self-contained HTML report and an interactive explorer of what the network learned."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    model: ModelChoice = Field(None, description="Embedding model (run@chunk) to show (default: the latest embedded).")
    layer: int | None = Field(
        None, description="Layer of the explorer, atlas and timeline (default: the best evaluated layer, else the middle one)."
    )
    layers: list[int] | None = Field(None, description="Layers of the small-multiple maps (default: every embedded layer).")
    label_column: str | None = Field(
        None, description="Label column to colour by (default: the first label column the workspace has)."
    )
    output: str | None = Field(None, description="Report folder (default: <workspace>/reports/<model>/).")
    publish_to: str | None = Field(
        None, description="fsspec URL the finished report folder is copied to (s3://bucket/reports/tiny-3, gs://..., "
                          "file:///mnt/share/...); objects there that the report no longer has are removed.",
    )
    max_points: int = Field(100_000, ge=10, description="Segments drawn in maps and the explorer (a seeded sample beyond).")
    media_points: int = Field(
        300, ge=0, description="Segments given a spectrogram thumbnail and an audio clip in the explorer."
    )
    frame_points: int = Field(
        20_000, ge=0, description="Frames sampled for the explorer's frame/unit mode (UMAP of frame vectors; 0 = none)."
    )
    atlas_units: int = Field(24, ge=1, description="Units per unit atlas (the most used ones).")
    exemplars: int = Field(5, ge=1, le=12, description="Exemplar snippets per unit in the atlas.")
    neighbours: int = Field(8, ge=1, le=50, description="Nearest neighbours listed per segment.")
    umap_neighbors: int = Field(15, ge=2, description="UMAP n_neighbors.")
    umap_min_dist: float = Field(0.1, ge=0, description="UMAP min_dist.")
    seed: int = Field(0, description="Seed of UMAP, samples and exemplar choice.")
    features_budget: float = Field(
        30.0, ge=0, description="Seconds the report may spend optimising each atlas unit's maximising input and "
                                "its saliency map, all units together (0 = none; the filterbank and attention are drawn anyway).",
    )


# What refresh passes on to the stages it runs, as the pipeline's form has them: the evaluation's
# resamples and the report's size (each defined once, in the stage's settings).
REFRESH_FIELDS: dict[str, type[BaseModel]] = {
    "bootstrap": EvaluateSettings, "atlas_units": ReportSettings, "exemplars": ReportSettings,
    "media_points": ReportSettings, "features_budget": ReportSettings,
}

RefreshStageFields = create_model(
    "RefreshStageFields",
    **{name: (stage.model_fields[name].annotation, stage.model_fields[name]) for name, stage in REFRESH_FIELDS.items()},
)


class RefreshSettings(RefreshStageFields):
    """Bring embeddings, scorecards and the report up to date after new audio or a new checkpoint."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder.")
    run: str | None = Field(None, description="Pretraining run to embed with (default: the most recently trained).")
    label_columns: list[str] | None = Field(
        None, description="Label columns to evaluate (default: every label column the workspace has; [] for none)."
    )
    report: bool = Field(True, description="Rebuild the HTML report after embedding and evaluating.")
    force: bool = Field(False, description="Evaluate and report even when nothing new was embedded.")

    def passed_to(self, stage: type[StageSettings]) -> dict:
        """The REFRESH_FIELDS that `stage` takes, with this refresh's values."""
        return {name: getattr(self, name) for name, owner in REFRESH_FIELDS.items() if owner is stage}


# The pipeline's form is its stages' fields, each defined once, in the stage's own settings: the
# stages each pipeline field configures (the first one listed holds its definition).
PIPELINE_FIELDS: dict[str, tuple[type[BaseModel], ...]] = {
    "sources": (IngestSettings,),
    "site": (IngestSettings,),
    "labels": (IngestSettings,),
    "sample_rate": (IngestSettings,),
    "segment_seconds": (IngestSettings,),
    "workers": (IngestSettings,),
    "storage": (IngestSettings,),
    "preset": (PretrainSettings,),
    "run": (PretrainSettings,),
    "chunks": (PretrainSettings,),
    "steps_per_chunk": (PretrainSettings,),
    "batch_size": (PretrainSettings,),
    "crop_seconds": (PretrainSettings,),
    "model_overrides": (PretrainSettings,),
    "nproc": (PretrainSettings,),
    "device": (PretrainSettings, EmbedSettings),
    "task_runner": (IngestSettings, EmbedSettings),
    "dask_address": (IngestSettings, EmbedSettings),
    "dask_workers": (IngestSettings, EmbedSettings),
    "units_k": (EmbedSettings,),
    "kmeans_sample_frames": (EmbedSettings,),
    "background": (EvaluateSettings,),
    "bootstrap": (EvaluateSettings,),
    "atlas_units": (ReportSettings,),
    "exemplars": (ReportSettings,),
    "media_points": (ReportSettings,),
    "features_budget": (ReportSettings,),
    # defined below, where the pipeline's meaning differs from the stage's
    "label_column": (EvaluateSettings, ReportSettings),
    "seed": (PretrainSettings, EmbedSettings, EvaluateSettings, ReportSettings),
}

PipelineStageFields = create_model(
    "PipelineStageFields",
    **{name: (stages[0].model_fields[name].annotation, stages[0].model_fields[name])
       for name, stages in PIPELINE_FIELDS.items() if name not in ("label_column", "seed")},
)


class PipelineSettings(PipelineStageFields):
    """Recordings to an HTML report in one run: ingest → pretrain → embed → evaluate (when a label
    column is given) → report. Each stage skips what an earlier run already did, so the same
    settings again do (almost) nothing, and a run killed anywhere finishes when re-run."""

    workspace: str = Field(default_factory=default_workspace, description="Workspace folder (created when missing).")
    label_column: str | None = Field(
        None, description="Label column to score every layer against, e.g. species; without it the evaluate stage is skipped."
    )
    seed: int = Field(0, description="Seed of training, k-means, evaluation and report.")
    report: bool = Field(True, description="Build the HTML report and explorer at the end.")

    def stage(self, settings: type[StageSettings], **fields) -> StageSettings:
        """This pipeline's settings of one stage: the fields PIPELINE_FIELDS gives it, then `fields`."""
        shared = {name: getattr(self, name) for name, stages in PIPELINE_FIELDS.items() if settings in stages}
        return settings(**{**shared, **fields})

    @model_validator(mode="after")
    def _check_task_runner(self) -> "PipelineSettings":
        return _imply_dask(self)

    @property
    def run_name(self) -> str:
        return self.run or self.preset
