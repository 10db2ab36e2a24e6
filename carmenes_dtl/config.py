"""Settings as data: the spectral window, the profiles and the paths every stage shares."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .snapshots import read_table, snapshot

#: Rotational velocities of the paper's training grid, km/s.
VSINI_GRID: tuple[float, ...] = (1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30)
#: CARMENES VIS resolving power.
CARMENES_VIS_R = 94_600
#: The four labels, in the order used by arrays and tables.
PARAMETERS: tuple[str, ...] = ("teff", "logg", "mh", "vsini")
#: Column names of the published estimates table for each label.
PUBLISHED_NAMES = {"teff": "Teff", "logg": "logg", "mh": "[M/H]", "vsini": "vsini"}
#: Units of the labels, by published name.
UNITS = {"Teff": "K", "logg": "dex", "[M/H]": "dex", "vsini": "km/s"}


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


#: Layers with an L1 activity regulariser in the authors' code: encoder 2-5 and decoder 1-5.
PUBLISHED_L1_LAYERS = tuple(f"enc_{i}" for i in range(2, 6)) + tuple(f"dec_{i}" for i in range(1, 6))


@dataclass(frozen=True)
class AESettings:
    """Contractive autoencoder search and training (paper Sect. 3.1).

    Defaults are the authors' code (``published_method.json``); ``patience=None`` means
    no early stopping, as published.
    """

    n_in_grid: tuple[int, ...] = (1024, 1280, 1536, 1792, 2048)
    l1_grid: tuple[float, ...] = (8e-8, 9e-8, 1e-7, 1.1e-7, 1.2e-7)
    l1_layers: tuple[str, ...] = PUBLISHED_L1_LAYERS
    latent_dim: int = 32
    contractive_lambda: float = 1e-4
    penalty: str = "sigmoid_frozen"  # the published form; "relu" = the exact Jacobian
    learning_rate: float = 1e-4
    batch_size: int = 128
    search_epochs: int = 15
    search_loss: str = "mse"  # or "contractive": the search with the training loss
    cv_folds: int = 4
    epochs: int = 120
    test_size: float = 0.3
    n_models: int = 3
    patience: int | None = None  # early stopping on a validation slice of the training part
    precision: str = "float32"  # or "bfloat16": Keras' mixed_bfloat16 (`training.precision_policy`)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class FineTuneSettings:
    """Fine-tuning on observed spectra (paper Sect. 3.2; the authors' ``autoencoder_fine_tuning.py``):
    its own settings, so that changing them reuses the trained autoencoders and synthetic CNNs.
    Defaults are the authors' code (``published_method.json``)."""

    learning_rate: float = 1e-4  # the autoencoders' rate, as the authors compile the loaded model with it
    epochs: int = 60
    batch_size: int = 128
    test_size: float = 0.2  # observed spectra kept out to measure the reconstruction error
    frozen: int = 4  # encoder layers 1-4 keep their synthetic weights
    split_seed: int | None = 42  # random_state of the 80/20 split; None: a seed per autoencoder (`stage_seed`)
    patience: int | None = None  # early stopping on a validation slice of the training part


@dataclass(frozen=True)
class CNNSettings:
    """CNN regressors on the latent vectors (paper Sect. 3.3); defaults = the authors' code."""

    n_per_model: int = 5
    epochs: int = 200
    learning_rate: float = 0.01
    batch_size: int = 32
    #: (parameter, nf1, nf2, nu) per parameter; only Teff's row is in the authors' code.
    widths: tuple[tuple[str, int, int, int], ...] = tuple((p, 64, 32, 64) for p in PARAMETERS)
    padding: str = "same"
    inputs: str = "raw"  # or "standardised": latents scaled to zero mean, unit variance
    targets: str = "raw"  # or "standardised"
    split: str = "shared"  # one split per autoencoder and parameter; or "per_member"
    strata: str = "values"  # classes of the stratified split: the grid values; or "deciles"
    test_size: float = 0.3
    holdout_fraction: float = 0.0  # synthetic nodes kept out of CNN training for checks
    patience: int | None = None  # early stopping on a validation slice of the training part
    uncertainty: str = "members"  # percentiles of member predictions; or "residuals"
    precision: str = "float32"  # or "bfloat16": Keras' mixed_bfloat16 (`training.precision_policy`)
    #: the `direct` baseline's training spectra: noise-free, or with photon noise at S/N drawn from
    #: the observed stars' (`cnn.with_photon_noise`)
    direct_noise: str = "none"

    def __post_init__(self):
        check_options(self)
        if sorted(w[0] for w in self.widths) != sorted(PARAMETERS):
            raise ValueError(f"CNN widths must have one row per parameter {PARAMETERS}, got {self.widths!r}")

    def width(self, parameter: str) -> tuple[int, int, int]:
        """(nf1, nf2, nu) of `parameter`'s CNNs."""
        return next(tuple(w[1:]) for w in self.widths if w[0] == parameter)


#: The values each named option accepts (the first is the published one).
OPTIONS = {"penalty": ("sigmoid_frozen", "relu"), "search_loss": ("mse", "contractive"),
           "padding": ("same", "valid"), "inputs": ("raw", "standardised"), "targets": ("raw", "standardised"),
           "split": ("shared", "per_member"), "strata": ("values", "deciles"),
           "uncertainty": ("members", "residuals"), "precision": ("float32", "bfloat16"),
           "direct_noise": ("none", "observed")}


def check_options(settings) -> None:
    """Raise a ValueError naming any option of `settings` outside `OPTIONS`."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name in OPTIONS and value not in OPTIONS[f.name]:
            raise ValueError(f"{type(settings).__name__}.{f.name} must be one of {OPTIONS[f.name]}, got {value!r}")


#: Scale of both gap families of the demo survey per level (`demo_gap.GapMix`). `paper` is set so
#: that a method that ignores the gap errs on the demo by about as much as the synthetic-only deep
#: learning of Passegger et al. (2020) deviates from the literature on real stars (~0.2 dex in
#: [M/H], ~100-400 K in Teff).
GAP_LEVELS = {"none": 0.0, "mild": 0.25, "paper": 0.5, "strong": 1.0}
#: Where the demo stars' parameters come from (`demo_stars.draw_stars`).
STAR_SOURCES = ("published", "uniform")


@dataclass(frozen=True)
class DemoSize:
    """A demo survey's default number of stars and its mock PHOENIX nodes (Teff range, logg and [M/H] values)."""

    n_stars: int
    teff: tuple[float, float]
    logg: tuple[float, ...]
    mh: tuple[float, ...]


#: The demo survey's sizes (`Profile.demo_size`).
DEMO_SIZES = {
    "quick": DemoSize(60, (2300, 4500), (4.5, 5.0, 5.5), (-1.0, -0.5, 0.0, 0.5, 1.0)),
    "full": DemoSize(300, (2300, 4500), (4.5, 5.0, 5.5), (-1.0, -0.5, 0.0, 0.5, 1.0)),
}


@dataclass(frozen=True)
class Profile:
    """A bundle of settings: `quick` (book, tests: minutes on 2 cores) or `paper`."""

    name: str
    ae: AESettings
    cnn: CNNSettings
    demo_size: str
    finetune: FineTuneSettings = FineTuneSettings()
    vsini: tuple[float, ...] = VSINI_GRID
    n_nodes: int | None = None  # seeded subset of the paper's 1767 nodes; None = all 22,933 rows
    n_stars: int | None = None  # demo stars; None = the demo size's default
    window: Window = field(default_factory=Window)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        """The profile `to_dict` wrote (lists back to tuples)."""
        def settings(kind, values):
            return kind(**{k: _tuples(v) for k, v in values.items()})

        return cls(**{**d, "ae": settings(AESettings, d["ae"]), "cnn": settings(CNNSettings, d["cnn"]),
                      "finetune": settings(FineTuneSettings, d["finetune"]), "vsini": tuple(d["vsini"]),
                      "window": Window(**d["window"])})


def _tuples(value):
    """JSON lists back to the (nested) tuples of the settings."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


PROFILES = {
    "quick": Profile(
        "quick",
        AESettings(n_in_grid=(256, 384), l1_grid=(8e-8, 1.2e-7), learning_rate=1e-3, epochs=60, cv_folds=2,
                   n_models=2, patience=15),
        CNNSettings(epochs=25, learning_rate=3e-3, batch_size=128, widths=tuple((p, 64, 32, 32) for p in PARAMETERS),
                    targets="standardised", patience=6, holdout_fraction=0.1),
        demo_size="quick",
        vsini=(1.5, 3, 6, 10, 20, 30),
        n_nodes=160,
    ),
    "tiny": Profile(  # smoke runs and tests: seconds, not science
        "tiny",
        AESettings(n_in_grid=(128,), l1_grid=(1e-7,), learning_rate=1e-3, search_epochs=4, epochs=8, cv_folds=2,
                   n_models=1, patience=4),
        CNNSettings(n_per_model=3, epochs=4, learning_rate=3e-3, batch_size=64,
                    widths=tuple((p, 64, 32, 16) for p in PARAMETERS), inputs="standardised", targets="standardised",
                    patience=4, holdout_fraction=0.1),
        demo_size="quick",
        vsini=(2, 10),
        n_nodes=40,
        n_stars=16,
        finetune=FineTuneSettings(learning_rate=1e-3, epochs=4, split_seed=None, patience=4),
    ),
    #: the authors' settings except the held-out nodes, kept for honest coverage checks
    "paper": Profile("paper", AESettings(), CNNSettings(holdout_fraction=0.1), demo_size="full"),
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None


#: Stages that draw random numbers; each gets its own branch of the run's SeedSequence.
SEED_STAGES = ("split", "search", "autoencoder", "fine-tune", "holdout", "cnn")


def stage_seed(seed: int, stage: str, *index: int) -> int:
    """A 32-bit seed for `stage` (and member `index`), spawned from ``SeedSequence(seed)``.

    Equal to ``SeedSequence(seed).spawn(...)[k].spawn(...)[i]...`` with k the stage's place
    in `SEED_STAGES`, so stages and members never share a stream.
    """
    if stage not in SEED_STAGES:
        raise ValueError(f"unknown seed stage {stage!r}; choose one of {SEED_STAGES}")
    ss = np.random.SeedSequence(seed, spawn_key=(SEED_STAGES.index(stage), *index))
    return int(ss.generate_state(1)[0])


#: Settings added after the first release, with the value every earlier run used: at that value
#: they stay out of stage keys (`key_of`), so runs made before them keep their trained stages.
ADDED_LATER = {"precision": "float32", "direct_noise": "none"}


def key_of(settings) -> dict:
    """`settings` (a dataclass) as a stage key's dict, without the `ADDED_LATER` fields at their old values."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if ADDED_LATER.get(k, object()) != v}


def published_settings() -> list[dict]:
    """Every setting of the published method with its source (``published_method.json``)."""
    return json.loads(snapshot("published_method.json").read_text())["settings"]


def implementation_deviations() -> list[dict]:
    """How the code differs from the authors' beyond the settings: what, published, here, source, why."""
    return json.loads(snapshot("published_method.json").read_text())["implementation"]


#: The sections of a profile that `with_overrides` reaches by ``section.field``.
SECTIONS = ("ae", "cnn", "finetune", "window")


def with_overrides(prof: Profile, assignments: list[str]) -> Profile:
    """`prof` with each ``section.field=value`` (``ae``, ``cnn``, ``finetune``, ``window``) or
    ``field=value`` (the profile's own: ``n_nodes``, ``n_stars``, ``vsini``, ``demo_size``) applied in
    order; a value is JSON (``1e-4``, ``[1.5, 3]``, ``null``) or else text (``raw``), ``None`` is None.
    A one-line ValueError names an assignment that does not fit."""
    for text in assignments:
        name, sep, raw = text.partition("=")
        head, _, field_name = name.strip().rpartition(".")
        target = getattr(prof, head) if head in SECTIONS else prof if not head else None
        names = [] if target is None else [f.name for f in dataclasses.fields(target)]
        if not sep or field_name not in names or (not head and field_name in SECTIONS + ("name",)):
            raise ValueError(f"--set {text!r}: expected SECTION.FIELD=VALUE or FIELD=VALUE; sections "
                             f"{', '.join(SECTIONS)}; fields of the profile: {', '.join(_own_fields())}")
        try:
            value = _tuples(json.loads(raw))
        except json.JSONDecodeError:
            value = None if raw.strip() == "None" else raw.strip()
        try:
            changed = dataclasses.replace(target, **{field_name: value})
        except (TypeError, ValueError) as err:
            raise ValueError(f"--set {text!r}: {err}") from None
        prof = changed if not head else dataclasses.replace(prof, **{head: changed})
    return prof


def overrides_of(prof: Profile) -> list[str]:
    """The ``section.field=value`` assignments that make `prof` from the profile it is named after
    (`with_overrides` of these gives it back)."""
    def flat(d, head=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{head}{k}.")
            else:
                yield f"{head}{k}", v

    base = dict(flat(profile(prof.name).to_dict()))
    return [f"{k}={json.dumps(v)}" for k, v in flat(prof.to_dict()) if base.get(k) != v]


def _own_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Profile) if f.name not in SECTIONS + ("name",)]


