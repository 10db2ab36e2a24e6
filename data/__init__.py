"""The committed data (see README.md), shipped as `carmenes_dtl.snapshots`: every file the package reads."""
from pathlib import Path


def snapshot(name: str) -> Path:
    """The committed file or folder `name`, relative to this folder (``"grid/paper_training_grid.ecsv"``)."""
    return Path(__file__).parent / name


def read_table(path: Path):
    """A CSV under ``# key: value`` header lines (the results tables, `experiment.publish`) as a
    DataFrame, and its header as a dict; empty cells are NaN, any other text (``None``) stays text."""
    import pandas as pd

    meta = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            key, _, value = line[1:].strip().partition(": ")
            meta[key] = value
    return pd.read_csv(path, comment="#", keep_default_na=False, na_values=[""]), meta
