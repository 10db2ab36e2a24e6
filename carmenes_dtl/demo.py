"""The demo survey: a deterministic stand-in for the PHOENIX and CARMENES archives.

Spectra come from a small physical model of the M-dwarf window near 8800 Å: atomic lines
(Voigt profiles; strengths scale with [M/H] and Teff, pressure widths with logg) over a
TiO-like molecular band of many weak lines (strength falls steeply with Teff), in
`exp(-tau)` on a Planck continuum. The "observed" stars are drawn from a *different*
model; the differences are the synthetic gap, each scaled by the `--gap` level
(see `GAP_EFFECTS`). The files use the real archive layouts, so the same readers run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import constants as const
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from scipy.special import voigt_profile
from tqdm.auto import tqdm

from . import archives, preprocess
from .config import CARMENES_VIS_R, PAPER_RANGES
from .rv import barycentric_correction

#: Seed of the line lists: the physics of the demo never changes with the user's seed.
MODEL_SEED = 8800
#: Coverage of the mock PHOENIX wavelength file (rest frame, vacuum Å) and its sampling.
MOCK_RANGE = (8600.0, 9000.0)
PHOENIX_R = 500_000
#: Scale of every gap effect per level. `paper` is set so that a method that ignores the gap
#: errs on the demo by about as much as the synthetic-only deep learning of Passegger et al.
#: (2020) deviates from the literature on real stars (~0.2 dex in [M/H], ~100-400 K in Teff).
GAP_LEVELS = {"none": 0.0, "mild": 0.25, "paper": 0.5, "strong": 1.0}

# (vacuum Å, species, strength at [M/H]=0 and 3500 K, Teff sensitivity per 1000 K, damping)
ATOMIC_LINES = [
    (8798.6, "Fe I", 0.20, 0.5, 1.0), (8802.1, "Fe I", 0.35, 0.6, 1.0), (8806.0, "Ti I", 0.30, -0.9, 0.8),
    (8809.17, "Mg I", 1.20, 0.4, 1.6), (8813.4, "Si I", 0.25, 1.0, 1.0), (8816.9, "Al I", 0.45, 0.3, 1.2),
    (8820.3, "Ti I", 0.20, -1.1, 0.8), (8826.64, "Fe I", 0.90, 0.5, 1.2), (8830.5, "Ti I", 0.25, -0.8, 0.8),
    (8834.2, "Fe I", 0.30, 0.6, 1.0), (8838.4, "Fe I", 0.40, 0.5, 1.0),
]


@dataclass(frozen=True)
class GapEffects:
    """Sizes of the differences between the observed and the synthetic model at one level."""

    level: str
    line_strength_scatter: float  # rms of ln(observed/synthetic strength) per atomic line
    molecular_scale: float  # fractional excess of molecular band strength in observed stars
    missing_lines: int  # lines present only in observed stars
    missing_line_strength: float  # their strength relative to an average atomic line
    damping_scale: float  # factor on Lorentz widths of atomic lines
    continuum_error: float  # peak amplitude of residual continuum curvature/slope
    telluric_depth: float  # depth of residual telluric lines at airmass 1
    wavelength_drift_kms: float  # rms of a differential wavelength-solution error across the window
    snr_range: tuple[float, float] = (30.0, 300.0)


def gap_effects(level: str) -> GapEffects:
    """The effects of a `--gap` level (`none` keeps only photon noise)."""
    if level not in GAP_LEVELS:
        raise ValueError(f"unknown gap level {level!r}; choose one of {list(GAP_LEVELS)}")
    g = GAP_LEVELS[level]
    return GapEffects(level, 0.25 * g, 0.25 * g, 12 if g else 0, 0.4 * g, 1 + 0.5 * g, 0.02 * g,
                      0.04 * g, 0.3 * g)


def gap_table() -> pd.DataFrame:
    """All levels side by side, for the docs."""
    return pd.DataFrame([asdict(gap_effects(k)) for k in GAP_LEVELS]).set_index("level").T


class LineModel:
    """Rest-frame flux of the demo's M dwarfs; `effects` turns it into the 'observed' model."""

    def __init__(self, effects: GapEffects | None = None):
        rng = np.random.default_rng(MODEL_SEED)
        self.effects = effects
        self.atomic = np.array([line[:1] + line[2:] for line in ATOMIC_LINES])
        self.mol_wave = np.sort(rng.uniform(*MOCK_RANGE, 4000))
        self.mol_strength = rng.lognormal(-3.0, 0.8, self.mol_wave.size)
        self.mol_strength *= 1 + 1.5 * (self.mol_wave > 8860)  # a band head redwards of the window
        self.line_scale = np.exp(rng.normal(0, 1, len(ATOMIC_LINES)))
        self.extra = np.column_stack([rng.uniform(8795, 8840, 12), rng.uniform(0.2, 0.6, 12),
                                      rng.uniform(-0.8, 0.8, 12), np.ones(12)])
        if effects is not None:
            self.line_scale = self.line_scale ** effects.line_strength_scatter
            self.extra = self.extra[:effects.missing_lines]
            self.extra[:, 1] *= effects.missing_line_strength / 0.4
        else:
            self.line_scale = np.ones(len(ATOMIC_LINES))
            self.extra = self.extra[:0]
        self._mol_cache: dict = {}

    def _molecular_profile(self, wave: np.ndarray) -> np.ndarray:
        key = (wave[0], wave[-1], wave.size)
        if key not in self._mol_cache:
            sigma = self.mol_wave * 1.5 / preprocess.C_KMS
            prof = np.zeros_like(wave)
            lo = np.searchsorted(wave, self.mol_wave - 5 * sigma)
            hi = np.searchsorted(wave, self.mol_wave + 5 * sigma)
            for w0, s, sg, a, b in zip(self.mol_wave, self.mol_strength, sigma, lo, hi):
                prof[a:b] += s * np.exp(-0.5 * ((wave[a:b] - w0) / sg) ** 2)
            self._mol_cache[key] = prof
        return self._mol_cache[key]

    def _band(self, teff: float, logg: float, mh: float) -> float:
        band = np.exp(-(teff - 2800.0) / 420.0) * 10 ** (0.5 * mh) * (1 + 0.4 * (logg - 5.0))
        return band * (1 + self.effects.molecular_scale) if self.effects is not None else band

    def continuum(self, wave: np.ndarray, teff: float, logg: float, mh: float) -> np.ndarray:
        """Line-free surface flux (erg/s/cm^2/cm): Planck, dimmed by the band's veil."""
        planck = (2 * const.h * const.c ** 2 / (wave * u.AA) ** 5
                  / np.expm1(const.h * const.c / (wave * u.AA * const.k_B * teff * u.K)))
        surface = (np.pi * u.sr * planck / u.sr).to_value(u.erg / u.s / u.cm ** 2 / u.cm)
        return surface * (1 - 0.25 * np.tanh(self._band(teff, logg, mh)))

    def flux(self, wave: np.ndarray, teff: float, logg: float, mh: float) -> np.ndarray:
        """Surface flux (erg/s/cm^2/cm) on `wave` (vacuum Å) for one star."""
        e = self.effects
        damping = 1.0 if e is None else e.damping_scale
        lines = np.vstack([self.atomic, self.extra]) if len(self.extra) else self.atomic
        scale = np.concatenate([self.line_scale, np.ones(len(self.extra))])
        tau = np.zeros_like(wave)
        x = (teff - 3500.0) / 1000.0
        for (w0, a0, kt, gam), s in zip(lines, scale):
            strength = s * a0 * 10 ** mh * np.exp(kt * x + 0.3 * x * x)
            sigma = w0 * np.sqrt(1.0 + 0.6 * teff / 3500) / preprocess.C_KMS
            gamma = damping * gam * 0.04 * 10 ** (0.4 * (logg - 5.0)) * (teff / 3500) ** 0.3
            near = np.abs(wave - w0) < 8
            tau[near] += 0.12 * strength * voigt_profile(wave[near] - w0, sigma, gamma)
        tau += self._band(teff, logg, mh) * self._molecular_profile(wave)
        return self.continuum(wave, teff, logg, mh) * np.exp(-tau)


