"""Intervals over seeds and stars, and paired comparisons of two choices (the experiment's
tables, the measured deviations and variants)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import t as student_t


def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of `values` (e.g. one per seed) with its two-sided Student-t interval at `level`
    (n - 1 degrees of freedom); NaN bounds below two values. With a handful of seeds a
    percentile bootstrap over seeds is too narrow (about 83 % coverage at nominal 95 % for 5
    seeds); the t interval is not."""
    v = np.asarray(values, float)
    if v.size < 2:
        return float(v.mean()) if v.size else math.nan, math.nan, math.nan
    half = student_t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def paired_bootstrap(a: list[np.ndarray], b: list[np.ndarray] | None = None, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Mean of `a` minus mean of `b` over all values, with a hierarchical bootstrap interval.

    `a[k]`, `b[k]`: values (e.g. absolute errors) of the same stars in seed `k`. Each
    resample draws seeds with replacement, then stars within each drawn seed, and takes the
    same draws for `a` and `b` (paired). Without `b`, the mean of `a` alone. Returns
    (estimate, low, high), the percentile interval at `level`.
    """
    d = [np.asarray(x, float) - (0 if b is None else np.asarray(y, float)) for x, y in zip(a, b or a)]
    if any(x.size == 0 for x in d):
        raise ValueError("paired_bootstrap: a seed without stars")
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for j in range(n_boot):
        picked = [d[k] for k in rng.integers(0, len(d), len(d))]
        draws[j] = np.concatenate([x[rng.integers(0, x.size, x.size)] for x in picked]).mean()
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(np.concatenate(d).mean()), float(lo), float(hi)


def verdict(low: float, high: float, names: tuple[str, str]) -> str:
    """Which of two choices a paired interval of (second - first) losses favours, if any."""
    if low == high == 0:
        return "identical"
    if high < 0:
        return f"{names[1]} better"
    if low > 0:
        return f"{names[0]} better"
    return "not resolved"


def metric_loss(metric: str, x):
    """Smaller is better: MAE, ``abs(bias)``, ``abs(coverage - 0.68)``."""
    return abs(x - 0.68) if metric.endswith("coverage") else abs(x)


def paired(table: pd.DataFrame, keys: list[str], pair: str, first: str, second: str,
           names: tuple[str, str]) -> pd.DataFrame:
    """Per `keys` of a tidy `table` (columns `keys`, `pair`, ``seed``, ``number``): mean of each
    choice of column `pair`, and the paired (second - first) difference of the `metric_loss`
    over seeds with its 95 % t interval and `verdict`."""
    rows = []
    for key, g in table.groupby(keys, sort=False):
        wide = g.pivot_table(index="seed", columns=pair, values="number")
        if first not in wide or second not in wide:
            continue
        wide = wide[[first, second]].dropna()
        metric = dict(zip(keys, key))["metric"]
        mean, low, high = t_interval(metric_loss(metric, wide[second]) - metric_loss(metric, wide[first]))
        rows.append({**dict(zip(keys, key)), f"{names[0]} mean": wide[first].mean(),
                     f"{names[1]} mean": wide[second].mean(), "loss difference": mean, "95% low": low,
                     "95% high": high, "verdict": verdict(low, high, names), "seeds": len(wide)})
    return pd.DataFrame(rows).set_index(keys)


def _sign_patterns(n: int) -> np.ndarray:
    """All 2**n patterns of n signs (+1, -1), one per row."""
    return 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)


def sign_flip_p(values, shift: float = 0.0) -> float:
    """Two-sided p of "the mean of `values` is `shift`" by the exact sign-flip test: the share of the
    2**n sign patterns of ``values - shift`` whose mean is at least as far from 0 as the observed
    one. No normality: only symmetry under the null. Its smallest value is 2 / 2**n (n <= 20)."""
    d = np.asarray(values, float) - shift
    if not 1 <= d.size <= 20:
        raise ValueError(f"sign_flip_p: 1 to 20 values, got {d.size}")
    means = np.abs(_sign_patterns(d.size) @ d) / d.size
    return float(np.mean(means >= abs(d.mean()) * (1 - 1e-12)))


def sign_flip_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The shifts that `sign_flip_p` does not reject at ``1 - level``: the test inverted (bisection on
    each side of the mean). Unbounded (-inf, inf) when no shift can be rejected, i.e. when
    ``2 / 2**n >= 1 - level`` (5 values or fewer at 95 %)."""
    d = np.asarray(values, float)
    alpha = 1 - level
    if 2.0 / 2**d.size >= alpha:
        return -math.inf, math.inf
    bounds = []
    for far in (d.min() - 1e-9 * (1 + abs(d.min())), d.max() + 1e-9 * (1 + abs(d.max()))):
        inside, outside = d.mean(), far  # p(inside) = 1, p(outside) = 2 / 2**n < alpha
        for _ in range(60):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if sign_flip_p(d, mid) > alpha else (inside, mid)
        bounds.append(float(inside))
    return bounds[0], bounds[1]


def holm(p) -> np.ndarray:
    """Holm's step-down adjustment of the p-values of one family of claims (family-wise error)."""
    p = np.asarray(p, float)
    order = np.argsort(p)
    adjusted = np.minimum(np.maximum.accumulate((p.size - np.arange(p.size)) * p[order]), 1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out
