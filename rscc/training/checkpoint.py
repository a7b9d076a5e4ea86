"""Checkpoints: ``weights.safetensors`` + ``state.pt`` (optimiser, scheduler, RNG states, position).

A checkpoint is written to a temporary folder, fsynced and renamed into place: a run killed at
any point leaves a complete ``last/`` (or none yet). The training state is read with
``weights_only=True``: a file that would run code is refused.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from rscc import paths
from rscc.errors import CheckpointError

STATE_FORMAT = 1


def write_checkpoint(run_dir: Path, name: str, model: nn.Module, state: dict) -> Path:
    """Write ``run_dir/name`` atomically: temp folder, fsync, rename (the old copy removed last)."""
    from rscc.model.rsicrc import save_weights

    final, old = run_dir / name, run_dir / f".{name}.old"
    tmp = run_dir / f".{name}.tmp-{os.getpid()}"
    for stale in run_dir.glob(f".{name}.tmp-*"):  # this one, or left by a process killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        save_weights(model, tmp / "weights.safetensors")
        torch.save(state, tmp / "state.pt")
        for file in tmp.iterdir():
            paths.fsync(file)
        paths.fsync(tmp)
    except BaseException:  # a full disk, say: give its space back; the previous copy is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)  # a leftover; `final` is the good copy
        os.replace(final, old)
    os.replace(tmp, final)
    paths.fsync(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: Path) -> dict:
    """The training state of the checkpoint folder ``path``; a CheckpointError names what is wrong."""
    from rscc.model.backbones import torch_load_failure

    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, or a pickle that would run code
        raise CheckpointError(f"{path / 'state.pt'}: unreadable training state, refused or damaged (loaded with "
                              f"weights_only=True): {torch_load_failure(exc)}") from None
