"""Photon noise for the `direct` baseline's training spectra (``direct_noise="observed"``)."""
import numpy as np

from carmenes_dtl.cnn import with_photon_noise


def _flux(rows=400, pixels=3001):
    """Rows of two flux levels: 0.9 on 1501 pixels (the median), 0.4 on 1500."""
    flux = np.full((rows, pixels), 0.9, np.float32)
    flux[:, :1500] = 0.4
    return flux


def test_snr_at_the_median_flux_is_the_drawn_one_and_variance_grows_as_flux():
    flux = _flux()
    noise = with_photon_noise(flux, np.array([50.0]), seed=1) - flux
    sigma_high, sigma_low = noise[:, 1500:].std(), noise[:, :1500].std()
    np.testing.assert_allclose(0.9 / sigma_high, 50, rtol=0.01)  # S/N at the median flux
    np.testing.assert_allclose(sigma_low**2 / sigma_high**2, 0.4 / 0.9, rtol=0.02)  # photon noise: variance ∝ f
    np.testing.assert_allclose(noise.mean(), 0, atol=1e-4)


def test_each_spectrum_draws_its_snr_from_the_observed_ones():
    flux = _flux(rows=200)
    noisy = with_photon_noise(flux, np.array([30.0, 300.0]), seed=2)
    snr = 0.9 / (noisy - flux)[:, 1500:].std(axis=1)
    near = np.minimum(np.abs(snr / 30 - 1), np.abs(snr / 300 - 1))
    assert near.max() < 0.06
    assert 0.35 < np.mean(snr < 100) < 0.65
    np.testing.assert_array_equal(noisy, with_photon_noise(flux, np.array([30.0, 300.0]), seed=2))
    assert noisy.dtype == np.float32 and noisy.min() >= 0 and noisy.max() <= 1


def test_only_the_spectra_space_trains_on_noise_and_a_set_without_snr_is_named(monkeypatch):
    from types import SimpleNamespace

    import pandas as pd
    import pytest

    from carmenes_dtl import cnn
    from carmenes_dtl.config import CNNSettings
    from carmenes_dtl.rundir import Latents

    rng = np.random.default_rng(0)
    flux = rng.uniform(0.3, 0.9, (12, 50)).astype(np.float32)
    params = pd.DataFrame({"teff": np.arange(12.0), "logg": 5.0, "mh": 0.0, "vsini": 2.0})
    syn = SimpleNamespace(flux=flux, parameters=params, labels=params.to_numpy())
    latents = Latents({("syn", "pre", 0): flux[:, :8]})
    seen = {}
    monkeypatch.setattr(cnn, "train_ensemble", lambda x, y, s, seed, pool=0, progress=False: seen.setdefault(pool, x))
    s = CNNSettings(direct_noise="observed")
    cnn.train_space(syn, latents, "pre", 1, s, seed=1, snr=[50.0])
    cnn.train_space(syn, latents, "spectra", 1, s, seed=1, snr=[50.0])
    np.testing.assert_array_equal(seen[0], flux[:, :8])  # latents untouched
    noise = seen[8] - flux
    assert 0.2 / 50 < noise.std() < 1.0 / 50  # σ = √(f f_median) / 50 with f in 0.3-0.9
    with pytest.raises(ValueError, match="needs the observed stars' S/N"):
        cnn.train_space(syn, latents, "spectra", 1, s, seed=1, snr=None)
