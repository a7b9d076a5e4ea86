"""Faults lose nothing: a training killed with SIGKILL, a loss that is not finite, a disk that fills up
while a checkpoint is written, and `make reproduce` restarted over runs in any state.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_helpers import REPO, SMALL, assert_one_line_error, cli, train_argv, train_small_run

from rscc.cli import main
from rscc.errors import RsccError


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """(40 synthetic pairs of 64 px, a private RSCC_CACHE, a 3-step run trained on them)."""
    return train_small_run(tmp_path_factory)


# ============================================================================ faults: a training killed with SIGKILL
# The model of SMALL (reliability_helpers): 40 synthetic pairs of 64 px, 9 steps an epoch, last/ every 3 steps, 12 steps.

# Runs `rscc train` and SIGKILLs its own process at the moment named by RSCC_KILL_AT:
#   step:N      inside the N-th optimiser step (parameters updated in memory, nothing written)
#   swap:N      during the N-th write of last/: the new copy is complete in its temporary folder,
#               nothing has been renamed yet
#   between:N   during the N-th write of last/, between `last -> .last.old` and `tmp -> last`
DRIVER = '''
import os, signal, sys
from pathlib import Path
import torch

kind, n = os.environ["RSCC_KILL_AT"].split(":")
n, calls = int(n), {"step": 0, "write": 0}

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":
    real_step = torch.optim.AdamW.step
    def step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["step"] += 1
        if calls["step"] == n:
            die()
        return result
    torch.optim.AdamW.step = step
else:
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        names, writing = (Path(src).name, Path(dst).name), calls["write"] + 1
        if kind == "swap" and names == ("last", ".last.old") and writing == n:
            die()  # the new copy is complete in .last.tmp-PID; nothing renamed yet
        if names[0].startswith(".last.tmp-") and names[1] == "last":
            if kind == "between" and writing == n:
                die()  # last/ is now .last.old; the new copy is not in place yet
            calls["write"] += 1
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace

from rscc.cli import main
sys.exit(main(sys.argv[1:]))
'''



@pytest.fixture(scope="module")
def kill_setup(small_data, tmp_path_factory):
    """(environment, dataset, driver, the uninterrupted run's final weights)."""
    from safetensors.torch import load_file

    from rscc.config import load_preset
    from rscc.train import train

    data, cache, _ = small_data
    base = tmp_path_factory.mktemp("sigkill")
    env = {**os.environ, "RSCC_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCC_CACHE", str(cache))
        train(load_preset("cpu-tiny", SMALL + [f"data.root={data}"]), base / "reference", progress=False)
    return env, data, driver, load_file(str(base / "reference" / "last" / "weights.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("kill_at, left_behind", [
    ("step:5", ["last"]),  # mid-step, mid-epoch: last/ of step 3 stays
    ("swap:2", [".last.tmp-*", "last"]),  # writing last/ of step 6: the new copy complete, not yet in place
    ("between:2", [".last.old", ".last.tmp-*"]),  # the old copy moved aside, the new one not yet in place
])
def test_a_training_killed_by_sigkill_keeps_its_last_checkpoint_and_resumes_to_identical_weights(
        kill_setup, tmp_path, monkeypatch, kill_at, left_behind):
    from safetensors.torch import load_file

    from rscc.runs import checkpoint_dir
    from rscc.train import read_state

    env, data, driver, expected = kill_setup
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(driver), *train_argv(data, out)], env={**env, "RSCC_KILL_AT": kill_at},
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    found = sorted(p.name for p in out.glob("*last*"))
    assert [re.sub(r"-\d+$", "-*", name) for name in found] == left_behind  # killed at the moment named
    last = checkpoint_dir(out, "last")
    assert last is not None and read_state(last)["step"] == 3
    load_file(str(last / "weights.safetensors"))  # loadable

    monkeypatch.setenv("RSCC_CACHE", env["RSCC_CACHE"])
    assert main(train_argv(data, out, "--resume")) == 0
    got = load_file(str(out / "last" / "weights.safetensors"))
    assert read_state(out / "last")["step"] == 12
    assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert not list(out.glob(".last.*")) and not list(out.glob(".best.*"))  # no temporary copy left behind


