"""The demo survey's line model: a small physical model of the M-dwarf window near 8800 Å.

Atomic lines (Voigt profiles; strengths scale with [M/H] and Teff, pressure widths with
logg) over a TiO-like molecular band of many weak lines (strength falls steeply with Teff),
in `exp(-tau)` on a Planck continuum; a `demo_gap.GapMix` turns it into the "observed" model.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from astropy import constants as const
from astropy import units as u
from scipy.special import voigt_profile

from . import preprocess
from .demo_gap import GapMix, band_excess, damping_factor, line_strength_error

#: Seed of the line lists: the physics of the demo never changes with the user's seed.
MODEL_SEED = 8800
#: Coverage of the mock PHOENIX wavelength file (rest frame, vacuum Å) and its sampling.
MOCK_RANGE = (8600.0, 9000.0)
PHOENIX_R = 500_000

# (vacuum Å, species, strength at [M/H]=0 and 3500 K, Teff sensitivity per 1000 K, damping)
ATOMIC_LINES = [
    (8798.6, "Fe I", 0.20, 0.5, 1.0), (8802.1, "Fe I", 0.35, 0.6, 1.0), (8806.0, "Ti I", 0.30, -0.9, 0.8),
    (8809.17, "Mg I", 1.20, 0.4, 1.6), (8813.4, "Si I", 0.25, 1.0, 1.0), (8816.9, "Al I", 0.45, 0.3, 1.2),
    (8820.3, "Ti I", 0.20, -1.1, 0.8), (8826.64, "Fe I", 0.90, 0.5, 1.2), (8830.5, "Ti I", 0.25, -0.8, 0.8),
    (8834.2, "Fe I", 0.30, 0.6, 1.0), (8838.4, "Fe I", 0.40, 0.5, 1.0),
]


class LineModel:
    """Rest-frame flux of the demo's M dwarfs; a `GapMix` turns it into the 'observed' model (its
    degenerate effects and missing lines; `demo.observed_star` adds the other shared ones)."""

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


def rv_templates(window, teff=(3000.0, 3300.0, 3600.0, 3900.0, 4200.0), mh=(-0.5, 0.0, 0.5),
                 vsini=(2.0, 6.0, 12.0, 20.0, 30.0)):
    """RV templates from the demo's own synthetic model (``prepare-observed --template demo``): the
    arguments of `prepare.Templates` (wavelength, flux, parameters, source)."""
    wave = mock_phoenix_wavelength()
    preprocess.check_coverage(wave, window, "demo line model", preprocess.MARGIN_A + 1)
    wave = wave[(wave > window.start - preprocess.MARGIN_A - 1) & (wave < window.stop + preprocess.MARGIN_A + 1)]
    model, rows, flux = LineModel(), [], []
    for t in teff:
        for m in mh:
            flux.append(preprocess.synthetic_to_window(wave, model.flux(wave, t, 5.0, m), vsini, window)[0])
            rows += [(t, 5.0, m, v) for v in vsini]
    return (window.wavelength, np.concatenate(flux), pd.DataFrame(rows, columns=["teff", "logg", "mh", "vsini"]),
            "demo line model")
