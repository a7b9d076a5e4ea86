"""`rscc evaluate`: predictions and metrics files of a run on a split."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from rscc.data.synth import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synth"), 24, size=64, seed=0, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_set, make_tiny_run):
    """A random cpu-tiny-like model (backbone included) with the synthetic set's vocabulary."""
    from rscc.data.levircc import Vocabulary, load_pairs

    vocab = Vocabulary.build(load_pairs(tiny_set), rule="train")
    return make_tiny_run(tmp_path_factory.mktemp("run"), vocab, end_boost=10,
                         overrides=[f"data.root={tiny_set}", "loss.similarity_source=string"])


@pytest.fixture(scope="module")
def evaluated(tiny_run):
    from rscc.cli import main

    status = main(["evaluate", str(tiny_run), "--split", "test", "--no-meteor", "--no-progress", "--device", "cpu"])
    out = tiny_run / "eval-test"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return status, rows, json.loads((out / "metrics.json").read_text())


def test_evaluate_exits_zero_and_writes_a_prediction_per_test_pair(evaluated, tiny_set):
    from rscc.data.levircc import load_pairs

    status, rows, _ = evaluated
    test_pairs = [p for p in load_pairs(tiny_set) if p.split == "test"]
    assert status == 0
    assert [r["id"] for r in rows] == [p.filename.removesuffix(".png") for p in test_pairs]
    assert all(set(r) == {"id", "prediction", "references", "changed"} for r in rows)
    assert [r["references"] for r in rows] == [p.raws for p in test_pairs]
    assert [r["changed"] for r in rows] == [p.changed for p in test_pairs]


def test_predictions_are_the_greedy_captions_of_the_pairs(evaluated, tiny_run, tiny_set):
    from rscc.data.levircc import load_pair_images, load_pairs
    from rscc.generate import caption_pairs
    from rscc.runs import load_run

    _, rows, _ = evaluated
    model, _, vocab = load_run(tiny_run)
    t = model.backbone.transform
    images = [load_pair_images(p, tiny_set) for p in load_pairs(tiny_set) if p.split == "test"]
    expected = caption_pairs(model, vocab, torch.stack([t(a) for a, _ in images]), torch.stack([t(b) for _, b in images]))
    assert [r["prediction"] for r in rows] == expected


