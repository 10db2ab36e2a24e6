"""The demo survey's stars: parameters (resampled published estimates or uniform draws), names,
positions and observing circumstances resembling the CARMENES GTO sample."""
from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.time import Time

from . import literature
from .config import PAPER_RANGES, STAR_SOURCES
from .grid import grid_coverage

#: Jitter of the resampled published estimates (vsini: rms of ln vsini).
STAR_JITTER = {"Teff": 40.0, "logg": 0.03, "[M/H]": 0.05, "vsini": 0.10}


def karmn_id(ra: float, dec: float) -> str:
    """CARMENES-style identifier from coordinates, e.g. ``J00051+457``."""
    minutes = ra / 15 * 60
    hh, mm = divmod(minutes, 60)
    sign = "+" if dec >= 0 else "-"
    return f"J{int(hh):02d}{int(mm * 10) // 10:02d}{int(mm * 10) % 10}{sign}{int(abs(dec) * 10):03d}"


def _uniform_parameters(n: int, rng: np.random.Generator) -> pd.DataFrame:
    teff = rng.uniform(3000, 4200, n)
    logg = np.clip(5.15 - 0.4 * (teff - 3000) / 1200 + rng.normal(0, 0.04, n), 4.72, 5.28)
    mh = np.clip(rng.normal(-0.05, 0.18, n), -0.6, 0.4)
    slow = rng.random(n) < 0.75
    vsini = np.where(slow, rng.uniform(1.5, 4.0, n), np.exp(rng.uniform(np.log(4), np.log(25), n)))
    return pd.DataFrame({"Teff": teff.round(1), "logg": logg.round(3), "[M/H]": mh.round(3), "vsini": vsini.round(2)})


def _published_parameters(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """Resampled published estimates with `STAR_JITTER`, vsini clipped to the paper's range; draws
    outside the grid's coverage are drawn again. Returns the stars and the number redrawn."""
    published = literature.load("paper")[list(STAR_JITTER)].to_numpy(float)
    kept, redrawn = [], 0
    while sum(len(k) for k in kept) < n:
        draw = published[rng.integers(0, len(published), n - sum(len(k) for k in kept))]
        jitter = rng.normal(0, 1, draw.shape) * np.array(list(STAR_JITTER.values()))
        draw = pd.DataFrame({"Teff": (draw[:, 0] + jitter[:, 0]).round(1), "logg": (draw[:, 1] + jitter[:, 1]).round(3),
                             "[M/H]": (draw[:, 2] + jitter[:, 2]).round(3),
                             "vsini": np.clip(draw[:, 3] * np.exp(jitter[:, 3]), *PAPER_RANGES["vsini"]).round(2)})
        ok = grid_coverage(draw) != "outside"
        kept.append(draw[ok])
        redrawn += int((~ok).sum())
    return pd.concat(kept, ignore_index=True), redrawn


def draw_stars(n: int, rng: np.random.Generator, stars: str = "published") -> pd.DataFrame:
    """Parameters and observing circumstances resembling the CARMENES GTO sample, with each star's
    `grid_coverage`. `stars`: ``published`` resamples the paper's 286 estimates (`_published_parameters`;
    ``attrs["redrawn"]`` counts the draws outside the grid's coverage that were replaced),
    ``uniform`` draws Teff uniformly in 3000-4200 K with logg following it."""
    if stars not in STAR_SOURCES:
        raise ValueError(f"unknown demo stars {stars!r}; choose one of {list(STAR_SOURCES)}")
    params, redrawn = _published_parameters(n, rng) if stars == "published" else (_uniform_parameters(n, rng), 0)
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-20)), 1, n)))
    ids, seen = [], set()
    for r, d in zip(ra, dec):
        k = karmn_id(r, d)
        while k in seen:  # nudge coincident ids
            r += 0.01
            k = karmn_id(r, d)
        seen.add(k)
        ids.append(k)
    jd = rng.uniform(Time("2016-01-15").jd, Time("2020-12-15").jd, n)
    out = pd.DataFrame({
        "karmn": ids, **params, "rv": rng.uniform(-60, 60, n).round(3),
        "snr": np.exp(rng.uniform(np.log(30), np.log(300), n)).round(1),
        "ra": ra.round(6), "dec": dec.round(6), "bjd": jd.round(6), "airmass": rng.uniform(1.0, 2.0, n).round(3),
        "coverage": grid_coverage(params),
    })
    out.attrs["redrawn"] = redrawn
    return out


def in_paper_ranges(df: pd.DataFrame) -> bool:
    """Whether every star's Teff, logg, [M/H] and vsini lie in the paper grid's ranges."""
    return all(df[c].between(*PAPER_RANGES[k]).all()
               for c, k in (("Teff", "teff"), ("logg", "logg"), ("[M/H]", "mh"), ("vsini", "vsini")))
