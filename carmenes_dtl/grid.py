"""The training grid, its coverage of a star's parameters, and interpolation between PHOENIX archive nodes.

The archive steps are 100 K in Teff, 0.5 dex in logg and 0.5 dex in [M/H]; the paper's
grid steps are 25 K, 0.1 and 0.1. Nodes the archive lacks are made by trilinear
interpolation of ln(flux) between the eight surrounding archive nodes, on the archive's
own wavelength grid, before any broadening (`interpolation_error` measures the scheme
by leaving an archive node out).
"""
from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table

from . import archives, files
from .config import PAPER_RANGES
from .snapshots import snapshot

#: The paper's training set (data/grid/ in the repository, shipped as carmenes_dtl.snapshots).
PAPER_GRID_FILE = snapshot("grid/paper_training_grid.ecsv")
AXES = ("teff", "logg", "mh")


def lower_node(value: float, step: float) -> float:
    """The archive lattice value at or below `value` (lattice spacing `step`)."""
    return float(np.floor(round(value / step, 6)) * step)


def bracketing_nodes(nodes: pd.DataFrame) -> list[tuple[float, float, float]]:
    """Archive nodes at and above each of `nodes` along every axis: all that interpolating them needs."""
    lattice = set()
    for row in nodes[list(AXES)].to_numpy(float):
        lows = [(lower_node(v, archives.PHOENIX_STEPS[k]), archives.PHOENIX_STEPS[k]) for v, k in zip(row, AXES)]
        lattice.update(itertools.product(*[(lo, lo + step) for lo, step in lows]))
    return sorted(lattice)


class Archive:
    """A local PHOENIX HiRes tree, read lazily; keeps only the slice near the window."""

    def __init__(self, root: Path, lo: float, hi: float):
        self.root = Path(root)
        files = archives.scan_phoenix(self.root)
        self.wave_full = archives.read_phoenix_wavelength(self.root / archives.PHOENIX_WAVE_FILE)
        self.sl = slice(np.searchsorted(self.wave_full, lo) - 1, np.searchsorted(self.wave_full, hi) + 1)
        if self.sl.start < 0 or self.sl.stop > self.wave_full.size:
            raise archives.ArchiveError(
                f"{self.root / archives.PHOENIX_WAVE_FILE}: coverage {self.wave_full[0]:.1f}-"
                f"{self.wave_full[-1]:.1f} Å does not include {lo:.1f}-{hi:.1f} Å")
        self.wave = self.wave_full[self.sl]
        self.files = {}
        for f in files:
            name = f.name.split(".PHOENIX")[0]  # lte03500-4.50-0.0
            teff, rest = int(name[3:8]), name[8:]
            logg, mh = float(rest[1:5]), float(rest[5:9])
            self.files[(float(teff), logg, mh)] = f
        self._cache: dict = {}  # node -> (ln flux, NaN pixels filled): a per-process memo

    def nodes(self) -> np.ndarray:
        return np.array(sorted(self.files))

    def _read(self, node: tuple[float, float, float]) -> tuple[np.ndarray, int]:
        if node not in self._cache:
            if node not in self.files:
                raise archives.ArchiveError(f"archive node Teff={node[0]:g} logg={node[1]:g} [M/H]={node[2]:g} "
                                            f"not in {self.root}")
            spec = archives.read_phoenix(self.files[node], self.wave_full)
            self._cache[node] = np.log(np.clip(spec.flux[self.sl], 1e-30, None)), int(spec.nan_pixels)
        return self._cache[node]

    def flux(self, node: tuple[float, float, float]) -> np.ndarray:
        """ln(flux) of an archive node on `self.wave`."""
        return self._read(node)[0]

    def nan_pixels(self, node: tuple[float, float, float]) -> int:
        """NaN pixels the reader filled in an archive node's file."""
        return self._read(node)[1]

    def check_covers(self, nodes: pd.DataFrame) -> None:
        """An ArchiveError naming the first of `nodes` whose interpolation needs a node the archive lacks."""
        for row in nodes[list(AXES)].drop_duplicates().to_numpy(float):
            missing = [c for c, _ in self.corners(*row) if c not in self.files]
            if missing:
                raise archives.ArchiveError(
                    f"{self.root}: node Teff={row[0]:g} logg={row[1]:g} [M/H]={row[2]:g} lies outside the archive "
                    f"(its corner Teff={missing[0][0]:g} logg={missing[0][1]:g} [M/H]={missing[0][2]:g} is missing)")

    def corners(self, teff: float, logg: float, mh: float) -> list[tuple[tuple, float]]:
        """The archive nodes `interpolate` combines at a point, with their weights."""
        corners = []
        for value, key in zip((teff, logg, mh), AXES):
            step = archives.PHOENIX_STEPS[key]
            lo = lower_node(value, step)
            t = (value - lo) / step
            corners.append(((lo, 1 - t), (lo + step, t)) if t > 1e-9 else ((lo, 1.0),))
        weighted = [(tuple(round(float(v), 2) for v, _ in combo), float(np.prod([w for _, w in combo])))
                    for combo in itertools.product(*corners)]
        return [(node, w) for node, w in weighted if w > 0]

    def combine(self, weighted: list[tuple[tuple, float]]) -> np.ndarray:
        """Flux exp(sum of weight x ln flux) of archive nodes given as (node, weight) pairs."""
        out = np.zeros_like(self.wave)
        for node, weight in weighted:
            out += weight * self.flux(node)
        return np.exp(out)

    def interpolate(self, teff: float, logg: float, mh: float) -> np.ndarray:
        """Flux at any point inside the archive's node lattice (trilinear in ln flux)."""
        return self.combine(self.corners(teff, logg, mh))


