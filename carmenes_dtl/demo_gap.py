"""The demo survey's gap: how its "observed" stars differ from the synthetic model.

Two families of effects (`EFFECTS`, `gap_table`), each with its own scale (`GapMix`):
``degenerate`` ones turn a star into a valid synthetic spectrum of other parameters,
``shared`` ones lie outside the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import preprocess
from .config import CARMENES_VIS_R, GAP_LEVELS

FAMILIES = ("degenerate", "shared")


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


def _scale(value) -> float:
    """`value` as a family scale: a finite number >= 0, to the 6 significant digits of `GapMix.name`."""
    x = float(value)
    if not x >= 0 or math.isinf(x):
        raise ValueError(f"a gap scale must be a finite number >= 0, got {value!r}")
    return float(f"{x:g}")


@dataclass(frozen=True)
class GapMix:
    """Scales of the two gap families (0 = the family's effects are absent).

    Each scale is kept to the 6 significant digits that `name` shows, so that the name (in
    stage keys and folder names) identifies the mix. `parse` reads the CLI's text.
    """

    degenerate: float = 0.0
    shared: float = 0.0

    def __post_init__(self):
        for family in FAMILIES:
            object.__setattr__(self, family, _scale(getattr(self, family)))

    @classmethod
    def parse(cls, text: str) -> GapMix:
        """A level name (`config.GAP_LEVELS`) or ``degenerate=X,shared=Y`` (a key left out is 0)."""
        if text in GAP_LEVELS:
            return cls(GAP_LEVELS[text], GAP_LEVELS[text])
        scales: dict[str, float] = {}
        for part in str(text).split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or key not in FAMILIES or key in scales:
                raise ValueError(f"gap {text!r}: {part!r} is not degenerate=X or shared=Y (each at most once), "
                                 f"nor a level ({', '.join(GAP_LEVELS)})")
            try:
                scales[key] = _scale(value)
            except ValueError:
                raise ValueError(f"gap {text!r}: {part!r} needs a finite number >= 0") from None
        return cls(**scales)

    @property
    def spec(self) -> str:
        """Both scales as ``degenerate=X,shared=Y``."""
        return f"degenerate={self.degenerate:g},shared={self.shared:g}"

    @property
    def name(self) -> str:
        """The level's name when both scales are a level's, else `spec`."""
        for level, g in GAP_LEVELS.items():
            if self.degenerate == g and self.shared == g:
                return level
        return self.spec

    def size(self, effect: str) -> float:
        """Size of `effect` (in its `Effect.unit`) at these scales."""
        e = EFFECTS[effect]
        return e.per_unit * (1.0 if e.family == "always" else getattr(self, e.family))


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
    """What each degenerate effect equals in parameters, from `demo_lines.LineModel`'s own formulas, in the
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
    paper = GapMix.parse("paper")
    rows = [{"effect": k, "family": e.family, "what": e.what, "unit": e.unit, "per unit scale": e.per_unit,
             **{level: e.per_unit * g for level, g in GAP_LEVELS.items() if g},
             "equivalent at paper": _equivalent_text(k, paper)} for k, e in EFFECTS.items()]
    return pd.DataFrame(rows).set_index("effect")
