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
from scipy.interpolate import CubicSpline

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


#: Input pixels kept beyond each end of the output range when building the spline (its
#: cardinal weights fall by ~0.27 per pixel: 25 pixels reach 1e-14).
SPLINE_MARGIN_PX = 25


def spline_resampler(wave_in: np.ndarray, wave_out: np.ndarray, edges_out: np.ndarray | None = None):
    """(lo, hi, apply): `apply(y)` maps input values ``y[lo:hi]`` (or a matrix of columns) to the
    pixels `wave_out` (edges `edges_out`, default `bin_edges`).

    A cubic spline through the input (`scipy.interpolate.CubicSpline`) is averaged over
    each output pixel where output pixels are wider than the input's (flux conserving:
    the spline's integral over the pixel) and evaluated at the pixel centre where they
    are narrower (no staircase).
    """
    edges_in = bin_edges(wave_in)
    edges_out = bin_edges(wave_out) if edges_out is None else edges_out
    if edges_out[0] < edges_in[0] or edges_out[-1] > edges_in[-1]:
        raise ValueError(
            f"output range {wave_out[0]:.3f}-{wave_out[-1]:.3f} Å is outside the input "
            f"coverage {wave_in[0]:.3f}-{wave_in[-1]:.3f} Å")
    lo = max(int(np.searchsorted(wave_in, edges_out[0])) - SPLINE_MARGIN_PX, 0)
    hi = min(int(np.searchsorted(wave_in, edges_out[-1])) + SPLINE_MARGIN_PX, wave_in.size)
    x = wave_in[lo:hi]
    wide = np.diff(edges_out) >= np.interp(wave_out, wave_in, np.diff(edges_in))

    def apply(y):
        spline = CubicSpline(x, y, axis=0)
        shape = (-1,) + (1,) * (y.ndim - 1)
        mean = np.diff(spline.antiderivative()(edges_out), axis=0) / np.diff(edges_out).reshape(shape)
        return np.where(wide.reshape(shape), mean, spline(wave_out))

    return lo, hi, apply


