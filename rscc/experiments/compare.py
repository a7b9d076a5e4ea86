"""Settings compared with their uncertainty: means over seeds and effects against a baseline.

A study trains every setting (a backbone, a loss) with the same seeds. For each setting,
:func:`setting_intervals` gives the mean of each metric over its seeds with a 95 % t-interval; for
each setting against a baseline, :func:`effects` gives the difference with two intervals that
answer two questions (:mod:`rscc.stats`):

* ``seeds``: the t-interval of the per-seed differences (the two trainings of one seed share the
  data order): how much retraining moves the difference;
* ``test pairs``: a paired bootstrap over the test pairs of the per-pair values averaged over the
  seeds (``per_pair.jsonl`` of each run's evaluation): how much another test set of the same size
  would move it.

A difference is *resolved* when both intervals exclude zero."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from rscc.stats import mean_interval, paired_bootstrap, seed_difference

# key metric (tables.key_metrics) -> its per-pair column in per_pair.jsonl (means equal the metric)
PER_PAIR = {
    "CIDEr-D": "CIDEr-D", "CIDEr-D changed": "CIDEr-D changed",
    "text→pair R@10 changed": "text→pair hit@10 changed",
}


def per_pair_table(run_dir: str | Path) -> pd.DataFrame:
    """The rows of a run's ``eval/per_pair.jsonl``, indexed by pair id."""
    path = Path(run_dir) / "eval" / "per_pair.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; evaluate the run again (rscc evaluate) to write it")
    with path.open(encoding="utf-8") as f:
        return pd.DataFrame([json.loads(line) for line in f if line.strip()]).set_index("id")


def setting_intervals(table: pd.DataFrame, by: str, metrics: Iterable[str]) -> pd.DataFrame:
    """One row per value of ``by`` (in order of appearance): for each metric its mean over the
    rows (seeds) and the 95 % t-interval, as columns ``<metric>``, ``<metric> low``,
    ``<metric> high``, and ``seeds`` (how many rows)."""
    rows = []
    for setting, group in table.groupby(by, sort=False):
        row = {by: setting, "seeds": len(group)}
        for metric in metrics:
            interval = mean_interval(group[metric].astype(float).tolist())
            row |= {metric: interval.estimate, f"{metric} low": interval.low, f"{metric} high": interval.high}
        rows.append(row)
    return pd.DataFrame(rows)


def effects(table: pd.DataFrame, by: str, baseline: str, metrics: Iterable[str],
            run_dirs: Mapping[str, str | Path] | None = None, resamples: int = 10_000) -> pd.DataFrame:
    """Each setting of ``by`` other than ``baseline`` minus the baseline, per metric: the mean of the
    per-seed differences with its t-interval (``seeds low/high``), and, for the metrics with
    per-pair values (:data:`PER_PAIR`) when ``run_dirs`` ({run name: folder}) is given, a paired
    bootstrap over test pairs of the seed-averaged per-pair values (``pairs low/high``).
    ``table`` has columns ``by``, ``seed``, ``run`` and the metrics. Long form: one row per
    (setting, metric), with ``resolved`` = both intervals exclude 0."""
    metrics = list(metrics)
    base = table[table[by] == baseline]
    if base.empty:
        raise ValueError(f"no run of the baseline {by}={baseline!r}")

    def averaged(group: pd.DataFrame, column: str) -> pd.Series:  # per pair, mean over the seeds
        return pd.concat([per_pair_table(run_dirs[r])[column] for r in group.run], axis=1).astype(float).mean(axis=1)

    rows = []
    for setting, group in table[table[by] != baseline].groupby(by, sort=False):
        for metric in metrics:
            seeds = seed_difference(dict(zip(base.seed, base[metric].astype(float))),
                                    dict(zip(group.seed, group[metric].astype(float))))
            row = {by: setting, "metric": metric, "difference": seeds.estimate, "seeds": seeds.n,
                   "seeds low": seeds.low, "seeds high": seeds.high}
            if run_dirs is not None and metric in PER_PAIR:
                a, b = averaged(base, PER_PAIR[metric]).dropna(), averaged(group, PER_PAIR[metric]).dropna()
                common = a.index.intersection(b.index)
                pairs = paired_bootstrap(a[common].to_numpy(), b[common].to_numpy(), resamples=resamples)
                row |= {"pairs low": pairs.low, "pairs high": pairs.high, "test pairs": pairs.n}
            resolved = seeds.excludes(0) and ("pairs low" not in row or not row["pairs low"] <= 0 <= row["pairs high"])
            rows.append(row | {"resolved": bool(resolved)})
    return pd.DataFrame(rows)
