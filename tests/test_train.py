"""The trainer: resumable checkpoints, early errors, the feature cache, schedule and sampling (METHOD §4)."""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import rscc.losses
import rscc.training.loop as trainer
import rscc.training.preflight
from rscc.cli import main as cli_main
from rscc.config import RunConfig, load_preset
from rscc.data.levircc import Vocabulary, load_pairs
from rscc.errors import CheckpointError, ConfigError, DatasetError, RsccError
from rscc.experiments.profiles import SMOKE_MODEL
from rscc.feature_cache import dataset_digest
from rscc.runs import checkpoint_dir
from rscc.training.sampling import EpochBatches
from rscc.training.schedule import warmup_schedule
from rscc.training.validation import text_to_pair_hit_rate

# A model that trains 12 steps in a few seconds: 40 synthetic pairs of 64 px, 9 batches per epoch.
SMALL = [
    *SMOKE_MODEL, "train.batch_size=16",
    "data.synth_pairs=40", "data.synth_size=64", "train.max_steps=12", "train.checkpoint_every=3",
    "loss.similarity_source=string", "train.log_every=1", "train.num_threads=1",
]


class Interrupt(Exception):
    """Stands for a run killed after a given step."""


def stop_after(step):
    def on_step(info):
        if info["step"] == step:
            raise Interrupt

    return on_step


def small_config(*extra) -> RunConfig:
    return load_preset("cpu-tiny", SMALL + list(extra))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_cache):
    """A private cache (synthetic data, features) shared by the tests of this module."""
    with synthetic_cache(tmp_path_factory.mktemp("cache")) as path:
        yield path


