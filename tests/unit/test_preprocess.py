"""Physics of the preprocessing: widths after broadening, flux conservation, velocity shifts."""
import numpy as np
import pytest
from astropy import units as u

from carmenes_dtl import preprocess as pp
from carmenes_dtl.config import Window

C = pp.C_KMS


def fwhm(x, y):
    """Full width at half minimum of an absorption line (linear interpolation)."""
    d = 1 - y
    half = d.max() / 2
    above = np.flatnonzero(d >= half)
    i, j = above[0], above[-1]
    left = np.interp(half, [d[i - 1], d[i]], [x[i - 1], x[i]])
    right = np.interp(half, [d[j + 1], d[j]], [x[j + 1], x[j]])
    return right - left


def line(wave, centre, sigma_a, depth=0.5):
    return 1 - depth * np.exp(-0.5 * ((wave - centre) / sigma_a) ** 2)


def test_instrumental_fwhm_matches_resolution():
    wave = pp.log_grid(8800, 8840, 0.05)
    narrow = line(wave, 8820, 8820 * 0.2 / C)  # 0.2 km/s sigma: intrinsically unresolved
    out = pp.broaden(narrow, 0.0, 94_600, 0.05)
    expected = np.sqrt((8820 / 94_600) ** 2 + (2.3548 * 8820 * 0.2 / C) ** 2)
    assert fwhm(wave, out) == pytest.approx(expected, rel=0.01)


def test_rotation_profile_full_width_is_two_vsini():
    dv = 0.05
    for vsini in (5.0, 15.0, 30.0):
        kernel = pp.rotation_kernel(vsini, dv)
        nonzero = np.flatnonzero(kernel > 0)
        width_kms = (nonzero[-1] - nonzero[0] + 1) * dv
        assert width_kms == pytest.approx(2 * vsini, abs=2 * dv)
        # same in Å at 8800 Å: 2 vsini lambda / c
        assert width_kms / C * 8800 == pytest.approx(2 * vsini * 8800 / C, rel=0.01)


def test_rotation_delta_line_width_in_angstrom():
    wave = pp.log_grid(8800, 8840, 0.05)
    delta = np.ones_like(wave)
    k = np.argmin(np.abs(wave - 8820))
    delta[k] = 0.0
    out = pp.broaden(delta, 20.0, None, 0.05)
    absorbing = wave[out < 1 - 1e-9]
    assert absorbing[-1] - absorbing[0] == pytest.approx(2 * 20.0 * 8820 / C, rel=0.01)


def test_equivalent_width_conserved():
    wave = pp.log_grid(8800, 8840)
    flux = line(wave, 8815, 0.05, 0.6) * line(wave, 8825, 0.08, 0.3)
    ew0 = np.trapezoid(1 - flux, wave)
    for vsini in (1.5, 10.0, 30.0):
        ew = np.trapezoid(1 - pp.broaden(flux, vsini), wave)
        assert ew == pytest.approx(ew0, rel=1e-3)
    out_wave = Window(8805, 8835).wavelength
    resampled = pp.resample(wave, flux, out_wave)
    sl = (wave > 8805) & (wave < 8835)
    assert np.trapezoid(1 - resampled, out_wave) == pytest.approx(np.trapezoid(1 - flux[sl], wave[sl]), rel=1e-3)


def test_resample_conserves_total_flux():
    rng = np.random.default_rng(0)
    wave_in = np.sort(rng.uniform(8790, 8850, 5000))
    flux = 1 + 0.3 * np.sin(wave_in)
    out = Window(8800, 8835, 0.05).wavelength
    res = pp.resample(wave_in, flux, out)
    e_in, e_out = pp.bin_edges(wave_in), pp.bin_edges(out)
    cum = np.concatenate([[0], np.cumsum(flux * np.diff(e_in))])
    total = np.interp(e_out[-1], e_in, cum) - np.interp(e_out[0], e_in, cum)
    assert np.sum(res * np.diff(e_out)) == pytest.approx(total, rel=1e-10)


def test_doppler_shift_recovered_within_50_m_s():
    wave = pp.log_grid(8790, 8845)
    rng = np.random.default_rng(3)
    centres = rng.uniform(8795, 8840, 40)
    rest = np.prod([line(wave, c, 0.04, rng.uniform(0.1, 0.6)) for c in centres], axis=0)
    rest = pp.broaden(rest, 3.0)
    for v in (-47.321, 0.0, 12.345, 88.8):
        observed = np.interp(wave, wave * pp.doppler_factor(v), rest)
        template_wave = Window(8805, 8830).wavelength
        template = np.interp(template_wave, wave, rest)
        rv = pp.cross_correlate_rv(wave, observed, template_wave, template)
        assert abs(rv - v) < 0.05, (v, rv)


def test_doppler_factor_accepts_quantities():
    assert pp.as_kms(30 * u.m / u.s) == pytest.approx(0.03)
    assert pp.doppler_factor(pp.as_kms(100 * u.km / u.s)) == pytest.approx(1 + 100 / C, rel=1e-6)


def test_normalise_maps_to_unit_interval_and_rejects_nan():
    x = np.linspace(0, 1, 3501)
    flux = (2 + x) * line(x, 0.5, 0.01, 0.7)
    out = pp.normalise(flux)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() == 1.0
    assert out[1750] == pytest.approx(0.3, abs=0.02)  # line depth survives
    flux[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pp.normalise(flux)


def test_window_outside_data_is_named():
    wave = np.linspace(8700, 8810, 1000)
    with pytest.raises(ValueError, match="8800.0-8835.0 Å.*outside the data coverage 8700.00-8810.00"):
        pp.synthetic_to_window(wave, np.ones_like(wave), [2.0])


def test_window_parse():
    w = Window.parse("8700,8735")
    assert w.n == 3501 and w.wavelength[-1] == pytest.approx(8735)
    with pytest.raises(ValueError):
        Window.parse("8835,8800")


def test_broaden_many_equals_one_at_a_time():
    wave = pp.log_grid(8800, 8840)
    flux = line(wave, 8815, 0.05, 0.6) * line(wave, 8830, 0.03, 0.4)
    many = pp.broaden_many(flux, [1.5, 8.0, 30.0])
    for row, v in zip(many, [1.5, 8.0, 30.0]):
        np.testing.assert_allclose(row, pp.broaden(flux, v), atol=1e-12)
