"""Archive files -> spectrum sets: the `prepare-synthetic` and `prepare-observed` stages.

Per-file work is a Dask task that returns everything it finds (spectra, NaN counts,
exclusions) as its result, so the same code runs on local threads, local processes or a
`dask.distributed` cluster (`scheduling`). Results are written in batches, so memory
holds one batch, not the archive.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import archives, preprocess, scheduling, store
from .config import CARMENES_VIS_R, Window
from .grid import Archive
from .rv import barycentric_correction


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def prepare_synthetic(phoenix_dir: Path, out: Path, vsini, window: Window = Window(),
                      nodes: pd.DataFrame | None = None, batch: int = 64, progress: bool = True,
                      scheduler: str | None = None) -> Path:
    """Broaden, resample and normalise PHOENIX spectra at `nodes` x `vsini` into `out`.

    Without `nodes` every archive node is used as it is; with them, nodes between the
    archive's are interpolated (`grid.Archive.interpolate`). A `vsini` column in `nodes`
    lists the exact rows wanted (as in the paper's set) instead of nodes x `vsini`.
    `scheduler`: see `scheduling` (None: an active distributed Client, else threads).
    """
    archive = Archive(phoenix_dir, window.start - preprocess.MARGIN_A - 1, window.stop + preprocess.MARGIN_A + 1)
    if nodes is None:
        nodes = pd.DataFrame(archive.nodes(), columns=["teff", "logg", "mh"])
    archive.check_covers(nodes)
    if "vsini" in nodes:
        per_node = nodes.groupby(["teff", "logg", "mh"], sort=False)["vsini"].apply(list)
    else:
        per_node = pd.Series([[float(v) for v in vsini]] * len(nodes),
                             index=pd.MultiIndex.from_frame(nodes[["teff", "logg", "mh"]]))
    vsini = sorted({v for vs in per_node for v in vs})

    def one(node, vs):  # flux, and the NaN pixels filled in each archive file it used
        flux = preprocess.synthetic_to_window(archive.wave, archive.interpolate(*node), vs, window)
        return flux, {c: archive.nan_pixels(c) for c, _ in archive.corners(*node)}

    writer = store.SpectrumWriter(out, window.wavelength, {
        "domain": "synthetic", "inputs": str(Path(phoenix_dir).resolve()), "window": asdict(window),
        "vsini": vsini, "resolution": CARMENES_VIS_R, "n_nodes": len(per_node),
        "normalisation": "pseudo-continuum (line through 97th percentiles of 10 segments), then / max"})
    rows = [(tuple(float(v) for v in node), vs) for node, vs in per_node.items()]
    nans: dict = {}
    with scheduling.session(scheduler) as where, \
            tqdm(total=len(rows), desc="prepare-synthetic", unit="node", disable=not progress) as bar:
        for chunk in _batches(rows, batch):
            results = scheduling.compute([dask.delayed(one)(n, vs) for n, vs in chunk], where)
            for (node, vs), (flux, used) in zip(chunk, results):
                writer.append(flux, pd.DataFrame({"teff": node[0], "logg": node[1], "mh": node[2], "vsini": vs}))
                nans.update(used)
            bar.update(len(chunk))
    writer.attrs["nan_pixels_filled"] = int(sum(nans.values()))
    return writer.close()


def default_template(window: Window) -> tuple[np.ndarray, np.ndarray]:
    """RV template: the demo's line model (3500 K, 5.0, 0.0) at vsini 2 km/s, rest frame.

    For real spectra pass a template from a synthetic set (`template_from_set`).
    """
    from .demo import LineModel

    wave = preprocess.log_grid(window.start - 1, window.stop + 1)
    flux = LineModel().flux(wave, 3500.0, 5.0, 0.0)
    return wave, preprocess.broaden(flux / preprocess.continuum(flux), 2.0)


def template_from_set(path: Path, teff: float = 3500.0, logg: float = 5.0, mh: float = 0.0):
    """RV template from a synthetic set: its spectrum nearest (teff, logg, mh) at the lowest vsini."""
    s = store.read(path)
    p = s.parameters
    d = ((p.teff - teff) / 100) ** 2 + ((p.logg - logg) / 0.5) ** 2 + ((p.mh - mh) / 0.5) ** 2 + p.vsini / 100
    return s.wavelength, s.flux[int(np.argmin(d.to_numpy()))].astype(np.float64)


@dataclass
class ObservedResult:
    flux: np.ndarray
    karmn: str
    path: str
    rv: float
    berv: float
    snr: float
    nan_pixels: int
    orders: list = field(default_factory=list)


def process_observed(spec: archives.CarmenesSpectrum, window: Window, template) -> ObservedResult:
    """Barycentric correction, RV removal, order merging and normalisation of one spectrum."""
    reach = preprocess.MARGIN_A + 6.0  # window margin + room for |RV| up to ~150 km/s
    overlap = [o for o in range(spec.wave.shape[0])
               if spec.wave[o, 0] < window.stop + reach and spec.wave[o, -1] > window.start - reach]
    if not overlap:
        raise archives.ArchiveError(f"{spec.path}: no order covers the window {window.start}-{window.stop} Å "
                                    f"(coverage {spec.wave.min():.1f}-{spec.wave.max():.1f} Å)")
    berv = 0.0 if spec.barycentric else barycentric_correction(spec.ra, spec.dec, spec.bjd)
    flux, sigma, nans = {}, {}, 0
    for o in overlap:
        near = (spec.wave[o] > window.start - reach) & (spec.wave[o] < window.stop + reach)
        try:
            flux[o], n = archives.fill_nans(spec.flux[o], f"{spec.path} order {o}")
        except archives.ArchiveError:
            if near.any() and np.isnan(spec.flux[o][near]).all():
                raise
            continue
        nans += n
        sigma[o] = archives.fill_nans(spec.sigma[o], f"{spec.path} order {o} SIG")[0]
    best = max(flux, key=lambda o: np.sum((spec.wave[o] > window.start) & (spec.wave[o] < window.stop)))
    bary = {o: spec.wave[o] * preprocess.doppler_factor(berv) for o in flux}
    rv = preprocess.cross_correlate_rv(bary[best], flux[best], *template)
    grid = window.wavelength
    num, den = np.zeros(grid.size), np.zeros(grid.size)
    for o in flux:
        rest = bary[o] / preprocess.doppler_factor(rv)
        inside = (grid - window.step / 2 > rest[0]) & (grid + window.step / 2 < rest[-1])
        if not inside.any():
            continue
        f = preprocess.resample(rest, flux[o], grid[inside])
        var = np.interp(grid[inside], rest, sigma[o] ** 2)
        num[inside] += f / var
        den[inside] += 1 / var
    if (den == 0).any():
        raise archives.ArchiveError(f"{spec.path}: orders leave {int((den == 0).sum())} pixels of the window "
                                    f"{window.start}-{window.stop} Å uncovered")
    merged = num / den
    snr = float(np.median(merged * np.sqrt(den)))
    return ObservedResult(preprocess.normalise(merged), spec.karmn, str(spec.path), rv, berv, snr, nans,
                          [int(o) for o in flux])


def prepare_observed(carmenes_dir: Path, out: Path, window: Window = Window(), template=None,
                     strict: bool = False, batch: int = 16, progress: bool = True,
                     scheduler: str | None = None) -> tuple[Path, pd.DataFrame]:
    """Process every CARMENES file below `carmenes_dir` into `out`.

    Returns the output path and a table of excluded files with the reason (bad files, or
    lower-S/N duplicates of a star); with `strict` the first bad file raises instead.
    `scheduler`: see `scheduling` (None: an active distributed Client, else threads).
    """
    files = archives.scan_carmenes(carmenes_dir)
    template = template or default_template(window)

    def one(path):
        try:
            return process_observed(archives.read_carmenes(path), window, template)
        except (archives.ArchiveError, ValueError) as err:
            if strict:
                raise
            return f"{err}"

    results, excluded = [], []
    with scheduling.session(scheduler) as where, \
            tqdm(total=len(files), desc="prepare-observed", unit="file", disable=not progress) as bar:
        for chunk in _batches(files, batch):
            for path, res in zip(chunk, scheduling.compute([dask.delayed(one)(p) for p in chunk], where)):
                if isinstance(res, str):
                    excluded.append({"file": str(path), "karmn": "", "reason": res})
                else:
                    results.append(res)
            bar.update(len(chunk))
    best: dict[str, ObservedResult] = {}
    for r in results:
        if r.karmn in best:
            worse = min(r, best[r.karmn], key=lambda x: x.snr)
            excluded.append({"file": worse.path, "karmn": r.karmn, "reason": "duplicate star: lower S/N"})
            r = max(r, best[r.karmn], key=lambda x: x.snr)
        best[r.karmn] = r
    kept = sorted(best.values(), key=lambda r: r.karmn)
    if not kept:
        raise archives.ArchiveError(f"{carmenes_dir}: no usable spectrum among {len(files)} files; "
                                    f"first reason: {excluded[0]['reason'] if excluded else 'none'}")
    params = pd.DataFrame({"teff": np.nan, "logg": np.nan, "mh": np.nan, "vsini": np.nan,
                           "karmn": [r.karmn for r in kept]})
    excluded = pd.DataFrame(excluded, columns=["file", "karmn", "reason"])
    attrs = {"domain": "observed", "inputs": str(Path(carmenes_dir).resolve()), "window": asdict(window),
             "n_files": len(files), "n_excluded": len(excluded),
             "excluded": excluded.to_dict("records"),
             "rv_kms": [r.rv for r in kept], "berv_kms": [r.berv for r in kept], "snr": [r.snr for r in kept],
             "files": [r.path for r in kept], "nan_pixels_filled": int(sum(r.nan_pixels for r in kept))}
    path = store.write(out, np.stack([r.flux for r in kept]), window.wavelength, params, attrs)
    return path, excluded
