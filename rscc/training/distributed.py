"""This process's place in a run: rank, world size, barriers (one process unless started by torchrun).

Under torchrun ``train.batch_size`` is the global batch; each process takes ``batch_size / N``
samples of it (:class:`~rscc.training.sampling.EpochBatches`), the contrastive loss all-gathers
the batch (:func:`rscc.losses.gather_for_contrastive`) and the caption loss is reweighted so that
DDP's gradient average equals the global token mean (:class:`~rscc.losses.JointLoss`).
Rank 0 validates and writes the run directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from rscc.device import resolve_device


@dataclass
class Processes:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def setup_processes(device_name: str) -> tuple[Processes, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick this rank's device."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        procs = Processes(dist.get_rank(), dist.get_world_size())
        return procs, resolve_device(device_name, int(os.environ.get("LOCAL_RANK", procs.rank)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(), resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 validates alone while the others wait: allow long validations
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Processes(dist.get_rank(), dist.get_world_size()), device


def is_rank_zero() -> bool:
    """Rank 0, or a single process (read from the environment: usable before the group exists)."""
    return os.environ.get("RANK", "0") == "0"


def wait_for_every_rank() -> None:
    """A barrier of the process group, if there is one (at the end of a successful run).

    Rank 0 hosts the rendezvous store: a rank still writing when it leaves aborts gloo
    ("terminate called without an active exception"), so every rank finishes first."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def leave_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
