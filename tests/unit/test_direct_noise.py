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
