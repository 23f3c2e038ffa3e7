"""A study's statistics against values computed another way: by hand, from scipy's quantiles
directly, from published power tables, and by simulation. Milliseconds to a second."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from distill.study.stats import (contrast_power_line, mean_ci, paired_bootstrap, paired_by_seed, paired_t_power,
                                 seeds_needed)


def test_mean_ci_is_student_t_with_the_sample_sd():
    mean, half = mean_ci([1, 2, 3, 4])
    sd = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # sample sd of 1..4, by hand: 1.29099
    assert mean == 2.5 and half == pytest.approx(sps.t.ppf(0.975, 3) * sd / 2, rel=1e-12)
    assert half == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)  # t(0.975, 3) from a printed table
    assert mean_ci([1, 2, 3, 4], level=0.9)[1] < half
    assert mean_ci([0.7])[0] == 0.7 and math.isnan(mean_ci([0.7])[1])
    assert all(math.isnan(x) for x in mean_ci([]))
    assert mean_ci([1, None, float("nan"), 3]) == mean_ci([1, 3])  # unmeasured values are left out


def test_paired_by_seed_uses_the_seeds_in_both():
    a = {0: 0.80, 1: 0.75, 2: 0.90, 4: 0.5}
    b = {0: 0.70, 1: 0.77, 2: 0.84, 3: 0.9}
    mean, half, n = paired_by_seed(a, b)  # differences 0.10, -0.02, 0.06 on seeds 0, 1, 2
    assert n == 3 and mean == pytest.approx(0.14 / 3)
    sd = np.std([0.10, -0.02, 0.06], ddof=1)
    assert half == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)


def test_paired_bootstrap_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(0)
    a = rng.random((5, 300)) < 0.8
    assert paired_bootstrap(a, a.copy()) == (0.0, 0.0, 0.0)


def _flipped(n_clips: int, seed: int = 1):
    """a: 5 seeds' correct clips at ~80 %; b: a with a tenth of its clips flipped on every seed."""
    rng = np.random.default_rng(seed)
    a = rng.random((5, n_clips)) < 0.8
    b = a.copy()
    flip = rng.choice(n_clips, n_clips // 10, replace=False)
    b[:, flip] = ~b[:, flip]
    return a, b


def test_paired_bootstrap_brackets_a_known_shift_and_narrows_with_more_clips():
    a, b = _flipped(1000)
    diff, lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean()) and lo < diff < hi
    assert lo > 0  # flipping a tenth of ~80 %-correct clips costs b about six points
    assert paired_bootstrap(a, b, n_boot=2000, seed=0) == (diff, lo, hi)  # seeded: reproducible
    widths = []
    for n_clips in (200, 1000, 5000):
        _, lo, hi = paired_bootstrap(*_flipped(n_clips), n_boot=1000, seed=0)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(5, rel=0.25)  # ∝ 1/sqrt(clips)
    one_seed = paired_bootstrap(a[0], b[0], n_boot=200)  # one seed: 1-D arrays
    assert one_seed[1] <= one_seed[0] <= one_seed[2]
    with pytest.raises(ValueError, match="shape"):
        paired_bootstrap(a, b[:, :10])


def test_seeds_needed_matches_published_power_tables():
    # G*Power, matched-pairs t-test, two-sided alpha 0.05, power 0.8: effect size dz = delta / sd
    assert seeds_needed(1.0, 0.5) == 34
    assert seeds_needed(1.0, 0.8) == 15
    assert seeds_needed(0.02, 0.05) <= 5  # a large effect against a small spread: a handful of seeds


def test_seeds_needed_grows_with_the_spread_and_is_the_smallest_sufficient_n():
    needs = [seeds_needed(sd, 0.03) for sd in (0.01, 0.02, 0.04, 0.08)]
    assert needs == sorted(needs) and needs[0] < needs[-1]
    for sd, delta in [(0.02, 0.05), (0.021, 0.03), (0.05, 0.03)]:
        n = seeds_needed(sd, delta)
        assert paired_t_power(n, sd, delta) >= 0.8
        assert n == 2 or paired_t_power(n - 1, sd, delta) < 0.8
    assert seeds_needed(0.0, 0.03) == 2
    with pytest.raises(ValueError):
        seeds_needed(float("nan"), 0.03)


def test_power_agrees_with_simulated_paired_t_tests():
    rng = np.random.default_rng(0)
    sd, delta = 0.02, 0.05
    n = seeds_needed(sd, delta)
    for size in (n - 1, n):
        diffs = rng.normal(delta, sd, size=(20000, size))
        simulated = float((sps.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05).mean())
        assert simulated == pytest.approx(paired_t_power(size, sd, delta), abs=0.015)


def test_contrast_power_line():
    diffs = {0: 0.01, 1: 0.03, 2: -0.01, 3: 0.04, 4: 0.02}
    sd = np.std(list(diffs.values()), ddof=1)
    line = contrast_power_line(diffs)
    assert line == (f"sd {sd:.3f} over 5 seeds: 0.03 needs {seeds_needed(sd, 0.03)} seeds, "
                    f"0.05 needs {seeds_needed(sd, 0.05)} seeds")
    assert contrast_power_line([0.02]) == "1 seed: no spread to estimate the seeds needed"
