"""rscc.stats: intervals over seeds (Student's t) and over test pairs (paired bootstrap)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rscc.stats import Interval, mean_interval, paired_bootstrap, seed_difference, t_quantile


def test_t_quantiles_match_the_printed_table():
    # two-sided 95 %: df 2 -> 4.303, df 4 -> 2.776, df 30 -> 2.042 (any t table)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)


def test_mean_interval_of_one_two_three_is_two_plus_minus_t_over_root_three():
    interval = mean_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # s = 1
    assert (interval.estimate, interval.n) == (2.0, 3)
    assert interval.low == pytest.approx(2 - half, abs=1e-5)
    assert interval.high == pytest.approx(2 + half, abs=1e-5)


def test_mean_interval_of_one_value_has_no_bounds():
    interval = mean_interval([7.5])
    assert interval.estimate == 7.5 and math.isnan(interval.low) and math.isnan(interval.high)


def test_mean_interval_covers_the_true_mean_95_times_in_100_for_normal_samples():
    rng = np.random.default_rng(1)
    covered = [not mean_interval(rng.normal(3.0, 2.0, size=5)).excludes(3.0) for _ in range(4000)]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.01)


def test_seed_difference_pairs_the_trainings_of_each_seed():
    baseline = {42: 10.0, 43: 30.0, 44: 20.0}
    other = {42: 12.0, 43: 32.0, 44: 22.0, 45: 99.0}  # seed 45 has no baseline: left out
    interval = seed_difference(baseline, other)
    assert (interval.estimate, interval.low, interval.high, interval.n) == (2.0, 2.0, 2.0, 3)


def test_paired_bootstrap_of_a_constant_difference_is_that_constant():
    rng = np.random.default_rng(0)
    baseline = rng.uniform(0, 100, size=300)  # large spread between pairs, shared by both settings
    interval = paired_bootstrap(baseline, baseline + 3.0)
    assert interval.estimate == pytest.approx(3.0)
    assert interval.low == pytest.approx(3.0) and interval.high == pytest.approx(3.0)


def test_paired_bootstrap_of_normal_differences_matches_the_normal_interval_of_the_mean():
    # differences ~ N(1, 2²), n = 4000: the 95 % interval of their mean is mean ± 1.96 · s / √n (±0.062)
    rng = np.random.default_rng(2)
    baseline = rng.uniform(0, 50, size=4000)
    differences = rng.normal(1.0, 2.0, size=4000)
    interval = paired_bootstrap(baseline, baseline + differences, resamples=20_000)
    mean, half = differences.mean(), 1.959964 * differences.std(ddof=1) / math.sqrt(4000)
    assert interval.estimate == pytest.approx(mean)
    assert interval.low == pytest.approx(mean - half, abs=0.006)
    assert interval.high == pytest.approx(mean + half, abs=0.006)
    assert interval.excludes(0.0)


def test_paired_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5).low != paired_bootstrap(a, b, seed=6).low


def test_paired_bootstrap_rejects_unpaired_or_missing_values():
    with pytest.raises(ValueError, match="same non-zero length"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="missing"):
        paired_bootstrap([1.0, float("nan")], [1.0, 2.0])


def test_interval_prints_estimate_and_bounds():
    assert str(Interval(1.234, 0.5, 2.0, 3)) == "1.23 [0.50, 2.00]"
