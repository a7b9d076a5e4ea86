"""What training reads: the data root, the caption similarity behind the false-negative mask, a batch's model inputs."""
from __future__ import annotations

from pathlib import Path

import torch

from rscc import paths
from rscc.config import RunConfig
from rscc.data.levircc import Pair
from rscc.data.root import configured_root
from rscc.losses import caption_keys
from rscc.training.distributed import Processes


def resolve_data_root(config: RunConfig, procs: Processes, progress: bool = True) -> Path:
    """``data.root``, or the synthetic dataset of the data section (generated once, by rank 0)."""
    root = configured_root(config.data, generate=procs.main, progress=progress)
    procs.barrier()
    return root


def similarity_inputs(config: RunConfig, pairs: list[Pair], progress: bool = True) -> torch.Tensor | None:
    """What the false-negative mask compares, one row per caption (index 5 * pair + k): unit-norm
    sentence embeddings (N*5, dim) or int64 caption keys (N*5,); None without FNE/FNA."""
    loss = config.loss
    if loss.fn_mode == "none" or not pairs:
        return None
    raws = [raw for p in pairs for raw in p.raws]
    if loss.similarity_source == "string":
        return caption_keys(raws)
    from rscc.false_negatives import caption_embeddings

    return torch.from_numpy(caption_embeddings(raws, loss.sentence_model, paths.cache_dir(), progress=progress))


def model_inputs(batch: dict, split: str, features, device: torch.device) -> dict:
    """The model's keyword arguments for a batch: cached features or images, and the captions."""
    inputs = {"input_ids": batch["input_ids"].to(device), "pad_mask": batch["pad_mask"].to(device)}
    if features is not None:
        feat_a, feat_b = features.get(split, batch["pair_index"])  # (B, C, s, s) each
        inputs.update(feat_a=feat_a.to(device), feat_b=feat_b.to(device))
    else:
        inputs.update(img_a=batch["img_a"].to(device), img_b=batch["img_b"].to(device))
    return inputs
