"""`gap.mmd` is the unbiased MMD² estimator (Gretton et al. 2012, Eq. 3), checked two ways.

- Against the estimator written out here as a double loop: within-set kernel sums over i != j
  divided by n(n - 1), minus twice the mean cross-set kernel, with the RBF kernel
  exp(-|x - y|² / median of the pooled squared distances) that `gap.mmd` documents.
- Its mean under the null (two samples of one distribution) is 0: over 50 seeds, within 3
  standard errors of 0. Measured (n = 40, 5 dimensions): 0.9 standard errors (0.0015 +- 0.0016); the biased
  (V-statistic) estimator, which keeps the i = j terms, sits 20 standard errors above 0.
"""
import numpy as np
import pytest

from carmenes_dtl import gap


def unbiased_mmd2(a, b):
    x = np.vstack([a, b])
    d2 = np.array([[np.sum((p - q) ** 2) for q in x] for p in x])
    width = np.median([d2[i, j] for i in range(len(x)) for j in range(i + 1, len(x))])

    def k(p, q):
        return np.exp(-np.sum((p - q) ** 2) / width)

    n, m = len(a), len(b)
    kaa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kbb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kab = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return kaa + kbb - 2 * kab


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_mmd2_equals_the_unbiased_estimator_written_out(shift):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(25, 3)), rng.normal(size=(25, 3)) + [shift, 0, 0]
    got = gap.mmd(a, b, seed=1, permutations=5)["mmd2"]
    assert got == pytest.approx(unbiased_mmd2(a, b), rel=1e-10, abs=1e-14)


def test_mmd2_has_zero_mean_under_the_null():
    values = []
    for seed in range(50):
        rng = np.random.default_rng(100 + seed)
        values.append(gap.mmd(rng.normal(size=(40, 5)), rng.normal(size=(40, 5)), seed=seed, permutations=1)["mmd2"])
    se = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values)) < 3 * se, (np.mean(values), se)
