"""The study's plans (notebooks 04, 05), the false-negative count, run reuse and the result tables
(notebook 06). No training: complete runs are written by hand where one is needed."""
import dataclasses
import json

import pandas as pd
import pytest
import torch

from rscc.config import load_preset
from rscc.experiments import tables
from rscc.experiments.profiles import LEVIR_CC_URL, get_profile
from rscc.experiments.readouts import false_negatives_per_batch
from rscc.experiments.reproduce import main as reproduce
from rscc.experiments.study import (
    ablation_plan,
    backbone_plan,
    config_digest,
    dataset_root,
    find_complete_run,
    run_config,
    train_or_reuse,
)


@pytest.fixture
def smoke(tmp_path):
    return get_profile("smoke", runs_dir=tmp_path / "runs")


# ----------------------------------------------------------------------------- plans
def test_ablation_trains_none_once_per_seed_and_fne_fna_at_every_theta(smoke):
    profile = dataclasses.replace(smoke, thetas=[0.6, 0.8, 1.0], seeds=[1, 2])
    plan = ablation_plan(profile)
    assert len(plan) == 2 * (1 + 2 * 3)
    assert len({entry["name"] for entry in plan}) == len(plan)
    none = [entry for entry in plan if entry["fn_mode"] == "none"]
    assert [entry["seed"] for entry in none] == [1, 2]
    assert all(entry["theta"] is None and not any(o.startswith("loss.theta") for o in entry["overrides"]) for entry in none)


def test_ablation_overrides_set_the_mode_theta_and_seed_of_the_training(smoke):
    entry = next(e for e in ablation_plan(smoke) if e["fn_mode"] == "fne")
    config = run_config(smoke, entry["overrides"])
    assert (config.loss.fn_mode, config.loss.theta, config.train.seed) == ("fne", entry["theta"], entry["seed"])


def test_backbone_plan_shrinks_the_paper_presets_and_keeps_the_cpu_sized_ones(smoke):
    plan = {entry["backbone"]: entry for entry in backbone_plan(smoke) if entry["seed"] == smoke.seeds[0]}
    seed = f"train.seed={smoke.seeds[0]}"
    assert plan["cpu-tiny"]["overrides"] == smoke.sweep_overrides + smoke.ablation_overrides + ["loss.fn_mode=none", seed]
    rn50 = run_config(smoke, plan["paper-rn50"]["overrides"], "paper-rn50")
    assert rn50.model.freeze_backbone and rn50.model.pretrained is None
    assert rn50.loss.sentence_model == run_config(smoke).loss.sentence_model
    imagenet = run_config(smoke, plan["mobilenet-v2-imagenet"]["overrides"], "mobilenet-v2-imagenet")
    random = run_config(smoke, plan["mobilenet-v2-imagenet:random"]["overrides"], "mobilenet-v2-imagenet")
    assert imagenet.model.pretrained == "imagenet" and random.model.pretrained is None
    assert imagenet.model.backbone == random.model.backbone
    assert plan["mobilenet-v2-imagenet:random"]["name"] == f"05_backbones/mobilenet-v2-imagenet-random-seed{smoke.seeds[0]}"


def test_backbone_plan_trains_every_backbone_with_every_seed_seeds_outer():
    quick = dataclasses.replace(get_profile("quick"), seeds=[1, 2, 3])
    plan = backbone_plan(quick)
    assert [e["seed"] for e in plan] == [s for s in (1, 2, 3) for _ in quick.backbones]
    assert [e["backbone"] for e in plan[:len(quick.backbones)]] == quick.backbones
    assert len({e["name"] for e in plan}) == len(plan)
    for e in plan:
        assert run_config(quick, e["overrides"], e["preset"]).train.seed == e["seed"]


def test_quick_profile_ablation_none_runs_are_the_diagnosis_runs_of_its_loss_setting():
    from rscc.experiments.study import diagnosis_plan

    quick = get_profile("quick")
    none = {e["seed"]: e for e in ablation_plan(quick) if e["fn_mode"] == "none"}
    chosen = {e["seed"]: e for e in diagnosis_plan(quick, settings=["symmetric+learnable-temperature"])}
    assert sorted(none) == sorted(chosen) == quick.seeds
    for seed in quick.seeds:  # trained once, shared by the two parts of notebook 04
        assert config_digest(run_config(quick, none[seed]["overrides"])) == config_digest(run_config(quick, chosen[seed]["overrides"]))


def test_the_cpu_tiny_backbone_runs_are_the_ablations_none_runs():
    quick = get_profile("quick")
    for own in (e for e in ablation_plan(quick) if e["fn_mode"] == "none"):
        tiny = next(e for e in backbone_plan(quick) if e["preset"] == "cpu-tiny" and e["seed"] == own["seed"])
        assert config_digest(run_config(quick, own["overrides"])) == config_digest(run_config(quick, tiny["overrides"]))


def test_every_sweep_training_takes_the_sweep_overrides_last():
    quick = get_profile("quick")
    swept = load_preset("cpu-tiny", quick.sweep_overrides).train
    for entry in ablation_plan(quick) + backbone_plan(quick):
        train = run_config(quick, entry["overrides"], entry.get("preset")).train
        assert (train.epochs, train.batch_size, train.lr) == (swept.epochs, swept.batch_size, swept.lr)


