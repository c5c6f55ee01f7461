"""The Gumbel quantizer ceta2vec trains with: transformers' own, with fp32 arithmetic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer


def one_hot(index: torch.Tensor, classes: int) -> torch.Tensor:
    """F.one_hot without its range check, which waits for the GPU (and is slow on CPU)."""
    return torch.zeros((*index.shape, classes), device=index.device).scatter_(-1, index.unsqueeze(-1), 1.0)


class StableQuantizer(Wav2Vec2GumbelVectorQuantizer):
    """transformers' Gumbel quantizer with its arithmetic in fp32 whatever the autocast, and the
    codevectors picked by a matmul rather than a (frames x codes x dim) product; the same
    parameters, so checkpoints and exports are unchanged. It keeps what the step's metrics need:
    the chosen codes (a distractor with the target's codes is the target) and the code
    statistics of the batch.

    `replacing` builds one in place of a network's own quantizer, holding the very same parameter
    tensors (so an optimiser, a checkpoint or an export sees no difference) and drawing nothing from
    the random generators (so a run's initial weights do not depend on it)."""

    @classmethod
    def replacing(cls, quantizer: Wav2Vec2GumbelVectorQuantizer, config) -> "StableQuantizer":
        with torch.device("meta"):  # parameters are not initialised here: they are assigned below
            stable = cls(config)
        stable.load_state_dict(quantizer.state_dict(keep_vars=True), assign=True)
        stable.temperature = quantizer.temperature
        stable.train(quantizer.training)
        return stable

    def forward(self, hidden_states, mask_time_indices=None):
        b, t, _ = hidden_states.shape
        g, v = self.num_groups, self.num_vars
        with torch.autocast(hidden_states.device.type, enabled=False):
            logits = F.linear(hidden_states.float(), self.weight_proj.weight.float(), self.weight_proj.bias.float())
            logits = logits.view(b * t, g, v)
            if self.training:
                # uniform draws kept off 0 and 1, so no Gumbel draw is infinite
                uniform = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
                soft = torch.softmax((logits - torch.log(-torch.log(uniform))) / self.temperature, dim=-1)
                codes = soft.argmax(-1)
                probs = one_hot(codes, v) - soft.detach() + soft  # straight-through
            else:
                codes = logits.argmax(-1)
                probs = one_hot(codes, v)
            distribution = torch.softmax(logits, dim=-1) if self.training else probs
            if mask_time_indices is not None:
                weight = mask_time_indices.reshape(-1, 1, 1).to(distribution.dtype)
                marginal = (distribution * weight).sum(0) / weight.sum().clamp(min=1.0)
            else:
                marginal = distribution.mean(0)
            # Not xlogy(p, p): its gradient at p = 0 is NaN, and a code whose softmax underflows to 0
            # in every masked frame is common once logits grow (base: 512 features, logits of std 20+).
            entropy = -torch.sum(marginal * torch.log(marginal.clamp(min=1e-30)), dim=-1)
            perplexity = torch.exp(entropy).sum()
            codevectors = torch.einsum("ngv,gvd->ngd", probs, self.codevectors.float().view(g, v, -1))
        self.last_codes = codes.view(b, t, g)
        self.last_logits = logits.detach().view(b, t, g, v)
        return codevectors.reshape(b, t, -1), perplexity
