"""Extending a finished run: `--resume train.epochs=N` with N above the run's epochs trains on."""
import csv
import math
import shutil
from pathlib import Path

import pytest

import rscc.training.loop as trainer
from rscc.cli import main as cli_main
from rscc.config import load_preset
from rscc.errors import CheckpointError
from rscc.experiments.profiles import SMOKE_MODEL
from rscc.training.preflight import check_resumed_config

# 40 synthetic pairs of 64 px at batch 16: 9 steps per epoch, a few seconds per epoch on one thread
SMALL = [
    *SMOKE_MODEL, "train.batch_size=16",
    "data.synth_pairs=40", "data.synth_size=64", "loss.similarity_source=string", "train.log_every=1",
    "train.num_threads=1", "train.schedule=cosine", "train.lr=1e-3",
]
STEPS_PER_EPOCH = 9
LR = 1e-3


def config(*extra):
    return load_preset("cpu-tiny", SMALL + list(extra))


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, synthetic_cache):
    """A finished one-epoch run (cosine schedule), trained with a private cache (data, features)."""
    with synthetic_cache(tmp_path_factory.mktemp("cache")) as cache:
        out = tmp_path_factory.mktemp("runs") / "one-epoch"
        summary = trainer.train(config("train.epochs=1"), out, progress=False)
    return out, summary, cache


@pytest.fixture
def copy(one_epoch, tmp_path, monkeypatch):
    """A private copy of the one-epoch run, with the module's cache in use."""
    first, _, cache = one_epoch
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    return Path(shutil.copytree(first, tmp_path / "run"))


def test_resuming_with_more_epochs_trains_on_from_the_last_checkpoint(one_epoch, copy):
    _, summary, _ = one_epoch
    out = copy
    seen = []
    extended = trainer.train(config("train.epochs=2"), out, resume=True, progress=False,
                             on_step=lambda info: seen.append((info["step"], info["lr"])))
    assert summary["steps"] == STEPS_PER_EPOCH
    assert (extended["steps"], extended["epochs"]) == (2 * STEPS_PER_EPOCH, 2)
    assert [step for step, _ in seen] == list(range(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH + 1))
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows if r["split"] == "val"] == [str(STEPS_PER_EPOCH), str(2 * STEPS_PER_EPOCH)]
    assert "epochs: 2" in (out / "config.yaml").read_text()


def test_an_extended_cosine_run_keeps_its_warm_up_and_decays_to_the_new_last_step(copy):
    seen = {}
    trainer.train(config("train.epochs=3"), copy, resume=True, progress=False,
                  on_step=lambda info: seen.update({info["step"]: info["lr"]}))
    total, warmup = 3 * STEPS_PER_EPOCH, 0.025 * STEPS_PER_EPOCH  # the one-epoch run's warm-up, in steps
    for step, lr in seen.items():  # the rate of step s is set after s - 1 steps
        progress = (step - 1 - warmup) / (total - warmup)
        assert lr == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-6), step
    assert seen[STEPS_PER_EPOCH + 1] > 0.5 * LR  # the finished run ended near 0: the longer curve restarts higher


def test_a_checkpoint_saved_before_the_training_package_extends_with_its_warm_up(copy):
    """Checkpoints of rscc/train.py had no ``schedule`` entry: the warm-up is read from the fields
    of the schedule object it saved inside the scheduler state."""
    import torch

    path = copy / "last" / "state.pt"
    state = torch.load(path, weights_only=True)
    warmup = state.pop("schedule")["warmup_steps"]
    state["scheduler"]["lr_lambdas"] = [{"total_steps": STEPS_PER_EPOCH, "warmup_steps": warmup, "kind": "cosine"}]
    torch.save(state, path)
    seen = {}
    trainer.train(config("train.epochs=2"), copy, resume=True, progress=False,
                  on_step=lambda info: seen.update({info["step"]: info["lr"]}))
    total = 2 * STEPS_PER_EPOCH
    progress = (STEPS_PER_EPOCH - warmup) / (total - warmup)  # the rate of the first step after the old end
    assert warmup == pytest.approx(0.025 * STEPS_PER_EPOCH)
    assert seen[STEPS_PER_EPOCH + 1] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * progress)), rel=1e-6)


def test_fewer_epochs_or_another_change_on_resume_is_still_refused(tmp_path):
    where = tmp_path / "config.yaml"
    with pytest.raises(CheckpointError, match="train.epochs: 2 -> 1"):
        check_resumed_config(config("train.epochs=1"), config("train.epochs=2"), where)
    with pytest.raises(CheckpointError, match="train.lr"):
        check_resumed_config(config("train.epochs=3", "train.lr=2e-3"), config("train.epochs=2"), where)
    check_resumed_config(config("train.epochs=3"), config("train.epochs=2"), where)  # accepted


def test_the_cli_extends_a_run_from_its_saved_configuration(copy, capsys):
    assert cli_main(["train", "--out", str(copy), "--resume", "--no-progress", "train.epochs=2"]) == 0
    assert f'"steps": {2 * STEPS_PER_EPOCH}' in capsys.readouterr().out
