"""The twin test and RV recovery: what the observed path adds, measured against known stars.

Expected values come from outside the code under test: the twin's two vectors must agree
(whatever they are), the RV and BERV are the ones written into the files (BERV from
astropy directly), and the RV tolerances are checked to lie above the photon-noise limit
of Bouchy et al. (2001) computed here from the noise-free spectrum.
"""
import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time

from carmenes_dtl import archives, demo, prepare, preprocess, store, twin
from carmenes_dtl.config import CARMENES_VIS_R, Window

C = preprocess.C_KMS


def astropy_berv(ra, dec, bjd):
    site = EarthLocation.from_geodetic(lon=-2.546250 * u.deg, lat=37.223611 * u.deg, height=2168 * u.m)
    return SkyCoord(ra * u.deg, dec * u.deg).radial_velocity_correction(
        obstime=Time(bjd, format="jd", scale="tdb"), location=site).to_value(u.km / u.s)


@pytest.mark.parametrize("style", ["caracal", "coadd"])
def test_twin_gives_the_same_vector(tmp_path, style):
    star = twin.AnalyticStar()
    high = twin.compare(tmp_path / "high", star, snr=1000, style=style)
    assert high["template"]["teff"] in star.nodes and star.teff not in star.nodes  # reference is not the truth
    assert high["mean_abs"] < 0.002 and high["max_abs"] < 0.012
    assert high["rv"] == pytest.approx(star.rv, abs=0.02)
    low = twin.compare(tmp_path / "low", star, snr=30, style=style, seed=1)
    assert low["continuum_ratio"] == pytest.approx(1, abs=0.01)  # the unclipped level
    assert 0.4 < low["clipped_fraction"] < 0.6  # noise straddles the continuum: it sits at 1
    # the written file itself: the deepest line where the RV (and BERV) put it
    spec = archives.read_carmenes(next((tmp_path / "high" / "carmenes").glob("*.fits")))
    berv = 0.0 if style == "coadd" else astropy_berv(star.ra, star.dec, star.bjd)
    if style == "caracal":
        assert abs(berv) > 20 and high["berv"] == pytest.approx(berv, abs=0.005)
        assert high["berv_header"] == pytest.approx(berv, abs=0.005)
    else:
        assert spec.barycentric and np.isnan(high["berv_header"])
    w0 = 8826.6 * np.sqrt((1 + star.rv / C) / (1 - star.rv / C)) / np.sqrt((1 + berv / C) / (1 - berv / C))
    k = np.argmin(np.abs(spec.wave[0] - w0))
    assert np.argmin(spec.flux[0][k - 10:k + 11]) == pytest.approx(10, abs=1)


def test_twin_star_lies_between_distinct_nodes(tmp_path):
    """The nodes' spectra differ from the star's (so the reference is not the truth), and ln flux
    is linear in Teff (so interpolating the two nodes around the star gives it exactly)."""
    star, wave = twin.AnalyticStar(), np.linspace(8800, 8835, 3501)
    lo, hi = (star.flux(wave, t) for t in (3400.0, 3500.0))
    assert np.abs(lo / star.flux(wave) - 1).max() > 0.05
    assert np.sqrt(lo * hi) == pytest.approx(star.flux(wave), rel=1e-12)
    with pytest.raises(ValueError, match="between archive nodes"):
        twin.write_twin(tmp_path, twin.AnalyticStar(teff=3400.0))


def test_twin_pixels_resolve_the_instrument():
    dln = 1 / (twin.PIXELS_PER_RESOLUTION * CARMENES_VIS_R)
    assert (8817.5 / CARMENES_VIS_R) / (8817.5 * dln) == pytest.approx(2.8)


def photon_limit(model, star, snr):
    """Bouchy et al. (2001): sigma_RV = 1 / sqrt(sum (dA/dv)^2 / sigma^2) over the window's pixels."""
    grid = preprocess.log_grid(8790, 8845)
    params = (star.Teff, star.logg, star["[M/H]"])
    rel = preprocess.broaden(model.flux(grid, *params) / model.continuum(grid, *params), star.vsini)
    wave = 8800 * np.exp(np.arange(int(np.log(8835 / 8800) * 2.5 * CARMENES_VIS_R)) / (2.5 * CARMENES_VIS_R))
    a = np.interp(wave, grid, rel)
    return 1 / np.sqrt(np.sum((np.gradient(a, wave) * wave / C) ** 2 / (a / snr ** 2)))


