"""data2vec targets for wav2vec 2.0: masked frames regress an EMA teacher's view of the unmasked audio.

Baevski et al., data2vec (arXiv 2202.03555) and data2vec 2.0 (arXiv 2212.07525): the student sees
masked audio, a teacher (an exponential moving average of the student) sees it unmasked, and each
masked frame's target is the average of the teacher's top K layer outputs, each instance-normalised
over time. Every masked frame gets a dense, contextual target of `hidden_size` numbers, where the
contrastive task gives it one code among distractors drawn from the same, often near-identical,
ocean noise.

As in data2vec's audio model (`ema_transformer_only`), the teacher is a copy of the transformer
only (positional convolution, layers, final norm); its input is the student's own convolutional
features of the unmasked audio, projected, detached. The student predicts with its usual
`project_hid` (sized hidden -> hidden for this objective), so the network is still a
`Wav2Vec2ForPreTraining` and its export loads with `Wav2Vec2Model.from_pretrained`; the
quantizer is carried along unused. Differences from data2vec, each for a reason:

- the layer outputs are the residual stream after each block (what `output_hidden_states` gives),
  not the feed-forward output before its residual: each is instance-normalised, which takes out
  the stream's growing scale;
- the averaged target is instance-normalised once more, so predicting each channel's crop mean
  scores exactly 1.0 per channel, the chance line of the training-health verdict;
- the EMA decay follows the run's own horizon (ema_decay), not data2vec's 400k updates.

The teacher runs in eval mode (no dropout), so its targets are a pure function of its weights and
the batch, and its weights are saved in every checkpoint: a resumed run is bit-identical.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from tasks.model.objectives import target_kind

# data2vec's audio BASE: decay 0.999 -> 0.9999 over the first 30k of 400k updates. As memories
# (1 / (1 - decay)): 1/400 -> 1/40 of the horizon, reached at 7.5% of it. Short runs keep at
# least MIN_MEMORY steps, or the teacher would be the student of the last step.
MEMORY_START, MEMORY_END, ANNEAL_SHARE = 1 / 400, 1 / 40, 0.075
MIN_MEMORY_START, MIN_MEMORY_END = 10.0, 20.0


def uses_teacher(config) -> bool:
    return target_kind(config) == "data2vec"


def top_k_layers(config) -> int:
    """K: the top two thirds of the transformer (8 of 12 in data2vec BASE)."""
    value = getattr(config, "data2vec_top_k", None) if not isinstance(config, dict) else config.get("data2vec_top_k")
    return int(value or max(1, math.ceil(2 * config.num_hidden_layers / 3)))


def ema_decay(step: int, horizon: int) -> float:
    """The teacher's decay at `step` of a run of `horizon` steps: its memory grows linearly from
    MEMORY_START to MEMORY_END of the horizon over ANNEAL_SHARE of it, then stays."""
    start = max(MIN_MEMORY_START, MEMORY_START * horizon)
    end = max(MIN_MEMORY_END, MEMORY_END * horizon)
    progress = min(1.0, step / max(1.0, ANNEAL_SHARE * horizon))
    return 1.0 - 1.0 / (start + (end - start) * progress)


def make_teacher(model) -> nn.Module:
    """The teacher: a frozen copy of the student's transformer, in eval mode."""
    teacher = copy.deepcopy(model.wav2vec2.encoder)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, model, decay: float) -> None:
    """teacher <- decay x teacher + (1 - decay) x student, parameter by parameter (buffers copied)."""
    student = model.wav2vec2.encoder
    mine, theirs = list(teacher.parameters()), list(student.parameters())
    torch._foreach_lerp_(mine, [p.detach() for p in theirs], 1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def instance_norm(x: torch.Tensor, valid: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(rows, frames, channels) standardised per row and channel over the row's valid frames."""
    weight = valid[..., None].to(x.dtype)
    count = weight.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * weight).sum(1, keepdim=True) / count
    var = ((x - mean).pow(2) * weight).sum(1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + eps)


def average_of_top(layers: list[torch.Tensor], valid: torch.Tensor, k: int) -> torch.Tensor:
    """The target: the mean of the last `k` layer outputs, each instance-normalised, normalised again."""
    top = layers[-k:]
    mean = sum(instance_norm(h.float(), valid) for h in top) / len(top)
    return instance_norm(mean, valid)


class FeatureTap:
    """Keeps the student's normalised convolutional features of the batch (feature_projection's
    input to its linear map), which the teacher reads unmasked."""

    def __init__(self, model):
        self.features: torch.Tensor | None = None
        self._handle = model.wav2vec2.feature_projection.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.features = output[1]  # (hidden with dropout, normalised features)

    def remove(self) -> None:
        self._handle.remove()


@torch.no_grad()
def teacher_targets(model, teacher: nn.Module, features: torch.Tensor, frame_attention: torch.Tensor) -> torch.Tensor:
    """(rows, frames, hidden): the teacher's targets from the student's unmasked features."""
    projection = model.wav2vec2.feature_projection.projection
    outputs: list[torch.Tensor] = []
    # the encoder alone returns its last state only: each block's output is read by a hook
    handles = [layer.register_forward_hook(lambda module, inputs, output: outputs.append(output))
               for layer in teacher.layers]
    try:
        with torch.autocast(features.device.type, enabled=False):
            hidden = projection(features.detach().float())
            last = teacher(hidden, attention_mask=frame_attention.bool()).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    layers = outputs[:-1] + [last]  # the top block after the final norm, as the embeddings' layer L
    return average_of_top(layers, frame_attention.bool(), top_k_layers(model.config))
