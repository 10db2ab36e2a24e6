"""The run folder: the one module that knows its file names and the keys inside them.

A run (``carmenes-dtl run --out RUN``) leaves::

    RUN/run.json               the summary: settings, versions, timings, errors (`RunFolder.summary`)
    RUN/stages.json            finished stages (`stages.Stages`)
    RUN/demo/                  the demo survey (demo runs): phoenix/, carmenes/, truth.csv, README.txt
    RUN/synthetic.h5, observed.h5      the prepared sets (`store`)
    RUN/models/search.json     the autoencoder grid search
    RUN/models/ae_<i>.keras, ae_<i>_ft.keras (+ .json reports)   autoencoders before/after fine-tuning
    RUN/latents.npz            latents per domain, encoder and autoencoder (`Latents`)
    RUN/cnn_synthetic/         CNN ensembles that see only synthetic data (`bundle.save_trained`)
    RUN/cnn.json               CNN training curves per space
    RUN/holdout.csv            estimates of held-out synthetic nodes, per variant and uncertainty
    RUN/autoencoders.csv       each autoencoder's ensemble on its own: offsets, spreads, held-out biases
    RUN/estimates[_<variant>].csv, flags[_<variant>].csv   the estimates (``method``: no suffix)
    RUN/model/                 the bundle `predict` uses (`bundle`)
    RUN/gap_<name>/            another demo survey through the same model (`GapFolder`)
    RUN/published/             the paper's published estimates and their validation (chapter 6)

Readers return meaning (tables, settings, arrays), not paths; stages write through the
``*_file``/``*_dir`` paths.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import variants
from .config import Profile

#: The demo survey's own layout (`demo.write_demo`).
DEMO_PHOENIX, DEMO_CARMENES, DEMO_TRUTH, DEMO_README = "phoenix", "carmenes", "truth.csv", "README.txt"
#: Everything `demo.write_demo` writes into its folder.
DEMO_OUTPUTS = (f"{DEMO_PHOENIX}/", f"{DEMO_CARMENES}/", DEMO_TRUTH, DEMO_README)
#: The domains of the latents: synthetic and observed spectra.
DOMAINS = ("syn", "obs")
#: The encoders: before and after fine-tuning.
ENCODERS = ("pre", "ft")
#: The latents kept per domain and autoencoder: each encoder's, and the fine-tuned ones mapped back
#: to the original encoder's (`transfer.back_map`).
LATENT_SPACES = ENCODERS + ("aligned",)


def ae_name(i: int, encoder: str = "pre") -> str:
    """File name of autoencoder `i` before (``pre``) or after (``ft``) fine-tuning, in a run or a bundle."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    return f"ae_{i}{'_ft' if encoder == 'ft' else ''}.keras"


def _latent_key(domain: str, encoder: str, i: int) -> str:
    return f"{domain}_{encoder}_{i}"


