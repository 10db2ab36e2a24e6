"""The demo survey: real layouts, determinism, truth vs headers, each gap effect at its stated size."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from carmenes_dtl import archives, demo, preprocess


def digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = demo.write_demo(tmp_path / "a", seed=3, n_stars=2, progress=False)
    b = demo.write_demo(tmp_path / "b", seed=3, n_stars=2, progress=False)
    c = demo.write_demo(tmp_path / "c", seed=4, n_stars=2, progress=False)
    assert digest(a / "carmenes") == digest(b / "carmenes")
    assert (a / "truth.csv").read_bytes() == (b / "truth.csv").read_bytes()
    assert digest(a / "phoenix") == digest(b / "phoenix")
    assert digest(a / "carmenes") != digest(c / "carmenes")
    assert (a / "truth.csv").read_bytes() != (c / "truth.csv").read_bytes()


def test_truth_matches_headers(demo_survey):
    truth = pd.read_csv(demo_survey / "truth.csv")
    assert list(truth.columns[:6]) == ["karmn", "file", "Teff", "logg", "[M/H]", "vsini"]
    assert demo.in_paper_ranges(truth)
    for row in truth.itertuples():
        head = fits.getheader(demo_survey / row.file)
        assert head["OBJECT"] == row.karmn
        assert head["HIERARCH CARACAL BJD"] + 2400000 == pytest.approx(row.bjd)
        assert head["RA"] == pytest.approx(row.ra) and head["DEC"] == pytest.approx(row.dec)


def test_snr_from_sig_matches_truth(demo_survey):
    truth = pd.read_csv(demo_survey / "truth.csv")
    for row in truth.itertuples():
        with fits.open(demo_survey / row.file) as h:
            cont, sig = h["CONT"].data.astype(float), h["SIG"].data.astype(float)
        peak = np.unravel_index(np.argmax(cont), cont.shape)
        assert cont[peak] / sig[peak] == pytest.approx(row.snr, rel=0.05)


def _depths(effects, teff=3500.0):
    model = demo.LineModel(effects)
    wave = preprocess.log_grid(8795, 8840)
    flux = model.flux(wave, teff, 5.0, 0.0) / model.flux(wave, teff, 5.0, 0.0).max()
    return wave, flux


def test_gap_none_is_the_synthetic_model():
    w, syn = _depths(None)
    _, obs = _depths(demo.gap_effects("none"))
    np.testing.assert_allclose(obs, syn, rtol=1e-12)


def _spectrum(effects, atomic=True, molecular=True, teff=3500.0):
    """ln flux of the demo model at (teff, 5.0, 0.0), optionally with its atomic or molecular lines off."""
    model = demo.LineModel(effects)
    if not atomic:
        model.atomic[:, 1] = 0.0
    if not molecular:
        model.mol_strength = np.zeros_like(model.mol_strength)
    wave = preprocess.log_grid(8795, 8840)
    return wave, np.log(model.flux(wave, teff, 5.0, 0.0))


def test_gap_effects_have_their_stated_size():
    from dataclasses import replace
    from scipy.optimize import curve_fit
    from scipy.special import voigt_profile

    e, none = demo.gap_effects("paper"), demo.gap_effects("none")
    assert demo.gap_effects("strong").line_strength_scatter == pytest.approx(2 * e.line_strength_scatter)
    # molecular band: the observed band's optical depth, measured against the same spectrum without
    # the band, is (1 + molecular_scale) times the synthetic one (slope of a fit over all pixels)
    only_band = replace(none, molecular_scale=e.molecular_scale)
    wave, syn = _spectrum(None, atomic=False)
    _, obs = _spectrum(only_band, atomic=False)
    _, bare = _spectrum(None, atomic=False, molecular=False)
    tau_syn, excess = bare - syn, syn - obs
    slope = np.polyfit(tau_syn, excess, 1)[0]
    assert slope == pytest.approx(e.molecular_scale, rel=0.02) and np.ptp(tau_syn) > 0.1
    # damping: the Lorentz width fitted to the Mg I 8809.17 line's optical depth grows by damping_scale
    widths = []
    for effects in (None, replace(none, damping_scale=e.damping_scale)):
        wave, lines = _spectrum(effects, molecular=False)
        _, bare = _spectrum(effects, atomic=False, molecular=False)
        near = np.abs(wave - 8809.17) < 0.8
        tau = bare[near] - lines[near]

        def voigt(x, area, sigma, gamma, floor):
            return area * voigt_profile(x - 8809.17, sigma, gamma) + floor

        widths.append(curve_fit(voigt, wave[near], tau, p0=(0.1, 0.04, 0.05, 0.0))[0][2])
    assert widths[1] / widths[0] == pytest.approx(e.damping_scale, rel=0.03)
    # missing lines: present in observed spectra only, each at least 1 % deep at its centre
    wave, syn = _spectrum(None)
    _, obs = _spectrum(replace(none, missing_lines=e.missing_lines, missing_line_strength=e.missing_line_strength))
    at = [np.argmin(np.abs(wave - w0)) for w0 in demo.LineModel(e).extra[:, 0] if 8796 < w0 < 8839]
    assert len(at) >= 8 and np.median(syn[at] - obs[at]) > 0.01
    # atomic line strengths: ln(observed/synthetic) depth of each line has about the stated rms
    ratio = np.log(demo.LineModel(e).line_scale)
    assert 0.5 * e.line_strength_scatter < np.sqrt(np.mean(ratio ** 2)) < 2 * e.line_strength_scatter


def test_observed_files_show_noise_tellurics_and_continuum_error():
    from dataclasses import replace

    star = demo.draw_stars(1, np.random.default_rng(0)).iloc[0].copy()
    star["snr"], star["airmass"] = 100.0, 1.5
    e = demo.gap_effects("strong")
    model = demo.LineModel(e)
    runs = {name: demo.observed_star(star, model, eff, np.random.default_rng(1))
            for name, eff in (("all", e), ("no_telluric", replace(e, telluric_depth=0.0)),
                              ("no_continuum", replace(e, continuum_error=0.0)))}
    wave, spec, cont, sig, _ = runs["all"]
    k = int(np.argmax([(w[0] < 8800) & (w[-1] > 8835) for w in wave]))
    i = np.argmin(np.abs(wave[k] - 8819.6))
    # SIG**2 is the expected count level, so ratios of it isolate each effect
    # telluric residual: depth = telluric_depth x airmass at the line centre (observatory frame)
    ratio = (sig[k, i] / runs["no_telluric"][3][k, i]) ** 2
    assert ratio == pytest.approx(1 - e.telluric_depth * 1.5 * np.exp(-0.5 * ((wave[k, i] - 8819.6) / 0.05) ** 2),
                                  rel=1e-4)
    # continuum error: a smooth multiplicative factor of at most a few x continuum_error
    factor = (sig[k] / runs["no_continuum"][3][k]) ** 2
    assert 0 < np.abs(factor - 1).max() < 3 * e.continuum_error
    # photon noise: pulls about a running mean have unit scatter
    pull = (spec[k] - np.convolve(spec[k], np.ones(9) / 9, "same"))[50:-50] / sig[k][50:-50]
    assert 0.6 < np.std(pull) < 1.4


def test_readers_open_demo_unchanged(demo_survey):
    """Every demo file opens with the package's archive readers and carries its truth."""
    truth = pd.read_csv(demo_survey / "truth.csv").set_index("file")
    files = archives.scan_carmenes(demo_survey / "carmenes")
    assert [f"carmenes/{f.name}" for f in files] == sorted(truth.index)
    for f in files:
        spec = archives.read_carmenes(f)
        assert spec.karmn == truth.loc[f"carmenes/{f.name}", "karmn"] and not spec.barycentric
        assert spec.wave.shape == spec.flux.shape == (61, 4096) and np.isfinite(spec.flux).all()
        assert spec.wave.min() < 8795 and spec.wave.max() > 8840
    phoenix = demo_survey / "phoenix"
    wave = archives.read_phoenix_wavelength(phoenix / archives.PHOENIX_WAVE_FILE)
    nodes = archives.scan_phoenix(phoenix)
    spec = demo.SIZES["quick"]
    assert len(nodes) == len(spec.logg) * len(spec.mh) * (int((spec.teff[1] - spec.teff[0]) // 100) + 1)
    for f in nodes:
        s = archives.read_phoenix(f, wave)
        assert f.relative_to(phoenix).as_posix() == archives.phoenix_relpath(s.teff, s.logg, s.mh)
        assert s.nan_pixels == 0 and (s.flux > 0).all()


def test_karmn_ids():
    assert demo.karmn_id(1.2954, 45.7866) == "J00051+457"
    assert demo.karmn_id(190.0, -7.5) == "J12400-075"
