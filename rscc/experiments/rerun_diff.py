"""Two ``results/`` folders of the same study compared: how far each table's numbers moved, and
which *resolved* verdicts flipped.

The study is bit-for-bit repeatable on one machine, not across machines: CPUs on which torch
dispatches to other kernels (``rscc.device.machine``) round differently, and the trainings amplify
that into differences of the size of seed noise. A rerun elsewhere (``make reproduce`` in another
clone) is then a check of the conclusions, not of the digits::

    python -m rscc.experiments.rerun_diff results/ /path/to/other/clone/results/

lists, per CSV table, the largest absolute difference of its numeric columns and every row whose
verdict differs (``resolved``: a difference whose two intervals exclude 0; ``above chance``: a score
whose seed interval lies above a random ranking's), with both sides' numbers."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

INTERVAL = ("seeds low", "seeds high")
VERDICTS = ("resolved", "above chance")  # the study's yes/no columns
SHOWN = ("difference", *INTERVAL, "× chance")  # each side's numbers beside a flipped verdict


def _labels(table: pd.DataFrame) -> list[str]:
    """The columns that name a row: the non-numeric ones but the verdict, and the numeric labels."""
    numeric_labels = ("pairs", "λ", "seed", "theta")  # numbers that name a setting, not a measurement
    return [c for c in table.columns
            if c in numeric_labels or (c not in VERDICTS and not pd.api.types.is_numeric_dtype(table[c]))]


def _verdicts(column: pd.Series) -> pd.Series:
    """A verdict column as text, "" where a row has no verdict (NaN: no baseline to differ from)."""
    return column.map(lambda v: "" if pd.isna(v) else str(v))


def _verdict_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in VERDICTS if c in table.columns]


def compare_tables(a: pd.DataFrame, b: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """({numeric column: largest |a - b|} for the columns that differ, the rows whose verdict
    (``resolved``, ``above chance``) differs, labelled, with each side's ``difference``, seed
    interval, ``× chance`` and verdicts, where the table has them). The two tables must hold the
    same rows in the same order."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        raise ValueError(f"the tables differ in shape or columns: {a.shape} {list(a.columns)} "
                         f"vs {b.shape} {list(b.columns)}")
    moved = {}
    for column in a.columns:
        if pd.api.types.is_float_dtype(a[column]) and pd.api.types.is_float_dtype(b[column]):
            gap = (a[column] - b[column]).abs().max()
            if gap > 0:
                moved[column] = float(gap)
    verdicts = _verdict_columns(a)
    if not verdicts:
        return moved, pd.DataFrame()
    flipped = pd.Series(False, index=a.index)
    for column in verdicts:
        flipped |= _verdicts(a[column]) != _verdicts(b[column])
    rows = a.loc[flipped, _labels(a)].copy()
    for side, table in (("A", a), ("B", b)):
        for column in (*SHOWN, *verdicts):
            if column in table.columns:
                rows[f"{side} {column}"] = table.loc[flipped, column].to_numpy()
    return moved, rows.reset_index(drop=True)


def _count(table: pd.DataFrame) -> int:
    """How many verdicts ``table`` carries (rows × verdict columns, NaN ones not counted)."""
    return int(sum(table[c].notna().sum() for c in _verdict_columns(table)))


def _flips(flipped: pd.DataFrame) -> int:
    """How many verdicts the rows of :func:`compare_tables` flipped (a row may flip two)."""
    return int(sum((_verdicts(flipped[f"A {c}"]) != _verdicts(flipped[f"B {c}"])).sum()
                   for c in VERDICTS if f"A {c}" in flipped.columns))


def compare_folders(a_dir: str | Path, b_dir: str | Path) -> list[dict]:
    """Every CSV table of ``a_dir`` against the same file in ``b_dir``: one dict per table with
    ``table``, ``status`` (identical, differs, missing, different shape), ``moved`` and
    ``flipped`` (:func:`compare_tables`), and ``verdicts`` (how many it carries, :data:`VERDICTS`)."""
    report = []
    for a_path in sorted(Path(a_dir).glob("*.csv")):
        b_path = Path(b_dir) / a_path.name
        entry = {"table": a_path.stem, "moved": {}, "flipped": pd.DataFrame(), "verdicts": 0}
        if not b_path.is_file():
            report.append({**entry, "status": "missing"})
            continue
        a, b = pd.read_csv(a_path), pd.read_csv(b_path)
        if a.equals(b):
            report.append({**entry, "status": "identical", "verdicts": _count(a)})
            continue
        try:
            moved, flipped = compare_tables(a, b)
        except ValueError:
            report.append({**entry, "status": "different shape"})
            continue
        report.append({**entry, "status": "differs", "moved": moved, "flipped": flipped, "verdicts": _count(a)})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rscc.experiments.rerun_diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="a results/ folder (e.g. the committed one)")
    parser.add_argument("b", help="the results/ folder of a rerun of the same study")
    args = parser.parse_args(argv)
    for folder in (args.a, args.b):
        if not Path(folder).is_dir():
            print(f"rerun_diff: error: {folder}: not a folder", file=sys.stderr)
            return 2
    report = compare_folders(args.a, args.b)
    verdicts = flips = 0
    for entry in report:
        verdicts, flips = verdicts + entry["verdicts"], flips + _flips(entry["flipped"])
        moved = sorted(entry["moved"].items(), key=lambda kv: -kv[1])[:4]
        detail = "; largest |A - B|: " + ", ".join(f"{c} {v:.2f}" for c, v in moved) if moved else ""
        print(f"{entry['table']}: {entry['status']}{detail}")
        if len(entry["flipped"]):
            print(entry["flipped"].round(2).to_string(index=False))
    print(f"{flips} of {verdicts} verdicts (resolved, above chance) differ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
