"""Twins: the same star through both domains must give the same vector.

`AnalyticStar` is a few Gaussian lines on a sloping continuum. `write_twin` writes it as a
PHOENIX HiRes node (rest frame, unbroadened) and as a CARMENES VIS file: broadened with the
same rotation + instrument kernel, Doppler shifted by a known RV (and, CARACAL style, into
the observatory frame of a date at Calar Alto), sampled on CARMENES-like pixels in two
overlapping orders, with a blaze in ``CONT`` and photon noise. `compare` runs both files
through `prepare` and measures the difference. `survey` does the same for a demo survey
against the exact (noise-free, not interpolated) synthetic vector of each star.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline

from . import archives, demo, prepare, preprocess, store
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
    """Gaussian lines (vacuum Å, depth) of intrinsic width `sigma_kms` on a continuum with `slope` per Å."""

    lines: tuple = ((8803.2, 0.45), (8806.1, 0.2), (8809.2, 0.7), (8815.6, 0.3), (8821.9, 0.55),
                    (8826.6, 0.8), (8831.3, 0.25))
    sigma_kms: float = 2.5
    slope: float = 0.003
    vsini: float = 4.0
    rv: float = 23.4
    ra: float = 101.287
    dec: float = 37.21
    bjd: float = 2458940.4321  # BERV -29 km/s at Calar Alto
    node: tuple = (3500.0, 5.0, 0.0)
    karmn: str = "J06451+372"

    def flux(self, wave: np.ndarray, *_) -> np.ndarray:
        """Rest-frame surface flux (arbitrary units)."""
        out = 1e14 * (1 + self.slope * (wave - 8817.5))
        for w0, depth in self.lines:
            out = out * (1 - depth * np.exp(-0.5 * ((wave - w0) / (w0 * self.sigma_kms / preprocess.C_KMS)) ** 2))
        return out


def write_twin(out: Path, star: AnalyticStar = AnalyticStar(), snr: float = 1000.0, style: str = "caracal",
               seed: int = 0) -> tuple[Path, Path]:
    """Write `star` as ``out/phoenix`` (one node) and one VIS file; returns (phoenix dir, VIS file)."""
    if style not in ("caracal", "coadd"):
        raise ValueError(f"unknown twin style {style!r}; choose 'caracal' or 'coadd'")
    out = Path(out)
    demo.write_phoenix_tree(out, preprocess.log_grid(8760.0, 8880.0, preprocess.C_KMS / demo.PHOENIX_R),
                            [star.node], star.flux, progress=False)
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

    ``continuum_ratio`` is the median observed over median synthetic value on the pixels
    where the synthetic vector is continuum (>= 0.999); ``clipped_fraction`` the share of
    those observed pixels clipped at 1 (half when the continuum level is unbiased).
    """
    phoenix, vis = write_twin(out, star, snr, style, seed)
    nodes = pd.DataFrame([star.node], columns=["teff", "logg", "mh"])
    syn_path = prepare.prepare_synthetic(phoenix, Path(out) / "synthetic.h5", [star.vsini], window, nodes,
                                         progress=False)
    syn = store.read(syn_path).flux[0]
    res = prepare.process_observed(archives.read_carmenes(vis), window, prepare.template_from_set(syn_path))
    d = res.flux - syn
    cont = syn >= 0.999
    return {"style": style, "snr": snr, "synthetic": syn, "observed": res.flux, "wavelength": window.wavelength,
            "mean_abs": float(np.abs(d).mean()), "max_abs": float(np.abs(d).max()),
            "continuum_ratio": float(np.median(res.flux[cont]) / np.median(syn[cont])),
            "clipped_fraction": float(np.mean(res.flux[cont] >= 1.0)),
            "rv": res.rv, "rv_true": star.rv, "berv": res.berv, "berv_header": res.berv_header}


def survey(observed: Path, truth_csv: Path, phoenix_dir: Path | None = None, window: Window = Window()) -> pd.DataFrame:
    """Per demo star: the observed vector against the exact synthetic vector of its true
    parameters (the demo's model, no archive interpolation), with what noise alone gives
    and, with `phoenix_dir`, what interpolating the archive to those parameters gives.

    Columns: ``mean_abs`` (observed - exact), ``noise_mean_abs`` (the same for the exact
    vector plus seeded photon noise of the star's measured S/N per output pixel, clipped
    at 1 like the data: what noise alone gives), ``interp_mean_abs`` (interpolated - exact
    synthetic), ``drv`` and ``dberv`` (measured - truth, km/s).
    """
    obs = store.read(observed)
    truth = pd.read_csv(truth_csv).set_index("karmn")
    wave = demo.mock_phoenix_wavelength()
    model = demo.LineModel()
    archive = Archive(phoenix_dir, window.start - preprocess.MARGIN_A - 1, window.stop + preprocess.MARGIN_A + 1) \
        if phoenix_dir is not None else None
    rows = []
    for i, karmn in enumerate(obs.parameters["karmn"]):
        t = truth.loc[karmn]
        params = (t["Teff"], t["logg"], t["[M/H]"])
        exact = preprocess.synthetic_to_window(wave, model.flux(wave, *params), [t["vsini"]], window)[0][0]
        row = {"karmn": karmn, "Teff": t["Teff"], "vsini": t["vsini"], "snr": t["snr"],
               "mean_abs": float(np.abs(obs.flux[i] - exact).mean()),
               "noise_mean_abs": float(np.abs(_with_noise(exact, obs.attrs["snr"][i], i) - exact).mean()),
               "drv": obs.attrs["rv_kms"][i] - t["rv"], "dberv": obs.attrs["berv_kms"][i] - t["berv"]}
        if archive is not None:
            interp = preprocess.synthetic_to_window(archive.wave, archive.interpolate(*params), [t["vsini"]], window)[0][0]
            row["interp_mean_abs"] = float(np.abs(interp - exact).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _with_noise(vector: np.ndarray, snr: float, seed: int) -> np.ndarray:
    """`vector` with photon noise (sigma ~ sqrt(flux), S/N `snr` at its median), clipped to [0, 1]."""
    sigma = np.sqrt(vector * np.median(vector)) / snr
    return np.clip(vector + np.random.default_rng(seed).normal(0, 1, vector.size) * sigma, 0, 1)


def rv_summary(table: pd.DataFrame, edges=(0.0, 4.0, 10.0, 30.0)) -> pd.DataFrame:
    """Median and maximum |RV - truth| (km/s) per vsini bin of a `survey` table."""
    bins = pd.cut(table["vsini"], list(edges))
    return table.assign(abs_drv=table["drv"].abs()).groupby(bins, observed=True)["abs_drv"].agg(
        n="size", median="median", max="max")