def mock_phoenix_wavelength() -> np.ndarray:
    """Mock wavelength grid: the HiRes archive's R = 500,000 log sampling over `MOCK_RANGE`."""
    return preprocess.log_grid(*MOCK_RANGE, preprocess.C_KMS / PHOENIX_R)


@dataclass(frozen=True)
class SizeSpec:
    n_stars: int
    teff: tuple[float, float]
    logg: tuple[float, ...]
    mh: tuple[float, ...]


SIZES = {
    "quick": SizeSpec(60, (2300, 4500), (4.5, 5.0, 5.5), (-1.0, -0.5, 0.0, 0.5, 1.0)),
    "full": SizeSpec(300, (2300, 4500), (4.5, 5.0, 5.5), (-1.0, -0.5, 0.0, 0.5, 1.0)),
}


def write_phoenix_tree(out: Path, wave: np.ndarray, nodes, flux, progress: bool = True) -> list[Path]:
    """HiRes layout under ``out/phoenix``: the wavelength file and one file per (teff, logg, mh)
    node with ``flux(wave, teff, logg, mh)``."""
    root = Path(out) / "phoenix"
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


def write_phoenix(out: Path, size: SizeSpec, progress: bool = True) -> list[Path]:
    """Mock HiRes tree: wavelength file and one flux file per archive node of `size`."""
    nodes = [(t, g, m) for m in size.mh for g in size.logg
             for t in np.arange(size.teff[0], size.teff[1] + 1, archives.PHOENIX_STEPS["teff"])]
    return write_phoenix_tree(out, mock_phoenix_wavelength(), nodes, LineModel().flux, progress)


