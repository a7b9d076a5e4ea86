"""Uncertainty of the study's numbers: 95 % intervals over seeds and over test pairs.

Two sources of noise are measured separately, because they answer different questions:

* :func:`mean_interval` — Student's t-interval of a mean over a few values, e.g. one metric of
  the same setting trained with several seeds (how much does retraining move the number?), or of
  per-seed differences between two settings trained with the same seeds (:func:`seed_difference`).
* :func:`paired_bootstrap` — a percentile bootstrap over test pairs of the difference of a
  metric between two settings evaluated on the *same* pairs: the pairs are resampled jointly, so
  the pair-to-pair variation shared by both settings cancels (how much would another test set of
  the same size move the difference?). Per-pair values come from an evaluation's
  ``per_pair.jsonl`` (:func:`rscc.evaluate.per_pair_scores`); a corpus metric whose mean over
  pairs is the reported number (a hit rate, CIDEr-D with the evaluated set's document
  frequencies held fixed) is resampled as that mean.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """An estimate with a ``confidence`` interval [low, high] from ``n`` values."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, value: float) -> bool:
        """True when ``value`` lies outside the interval (the difference from it is resolved)."""
        return value < self.low or value > self.high

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t distribution with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(probability, df))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``values`` with its two-sided t-interval, mean ± t(1 − α/2, n − 1) · s / √n.

    One value gives an interval of NaN bounds (no spread can be measured from one seed)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"mean_interval needs a non-empty 1-d sequence of numbers, got shape {x.shape}")
    mean = float(x.mean())
    if len(x) == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence)
    half = t_quantile(1 - (1 - confidence) / 2, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half, len(x), confidence)


def seed_difference(baseline: dict[int, float], other: dict[int, float], confidence: float = 0.95) -> Interval:
    """t-interval of ``other − baseline`` over the seeds both were trained with ({seed: metric});
    a seed fixes initialisation and batch order, so the two trainings of one seed are paired."""
    seeds = sorted(set(baseline) & set(other))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(baseline)} vs {sorted(other)}")
    return mean_interval([other[s] - baseline[s] for s in seeds], confidence)


def paired_bootstrap(baseline: Sequence[float], other: Sequence[float], statistic: Callable = np.mean,
                     resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """Difference ``statistic(other) − statistic(baseline)`` over the same items (test pairs),
    with a percentile bootstrap interval: ``resamples`` times, n items are drawn with replacement
    and the *same* draw is applied to both settings. ``seed`` makes the interval reproducible.

    ``statistic`` maps a (resamples, n) array to one value per row along axis 1 (``np.mean``,
    ``np.median``…)."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_bootstrap needs two 1-d sequences of the same non-zero length, "
                         f"got {a.shape} and {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired_bootstrap: a per-pair value is missing (NaN)")
    estimate = float(statistic(b) - statistic(a))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(resamples, len(a)))  # (R, n) item indices, shared by both
    differences = statistic(b[draws], axis=1) - statistic(a[draws], axis=1)  # (R,)
    alpha = 1 - confidence
    low, high = np.quantile(differences, [alpha / 2, 1 - alpha / 2])
    return Interval(estimate, float(low), float(high), len(a), confidence)
