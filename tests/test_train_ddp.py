"""The whole distributed training path: torchrun, two gloo processes on the CPU, a couple of steps."""
import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from rscc.data.synth import ensure_synthetic
from rscc.experiments.profiles import SMOKE_MODEL

SMALL = [
    *SMOKE_MODEL, "train.batch_size=16",
    "data.synth_pairs=40", "data.synth_size=64", "train.max_steps=2", "train.log_every=1",
    "loss.similarity_source=string",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_with_two_processes_trains_and_rank_zero_writes_the_run(tmp_path):
    cache = tmp_path / "cache"
    ensure_synthetic(cache / "synthetic-40-64-0", 40, size=64, seed=0, progress=False)
    out = tmp_path / "run"
    env = dict(os.environ, RSCC_CACHE=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "rscc", "train", "--preset", "cpu-tiny", "--data", "synthetic",
               "--out", str(out), "--no-progress", *SMALL]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(out / "last" / "state.pt", weights_only=True)
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert (state["step"], state["world_size"], len(state["rng"])) == (2, 2, 2)
    assert [(r["step"], r["split"]) for r in rows] == [("1", "train"), ("2", "train"), ("2", "val")]
    assert done.stdout.count('"world_size": 2') == 1  # one summary, from rank 0