def setting(prof: Profile, name: str):
    """The value of a dotted setting name of `published_method.json` in `prof`, JSON-like.

    ``ae.epochs``, ``cnn.widths.logg`` (a [nf1, nf2, nu] list), ``window.n``, ``vsini``.
    """
    head, _, rest = name.partition(".")
    if head == "cnn" and rest.startswith("widths."):
        return list(prof.cnn.width(rest.split(".", 1)[1]))
    value = getattr(getattr(prof, head), rest) if rest else getattr(prof, head)
    return list(value) if isinstance(value, tuple) else value


#: What a departure of the quick profile from `paper` changes (``kind`` in ``published_method.json``):
#: the size of the problem, the training schedule (epochs, learning rate, batch size, early stopping)
#: that fits the smaller size in fewer steps, or the method itself.
DEPARTURE_KINDS = ("size", "schedule", "method")


def deviations(names: tuple[str, ...] = ("paper", "quick")) -> list[dict]:
    """Per published setting: its value and source, the profiles' values, why they differ, and
    where quick departs from paper the kind of departure (`DEPARTURE_KINDS`) and its measurement."""
    rows = []
    for entry in published_settings():
        row = {"setting": entry["field"], "published": entry["value"], "source": entry["source"]}
        row.update({name: setting(PROFILES[name], entry["field"]) for name in names})
        differs = any(row[n] != entry["value"] for n in names)
        row["why"] = entry.get("why", "") if differs else ""
        row["kind"] = entry.get("kind", "") if row.get("quick") != row.get("paper") else ""
        row["measured"] = entry.get("measured", "") if row["kind"] else ""
        row["note"] = entry.get("note", "")
        rows.append(row)
    return rows


