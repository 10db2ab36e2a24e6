"""The demo survey: real layouts, determinism, truth vs headers, each gap effect at its stated size."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from carmenes_dtl import archives, demo, demo_gap, demo_lines, demo_stars, preprocess
from carmenes_dtl.config import DEMO_SIZES
from carmenes_dtl.demo_gap import GapMix


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
    assert demo_stars.in_paper_ranges(truth)
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


def _spectrum(mix, atomic=True, molecular=True, teff=3500.0, logg=5.0):
    """ln flux of the demo model at (teff, logg, 0.0), optionally with its atomic or molecular lines off."""
    model = demo_lines.LineModel(mix)
    if not atomic:
        model.atomic[:, 1] = 0.0
    if not molecular:
        model.mol_strength = np.zeros_like(model.mol_strength)
    wave = preprocess.log_grid(8795, 8840)
    return wave, np.log(model.flux(wave, teff, logg, 0.0))


@pytest.mark.parametrize("text,scales,name", [
    ("none", (0, 0), "none"), ("mild", (0.25, 0.25), "mild"), ("paper", (0.5, 0.5), "paper"),
    ("strong", (1, 1), "strong"), ("degenerate=0.5", (0.5, 0), "degenerate=0.5,shared=0"),
    ("shared=0.25, degenerate=1", (1, 0.25), "degenerate=1,shared=0.25"), ("shared=1", (0, 1), "degenerate=0,shared=1"),
    ("degenerate=0.5,shared=0.5", (0.5, 0.5), "paper")])
def test_gap_mix_parses_levels_and_mixes(text, scales, name):
    mix = GapMix.parse(text)
    assert (mix.degenerate, mix.shared) == scales and mix.name == name
    assert GapMix.parse(mix.name) == mix


@pytest.mark.parametrize("text,part", [("medium", "'medium'"), ("degenerate=-1", "'degenerate=-1'"),
                                       ("shared=x", "'shared=x'"), ("degenerate=1,degenerate=2", "'degenerate=2'"),
                                       ("veiling=1", "'veiling=1'"), ("shared=inf", "'shared=inf'"), ("", "''")])
def test_gap_mix_parse_names_the_bad_part(text, part):
    with pytest.raises(ValueError, match=f"gap {text!r}: {part}"):
        GapMix.parse(text)


def test_gap_mix_keeps_the_digits_of_its_name():
    """Scales are rounded to what `name` shows, so a name (stage keys, folders) is one mix; scales
    that no text could give are refused."""
    mix = GapMix(0.1234567, 0.5)
    assert (mix.degenerate, mix.name) == (0.123457, "degenerate=0.123457,shared=0.5")
    assert GapMix.parse(mix.name) == mix and GapMix(0.5, 0.5).spec == "degenerate=0.5,shared=0.5"
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            GapMix(0.0, bad)


def test_families_off_remove_exactly_their_effects():
    wave = preprocess.log_grid(8795, 8840)
    syn = demo_lines.LineModel().flux(wave, 3400.0, 4.9, -0.2)
    np.testing.assert_array_equal(demo_lines.LineModel(GapMix(0, 0)).flux(wave, 3400.0, 4.9, -0.2), syn)
    shared_only = demo_lines.LineModel(GapMix(0, 1))
    assert len(shared_only.extra) == 12
    shared_only.extra = shared_only.extra[:0]  # its missing lines and line pattern aside, it is the synthetic model
    shared_only.line_pattern = np.zeros_like(shared_only.line_pattern)
    np.testing.assert_array_equal(shared_only.flux(wave, 3400.0, 4.9, -0.2), syn)
    # degenerate only: no missing lines, and no observation effect: the relative flux on the orders is the
    # model's own, broadened at R = 94,600 and shifted by RV and BERV, nothing else (computed here directly)
    star = demo_stars.draw_stars(1, np.random.default_rng(0)).iloc[0]
    model = demo_lines.LineModel(GapMix(1, 0))
    assert len(model.extra) == 0
    wave, rel, berv = demo.observed_relative(star, model, np.random.default_rng(1))
    grid = preprocess.log_grid(demo_lines.MOCK_RANGE[0] + 5, demo_lines.MOCK_RANGE[1] - 5)
    params = (star.Teff, star.logg, star["[M/H]"])
    rest = preprocess.broaden(model.flux(grid, *params) / model.continuum(grid, *params), star.vsini, 94_600)
    def relativistic(v):  # written here, not the package's doppler_factor
        return np.sqrt((1 + v / 299_792.458) / (1 - v / 299_792.458))

    shift = relativistic(berv) / relativistic(star.rv)
    np.testing.assert_allclose(rel, np.interp(wave * shift, grid, rest, left=1.0, right=1.0), rtol=1e-12)


def test_degenerate_effects_equal_other_parameters():
    """Each degenerate effect, as the model computes it, equals the parameter shift `parameter_equivalents`
    states: the observed band at Teff is the synthetic band at Teff + ΔTeff (or [M/H] + Δ[M/H]); the
    observed Lorentz widths at logg are the synthetic ones at logg + Δlogg (fitted to a line)."""
    from scipy.optimize import curve_fit
    from scipy.special import voigt_profile

    mix, syn = GapMix(0.5, 0), demo_lines.LineModel()
    obs = demo_lines.LineModel(mix)
    for teff in (3000.0, 3500.0, 4000.0):
        eq = demo_gap.parameter_equivalents(mix, teff, 0.1)["molecular_band"]
        assert obs._band(teff, 4.9, 0.1) == pytest.approx(syn._band(teff + eq["Teff"], 4.9, 0.1), rel=1e-12)
        assert obs._band(teff, 4.9, 0.1) == pytest.approx(syn._band(teff, 4.9, 0.1 + eq["[M/H]"]), rel=1e-12)
    eq = demo_gap.parameter_equivalents(mix)
    # at 3500 K the band is 12.5 % stronger: -420 ln 1.125 = -49.5 K, 2 log10 1.125 = +0.102 dex (by hand)
    assert eq["molecular_band"]["Teff"] == pytest.approx(-49.47, abs=0.01)
    assert eq["molecular_band"]["[M/H]"] == pytest.approx(0.1023, abs=1e-4)
    # cooler stars: a larger excess (growing toward cool stars)
    assert demo_gap.parameter_equivalents(mix, 3000.0)["molecular_band"]["Teff"] < eq["molecular_band"]["Teff"] - 25
    # damping x1.25 = Δlogg +0.242: the Lorentz width fitted to the Mg I 8809.17 line's optical depth
    widths = []
    for model_mix, logg in ((mix, 5.0), (None, 5.0 + eq["damping"]["logg"]), (None, 5.0)):
        wave, lines = _spectrum(model_mix, molecular=False, logg=logg)
        _, bare = _spectrum(model_mix, atomic=False, molecular=False, logg=logg)
        near = np.abs(wave - 8809.17) < 0.8

        def voigt(x, area, sigma, gamma, floor):
            return area * voigt_profile(x - 8809.17, sigma, gamma) + floor

        widths.append(curve_fit(voigt, wave[near], bare[near] - lines[near], p0=(0.1, 0.04, 0.05, 0.0))[0][2])
    assert eq["damping"]["logg"] == pytest.approx(2.5 * np.log10(1.25))
    assert widths[0] == pytest.approx(widths[1], rel=0.03) and widths[0] / widths[2] == pytest.approx(1.25, rel=0.03)
    # line strengths: one factor for every atomic line, ln(obs/syn) = 0.125 at 3500 K, [M/H] 0, i.e.
    # 0.125 / ln 10 = 0.054 dex of [M/H]; 0.125 (1 + 0.25 + 0.25) = 0.1875 at 3000 K, [M/H] -0.5 (by hand)
    np.testing.assert_allclose(np.log(obs.line_scale(3500.0, 0.0)), 0.125, rtol=1e-12)
    np.testing.assert_allclose(np.log(obs.line_scale(3000.0, -0.5)), 0.1875, rtol=1e-12)
    assert eq["line_strengths"]["[M/H]"] == pytest.approx(0.0543, abs=1e-4)
    for teff, mh in ((3100.0, -0.4), (3900.0, 0.3)):  # the atomic lines equal the synthetic ones at [M/H] + Δ
        shift = demo_gap.parameter_equivalents(mix, teff, mh)["line_strengths"]["[M/H]"]
        np.testing.assert_allclose(obs.line_scale(teff, mh) * 10 ** mh, 10 ** (mh + shift), rtol=1e-12)
    # damping grows toward cool stars: x(1 + 0.25 x 3500/3000) at 3000 K (size 0.25 at scale 0.5)
    assert demo_gap.parameter_equivalents(mix, 3000.0)["damping"]["logg"] == pytest.approx(2.5 * np.log10(1 + 0.25 * 3500 / 3000))


def test_line_pattern_is_shared_a_fixed_error_per_line():
    """The per-line strength errors belong to the shared family: unit-rms pattern x size, the same in every star."""
    obs = demo_lines.LineModel(GapMix(0, 0.5))
    first = np.log(obs.line_scale(3100.0, -0.4))
    assert np.sqrt(np.mean(first ** 2)) == pytest.approx(0.125, rel=1e-12)
    np.testing.assert_array_equal(np.log(obs.line_scale(3900.0, 0.3)), first)
    assert np.ptp(demo_lines.LineModel(GapMix(0.5, 0)).line_scale(3500.0, 0.0)) == 0.0


def test_gap_table_lists_each_effect_with_family_and_size():
    table = demo_gap.gap_table()
    assert table.loc[["line_strengths", "molecular_band", "damping"], "family"].eq("degenerate").all()
    assert set(table.loc[table.family == "shared"].index) == {"missing_lines", "line_spread", "continuum",
                                                              "tellurics", "veiling", "wavelength_drift",
                                                              "line_pattern"}
    assert table.loc["photon_noise", "family"] == "always"
    # sizes at paper (scale 0.5): those of the earlier single-level demo
    assert table.loc["molecular_band", "paper"] == 0.125 and table.loc["damping", "paper"] == 0.25
    assert table.loc["tellurics", "strong"] == 0.04 and table.loc["continuum", "mild"] == 0.005
    assert "-49 K" in table.loc["molecular_band", "equivalent at paper"]
    # extra FWHM 1.25 km/s in quadrature with c / 94,600 = 3.169 km/s: R = 299792.458 / 3.407 = 88,000
    assert "R = 88,002" in table.loc["line_spread", "equivalent at paper"]


def test_shared_effects_have_their_stated_size(monkeypatch):
    from dataclasses import replace

    star = demo_stars.draw_stars(1, np.random.default_rng(0)).iloc[0].copy()
    star["snr"], star["airmass"], star["vsini"] = 100.0, 1.5, 2.0
    mix = GapMix(0, 1)

    def relative(**off):
        with monkeypatch.context() as m:
            for name in off:
                m.setitem(demo_gap.EFFECTS, name, replace(demo_gap.EFFECTS[name], per_unit=0.0))
            return demo.observed_relative(star, demo_lines.LineModel(mix), np.random.default_rng(1))

    wave, rel, _ = relative()
    k = int(np.argmax([(w[0] < 8800) & (w[-1] > 8835) for w in wave]))
    i = np.argmin(np.abs(wave[k] - 8819.6))
    # telluric residual: depth = 0.04 x airmass at the line centre (observatory frame)
    ratio = rel[k, i] / relative(tellurics=True)[1][k, i]
    assert ratio == pytest.approx(1 - 0.04 * 1.5 * np.exp(-0.5 * ((wave[k, i] - 8819.6) / 0.05) ** 2), rel=1e-9)
    # continuum error: a smooth multiplicative factor of at most a few x 0.02
    factor = rel[k] / relative(continuum=True)[1][k]
    assert 0 < np.abs(factor - 1).max() < 3 * 0.02
    # veiling: with continuum and tellurics off, f -> (f + 0.05) / 1.05
    plain = dict(continuum=True, tellurics=True)
    veiled, bare = relative(**plain)[1], relative(**plain, veiling=True)[1]
    np.testing.assert_allclose(veiled, (bare + 0.05) / 1.05, rtol=1e-12)
    # line spread: a further Gaussian of FWHM 2.5 km/s on the spectrum at R = 94,600 accounts for the
    # difference (to 10 %: here it is applied after sampling on the orders' 1.3 km/s pixels)
    spread = relative(**plain, veiling=True, wavelength_drift=True)[1][k]
    sharp = relative(**plain, veiling=True, wavelength_drift=True, line_spread=True)[1][k]
    extra = preprocess.broaden(sharp, 0.0, preprocess.C_KMS / 2.5, dv_kms=preprocess.C_KMS * np.log(wave[k, 1] / wave[k, 0]))
    inner = slice(100, -100)
    assert np.abs(spread - sharp)[inner].max() > 5 * np.abs(spread - extra)[inner].max()


def test_observed_files_show_photon_noise():
    star = demo_stars.draw_stars(1, np.random.default_rng(0)).iloc[0].copy()
    star["snr"] = 100.0
    wave, spec, cont, sig, _ = demo.observed_star(star, demo_lines.LineModel(GapMix(0, 0)), np.random.default_rng(1))
    k = int(np.argmax([(w[0] < 8800) & (w[-1] > 8835) for w in wave]))
    # photon noise at every setting: pulls about a running mean have unit scatter
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
    spec = DEMO_SIZES["quick"]
    assert len(nodes) == len(spec.logg) * len(spec.mh) * (int((spec.teff[1] - spec.teff[0]) // 100) + 1)
    for f in nodes:
        s = archives.read_phoenix(f, wave)
        assert f.relative_to(phoenix).as_posix() == archives.phoenix_relpath(s.teff, s.logg, s.mh)
        assert s.nan_pixels == 0 and (s.flux > 0).all()


def test_karmn_ids():
    assert demo_stars.karmn_id(1.2954, 45.7866) == "J00051+457"
    assert demo_stars.karmn_id(190.0, -7.5) == "J12400-075"


def test_uniform_stars_are_the_earlier_draw():
    """`stars="uniform"`: the earlier formula, number for number (written out here)."""
    from astropy.time import Time

    rng = np.random.default_rng(5)
    teff = rng.uniform(3000, 4200, 20)
    logg = np.clip(5.15 - 0.4 * (teff - 3000) / 1200 + rng.normal(0, 0.04, 20), 4.72, 5.28)
    mh = np.clip(rng.normal(-0.05, 0.18, 20), -0.6, 0.4)
    slow = rng.random(20) < 0.75
    vsini = np.where(slow, rng.uniform(1.5, 4.0, 20), np.exp(rng.uniform(np.log(4), np.log(25), 20)))
    ra, dec = rng.uniform(0, 360, 20), np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-20)), 1, 20)))
    jd = rng.uniform(Time("2016-01-15").jd, Time("2020-12-15").jd, 20)
    rv, snr = rng.uniform(-60, 60, 20), np.exp(rng.uniform(np.log(30), np.log(300), 20))
    stars = demo_stars.draw_stars(20, np.random.default_rng(5), "uniform")
    for col, values, digits in (("Teff", teff, 1), ("logg", logg, 3), ("[M/H]", mh, 3), ("vsini", vsini, 2),
                                ("ra", ra, 6), ("dec", dec, 6), ("bjd", jd, 6), ("rv", rv, 3), ("snr", snr, 1)):
        np.testing.assert_array_equal(stars[col], values.round(digits), err_msg=col)
    assert stars.attrs["redrawn"] == 0


@pytest.fixture(scope="module")
def published_snapshot():
    from astropy.table import Table

    from carmenes_dtl.literature import SNAPSHOT_DIR

    return Table.read(SNAPSHOT_DIR / "paper.ecsv").to_pandas()


def test_published_stars_follow_the_paper_inside_its_grid(published_snapshot):
    from astropy.table import Table

    from carmenes_dtl.grid import PAPER_GRID_FILE

    stars = demo_stars.draw_stars(300, np.random.default_rng(3))
    again = demo_stars.draw_stars(300, np.random.default_rng(3))
    pd.testing.assert_frame_equal(stars, again)
    assert not stars[["Teff", "[M/H]"]].equals(demo_stars.draw_stars(300, np.random.default_rng(4))[["Teff", "[M/H]"]])
    assert demo_stars.in_paper_ranges(stars) and stars["karmn"].is_unique
    # every star has a node of the paper's training grid within 100 K, 0.1 and 0.1 dex
    nodes = Table.read(PAPER_GRID_FILE).to_pandas()[["teff", "logg", "mh"]].drop_duplicates().to_numpy()
    for row in stars[["Teff", "logg", "[M/H]"]].to_numpy():
        assert (np.abs(nodes - row) <= [100, 0.1 + 1e-9, 0.1 + 1e-9]).all(axis=1).any(), row
    assert set(stars["coverage"]) == {"inside", "edge"}
    # the published estimates the grid covers (logg >= 4.7, its floor: 231 of 286) have these medians;
    # the draws agree within 3 standard errors of the difference of two medians (1.2533 sigma / sqrt(n))
    covered = published_snapshot[published_snapshot["logg"] >= 4.7]
    for col in ("Teff", "[M/H]"):
        se = 1.2533 * covered[col].std() * np.sqrt(1 / len(stars) + 1 / len(covered))
        assert abs(stars[col].median() - covered[col].median()) < 3 * se, col
    assert (published_snapshot["logg"] < 4.7).sum() == 55 and 0 < stars.attrs["redrawn"] < 300


def test_unknown_stars_source():
    with pytest.raises(ValueError, match="unknown demo stars 'gto'; choose one of"):
        demo_stars.draw_stars(3, np.random.default_rng(0), "gto")
