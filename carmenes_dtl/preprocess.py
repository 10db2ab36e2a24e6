"""One preprocessing path for both domains: broaden, shift, resample, normalise.

Broadening works in velocity space: the spectrum is first put on a grid uniform in
ln(λ), where a rotation or instrument profile has the same shape at every wavelength,
so one FFT convolution per vsini does the job exactly (PyAstronomy's `fastRotBroad`
instead uses one kernel, in Å, for the whole range).
"""
from __future__ import annotations

import functools

import numpy as np
from astropy import constants as const
from astropy import units as u
from scipy import fft as sp_fft

from .config import CARMENES_VIS_R, Window

C_KMS = const.c.to_value(u.km / u.s)
#: Linear limb-darkening coefficient of the rotation profile (Gray 2005), a common choice near 8800 Å.
LIMB_DARKENING = 0.6
#: Velocity step of the internal ln(λ) grid, km/s (output 0.01 Å is 0.34 km/s at 8800 Å).
DV_KMS = 0.1
#: Extra coverage kept around the window before broadening and shifting, Å.
MARGIN_A = 3.0


def as_kms(v) -> float:
    """A velocity as a float in km/s; accepts astropy quantities of any velocity unit."""
    return float(u.Quantity(v, u.km / u.s).value)


def doppler_factor(v_kms: float) -> float:
    """Relativistic factor λ_obs/λ_emit for a radial velocity (positive = receding)."""
    beta = v_kms / C_KMS
    return float(np.sqrt((1 + beta) / (1 - beta)))


def log_grid(start: float, stop: float, dv_kms: float = DV_KMS) -> np.ndarray:
    """Wavelengths from `start` to `stop` Å with a constant velocity step."""
    n = int(np.ceil(np.log(stop / start) / np.log1p(dv_kms / C_KMS))) + 1
    return start * np.exp(np.arange(n) * np.log1p(dv_kms / C_KMS))


def bin_edges(wave: np.ndarray) -> np.ndarray:
    """Pixel edges halfway between centres, extrapolated at both ends."""
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[2 * wave[0] - mid[0]], mid, [2 * wave[-1] - mid[-1]]])


