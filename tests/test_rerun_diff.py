"""rerun_diff: two results folders of one study compared (numbers moved, verdicts flipped)."""
import math

import pandas as pd
import pytest

from rscc.experiments.rerun_diff import _flips, compare_folders, compare_tables, main

EFFECTS = {"setting": ["fne", "fna", "base"], "metric": ["CIDEr-D", "CIDEr-D", "CIDEr-D"],
           "difference": [1.0, 5.0, math.nan], "seeds low": [-2.0, 1.0, math.nan],
           "seeds high": [4.0, 9.0, math.nan], "resolved": [False, True, math.nan]}


def _write(folder, name, table):
    folder.mkdir(exist_ok=True)
    pd.DataFrame(table).to_csv(folder / f"{name}.csv", index=False)


def test_a_flipped_verdict_is_listed_with_both_sides():
    b = {**EFFECTS, "difference": [3.0, 4.5, math.nan], "seeds low": [0.5, 0.5, math.nan], "resolved": [True, True, math.nan]}
    moved, flipped = compare_tables(pd.DataFrame(EFFECTS), pd.DataFrame(b))
    assert moved == {"difference": 2.0, "seeds low": 2.5}
    assert flipped[["setting", "metric"]].values.tolist() == [["fne", "CIDEr-D"]]  # NaN verdicts are not flips
    row = flipped.iloc[0]
    assert (row["A difference"], row["A resolved"], row["B difference"], row["B resolved"]) == (1.0, False, 3.0, True)


def test_tables_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        compare_tables(pd.DataFrame(EFFECTS), pd.DataFrame(EFFECTS).iloc[:2])


def test_folders_report_identical_differing_and_missing_tables(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "same", EFFECTS), _write(b, "same", EFFECTS)
    _write(a, "moved", {"x": [1.0, 2.0]}), _write(b, "moved", {"x": [1.0, 2.5]})
    _write(a, "gone", {"x": [1.0]})
    report = {e["table"]: e for e in compare_folders(a, b)}
    assert {k: e["status"] for k, e in report.items()} == {"same": "identical", "moved": "differs", "gone": "missing"}
    assert report["moved"]["moved"] == {"x": 0.5} and report["same"]["verdicts"] == 2


def test_cli_counts_the_flips(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, "effects", EFFECTS), _write(b, "effects", {**EFFECTS, "resolved": [True, False, math.nan]})
    assert main([str(a), str(b)]) == 0
    assert "2 of 2 verdicts (resolved, above chance) differ" in capsys.readouterr().out
    assert main([str(a), str(tmp_path / "nowhere")]) == 2


def test_an_above_chance_verdict_that_flips_is_listed_too():
    a = {"setting": ["authors", "rscc"], "R@10": [21.0, 25.0], "× chance": [1.1, 1.3],
         "above chance": [False, True], "difference": [math.nan, 4.0], "resolved": [math.nan, False]}
    b = {**a, "R@10": [21.5, 26.5], "× chance": [1.12, 1.38], "above chance": [False, False]}
    moved, flipped = compare_tables(pd.DataFrame(a), pd.DataFrame(b))
    assert flipped["setting"].tolist() == ["rscc"]
    row = flipped.iloc[0]
    assert (row["A above chance"], row["B above chance"], row["B × chance"]) == (True, False, 1.38)
    assert "R@10" in moved
    both = {**b, "resolved": [math.nan, True]}  # one row, two verdicts flipped: counted twice
    assert _flips(compare_tables(pd.DataFrame(a), pd.DataFrame(both))[1]) == 2
