"""Captioning metrics, their two reference protocols, the floors and `rscc score`."""
import json
import math

import pytest

from rscc.cli import main
from rscc.commands.score import convert_ccexpert, deduplicate, read_predictions, score_rows
from rscc.errors import RsccError
from rscc.metrics import captioning
from rscc.metrics.captioning import (
    NO_CHANGE_CAPTIONS,
    MeteorProcess,
    floor_predictions,
    most_frequent_caption,
    normalise_tokens,
    score_captions,
)

STOCK_RAW = [f" {c} ." for c in NO_CHANGE_CAPTIONS]
# three made-up pairs in the JSON `raw` form: every changed reference has five words + " ."
REFERENCES = {
    "p0": STOCK_RAW,
    "p1": [" a road is built here .", " some houses appear near trees .", " many trees are cut down .",
           " a new road appears now .", " houses are built on bareland ."],
    "p2": [" two buildings replace the grass .", " some buildings appear on grass .", " the grass becomes two buildings .",
           " buildings are constructed on grassland .", " new buildings appear in fields ."],
}
CHANGED = {"p0": False, "p1": True, "p2": True}
PERFECT = {k: normalise_tokens(refs[0]) for k, refs in REFERENCES.items()}


def test_tokens_normalisation_lower_cases_and_strips_punctuation_but_keeps_hyphenated_words():
    assert normalise_tokens(" A T-shaped road, at the lower-right.") == "a t-shaped road at the lower-right"


def test_tokens_normalisation_leaves_levir_cc_tokens_unchanged(shared):
    images = json.loads((shared / "data/levir-cc-captions/LevirCCcaptions.json").read_text())["images"]
    sentences = [" ".join(s["tokens"]) for image in images for s in image["sentences"]]
    changed = [s for s in sentences if normalise_tokens(s) != s]
    assert changed == []


def test_perfect_prediction_scores_bleu4_100_under_tokens_protocol():
    result = score_captions(PERFECT, REFERENCES, meteor=False, spice=False)
    assert result["protocol"] == "tokens"
    assert result["all"]["BLEU-4"] == pytest.approx(100.0, abs=1e-4)
    assert result["all"]["ROUGE-L"] == pytest.approx(100.0, abs=1e-4)


def test_raw_protocol_lowers_a_perfect_caption_by_the_brevity_penalty_of_the_final_dot():
    result = score_captions(PERFECT, REFERENCES, protocol="raw", meteor=False, spice=False)
    # hypotheses of 4 + 5 + 5 words, closest references of 5 + 6 + 6 tokens ("." included):
    # every n-gram matches, the brevity penalty is exp(1 - 17/14)
    assert result["protocol"] == "raw"
    assert result["all"]["BLEU-4"] == pytest.approx(100 * math.exp(1 - 17 / 14), abs=1e-4)


def test_changed_only_scores_are_those_of_the_changed_pairs_alone():
    predictions = {**PERFECT, "p2": "a road is built"}
    result = score_captions(predictions, REFERENCES, changed=CHANGED, meteor=False, spice=False)
    alone = score_captions({k: predictions[k] for k in ("p1", "p2")}, {k: REFERENCES[k] for k in ("p1", "p2")},
                           meteor=False, spice=False)
    assert result["changed"]["n"] == 2
    assert result["all"]["n"] == 3
    assert result["changed"] == alone["all"]


def test_without_meteor_meteor_and_s_star_m_are_none():
    result = score_captions(PERFECT, REFERENCES, meteor=False, spice=False)
    assert result["all"]["METEOR"] is None
    assert result["all"]["S*m"] is None


@pytest.mark.slow  # Meteor's Java start-up
def test_s_star_m_is_the_mean_of_bleu4_meteor_rouge_and_cider():
    predictions = {**PERFECT, "p2": "some buildings are built"}
    scores = score_captions(predictions, REFERENCES, spice=False)["all"]
    expected = (scores["BLEU-4"] + scores["METEOR"] + scores["ROUGE-L"] + scores["CIDEr-D"]) / 4
    assert 0 < scores["METEOR"] < 100
    assert scores["S*m"] == pytest.approx(expected)


