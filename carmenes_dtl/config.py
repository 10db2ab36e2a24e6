"""Settings as data: the spectral window, the profiles and the paths every stage shares."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Rotational velocities of the paper's training grid, km/s.
VSINI_GRID: tuple[float, ...] = (1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30)
#: CARMENES VIS resolving power.
CARMENES_VIS_R = 94_600
#: The four labels, in the order used by arrays and tables.
PARAMETERS: tuple[str, ...] = ("teff", "logg", "mh", "vsini")
#: Column names of the published estimates table for each label.
PUBLISHED_NAMES = {"teff": "Teff", "logg": "logg", "mh": "[M/H]", "vsini": "vsini"}


def estimate_columns() -> list[str]:
    """`karmn,Teff,e_Teff,E_Teff,logg,...,vsini,e_vsini,E_vsini`: the published table's columns."""
    cols = ["karmn"]
    for name in PUBLISHED_NAMES.values():
        cols += [name, f"e_{name}", f"E_{name}"]
    return cols


#: Parameter ranges of the paper's training grid (inclusive).
PAPER_RANGES = {"teff": (2325.0, 4475.0), "logg": (4.7, 5.3), "mh": (-1.0, 0.6), "vsini": (1.5, 30.0)}


@dataclass(frozen=True)
class Window:
    """The common wavelength grid: `start`..`stop` Å (vacuum) in steps of `step` Å."""

    start: float = 8800.0
    stop: float = 8835.0
    step: float = 0.01

    @property
    def n(self) -> int:
        return int(round((self.stop - self.start) / self.step)) + 1

    @property
    def wavelength(self) -> np.ndarray:
        return self.start + self.step * np.arange(self.n)

    @classmethod
    def parse(cls, text: str) -> "Window":
        """Read ``"A,B"`` (Å) as a window with the default step."""
        try:
            start, stop = (float(x) for x in text.split(","))
        except ValueError as err:
            raise ValueError(f"window must be 'start,stop' in Å, got {text!r}") from err
        if not stop > start:
            raise ValueError(f"window stop must exceed start, got {text!r}")
        return cls(start, stop)


@dataclass(frozen=True)
class AESettings:
    """Contractive autoencoder training (paper: Mas-Buitrago et al. 2024, Sect. 3)."""

    n_in_grid: tuple[int, ...] = (1024, 1536, 2048)
    l1_grid: tuple[float, ...] = (8e-8, 1e-7, 1.2e-7)
    latent_dim: int = 32
    contractive_lambda: float = 1e-4
    penalty: str = "relu"  # or "sigmoid_frozen", the original code's variant
    learning_rate: float = 1e-4
    batch_size: int = 128
    epochs: int = 120
    cv_folds: int = 3
    n_models: int = 3
    finetune_epochs: int = 60
    finetune_frozen: int = 4
    patience: int = 10


@dataclass(frozen=True)
class CNNSettings:
    """CNN regressors on the latent vectors (paper Sect. 3.3)."""

    n_per_model: int = 5
    epochs: int = 200
    learning_rate: float = 0.01
    batch_size: int = 64
    tuned_width: int = 64
    test_size: float = 0.3
    patience: int = 20


@dataclass(frozen=True)
class Profile:
    """A bundle of settings: `quick` (book, tests: minutes on 2 cores) or `paper`."""

    name: str
    ae: AESettings
    cnn: CNNSettings
    demo_size: str
    vsini: tuple[float, ...] = VSINI_GRID
    n_nodes: int | None = None  # seeded subset of the paper's 1767 nodes; None = all 22,933 rows
    n_stars: int | None = None  # demo stars; None = the demo size's default
    window: Window = field(default_factory=Window)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES = {
    "quick": Profile(
        "quick",
        AESettings(n_in_grid=(256, 384), l1_grid=(8e-8, 1.2e-7), learning_rate=1e-3, epochs=60,
                   cv_folds=2, n_models=2, finetune_epochs=40, patience=15),
        CNNSettings(n_per_model=5, epochs=25, learning_rate=3e-3, batch_size=128, tuned_width=32, patience=6),
        demo_size="quick",
        vsini=(1.5, 3, 6, 10, 20, 30),
        n_nodes=160,
    ),
    "tiny": Profile(  # smoke runs and tests: seconds, not science
        "tiny",
        AESettings(n_in_grid=(128,), l1_grid=(1e-7,), learning_rate=1e-3, epochs=8, cv_folds=2, n_models=1,
                   finetune_epochs=4, patience=4),
        CNNSettings(n_per_model=3, epochs=4, learning_rate=3e-3, batch_size=64, tuned_width=16, patience=4),
        demo_size="quick",
        vsini=(2, 10),
        n_nodes=40,
        n_stars=16,
    ),
    "paper": Profile("paper", AESettings(), CNNSettings(), demo_size="full"),
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


def cache_dir() -> Path:
    """Download cache: ``$CARMENES_DTL_CACHE`` or ``data/cache`` under the working directory."""
    return Path(os.environ.get("CARMENES_DTL_CACHE", Path.cwd() / "data" / "cache"))
