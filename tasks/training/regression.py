"""The loss of objectives whose masked frames regress a target vector (data2vec, logmel-mse)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_regression_terms(predicted: torch.Tensor, target: torch.Tensor, inputs,
                            per: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed squared error over the masked frames, each frame's divided by `per` (the target's
    own number of values), and how many masked frames' predictions are nearer (cosine) their own
    target than every distractor frame's: accuracy for the health verdict, chance 1/(K+1)."""
    with torch.autocast(predicted.device.type, enabled=False):
        predicted = predicted.float()
        per_frame = (predicted - target).pow(2).sum(-1) / per
        # where, not a product: a row with no audio may hold anything in its unused frames
        loss = torch.where(inputs.masked, per_frame, 0.0).sum()
        with torch.no_grad():
            cosines = torch.bmm(F.normalize(predicted, dim=-1, eps=1e-6),
                                F.normalize(target, dim=-1, eps=1e-6).transpose(1, 2))
            positive = torch.diagonal(cosines, dim1=1, dim2=2)
            negative = torch.gather(cosines, 2, inputs.negatives).max(-1).values
            correct = (inputs.masked & (positive > negative)).sum()
    return loss, correct
