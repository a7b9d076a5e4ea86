"""Settings compared over seeds and test pairs: intervals with known answers."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from rscc.experiments.compare import effects, per_pair_table, setting_intervals


def _table():
    # setting b is a + 2 on every seed; seed noise: a = 10, 12, 14
    return pd.DataFrame({"setting": ["a"] * 3 + ["b"] * 3, "seed": [1, 2, 3] * 2,
                         "run": [f"{s}-{k}" for s in "ab" for k in (1, 2, 3)],
                         "CIDEr-D": [10.0, 12.0, 14.0, 12.0, 14.0, 16.0]})


def test_setting_intervals_are_t_intervals_over_seeds():
    out = setting_intervals(_table(), "setting", ["CIDEr-D"]).set_index("setting")
    half = 4.302652729911275 * 2 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 2
    assert out.loc["a", "seeds"] == 3 and out.loc["a", "CIDEr-D"] == pytest.approx(12.0)
    assert out.loc["a", "CIDEr-D low"] == pytest.approx(12 - half) and out.loc["b", "CIDEr-D high"] == pytest.approx(14 + half)


def _write_runs(tmp_path, shift):
    rng = np.random.default_rng(0)
    base = rng.normal(50, 10, size=200)
    dirs = {}
    for setting, offset in (("a", 0.0), ("b", shift)):
        for k in (1, 2, 3):
            run = tmp_path / f"{setting}-{k}"
            (run / "eval").mkdir(parents=True)
            rows = [{"id": f"p{i}", "changed": True, "CIDEr-D": float(v + offset + k)} for i, v in enumerate(base)]
            (run / "eval" / "per_pair.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
            dirs[run.name] = run
    return dirs


def test_a_constant_shift_is_resolved_by_both_intervals(tmp_path):
    dirs = _write_runs(tmp_path, shift=2.0)
    out = effects(_table(), "setting", "a", ["CIDEr-D"], run_dirs=dirs, resamples=2000)
    row = out.iloc[0]
    assert row["setting"] == "b" and row["difference"] == pytest.approx(2.0)
    assert row["seeds low"] == pytest.approx(2.0) and row["seeds high"] == pytest.approx(2.0)  # no spread
    assert row["pairs low"] == pytest.approx(2.0) and row["pairs high"] == pytest.approx(2.0)
    assert row["test pairs"] == 200 and bool(row["resolved"])


def test_no_difference_is_not_resolved():
    table = _table()
    table.loc[table.setting == "b", "CIDEr-D"] = [11.0, 11.0, 16.0]  # differences +1, -1, +2
    row = effects(table, "setting", "a", ["CIDEr-D"]).iloc[0]
    assert row["seeds low"] < 0 < row["seeds high"] and not row["resolved"]
    assert "pairs low" not in row.index


def test_a_missing_baseline_or_per_pair_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="baseline"):
        effects(_table(), "setting", "zzz", ["CIDEr-D"])
    with pytest.raises(FileNotFoundError, match="per_pair.jsonl"):
        per_pair_table(tmp_path)
