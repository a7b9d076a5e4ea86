"""Notebook 04's plans (diagnosis, ablation with its own overrides), the parallel plan runner, and
its table and figure helpers."""
import dataclasses

import pandas as pd
import pytest

from rscc.experiments import tables
from rscc.experiments.profiles import get_profile
from rscc.experiments.study import DIAGNOSIS_SETTINGS, ablation_plan, diagnosis_plan, is_complete, run_config, run_plan


@pytest.fixture
def smoke(tmp_path):
    return get_profile("smoke", runs_dir=tmp_path / "runs")


def test_diagnosis_trains_every_setting_with_every_seed_without_false_negative_handling(smoke):
    plan = diagnosis_plan(dataclasses.replace(smoke, seeds=[1, 2, 3]))
    assert [(e["setting"], e["seed"]) for e in plan] == [(s, seed) for s in DIAGNOSIS_SETTINGS for seed in (1, 2, 3)]
    assert plan[0]["name"] == "04_diagnosis/authors-seed1"
    for entry in plan:
        loss = run_config(smoke, entry["overrides"]).loss
        assert loss.fn_mode == "none"
        assert loss.symmetric == ("symmetric" in entry["setting"])
        assert loss.learnable_temperature == ("learnable-temperature" in entry["setting"])
        assert loss.temperature == 0.01


def test_the_authors_setting_of_the_diagnosis_is_their_loss_as_it_is(smoke):
    entry = diagnosis_plan(smoke, settings=["authors"])[0]
    loss = run_config(smoke, entry["overrides"]).loss
    assert (loss.symmetric, loss.learnable_temperature, loss.temperature) == (False, False, 0.01)


def test_ablation_overrides_come_after_the_sweep_overrides_and_before_mode_and_seed(smoke):
    profile = dataclasses.replace(smoke, ablation_overrides=["loss.learnable_temperature=true", "train.batch_size=4"])
    for entry in ablation_plan(profile):
        n = len(profile.sweep_overrides)
        assert entry["overrides"][n:n + 2] == profile.ablation_overrides
        config = run_config(profile, entry["overrides"])
        assert (config.loss.learnable_temperature, config.train.batch_size) == (True, 4)


def test_the_quick_ablation_has_three_seeds_and_seeds_inner():
    quick = get_profile("quick")
    plan = ablation_plan(quick)
    assert len(quick.seeds) >= 3 and quick.workers == 2
    assert [e["seed"] for e in plan[:3]] == quick.seeds  # two workers start on two different feature caches


@pytest.mark.slow
def test_run_plan_trains_the_missing_runs_two_at_a_time_and_then_reuses_them(smoke):
    plan = [dict(e, overrides=e["overrides"] + ["train.max_steps=2"]) for e in ablation_plan(smoke)[:2]]
    done, located = run_plan(smoke, plan, workers=2, meteor=False, progress=False)
    assert [e["name"] for e in located] == [e["name"] for e in plan]
    for entry in located:
        assert is_complete(smoke.run_dir(entry["name"]), run_config(smoke, entry["overrides"]))
        assert done[entry["name"]]["pairs"] > 0
        assert (smoke.run_dir(entry["name"]) / "eval" / "per_pair.jsonl").is_file()
    weights = {e["name"]: (smoke.run_dir(e["name"]) / "last" / "weights.safetensors").stat().st_mtime for e in located}
    again, _ = run_plan(smoke, plan, workers=2, meteor=False, progress=False)
    assert {n: m["config_sha256"] for n, m in again.items()} == {n: m["config_sha256"] for n, m in done.items()}
    assert {e["name"]: (smoke.run_dir(e["name"]) / "last" / "weights.safetensors").stat().st_mtime
            for e in located} == weights  # reused, not trained again


def test_above_chance_table_says_whether_the_seed_interval_excludes_chance():
    table = pd.DataFrame({"setting": ["a"] * 3 + ["b"] * 3, "text→pair R@10 changed": [20.0, 21.0, 22.0, 10.0, 30.0, 20.0],
                          "chance R@10 changed": [16.0] * 6})
    result = tables.above_chance_table(table, "setting")
    assert result.loc["a", "text→pair R@10 changed"] == 21.0
    assert result.loc["a", "× chance"] == pytest.approx(21 / 16)
    assert bool(result.loc["a", "above chance"]) and not bool(result.loc["b", "above chance"])
    assert result.loc["a", "text→pair R@10 changed low"] == pytest.approx(21 - 4.302653 / 3 ** 0.5, abs=1e-4)