def karmn_id(ra: float, dec: float) -> str:
    """CARMENES-style identifier from coordinates, e.g. ``J00051+457``."""
    minutes = ra / 15 * 60
    hh, mm = divmod(minutes, 60)
    sign = "+" if dec >= 0 else "-"
    return f"J{int(hh):02d}{int(mm * 10) // 10:02d}{int(mm * 10) % 10}{sign}{int(abs(dec) * 10):03d}"


def draw_stars(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Parameters and observing circumstances resembling the CARMENES GTO sample."""
    teff = rng.uniform(3000, 4200, n)
    logg = np.clip(5.15 - 0.4 * (teff - 3000) / 1200 + rng.normal(0, 0.04, n), 4.72, 5.28)
    mh = np.clip(rng.normal(-0.05, 0.18, n), -0.6, 0.4)
    slow = rng.random(n) < 0.75
    vsini = np.where(slow, rng.uniform(1.5, 4.0, n), np.exp(rng.uniform(np.log(4), np.log(25), n)))
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
    return pd.DataFrame({
        "karmn": ids, "Teff": teff.round(1), "logg": logg.round(3), "[M/H]": mh.round(3),
        "vsini": vsini.round(2), "rv": rng.uniform(-60, 60, n).round(3),
        "snr": np.exp(rng.uniform(np.log(30), np.log(300), n)).round(1),
        "ra": ra.round(6), "dec": dec.round(6), "bjd": jd.round(6), "airmass": rng.uniform(1.0, 2.0, n).round(3),
    })


def carmenes_orders(n_orders: int = 61, n_pix: int = 4096) -> np.ndarray:
    """Mock VIS order wavelengths (vacuum Å): overlapping orders from 5200 to 9600 Å."""
    dln = preprocess.C_KMS / CARMENES_VIS_R / 2.5 / preprocess.C_KMS  # ~2.5 pixels per resolution element
    centres = np.exp(np.linspace(np.log(5250), np.log(9550), n_orders))
    return centres[:, None] * np.exp((np.arange(n_pix) - n_pix / 2) * dln)[None, :]


def caracal_name(jd: float) -> str:
    t = Time(jd, format="jd", scale="tdb").utc.datetime
    return f"car-{t:%Y%m%dT%Hh%Mm%S}s-sci-gtoc-vis_A.fits"


def observed_star(star: pd.Series, model: LineModel, effects: GapEffects, rng: np.random.Generator):
    """Arrays of one CARACAL file (WAVE, SPEC, CONT, SIG) and its BERV."""
    grid = preprocess.log_grid(MOCK_RANGE[0] + 5, MOCK_RANGE[1] - 5)
    params = (star.Teff, star.logg, star["[M/H]"])
    rest = preprocess.broaden(model.flux(grid, *params) / model.continuum(grid, *params), star.vsini)
    berv = barycentric_correction(star.ra, star.dec, star.bjd)
    wave = carmenes_orders()
    drift = effects.wavelength_drift_kms * rng.normal() * ((wave - 8817.5) / 17.5).clip(-3, 3)
    to_rest = preprocess.doppler_factor(berv) / preprocess.doppler_factor(star.rv)
    rest_wave = wave * to_rest * (1 + drift / preprocess.C_KMS)
    rel = np.interp(rest_wave, grid, rest, left=1.0, right=1.0)
    x = np.clip((wave - 8817.5) / 40.0, -1, 1)
    c = rng.normal(0, 1, 2)
    rel *= 1 + effects.continuum_error * (c[0] * x + c[1] * (x * x - 1 / 3)) / np.sqrt(2)
    for wt in (8803.9, 8812.7, 8819.6, 8827.0, 8832.8):  # H2O-like residuals, observatory frame
        rel *= 1 - effects.telluric_depth * star.airmass * np.exp(-0.5 * ((wave - wt) / 0.05) ** 2)
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


def write_carmenes(out: Path, stars: pd.DataFrame, gap: str, seed: int, progress: bool = True) -> pd.DataFrame:
    """One CARACAL-layout VIS file per star; returns each star's file and the BERV applied (km/s)."""
    folder = Path(out) / "carmenes"
    folder.mkdir(parents=True, exist_ok=True)
    effects = gap_effects(gap)
    model = LineModel(effects)
    paths, bervs = [], []
    for i, star in tqdm(list(stars.iterrows()), desc="demo CARMENES", disable=not progress):
        rng = np.random.default_rng([seed, i])
        wave, spec, cont, sig, berv = observed_star(star, model, effects, rng)
        path = folder / caracal_name(star.bjd)
        write_vis(path, star.karmn, wave, spec, sig, cont, star.ra, star.dec, star.bjd, berv)
        paths.append(path)
        bervs.append(round(berv, 6))
    return pd.DataFrame({"file": [f"carmenes/{p.name}" for p in paths], "berv": bervs}, index=stars.index)


def write_demo(out: Path, seed: int = 42, n_stars: int | None = None, gap: str = "paper",
               size: str = "quick", progress: bool = True, phoenix: bool = True) -> Path:
    """Write ``phoenix/``, ``carmenes/`` and ``truth.csv`` under `out`; same seed, same bytes."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {list(SIZES)}")
    gap_effects(gap)
    spec = SIZES[size]
    out = Path(out)
    rng = np.random.default_rng(seed)
    stars = draw_stars(n_stars or spec.n_stars, rng)
    if phoenix:
        write_phoenix(out, spec, progress)
    written = write_carmenes(out, stars, gap, seed, progress)
    stars.insert(1, "file", written["file"])
    stars["berv"] = written["berv"]
    stars.to_csv(out / "truth.csv", index=False)
    (out / "README.txt").write_text(
        f"carmenes-dtl demo survey: seed={seed} gap={gap} size={size} stars={len(stars)}\n"
        "phoenix/  mock PHOENIX-ACES HiRes tree; carmenes/  CARACAL VIS files; truth.csv  true parameters\n")
    return out


def rv_templates(window, teff=(3000.0, 3300.0, 3600.0, 3900.0, 4200.0), mh=(-0.5, 0.0, 0.5),
                 vsini=(2.0, 6.0, 12.0, 20.0, 30.0)):
    """RV templates from the demo's own synthetic model (``prepare-observed --template demo``)."""
    from .prepare import Templates

    wave = mock_phoenix_wavelength()
    preprocess.check_coverage(wave, window, "demo line model", preprocess.MARGIN_A + 1)
    wave = wave[(wave > window.start - preprocess.MARGIN_A - 1) & (wave < window.stop + preprocess.MARGIN_A + 1)]
    model, rows, flux = LineModel(), [], []
    for t in teff:
        for m in mh:
            flux.append(preprocess.synthetic_to_window(wave, model.flux(wave, t, 5.0, m), vsini, window)[0])
            rows += [(t, 5.0, m, v) for v in vsini]
    return Templates(window.wavelength, np.concatenate(flux), pd.DataFrame(rows, columns=["teff", "logg", "mh", "vsini"]),
                     "demo line model")


def in_paper_ranges(df: pd.DataFrame) -> bool:
    return all(df[c].between(*PAPER_RANGES[k]).all()
               for c, k in (("Teff", "teff"), ("logg", "logg"), ("[M/H]", "mh"), ("vsini", "vsini")))
