"""Archive files -> spectrum sets: the `prepare-synthetic` and `prepare-observed` stages.

Per-file work is a Dask task that returns everything it finds (spectra, NaN counts,
exclusions) as its result, so the same code runs on local threads, local processes or a
`dask.distributed` cluster (`scheduling`). Results are written in batches, so memory
holds one batch, not the archive.
"""
from __future__ import annotations

import warnings
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


#: How both sets are normalised (written to their attributes).
NORMALISATION = ("flux / pseudo-continuum, clipped to [0, 1] (continuum = 1 for the sigmoid output; clipped "
                 "pixels counted): least-squares line through the spectrum's own flux at anchor pixels (top 3 % "
                 "of each of 10 segments of a noise-free reference), raised by the factor that makes the "
                 "reference's own anchor line touch its anchors; the reference is the spectrum itself "
                 "(synthetic) or its best-matching synthetic (observed)")


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

    def one(node, vs):  # flux, pixels clipped above 1, and the NaN pixels filled in each archive file it used
        flux, n_clipped = preprocess.synthetic_to_window(archive.wave, archive.interpolate(*node), vs, window)
        return flux, n_clipped, {c: archive.nan_pixels(c) for c, _ in archive.corners(*node)}

    writer = store.SpectrumWriter(out, window.wavelength, {
        "domain": "synthetic", "inputs": str(Path(phoenix_dir).resolve()), "window": asdict(window),
        "vsini": vsini, "resolution": CARMENES_VIS_R, "n_nodes": len(per_node),
        "normalisation": NORMALISATION})
    clipped = 0
    rows = [(tuple(float(v) for v in node), vs) for node, vs in per_node.items()]
    nans: dict = {}
    with scheduling.session(scheduler) as where, \
            tqdm(total=len(rows), desc="prepare-synthetic", unit="node", disable=not progress) as bar:
        for chunk in _batches(rows, batch):
            results = scheduling.compute([dask.delayed(one)(n, vs) for n, vs in chunk], where)
            for (node, vs), (flux, n_clipped, used) in zip(chunk, results):
                clipped += n_clipped
                writer.append(flux, pd.DataFrame({"teff": node[0], "logg": node[1], "mh": node[2], "vsini": vs}))
                nans.update(used)
            bar.update(len(chunk))
    writer.attrs["nan_pixels_filled"] = int(sum(nans.values()))
    writer.attrs["n_clipped_above_1"] = clipped
    return writer.close()


#: |computed - header| BERV (km/s) above which a file is named in a warning: astropy's
#: `radial_velocity_correction` is accurate to about 3 m/s (its documentation), so 10 m/s is
#: beyond what the two computations can disagree by when they describe the same observation.
BERV_TOLERANCE_KMS = 0.010

#: RV passes at most: the mid-grid template, then best matches until the match repeats.
MAX_TEMPLATE_PASSES = 4


