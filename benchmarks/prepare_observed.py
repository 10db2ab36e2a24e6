"""`prepare-observed` per spectrum: today's RV search and noise propagation against the
implementations they replaced (issue 16), in one process, on the demo survey's files.

Baseline (`full_grid_rv`, `whole_operator_sigma`): the CCF evaluated at every 0.25 km/s
over +/-150 km/s, one spline call per velocity; the resampling operator built from the
spline of the whole input's identity matrix. Both are exact; the new ones give the same
numbers (RV to 1e-12 km/s, flux vectors bit for bit) at a fraction of the cost.

    KERAS_BACKEND=jax python benchmarks/prepare_observed.py [N_FILES]
"""
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from scipy.interpolate import CubicSpline

from carmenes_dtl import archives, demo, demo_lines, prepare, preprocess
from carmenes_dtl.config import Window


def full_grid_rv(wave, flux, template_wave, template_flux, vmax_kms=150.0, step_kms=0.25):
    """The RV search before issue 16: every velocity of the fine grid, one at a time."""
    orders = [(wave, flux)] if np.ndim(wave[0]) == 0 else list(zip(wave, flux))
    lo = template_wave[0] * preprocess.doppler_factor(-vmax_kms)
    hi = template_wave[-1] * preprocess.doppler_factor(vmax_kms)
    orders = [(w, f) for w, f in orders if w[0] <= lo and w[-1] >= hi]
    velocities = np.arange(-vmax_kms, vmax_kms + step_kms / 2, step_kms)
    edge = np.minimum(template_wave - template_wave[0], template_wave[-1] - template_wave) / preprocess.TEMPLATE_TAPER_A
    t = (1 - template_flux / np.median(template_flux)) * 0.5 * (1 - np.cos(np.pi * np.clip(edge, 0, 1)))
    ccf = np.zeros(velocities.size)
    for w, f in orders:
        spline = CubicSpline(w, f)
        for i, v in enumerate(velocities):
            s = spline(template_wave * preprocess.doppler_factor(v))
            s = 1 - s / np.median(s)
            ccf[i] += np.dot(t, s - s.mean())
    k = int(np.argmax(ccf))
    y0, y1, y2 = ccf[k - 1:k + 2]
    return float(velocities[k] + 0.5 * step_kms * (y0 - y2) / (y0 - 2 * y1 + y2))


def whole_operator_sigma(wave_in, sigma_in, wave_out):
    """The noise propagation before issue 16: the operator of the whole input at once."""
    lo, hi, apply = preprocess.spline_resampler(wave_in, wave_out)
    return np.sqrt(apply(np.eye(hi - lo)) ** 2 @ np.asarray(sigma_in, float)[lo:hi] ** 2)


def timed(files, templates, window):
    t = time.perf_counter()
    res = [prepare.process_observed(archives.read_carmenes(f), window, templates) for f in files]
    return (time.perf_counter() - t) / len(files), res


def main(n_files: int = 12) -> None:
    window = Window()
    with tempfile.TemporaryDirectory() as tmp:
        demo.write_demo(Path(tmp), seed=42, n_stars=n_files, progress=False, phoenix=False)
        files = archives.scan_carmenes(Path(tmp) / "carmenes")
        templates = prepare.Templates(*demo_lines.rv_templates(window))
        timed(files[:1], templates, window)  # IERS table, caches
        with mock.patch.object(preprocess, "cross_correlate_rv", full_grid_rv), \
                mock.patch.object(preprocess, "resample_sigma", whole_operator_sigma):
            before, old = timed(files, templates, window)
        after, new = timed(files, templates, window)
    print(f"{len(files)} demo spectra, s per spectrum: before {before:.3f}, now {after:.3f} "
          f"-> {before / after:.1f}x faster")
    print(f"max |RV now - before| = {max(abs(a.rv - b.rv) for a, b in zip(new, old)):.1e} km/s; "
          f"max |flux now - before| = {max(np.abs(a.flux - b.flux).max() for a, b in zip(new, old)):.1e}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
