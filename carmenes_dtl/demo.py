"""The demo survey: a deterministic stand-in for the PHOENIX and CARMENES archives.

The mock PHOENIX tree holds the synthetic line model (`demo_lines`) at archive nodes; the
"observed" stars (`demo_stars`) differ from it by the gap effects of a `demo_gap.GapMix`.
The files use the real archive layouts, so the same readers run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.time import Time
from tqdm.auto import tqdm

from . import archives, preprocess
from .config import CARMENES_VIS_R, DEMO_SIZES, DemoSize
from .demo_gap import GapMix, effective_resolution
from .demo_lines import MOCK_RANGE, LineModel, mock_phoenix_wavelength
from .demo_stars import draw_stars
from .rundir import DEMO_CARMENES, DEMO_PHOENIX, DEMO_README, DEMO_TRUTH
from .rv import barycentric_correction


def write_phoenix_tree(out: Path, wave: np.ndarray, nodes, flux, progress: bool = True) -> list[Path]:
    """HiRes layout under ``out/phoenix``: the wavelength file and one file per (teff, logg, mh)
    node with ``flux(wave, teff, logg, mh)``."""
    root = Path(out) / DEMO_PHOENIX
    (root / archives.PHOENIX_LIBRARY).mkdir(parents=True, exist_ok=True)
    whdr = fits.Header({"BUNIT": "Angstrom", "COMMENT": "mock of WAVE_PHOENIX-ACES-AGSS-COND-2011 (vacuum)"})
    fits.PrimaryHDU(wave, whdr).writeto(root / archives.PHOENIX_WAVE_FILE, overwrite=True)
    paths = []
    for teff, logg, mh in tqdm(nodes, desc="demo PHOENIX", disable=not progress):
        path = root / archives.phoenix_relpath(teff, logg, mh)
        path.parent.mkdir(exist_ok=True)
        hdr = fits.Header({"PHXTEFF": teff, "PHXLOGG": logg, "PHXM_H": mh, "PHXALPHA": 0.0,
                           "BUNIT": "erg/s/cm^2/cm", "PHXEOS": "ACES", "ORIGIN": "carmenes-dtl demo"})
        fits.PrimaryHDU(flux(wave, teff, logg, mh).astype(np.float32), hdr).writeto(path, overwrite=True)
        paths.append(path)
    return paths


def write_phoenix(out: Path, size: DemoSize, progress: bool = True) -> list[Path]:
    """Mock HiRes tree: wavelength file and one flux file per archive node of `size`."""
    nodes = [(t, g, m) for m in size.mh for g in size.logg
             for t in np.arange(size.teff[0], size.teff[1] + 1, archives.PHOENIX_STEPS["teff"])]
    return write_phoenix_tree(out, mock_phoenix_wavelength(), nodes, LineModel().flux, progress)


def carmenes_orders(n_orders: int = 61, n_pix: int = 4096) -> np.ndarray:
    """Mock VIS order wavelengths (vacuum Å): overlapping orders from 5200 to 9600 Å."""
    dln = preprocess.C_KMS / CARMENES_VIS_R / 2.5 / preprocess.C_KMS  # ~2.5 pixels per resolution element
    centres = np.exp(np.linspace(np.log(5250), np.log(9550), n_orders))
    return centres[:, None] * np.exp((np.arange(n_pix) - n_pix / 2) * dln)[None, :]


def caracal_name(jd: float) -> str:
    t = Time(jd, format="jd", scale="tdb").utc.datetime
    return f"car-{t:%Y%m%dT%Hh%Mm%S}s-sci-gtoc-vis_A.fits"


def observed_relative(star: pd.Series, model: LineModel, rng: np.random.Generator):
    """Noise-free flux of one star relative to its continuum on the VIS orders, with the shared
    effects of `model.mix` that arise outside the star's model; returns (wave, relative flux, BERV)."""
    mix = model.mix
    grid = preprocess.log_grid(MOCK_RANGE[0] + 5, MOCK_RANGE[1] - 5)
    params = (star.Teff, star.logg, star["[M/H]"])
    rest = preprocess.broaden(model.flux(grid, *params) / model.continuum(grid, *params), star.vsini,
                              effective_resolution(mix.size("line_spread")))
    veil = mix.size("veiling")
    rest = (rest + veil) / (1 + veil)
    berv = barycentric_correction(star.ra, star.dec, star.bjd)
    wave = carmenes_orders()
    drift = mix.size("wavelength_drift") * rng.normal() * ((wave - 8817.5) / 17.5).clip(-3, 3)
    to_rest = preprocess.doppler_factor(berv) / preprocess.doppler_factor(star.rv)
    rest_wave = wave * to_rest * (1 + drift / preprocess.C_KMS)
    rel = np.interp(rest_wave, grid, rest, left=1.0, right=1.0)
    x = np.clip((wave - 8817.5) / 40.0, -1, 1)
    c = rng.normal(0, 1, 2)
    rel *= 1 + mix.size("continuum") * (c[0] * x + c[1] * (x * x - 1 / 3)) / np.sqrt(2)
    for wt in (8803.9, 8812.7, 8819.6, 8827.0, 8832.8):  # H2O-like residuals, observatory frame
        rel *= 1 - mix.size("tellurics") * star.airmass * np.exp(-0.5 * ((wave - wt) / 0.05) ** 2)
    return wave, rel, berv