# ----------------------------------------------------------------------------- false negatives
def test_false_negatives_per_batch_counts_ordered_pairs_of_different_labels_with_identical_captions(smoke):
    from rscc.data.levircc import load_pairs
    from rscc.losses import caption_keys

    profile = dataclasses.replace(smoke, overrides=smoke.overrides + ["loss.similarity_source=string"])
    train = [p for p in load_pairs(dataset_root(profile, progress=False)) if p.split == "train"]
    keys = caption_keys([raw for p in train for raw in p.raws])
    labels = torch.tensor([p.label for p in train]).repeat_interleave(5)
    different = labels[:, None] != labels[None, :]
    expected = float(((keys[:, None] == keys[None, :]) & different).sum())
    # one batch = the whole training set, so every random batch holds the same pairs
    table = false_negatives_per_batch(profile, batch_size=len(labels), batches=2, progress=False)
    assert table["false negatives per batch"].tolist() == [expected] * len(profile.thetas)
    assert table["negatives per batch"].iloc[0] == float(different.sum())


# ----------------------------------------------------------------------------- reuse
def _fake_complete_run(profile, name, config):
    run_dir = profile.run_dir(name)
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "eval").mkdir()
    config.save(run_dir / "config.yaml")
    (run_dir / "best" / "weights.safetensors").write_bytes(b"")
    metrics = {"config_sha256": config_digest(config), "captioning": {}}
    (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "eval" / "per_pair.jsonl").write_text('{"id": "p0", "changed": true, "CIDEr-D": 10.0}\n')
    return metrics


def test_train_or_reuse_returns_a_complete_run_of_the_same_configuration_under_another_name(smoke):
    overrides = ["loss.fn_mode=fne", "loss.theta=0.8"]
    metrics = _fake_complete_run(smoke, "elsewhere/run", run_config(smoke, overrides))
    assert train_or_reuse(smoke, "new-name", overrides) == ("elsewhere/run", metrics)


def test_no_complete_run_is_found_for_another_configuration(smoke):
    _fake_complete_run(smoke, "elsewhere/run", run_config(smoke, ["loss.theta=0.8"]))
    assert find_complete_run(smoke, run_config(smoke, ["loss.theta=0.9"])) is None


# ----------------------------------------------------------------------------- tables
def _metrics(cider: float) -> dict:
    scores = {"BLEU-1": 80.0, "BLEU-4": 50.0, "METEOR": None, "ROUGE-L": 60.0, "CIDEr-D": cider, "S*m": None, "n": 10}
    by_protocol = {p: {"all": scores, "changed": dict(scores, n=5)} for p in ("tokens", "raw")}
    return {"captioning": {s: by_protocol for s in tables.SYSTEMS}}


def test_captioning_table_has_each_run_and_the_floors_once_under_both_protocols_and_subsets():
    table = tables.captioning_table({"a": _metrics(10.0), "b": _metrics(20.0)}, "this run, synthetic data")
    assert len(table) == (2 + 2) * 2 * 2
    assert table.method.value_counts().to_dict() == {name: 4 for name in ["a", "b", *list(tables.SYSTEMS.values())[1:]]}
    assert set(table.source) == {"this run, synthetic data"}


def test_key_metrics_are_read_from_the_tokens_protocol():
    metrics = _metrics(10.0)
    metrics["captioning"]["model"] = dict(metrics["captioning"]["model"], raw={"all": {"CIDEr-D": 99.0}})
    assert tables.key_metrics(metrics)["CIDEr-D"] == 10.0


def test_published_numbers_are_labelled_as_published_and_ours_by_their_data(smoke):
    published = tables.published_captioning()
    assert set(published.source) == {tables.PUBLISHED, tables.LEVIR_FLOORS}
    assert published.set_index("method").loc["RSICRC (reported)", "BLEU-4"] == 59.04
    assert tables.data_label(smoke) == "this run, synthetic data"
    assert tables.data_label(dataclasses.replace(smoke, data="/data/LEVIR-CC")) == "this run, LEVIR-CC"


def test_markdown_rounds_numbers_and_shows_missing_values_as_a_dash(tmp_path):
    table = pd.DataFrame({"method": ["a|b"], "BLEU-4": [59.041], "METEOR": [None]})
    assert tables.to_markdown(table).splitlines() == ["| method | BLEU-4 | METEOR |", "|---|---|---|",
                                                     "| a\\|b | 59.04 | — |"]
    md, csv = tables.write_table(table, tmp_path, "t", title="T")
    assert md.read_text().startswith("## T\n") and pd.read_csv(csv).shape == (1, 3)


def test_weights_label_says_which_weights_a_configuration_would_load(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")
    assert tables.weights_label(load_preset("cpu-tiny").model) == "random init"
    assert tables.weights_label(load_preset("paper-rn50", ["model.pretrained=null"]).model).startswith("random init")
    assert tables.weights_label(load_preset("paper-rn50", [f"model.pretrained={weights}"]).model) == "RemoteCLIP"
    assert tables.weights_label(load_preset("resnet50-imagenet", [f"model.pretrained={weights}"]).model) == "ImageNet"
    assert tables.weights_label(load_preset("paper-rn50", [f"model.pretrained={tmp_path}/no.pt"]).model).startswith("missing file")


# ----------------------------------------------------------------------------- make reproduce PROFILE=paper
def test_paper_profile_without_data_stops_at_once_saying_where_to_download_levir_cc(capsys):
    assert reproduce(["--profile", "paper"]) == 1
    assert LEVIR_CC_URL in capsys.readouterr().err
