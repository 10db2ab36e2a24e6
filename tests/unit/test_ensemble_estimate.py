"""`cnn.estimate` pools every autoencoder's CNN members (paper Sect. 3.3, cnn_training.py:69-87).

Expected values: `np.median` and `np.percentile` (16, 84) of the concatenation of all members
of both autoencoders, written here; the member predictions are hand-built, not trained, and
the two autoencoders' predictions are far apart, so pooling only one of them moves every number.
"""
import numpy as np
import pytest

from carmenes_dtl import cnn
from carmenes_dtl.config import PARAMETERS, PUBLISHED_NAMES

RNG = np.random.default_rng(24)
N_STARS = 4
#: parameter -> (predictions of autoencoder 0's 5 members, autoencoder 1's 7 members), per star.
MEMBERS = {p: (RNG.normal(loc, scale, (5, N_STARS)), RNG.normal(loc + 6 * scale, scale, (7, N_STARS)))
           for p, loc, scale in zip(PARAMETERS, (3300.0, 4.9, -0.1, 4.0), (40.0, 0.04, 0.08, 0.5))}
#: Held-out residuals of each autoencoder's ensemble (sizes differ, spreads differ by 4x).
RESIDUALS = {p: (RNG.normal(0, s, 30), RNG.normal(0, 4 * s, 50))
             for p, s in zip(PARAMETERS, (30.0, 0.03, 0.05, 0.3))}


class HandBuilt:
    """Stands in for a trained `cnn.Ensemble`: fixed member predictions for its own inputs."""

    def __init__(self, k):
        self.k, self.inputs = k, np.full((N_STARS, 3), float(k))
        self.residuals = {p: RESIDUALS[p][k] for p in PARAMETERS}

    def member_predictions(self, x):
        assert np.array_equal(x, self.inputs), "an ensemble got another autoencoder's inputs"
        return {p: MEMBERS[p][self.k] for p in PARAMETERS}


def run(uncertainty):
    ensembles = [HandBuilt(0), HandBuilt(1)]
    return cnn.estimate(ensembles, [e.inputs for e in ensembles], [f"J{i:05d}" for i in range(N_STARS)],
                        uncertainty)[0]


def test_members_of_every_autoencoder_are_pooled():
    est = run("members")
    for p in PARAMETERS:
        pooled = np.concatenate(MEMBERS[p])  # (12, stars)
        med = np.median(pooled, axis=0)
        p16, p84 = np.percentile(pooled, [16, 84], axis=0)
        name = PUBLISHED_NAMES[p]
        np.testing.assert_allclose(est[name], med, rtol=1e-12)
        np.testing.assert_allclose(est[f"e_{name}"], med - p16, rtol=1e-9)
        np.testing.assert_allclose(est[f"E_{name}"], p84 - med, rtol=1e-9)
        assert np.all(np.abs(med - np.median(MEMBERS[p][0], axis=0)) > 1e-3 * np.abs(med))  # pooling matters


def test_residuals_of_every_autoencoder_are_pooled():
    """``uncertainty="residuals"``: a star's draws are the pooled members' median plus the pooled
    residuals of both ensembles, shifted so that their median is that median (cnn.py's docstring)."""
    est = run("residuals")
    for p in PARAMETERS:
        med = np.median(np.concatenate(MEMBERS[p]), axis=0)
        resid = np.concatenate(RESIDUALS[p])
        draws = med[:, None] + resid[None, :] - np.median(resid)
        p16, p84 = np.percentile(draws, [16, 84], axis=1)
        name = PUBLISHED_NAMES[p]
        np.testing.assert_allclose(est[name], med, rtol=1e-12)
        np.testing.assert_allclose(est[f"e_{name}"], med - p16, rtol=1e-9)
        np.testing.assert_allclose(est[f"E_{name}"], p84 - med, rtol=1e-9)
    with pytest.raises(ValueError, match="uncertainty"):
        run("bootstrap")
