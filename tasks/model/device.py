"""Where the network runs: the device a setting names, and the precision it runs at there."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU; fp32 on CPU, where bf16 matmuls are slower, not faster."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
