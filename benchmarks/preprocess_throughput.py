"""Preprocessing throughput: one HiRes-layout file -> 13 normalised vectors.

Baseline (same process, same input): PyAstronomy's `fastRotBroad` + `instrBroadGaussFast`
on an evenly spaced grid, then the same resampling and normalisation. Reports spectra/s,
the speed ratio and the max |difference| away from the window edges.

    python benchmarks/preprocess_throughput.py [DEMO_DIR]
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PyAstronomy import pyasl

from carmenes_dtl import archives, preprocess
from carmenes_dtl.config import CARMENES_VIS_R, VSINI_GRID, Window
from carmenes_dtl.demo import write_demo


def pyastronomy_vectors(wave, flux, window):
    lin = np.arange(window.start - 3, window.stop + 3, 0.002)  # evenly spaced, as PyAstronomy needs
    f = preprocess.resample(wave, flux, lin)
    out = []
    for v in VSINI_GRID:
        b = pyasl.fastRotBroad(lin, f, preprocess.LIMB_DARKENING, v)
        b = pyasl.instrBroadGaussFast(lin, b, CARMENES_VIS_R, edgeHandling="firstlast", maxsig=6)
        out.append(preprocess.normalise(preprocess.resample(lin, b, window.wavelength))[0])
    return np.array(out)


def best_of(func, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t)
    return min(times), result


def main(demo_dir=None):
    demo_dir = Path(demo_dir) if demo_dir else write_demo(Path(tempfile.mkdtemp()) / "demo", n_stars=1, progress=False)
    root = demo_dir / "phoenix"
    wave = archives.read_phoenix_wavelength(root / archives.PHOENIX_WAVE_FILE)
    path = root / archives.phoenix_relpath(3500, 5.0, 0.0)
    window = Window()

    def ours():
        spec = archives.read_phoenix(path, wave)
        return preprocess.synthetic_to_window(wave, spec.flux, VSINI_GRID, window)[0]

    def baseline():
        spec = archives.read_phoenix(path, wave)
        return pyastronomy_vectors(wave, spec.flux, window)

    t_ours, a = best_of(ours)
    t_base, b = best_of(baseline, 3)
    inner = slice(100, -100)  # 1 Å from the window edges
    diff = np.abs(a[:, inner] - b[:, inner]).max()
    print(f"ours:        {t_ours * 1e3:8.1f} ms per file = {13 / t_ours:8.1f} spectra/s")
    print(f"PyAstronomy: {t_base * 1e3:8.1f} ms per file = {13 / t_base:8.1f} spectra/s")
    print(f"speed ratio: {t_base / t_ours:.1f}x   max |diff| (>1 Å from edges): {diff:.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:])