def test_metrics_hold_both_protocols_and_both_floors_on_all_and_changed_pairs(evaluated):
    _, rows, metrics = evaluated
    changed = sum(r["changed"] for r in rows)
    for system in ("model", "always_no_change", "change_flag_and_fixed_sentence"):
        for protocol in ("tokens", "raw"):
            result = metrics["captioning"][system][protocol]
            assert result["protocol"] == protocol
            assert (result["all"]["n"], result["changed"]["n"]) == (len(rows), changed)
            assert {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"} <= set(result["all"])


def test_the_always_no_change_floor_answers_the_stock_sentence(evaluated):
    from rscc.commands.score import score_rows
    from rscc.metrics.captioning import NO_CHANGE_SENTENCE

    _, rows, metrics = evaluated
    floor_rows = [dict(r, prediction=NO_CHANGE_SENTENCE) for r in rows]
    rescored = score_rows(floor_rows, protocol="raw", meteor=False, spice=False)
    assert metrics["captioning"]["always_no_change"]["raw"]["all"] == rescored["all"]


def test_rscc_score_on_the_predictions_file_reproduces_the_models_scores(evaluated, tiny_run):
    from rscc.commands.score import read_predictions, score_rows

    _, _, metrics = evaluated
    rows = read_predictions(tiny_run / "eval-test" / "predictions.jsonl")
    for protocol in ("tokens", "raw"):
        rescored = score_rows(rows, protocol=protocol, meteor=False, spice=False)
        assert metrics["captioning"]["model"][protocol]["changed"] == rescored["changed"]


def test_metrics_hold_both_retrieval_protocols_on_all_and_changed_pairs(evaluated):
    _, rows, metrics = evaluated
    changed = sum(r["changed"] for r in rows)
    authors, cross_modal = metrics["retrieval"]["authors"], metrics["retrieval"]["cross_modal"]
    assert (authors["all"]["n_queries"], authors["changed"]["n_queries"]) == (len(rows), changed)
    assert {"P@5", "R@5", "MRR@10"} <= set(authors["all"])
    assert cross_modal["all"]["text_to_pair"]["n_queries"] == 5 * len(rows)
    assert cross_modal["changed"]["pair_to_text"]["n_queries"] == changed


def test_beam_search_evaluation_goes_to_its_own_folder(tiny_run):
    from rscc.evaluate import evaluate_run

    metrics = evaluate_run(tiny_run, split="val", beam=2, meteor=False, retrieval=False, progress=False,
                           device="cpu")
    assert metrics["out_dir"] == str(tiny_run / "eval-val-beam2")
    assert metrics["decoding"]["beam"] == 2
    assert "retrieval" not in json.loads((tiny_run / "eval-val-beam2" / "metrics.json").read_text())


def test_evaluating_a_missing_split_names_the_splits_present(tiny_run, tiny_set, tmp_path):
    from rscc.errors import DatasetError
    from rscc.evaluate import evaluate_run

    data = json.loads((tiny_set / "LevirCCcaptions.json").read_text())
    data["images"] = [r for r in data["images"] if r["split"] == "train"]
    (tmp_path / "LevirCCcaptions.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="splits present: train"):
        evaluate_run(tiny_run, data=tmp_path, split="test", meteor=False, progress=False, device="cpu")


def test_per_pair_scores_average_to_the_corpus_cider_and_hit_rate(evaluated, tiny_run):
    _, rows, metrics = evaluated
    per_pair = [json.loads(line) for line in (tiny_run / "eval-test" / "per_pair.jsonl").read_text().splitlines()]
    assert [r["id"] for r in per_pair] == [r["id"] for r in rows]
    changed = [r for r in per_pair if r["changed"]]
    assert all(r["CIDEr-D changed"] is None and r["text→pair hit@10 changed"] is None
               for r in per_pair if not r["changed"])
    tokens = metrics["captioning"]["model"]["tokens"]
    cross = metrics["retrieval"]["cross_modal"]
    assert sum(r["CIDEr-D"] for r in per_pair) / len(per_pair) == pytest.approx(tokens["all"]["CIDEr-D"], abs=1e-6)
    assert sum(r["CIDEr-D changed"] for r in changed) / len(changed) == pytest.approx(tokens["changed"]["CIDEr-D"], abs=1e-6)
    assert sum(r["text→pair hit@10"] for r in per_pair) / len(per_pair) == pytest.approx(
        cross["all"]["text_to_pair"]["R@10"], abs=1e-4)
    assert sum(r["text→pair hit@10 changed"] for r in changed) / len(changed) == pytest.approx(
        cross["changed"]["text_to_pair"]["R@10"], abs=1e-4)


def test_per_pair_hits_average_to_cross_modal_r10_on_a_gallery_larger_than_ten():
    from rscc.data.levircc import Pair
    from rscc.evaluate import per_pair_scores
    from rscc.metrics.retrieval import caption_duplicates, cross_modal_retrieval

    words = ["a road is built", "two houses appear", "the scene is the same as before", "trees are removed"]
    pairs = [Pair(i, "test", "test", f"p{i}.png", i % 4 != 2, [w.split() for w in [words[(i + k) % 4] + f" {i}" if k else words[i % 4] for k in range(5)]],
                  [words[i % 4] if k == 0 else words[(i + k) % 4] + f" {i}" for k in range(5)]) for i in range(40)]
    generator = torch.Generator().manual_seed(0)
    vis_emb, text_emb = torch.randn(40, 8, generator=generator), torch.randn(200, 8, generator=generator)
    text_emb[::5] = vis_emb + 0.3 * torch.randn(40, 8, generator=generator)  # first captions near their pair
    rows = per_pair_scores(pairs, ["a road is built"] * 40, vis_emb, text_emb)
    text_to_pair = torch.arange(40).repeat_interleave(5)
    expected = cross_modal_retrieval(vis_emb, text_emb, text_to_pair,
                                     duplicates=caption_duplicates([s for p in pairs for s in p.sentences], text_to_pair))
    hits = [r["text→pair hit@10"] for r in rows]
    assert 0 < sum(hits) / 40 < 100
    assert sum(hits) / 40 == pytest.approx(expected["text_to_pair"]["R@10"], abs=1e-4)


def test_evaluation_reads_the_trainers_feature_cache_of_a_frozen_backbone(tiny_run, tiny_set, tmp_path, monkeypatch):
    """A frozen backbone's test features come from the cache the trainer wrote (the backbone does not
    run again), and they give the pair embeddings the images give, up to the cache's float16."""
    import torch.nn.functional as F

    from rscc.data.levircc import SPLITS, load_pairs
    from rscc.evaluate import cached_features, evaluate_run, run_model
    from rscc.feature_cache import backbone_label, ensure_feature_cache, weights_source
    from rscc.runs import load_run
    from rscc.training.setup import FEATURE_DTYPE

    monkeypatch.setenv("RSCC_CACHE", str(tmp_path / "cache"))
    model, config, vocab = load_run(tiny_run)
    pairs = load_pairs(tiny_set)
    assert cached_features(model, config, tiny_set, pairs) is None  # no training wrote one yet
    splits = {s: ps for s in SPLITS if (ps := [p for p in pairs if p.split == s])}
    ensure_feature_cache(model, backbone_label(config.model), weights_source(config.model, config.train.seed),
                         tiny_set, splits, device=torch.device("cpu"), dtype=FEATURE_DTYPE, progress=False)
    features = cached_features(model, config, tiny_set, pairs)
    assert features is not None
    test = splits["test"]
    from_images = run_model(model, vocab, test, tiny_set, progress=False)
    from_cache = run_model(model, vocab, test, tiny_set, progress=False, features=features, split="test")
    assert F.cosine_similarity(from_images["vis_emb"], from_cache["vis_emb"]).min() > 0.999
    assert torch.equal(from_images["text_emb"], from_cache["text_emb"])
    metrics = evaluate_run(tiny_run, split="test", out_dir=tmp_path / "eval", meteor=False, progress=False, device="cpu")
    assert metrics["backbone_features"] == f"feature cache {features.path}"
