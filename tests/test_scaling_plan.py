"""Notebook 08's plan: every training size with every seed, each the sweeps' none-mode training on
a synthetic set of that many pairs."""
import dataclasses
import hashlib
import json

import pytest

from rscc.experiments.profiles import get_profile
from rscc.experiments.study import ablation_plan, config_digest, run_config, scaling_plan


@pytest.fixture
def smoke(tmp_path):
    return dataclasses.replace(get_profile("smoke", runs_dir=tmp_path / "runs"), seeds=[1, 2, 3])


def test_every_size_is_trained_with_every_seed_largest_first(smoke):
    plan = scaling_plan(smoke, sizes=[250, 1000, 500])
    assert [(e["pairs"], e["seed"]) for e in plan] == [(n, s) for n in (1000, 500, 250) for s in (1, 2, 3)]
    assert plan[0]["name"] == "08_scaling/pairs1000-seed1"


def test_names_are_unique(smoke):
    plan = scaling_plan(smoke, sizes=[40, 80, 160])
    assert len({e["name"] for e in plan}) == len(plan) == 9


def test_each_training_uses_its_size_and_seed_without_false_negative_handling(smoke):
    profile = dataclasses.replace(smoke, sweep_overrides=["data.synth_pairs=999", "train.epochs=2"])
    for entry in scaling_plan(profile, sizes=[40, 80]):
        assert f"data.synth_pairs={entry['pairs']}" in entry["overrides"]
        config = run_config(profile, entry["overrides"])
        assert config.data.synth_pairs == entry["pairs"]  # after the sweeps' own size, so it wins
        assert config.train.seed == entry["seed"]
        assert config.train.epochs == 2  # the same epochs for every size
        assert config.loss.fn_mode == "none"


def test_the_profile_sizes_are_the_default(smoke):
    assert sorted({e["pairs"] for e in scaling_plan(smoke)}) == sorted(smoke.scaling_sizes) == [40, 80]
    assert sorted(get_profile("quick").scaling_sizes) == get_profile("quick").scaling_sizes


def test_the_size_of_the_sweeps_set_is_notebook_04s_none_run(smoke):
    quick = get_profile("quick", runs_dir=smoke.runs_dir)
    none = {e["seed"]: config_digest(run_config(quick, e["overrides"])) for e in ablation_plan(quick) if e["fn_mode"] == "none"}
    for entry in scaling_plan(quick, sizes=[1000]):  # the same configuration, so run_plan reuses those runs
        assert config_digest(run_config(quick, entry["overrides"])) == none[entry["seed"]]


@pytest.mark.slow
def test_evaluate_on_scores_a_run_on_another_sets_test_split_once(tmp_path):
    from rscc.evaluate import data_root
    from rscc.experiments.study import evaluate_on, train_and_evaluate

    smoke = get_profile("smoke", runs_dir=tmp_path / "runs")
    small, large = scaling_plan(smoke, sizes=[24])[0], scaling_plan(smoke, sizes=[40])[0]
    for entry in (small, large):
        train_and_evaluate(smoke, entry["name"], entry["overrides"] + ["train.max_steps=2"], meteor=False, progress=False)
    root = data_root(run_config(smoke, large["overrides"]), progress=False)
    folder, own = evaluate_on(smoke, large["name"], root)
    assert folder == smoke.run_dir(large["name"])  # its own evaluation was of that split
    folder, metrics = evaluate_on(smoke, small["name"], root)
    assert folder == smoke.run_dir(small["name"], "test-of", root.name)
    assert (folder / "eval" / "per_pair.jsonl").is_file()
    assert metrics["pairs"] == own["pairs"] == 8 and metrics["data"] == own["data"]
    captions = (root / "LevirCCcaptions.json").read_bytes()
    assert json.loads((folder / "eval" / "metrics.json").read_text())["data_sha256"] == hashlib.sha256(captions).hexdigest()
    written = (folder / "eval" / "metrics.json").stat().st_mtime
    assert evaluate_on(smoke, small["name"], root)[1]["pairs"] == 8
    assert (folder / "eval" / "metrics.json").stat().st_mtime == written  # reused, not evaluated again
