"""Assertions the notebooks make about their own results, on every profile.

nbval (``make test``) runs each notebook on the smoke profile and fails on any exception, so a
notebook that ends with ``check_table(...)`` fails when its table comes out empty, loses a column
or a row, or holds a metric that is missing, infinite or out of range. The checks are
structural: they hold for the smoke, quick and paper profiles alike, and say nothing about how
good a model is (that depends on the profile and is read, with its uncertainty, in the prose)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

# Scores are reported x100. CIDEr-D is a tf-idf weighted n-gram cosine x10 (x100 here), so up to
# 1000; S*m is the mean of BLEU-4, METEOR, ROUGE-L and CIDEr-D.
CAPTION_RANGES = {
    "BLEU-1": (0, 100), "BLEU-4": (0, 100), "METEOR": (0, 100), "ROUGE-L": (0, 100),
    "CIDEr-D": (0, 1000), "S*m": (0, 325),
}
RETRIEVAL_RANGES = {
    "authors P@5": (0, 100), "authors R@5": (0, 100), "authors R@10": (0, 100), "authors MRR@10": (0, 100),
    "text→pair R@1": (0, 100), "text→pair R@5": (0, 100), "text→pair R@10": (0, 100),
    "text→pair chance R@10": (0, 100), "text→pair mAP": (0, 100), "pair→text R@10": (0, 100),
}
KEY_METRIC_RANGES = {
    "CIDEr-D": (0, 1000), "CIDEr-D changed": (0, 1000), "BLEU-4": (0, 100), "BLEU-4 changed": (0, 100),
    "authors R@5": (0, 100), "authors MRR@10": (0, 100), "authors R@5 changed": (0, 100),
    "text→pair R@10 changed": (0, 100), "chance R@10 changed": (0, 100),
}
# METEOR needs Java; a run scored without it leaves METEOR and S*m (which averages it in) empty
MAY_BE_MISSING = ("METEOR", "S*m")


def _labels(table: pd.DataFrame, key: str | tuple[str, ...]) -> set:
    keys = [key] if isinstance(key, str) else list(key)
    frame = table.reset_index() if any(k not in table.columns for k in keys) else table
    missing = [k for k in keys if k not in frame.columns]
    if missing:
        raise AssertionError(f"no column or index level {missing}")
    values = frame[keys[0]] if len(keys) == 1 else frame[keys].itertuples(index=False, name=None)
    return set(values)


def check_table(table: pd.DataFrame, name: str, *, columns: Iterable[str] = (),
                rows: Mapping[str | tuple[str, ...], Iterable] | None = None, n_rows: int | None = None,
                min_rows: int = 1, ranges: Mapping[str, tuple[float, float]] | None = None,
                may_be_missing: Iterable[str] = MAY_BE_MISSING) -> pd.DataFrame:
    """Raise AssertionError, naming ``name``, unless ``table`` has at least ``min_rows`` rows
    (exactly ``n_rows`` when given), every one of ``columns``, exactly the row labels ``rows``
    (``{"subset": ["all", "changed"]}``, or ``{("method", "subset"): [...]}`` for pairs; a key may
    be a column or an index level), and, in each column of ``ranges`` that it has, only finite
    values within the range (empty cells only in ``may_be_missing``). Returns ``table``."""
    problems = []
    if len(table) < min_rows:
        problems.append(f"{len(table)} rows, expected at least {min_rows}")
    if n_rows is not None and len(table) != n_rows:
        problems.append(f"{len(table)} rows, expected {n_rows}")
    absent = [c for c in columns if c not in table.columns]
    if absent:
        problems.append(f"missing columns {absent}")
    for key, expected in (rows or {}).items():
        try:
            found = _labels(table, key)
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        expected = set(expected)
        if found != expected:
            problems.append(f"rows {key}: missing {sorted(map(str, expected - found))}, "
                            f"unexpected {sorted(map(str, found - expected))}")
    for column, (lo, hi) in (ranges or {}).items():
        if column not in table.columns:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        empty = values.isna() & (table[column].isna() | (table[column].astype(str) == ""))
        if column not in may_be_missing and empty.any():
            problems.append(f"{column}: {int(empty.sum())} empty cell(s)")
        bad = [v for v in values[~empty] if not (math.isfinite(v) and lo <= v <= hi)]
        if bad:
            problems.append(f"{column}: values outside [{lo}, {hi}] or not finite: {bad[:5]}")
    if problems:
        raise AssertionError(f"{name}: " + "; ".join(problems))
    return table


def check_values(values: Mapping[str, float], name: str, lo: float = -math.inf, hi: float = math.inf) -> None:
    """Raise AssertionError unless every value is a finite number within [lo, hi]."""
    bad = {k: v for k, v in values.items()
           if not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi}
    if bad:
        raise AssertionError(f"{name}: not finite or outside [{lo}, {hi}]: {bad}")