@pytest.mark.slow  # Meteor's Java start-up
def test_a_meteor_process_is_reused_across_calls_and_stopped_when_leaving_with():
    with MeteorProcess() as meteor:
        first = score_captions(PERFECT, REFERENCES, meteor=meteor, spice=False)["all"]["METEOR"]
        second = score_captions(PERFECT, REFERENCES, meteor=meteor, spice=False)["all"]["METEOR"]
        assert meteor._meteor.meteor_p.poll() is None
    assert first == second
    assert meteor._meteor.meteor_p.poll() is not None


def test_spice_is_reported_unavailable_with_its_reason(monkeypatch):
    monkeypatch.setattr(captioning, "spice_unavailable_reason", lambda: "no jars")
    result = score_captions(PERFECT, REFERENCES, meteor=False)
    assert result["spice"] == "unavailable: no jars"
    assert "SPICE" not in result["all"]


def test_an_empty_prediction_scores_zero_instead_of_failing():
    result = score_captions({"p1": ""}, {"p1": REFERENCES["p1"]}, meteor=False, spice=False)
    assert (result["all"]["BLEU-1"], result["all"]["ROUGE-L"], result["all"]["CIDEr-D"]) == (0.0, 0.0, 0.0)


def test_mismatched_ids_raise_a_user_error():
    with pytest.raises(RsccError, match="1 ids lack a prediction"):
        score_captions({"p0": "x", "p1": "y"}, REFERENCES, meteor=False, spice=False)


def test_unknown_protocol_raises_a_user_error():
    with pytest.raises(RsccError, match="unknown reference protocol 'tok'"):
        score_captions(PERFECT, REFERENCES, protocol="tok", meteor=False, spice=False)


# --- floors (METHOD §6.5) ------------------------------------------------------------------

def test_always_no_change_floor_answers_the_stock_sentence_everywhere():
    floors = floor_predictions(REFERENCES, CHANGED, fixed_sentence="a road is built")
    assert set(floors["always_no_change"].values()) == {"the scene is the same as before"}


def test_change_flag_floor_uses_the_most_frequent_changed_training_first_caption():
    first_captions = ["Houses appear.", "a road is built", "houses appear", "a road is built .", "trees"]
    floors = floor_predictions(REFERENCES, CHANGED, train_changed_first_captions=first_captions)
    assert floors["change_flag_and_fixed_sentence"] == {
        "p0": "the scene is the same as before", "p1": "a road is built", "p2": "a road is built"}


def test_most_frequent_caption_breaks_ties_alphabetically():
    assert most_frequent_caption(["b c", "a c", "b c", "a c"]) == "a c"


def test_change_flag_floor_scores_perfectly_on_a_set_where_the_fixed_sentence_is_every_first_reference():
    references = {"p0": STOCK_RAW, "p1": REFERENCES["p1"], "p3": [" a road is built here ."]}
    changed = {"p0": False, "p1": True, "p3": True}
    floors = floor_predictions(references, changed, fixed_sentence="a road is built here")
    # p0's prediction is one of its references too
    result = score_captions(floors["change_flag_and_fixed_sentence"], references, changed=changed,
                            meteor=False, spice=False)
    assert result["all"]["BLEU-4"] == pytest.approx(100.0, abs=1e-4)


def test_always_no_change_floor_on_changed_pairs_earns_only_the_shared_words():
    floors = floor_predictions(REFERENCES, CHANGED, fixed_sentence="x")
    result = score_captions(floors["always_no_change"], REFERENCES, changed=CHANGED, meteor=False, spice=False)
    # 7 + 7 hypothesis words; "is" (p1) and one "the" (p2) are in a reference; no brevity penalty
    assert result["changed"]["BLEU-1"] == pytest.approx(100 * 2 / 14, abs=1e-4)


