"""Notebook 03's joint-training study: the λ plan (every λ with every seed, trained like the
ablation, the preset's λ shared with notebook 04) and what λ = 0 trains."""
import dataclasses
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rscc.experiments.profiles import SMOKE_MODEL, get_profile
from rscc.experiments.study import ablation_plan, config_digest, lambda_plan, locate_runs, run_config


@pytest.fixture
def smoke(tmp_path):
    return get_profile("smoke", runs_dir=tmp_path / "runs")


def test_every_lambda_is_trained_with_every_seed_seeds_inner(smoke):
    profile = dataclasses.replace(smoke, lambdas=[0.0, 0.5, 2.0], seeds=[1, 2, 3])
    plan = lambda_plan(profile)
    assert [(e["lam"], e["seed"]) for e in plan] == [(lam, s) for lam in (0.0, 0.5, 2.0) for s in (1, 2, 3)]
    assert [e["name"] for e in plan[:4]] == ["03_lambda/lam0-seed1", "03_lambda/lam0-seed2", "03_lambda/lam0-seed3",
                                              "03_lambda/lam0.5-seed1"]
    assert len({e["name"] for e in plan}) == len(plan) == 9


def test_each_training_is_the_ablations_with_fna_at_its_first_theta_and_its_own_lambda(smoke):
    profile = dataclasses.replace(smoke, lambdas=[0.0, 2.0], thetas=[0.7, 0.9],
                                  ablation_overrides=["loss.symmetric=true", "loss.learnable_temperature=true"])
    for entry in lambda_plan(profile):
        n, m = len(profile.sweep_overrides), len(profile.ablation_overrides)
        assert entry["overrides"][:n] == profile.sweep_overrides
        assert entry["overrides"][n:n + m] == profile.ablation_overrides
        config = run_config(profile, entry["overrides"])
        assert (config.loss.lam, config.train.seed) == (entry["lam"], entry["seed"])
        assert (config.loss.fn_mode, config.loss.theta) == ("fna", 0.7)
        assert (config.loss.symmetric, config.loss.learnable_temperature) == (True, True)


def test_the_presets_lambda_is_the_same_configuration_as_notebook_04s_fna_run(smoke):
    fna = {e["seed"]: e for e in ablation_plan(smoke) if e["fn_mode"] == "fna"}
    preset_lam = run_config(smoke, []).loss.lam
    shared = [e for e in lambda_plan(smoke) if e["lam"] == preset_lam]
    assert [e["seed"] for e in shared] == smoke.seeds
    for entry in shared:
        assert config_digest(run_config(smoke, entry["overrides"])) == \
            config_digest(run_config(smoke, fna[entry["seed"]]["overrides"]))
    others = [e for e in lambda_plan(smoke) if e["lam"] != preset_lam]
    digests = {config_digest(run_config(smoke, e["overrides"])) for e in ablation_plan(smoke)}
    assert others and all(config_digest(run_config(smoke, e["overrides"])) not in digests for e in others)


def _fake_complete_run(profile, name, overrides):
    """A run folder that study.is_complete accepts for ``overrides`` (no real training)."""
    run_dir = profile.run_dir(name)
    config = run_config(profile, overrides)
    (run_dir / "last").mkdir(parents=True)
    (run_dir / "last" / "weights.safetensors").write_bytes(b"")
    config.save(run_dir / "config.yaml")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "per_pair.jsonl").write_text("")
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"config_sha256": config_digest(config)}))


def test_a_complete_notebook_04_run_is_reused_for_the_presets_lambda_and_nothing_else(smoke):
    fna = next(e for e in ablation_plan(smoke) if e["fn_mode"] == "fna" and e["seed"] == smoke.seeds[0])
    _fake_complete_run(smoke, fna["name"], fna["overrides"])
    located = {(e["lam"], e["seed"]): e["name"] for e in locate_runs(smoke, lambda_plan(smoke))}
    assert located[(0.5, smoke.seeds[0])] == fna["name"]
    assert located[(0.5, smoke.seeds[1])] == f"03_lambda/lam0.5-seed{smoke.seeds[1]}"
    assert located[(0.0, smoke.seeds[0])] == f"03_lambda/lam0-seed{smoke.seeds[0]}"


def test_the_smoke_and_quick_profiles_compare_captioning_only_with_the_joint_loss():
    assert get_profile("smoke").lambdas == [0.0, 0.5]
    quick = get_profile("quick")
    assert quick.lambdas == [0.0, 0.5, 2.0] and len(quick.seeds) >= 3
    assert run_config(quick, []).loss.lam in quick.lambdas  # the preset's λ: notebook 04's runs are reused


# --------------------------------------------------------------------------- what λ = 0 trains
TINY = [*SMOKE_MODEL, "train.batch_size=8", "data.synth_pairs=40", "data.synth_size=64",
        "loss.fn_mode=none", "loss.learnable_temperature=true", "loss.symmetric=true", "train.num_threads=1",
        "train.warmup=0", "train.weight_decay=0", "loss.lam=0"]


@pytest.mark.slow
def test_at_lambda_zero_the_pair_embeddings_pooling_is_never_updated_while_the_captioner_is(tmp_path, monkeypatch):
    """λ = 0 multiplies the contrastive term by zero: its gradient is exactly zero, so (without
    weight decay) AdamW leaves the attention pooling at its initial weights;
    retrieval at λ = 0 is the untrained pooling's on captioning-trained features."""
    from rscc.config import load_preset
    from rscc.train import train

    monkeypatch.setenv("RSCC_CACHE", str(tmp_path / "cache"))
    after = {}
    for steps in (1, 4):
        out = tmp_path / f"steps{steps}"
        train(load_preset("cpu-tiny", TINY + [f"train.max_steps={steps}"]), out, progress=False)
        after[steps] = load_file(str(Path(out) / "last" / "weights.safetensors"))
    pooling = [k for k in after[1] if k.startswith("pooling.")]
    decoder = [k for k in after[1] if k.startswith("decoder.")]
    assert pooling and decoder
    assert all(after[1][k].equal(after[4][k]) for k in pooling)
    assert any(not after[1][k].equal(after[4][k]) for k in decoder)
