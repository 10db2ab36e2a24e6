"""Spectrum sets on disk: chunked, self-describing HDF5 files.

Layout: ``flux`` (N x n float32, chunked by row), ``wavelength`` (n), ``parameters``
(a compound table: ``teff, logg, mh, vsini`` and, for observed sets, ``karmn``), and
attributes with provenance (inputs, settings as JSON, package version, counts).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from . import __version__
from .config import PARAMETERS


@dataclass
class SpectrumSet:
    flux: np.ndarray
    wavelength: np.ndarray
    parameters: pd.DataFrame
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.flux)

    @property
    def labels(self) -> np.ndarray:
        """(N, 4) array of teff, logg, mh, vsini."""
        return self.parameters[list(PARAMETERS)].to_numpy(np.float64)


def partial(path: Path) -> Path:
    """The temporary name a file or folder is written under until complete (``x.partial.h5`` for
    ``x.h5``); a name that already is temporary is its own, so a staged output is staged once."""
    path = Path(path)
    if ".partial" in path.suffixes[-2:]:
        return path
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _table(parameters: pd.DataFrame) -> np.ndarray:
    dtype = [(p, "f8") for p in PARAMETERS]
    if "karmn" in parameters:
        dtype.append(("karmn", h5py.string_dtype()))
    table = np.empty(len(parameters), dtype=dtype)
    for name, _ in dtype:
        table[name] = parameters[name].to_numpy() if name in parameters else np.nan
    return table


class SpectrumWriter:
    """Append spectra one block at a time, so a whole archive never sits in memory."""

    def __init__(self, path: Path, wavelength: np.ndarray, attrs: dict, observed: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = partial(self.path)
        self.h5 = h5py.File(self._tmp, "w")
        n = wavelength.size
        self.h5.create_dataset("wavelength", data=wavelength)
        self.h5["wavelength"].attrs["unit"] = "Angstrom (vacuum)"
        self.flux = self.h5.create_dataset("flux", (0, n), maxshape=(None, n), dtype="f4",
                                           chunks=(1, n), compression="gzip", compression_opts=1)
        self.rows: list[pd.DataFrame] = []
        self.attrs = {"package_version": __version__, **attrs}
        self.observed = observed

    def append(self, flux: np.ndarray, parameters: pd.DataFrame) -> None:
        k = self.flux.shape[0]
        self.flux.resize(k + len(flux), axis=0)
        self.flux[k:] = flux
        self.rows.append(parameters)

    def close(self) -> Path:
        params = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=PARAMETERS)
        if self.observed and "karmn" not in params:
            params["karmn"] = []
        self.h5.create_dataset("parameters", data=_table(params))
        for key, value in self.attrs.items():
            self.h5.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        self.h5.close()
        self._tmp.replace(self.path)
        return self.path


def write(path: Path, flux: np.ndarray, wavelength: np.ndarray, parameters: pd.DataFrame,
          attrs: dict | None = None) -> Path:
    writer = SpectrumWriter(path, wavelength, attrs or {}, observed="karmn" in parameters)
    writer.append(np.asarray(flux, np.float32), parameters)
    return writer.close()


def _open(path: Path) -> h5py.File:
    """An open spectrum set; a one-line FileNotFoundError/ValueError naming `path` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: spectrum set not found")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a spectrum set (not an HDF5 file: {err})") from None
    missing = [k for k in ("flux", "wavelength", "parameters") if k not in h5]
    if missing:
        h5.close()
        raise ValueError(f"{path}: not a spectrum set, missing {', '.join(missing)}")
    return h5


def describe(path: Path) -> dict:
    """Shape, wavelength grid and attributes of a set, without reading its spectra."""
    with _open(path) as h5:
        return {"n": h5["flux"].shape[0], "wavelength": h5["wavelength"][()],
                "columns": list(h5["parameters"].dtype.names), "attrs": {k: _decode(v) for k, v in h5.attrs.items()}}


def require(path: Path, kind: str) -> dict:
    """`describe(path)`, or a one-line ValueError naming `path` unless it is a `kind` set: "synthetic"
    (parameters known, no ``karmn`` column) or "observed" (a ``karmn`` column, made by prepare-observed)."""
    desc = describe(path)
    observed = "karmn" in desc["columns"]
    if kind == "observed" and not observed:
        raise ValueError(f"{path}: not an observed set (no karmn column); was it made by prepare-observed?")
    if kind == "synthetic" and observed:
        raise ValueError(f"{path}: not a synthetic set but an observed one (it has a karmn column); "
                         "give a set made by prepare-synthetic")
    return desc


def on_window(wavelength: np.ndarray, window) -> bool:
    """True when `wavelength` is the grid of `window` (a `config.Window`)."""
    return wavelength.size == window.n and np.allclose(wavelength, window.wavelength)


def check_observed(path: Path) -> dict:
    """`describe` of the observed set at `path`; a one-line ValueError naming it when it is another kind
    of set or holds no spectrum."""
    desc = require(path, "observed")
    if desc["n"] == 0:
        raise ValueError(f"{path}: the set holds no spectrum")
    return desc


def check_pair(synthetic: Path, observed: Path, window=None) -> None:
    """A one-line ValueError naming the file when two sets cannot be used together (or with `window`)."""
    syn, obs = require(synthetic, "synthetic"), check_observed(observed)
    if syn["n"] == 0:
        raise ValueError(f"{synthetic}: the set holds no spectrum")
    wave = syn["wavelength"]
    if not np.array_equal(wave, obs["wavelength"]):
        raise ValueError(f"{observed}: wavelength grid {obs['wavelength'][0]:.2f}-{obs['wavelength'][-1]:.2f} Å "
                         f"differs from {synthetic}'s {wave[0]:.2f}-{wave[-1]:.2f} Å")
    if window is not None and not on_window(wave, window):
        raise ValueError(f"--window {window.start:g},{window.stop:g} does not match {synthetic}'s grid "
                         f"{wave[0]:.2f}-{wave[-1]:.2f} Å")


def read(path: Path) -> SpectrumSet:
    with _open(path) as h5:
        table = h5["parameters"][()]
        params = pd.DataFrame({n: table[n] for n in table.dtype.names})
        if "karmn" in params:
            params["karmn"] = params["karmn"].map(lambda s: s.decode() if isinstance(s, bytes) else s)
        attrs = {k: _decode(v) for k, v in h5.attrs.items()}
        return SpectrumSet(h5["flux"][()], h5["wavelength"][()], params, attrs)


def _decode(value):
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
