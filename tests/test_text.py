"""The one no-change rule and the `tokens` normalisation (rscc.text), used by reader, checker, metrics."""
from rscc.data import check, levircc
from rscc.metrics import captioning
from rscc.text import NO_CHANGE_SENTENCES, is_no_change, normalise_tokens


def test_the_five_stock_sentences_in_any_order_are_no_change():
    assert is_no_change(reversed(NO_CHANGE_SENTENCES))


def test_raw_forms_of_the_stock_sentences_are_no_change():
    assert is_no_change([f" {s.capitalize()} ." for s in NO_CHANGE_SENTENCES])


def test_four_stock_sentences_and_a_repeat_are_not_no_change():
    assert not is_no_change(list(NO_CHANGE_SENTENCES[:4]) + [NO_CHANGE_SENTENCES[0]])


def test_a_stock_sentence_among_change_captions_is_not_no_change():
    assert not is_no_change(["a road is built"] * 4 + [NO_CHANGE_SENTENCES[0]])


def test_normalise_tokens_keeps_hyphenated_words():
    assert normalise_tokens("A T-shaped road is built, at the lower-right.") == "a t-shaped road is built at the lower-right"


def test_reader_checker_and_metrics_share_one_definition():
    assert levircc.is_no_change is captioning.is_no_change is check.is_no_change is is_no_change
    assert levircc.NO_CHANGE_SENTENCES is captioning.NO_CHANGE_CAPTIONS is NO_CHANGE_SENTENCES