@pytest.fixture(scope="module")
def uninterrupted(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    summary = trainer.train(small_config(), out, progress=False)
    return out, summary


def weights(run_dir, which="last"):
    return load_file(str(Path(run_dir) / which / "weights.safetensors"))


def log_rows(run_dir):
    with (Path(run_dir) / "log.csv").open() as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- resume
def test_run_killed_twice_and_resumed_ends_with_bit_identical_weights(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    out = tmp_path / "interrupted"
    for step in (7, 10):  # mid-epoch (last/ at 6), then just after the epoch boundary (last/ at 9)
        with pytest.raises(Interrupt):
            trainer.train(small_config(), out, resume=True, progress=False, on_step=stop_after(step))
    summary = trainer.train(small_config(), out, resume=True, progress=False)
    expected, got = weights(reference), weights(out)
    assert summary["steps"] == 12
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert [r["loss"] for r in log_rows(out)] == [r["loss"] for r in log_rows(reference)]


def test_the_summary_names_the_machine_the_numbers_came_from(uninterrupted):
    _, summary = uninterrupted
    assert summary["machine_cpu"] and summary["machine_torch"] == torch.__version__
    assert summary["machine_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert summary["machine_threads"] >= 1


def test_run_directory_holds_config_vocabulary_checkpoints_log_and_events(uninterrupted):
    out, summary = uninterrupted
    config = RunConfig.load(out / "config.yaml")
    vocab = Vocabulary.load(out / "vocab.json")
    state = torch.load(out / "last" / "state.pt", weights_only=True)
    rows = log_rows(out)
    assert config.model.vocab_size == len(vocab) > 4
    assert (state["step"], state["epoch"], state["position"]) == (12, 1, 3)
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert [r["step"] for r in rows if r["split"] == "val"] == ["9", "12"]
    assert len([r for r in rows if r["split"] == "train"]) == 12
    assert summary["best_step"] in (9, 12) and (out / "best" / "weights.safetensors").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_with_a_changed_configuration_is_refused(uninterrupted):
    out, _ = uninterrupted
    with pytest.raises(CheckpointError, match="loss.theta"):
        trainer.train(small_config("loss.theta=0.5"), out, resume=True, progress=False)


def test_fresh_run_refuses_to_overwrite_an_existing_run(uninterrupted):
    out, _ = uninterrupted
    with pytest.raises(CheckpointError, match="--resume"):
        trainer.train(small_config(), out, progress=False)


def test_checkpoint_swap_killed_between_its_renames_is_recovered(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.old").mkdir()  # what a kill between `last -> .last.old` and `tmp -> last` leaves
    torch.save({"step": 3}, run / ".last.old" / "state.pt")
    assert checkpoint_dir(run, "last") == run / "last"
    assert torch.load(run / "last" / "state.pt")["step"] == 3


# ----------------------------------------------------------------------------- failures
def test_nan_loss_stops_with_the_step_number_and_keeps_the_last_good_checkpoint(cache, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = rscc.losses.caption_loss

    def poisoned(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(rscc.losses, "caption_loss", poisoned)
    with pytest.raises(RsccError, match="step 5: the loss is not finite") as info:
        trainer.train(small_config(), tmp_path / "run", progress=False)
    assert "step 3" in str(info.value)
    assert torch.load(tmp_path / "run" / "last" / "state.pt", weights_only=True)["step"] == 3


def test_batch_of_one_is_rejected_before_training(cache, tmp_path):
    with pytest.raises(ConfigError, match="batch_size 1"):
        trainer.train(small_config("train.batch_size=1"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_unknown_preset_is_an_error_listing_the_presets(tmp_path, capsys):
    assert cli_main(["train", "--preset", "no-such-preset", "--out", str(tmp_path / "run")]) == 2
    assert "cpu-tiny" in capsys.readouterr().err


def test_dataset_failing_the_check_is_rejected_before_training(cache, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(cache / "synthetic-40-64-0", root)
    victim = next((root / "images" / "train" / "B").glob("*.png"))
    victim.unlink()
    with pytest.raises(DatasetError, match=victim.name):
        trainer.train(small_config(f"data.root={root}"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last").exists()


def test_unwritable_output_directory_is_rejected(cache, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(RsccError, match="not writable"):
        trainer.train(small_config(), blocker / "run", progress=False)


def test_nearly_full_disk_is_rejected_before_training(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(rscc.training.preflight.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(RsccError, match="GB free"):
        trainer.train(small_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last").exists()


# ----------------------------------------------------------------------------- feature cache, CLI
def test_cli_run_reuses_the_feature_cache_and_indexes_sentence_embeddings(uninterrupted, tmp_path, monkeypatch,
                                                                         capsys):
    import rscc.false_negatives
    import rscc.feature_cache

    def no_recompute(*args, **kwargs):
        raise AssertionError("features recomputed although cached")

    def fake_embeddings(captions, model_name, cache_dir, **kwargs):  # one-hot per distinct caption
        distinct = sorted(set(captions))
        return np.eye(len(distinct), dtype=np.float32)[[distinct.index(c) for c in captions]]

    monkeypatch.setattr(rscc.feature_cache, "compute_features", no_recompute)
    monkeypatch.setattr(rscc.false_negatives, "caption_embeddings", fake_embeddings)
    status = cli_main(["train", "--preset", "cpu-tiny", "--data", "synthetic", "--out", str(tmp_path / "run"),
                       "--no-progress", *[o for o in SMALL if "similarity_source" not in o], "train.max_steps=2"])
    assert status == 0
    assert '"steps": 2' in capsys.readouterr().out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["loss"]["similarity_source"] == "sentence"


def test_feature_cache_key_changes_when_an_image_changes(cache, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cache / "synthetic-40-64-0", root)
    pairs = load_pairs(root)
    before = dataset_digest(root, pairs)
    image = pairs[0].image_paths(root)[1]
    image.write_bytes(image.read_bytes() + b"\0")
    assert dataset_digest(root, pairs) != before


# ----------------------------------------------------------------------------- schedule, sampling, metric
def rates(total_steps, warmup_steps, kind, steps):
    """The multipliers of the learning rate after each of ``steps`` optimiser steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_schedule(optimizer, total_steps, warmup_steps, kind)
    return [scheduler.lr_lambdas[0](s) for s in steps]


def test_warmup_is_linear_from_zero_then_constant():
    assert rates(100, 2.5, "constant", (0, 1, 2, 3, 99)) == [0.0, 0.4, 0.8, 1.0, 1.0]


def test_cosine_schedule_decays_to_zero_after_warmup():
    assert rates(110, 10, "cosine", (10,)) == [1.0]
    assert rates(110, 10, "cosine", (60, 110)) == [pytest.approx(0.5), pytest.approx(0.0)]


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_transformers_schedules_compute_the_warmup_schedule_with_a_float_warmup(kind):
    """The schedule rscc used before it took transformers': linear warm-up over a float number of
    steps, then 1 or 0.5 * (1 + cos(pi * progress)); the values agree exactly."""
    import math

    total, warmup = 37, 0.025 * 37  # train.warmup x total steps: not a whole number of steps

    def expected(step):
        if step < warmup:
            return step / max(1.0, warmup)
        if kind == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1.0, total - warmup))))

    steps = list(range(total + 1))
    assert rates(total, warmup, kind, steps) == [expected(s) for s in steps]
    assert rates(total, 5.5, kind, [0, 1, 5, 6]) == [0.0, 1 / 5.5, 5 / 5.5, 1.0 if kind == "constant"
                                                     else 0.5 * (1.0 + math.cos(math.pi * 0.5 / 31.5))]


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="train.schedule 'linear'"):
        rates(10, 1.0, "linear", [0])


def test_epoch_order_depends_only_on_seed_and_epoch_and_skip_drops_consumed_batches():
    batches = EpochBatches(range(50), batch_size=8, seed=42)
    batches.start(epoch=3)
    full = list(batches)
    batches.start(epoch=3, skip=2)
    assert list(batches) == full[2:]
    batches.start(epoch=4)
    assert list(batches) != full
    assert sorted(i for b in full for i in b) == list(range(50)) and len(full) == 7


def test_two_ranks_together_take_the_single_process_batch():
    single = EpochBatches(range(48), batch_size=8, seed=1)
    ranks = [EpochBatches(range(48), batch_size=8, seed=1, rank=r, world=2) for r in (0, 1)]
    for sampler in (single, *ranks):
        sampler.start(epoch=2)
    per_rank = [list(r) for r in ranks]
    assert [sorted(a + b) for a, b in zip(*per_rank)] == [sorted(b) for b in single]


def test_text_to_pair_hit_rate_counts_self_and_no_change_pairs():
    vis = torch.eye(3)
    text = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])  # query 1 finds pair 2 first
    labels = torch.tensor([5, -1, -1])
    assert text_to_pair_hit_rate(vis, text, labels, k=1) == pytest.approx(100.0)
    assert text_to_pair_hit_rate(vis, text, torch.tensor([5, 6, 7]), k=1) == pytest.approx(200 / 3)


@pytest.mark.parametrize("criterion", ["retrieval", "cider"])
def test_best_checkpoint_can_be_selected_by_a_validation_metric(cache, tmp_path, criterion):
    summary = trainer.train(small_config(f"train.select_best={criterion}", "train.max_steps=2"), tmp_path / "run",
                            progress=False)
    rows = [r for r in log_rows(tmp_path / "run") if r["split"] == "val"]
    assert summary["best_step"] == 2
    assert rows[0]["metric"] == criterion and 0.0 <= float(rows[0]["score"]) <= (100.0 if criterion == "retrieval" else 1000.0)