# ============================================================================ faults: a loss that is not finite
def test_an_infinite_loss_stops_with_the_step_number_and_keeps_the_last_good_checkpoint(small_data, tmp_path,
                                                                                         monkeypatch):
    import rscc.losses
    import rscc.train as trainer
    from rscc.config import load_preset

    data, cache, _ = small_data
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    real, calls = rscc.losses.caption_loss, {"n": 0}

    def overflowing(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("inf") if calls["n"] == 4 else loss

    monkeypatch.setattr(rscc.losses, "caption_loss", overflowing)
    with pytest.raises(RsccError, match=r"step 4: the loss is not finite \(loss inf") as error:
        trainer.train(load_preset("cpu-tiny", SMALL + [f"data.root={data}"]), tmp_path / "run", progress=False)
    assert f"the last good checkpoint is {tmp_path / 'run' / 'last'} (step 3)" in str(error.value)
    assert trainer.read_state(tmp_path / "run" / "last")["step"] == 3


# ============================================================================ faults: `make reproduce` restarted
@pytest.fixture
def study(tmp_path, monkeypatch):
    """The smoke profile in a private runs folder, with a trainer and an evaluator that only write
    the files they would write, counting their calls."""
    import rscc.evaluate
    import rscc.training.loop
    from rscc.experiments.profiles import get_profile

    calls = {"train": [], "evaluate": 0}

    def fake_train(config, out_dir, resume=False, progress=True, **kwargs):
        out_dir = Path(out_dir)
        calls["train"].append(resume)
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = type(config).from_dict(config.to_dict())
        saved.model.vocab_size = 50  # filled in by the real trainer
        saved.save(out_dir / "config.yaml")
        for name in ("last", "best"):
            (out_dir / name).mkdir(exist_ok=True)
            (out_dir / name / "weights.safetensors").write_bytes(b"weights")
            (out_dir / name / "state.pt").write_bytes(b"state")
        return {"steps": 1}

    def fake_evaluate(run_dir, out_dir=None, **kwargs):
        calls["evaluate"] += 1
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        metrics = {"split": "test", "captioning": {}}
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
        (Path(out_dir) / "per_pair.jsonl").write_text('{"id": "p0", "changed": true, "CIDEr-D": 10.0}\n')
        return metrics

    monkeypatch.setattr(rscc.training.loop, "train", fake_train)
    monkeypatch.setattr(rscc.evaluate, "evaluate_run", fake_evaluate)
    return get_profile("smoke", runs_dir=tmp_path / "runs"), calls


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_a_complete_run_of_the_same_configuration_is_reused_without_training(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    first = train_and_evaluate(profile, "run", meteor=False)
    again = train_and_evaluate(profile, "run", meteor=False)
    assert calls == {"train": [False], "evaluate": 1}
    assert again == first and "config_sha256" in again


def test_a_change_of_threads_or_device_alone_does_not_make_a_run_stale(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    train_and_evaluate(profile, "run", ["train.num_threads=2", "train.device=cpu", "data.num_workers=1"], meteor=False)
    assert calls == {"train": [False], "evaluate": 1}


def test_a_run_of_another_configuration_trains_beside_the_finished_one_and_both_are_reused(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    first = train_and_evaluate(profile, "run", meteor=False)
    other = train_and_evaluate(profile, "run", ["loss.theta=0.5"], meteor=False)
    assert calls == {"train": [False, False], "evaluate": 2}
    assert first["run_dir"] == str(profile.run_dir("run")) and other["run_dir"] != first["run_dir"]
    assert "loss.theta=0.5" not in (profile.run_dir("run") / "config.yaml").read_text()  # untouched
    assert "loss.theta=0.5" in (Path(other["run_dir"]) / "config.yaml").read_text()
    assert Path(other["run_dir"]).name.startswith("run@")
    train_and_evaluate(profile, "run", meteor=False), train_and_evaluate(profile, "run", ["loss.theta=0.5"], meteor=False)
    assert calls == {"train": [False, False], "evaluate": 2}  # both reused


@pytest.mark.parametrize("damage", ["missing", "truncated", "not an object", "no digest", "another digest"])
def test_a_run_whose_metrics_are_missing_or_corrupt_is_resumed_and_evaluated_again(study, damage):
    from rscc.experiments.study import metrics_path, train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    path = metrics_path(profile.run_dir("run"))
    text = path.read_text()
    metrics = json.loads(text)
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "not an object":
        path.write_text("[]")
    elif damage == "no digest":
        path.write_text(json.dumps({k: v for k, v in metrics.items() if k != "config_sha256"}))
    else:
        path.write_text(json.dumps({**metrics, "config_sha256": "0" * 64}))
    train_and_evaluate(profile, "run", meteor=False)
    assert calls == {"train": [False, True], "evaluate": 2}  # resumed (a finished run: no step left), re-evaluated
    assert json.loads(path.read_text())["config_sha256"] == metrics["config_sha256"]


def test_metrics_older_than_the_weights_they_evaluated_are_redone(study):
    from rscc.experiments.study import is_complete, metrics_path, run_config, train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    run_dir = profile.run_dir("run")
    assert is_complete(run_dir, run_config(profile))
    _age(metrics_path(run_dir), 60)  # weights rewritten after the evaluation
    assert not is_complete(run_dir, run_config(profile))
    train_and_evaluate(profile, "run", meteor=False)
    assert calls == {"train": [False, True], "evaluate": 2}


def test_a_run_killed_before_its_first_checkpoint_is_trained_from_scratch(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    run_dir = profile.run_dir("run")
    train_and_evaluate(profile, "run", meteor=False)
    for name in ("last", "best"):
        shutil.rmtree(run_dir / name)
    (run_dir / "eval" / "metrics.json").unlink()
    train_and_evaluate(profile, "run", meteor=False)
    assert calls["train"] == [False, False]


def test_a_disk_that_fills_up_while_writing_a_checkpoint_keeps_the_previous_one(small_data, tmp_path, monkeypatch,
                                                                                capsys):
    import errno

    import rscc.train as trainer

    data, cache, _ = small_data
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    real_save, calls = torch.save, {"n": 0}

    def filling_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the state of the second last/ (step 6)
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_save)
    status, err = cli(train_argv(data, tmp_path / "run"), capsys)
    assert_one_line_error(status, err, "No space left on device", str(tmp_path / "run" / ".last.tmp-"))
    assert trainer.read_state(tmp_path / "run" / "last")["step"] == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if "last" in p.name) == ["last"]  # no partial copy
