"""Notebook 09's plan: the ablation's settings at every caption-recurrence level (data.synth_stock_share)."""
import dataclasses
from itertools import permutations

import pytest

from rscc.data.levircc import load_pairs
from rscc.evaluate import data_root
from rscc.experiments.profiles import customise, get_profile
from rscc.experiments.readouts import recurrence_table
from rscc.experiments.study import (
    ablation_plan,
    config_digest,
    recurrence_levels,
    recurrence_overrides,
    recurrence_plan,
    run_config,
)


def test_the_quick_plan_trains_none_fne_fna_at_three_levels_with_three_seeds():
    quick = get_profile("quick")
    plan = recurrence_plan(quick)
    assert len(plan) == 3 * 3 * 3
    assert {(e["stock_share"], e["fn_mode"], e["theta"]) for e in plan} == {
        (s, m, t) for s in (0.0, 0.25, 1.0) for m, t in (("none", None), ("fne", 0.8), ("fna", 0.8))}
    assert {e["seed"] for e in plan} == {42, 43, 44}
    assert len({e["name"] for e in plan}) == len(plan)
    for entry in plan:
        config = run_config(quick, entry["overrides"])
        assert config.data.synth_stock_share == entry["stock_share"]
        assert (config.data.synth_pairs, config.train.batch_size, config.train.epochs) == (500, 16, 2)
        assert (config.loss.symmetric, config.loss.learnable_temperature) == (True, True)  # the ablation's loss
        assert config.loss.fn_mode == entry["fn_mode"] and config.train.seed == entry["seed"]


def test_the_smoke_plans_default_level_is_notebook_04s_ablation_reused():
    smoke = get_profile("smoke")
    ablation = {config_digest(run_config(smoke, e["overrides"])) for e in ablation_plan(smoke)}
    default = [e for e in recurrence_plan(smoke) if e["stock_share"] == 0.25]
    assert len(default) == len(ablation_plan(smoke))
    assert {config_digest(run_config(smoke, e["overrides"])) for e in default} == ablation
    other = [e for e in recurrence_plan(smoke) if e["stock_share"] != 0.25]
    assert {e["stock_share"] for e in other} == {1.0}
    assert not {config_digest(run_config(smoke, e["overrides"])) for e in other} & ablation


def test_on_levir_cc_there_is_one_level_its_own_captions(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "LevirCCcaptions.json").write_text("{}")
    paper = get_profile("paper", data=tmp_path)
    assert recurrence_levels(paper) == [None]
    assert not any("synth_stock_share" in o for e in recurrence_plan(paper) for o in e["overrides"])
    assert {e["name"].split("/")[1] for e in recurrence_plan(paper)} == {"dataset"}


def test_customised_levels_and_pairs_reach_the_plan_and_write_beside():
    quick = get_profile("quick")
    custom = customise(quick, stock_shares=[0, 0.5], pairs=200)
    assert recurrence_levels(custom) == [0.0, 0.5]
    assert run_config(custom, recurrence_overrides(custom, 0.5)).data.synth_pairs == 200  # pairs wins over 500
    assert custom.output_dir is not None and "reruns" in str(custom.output_dir)
    assert customise(quick, stock_shares=[0.0, 0.25, 1.0]).output_dir is None  # the profile's own levels


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The smoke profile on 30 pairs with exact-string false negatives and a batch larger than the
    training pool (so a batch is the whole pool)."""
    monkeypatch.setenv("RSCC_CACHE", str(tmp_path / "cache"))
    smoke = get_profile("smoke")
    return dataclasses.replace(smoke, stock_shares=[0.0, 1.0], overrides=smoke.overrides + [
        "data.synth_pairs=30", "loss.similarity_source=string", "train.batch_size=1000"])


def test_false_negatives_per_batch_of_the_whole_pool_are_its_ordered_false_negative_pairs(tiny):
    table = recurrence_table(tiny, thetas=[1.0], progress=False)
    assert list(table["stock share"]) == [0.0, 1.0]
    for share, counted in zip(table["stock share"], table["false negatives per batch"]):
        config = run_config(tiny, recurrence_overrides(tiny, share) + ["loss.fn_mode=fne"])
        train = [p for p in load_pairs(data_root(config, progress=False)) if p.split == "train"]
        samples = [(p.label, raw.strip().lower()) for p in train for raw in p.raws]
        brute = sum(a[0] != b[0] and a[1] == b[1] for a, b in permutations(samples, 2))
        assert counted == pytest.approx(brute)
    assert table["captions recur (%)"].iloc[1] > table["captions recur (%)"].iloc[0]