def observed_star(star: pd.Series, model: LineModel, rng: np.random.Generator):
    """Arrays of one CARACAL file (WAVE, SPEC, CONT, SIG) and its BERV: `observed_relative` on a
    blaze of the star's S/N, with photon noise."""
    wave, rel, berv = observed_relative(star, model, rng)
    pix = np.arange(wave.shape[1])
    blaze = np.sinc((pix - wave.shape[1] / 2) / wave.shape[1] * 1.2) ** 2
    cont = star.snr ** 2 * blaze[None, :] * np.ones_like(wave)
    expected = np.clip(rel * cont, 1.0, None)
    spec = expected + rng.normal(0, 1, wave.shape) * np.sqrt(expected)
    return wave, spec, cont, np.sqrt(expected), berv


def write_vis(path: Path, karmn: str, wave, spec, sig, cont=None, ra=None, dec=None, bjd=None, berv=None) -> Path:
    """A CARMENES VIS file: CARACAL layout (``SPEC, CONT, SIG, WAVE``; BJD, RA, DEC, BERV in the
    header; observatory frame) or, with `cont` and `bjd` None, a co-added template
    (``SPEC, SIG, WAVE``; barycentric)."""
    hdr = fits.Header()
    hdr["OBJECT"] = karmn
    hdr["INSTRUME"] = "CARMENES"
    if ra is not None:
        hdr["RA"], hdr["DEC"] = ra, dec
    if bjd is not None:
        hdr["DATE-OBS"] = Time(bjd, format="jd", scale="tdb").utc.isot
        hdr["HIERARCH CARACAL BJD"] = bjd - 2400000.0
        hdr["HIERARCH CARACAL BERV"] = berv
    hdr["ORIGIN"] = "carmenes-dtl demo"
    arrays = [("SPEC", spec, "f4")] + ([("CONT", cont, "f4")] if cont is not None else []) + [
        ("SIG", sig, "f4"), ("WAVE", wave, "f8")]
    fits.HDUList([fits.PrimaryHDU(header=hdr)] + [fits.ImageHDU(d.astype(t), name=n) for n, d, t in arrays]
                 ).writeto(path, overwrite=True)
    return Path(path)


def write_carmenes(out: Path, stars: pd.DataFrame, gap: GapMix, seed: int, progress: bool = True) -> pd.DataFrame:
    """One CARACAL-layout VIS file per star, observed through the gap `gap`; returns each star's
    file and the BERV applied (km/s)."""
    folder = Path(out) / DEMO_CARMENES
    folder.mkdir(parents=True, exist_ok=True)
    model = LineModel(gap)
    paths, bervs = [], []
    for i, star in tqdm(list(stars.iterrows()), desc="demo CARMENES", disable=not progress):
        rng = np.random.default_rng([seed, i])
        wave, spec, cont, sig, berv = observed_star(star, model, rng)
        path = folder / caracal_name(star.bjd)
        write_vis(path, star.karmn, wave, spec, sig, cont, star.ra, star.dec, star.bjd, berv)
        paths.append(path)
        bervs.append(round(berv, 6))
    return pd.DataFrame({"file": [f"carmenes/{p.name}" for p in paths], "berv": bervs}, index=stars.index)


def write_demo(out: Path, seed: int = 42, n_stars: int | None = None, gap: GapMix = GapMix.parse("paper"),
               size: str = "quick", progress: bool = True, phoenix: bool = True, stars: str = "published") -> Path:
    """Write ``phoenix/``, ``carmenes/`` and ``truth.csv`` under `out`; same seed, same bytes.

    `gap`: the observed stars' `GapMix`; `size`: a key of `config.DEMO_SIZES`; `stars`:
    ``published`` or ``uniform`` (`demo_stars.draw_stars`)."""
    if size not in DEMO_SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {list(DEMO_SIZES)}")
    spec = DEMO_SIZES[size]
    out = Path(out)
    rng = np.random.default_rng(seed)
    table = draw_stars(n_stars or spec.n_stars, rng, stars)
    if phoenix:
        write_phoenix(out, spec, progress)
    written = write_carmenes(out, table, gap, seed, progress)
    table.insert(1, "file", written["file"])
    table["berv"] = written["berv"]
    table.to_csv(out / DEMO_TRUTH, index=False)
    counts = table["coverage"].value_counts()
    (out / DEMO_README).write_text(
        f"carmenes-dtl demo survey: seed={seed} gap={gap.name} stars={stars} size={size} n_stars={len(table)}\n"
        f"grid coverage: {', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"draws outside it replaced: {table.attrs['redrawn']}\n"
        f"{DEMO_PHOENIX}/  mock PHOENIX-ACES HiRes tree; {DEMO_CARMENES}/  CARACAL VIS files; "
        f"{DEMO_TRUTH}  true parameters\n")
    return out