class Templates:
    """Synthetic spectra of one set, as RV templates and normalisation references.

    The first RV pass uses the spectrum nearest the middle of the set's parameter ranges
    (`mid`); the observed vector it gives picks the best-matching spectrum (`best`), which
    serves the next pass and the normalisation, until the match repeats.
    """

    def __init__(self, wavelength: np.ndarray, flux: np.ndarray, parameters: pd.DataFrame, source: str):
        """A one-line ValueError naming `source` unless every spectrum is finite and has finite
        teff, logg, mh and vsini (the parameters the RV passes pick templates by and record)."""
        self.wavelength, self.flux, self.parameters, self.source = wavelength, flux, parameters, source
        if len(flux) == 0:
            raise ValueError(f"RV templates {source}: the set holds no spectrum")
        missing = [c for c in ("teff", "logg", "mh", "vsini") if c not in parameters]
        unknown = ~np.isfinite(parameters.reindex(columns=["teff", "logg", "mh", "vsini"]).to_numpy(float)).all(axis=1)
        if missing or unknown.any():
            raise ValueError(f"RV templates {source}: {int(unknown.sum())} of {len(flux)} spectra lack a finite teff, "
                             "logg, mh or vsini; templates must be synthetic spectra of known parameters "
                             "(a set made by prepare-synthetic)")
        bad = ~np.isfinite(flux).all(axis=1)
        if bad.any():
            raise ValueError(f"RV templates {source}: {int(bad.sum())} of {len(flux)} spectra have NaN or infinite "
                             f"flux (first: row {int(np.flatnonzero(bad)[0])})")
        self._norm2 = np.einsum("ij,ij->i", flux, flux, dtype=np.float64)

    @classmethod
    def from_set(cls, path: Path) -> "Templates":
        s = store.read(path)
        return cls(s.wavelength, s.flux, s.parameters, str(path))

    def check(self, window: Window) -> None:
        """Raise unless the templates are sampled on `window`'s grid."""
        if self.wavelength.shape != window.wavelength.shape or not np.allclose(self.wavelength, window.wavelength):
            raise ValueError(f"RV templates {self.source}: wavelengths {self.wavelength[0]:.2f}-"
                             f"{self.wavelength[-1]:.2f} Å ({self.wavelength.size}) are not the window "
                             f"{window.start}-{window.stop} Å ({window.n}); prepare the set on the same --window")

    def mid(self) -> int:
        """Index of the spectrum nearest the middle of the (teff, logg, mh) ranges, lowest vsini."""
        p = self.parameters[["teff", "logg", "mh"]]
        z = (p - (p.min() + p.max()) / 2) / (p.max() - p.min()).replace(0, 1)
        return int(np.argmin((z ** 2).sum(axis=1).to_numpy() + 1e-3 * self.parameters["vsini"].to_numpy()))

    def best(self, vector: np.ndarray) -> int:
        """Index of the spectrum with the least squared difference from `vector` (|f|^2 - 2 f.v:
        no copy of the set per call)."""
        return int(np.argmin(self._norm2 - 2 * (self.flux @ vector.astype(self.flux.dtype))))

    def describe(self, k: int) -> dict:
        return {c: float(self.parameters[c].iloc[k]) for c in ("teff", "logg", "mh", "vsini")}


def template_from_set(path: Path) -> Templates:
    """RV templates and normalisation references from a synthetic set (`prepare-synthetic`); a
    one-line ValueError naming `path` for any other file (an observed set included)."""
    store.require(path, "synthetic")
    return Templates.from_set(path)


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
    berv_header: float = np.nan
    clipped: int = 0
    template: dict = field(default_factory=dict)
    settled: bool = True  # the last best match is the template used (no MAX_TEMPLATE_PASSES cut, no cycle)
    unclipped: np.ndarray | None = None  # flux / continuum before clipping at 1


def merge_orders(bary: dict, flux: dict, sigma: dict, rv: float, window: Window, path) -> tuple[np.ndarray, np.ndarray]:
    """Orders shifted to the rest frame, resampled to the window and merged with inverse-variance
    weights; returns the merged flux and its sigma."""
    grid = window.wavelength
    num, den = np.zeros(grid.size), np.zeros(grid.size)
    for o in flux:
        rest = bary[o] / preprocess.doppler_factor(rv)
        inside = (grid - window.step / 2 > rest[0]) & (grid + window.step / 2 < rest[-1])
        if not inside.any():
            continue
        f = preprocess.resample(rest, flux[o], grid[inside])
        s = preprocess.resample_sigma(rest, sigma[o], grid[inside])
        num[inside] += f / s ** 2
        den[inside] += 1 / s ** 2
    if (den == 0).any():
        raise archives.ArchiveError(f"{path}: orders leave {int((den == 0).sum())} pixels of the window "
                                    f"{window.start}-{window.stop} Å uncovered")
    return num / den, 1 / np.sqrt(den)


