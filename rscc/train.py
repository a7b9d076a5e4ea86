"""The trainer's former home, kept so that ``python -m rscc.train …`` and old imports keep working.

Training lives in :mod:`rscc.training` (one job per module); the command, also the torchrun entry
point (``torchrun --nproc_per_node N -m rscc train …``), is :mod:`rscc.commands.train`.
"""
from __future__ import annotations

import sys

from rscc.training.checkpoint import read_state, write_checkpoint
from rscc.training.data import resolve_data_root, similarity_inputs
from rscc.training.distributed import Processes, setup_processes
from rscc.training.loop import train
from rscc.training.preflight import check_resumed_config
from rscc.training.sampling import EpochBatches, rng_state, set_rng_state
from rscc.training.validation import SELECT_BEST, text_to_pair_hit_rate

__all__ = ["EpochBatches", "Processes", "SELECT_BEST", "check_resumed_config", "read_state", "resolve_data_root",
           "rng_state", "set_rng_state", "setup_processes", "similarity_inputs", "text_to_pair_hit_rate", "train",
           "write_checkpoint"]


if __name__ == "__main__":
    from rscc.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
