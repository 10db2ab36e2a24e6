"""Physics of the preprocessing: widths after broadening, flux conservation, velocity shifts."""
import numpy as np
import pytest
from astropy import units as u

from carmenes_dtl import preprocess as pp
from carmenes_dtl.config import Window

C = pp.C_KMS


def relativistic(v_kms):
    """λ_obs / λ_emit written here (c exact), so that the "observed" input owes nothing to `pp.doppler_factor`."""
    return np.sqrt((1 + v_kms / 299_792.458) / (1 - v_kms / 299_792.458))


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
    """The profile is nonzero exactly on |v| < vsini: the outermost pixels with weight are those
    that contain +/-vsini, so their centres lie within half a pixel of it, on both sides of the
    kernel's centre (a kernel one pixel short on each side is 1 to 1.5 pixels off)."""
    for dv in (0.05, pp.DV_KMS):
        for vsini in (3.27, 3.24, 5.0, 15.0, 30.0):
            kernel = pp.rotation_kernel(vsini, dv)
            v = (np.arange(kernel.size) - kernel.size // 2) * dv
            nonzero = v[kernel > 0]
            assert kernel.size % 2 == 1 and np.allclose(kernel, kernel[::-1], rtol=1e-12, atol=1e-15)
            assert abs(nonzero[-1] - vsini) <= dv / 2 + 1e-12 and abs(nonzero[0] + vsini) <= dv / 2 + 1e-12
            # the full width in Å at 8800 Å: 2 vsini lambda / c
            width = nonzero[-1] - nonzero[0]
            assert width / C * 8800 == pytest.approx(2 * vsini * 8800 / C, abs=dv / C * 8800)


def test_rotation_profile_second_moment():
    """Gray's profile G(x) ~ 2(1-e)sqrt(1-x^2) + (pi e/2)(1-x^2), x = v/vsini, has
    <x^2> = [(1-e)/4 + 2e/15] / [(1-e) + 2e/3] (integrals pi/8, 4/15 over pi/2, 4/3): 0.225 at e = 0.6.
    Averaging over pixels of width dv adds dv^2/12."""
    dv = 0.05
    for eps in (0.0, 0.6, 1.0):
        expected = ((1 - eps) / 4 + 2 * eps / 15) / ((1 - eps) + 2 * eps / 3)
        for vsini in (5.0, 20.0):
            k = pp.rotation_kernel(vsini, dv, eps)
            v = (np.arange(k.size) - k.size // 2) * dv
            assert np.sum(k * v) == pytest.approx(0.0, abs=1e-9)
            assert np.sum(k * v ** 2) == pytest.approx(expected * vsini ** 2 + dv ** 2 / 12, rel=2e-3)
    assert ((1 - 0.6) / 4 + 2 * 0.6 / 15) / ((1 - 0.6) + 2 * 0.6 / 3) == pytest.approx(0.225)


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
    """Output pixels wider than the input's: their mean flux integrates to the analytic
    integral of 1 + 0.3 sin(lambda), i.e. b - a - 0.3 (cos b - cos a)."""
    rng = np.random.default_rng(0)
    wave_in = np.sort(rng.uniform(8790, 8850, 5000))
    out = Window(8800, 8835, 0.05).wavelength
    res = pp.resample(wave_in, 1 + 0.3 * np.sin(wave_in), out)
    edges = pp.bin_edges(out)
    a, b = edges[:-1], edges[1:]
    per_pixel = (b - a - 0.3 * (np.cos(b) - np.cos(a))) / (b - a)
    np.testing.assert_allclose(res, per_pixel, rtol=1e-4)  # random sampling leaves a few wide gaps
    assert np.sum(res * (b - a)) == pytest.approx(edges[-1] - edges[0] - 0.3 * (np.cos(edges[-1]) - np.cos(edges[0])),
                                                  rel=1e-7)


def test_resample_keeps_line_shape_on_finer_pixels():
    """CARMENES-like pixels (2.8 per resolution element) onto 0.01 Å: the line is read from a
    spline, not a staircase; the error against the analytic profile is < 1 % of the depth
    (bin averaging gave 8.5 %, linear interpolation 3.5 %)."""
    sigma = 8817 / 94_600 / 2.3548
    wave_in = 8790 * np.exp(np.arange(2400) / (2.8 * 94_600))
    out = Window().wavelength
    for centre in (8817.0, 8817.013, 8817.021):
        got = pp.resample(wave_in, line(wave_in, centre, sigma), out)
        assert np.abs(got - line(out, centre, sigma)).max() < 0.01 * 0.5


def test_resample_propagates_sigma():
    """The propagated sigma matches the scatter of 400 seeded noise realisations, on finer
    (interpolated) and on wider (averaged) output pixels."""
    rng = np.random.default_rng(1)
    wave_in = 8790 * np.exp(np.arange(2400) / (2.8 * 94_600))
    sig_in = 0.01 * (1 + 0.5 * np.sin(wave_in))
    for out in (Window(8800, 8805, 0.01).wavelength, Window(8800, 8805, 0.1).wavelength):
        sig = pp.resample_sigma(wave_in, sig_in, out)
        noise = rng.normal(0, 1, (400, wave_in.size)) * sig_in
        draws = np.stack([pp.resample(wave_in, n, out) for n in noise])
        np.testing.assert_allclose(draws.std(axis=0).mean(), sig.mean(), rtol=0.05)
        np.testing.assert_allclose(np.median(draws.std(axis=0) / sig), 1, rtol=0.1)


def test_resample_sigma_blocks_equal_the_whole_operator():
    """The blocked noise propagation equals sqrt(M**2 @ sigma**2) with M built column by
    column from `resample` of unit vectors over the whole input (output spanning 3 blocks)."""
    wave_in = 8799 * np.exp(np.arange(700) / (2.8 * 94_600))
    sig_in = 0.01 * (1 + 0.5 * np.sin(wave_in * 7))
    for out in (Window(8800, 8807.5, 0.01).wavelength, Window(8800, 8805.12, 0.01).wavelength):
        # 3 blocks; 2 blocks and a last block of one pixel
        assert out.size > 2 * pp.SIGMA_BLOCK_PX
        columns = np.stack([pp.resample(wave_in, e, out) for e in np.eye(wave_in.size)], axis=1)
        np.testing.assert_allclose(pp.resample_sigma(wave_in, sig_in, out), np.sqrt(columns ** 2 @ sig_in ** 2),
                                   rtol=1e-9)


def test_doppler_shift_recovered_within_50_m_s():
    wave = pp.log_grid(8790, 8845)
    rng = np.random.default_rng(3)
    centres = rng.uniform(8795, 8840, 40)
    rest = np.prod([line(wave, c, 0.04, rng.uniform(0.1, 0.6)) for c in centres], axis=0)
    rest = pp.broaden(rest, 3.0)
    for v in (-47.321, 0.0, 12.345, 88.8):
        observed = np.interp(wave, wave * relativistic(v), rest)
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
    out, clipped = pp.normalise(flux)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() == 1.0
    assert out[1750] == pytest.approx(0.3, abs=1e-3)  # line depth survives
    assert np.max(flux / pp.continuum(flux)) < 1 + 1e-4  # a noise-free spectrum is hardly clipped
    flux[10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pp.normalise(flux)


def lined(wave, rng, n=60, scale=1.0):
    """A line spectrum (relative to a continuum of 1): `n` lines of 0.05 Å, depths times `scale`."""
    out = np.ones_like(wave)
    for c, d in zip(rng.uniform(8800, 8835, n), rng.uniform(0.05, 0.6, n)):
        out = out * line(wave, c, 0.05, scale * d)
    return out


def noisy_continua(true, reference, snr, n=200, seed=30):
    """Continua of `n` seeded noisy copies (S/N `snr` per pixel) of `true`, and the anchor count."""
    rng = np.random.default_rng(seed)
    fits = np.array([pp.continuum(true * (1 + rng.normal(0, 1 / snr, true.size)), reference) / true
                     for _ in range(n)])
    return fits, int(pp.upper_pixels(reference, pp.ANCHOR_FRACTION).sum())


def test_continuum_of_noisy_flat_spectrum_is_unbiased():
    """S/N 30 per pixel, normalised as the observed path does, against a line-rich synthetic
    reference (not against a flat one, which would make every pixel an anchor): over 200 noise
    draws the continuum is 1 within 0.1 % everywhere (unbiased; dividing by the brightest pixel
    gave about 0.90), and one draw scatters as a least-squares line through the anchors
    predicts (1-sigma 2/(30 sqrt(N)) at the ends): within 0.5 % on average over the window."""
    wave = Window().wavelength
    reference = lined(wave, np.random.default_rng(3))
    true = 2.7 * (1 + 0.0003 * (wave - 8817))
    fits, n_anchor = noisy_continua(true, reference, 30)
    assert 50 < n_anchor < wave.size / 2  # the reference's line-free pixels, not all pixels
    assert np.abs(fits.mean(axis=0) - 1).max() < 0.001
    assert fits[:, -1].std() == pytest.approx(2 / 30 / np.sqrt(n_anchor), rel=0.2)
    assert np.abs(fits - 1).mean() < 0.005
    rng = np.random.default_rng(30)
    out, clipped = pp.normalise(true * (1 + rng.normal(0, 1 / 30, wave.size)), reference)
    assert 0.4 < clipped / wave.size < 0.6 and out.max() == 1.0


def test_continuum_with_lines_under_noise_matches_noise_free():
    """Lines cover much of the spectrum: the mean is no continuum, and the maximum is a noise
    peak; with its noise-free reference, S/N 30 spectra get the reference's continuum within
    0.1 % on average over 200 noise draws."""
    wave = Window().wavelength
    clean = (1 + 0.002 * (wave - 8817)) * lined(wave, np.random.default_rng(31))
    fits, _ = noisy_continua(5 * clean, clean, 30, seed=31)
    ratio = fits * 5 * clean / (5 * pp.continuum(clean))
    assert np.abs(ratio.mean(axis=0) - 1).max() < 0.001
    assert np.abs(clean.mean() / pp.continuum(clean).mean() - 1) > 0.05  # the trivial baseline fails


def test_observed_line_depths_are_kept_whatever_the_reference():
    """An observed star whose lines are all 30 % deeper than its reference's: after normalising
    against that reference the vector is the star's own relative spectrum (known by
    construction, continuum 1) within 0.1 %, so the depth difference keeps its amplitude
    (scaling the reference's envelope by flux/reference over its top 30 % shifted it 0.6 %)."""
    wave = Window().wavelength
    reference = lined(wave, np.random.default_rng(5), n=250)  # line wings everywhere, as in M dwarfs
    star = lined(wave, np.random.default_rng(5), n=250, scale=1.3)
    vector = pp.normalise(3 * (1 + 0.002 * (wave - 8817)) * star, reference)[0]
    assert np.abs(vector - star).max() < 0.001
    assert np.abs(star - reference).max() > 0.1  # the difference kept is a real one


@pytest.fixture(scope="module")
def demo_spectra():
    """Noise-free demo-model spectra (vsini 4 km/s) on the window, before normalisation."""
    from carmenes_dtl import demo_lines

    model, wave, window = demo_lines.LineModel(), demo_lines.mock_phoenix_wavelength(), Window()
    grid = pp.log_grid(window.start - pp.MARGIN_A, window.stop + pp.MARGIN_A)

    def spectrum(teff, mh=0.0):
        return pp.resample(grid, pp.broaden(pp.resample(wave, model.flux(wave, teff, 5.0, mh), grid), 4.0),
                           window.wavelength)
    return spectrum


@pytest.mark.parametrize("teff, mh, bound", [(3200, 0.0, 0.001), (3400, 0.0, 0.001),
                                             (3300, -0.5, 0.005), (3300, 0.5, 0.005)])
def test_reference_one_grid_step_away_hardly_moves_the_vector(demo_spectra, teff, mh, bound):
    """A 3300 K, [M/H] 0 star normalised against a reference one grid step away (100 K or
    0.5 dex) instead of against itself: every pixel moves by less than `bound` (0.1 % per
    100 K, 0.5 % per 0.5 dex; the reference-scaled continuum moved 0.24 % and 1.0 %)."""
    star = demo_spectra(3300)
    moved = pp.normalise(star, demo_spectra(teff, mh))[0] - pp.normalise(star)[0]
    assert np.abs(moved).max() < bound


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
