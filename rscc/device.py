"""Which torch device a run uses: ``train.device`` (auto, cuda, mps, cpu) resolved on this machine."""
from __future__ import annotations

import torch

from rscc.errors import ConfigError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; naming an absent device is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise ConfigError("device cuda was asked for but no CUDA device is available; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not mps:
            raise ConfigError("device mps was asked for but the MPS backend is not available; use auto or cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device '{name}' is not one of auto, cuda, mps, cpu")