def _measured(name: str):
    return read_table(snapshot(f"results/{name}"))[0]


def measured_deviations(metrics: tuple[str, ...] = ("holdout_mae", "holdout_coverage", "demo_mae", "demo_bias")):
    """Each improvement beside the published choice over CNN seeds, per option, metric and
    parameter: both means and the paired difference of the loss (improvement - published;
    MAE, ``abs(bias)`` or ``abs(coverage - 0.68)``, so negative favours the improvement) with its 95 % t
    interval, from ``measured_deviations.csv`` (made by ``benchmarks/deviations.py``)."""
    from .stats import paired

    table = _measured("measured_deviations.csv")
    table = table[table["metric"].isin(metrics)]
    out = paired(table, ["option", "metric", "parameter"], "choice", "published", "improvement",
                 ("published", "improvement"))
    values = table.groupby(["option", "choice"])["value"].first().unstack("choice")
    out = out.join(values.rename(columns=lambda c: f"{c} value"), on="option")
    return out[["published value", "published mean", "improvement value", "improvement mean", "loss difference",
                "95% low", "95% high", "verdict", "seeds"]]


def measured_variants(metrics: tuple[str, ...] = ("holdout_mae", "demo_mae", "demo_bias")):
    """The latent variants over CNN seeds (``measured_variants.csv``, `benchmarks/deviations.py`):
    per variant, metric and parameter the mean with its 95 % t interval, and the paired
    difference of the loss against `method` (negative favours the variant)."""
    import pandas as pd

    from .stats import paired, t_interval

    table = _measured("measured_variants.csv")
    table = table[table["metric"].isin(metrics)]
    keys = ["variant", "metric", "parameter"]
    means = pd.DataFrame([{**dict(zip(keys, k)), **dict(zip(("mean", "mean 95% low", "mean 95% high"),
                                                            t_interval(g["number"])))}
                          for k, g in table.groupby(keys, sort=False)]).set_index(keys)
    versus = []
    for variant in table["variant"].unique():
        if variant == "method":
            continue
        both = table[table["variant"].isin(["method", variant])]
        d = paired(both, ["metric", "parameter"], "variant", "method", variant, ("method", variant))
        versus.append(d[["loss difference", "95% low", "95% high", "verdict", "seeds"]].assign(variant=variant))
    versus = pd.concat(versus).reset_index().set_index(keys)
    return means.join(versus.rename(columns=lambda c: f"vs method: {c}"))


def cache_dir() -> Path:
    """Download cache: ``$CARMENES_DTL_CACHE`` or ``data/cache`` under the working directory."""
    return Path(os.environ.get("CARMENES_DTL_CACHE", Path.cwd() / "data" / "cache"))