def test_always_no_change_floor_matches_spec_on_levir_cc_test(shared):
    images = json.loads((shared / "data/levir-cc-captions/LevirCCcaptions.json").read_text())["images"]
    test = [image for image in images if image["split"] == "test"]
    references = {image["imgid"]: [" ".join(s["tokens"]) for s in image["sentences"]] for image in test}
    changed = {image["imgid"]: bool(image["changeflag"]) for image in test}
    floors = floor_predictions(references, changed, fixed_sentence="unused")
    result = score_captions(floors["always_no_change"], references, meteor=False, spice=False)
    # METHOD §7.3: BLEU-4 51.5, CIDEr 101.9
    assert result["all"]["BLEU-4"] == pytest.approx(51.5, abs=0.05)
    assert result["all"]["CIDEr-D"] == pytest.approx(101.9, abs=0.05)


# --- predictions files and `rscc score` ----------------------------------------------------

def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _rows():
    return [{"id": k, "prediction": PERFECT[k], "references": REFERENCES[k], "changed": CHANGED[k]} for k in REFERENCES]


def test_duplicate_ids_keep_the_first_line_and_count_the_others(tmp_path):
    rows = _rows() + [{"id": "p1", "prediction": "another caption", "references": REFERENCES["p1"]}]
    kept, dropped = deduplicate(read_predictions(_write_jsonl(tmp_path / "p.jsonl", rows)))
    assert dropped == 1
    assert [row["prediction"] for row in kept] == [PERFECT["p0"], PERFECT["p1"], PERFECT["p2"]]


def test_bad_json_line_is_named_by_its_number(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(_rows()[0]) + "\n{not json\n")
    with pytest.raises(RsccError, match="line 2: not valid JSON"):
        read_predictions(path)


def test_missing_field_is_named_with_its_line(tmp_path):
    rows = _rows()
    del rows[1]["references"]
    with pytest.raises(RsccError, match="line 2: missing field 'references'"):
        read_predictions(_write_jsonl(tmp_path / "p.jsonl", rows))


def test_changed_flag_on_some_lines_only_is_an_error():
    rows = _rows()
    del rows[0]["changed"]
    with pytest.raises(RsccError, match="'changed' flag is on 2 of 3"):
        score_rows(rows, meteor=False, spice=False)


def test_score_command_prints_json_with_changed_scores(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "p.jsonl", _rows() + _rows()[:1])
    assert main(["score", str(path), "--json", "--no-meteor", "--no-spice"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["duplicates_dropped"] == 1
    assert result["all"]["BLEU-4"] == pytest.approx(100.0, abs=1e-4)
    assert result["changed"]["n"] == 2


def test_score_command_prints_a_table(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "p.jsonl", _rows())
    assert main(["score", str(path), "--protocol", "raw", "--no-meteor", "--no-spice"]) == 0
    out = capsys.readouterr().out
    assert "protocol: raw" in out
    assert "changed" in out


def test_score_command_reports_a_broken_file_as_one_line_with_status_2(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("[1, 2]\n")
    assert main(["score", str(path), "--no-meteor"]) == 2
    assert "line 1: expected a JSON object" in capsys.readouterr().err


# --- conformance with published figures -----------------------------------------------------

CCEXPERT = "data/reference-predictions/ccexpert-7b-levir-cc-test.jsonl"


def test_ccexpert_file_converts_to_1929_test_pairs_964_changed(shared):
    rows, dropped = deduplicate(convert_ccexpert(shared / CCEXPERT))
    assert (len(rows), dropped) == (1929, 7)
    assert sum(row["changed"] for row in rows) == 964


@pytest.mark.slow
def test_ccexpert_predictions_reproduce_the_published_scores(shared):
    rows, _ = deduplicate(convert_ccexpert(shared / CCEXPERT))
    scores = score_rows(rows, protocol="tokens", spice=False)["all"]
    published = {"BLEU-1": 86.65, "BLEU-2": 78.47, "BLEU-3": 71.31, "BLEU-4": 65.48,
                 "METEOR": 41.82, "ROUGE-L": 76.54, "CIDEr-D": 143.28}
    assert {name: round(scores[name], 2) for name in published} == pytest.approx(published, abs=0.05)
