"""The statistics of a study: how sure each number is, and how many seeds would make it sure.

Two sources of noise, estimated separately and reported side by side:

- **seeds** (crops, initialisation, data order): a cell's accuracy varies from seed to seed.
  ``mean_ci`` and ``paired_by_seed`` give Student t intervals over seeds; pairing by seed
  removes what a seed does to both methods of the same chain (they share its teacher and crops).
- **the test clips**: a finite test set is a sample of the clips the networks could meet.
  ``paired_bootstrap`` resamples clips, keeping each clip's pair of outcomes together.

``seeds_needed`` and ``contrast_power_line`` turn a measured spread of paired differences
into the number of seeds a paired t-test needs to resolve a difference of a given size.
The distributions are scipy's, not approximations.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from scipy import stats as sps


def _finite(values: Iterable) -> np.ndarray:
    xs = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return xs[np.isfinite(xs)]


def mean_ci(values: Iterable, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half width of its Student t confidence interval (sample sd) over the
    finite values; half width NaN below two values (no spread to estimate), both NaN for none."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = float(xs.mean())
    if n < 2:
        return mean, math.nan
    half = float(sps.t.ppf((1 + level) / 2, n - 1) * xs.std(ddof=1) / math.sqrt(n))
    return mean, half


def paired_diffs(a: Mapping, b: Mapping) -> dict:
    """a − b for each seed in both with finite values, in seed order."""
    out = {}
    for seed in sorted(set(a) & set(b)):
        x, y = _finite([a[seed]]), _finite([b[seed]])
        if len(x) and len(y):
            out[seed] = float(x[0] - y[0])
    return out


def paired_by_seed(a: Mapping, b: Mapping, level: float = 0.95) -> tuple[float, float, int]:
    """Mean of a − b over the seeds present in both, its t half width, and how many seeds."""
    diffs = paired_diffs(a, b)
    mean, half = mean_ci(diffs.values(), level)
    return mean, half, len(diffs)


def paired_bootstrap(correct_a, correct_b, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Difference of accuracy a − b (mean over seeds and clips) with a percentile bootstrap
    interval that resamples clips: columns of the seeds × clips boolean arrays, the same clips
    in the same order in both, so each clip's outcomes under both methods and every seed stay
    together. The interval is the test set's sampling noise, not the seeds'.

    Resampling whole columns, the statistic is the mean of the resampled per-clip differences
    (averaged over seeds first), so each replicate costs one gather; replicates are drawn in
    chunks of at most ~4 M indices."""
    a, b = np.atleast_2d(np.asarray(correct_a, dtype=float)), np.atleast_2d(np.asarray(correct_b, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        return math.nan, math.nan, math.nan
    per_clip = (a - b).mean(axis=0)
    n_clips = per_clip.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // n_clips)
    reps = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        reps[start:stop] = per_clip[rng.integers(0, n_clips, size=(stop - start, n_clips))].mean(axis=1)
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(per_clip.mean()), float(lo), float(hi)


def paired_t_power(n: int, sd: float, delta: float, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test on ``n`` pairs whose differences have standard
    deviation ``sd``, when the true mean difference is ``delta``: the noncentral t's mass
    beyond the critical values."""
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = delta / (sd / math.sqrt(n))
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def seeds_needed(sd_of_paired_diff: float, delta: float, alpha: float = 0.05, power: float = 0.8,
                 max_n: int = 1_000_000) -> int:
    """The smallest n >= 2 of seeds at which a two-sided paired t-test at ``alpha`` detects a
    true difference ``delta`` with probability ``power``, if the paired differences have
    standard deviation ``sd_of_paired_diff``. Power grows with n, so doubling, then bisection."""
    sd, delta = float(sd_of_paired_diff), abs(float(delta))
    if not (math.isfinite(sd) and sd >= 0) or not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"seeds_needed: sd {sd_of_paired_diff} must be finite and >= 0, delta {delta} finite and > 0")
    if sd == 0 or paired_t_power(2, sd, delta, alpha) >= power:
        return 2
    lo, hi = 2, 4  # power(lo) < target
    while paired_t_power(hi, sd, delta, alpha) < power:
        lo, hi = hi, hi * 2
        if hi > max_n:
            raise ValueError(f"seeds_needed: more than {max_n} seeds for delta {delta} at sd {sd}")
    while hi - lo > 1:  # power(lo) < target <= power(hi)
        mid = (lo + hi) // 2
        if paired_t_power(mid, sd, delta, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def contrast_power_line(diffs_by_seed: Mapping | Iterable, deltas: Iterable[float] = (0.03, 0.05),
                        alpha: float = 0.05, power: float = 0.8) -> str:
    """One line for a contrast's table: the measured sd of its paired differences and the
    seeds that sd needs to resolve each of ``deltas``, e.g.
    ``sd 0.021 over 5 seeds: 0.03 needs 6 seeds, 0.05 needs 3``."""
    values = diffs_by_seed.values() if isinstance(diffs_by_seed, Mapping) else diffs_by_seed
    xs = _finite(values)
    n = len(xs)
    if n < 2:
        return f"{n} seed{'' if n == 1 else 's'}: no spread to estimate the seeds needed"
    sd = float(xs.std(ddof=1))
    needs = ", ".join(f"{d:g} needs {seeds_needed(sd, d, alpha, power)} seeds" for d in deltas)
    return f"sd {sd:.3f} over {n} seeds: {needs}"
