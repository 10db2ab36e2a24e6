"""Fine-tuning on observed spectra (paper Sect. 3.2).

The first `frozen` encoder layers keep their synthetic weights, so observed spectra pass
through the same low-level features; the last encoder layer, the bottleneck and the
decoder learn to reconstruct the observed domain. In the authors' code the CNNs then train
on synthetic latents of the *original* encoder and are applied to observed latents of the
*fine-tuned* one (`variants.VARIANTS["method"]`).
"""
from __future__ import annotations

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from .autoencoder import load, reconstruction_mse
from .config import FineTuneSettings, stage_seed
from .training import callbacks, data_parallel, history, scope, set_random_seed, validation_slice, whole_batches


def synthetic_sample(flux: np.ndarray, seed: int, n: int = 512) -> np.ndarray:
    """The synthetic spectra that measure what fine-tuning costs the synthetic domain: `n` rows
    (all when fewer) drawn with the run's fine-tuning seed."""
    rng = np.random.default_rng(stage_seed(seed, "fine-tune"))
    return flux[rng.choice(len(flux), min(n, len(flux)), replace=False)]


def affine_map(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares affine map from `source` to `target` rows, as a (d_source + 1, d_target)
    matrix for `apply_affine`."""
    design = np.column_stack([source, np.ones(len(source))]).astype(float)
    return np.linalg.lstsq(design, target.astype(float), rcond=None)[0]


def apply_affine(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (x.astype(float) @ coef[:-1] + coef[-1]).astype(np.float32)


def affine_residual(before: np.ndarray, after: np.ndarray) -> float:
    """Fraction of the variance of `after` left by the least-squares affine map from `before`.

    0: `after` is an affine function of `before` (a CNN retrained on it can absorb the
    change); about 1: no affine relation at all.
    """
    coef = affine_map(before, after)
    resid = after - (before.astype(float) @ coef[:-1] + coef[-1])
    return float(resid.var(axis=0).sum() / after.var(axis=0).sum())


def back_map(synthetic_pre: np.ndarray, synthetic_ft: np.ndarray) -> np.ndarray:
    """The label-free drift correction of variant ``method_aligned``: the affine map from the
    fine-tuned encoder's latents to the original encoder's, fitted on synthetic spectra only."""
    return affine_map(synthetic_ft, synthetic_pre)


def frozen_layers(n_frozen: int) -> list[str]:
    """Names of the first `n_frozen` encoder layers."""
    return [f"enc_{i}" for i in range(1, n_frozen + 1)]


def finetune(model_path, observed: np.ndarray, synthetic: np.ndarray, s: FineTuneSettings, seed: int = 0,
             progress: bool = False, parallel: bool = False) -> tuple[keras.Model, dict]:
    """A fine-tuned copy of the saved autoencoder at `model_path`, and a before/after report.

    Observed spectra are split 80/20 (`s.test_size`; `s.split_seed`, as published, or `seed`);
    the 20 % only measures the observed reconstruction error. With `s.patience`, early stopping watches
    a seeded 10 % of the 80 %, never the reported 20 %. `synthetic` (a sample) measures
    what the synthetic domain loses. With the published penalty the frozen copy of the
    bottleneck kernel is taken anew from the loaded weights, as the authors' loss is
    rebuilt when the loaded model is compiled. `parallel`: loaded and fitted data-parallel over
    every device (`training.data_parallel`; the rows cut to a multiple of the device count).
    """
    set_random_seed(seed)
    split_seed = seed if s.split_seed is None else s.split_seed
    train_obs, test_obs = train_test_split(observed, test_size=s.test_size, random_state=split_seed)
    fit, val = validation_slice(train_obs, s.patience, seed)
    dist = data_parallel(s.batch_size) if parallel else None
    fit, val_x = whole_batches(dist, fit), whole_batches(dist, None if val is None else val[0])
    with scope(dist):
        model = load(model_path)

    def errors() -> dict:
        return {"mse_observed_test": reconstruction_mse(model, test_obs),
                "mse_synthetic": reconstruction_mse(model, synthetic)}

    before = errors()
    frozen = frozen_layers(s.frozen)
    for name in frozen:
        model.get_layer(name).trainable = False
    model.get_layer("bottleneck").refreeze()
    with scope(dist):
        model.compile(optimizer=keras.optimizers.Adam(s.learning_rate), loss="mse")
        hist = model.fit(fit, fit, validation_data=None if val is None else (val_x, val_x),
                         epochs=s.epochs, batch_size=min(s.batch_size, len(fit)), shuffle=True, verbose=0,
                         callbacks=callbacks(s.patience, progress, "fine-tune"))
    return model, {"frozen_layers": frozen, "n_train": len(train_obs), "n_test": len(test_obs), "split_seed": split_seed,
                   "early_stopping_rows": 0 if val is None else len(val_x),
                   "before": before, "after": errors(), "history": history(hist)}
