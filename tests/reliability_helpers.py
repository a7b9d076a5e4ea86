"""Helpers shared by the reliability tests (test_errors, test_crash_safety, test_untrusted_files).

A user error raises an RsccError naming the file and what was wrong; on the command line it is one
line on stderr, exit status 2, no traceback, and nothing written.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from rscc.cli import main
from rscc.data.synth import make_synthetic
from rscc.experiments.profiles import SMOKE_MODEL

REPO = Path(__file__).resolve().parents[1]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``rscc ARGV`` run in this process."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    """Exit status 2 and one ``rscc CMD: error: ...`` line naming every fragment, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and re.match(r"rscc [\w-]+: error: ", lines[0]), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to))

# The test_train model: 40 synthetic pairs of 64 px, 9 steps an epoch, last/ every 3 steps, 12 steps.
SMALL = [
    *SMOKE_MODEL, "train.batch_size=16",
    "train.max_steps=12", "train.checkpoint_every=3", "loss.similarity_source=string", "train.log_every=1",
    "train.num_threads=1",
]


def train_small_run(tmp_path_factory):
    """(40 synthetic pairs of 64 px, a private RSCC_CACHE, a 3-step run trained on them)."""
    from rscc.config import load_preset
    from rscc.train import train

    base = tmp_path_factory.mktemp("small")
    data = make_synthetic(base / "data", 40, size=64, seed=0, progress=False)
    cache = base / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCC_CACHE", str(cache))
        train(load_preset("cpu-tiny", SMALL + [f"data.root={data}", "train.max_steps=3"]), base / "run", progress=False)
    return data, cache, base / "run"


def train_argv(data: Path, out: Path, *flags: str, overrides: tuple[str, ...] = ()) -> list[str]:
    return ["train", "--preset", "cpu-tiny", "--data", str(data), "--out", str(out), "--no-progress", *flags,
            *SMALL, *overrides]
