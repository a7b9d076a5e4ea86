"""The batches of an epoch and the RNG states: what makes a resumed run see what an uninterrupted one sees.

The order of an epoch is a permutation drawn from ``(seed, epoch)`` by a ``torch.Generator``
(``DistributedSampler``'s rule), so a run resumed from ``last/`` skips the batches it already
consumed; with the Python, numpy and torch generator states (dropout) restored, it ends with
bit-identical weights on CPU.
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from rscc.errors import ConfigError
from rscc.training.distributed import Processes


class EpochBatches(Sampler):
    """The batches of one epoch for this process.

    The epoch's order is ``torch.randperm`` under a generator seeded with ``seed + epoch``
    (:class:`~torch.utils.data.DistributedSampler`, padded to a multiple of the world size); rank
    ``r`` takes every ``world``-th index, so that batch ``t`` of all ranks together is exactly
    batch ``t`` of a single process. ``start(epoch, skip)`` leaves out the first ``skip`` batches
    (a run resumed mid-epoch)."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ConfigError(f"train.batch_size {batch_size} (the global batch) must be a multiple of the "
                              f"number of processes {world}")
        self.sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.local_batch = batch_size // world
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / self.local_batch)
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        order = list(self.sampler)
        for t in range(self.skip, self.steps_per_epoch):
            yield order[t * self.local_batch:(t + 1) * self.local_batch]

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Python, numpy, torch CPU and CUDA generator states, as tensors and plain values (so that
    ``torch.load(weights_only=True)`` reads them back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def gather_rng_states(procs: Processes) -> list[dict]:
    """Every rank's RNG state, in rank order (a collective call when distributed)."""
    own = rng_state()
    if not procs.distributed:
        return [own]
    states: list = [None] * procs.world
    torch.distributed.all_gather_object(states, own)
    return states