def process_observed(spec: archives.CarmenesSpectrum, window: Window, templates: Templates) -> ObservedResult:
    """Barycentric correction, RV (against the mid-grid, then the best-matching synthetic spectrum),
    order merging and normalisation (against the best-matching synthetic spectrum) of one spectrum."""
    reach = preprocess.MARGIN_A + 6.0  # window margin + room for |RV| up to ~150 km/s
    overlap = [o for o in range(spec.wave.shape[0])
               if spec.wave[o, 0] < window.stop + reach and spec.wave[o, -1] > window.start - reach]
    if not overlap:
        raise archives.ArchiveError(f"{spec.path}: no order covers the window {window.start}-{window.stop} Å "
                                    f"(coverage {spec.wave.min():.1f}-{spec.wave.max():.1f} Å)")
    berv = 0.0 if spec.barycentric else barycentric_correction(spec.ra, spec.dec, spec.bjd)
    if spec.berv is not None and abs(berv - spec.berv) > BERV_TOLERANCE_KMS:
        warnings.warn(f"{spec.path}: computed BERV {berv:.4f} km/s differs from the header's {spec.berv:.4f} "
                      f"km/s by {(berv - spec.berv) * 1000:.0f} m/s (> {BERV_TOLERANCE_KMS * 1000:.0f} m/s)",
                      stacklevel=2)
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
        if (sigma[o] <= 0).any():
            raise archives.ArchiveError(f"{spec.path} order {o}: SIG has {int((sigma[o] <= 0).sum())} values <= 0 "
                                        "(no inverse-variance weight possible)")
    bary = {o: spec.wave[o] * preprocess.doppler_factor(berv) for o in flux}
    orders = ([bary[o] for o in flux], [flux[o] for o in flux])
    templates.check(window)
    k, tried = templates.mid(), []
    while k not in tried and len(tried) < MAX_TEMPLATE_PASSES:  # mid-grid, then best match until it settles
        tried.append(k)
        rv = preprocess.cross_correlate_rv(*orders, templates.wavelength, templates.flux[k])
        merged, merged_sigma = merge_orders(bary, flux, sigma, rv, window, spec.path)
        vector, clipped = preprocess.normalise(merged, templates.flux[k])
        k = templates.best(vector)
    used, settled = tried[-1], k == tried[-1]
    snr = float(np.median(merged / merged_sigma))
    return ObservedResult(vector, spec.karmn, str(spec.path), rv, berv, snr, nans, [int(o) for o in flux],
                          np.nan if spec.berv is None else spec.berv, clipped, templates.describe(used),
                          settled, (merged / preprocess.continuum(merged, templates.flux[used])).astype(np.float32))


def prepare_observed(carmenes_dir: Path, out: Path, window: Window = Window(), template=None,
                     strict: bool = False, batch: int = 16, progress: bool = True,
                     scheduler: str | None = None) -> tuple[Path, pd.DataFrame]:
    """Process every CARMENES file below `carmenes_dir` into `out`.

    Returns the output path and a table of excluded files with the reason (bad files, or
    lower-S/N duplicates of a star); with `strict` the first bad file raises instead.
    `scheduler`: see `scheduling` (None: an active distributed Client, else threads).
    """
    if template is None:
        raise ValueError("prepare-observed needs RV templates: give --template SYNTHETIC.h5 (a set made by "
                         "prepare-synthetic on the same --window), or --template demo for the demo survey")
    template.check(window)
    files = archives.scan_carmenes(carmenes_dir)

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
             "rv_kms": [r.rv for r in kept], "berv_kms": [r.berv for r in kept],
             "berv_header_kms": [r.berv_header for r in kept],
             "berv_minus_header_kms": [r.berv - r.berv_header for r in kept], "snr": [r.snr for r in kept],
             "rv_template": [r.template for r in kept], "templates": template.source,
             "n_template_unsettled": int(sum(not r.settled for r in kept)),
             "clipped_above_1": [r.clipped for r in kept], "n_clipped_above_1": int(sum(r.clipped for r in kept)),
             "normalisation": NORMALISATION,
             "files": [r.path for r in kept], "nan_pixels_filled": int(sum(r.nan_pixels for r in kept))}
    path = store.write(out, np.stack([r.flux for r in kept]), window.wavelength, params, attrs)
    return path, excluded
