"""The notebooks' result checks fail on empty, incomplete or out-of-range tables."""
import math

import pandas as pd
import pytest

from rscc.experiments.checks import CAPTION_RANGES, check_table, check_values


def _captions():
    return pd.DataFrame({
        "method": ["run", "run", "floor", "floor"], "subset": ["all", "changed"] * 2,
        "BLEU-4": [40.0, 20.0, 50.0, 10.0], "CIDEr-D": [120.0, 80.0, 100.0, 17.0], "METEOR": [None] * 4,
    })


def test_a_complete_table_passes_and_is_returned():
    table = _captions()
    out = check_table(table, "captions", columns=["BLEU-4", "CIDEr-D"], n_rows=4,
                      rows={"subset": ["all", "changed"], ("method", "subset"): [
                          ("run", "all"), ("run", "changed"), ("floor", "all"), ("floor", "changed")]},
                      ranges=CAPTION_RANGES)
    assert out is table


def test_an_empty_table_fails():
    with pytest.raises(AssertionError, match="0 rows"):
        check_table(_captions().iloc[:0], "captions")


def test_a_missing_column_or_row_label_fails():
    with pytest.raises(AssertionError, match=r"missing columns \['ROUGE-L'\]"):
        check_table(_captions(), "captions", columns=["ROUGE-L"])
    with pytest.raises(AssertionError, match="missing \\['test'\\]"):
        check_table(_captions(), "captions", rows={"subset": ["all", "changed", "test"]})


def test_row_labels_may_be_index_levels():
    indexed = _captions().set_index(["method", "subset"])
    check_table(indexed, "captions", rows={"subset": ["all", "changed"]})
    with pytest.raises(AssertionError, match="unexpected"):
        check_table(indexed, "captions", rows={"method": ["run"]})


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 101.0])
def test_a_missing_infinite_or_out_of_range_metric_fails(value):
    table = _captions()
    table.loc[1, "BLEU-4"] = value
    with pytest.raises(AssertionError, match="BLEU-4"):
        check_table(table, "captions", ranges=CAPTION_RANGES)


def test_meteor_alone_may_be_empty():
    table = _captions()
    check_table(table, "captions", ranges=CAPTION_RANGES)  # METEOR all empty: scored without Java
    table.loc[0, "METEOR"] = 120.0
    with pytest.raises(AssertionError, match="METEOR"):
        check_table(table, "captions", ranges=CAPTION_RANGES)


def test_check_values():
    check_values({"a": 1.0, "b": 0}, "ratios", lo=0)
    with pytest.raises(AssertionError, match="'b'"):
        check_values({"a": 1.0, "b": math.nan}, "ratios")
    with pytest.raises(AssertionError, match="'a'"):
        check_values({"a": -0.5}, "ratios", lo=0)
