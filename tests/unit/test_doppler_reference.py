"""Doppler factor, RV and BERV against expressions written here, not the package's own code.

- The relativistic factor sqrt((1 + β) / (1 - β)) with c = 299 792.458 km/s (exact): relative
  1e-9. The classical 1 + β differs by β²/2, 5e-9 at 30 km/s.
- RV: "observed" spectra are an analytic line list evaluated at λ / D(v), D written here (no
  package code makes them). Measured error of `cross_correlate_rv` (noise-free, 0.25 km/s
  steps): -2.5 to -3.0 m/s at every velocity; the classical factor would add v²/2c, 33 m/s at
  140 km/s and 104 m/s at 250 km/s. Tolerance 10 m/s.
- BERV: Wright & Eastman (2014, Eq. 28) written out from astropy's solar-system ephemeris:
  zB = γ (1 + β·n) / (1 - U/c²), β the site's barycentric velocity (Earth's barycentric plus the
  site's geocentric), U = GM_sun / d_sun + GM_earth / r_site; BERV = c (zB - 1). Measured
  agreement 0.7 mm/s; tolerance 0.1 m/s (the first-order c β·n alone is 4.7 m/s off; a UTC
  instead of TDB time shifts the diurnal term by up to 2 m/s, heliocentric instead of
  barycentric by up to 13 m/s).
"""
import numpy as np
import pytest
from astropy import constants as const
from astropy import units as u
from astropy.coordinates import EarthLocation, get_body_barycentric, get_body_barycentric_posvel
from astropy.time import Time

from carmenes_dtl import preprocess, rv
from carmenes_dtl.config import Window

C_KMS = 299_792.458


def doppler(v_kms):
    beta = v_kms / C_KMS
    return np.sqrt((1 + beta) / (1 - beta))


@pytest.mark.parametrize("v", [-250.0, -30.0, 0.0, 0.03, 12.345, 30.0, 88.8, 250.0])
def test_doppler_factor_is_relativistic(v):
    assert preprocess.doppler_factor(v) == pytest.approx(doppler(v), rel=1e-9, abs=0)
    assert preprocess.doppler_factor(v) * preprocess.doppler_factor(-v) == pytest.approx(1.0, rel=1e-12)


def rest_spectrum(wave):
    """Forty seeded Gaussian lines of the instrument's width (R = 94 600) between 8795 and 8840 Å."""
    rng = np.random.default_rng(3)
    sigma = 8817 / 94_600 / (2 * np.sqrt(2 * np.log(2)))
    out = np.ones_like(wave)
    for c, d in zip(rng.uniform(8795, 8840, 40), rng.uniform(0.1, 0.6, 40)):
        out *= 1 - d * np.exp(-0.5 * ((wave - c) / sigma) ** 2)
    return out


@pytest.mark.parametrize("v", [-47.321, 0.0, 140.0, 250.0])
def test_rv_of_an_analytically_shifted_spectrum(v):
    wave = np.arange(8760.0, 8880.0, 0.02)
    observed = rest_spectrum(wave / doppler(v))
    template_wave = Window(8805, 8830).wavelength
    got = preprocess.cross_correlate_rv(wave, observed, template_wave, rest_spectrum(template_wave), vmax_kms=300.0)
    assert got == pytest.approx(v, abs=0.010)


#: Calar Alto 3.5 m: 37°13'25" N, 2°32'46.5" W, 2168 m (the observatory's published position).
SITE = EarthLocation.from_geodetic(lon=-(2 + 32 / 60 + 46.5 / 3600) * u.deg, lat=(37 + 13 / 60 + 25 / 3600) * u.deg,
                                   height=2168 * u.m)


def wright_eastman_berv(ra_deg, dec_deg, bjd_tdb):
    t = Time(bjd_tdb, format="jd", scale="tdb")
    r_earth, v_earth = get_body_barycentric_posvel("earth", t)
    r_site, v_site = SITE.get_gcrs_posvel(t)
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    n = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    beta = (v_earth.xyz + v_site.xyz).to_value(u.km / u.s) / C_KMS
    gamma = 1 / np.sqrt(1 - beta @ beta)
    d_sun = np.linalg.norm((r_earth.xyz - get_body_barycentric("sun", t).xyz).to_value(u.m))
    potential = const.GM_sun.value / d_sun + const.GM_earth.value / np.linalg.norm(r_site.xyz.to_value(u.m))
    return C_KMS * (gamma * (1 + n @ beta) / (1 - potential / const.c.value ** 2) - 1)


def test_berv_against_wright_eastman_by_hand():
    rng = np.random.default_rng(0)
    for ra, dec, bjd in zip(rng.uniform(0, 360, 6), rng.uniform(-20, 80, 6), rng.uniform(2457400, 2459000, 6)):
        assert rv.barycentric_correction(ra, dec, bjd) == pytest.approx(wright_eastman_berv(ra, dec, bjd), abs=1e-4)