def test_plot_effects_draws_one_panel_per_metric_with_a_row_per_setting():
    from rscc.experiments.plots import plot_effects

    effects = pd.DataFrame([
        {"setting": s, "metric": m, "difference": d, "seeds low": d - 1, "seeds high": d + 1,
         "pairs low": d - 0.5, "pairs high": d + 0.5} for s, d in (("fne", 1.0), ("fna", -2.0)) for m in ("x", "y")])
    fig = plot_effects(effects, "setting", [("x", "X"), ("y", "Y")])
    assert [ax.get_title() for ax in fig.axes] == ["X", "Y"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["fna", "fne"]


def test_a_run_trained_on_another_version_of_its_dataset_is_not_complete(smoke):
    import json

    from rscc.experiments.study import config_digest, data_digest

    config = run_config(smoke, ["loss.fn_mode=fne"])
    run_dir = smoke.run_dir("run")
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "eval").mkdir()
    config.save(run_dir / "config.yaml")
    (run_dir / "best" / "weights.safetensors").write_bytes(b"")
    (run_dir / "eval" / "per_pair.jsonl").write_text('{"id": "p0", "changed": true}\n')
    for data_sha256, complete in ((data_digest(config), True), ("0" * 64, False)):
        metrics = {"config_sha256": config_digest(config), "data_sha256": data_sha256}
        (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics))
        assert is_complete(run_dir, config) == complete


def test_the_study_plan_trains_every_configuration_once_longest_first(smoke, tmp_path, monkeypatch, synthetic_cache):
    """make reproduce's first step: every notebook's trainings in one pool, each configuration once
    (shared runs are not trained twice), the longest first, notebook 08's runs also scored on its
    largest set, the main run with METEOR."""
    from rscc.experiments import study
    from rscc.experiments.tables import MAIN_RUN

    captured = {}

    def fake_run_plan(profile, plan, workers=2, progress=True, **kwargs):
        captured.update(plan=plan, workers=workers)
        return {}, plan

    monkeypatch.setattr(study, "run_plan", fake_run_plan)
    with synthetic_cache(tmp_path / "cache", pairs=smoke.synth_pairs, size=smoke.synth_size):
        study.train_study(smoke, progress=False)
    plan = captured["plan"]
    digests = [study.config_digest(run_config(smoke, e["overrides"], e.get("preset"))) for e in plan]
    assert len(digests) == len(set(digests))
    every = {study.config_digest(run_config(smoke, e["overrides"], e.get("preset"))) for e in study.study_plan(smoke)}
    assert set(digests) == every
    costs = [study.training_cost(run_config(smoke, e["overrides"], e.get("preset"))) for e in plan]
    assert costs == sorted(costs, reverse=True)
    main = next(e for e in plan if e["name"] == MAIN_RUN)
    assert main["evaluate"] == {"meteor": True}
    assert all(e["evaluate"] == {"meteor": False} for e in plan if e is not main)
    scaled = [e for e in plan if e["name"].startswith("08_scaling/")]
    largest = max(smoke.scaling_sizes)
    assert scaled and all(e["score_on"].endswith(f"synthetic-{largest}-{smoke.synth_size}-0") for e in scaled)
    # scored by configuration, whichever notebook's name trains it; nothing else is
    sizes = {study.config_digest(run_config(smoke, e["overrides"])) for e in study.scaling_plan(smoke)}
    assert all(("score_on" in e) == (d in sizes) for e, d in zip(plan, digests))
    # notebook 04's none runs are trained under their own name (05 and 08 reuse them)
    assert any(e["name"] == "04_ablation/none-seed42" for e in plan)
    assert captured["workers"] == smoke.workers


def test_options_that_do_not_change_a_result_are_one_set_for_resuming_and_for_reusing_a_run(smoke):
    """config.RESULT_NEUTRAL: a run saved with another checkpoint frequency, thread count, device or
    log interval has the same digest (it is reused), and a resume may change exactly these."""
    from pathlib import Path

    from rscc.config import RESULT_NEUTRAL
    from rscc.errors import CheckpointError
    from rscc.experiments.study import config_digest
    from rscc.training.preflight import check_resumed_config

    base = run_config(smoke, [])
    changed = run_config(smoke, ["train.checkpoint_every=7", "train.num_threads=3", "train.log_every=2",
                                 "data.num_workers=1", "train.device=cpu"])
    assert {f"{s}.{k}" for s in ("train", "data") for k, v in changed.to_dict()[s].items()
            if base.to_dict()[s][k] != v} == RESULT_NEUTRAL
    assert config_digest(changed) == config_digest(base)
    check_resumed_config(changed, base, Path("run"))  # accepted
    other = run_config(smoke, ["train.lr=0.123"])
    assert config_digest(other) != config_digest(base)
    with pytest.raises(CheckpointError, match="train.lr"):
        check_resumed_config(other, base, Path("run"))
