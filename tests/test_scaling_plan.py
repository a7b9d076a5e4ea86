"""Notebook 08's plan: every training size with every seed, each the sweeps' none-mode training on
a synthetic set of that many pairs."""
import dataclasses

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