@pytest.fixture(scope="module")
def rv_survey(tmp_path_factory):
    """Demo stars 3000-4200 K at S/N 300 (gap none), and a synthetic set of 50 K steps."""
    out = tmp_path_factory.mktemp("rv")
    demo.write_phoenix(out, demo.SizeSpec(0, (3000, 4200), (5.0,), (0.0,)), progress=False)
    nodes = pd.DataFrame({"teff": np.arange(3000.0, 4201.0, 50.0), "logg": 5.0, "mh": 0.0})
    syn = prepare.prepare_synthetic(out / "phoenix", out / "syn.h5", [1.5, 2, 3, 4, 6, 8, 10, 15, 20, 25, 30], Window(),
                                    nodes, progress=False)
    stars = demo.draw_stars(12, np.random.default_rng(11))
    stars["logg"], stars["[M/H]"], stars["snr"] = 5.0, 0.0, 300.0
    stars["vsini"] = np.tile([2.0, 4.5, 7.0, 10.0, 30.0, 30.0], 2)
    stars = pd.concat([stars, demo.write_carmenes(out, stars, "none", 5, progress=False)], axis=1)
    return out, syn, stars


def test_rv_recovered_on_demo_stars(rv_survey):
    out, syn, stars = rv_survey
    obs, excluded = prepare.prepare_observed(out / "carmenes", out / "obs.h5", template=prepare.template_from_set(syn),
                                             progress=False)
    assert excluded.empty
    s = store.read(obs)
    got = pd.DataFrame({"karmn": s.parameters["karmn"], "rv": s.attrs["rv_kms"], "berv": s.attrs["berv_kms"],
                        "berv_header": s.attrs["berv_header_kms"]}).merge(stars, on="karmn", suffixes=("", "_true"))
    model = demo.LineModel()
    for _, row in got.iterrows():
        tol = 0.1 if row.vsini <= 10 else 0.5
        assert 3 * photon_limit(model, row, row.snr) < tol  # the tolerance is above the noise limit
        assert abs(row.rv - row.rv_true) < tol, (row.karmn, row.vsini, row.rv - row.rv_true)
        assert row.berv == pytest.approx(astropy_berv(row.ra, row.dec, row.bjd), abs=0.005)
        assert row.berv == pytest.approx(row.berv_true, abs=1e-5) and row.berv_header == pytest.approx(row.berv_true)
    assert np.abs(s.attrs["berv_minus_header_kms"]).max() < 1e-5  # the demo writes astropy's BERV
    assert len(s.attrs["clipped_above_1"]) == len(got) and s.attrs["n_clipped_above_1"] == sum(s.attrs["clipped_above_1"])
    assert {"teff", "vsini"} <= set(s.attrs["rv_template"][0])


def test_demo_files_carry_berv(rv_survey):
    out, _, stars = rv_survey
    for row in stars.itertuples():
        head = fits.getheader(out / row.file)
        assert head["HIERARCH CARACAL BERV"] == pytest.approx(astropy_berv(row.ra, row.dec, row.bjd), abs=0.005)


def test_wrong_header_berv_is_named(rv_survey, tmp_path):
    """A file whose header BERV is 50 m/s off the astropy value: one warning naming it, and
    computed - header = -0.05 km/s; the untouched file gives no warning."""
    import warnings

    out, syn, stars = rv_survey
    good = out / stars.file.iloc[0]
    bad = tmp_path / good.name
    with fits.open(good) as hdul:
        hdul[0].header["HIERARCH CARACAL BERV"] += 0.05
        hdul.writeto(bad)
    templates = prepare.Templates.from_set(syn)
    with pytest.warns(UserWarning, match=f"{bad}: computed BERV .* by -50 m/s") as caught:
        res = prepare.process_observed(archives.read_carmenes(bad), Window(), templates)
    assert len(caught) == 1 and res.berv - res.berv_header == pytest.approx(-0.05, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare.process_observed(archives.read_carmenes(good), Window(), templates)


def test_observed_needs_templates(rv_survey, tmp_path):
    out, syn, _ = rv_survey
    with pytest.raises(ValueError, match="--template"):
        prepare.prepare_observed(out / "carmenes", tmp_path / "o.h5", progress=False)
    with pytest.raises(ValueError, match="are not the window 8805-8840 Å"):
        prepare.prepare_observed(out / "carmenes", tmp_path / "o.h5", Window(8805, 8840),
                                 template=prepare.template_from_set(syn), progress=False)


def test_prepare_does_not_import_demo():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(prepare))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "demo" not in imported and "LineModel" not in imported


def test_demo_templates_for_the_demo_survey(rv_survey):
    """`--template demo`: the demo's own model on a coarse grid also recovers the RVs."""
    out, _, stars = rv_survey
    templates = demo.rv_templates(Window())
    for row in stars.iloc[:6].itertuples():
        res = prepare.process_observed(archives.read_carmenes(out / row.file), Window(), templates)
        assert abs(res.rv - row.rv) < (0.1 if row.vsini <= 10 else 0.5), (row.vsini, res.rv - row.rv)