def resample(wave_in: np.ndarray, flux_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Flux-conserving resampling: the mean flux density of each output pixel.

    Integrates the piecewise-constant input over the output pixel edges (cumulative
    sum, interpolated at the edges). Ten vectorised lines; the `spectres` package does
    the same with a Python loop per pixel. `wave_out` must lie inside `wave_in`.
    """
    edges_in = bin_edges(wave_in)
    edges_out = bin_edges(wave_out)
    if edges_out[0] < edges_in[0] or edges_out[-1] > edges_in[-1]:
        raise ValueError(
            f"output range {wave_out[0]:.3f}-{wave_out[-1]:.3f} Å is outside the input "
            f"coverage {wave_in[0]:.3f}-{wave_in[-1]:.3f} Å")
    cumulative = np.concatenate([[0.0], np.cumsum(flux_in * np.diff(edges_in))])
    return np.diff(np.interp(edges_out, edges_in, cumulative)) / np.diff(edges_out)


def _supersampled(profile, half_width: float, dv: float, sub: int = 20) -> np.ndarray:
    """A velocity profile averaged over pixels of width `dv`, normalised to unit sum."""
    n = int(np.ceil(half_width / dv))
    v = (np.arange(-n, n + 1)[:, None] + (np.arange(sub) + 0.5)[None, :] / sub - 0.5) * dv
    kernel = profile(v).mean(axis=1)
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=64)
def rotation_kernel(vsini_kms: float, dv_kms: float = DV_KMS, epsilon: float = LIMB_DARKENING) -> np.ndarray:
    """Limb-darkened rotation profile (Gray 2005, Eq. 18.14) sampled at `dv_kms`."""
    if vsini_kms <= 0:
        return np.ones(1)

    def profile(v):
        x2 = np.clip(1 - (v / vsini_kms) ** 2, 0, None)
        return 2 * (1 - epsilon) * np.sqrt(x2) + 0.5 * np.pi * epsilon * x2

    return _supersampled(profile, vsini_kms, dv_kms)


@functools.lru_cache(maxsize=8)
def gaussian_kernel(resolution: float, dv_kms: float = DV_KMS) -> np.ndarray:
    """Instrument profile: a Gaussian of FWHM c/R in velocity."""
    sigma = C_KMS / resolution / (2 * np.sqrt(2 * np.log(2)))
    return _supersampled(lambda v: np.exp(-0.5 * (v / sigma) ** 2), 6 * sigma, dv_kms)


def kernel(vsini_kms: float, resolution: float | None = CARMENES_VIS_R, dv_kms: float = DV_KMS) -> np.ndarray:
    """Rotation profile convolved with the instrument profile, sampled at `dv_kms`."""
    k = rotation_kernel(float(vsini_kms), dv_kms)
    return np.convolve(k, gaussian_kernel(resolution, dv_kms)) if resolution else k


def broaden(flux: np.ndarray, vsini_kms: float, resolution: float | None = CARMENES_VIS_R,
            dv_kms: float = DV_KMS) -> np.ndarray:
    """Rotational then instrumental broadening of a spectrum on a `log_grid`."""
    return broaden_many(flux, [vsini_kms], resolution, dv_kms)[0]


def broaden_many(flux: np.ndarray, vsini, resolution: float | None = CARMENES_VIS_R,
                 dv_kms: float = DV_KMS) -> np.ndarray:
    """Broaden for several vsini at once: one forward FFT of the spectrum, one product per kernel.

    The spectrum is padded with its edge values so the ends are not pulled towards zero.
    """
    kernels = [kernel(v, resolution, dv_kms) for v in vsini]
    pad = max(len(k) for k in kernels) // 2
    padded = np.pad(flux, pad, mode="edge")
    n = sp_fft.next_fast_len(padded.size + 2 * pad + 1, real=True)
    spectrum = sp_fft.rfft(padded, n)
    bank = np.zeros((len(kernels), n))
    for i, k in enumerate(kernels):  # centre each kernel at index 0 (wrap-around)
        h = len(k) // 2
        bank[i, :h + 1] = k[h:]
        bank[i, n - h:] = k[:h]
    out = sp_fft.irfft(spectrum[None, :] * sp_fft.rfft(bank, n, axis=1), n, axis=1)
    return out[:, pad:pad + flux.size]


def continuum(flux: np.ndarray, segments: int = 10, quantile: float = 0.97) -> np.ndarray:
    """Pseudo-continuum: a straight line through the upper `quantile` of each of `segments`
    equal segments (a remainder of fewer than `segments` pixels at the red end is ignored)."""
    width = flux.size // segments
    blocks = flux[: width * segments].reshape(segments, width)
    xs = (np.arange(segments) + 0.5) * width - 0.5
    ys = np.quantile(blocks, quantile, axis=1)
    return np.polyval(np.polyfit(xs, ys, 1), np.arange(flux.size))


def normalise(flux: np.ndarray) -> np.ndarray:
    """Map a spectrum to [0, 1]: divide by the pseudo-continuum, then by the maximum.

    The same function serves synthetic and observed spectra; values are clipped to
    [0, 1] so that a sigmoid output can reproduce them.
    """
    if not np.all(np.isfinite(flux)):
        raise ValueError("cannot normalise a spectrum with NaN or infinite values")
    ratio = flux / continuum(flux)
    return np.clip(ratio / ratio.max(), 0.0, 1.0).astype(np.float32)


def synthetic_to_window(wave: np.ndarray, flux: np.ndarray, vsini: list[float] | tuple[float, ...],
                        window: Window = Window(), resolution: float | None = CARMENES_VIS_R,
                        dv_kms: float = DV_KMS) -> np.ndarray:
    """One rest-frame model spectrum -> (len(vsini), window.n) normalised vectors."""
    check_coverage(wave, window, "synthetic spectrum")
    grid = log_grid(window.start - MARGIN_A, window.stop + MARGIN_A, dv_kms)
    broadened = broaden_many(resample(wave, flux, grid), vsini, resolution, dv_kms)
    return np.stack([normalise(resample(grid, b, window.wavelength)) for b in broadened])


def check_coverage(wave: np.ndarray, window: Window, what: str, margin: float = MARGIN_A) -> None:
    """Raise when `wave` does not cover the window plus margin, naming `what`."""
    if wave[0] > window.start - margin or wave[-1] < window.stop + margin:
        raise ValueError(
            f"{what}: window {window.start}-{window.stop} Å (+/- {margin} Å margin) is outside "
            f"the data coverage {wave[0]:.2f}-{wave[-1]:.2f} Å")


def cross_correlate_rv(wave: np.ndarray, flux: np.ndarray, template_wave: np.ndarray,
                       template_flux: np.ndarray, vmax_kms: float = 150.0,
                       step_kms: float = 0.25) -> float:
    """Radial velocity (km/s) of `flux` against a rest-frame template.

    The CCF of the line depths (1 - normalised flux) is computed on a velocity grid
    and its peak refined with a parabola through the three highest points.
    """
    velocities = np.arange(-vmax_kms, vmax_kms + step_kms / 2, step_kms)
    t = 1 - template_flux / np.median(template_flux)
    t = t - t.mean()
    ccf = np.empty(velocities.size)
    for i, v in enumerate(velocities):
        shifted = np.interp(template_wave * doppler_factor(v), wave, flux, left=np.nan, right=np.nan)
        s = 1 - shifted / np.nanmedian(shifted)
        ok = np.isfinite(s)
        ccf[i] = np.dot(t[ok], s[ok] - s[ok].mean()) if ok.sum() > 10 else -np.inf
    k = int(np.argmax(ccf))
    if k == 0 or k == velocities.size - 1 or not np.isfinite(ccf[k - 1:k + 2]).all():
        raise ValueError(f"cross-correlation peak at the edge of +/-{vmax_kms} km/s: no RV found")
    y0, y1, y2 = ccf[k - 1:k + 2]
    return float(velocities[k] + 0.5 * step_kms * (y0 - y2) / (y0 - 2 * y1 + y2))
