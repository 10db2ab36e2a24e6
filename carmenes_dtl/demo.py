"""The demo survey: a deterministic stand-in for the PHOENIX and CARMENES archives.

Spectra come from a small physical model of the M-dwarf window near 8800 Å: atomic lines
(Voigt profiles; strengths scale with [M/H] and Teff, pressure widths with logg) over a
TiO-like molecular band of many weak lines (strength falls steeply with Teff), in
`exp(-tau)` on a Planck continuum. The "observed" stars differ from the synthetic model
by two families of effects (`EFFECTS`, `gap_table`), each with its own scale (`GapMix`):
``degenerate`` ones turn a star into a valid synthetic spectrum of other parameters,
``shared`` ones lie outside the model. The files use the real archive layouts, so the same
readers run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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
#: Scale of both gap families per level. `paper` is set so that a method that ignores the gap
#: errs on the demo by about as much as the synthetic-only deep learning of Passegger et al.
#: (2020) deviates from the literature on real stars (~0.2 dex in [M/H], ~100-400 K in Teff).
GAP_LEVELS = {"none": 0.0, "mild": 0.25, "paper": 0.5, "strong": 1.0}
FAMILIES = ("degenerate", "shared")
#: Where the demo stars' parameters come from (`draw_stars`).
STAR_SOURCES = ("published", "uniform")

# (vacuum Å, species, strength at [M/H]=0 and 3500 K, Teff sensitivity per 1000 K, damping)
ATOMIC_LINES = [
    (8798.6, "Fe I", 0.20, 0.5, 1.0), (8802.1, "Fe I", 0.35, 0.6, 1.0), (8806.0, "Ti I", 0.30, -0.9, 0.8),
    (8809.17, "Mg I", 1.20, 0.4, 1.6), (8813.4, "Si I", 0.25, 1.0, 1.0), (8816.9, "Al I", 0.45, 0.3, 1.2),
    (8820.3, "Ti I", 0.20, -1.1, 0.8), (8826.64, "Fe I", 0.90, 0.5, 1.2), (8830.5, "Ti I", 0.25, -0.8, 0.8),
    (8834.2, "Fe I", 0.30, 0.6, 1.0), (8838.4, "Fe I", 0.40, 0.5, 1.0),
]


@dataclass(frozen=True)
class Effect:
    """One difference between the observed and the synthetic model: its family, what it is, and
    its size at family scale 1 (in `unit`); the size at scale g is g times that."""

    family: str  # "degenerate", "shared" or "always"
    what: str
    per_unit: float
    unit: str


#: Every gap effect. Degenerate: errors of the model's own ingredients, each equivalent to other
#: parameters (`parameter_equivalents`). Shared: what the model lacks or the observation adds.
EFFECTS = {
    "line_strengths": Effect(
        "degenerate", "atomic lines stronger than modelled, all by one factor that grows toward cool and "
        "metal-poor stars: ln(obs/syn) = size x (1 - 0.5 (Teff-3500)/1000 - 0.5 [M/H])", 0.25,
        "ln(obs/syn) at 3500 K, [M/H] 0"),
    "molecular_band": Effect(
        "degenerate", "molecular band stronger than modelled, by a fraction growing toward cool and metal-rich "
        "stars: size x exp(-(Teff-3500)/1000) x (1 + 0.5 [M/H])", 0.25, "fractional excess at 3500 K, [M/H] 0"),
    "damping": Effect("degenerate", "Lorentz widths of the atomic lines too large, more so in cool stars: "
                      "factor 1 + size x 3500 K/Teff", 0.5, "factor - 1 at 3500 K"),
    "line_pattern": Effect("shared", "per-line errors of the atomic line strengths, the same in every star: "
                           "ln(obs/syn) = size x z, z of unit rms across the lines", 0.25, "rms ln(obs/syn)"),
    "missing_lines": Effect("shared", "12 lines absent from the synthetic model (strengths 0.2-0.6 x size; "
                            "atomic lines: 0.2-1.2)", 1.0, "strength factor"),
    "line_spread": Effect("shared", "extra Gaussian line spread: a lower resolving power than the "
                          f"R = {CARMENES_VIS_R:,} the synthetic side assumes", 2.5, "FWHM km/s"),
    "continuum": Effect("shared", "residual continuum slope and curvature after normalisation", 0.02,
                        "peak amplitude"),
    "tellurics": Effect("shared", "residual H2O-like lines fixed in the observatory frame", 0.04,
                        "depth at airmass 1"),
    "veiling": Effect("shared", "veiling-like additive offset: normalised flux f -> (f + v)/(1 + v)", 0.05, "v"),
    "wavelength_drift": Effect("shared", "differential wavelength-solution error across the window", 0.3,
                               "rms km/s"),
    "photon_noise": Effect("always", "photon noise, S/N 30-300 per pixel: at every setting, --gap none included",
                           math.nan, "-"),
}


@dataclass(frozen=True)
class GapMix:
    """Scales of the two gap families (0 = the family's effects are absent)."""

    degenerate: float = 0.0
    shared: float = 0.0

    @property
    def name(self) -> str:
        """The level's name when both scales are a level's, else ``degenerate=X,shared=Y``."""
        for level, g in GAP_LEVELS.items():
            if self.degenerate == g and self.shared == g:
                return level
        return f"degenerate={self.degenerate:g},shared={self.shared:g}"

    def size(self, effect: str) -> float:
        """Size of `effect` (in its `Effect.unit`) at these scales."""
        e = EFFECTS[effect]
        return e.per_unit * (1.0 if e.family == "always" else getattr(self, e.family))


def parse_gap(text: str) -> GapMix:
    """A level name (none, mild, paper, strong) or ``degenerate=X,shared=Y`` (a key left out is 0)."""
    if text in GAP_LEVELS:
        return GapMix(GAP_LEVELS[text], GAP_LEVELS[text])
    scales: dict[str, float] = {}
    for part in str(text).split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in FAMILIES or key in scales:
            raise ValueError(f"gap {text!r}: {part!r} is not degenerate=X or shared=Y (each at most once), "
                             f"nor a level ({', '.join(GAP_LEVELS)})")
        try:
            scales[key] = float(value)
        except ValueError:
            scales[key] = math.nan
        if not scales[key] >= 0 or math.isinf(scales[key]):
            raise ValueError(f"gap {text!r}: {part!r} needs a finite number >= 0")
    return GapMix(**scales)


def band_excess(size: float, teff, mh=0.0) -> np.ndarray:
    """Fractional excess of the observed molecular band at `teff`, `mh`, for a `molecular_band` size."""
    return size * np.exp(-(np.asarray(teff, float) - 3500.0) / 1000.0) * (1 + 0.5 * np.asarray(mh, float))


def line_strength_error(size: float, teff, mh=0.0) -> np.ndarray:
    """ln(observed/synthetic) strength of every atomic line at `teff`, `mh`, for a `line_strengths` size."""
    return size * (1 - 0.5 * (np.asarray(teff, float) - 3500.0) / 1000.0 - 0.5 * np.asarray(mh, float))


def damping_factor(size: float, teff) -> np.ndarray:
    """Factor on the Lorentz widths at `teff`, for a `damping` size."""
    return 1 + size * 3500.0 / np.asarray(teff, float)


def effective_resolution(fwhm_kms: float) -> float:
    """Resolving power of the instrument profile with an extra Gaussian of `fwhm_kms` in quadrature."""
    return preprocess.C_KMS / math.hypot(preprocess.C_KMS / CARMENES_VIS_R, fwhm_kms)


def parameter_equivalents(mix: GapMix, teff: float = 3500.0, mh: float = 0.0) -> dict[str, dict[str, float]]:
    """What each degenerate effect equals in parameters, from `LineModel`'s own formulas, in the
    feature it touches: the band scales as exp(-(Teff-2800)/420) 10^(0.5 [M/H]), so a factor (1+m)
    is ΔTeff = -420 ln(1+m) K or Δ[M/H] = 2 log10(1+m); Lorentz widths as 10^(0.4 (logg-5)), so a
    factor d is Δlogg = 2.5 log10 d; atomic line strengths as 10^[M/H], so a common ln-factor s is
    Δ[M/H] = s/ln 10. Δ: the parameters of the synthetic spectrum whose band (wings, atomic lines)
    an observed star at `teff`, `mh` has, minus its own; a whole spectrum matches none of them
    exactly, as each shift would also change the other features."""
    m = float(band_excess(mix.size("molecular_band"), teff, mh))
    return {"molecular_band": {"Teff": -420.0 * math.log1p(m), "[M/H]": 2 * math.log10(1 + m)},
            "damping": {"logg": 2.5 * math.log10(float(damping_factor(mix.size("damping"), teff)))},
            "line_strengths": {"[M/H]": float(line_strength_error(mix.size("line_strengths"), teff, mh)) / math.log(10)}}


def _equivalent_text(effect: str, mix: GapMix) -> str:
    if effect == "line_spread":
        return f"R = {effective_resolution(mix.size('line_spread')):,.0f} instead of {CARMENES_VIS_R:,}"
    if effect not in ("molecular_band", "damping", "line_strengths"):
        return ""
    eq = parameter_equivalents(mix)[effect]
    if effect == "molecular_band":
        cool = parameter_equivalents(mix, 3000.0)[effect]
        return (f"ΔTeff {eq['Teff']:+.0f} K or Δ[M/H] {eq['[M/H]']:+.3f} dex at 3500 K "
                f"({cool['Teff']:+.0f} K or {cool['[M/H]']:+.3f} dex at 3000 K)")
    if effect == "damping":
        return f"Δlogg {eq['logg']:+.3f} in the line wings"
    cool = parameter_equivalents(mix, 3000.0, -0.5)[effect]
    return f"Δ[M/H] {eq['[M/H]']:+.3f} dex at 3500 K, [M/H] 0 ({cool['[M/H]']:+.3f} at 3000 K, -0.5)"


def gap_table() -> pd.DataFrame:
    """One row per effect: family, what it is, its size per unit scale and at each level (both
    families at the level's scale), and at `paper` what it is equivalent to."""
    paper = parse_gap("paper")
    rows = [{"effect": k, "family": e.family, "what": e.what, "unit": e.unit, "per unit scale": e.per_unit,
             **{level: e.per_unit * g for level, g in GAP_LEVELS.items() if g},
             "equivalent at paper": _equivalent_text(k, paper)} for k, e in EFFECTS.items()]
    return pd.DataFrame(rows).set_index("effect")


class LineModel:
    """Rest-frame flux of the demo's M dwarfs; a `GapMix` turns it into the 'observed' model (its
    degenerate effects and missing lines; `observed_star` adds the other shared ones)."""

    def __init__(self, mix: GapMix | None = None):
        rng = np.random.default_rng(MODEL_SEED)
        self.mix = mix or GapMix()
        self.atomic = np.array([line[:1] + line[2:] for line in ATOMIC_LINES])
        self.mol_wave = np.sort(rng.uniform(*MOCK_RANGE, 4000))
        self.mol_strength = rng.lognormal(-3.0, 0.8, self.mol_wave.size)
        self.mol_strength *= 1 + 1.5 * (self.mol_wave > 8860)  # a band head redwards of the window
        offsets = rng.normal(0, 1, len(ATOMIC_LINES))
        extra = np.column_stack([rng.uniform(8795, 8840, 12), rng.uniform(0.2, 0.6, 12),
                                 rng.uniform(-0.8, 0.8, 12), np.ones(12)])
        self.line_pattern = offsets / np.sqrt(np.mean(offsets ** 2))  # unit rms across the lines
        extra[:, 1] *= self.mix.size("missing_lines")
        self.extra = extra if self.mix.size("missing_lines") else extra[:0]
        self._mol_cache: dict = {}

    def line_scale(self, teff: float, mh: float) -> np.ndarray:
        """Factor on each atomic line's strength: the common `line_strengths` error times the
        fixed per-line `line_pattern` (1 without either)."""
        return np.exp(line_strength_error(self.mix.size("line_strengths"), teff, mh)
                      + self.mix.size("line_pattern") * self.line_pattern)

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
        return band * (1 + band_excess(self.mix.size("molecular_band"), teff, mh))

    def continuum(self, wave: np.ndarray, teff: float, logg: float, mh: float) -> np.ndarray:
        """Line-free surface flux (erg/s/cm^2/cm): Planck, dimmed by the band's veil."""
        planck = (2 * const.h * const.c ** 2 / (wave * u.AA) ** 5
                  / np.expm1(const.h * const.c / (wave * u.AA * const.k_B * teff * u.K)))
        surface = (np.pi * u.sr * planck / u.sr).to_value(u.erg / u.s / u.cm ** 2 / u.cm)
        return surface * (1 - 0.25 * np.tanh(self._band(teff, logg, mh)))

    def flux(self, wave: np.ndarray, teff: float, logg: float, mh: float) -> np.ndarray:
        """Surface flux (erg/s/cm^2/cm) on `wave` (vacuum Å) for one star."""
        damping = damping_factor(self.mix.size("damping"), teff)
        lines = np.vstack([self.atomic, self.extra])
        scale = np.concatenate([self.line_scale(teff, mh), np.ones(len(self.extra))])
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


#: Half-widths of the box around a star whose paper-grid nodes decide its coverage: one PHOENIX
#: archive step in Teff, one grid step in logg and [M/H].
COVERAGE_BOX = {"Teff": 100.0, "logg": 0.1, "[M/H]": 0.1}
#: Jitter of the resampled published estimates (vsini: rms of ln vsini).
STAR_JITTER = {"Teff": 40.0, "logg": 0.03, "[M/H]": 0.05, "vsini": 0.10}


def grid_coverage(params: pd.DataFrame, nodes: pd.DataFrame | None = None) -> np.ndarray:
    """``inside``, ``edge`` or ``outside`` the paper grid's coverage, per row of Teff, logg, [M/H].

    The nodes that count are those in the box of half-widths `COVERAGE_BOX` around the star
    (100 K, 0.1, 0.1 dex). ``outside``: the box holds no node, or the star lies beyond the
    grid's ranges. ``inside``: along each of the three axes the box holds a node at or below
    and one at or above the star's value, so the training labels surround it. ``edge``: the
    rest, stars the grid reaches from one side only on some axis (a CNN extrapolates there).
    """
    from .grid import paper_nodes

    nodes = (paper_nodes() if nodes is None else nodes)[["teff", "logg", "mh"]].to_numpy(float)
    x = params[list(COVERAGE_BOX)].to_numpy(float)
    diff = nodes[None, :, :] - x[:, None, :]
    box = np.all(np.abs(diff) <= np.array(list(COVERAGE_BOX.values())) + 1e-9, axis=2)
    bracketed = np.all([(box & (diff[:, :, j] <= 0)).any(1) & (box & (diff[:, :, j] >= 0)).any(1)
                        for j in range(3)], axis=0)
    in_ranges = np.all([params[c].between(*PAPER_RANGES[k]) for c, k in
                        (("Teff", "teff"), ("logg", "logg"), ("[M/H]", "mh"))], axis=0)
    covered = box.any(1) & in_ranges
    return np.where(covered & bracketed, "inside", np.where(covered, "edge", "outside"))


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
    from .literature import load

    published = load("paper")[list(STAR_JITTER)].to_numpy(float)
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


def write_carmenes(out: Path, stars: pd.DataFrame, gap: str, seed: int, progress: bool = True) -> pd.DataFrame:
    """One CARACAL-layout VIS file per star (gap `gap`: a level or ``degenerate=X,shared=Y``);
    returns each star's file and the BERV applied (km/s)."""
    folder = Path(out) / "carmenes"
    folder.mkdir(parents=True, exist_ok=True)
    model = LineModel(parse_gap(gap))
    paths, bervs = [], []
    for i, star in tqdm(list(stars.iterrows()), desc="demo CARMENES", disable=not progress):
        rng = np.random.default_rng([seed, i])
        wave, spec, cont, sig, berv = observed_star(star, model, rng)
        path = folder / caracal_name(star.bjd)
        write_vis(path, star.karmn, wave, spec, sig, cont, star.ra, star.dec, star.bjd, berv)
        paths.append(path)
        bervs.append(round(berv, 6))
    return pd.DataFrame({"file": [f"carmenes/{p.name}" for p in paths], "berv": bervs}, index=stars.index)


def write_demo(out: Path, seed: int = 42, n_stars: int | None = None, gap: str = "paper",
               size: str = "quick", progress: bool = True, phoenix: bool = True, stars: str = "published") -> Path:
    """Write ``phoenix/``, ``carmenes/`` and ``truth.csv`` under `out`; same seed, same bytes.

    `gap`: a level or ``degenerate=X,shared=Y`` (`parse_gap`); `stars`: ``published`` or
    ``uniform`` (`draw_stars`)."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {list(SIZES)}")
    mix = parse_gap(gap)
    spec = SIZES[size]
    out = Path(out)
    rng = np.random.default_rng(seed)
    table = draw_stars(n_stars or spec.n_stars, rng, stars)
    if phoenix:
        write_phoenix(out, spec, progress)
    written = write_carmenes(out, table, mix.name, seed, progress)
    table.insert(1, "file", written["file"])
    table["berv"] = written["berv"]
    table.to_csv(out / "truth.csv", index=False)
    counts = table["coverage"].value_counts()
    (out / "README.txt").write_text(
        f"carmenes-dtl demo survey: seed={seed} gap={mix.name} stars={stars} size={size} n_stars={len(table)}\n"
        f"grid coverage: {', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"draws outside it replaced: {table.attrs['redrawn']}\n"
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
