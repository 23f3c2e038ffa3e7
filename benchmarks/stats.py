"""Small, dependency-free statistics and table helpers shared by the fidelity and sensitivity
benchmarks (benchmarks/fidelity.py, benchmarks/sensitivity.py). Pure Python: no Ray, MLflow,
numpy or scipy, so tests/test_fidelity_stats.py checks them in milliseconds.

    mean_ci([0.5, 0.6, 0.7])       -> {"n": 3, "mean": 0.6, "std": 0.1, "ci95": 0.248, ...}
    paired({0: .6, 1: .5}, {0: .5, 1: .55})  -> {0: 0.1, 1: -0.05}   (a − b, seeds in both)
    ahead([0.1, -0.05])            -> 1                              (seeds on which a was better)
    fmt_seed_pairs({0: .8}, {0: .7})  -> "s0 0.800 → 0.700"            (two numbers per seed)
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, Mapping

# Two-sided 95 % Student t quantiles t(0.975, df) for df = 1..30: seeds are few, so the normal
# 1.96 would understate the interval badly (df 2: 4.303).
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
Z975 = 1.959964


def t975(df: int) -> float:
    """t(0.975, df): the table for df ≤ 30, beyond it the Cornish-Fisher expansion around the
    normal quantile (within 1e-4 of the exact value for df > 30)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z, v = Z975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


def finite(values: Iterable) -> list[float]:
    """The values that are real numbers (a stage that did not log a metric gives None or NaN)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_ci(values: Iterable) -> dict:
    """Mean and 95 % confidence half-width (Student t, sample std) of the finite values.
    One value: no spread to estimate, so std and ci95 are None; none: everything None."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None, "low": None, "high": None}
    mean = statistics.fmean(xs)
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None, "low": None, "high": None}
    std = statistics.stdev(xs)
    half = t975(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": half, "low": mean - half, "high": mean + half}


def paired(a: Mapping, b: Mapping) -> dict:
    """a − b per key (seed) present in both with finite values, in key order: the pairing
    removes what a seed does to both (its crops, its data order), leaving the method's effect."""
    out = {}
    for key in sorted(set(a) & set(b), key=str):
        x, y = finite([a[key]]), finite([b[key]])
        if x and y:
            out[key] = x[0] - y[0]
    return out


def ahead(diffs: Iterable, lower_is_better: bool = False) -> int:
    """On how many seeds the first method was strictly better (ties count for neither)."""
    xs = finite(diffs)
    return sum((d < 0) if lower_is_better else (d > 0) for d in xs)


def fmt(value, digits: int = 3, signed: bool = False) -> str:
    """A number for a table; '-' for a missing one."""
    xs = finite([value])
    if not xs:
        return "-"
    return f"{xs[0]:{'+' if signed else ''}.{digits}f}"


def fmt_ci(summary: Mapping, digits: int = 3, signed: bool = False) -> str:
    """'mean ± ci95' ('mean' alone for one seed, '-' for none)."""
    if summary.get("mean") is None:
        return "-"
    text = fmt(summary["mean"], digits, signed)
    return text if summary.get("ci95") is None else f"{text} ± {fmt(summary['ci95'], digits)}"


def fmt_per_seed(per_seed: Mapping, digits: int = 3, signed: bool = True) -> str:
    """'s0 +0.012, s1 -0.030': every seed's own number beside the aggregate."""
    return ", ".join(f"s{k} {fmt(v, digits, signed)}" for k, v in per_seed.items()) or "-"


def fmt_seed_pairs(a: Mapping, b: Mapping, digits: int = 3, arrow: str = "→") -> str:
    """'s0 0.800 → 0.700, s1 0.750 → -': two numbers of every seed (in either), side by side."""
    seeds = sorted(set(a) | set(b), key=str)
    return ", ".join(f"s{k} {fmt(a.get(k), digits)} {arrow} {fmt(b.get(k), digits)}" for k in seeds) or "-"


def markdown_table(rows: list[Mapping], columns: list[str]) -> str:
    """A GitHub-flavoured markdown table, columns padded so it also reads as plain text."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(row) for row in cells)]) + "\n"


def whole_word_share(starts: Iterable, ends: Iterable, cuts: Iterable | None = None, *, clip_ms: float = 1000.0,
                     window_ms: float = 500.0) -> float | None:
    """Share of clips whose whole word lies inside the centred ``window_ms`` window (and was not
    cut by the clip's edge): what a centred crop of the final length can hear."""
    starts, ends = list(starts), list(ends)
    cuts = list(cuts) if cuts is not None else [0.0] * len(starts)
    if not starts:
        return None
    lo, hi = (clip_ms - window_ms) / 2, (clip_ms + window_ms) / 2
    inside = [float(s) >= lo and float(e) <= hi and float(c) == 0 for s, e, c in zip(starts, ends, cuts)]
    return sum(inside) / len(inside)
