"""The committed data (see README.md), shipped as `carmenes_dtl.snapshots`: every file the package reads."""
from pathlib import Path


def snapshot(name: str) -> Path:
    """The committed file or folder `name`, relative to this folder (``"grid/paper_training_grid.ecsv"``)."""
    return Path(__file__).parent / name