class Latents:
    """Latent vectors per domain (``syn``, ``obs``), space (`LATENT_SPACES`) and autoencoder."""

    def __init__(self, arrays: Mapping[tuple[str, str, int], np.ndarray]):
        """`arrays`: {(domain, encoder, i): latents}."""
        self._arrays = dict(arrays)

    @classmethod
    def read(cls, path: Path) -> "Latents":
        with np.load(path) as npz:
            return cls({(d, e, i): npz[_latent_key(d, e, i)] for d in DOMAINS for e in LATENT_SPACES
                        for i in range(sum(k.startswith(f"{d}_{e}_") for k in npz.files))})

    def write(self, path: Path) -> None:
        """Save to `path` (compressed npz)."""
        np.savez_compressed(path, **{_latent_key(*k): v for k, v in self._arrays.items()})

    def get(self, domain: str, encoder: str, i: int) -> np.ndarray:
        return self._arrays[domain, encoder, i]

    @property
    def n_models(self) -> int:
        return sum(k[:2] == ("syn", "pre") for k in self._arrays)

    def pair(self, variant: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(synthetic, observed) latents that `variant`'s CNNs of autoencoder `i` train on and predict."""
        v = variants.get(variant)
        if not v.latent:
            raise ValueError(f"variant must be one of the latent variants {list(variants.LATENT_VARIANTS)}, "
                             f"got {variant!r}")
        return self.get("syn", v.train, i), self.get("obs", v.apply, i)


def _suffix(variant: str) -> str:
    return "" if variants.get(variant).name == "method" else f"_{variant}"


@dataclass(frozen=True)
class GapFolder:
    """Another demo survey of the run's seed prepared like the run's own (``RUN/gap_<name>/``)."""

    root: Path

    @property
    def demo_dir(self) -> Path:
        return self.root / "demo"

    @property
    def carmenes_dir(self) -> Path:
        return self.demo_dir / DEMO_CARMENES

    @property
    def observed(self) -> Path:
        return self.root / "observed.h5"

    @property
    def truth_file(self) -> Path:
        return self.demo_dir / DEMO_TRUTH

    def truth(self) -> pd.DataFrame:
        return pd.read_csv(self.truth_file)


@dataclass(frozen=True)
class RunFolder:
    """The files of the run in `out`: paths for the stages that write them, readers for everyone else."""

    out: Path

    def __post_init__(self):
        object.__setattr__(self, "out", Path(self.out))

    # -- paths --------------------------------------------------------------------------------
    demo_dir = property(lambda self: self.out / "demo")
    truth_file = property(lambda self: self.demo_dir / DEMO_TRUTH)
    phoenix_dir = property(lambda self: self.demo_dir / DEMO_PHOENIX)
    carmenes_dir = property(lambda self: self.demo_dir / DEMO_CARMENES)
    synthetic = property(lambda self: self.out / "synthetic.h5")
    observed = property(lambda self: self.out / "observed.h5")
    models_dir = property(lambda self: self.out / "models")
    search_file = property(lambda self: self.models_dir / "search.json")
    latents_file = property(lambda self: self.out / "latents.npz")
    histories_file = property(lambda self: self.out / "cnn.json")
    cnn_synthetic_dir = property(lambda self: self.out / "cnn_synthetic")
    holdout_file = property(lambda self: self.out / "holdout.csv")
    autoencoders_file = property(lambda self: self.out / "autoencoders.csv")
    bundle_dir = property(lambda self: self.out / "model")
    summary_file = property(lambda self: self.out / "run.json")
    stages_file = property(lambda self: self.out / "stages.json")
    published_estimates_file = property(lambda self: self.out / "published" / "estimates.csv")
    validation_dir = property(lambda self: self.out / "published" / "validation")

    def ae_file(self, i: int, encoder: str = "pre") -> Path:
        return self.models_dir / ae_name(i, encoder)

    def estimates_file(self, variant: str = "method") -> Path:
        """``estimates.csv`` for the method, ``estimates_<variant>.csv`` for the others."""
        return self.out / f"estimates{_suffix(variant)}.csv"

    def flags_file(self, variant: str = "method") -> Path:
        """Out-of-grid flags beside the estimates of `variant`."""
        return self.out / f"flags{_suffix(variant)}.csv"

    def gap(self, name: str) -> GapFolder:
        """The folder of gap variant `name` (a level or ``degenerate=X,shared=Y``)."""
        return GapFolder(self.out / f"gap_{name}")

    # -- readers -------------------------------------------------------------------------------
    def exists(self) -> bool:
        """True once a run has finished here (its summary is written last)."""
        return self.summary_file.exists()

    def summary(self) -> dict:
        """run.json as written by `pipeline.Runner.summary`."""
        return json.loads(self.summary_file.read_text())

    def profile(self) -> Profile:
        """The settings the run used."""
        return Profile.from_dict(self.summary()["profile"])

    def errors(self) -> pd.DataFrame:
        """Errors against the demo truth: rows (variant, parameter), columns n, bias, scatter, mae."""
        errs = self.summary()["errors_vs_truth"]
        return pd.concat({v: pd.DataFrame(e).T for v, e in errs.items()}, names=["variant", "parameter"])

    def holdout_coverage(self) -> pd.DataFrame:
        """Fraction of held-out synthetic truths inside the 16/84 interval: rows (uncertainty method,
        parameter), a column per variant."""
        cov = self.summary()["holdout_coverage"]
        return pd.concat({u: pd.DataFrame(c) for u, c in cov.items()}, names=["uncertainty", "parameter"])

    def excluded(self) -> list:
        """Observed spectra the preparation excluded, with reasons."""
        return self.summary().get("observed_excluded", [])

    def truth(self) -> pd.DataFrame:
        """The demo survey's true parameters per star."""
        return pd.read_csv(self.truth_file)

    def search(self) -> pd.DataFrame:
        """The autoencoder grid search, one row per configuration."""
        return pd.DataFrame(json.loads(self.search_file.read_text()))

    def ae_report(self, i: int, encoder: str = "pre") -> dict:
        """What training (``pre``) or fine-tuning (``ft``) of autoencoder `i` reported."""
        return json.loads(self.ae_file(i, encoder).with_suffix(".json").read_text())

    def latents(self) -> Latents:
        return Latents.read(self.latents_file)

    def estimates(self, variant: str = "method") -> pd.DataFrame:
        return pd.read_csv(self.estimates_file(variant))

    def flags(self, variant: str = "method") -> pd.DataFrame:
        return pd.read_csv(self.flags_file(variant))

    def holdout(self) -> pd.DataFrame:
        """Estimates of the held-out synthetic nodes with their truths (``true_*``), per variant and uncertainty."""
        return pd.read_csv(self.holdout_file)

    def autoencoders(self) -> pd.DataFrame:
        """Each autoencoder's ensemble on its own, per variant, on the observed stars and the held-out
        nodes (`cnn.autoencoder_report`)."""
        return pd.read_csv(self.autoencoders_file)

    def cnn_histories(self) -> dict:
        """CNN training curves per space."""
        return json.loads(self.histories_file.read_text())
