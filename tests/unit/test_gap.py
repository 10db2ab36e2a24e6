"""Gap metrics: 'no gap' values on one distribution, a clear gap on a shifted one."""
import subprocess
import sys

import numpy as np
import pytest

from carmenes_dtl import gap


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(1, 0.1, 10))
    a = rng.multivariate_normal(np.zeros(10), cov, 200)
    b = rng.multivariate_normal(np.zeros(10), cov, 200)
    shifted = rng.multivariate_normal(np.r_[0.8, np.zeros(9)], cov, 200)
    return a, b, shifted


def test_no_gap_values(samples):
    a, b, _ = samples
    assert gap.domain_auc(a, b, seed=1)["domain_auc"] == pytest.approx(0.5, abs=0.05)
    assert gap.mmd(a, b, seed=1)["mmd_p_value"] > 0.05
    assert gap.nn_distances(a, b)["nn_distance_ratio"] == pytest.approx(1.0, abs=0.15)


def test_clear_gap(samples):
    a, _, s = samples
    assert gap.domain_auc(a, s, seed=1)["domain_auc"] > 0.65
    assert gap.mmd(a, s, seed=1)["mmd_p_value"] < 0.01
    assert gap.nn_distances(a, s + 3)["nn_distance_ratio"] > 1.5


@pytest.mark.parametrize("method", ["pca", "tsne", "umap"])
def test_projections_seeded_and_reproducible(samples, method, tmp_path):
    a, b, _ = samples
    p1 = gap.project(a[:80], b[:80], method, seed=3)
    p2 = gap.project(a[:80], b[:80], method, seed=3)
    assert p1.shape == (160, 2)
    np.testing.assert_allclose(p1, p2)
    if method == "umap":  # another process loads the kernels this one compiled and cached: the same embedding
        code = ("import sys, numpy as np\nfrom carmenes_dtl import gap\nab = np.load(sys.argv[1])\n"
                "np.save(sys.argv[2], gap.project(ab['a'], ab['b'], 'umap', seed=3))")
        np.savez(tmp_path / "ab.npz", a=a[:80], b=b[:80])
        subprocess.run([sys.executable, "-c", code, tmp_path / "ab.npz", tmp_path / "p.npy"], check=True)
        np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), p1)


def test_best_match_residual_finds_the_line():
    rng = np.random.default_rng(0)
    syn = 1 - 0.3 * rng.random((50, 1)) * np.exp(-0.5 * ((np.arange(100) - 30) / 2.0) ** 2)
    obs = syn[:10] - 0.2 * np.exp(-0.5 * ((np.arange(100) - 70) / 2.0) ** 2)  # a line missing in syn
    res = gap.best_match_residual(syn, obs)
    assert np.argmin(res) == 70 and res[70] == pytest.approx(-0.2, abs=0.02)