def resample(wave_in: np.ndarray, flux_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """Resample keeping line shapes (see `spline_resampler`); the result is linear in the input."""
    lo, hi, apply = spline_resampler(wave_in, wave_out)
    return apply(np.asarray(flux_in, float)[lo:hi])


#: Output pixels per block of `resample_sigma`.
SIGMA_BLOCK_PX = 256


def resample_sigma(wave_in: np.ndarray, sigma_in: np.ndarray, wave_out: np.ndarray) -> np.ndarray:
    """The noise of `resample`'s output: ``sqrt(M**2 @ sigma**2)`` for its linear operator M.

    M is built in blocks of `SIGMA_BLOCK_PX` output pixels, each from a spline through the
    input pixels under the block plus `SPLINE_MARGIN_PX` on each side (the cardinal
    weights beyond have fallen below 1e-14), instead of the whole input's identity matrix:
    the same numbers at a small fraction of the cost, so the inverse-variance merge of
    orders sees the noise each output pixel really carries.
    """
    sigma_in, edges = np.asarray(sigma_in, float), bin_edges(wave_out)
    out = np.empty(wave_out.size)
    for start in range(0, wave_out.size, SIGMA_BLOCK_PX):
        block = slice(start, start + SIGMA_BLOCK_PX)
        lo, hi, apply = spline_resampler(wave_in, wave_out[block], edges[start:start + SIGMA_BLOCK_PX + 1])
        out[block] = np.sqrt(apply(np.eye(hi - lo)) ** 2 @ sigma_in[lo:hi] ** 2)
    return out


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


def upper_pixels(values: np.ndarray, fraction: float, segments: int = 10) -> np.ndarray:
    """Mask of the pixels in the upper `fraction` of each of `segments` equal segments."""
    mask = np.zeros(values.size, bool)
    for block in np.array_split(np.arange(values.size), segments):
        v = values[block]
        mask[block] = v >= np.quantile(v, 1 - fraction) - 1e-9 * np.abs(v).max()
    return mask


#: Share of each of ten segments whose pixels, the brightest of the noise-free reference,
#: anchor the continuum (about 10 pixels per 350-pixel segment).
ANCHOR_FRACTION = 0.03


def continuum(flux: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Pseudo-continuum of `flux`: a least-squares straight line through the flux's OWN values
    at anchor pixels, raised by the factor that makes the same line fitted to the noise-free
    reference touch the reference's anchors from above (its upper envelope).

    The anchors are the brightest `ANCHOR_FRACTION` of each of ten segments of the noise-free
    `reference` (default: the flux itself); pass an observed spectrum's best-matching
    synthetic spectrum. Why this definition, for both domains:

    - the level comes from the spectrum's own flux, not from the reference's line depths: the
      reference only chooses which pixels (its nearly line-free ones) and supplies a shape
      factor ``max(ref / line_ref)`` over its anchors, i.e. its top pixels' scatter about a
      line (~1e-4). Scaling the reference's envelope by ``flux / reference`` over its top 30 %
      instead pulled an observed vector towards the reference (a demo 3300 K vector against a
      3200 K / 3400 K / [M/H] +0.5 reference moved by 0.24 / 0.20 / 1.0 %; now 0.07 / 0.06 /
      0.45 %, tested in ``test_reference_one_grid_step_away_hardly_moves_the_vector``);
    - the fit is linear in the flux and its pixels are chosen without looking at the noise,
      so noise does not bias it (no quantile or maximum of noisy values). The price of few
      anchors is scatter, not bias: at S/N 30 the level of one spectrum scatters by about
      2/(30 sqrt(N)) at the window's ends (0.2-0.6 % for N = 100-1000 anchors);
    - for a synthetic spectrum (its own reference) it is that upper envelope: no noise-free
      pixel lies above it by more than the anchors' scatter about a line.
    """
    ref = flux if reference is None else np.asarray(reference, float)
    x = np.linspace(-1, 1, flux.size)
    anchor = upper_pixels(ref, ANCHOR_FRACTION)
    ref_line = np.polynomial.Polynomial.fit(x[anchor], ref[anchor], 1)(x)
    lift = np.max(ref[anchor] / ref_line[anchor])
    return lift * np.polynomial.Polynomial.fit(x[anchor], flux[anchor], 1)(x)


def normalise(flux: np.ndarray, reference: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Continuum-normalised flux clipped to [0, 1], and the number of pixels clipped above 1.

    Convention: the pseudo-continuum (`continuum`) maps to 1, because the autoencoders'
    sigmoid output spans (0, 1). Noise lifts observed pixels above 1; they are clipped and
    counted (the count goes to the set's attributes). The same function serves both
    domains; observed spectra pass their best-matching synthetic spectrum as `reference`.
    """
    if not np.all(np.isfinite(flux)):
        raise ValueError("cannot normalise a spectrum with NaN or infinite values")
    ratio = (flux / continuum(flux, reference)).astype(np.float32)
    return np.clip(ratio, 0.0, 1.0), int(np.sum(ratio > 1.0))


def synthetic_to_window(wave: np.ndarray, flux: np.ndarray, vsini: list[float] | tuple[float, ...],
                        window: Window = Window(), resolution: float | None = CARMENES_VIS_R,
                        dv_kms: float = DV_KMS) -> tuple[np.ndarray, int]:
    """One rest-frame model spectrum -> (len(vsini), window.n) normalised vectors, and the
    number of pixels clipped above 1 (see `normalise`)."""
    check_coverage(wave, window, "synthetic spectrum")
    grid = log_grid(window.start - MARGIN_A, window.stop + MARGIN_A, dv_kms)
    broadened = broaden_many(resample(wave, flux, grid), vsini, resolution, dv_kms)
    vectors, clipped = zip(*(normalise(resample(grid, b, window.wavelength)) for b in broadened))
    return np.stack(vectors), int(sum(clipped))


def check_coverage(wave: np.ndarray, window: Window, what: str, margin: float = MARGIN_A) -> None:
    """Raise when `wave` does not cover the window plus margin, naming `what`."""
    if wave[0] > window.start - margin or wave[-1] < window.stop + margin:
        raise ValueError(
            f"{what}: window {window.start}-{window.stop} Å (+/- {margin} Å margin) is outside "
            f"the data coverage {wave[0]:.2f}-{wave[-1]:.2f} Å")


#: Width (Å) of the cosine taper on the RV template's depths at each end of its range.
TEMPLATE_TAPER_A = 1.5


#: Velocity step (km/s) of the first, coarse CCF pass of `cross_correlate_rv`, and the half-width
#: (km/s) of the fine pass around its peak. The narrowest CCF peak (two unbroadened spectra at
#: R = 94,600) has a FWHM near 4.5 km/s, so a 2 km/s sampling always lands within 1 km/s of the
#: top; the fine pass then sees the same points as a fine pass over the whole range.
RV_COARSE_STEP_KMS = 2.0
RV_FINE_HALF_WIDTH_KMS = 6.0


def cross_correlate_rv(wave, flux, template_wave: np.ndarray, template_flux: np.ndarray,
                       vmax_kms: float = 150.0, step_kms: float = 0.25) -> float:
    """Radial velocity (km/s) of `flux` against a rest-frame template.

    The CCF of the line depths (1 - normalised flux) is computed on a velocity grid, the
    spectrum read at the shifted template wavelengths through a cubic spline (as in
    `resample`), and its peak refined with a parabola through the three highest points.
    The grid is searched coarse to fine: every `RV_COARSE_STEP_KMS` over +/-`vmax_kms`, then
    every `step_kms` within `RV_FINE_HALF_WIDTH_KMS` of the coarse peak (points of the same
    `step_kms` grid as a full search).
    The template's depths are tapered to zero over `TEMPLATE_TAPER_A` at both ends (a cosine):
    a hard cut lets lines enter and leave the correlated range as the shift changes, which
    biased broad-lined stars (+0.2 km/s at vsini 30, noise-free).
    `wave` and `flux` may be lists (echelle orders): the CCFs of the orders that cover the
    template at every velocity tried are summed.
    """
    orders = [(wave, flux)] if np.ndim(wave[0]) == 0 else list(zip(wave, flux))
    lo, hi = template_wave[0] * doppler_factor(-vmax_kms), template_wave[-1] * doppler_factor(vmax_kms)
    orders = [(w, f) for w, f in orders if w[0] <= lo and w[-1] >= hi]
    if not orders:
        raise ValueError(f"no spectrum order covers {lo:.2f}-{hi:.2f} Å (the template at +/-{vmax_kms} km/s)")
    edge = np.minimum(template_wave - template_wave[0], template_wave[-1] - template_wave) / TEMPLATE_TAPER_A
    t = (1 - template_flux / np.median(template_flux)) * 0.5 * (1 - np.cos(np.pi * np.clip(edge, 0, 1)))
    splines = [CubicSpline(w, f) for w, f in orders]

    def ccf(velocities):
        total = np.zeros(velocities.size)
        for spline in splines:
            factors = np.array([doppler_factor(v) for v in velocities])
            shifted = spline(template_wave[None, :] * factors[:, None])
            s = 1 - shifted / np.median(shifted, axis=1, keepdims=True)
            total += (s - s.mean(axis=1, keepdims=True)) @ t
        return total

    n = int(round(vmax_kms / step_kms))
    stride = max(int(round(RV_COARSE_STEP_KMS / step_kms)), 1)
    coarse = np.arange(-n, n + 1, stride)
    peak = coarse[int(np.argmax(ccf(coarse * step_kms)))]
    reach = int(np.ceil(RV_FINE_HALF_WIDTH_KMS / step_kms))
    fine = np.arange(max(peak - reach, -n), min(peak + reach, n) + 1)
    values = ccf(fine * step_kms)
    k = int(np.argmax(values))
    if fine[k] in (-n, n):
        raise ValueError(f"cross-correlation peak at the edge of +/-{vmax_kms} km/s: no RV found")
    if k in (0, fine.size - 1):
        raise ValueError(f"cross-correlation peak {fine[k] * step_kms:.2f} km/s at the edge of the fine search "
                         f"around {peak * step_kms:.2f} km/s: no single RV peak")
    y0, y1, y2 = values[k - 1:k + 2]
    return float(fine[k] * step_kms + 0.5 * step_kms * (y0 - y2) / (y0 - 2 * y1 + y2))
