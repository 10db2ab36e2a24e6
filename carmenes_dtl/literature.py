"""Literature catalogues the paper compares with: definitions, VizieR access, snapshots.

A snapshot is one ECSV per catalogue under ``data/literature/`` holding the CARMENES id
and the columns used, with the VizieR catalogue id, the column mapping and the retrieval
date in its header. `fetch_vizier` refreshes it online (astroquery, cached);
`import_csv_folder` makes it from a folder of VizieR CSV exports.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.table import Table

from . import files
from .config import PUBLISHED_NAMES, estimate_columns
from .snapshots import snapshot

#: Catalogue snapshots (data/literature/ in the repository, shipped as carmenes_dtl.snapshots).
SNAPSHOT_DIR = snapshot("literature")
#: CARMENES ids that catalogues spell differently.
ALIASES = {"J11110+304W": "J11110+304"}


@dataclass(frozen=True)
class Catalogue:
    key: str
    reference: str
    vizier: str
    csv: str  # file name of the VizieR CSV export
    id_column: str
    columns: dict  # our parameter name -> catalogue column
    errors: dict = field(default_factory=dict)  # parameter -> (lower, upper) error columns
    extra: tuple = ()  # other columns kept (e.g. luminosity)


def _q(name):  # Passegger 2020 / Bello-García 2023 tables give the mode and 16/84 quantiles
    return (f"{name}_Q16", f"{name}_Q84")


CATALOGUES = {c.key: c for c in [
    Catalogue("mar21", "Marfil et al. 2021", "J/A+A/656/A162", "mar21.csv", "Karmn",
              {"Teff": "Teff1", "logg": "logg1", "[M/H]": "Corr1", "vsini": "vsini"},
              {"Teff": ("e_Teff1",) * 2, "logg": ("e_logg1",) * 2, "[M/H]": ("e_Corr1",) * 2}),
    Catalogue("pass19", "Passegger et al. 2019", "J/A+A/627/A161", "pass19.csv", "Karmn",
              {"Teff": "TeffV", "logg": "loggV", "[M/H]": "[Fe/H]V"},
              {"Teff": ("e_TeffV",) * 2, "logg": ("e_loggV",) * 2, "[M/H]": ("e_[Fe/H]V",) * 2}),
    Catalogue("schw19", "Schweitzer et al. 2019", "J/A+A/625/A68", "schw19.csv", "Karmn",
              {"Teff": "Teff", "logg": "loggc", "[M/H]": "[Fe/H]"},
              {"Teff": ("e_Teff",) * 2, "logg": ("e_loggc",) * 2, "[M/H]": ("e_[Fe/H]",) * 2}, ("Lum",)),
    Catalogue("pass18", "Passegger et al. 2018", "J/A+A/615/A6", "pass18.csv", "Karmn",
              {"Teff": "Teff", "logg": "logg", "[M/H]": "[Fe/H]"},
              {"Teff": ("e_Teff",) * 2, "logg": ("e_logg",) * 2, "[M/H]": ("e_[Fe/H]",) * 2}),
    Catalogue("mann15", "Mann et al. 2015", "J/ApJ/804/64", "mann15.csv", "Karmn",
              {"Teff": "Teff", "[M/H]": "[Fe/H]"}, {"Teff": ("e_Teff",) * 2, "[M/H]": ("e_[Fe/H]",) * 2}),
    Catalogue("gaid14", "Gaidos et al. 2014", "J/MNRAS/443/2561", "gaid14.csv", "Karmn",
              {"Teff": "Teff", "[M/H]": "[Fe/H]"}, {"Teff": ("e_Teff",) * 2, "[M/H]": ("e_[Fe/H]",) * 2}),
    Catalogue("gm14", "Gaidos & Mann 2014", "J/ApJ/791/54", "gm14.csv", "Karmn",
              {"Teff": "Teff", "[M/H]": "[Fe/H]"}, {"Teff": ("e_Teff",) * 2, "[M/H]": ("e_[Fe/H]",) * 2}),
    Catalogue("pass20", "Passegger et al. 2020 (deep learning)", "J/A+A/642/A22", "dl.csv", "KARMN",
              {"Teff": "TEFF_MODE", "logg": "LOGG_MODE", "[M/H]": "ZETA_MODE", "vsini": "VSINI_MODE"},
              {"Teff": _q("TEFF"), "logg": _q("LOGG"), "[M/H]": _q("ZETA"), "vsini": _q("VSINI")}),
    Catalogue("bello23", "Bello-García et al. 2023 (deep transfer learning)", "J/A+A/673/A105", "dtl.csv", "KARMN",
              {"Teff": "TEFF_MODE", "[M/H]": "ZETA_MODE"}, {"Teff": _q("TEFF"), "[M/H]": _q("ZETA")}),
]}
#: Benchmarks compiled in the paper (one long table: karmn, parameter, value, kind).
BENCHMARKS = {"interferometric": "Teff", "fgk_companions": "[M/H]"}
BENCHMARK_CSV = "benchmark_stars.csv"
PAPER = Catalogue("paper", "Mas-Buitrago et al. 2024", "J/A+A/687/A205", "final_estimations.csv", "karmn",
                  {"Teff": "Teff", "logg": "logg", "[M/H]": "[M/H]", "vsini": "vsini"},
                  {p: (f"e_{p}", f"E_{p}") for p in PUBLISHED_NAMES.values()})
COMPARISON_KEYS = [*CATALOGUES, *BENCHMARKS]
ALL_KEYS = [*COMPARISON_KEYS, PAPER.key]


def selected(keys=None) -> set[str]:
    """The catalogue keys `keys` names (all when None); a ValueError names an unknown one."""
    unknown = [k for k in keys or [] if k not in ALL_KEYS]
    if unknown:
        raise ValueError(f"unknown catalogue {unknown[0]!r}; choose from {', '.join(ALL_KEYS)}")
    return set(keys or ALL_KEYS)


def normalise_id(karmn) -> str:
    """Strip padding, upper-case, resolve known aliases."""
    k = str(karmn).strip().upper()
    return ALIASES.get(k, k)


def tidy(df: pd.DataFrame, cat: Catalogue) -> pd.DataFrame:
    """Keep the id (normalised, as `karmn`) and the used columns renamed to ours."""
    if cat.id_column not in df:
        raise ValueError(f"{cat.key} ({cat.vizier}): no id column {cat.id_column!r}; columns are {list(df.columns)}")
    out = pd.DataFrame({"karmn": df[cat.id_column].map(normalise_id)})
    for ours, theirs in cat.columns.items():
        if theirs not in df:
            raise ValueError(f"{cat.key} ({cat.vizier}): column {theirs!r} for {ours} not found")
        out[ours] = pd.to_numeric(df[theirs], errors="coerce")
        if ours in cat.errors:
            lo, hi = cat.errors[ours]
            lo_v, hi_v = pd.to_numeric(df[lo], errors="coerce"), pd.to_numeric(df[hi], errors="coerce")
            if lo.endswith("_Q16"):  # quantiles -> distances from the value
                lo_v, hi_v = out[ours] - lo_v, hi_v - out[ours]
            out[f"e_{ours}"], out[f"E_{ours}"] = lo_v.abs(), hi_v.abs()
    for col in cat.extra:
        out[col] = pd.to_numeric(df[col], errors="coerce")
    return out


def _write(df: pd.DataFrame, cat: Catalogue, out_dir: Path, origin: str) -> Path:
    table = Table.from_pandas(df)
    table.meta.update({"catalogue": cat.key, "reference": cat.reference, "vizier": cat.vizier,
                       "columns_used": dict(cat.columns), "origin": origin,
                       "retrieved": dt.date.today().isoformat(), "rows": len(df)})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{cat.key}.ecsv"
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def _benchmarks(df: pd.DataFrame, out_dir: Path, origin: str, keys) -> list[Path]:
    paths = []
    for key, param in ((k, p) for k, p in BENCHMARKS.items() if k in keys):
        kind = key.rstrip("s")
        sub = df[df["kind"].str.strip() == kind]
        if sub.empty:
            raise ValueError(f"{BENCHMARK_CSV}: no row of kind {kind!r} for {key}")
        sub = pd.DataFrame({"karmn": sub["karmn"].map(normalise_id), param: sub["value"].astype(float)})
        paths.append(_write(sub, Catalogue(key, "benchmarks compiled in Mas-Buitrago et al. 2024",
                                           "J/A+A/687/A205", BENCHMARK_CSV, "karmn", {param: "value"}),
                            out_dir, origin))
    return paths


def import_csv_folder(folder: Path, out_dir: Path | None = None, keys=None) -> list[Path]:
    """Snapshot of the catalogues `keys` (default all) from a folder of VizieR CSV exports
    (the paper's table and ``benchmark_stars.csv`` at the top, the others there or in ``literature/``)."""
    folder, out_dir, keys = Path(folder), Path(out_dir or SNAPSHOT_DIR), selected(keys)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder of VizieR CSV exports not found")
    lit = folder / "literature" if (folder / "literature").is_dir() else folder
    cats = [c for c in CATALOGUES.values() if c.key in keys]
    benchmarks = keys & set(BENCHMARKS)
    wanted = {lit / c.csv: f"VizieR export for {c.key} ({c.vizier})" for c in cats}
    if benchmarks:
        wanted[folder / BENCHMARK_CSV] = f"CSV for {', '.join(sorted(benchmarks))}"
    if PAPER.key in keys:
        wanted[folder / PAPER.csv] = f"CSV for {PAPER.key}"
    for src, what in wanted.items():  # all checked before anything is written
        if not src.is_file():
            raise FileNotFoundError(f"{src}: {what} not found")
    paths = [_write(tidy(files.read_csv(lit / c.csv, 'a VizieR CSV export'), c), c, out_dir, f"VizieR CSV export {c.csv}") for c in cats]
    if benchmarks:
        paths += _benchmarks(files.read_csv(folder / BENCHMARK_CSV, 'a CSV'), out_dir, f"CSV {BENCHMARK_CSV}", benchmarks)
    if PAPER.key in keys:
        paths.append(_write(tidy(files.read_csv(folder / PAPER.csv, 'a CSV'), PAPER), PAPER, out_dir, f"CSV {PAPER.csv}"))
    return paths


def fetch_vizier(out_dir: Path | None = None, vizier=None, keys=None) -> list[Path]:
    """Snapshot of the catalogues `keys` (default all but the benchmarks, which are not on VizieR)
    straight from VizieR (astroquery caches the queries)."""
    keys = selected(keys) if keys else set(ALL_KEYS) - set(BENCHMARKS)
    if keys & set(BENCHMARKS):
        raise ValueError(f"{', '.join(sorted(keys & set(BENCHMARKS)))}: the paper's benchmark compilation is not "
                         f"on VizieR; use --from-csv FOLDER holding {BENCHMARK_CSV}")
    if vizier is None:
        from astroquery.vizier import Vizier

        vizier = Vizier(columns=["**"], row_limit=-1)
    out_dir = Path(out_dir or SNAPSHOT_DIR)
    paths = []
    for cat in (c for c in [*CATALOGUES.values(), PAPER] if c.key in keys):
        tables = vizier.get_catalogs(cat.vizier)
        match = [t for t in tables if cat.id_column in t.colnames]
        if not match:
            raise ValueError(f"VizieR {cat.vizier}: no table with column {cat.id_column!r}")
        paths.append(_write(tidy(match[0].to_pandas(), cat), cat, out_dir, f"VizieR {cat.vizier} (astroquery)"))
    return paths


def _read(key: str, snapshot: Path | None) -> Table:
    path = Path(snapshot or SNAPSHOT_DIR) / f"{key}.ecsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `carmenes-dtl fetch-literature` "
                                f"(or `fetch-literature --from-csv FOLDER` with VizieR CSV exports, offline)")
    return Table.read(path, format="ascii.ecsv")


def load(key: str, snapshot: Path | None = None) -> pd.DataFrame:
    """One catalogue from the snapshot, with `karmn` and our parameter names."""
    return _read(key, snapshot).to_pandas()


def meta(key: str, snapshot: Path | None = None) -> dict:
    """A snapshot's provenance header (VizieR id, columns used, retrieval date)."""
    return dict(_read(key, snapshot).meta)


def parameters_of(df: pd.DataFrame) -> list[str]:
    return [p for p in PUBLISHED_NAMES.values() if p in df and np.isfinite(df[p]).any()]


def published_estimates(path: Path, snapshot: Path | None = None) -> Path:
    """Write the paper's published estimates (from the snapshot) as an estimates CSV at `path`."""
    df = load("paper", snapshot)[estimate_columns()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return Path(path)
