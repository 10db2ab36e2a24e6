"""Barycentric correction for CARMENES at Calar Alto (astropy)."""
from __future__ import annotations

import functools

from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers


@functools.lru_cache(maxsize=1)
def calar_alto() -> EarthLocation:
    """The 3.5 m telescope at Calar Alto Observatory (no network look-up)."""
    return EarthLocation.from_geodetic(lon=-2.546250 * u.deg, lat=37.223611 * u.deg, height=2168 * u.m)


def barycentric_correction(ra_deg: float, dec_deg: float, bjd: float) -> float:
    """Barycentric velocity correction (km/s) to add to a topocentric RV.

    Uses the bundled IERS-B table (no download); for dates it covers the result is
    accurate to a few m/s, far below what the method needs.
    """
    with iers.conf.set_temp("auto_download", False), iers.conf.set_temp("iers_degraded_accuracy", "warn"):
        corr = SkyCoord(ra_deg * u.deg, dec_deg * u.deg).radial_velocity_correction(
            kind="barycentric", obstime=Time(bjd, format="jd", scale="tdb"), location=calar_alto())
    return float(corr.to_value(u.km / u.s))
