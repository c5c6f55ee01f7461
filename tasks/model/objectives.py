"""What a pretraining run asks of its masked frames, and the figures a network that learnt nothing scores.

Chosen with the model config field `pretrain_targets` (`ceta2vec pretrain --targets`):

- `contrastive`: wav2vec 2.0's own loss, each masked frame picks its quantized target among
  distractors drawn from the same crop (the default).
- `data2vec`: each masked frame regresses the average of an EMA teacher's top layers on the
  unmasked audio (tasks/training/data2vec.py).
- `logmel-rq`, `logmel-mse`: log-mel codes or bands as targets (tasks/training/logmel_targets.py).

Torch-free, so the report and the health verdict can read a run's task from its config.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TARGETS = ("contrastive", "data2vec", "logmel-rq", "logmel-mse")


@dataclass(frozen=True)
class MaskedTask:
    """What a masked frame is asked, and the figures a model that learnt nothing scores."""

    targets: str
    alternatives: int  # wrong answers a masked frame is scored against: chance accuracy is 1/(alternatives+1)
    loss_at_chance: float
    loss_name: str
    chance_note: str  # why loss_at_chance is the line

    @property
    def chance(self) -> float:
        return 1.0 / (self.alternatives + 1)


def target_kind(config: Any) -> str:
    """`pretrain_targets` of a Wav2Vec2Config or of its dict (configs from before it: contrastive)."""
    kind = config.get("pretrain_targets") if isinstance(config, dict) else getattr(config, "pretrain_targets", None)
    kind = kind or "contrastive"
    if kind not in TARGETS:
        raise ValueError(f"unknown pretrain_targets {kind!r} ({', '.join(TARGETS)})")
    return kind


def masked_task(config: Any) -> MaskedTask:
    """The task of a model config (a Wav2Vec2Config or its dict, as an export's config.json holds it)."""
    value = (config.get if isinstance(config, dict) else lambda k: getattr(config, k, None))
    kind = target_kind(config)
    if kind == "logmel-rq":  # a masked frame picks its code among all V
        codes = int(value("num_codevectors_per_group") or 320)
        return MaskedTask(kind, codes - 1, math.log(codes), "cross-entropy", "ln V at chance")
    negatives = int(value("num_negatives") or 100)
    if kind == "logmel-mse":
        return MaskedTask(kind, negatives, 1.0, "squared error per band", "predicting each band's crop mean")
    if kind == "data2vec":
        return MaskedTask(kind, negatives, 1.0, "squared error per channel", "predicting each channel's crop mean")
    return MaskedTask(kind, negatives, math.log(negatives + 1), "contrastive loss", "ln(K+1) at chance")


def alternative_targets(config: Any) -> bool:
    """Whether the masked frames are scored by another loss than the quantizer's contrastive one."""
    return target_kind(config) != "contrastive"