def neighbours(node: tuple[float, float, float], axis: str) -> tuple[tuple, tuple]:
    """The archive nodes one archive step below and above `node` along `axis`."""
    j, step = AXES.index(axis), archives.PHOENIX_STEPS[axis]
    return tuple(tuple(round(v + d * step * (k == j), 2) for k, v in enumerate(node)) for d in (-1, 1))


def interpolation_error(archive: Archive, node: tuple[float, float, float], window, axis: str | None = None) -> float:
    """Leave-one-node-out: max |Δ| of normalised spectra (vsini 2 km/s) when archive node `node` is
    left out and rebuilt by interpolation between its two neighbours along `axis` (default: the
    worst of the axes along which both neighbours exist)."""
    from .preprocess import synthetic_to_window

    axes = [axis] if axis else [a for a in AXES if all(n in archive.files for n in neighbours(node, a))]
    if not axes:
        raise archives.ArchiveError(f"{archive.root}: node {node} has no pair of neighbours to rebuild it from")
    truth = synthetic_to_window(archive.wave, np.exp(archive.flux(node)), [2.0], window)[0]
    errors = []
    for a in axes:
        rebuilt = archive.combine([(n, 0.5) for n in neighbours(node, a)])
        errors.append(np.abs(synthetic_to_window(archive.wave, rebuilt, [2.0], window)[0] - truth).max())
    return float(max(errors))


def import_paper_grid(npy: Path, out: Path = PAPER_GRID_FILE) -> Path:
    """Snapshot of the paper's training set: every (Teff, logg, [M/H], vsini) row, as ECSV."""
    files.require_file(npy, "a NumPy .npy array")
    try:
        arr = np.load(npy)
    except (ValueError, OSError, EOFError):  # not an .npy file (or one of objects, which is not the grid)
        kind = files.binary_kind(npy) or "a text file"
        raise ValueError(f"{npy}: not a NumPy .npy array of numbers but {kind}") from None
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{npy}: expected an (N, 4) array of Teff, logg, [M/H], vsini, got {arr.shape}")
    table = Table(np.round(arr, 4), names=("teff", "logg", "mh", "vsini"))
    nodes = np.unique(table.to_pandas()[["teff", "logg", "mh"]].to_numpy(), axis=0)
    table.meta.update({
        "source": "Mas-Buitrago et al. 2024, A&A 687, A205 (J/A+A/687/A205): training set parameters",
        "imported_from": Path(npy).name, "rows": len(table), "nodes": len(nodes),
        "units": {"teff": "K", "logg": "dex (cgs)", "mh": "dex", "vsini": "km/s"},
    })
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.write(out, format="ascii.ecsv", overwrite=True)
    _read_grid.cache_clear()  # a rewrite within the file system's mtime resolution keeps the mtime
    return Path(out)


