"""Typed settings, one object per flow.

Prefect renders each as the parameter form of its flow in the UI, and the CLI maps its options
onto the same fields, so the two can never drift apart.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

WORKSPACE_ENV = "CETA2VEC_WORKSPACE"
DEFAULT_WORKSPACE = "ceta2vec-workspace"


def default_workspace() -> str:
    return os.environ.get(WORKSPACE_ENV, DEFAULT_WORKSPACE)


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
    workers: int = Field(2, ge=1, le=64, description="Files processed in parallel.")

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

    @property
    def workspace_path(self) -> Path:
        return Path(self.workspace).expanduser().resolve()
