"""Twins: the same star through both domains must give the same vector.

`AnalyticStar` is a few Gaussian lines on a sloping continuum, their optical depths linear in
Teff. `write_twin` writes it as PHOENIX HiRes nodes on both sides of the star's Teff (rest
frame, unbroadened; the star's own Teff is no node, so the observed spectrum is normalised
against a best-matching node that differs from it; ln flux is linear in Teff, so the
archive's interpolation to the star's Teff is exact) and as a CARMENES VIS file: broadened with the
same rotation + instrument kernel, Doppler shifted by a known RV (and, CARACAL style, into
the observatory frame of a date at Calar Alto), sampled on CARMENES-like pixels in two
overlapping orders, with a blaze in ``CONT`` and photon noise. `compare` runs both files
through `prepare` (the synthetic vector interpolated to the star's parameters, the observed
one against the node set as RV templates and references) and measures the difference. `survey` does the same for a demo survey
against the exact (noise-free, not interpolated) synthetic vector of each star.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline

from . import archives, demo, demo_lines, prepare, preprocess, store
from .config import CARMENES_VIS_R, Window
from .grid import Archive
from .rv import barycentric_correction

#: Pixels per resolution element of the twin's CARMENES-like orders.
PIXELS_PER_RESOLUTION = 2.8
#: Centres (Å) and pixel count of the two overlapping orders.
ORDER_CENTRES = (8805.0, 8835.0)
ORDER_PIXELS = 3000


@dataclass(frozen=True)
class AnalyticStar:
    """Gaussian lines (vacuum Å, central depth at `teff`, Teff sensitivity of the optical depth per
    1000 K) of intrinsic width `sigma_kms` on a continuum with `slope` per Å; `vsini` and the
    radial velocity `rv` in km/s, `ra`/`dec` in degrees, `bjd` in days (TDB); `nodes` are the
    Teff (K) of the archive nodes written for it (at `logg`, `mh`), none of them `teff`."""

    lines: tuple = ((8803.2, 0.45, 1.5), (8806.1, 0.2, -2.0), (8809.2, 0.7, 1.0), (8815.6, 0.3, -1.5),
                    (8821.9, 0.55, 2.0), (8826.6, 0.8, -1.0), (8831.3, 0.25, 1.5))
    sigma_kms: float = 2.5
    slope: float = 0.003
    vsini: float = 4.0
    rv: float = 23.4
    ra: float = 101.287
    dec: float = 37.21
    bjd: float = 2458940.4321  # BERV -29 km/s at Calar Alto
    teff: float = 3450.0
    logg: float = 5.0
    mh: float = 0.0
    nodes: tuple = (3300.0, 3400.0, 3500.0, 3600.0)
    karmn: str = "J06451+372"

    def flux(self, wave: np.ndarray, teff: float | None = None, *_) -> np.ndarray:
        """Rest-frame surface flux (arbitrary units) at `teff` (default: the star's)."""
        x = ((self.teff if teff is None else teff) - self.teff) / 1000
        tau = np.zeros_like(wave)
        for w0, depth, k in self.lines:
            tau += -np.log1p(-depth) * (1 + k * x) * np.exp(
                -0.5 * ((wave - w0) / (w0 * self.sigma_kms / preprocess.C_KMS)) ** 2)
        return 1e14 * (1 + self.slope * (wave - 8817.5)) * np.exp(-tau)


def write_twin(out: Path, star: AnalyticStar = AnalyticStar(), snr: float = 1000.0, style: str = "caracal",
               seed: int = 0) -> tuple[Path, Path]:
    """Write `star` as ``out/phoenix`` (its `nodes`) and one VIS file; returns (phoenix dir, VIS file)."""
    if style not in ("caracal", "coadd"):
        raise ValueError(f"unknown twin style {style!r}; choose 'caracal' or 'coadd'")
    if star.teff in star.nodes:
        raise ValueError(f"the twin's star (Teff {star.teff:g} K) must lie between archive nodes, not on one")
    out = Path(out)
    demo.write_phoenix_tree(out, preprocess.log_grid(8760.0, 8880.0, preprocess.C_KMS / demo_lines.PHOENIX_R),
                            [(t, star.logg, star.mh) for t in star.nodes], star.flux, progress=False)
    fine = preprocess.log_grid(8740.0, 8900.0)
    observed = CubicSpline(fine, preprocess.broaden(star.flux(fine) / 1e14, star.vsini))
    dln = 1 / (PIXELS_PER_RESOLUTION * CARMENES_VIS_R)
    wave = np.array([c * np.exp((np.arange(ORDER_PIXELS) - ORDER_PIXELS / 2) * dln) for c in ORDER_CENTRES])
    rng = np.random.default_rng(seed)
    folder = out / "carmenes"
    folder.mkdir(parents=True, exist_ok=True)
    if style == "caracal":
        berv = barycentric_correction(star.ra, star.dec, star.bjd)
        rel = observed(wave * preprocess.doppler_factor(berv) / preprocess.doppler_factor(star.rv))
        pix = np.arange(ORDER_PIXELS)
        cont = snr ** 2 * np.sinc((pix - ORDER_PIXELS / 2) / ORDER_PIXELS * 1.2)[None, :] ** 2 * np.ones_like(wave)
        expected = rel * cont
        spec = expected + rng.normal(0, 1, wave.shape) * np.sqrt(expected)
        path = demo.write_vis(folder / demo.caracal_name(star.bjd), star.karmn, wave, spec, np.sqrt(expected), cont,
                              star.ra, star.dec, star.bjd, berv)
    else:
        rel = observed(wave / preprocess.doppler_factor(star.rv))
        sig = np.sqrt(rel) / snr
        path = demo.write_vis(folder / f"{star.karmn}.coadd.fits", star.karmn, wave,
                              rel + rng.normal(0, 1, wave.shape) * sig, sig)
    return out / "phoenix", path


def compare(out: Path, star: AnalyticStar = AnalyticStar(), snr: float = 1000.0, style: str = "caracal",
            seed: int = 0, window: Window = Window()) -> dict:
    """Write the twin, run `prepare` on both files; the vectors, their differences and the RV found.

    The synthetic vector is `prepare-synthetic` at the star's parameters (interpolated between
    the archive nodes, exact for this star); the observed one is `prepare-observed` with the
    nodes' set as RV templates and normalisation references (``template``: the one it chose).
    ``continuum_ratio`` is the mean UNCLIPPED observed/synthetic ratio on the pixels where the
    synthetic vector is continuum (>= 0.999): the continuum level, which the clipped vector
    cannot show (its continuum pixels average 1 - 0.4/SNR when the level is right);
    ``clipped_fraction`` the share of those observed pixels clipped at 1.
    """
    phoenix, vis = write_twin(out, star, snr, style, seed)
    at_star = pd.DataFrame([(star.teff, star.logg, star.mh)], columns=["teff", "logg", "mh"])
    syn = store.read(prepare.prepare_synthetic(phoenix, Path(out) / "synthetic.h5", [star.vsini], window, at_star,
                                               progress=False)).flux[0]
    node_set = prepare.prepare_synthetic(phoenix, Path(out) / "nodes.h5", [star.vsini], window, progress=False)
    res = prepare.process_observed(archives.read_carmenes(vis), window, prepare.Templates.from_set(node_set))
    d = res.flux - syn
    cont = syn >= 0.999
    return {"style": style, "snr": snr, "synthetic": syn, "observed": res.flux, "wavelength": window.wavelength,
            "mean_abs": float(np.abs(d).mean()), "max_abs": float(np.abs(d).max()),
            "continuum_ratio": float(np.mean(res.unclipped[cont] / syn[cont])),
            "clipped_fraction": float(np.mean(res.flux[cont] >= 1.0)), "template": res.template,
            "rv": res.rv, "rv_true": star.rv, "berv": res.berv, "berv_header": res.berv_header}


def survey(observed: Path, truth_csv: Path, phoenix_dir: Path | None = None, window: Window = Window()) -> pd.DataFrame:
    """Per demo star: the observed vector against the exact synthetic vector of its true
    parameters (the demo's model, no archive interpolation), with what noise alone gives
    and, with `phoenix_dir`, what interpolating the archive to those parameters gives.

    Columns: ``mean_abs`` (observed - exact), ``noise_mean_abs`` (the same for the exact
    vector plus seeded photon noise of the star's measured S/N per output pixel, clipped
    at 1 like the data: what noise alone gives), ``interp_mean_abs`` (interpolated - exact
    synthetic), ``continuum_shift`` (mean observed value - 1 on the exact vector's continuum
    pixels, >= 0.999: what clipping at 1 does to a correctly placed continuum),
    ``clip_expected`` (its value for Gaussian noise of the star's S/N clipped at 1:
    -1/(sqrt(2 pi) S/N), about -0.4/S/N), ``drv`` and ``dberv`` (measured - truth, km/s).
    """
    obs = store.read(observed)
    truth = pd.read_csv(truth_csv).set_index("karmn")
    exact_all = exact_vectors(truth.loc[obs.parameters["karmn"]], window)
    archive = Archive(phoenix_dir, window.start - preprocess.MARGIN_A - 1, window.stop + preprocess.MARGIN_A + 1) \
        if phoenix_dir is not None else None
    rows = []
    for i, karmn in enumerate(obs.parameters["karmn"]):
        t = truth.loc[karmn]
        params, exact = (t["Teff"], t["logg"], t["[M/H]"]), exact_all[i]
        row = {"karmn": karmn, "Teff": t["Teff"], "vsini": t["vsini"], "snr": t["snr"],
               "mean_abs": float(np.abs(obs.flux[i] - exact).mean()),
               "noise_mean_abs": float(np.abs(_with_noise(exact, obs.attrs["snr"][i], i) - exact).mean()),
               "continuum_shift": float(obs.flux[i][exact >= 0.999].mean() - 1),
               "clip_expected": float(-1 / (np.sqrt(2 * np.pi) * obs.attrs["snr"][i])),
               "drv": obs.attrs["rv_kms"][i] - t["rv"], "dberv": obs.attrs["berv_kms"][i] - t["berv"]}
        if archive is not None:
            interp = preprocess.synthetic_to_window(archive.wave, archive.interpolate(*params), [t["vsini"]], window)[0][0]
            row["interp_mean_abs"] = float(np.abs(interp - exact).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def exact_vectors(truth: pd.DataFrame, window: Window = Window()) -> np.ndarray:
    """The exact synthetic vector of each star (row) of `truth` (columns ``Teff, logg, [M/H], vsini``):
    the demo's synthetic `demo_lines.LineModel` at those parameters, noise-free and not interpolated,
    broadened to the star's vsini and put on `window` like a synthetic spectrum."""
    wave, model = demo_lines.mock_phoenix_wavelength(), demo_lines.LineModel()
    return np.array([preprocess.synthetic_to_window(wave, model.flux(wave, t["Teff"], t["logg"], t["[M/H]"]),
                                                    [t["vsini"]], window)[0][0] for _, t in truth.iterrows()])


def _with_noise(vector: np.ndarray, snr: float, seed: int) -> np.ndarray:
    """`vector` with photon noise (sigma ~ sqrt(flux), S/N `snr` at its median), clipped to [0, 1]."""
    sigma = np.sqrt(vector * np.median(vector)) / snr
    return np.clip(vector + np.random.default_rng(seed).normal(0, 1, vector.size) * sigma, 0, 1)


def rv_summary(table: pd.DataFrame, edges=(0.0, 4.0, 10.0, 30.0)) -> pd.DataFrame:
    """Median and maximum |RV - truth| (km/s) per vsini bin of a `survey` table."""
    bins = pd.cut(table["vsini"], list(edges))
    return table.assign(abs_drv=table["drv"].abs()).groupby(bins, observed=True)["abs_drv"].agg(
        n="size", median="median", max="max")