def read_nodes(path: Path) -> pd.DataFrame:
    """Nodes from a CSV with columns teff, logg, mh (and optionally vsini): `prepare-synthetic --grid`."""
    nodes = files.read_csv(path, "a grid CSV")
    missing = [c for c in AXES if c not in nodes]
    if missing:
        raise ValueError(f"{path}: grid CSV lacks column(s) {', '.join(missing)} (needs teff, logg, mh; vsini optional)")
    return nodes


def paper_grid(path: Path = PAPER_GRID_FILE) -> pd.DataFrame:
    """The paper's training set: 22,933 rows of teff, logg, mh, vsini."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} missing: run `carmenes-dtl import-grid PATH/phoenix_grid_parameters.npy`")
    stat = Path(path).stat()
    return _read_grid(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size).copy()


@functools.lru_cache(maxsize=4)
def _read_grid(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """The ECSV parsed once per process and version of the file (0.12 s; a demo survey's star
    draws ask for the grid about five times)."""
    return Table.read(path, format="ascii.ecsv").to_pandas()


def paper_nodes(path: Path = PAPER_GRID_FILE) -> pd.DataFrame:
    """The 1767 distinct (teff, logg, mh) nodes of the paper's training set."""
    return paper_grid(path)[["teff", "logg", "mh"]].drop_duplicates().reset_index(drop=True)


def select_nodes(nodes: pd.DataFrame, n_nodes: int | None = None, seed: int = 0) -> pd.DataFrame:
    """All nodes, or a seeded subset of `n_nodes` of them (quick runs)."""
    if n_nodes and n_nodes < len(nodes):
        nodes = nodes.sample(n_nodes, random_state=seed).sort_values(["teff", "logg", "mh"])
    return nodes.reset_index(drop=True)


#: Half-widths of the box around a star whose paper-grid nodes decide its coverage: one PHOENIX
#: archive step in Teff, one grid step in logg and [M/H].
COVERAGE_BOX = {"Teff": 100.0, "logg": 0.1, "[M/H]": 0.1}


def grid_coverage(params: pd.DataFrame, nodes: pd.DataFrame | None = None) -> np.ndarray:
    """``inside``, ``edge`` or ``outside`` the paper grid's coverage, per row of Teff, logg, [M/H].

    The nodes that count are those in the box of half-widths `COVERAGE_BOX` around the star
    (100 K, 0.1, 0.1 dex). ``outside``: the box holds no node, or the star lies beyond the
    grid's ranges. ``inside``: along each of the three axes the box holds a node at or below
    and one at or above the star's value, so the training labels surround it. ``edge``: the
    rest, stars the grid reaches from one side only on some axis (a CNN extrapolates there).
    """
    nodes = (paper_nodes() if nodes is None else nodes)[["teff", "logg", "mh"]].to_numpy(float)
    x = params[list(COVERAGE_BOX)].to_numpy(float)
    diff = nodes[None, :, :] - x[:, None, :]
    box = np.all(np.abs(diff) <= np.array(list(COVERAGE_BOX.values())) + 1e-9, axis=2)
    bracketed = np.all([(box & (diff[:, :, j] <= 0)).any(1) & (box & (diff[:, :, j] >= 0)).any(1)
                        for j in range(3)], axis=0)
    in_ranges = np.all([params[c].between(*PAPER_RANGES[k]) for c, k in
                        (("Teff", "teff"), ("logg", "logg"), ("[M/H]", "mh"))], axis=0)
    covered = box.any(1) & in_ranges
    return np.where(covered & bracketed, "inside", np.where(covered, "edge", "outside"))
