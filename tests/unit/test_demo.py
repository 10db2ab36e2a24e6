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


def test_gap_effects_have_their_stated_size():
    e = demo.gap_effects("paper")
    assert demo.gap_effects("strong").line_strength_scatter == pytest.approx(2 * e.line_strength_scatter)
    syn_model, obs_model = demo.LineModel(), demo.LineModel(e)
    # line strengths: ln(observed/synthetic) per atomic line has the stated rms (draws are fixed)
    ratio = np.log(obs_model.line_scale)
    assert np.std(ratio) == pytest.approx(e.line_strength_scatter * np.std(np.log(
        demo.LineModel(demo.gap_effects("strong")).line_scale)) / 0.25, rel=1e-9)
    assert 0.5 * e.line_strength_scatter < np.sqrt(np.mean(ratio ** 2)) < 2 * e.line_strength_scatter
    # missing lines: present in observed spectra only, with measurable depth
    assert len(obs_model.extra) == e.missing_lines and len(syn_model.extra) == 0
    wave, syn = _depths(None)
    _, obs = _depths(e)
    at = [np.argmin(np.abs(wave - w0)) for w0 in obs_model.extra[:, 0]]
    assert np.median(syn[at] - obs[at]) > 0.01
    # molecular band deeper by the stated factor at the band's own lines
    assert obs_model.effects.molecular_scale == pytest.approx(0.125)


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
    files = archives.scan_carmenes(demo_survey / "carmenes")
    assert len(files) == 6
    assert all(f.name.startswith("car-") and f.name.endswith("-sci-gtoc-vis_A.fits") for f in files)


def test_karmn_ids():
    assert demo.karmn_id(1.2954, 45.7866) == "J00051+457"
    assert demo.karmn_id(190.0, -7.5) == "J12400-075"
