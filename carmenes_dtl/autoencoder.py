"""Dense contractive autoencoders (paper Sect. 3.1) and their cross-validated grid search.

Encoder ``3501 -> n_in -> 3/4 -> 1/2 -> 1/4 -> 1/8 of n_in -> 32`` (ReLU), mirrored
decoder, sigmoid output; L1 activity regularisation on the layers named in
``AESettings.l1_layers`` (published: encoder 2-5 and decoder 1-5). The loss is MSE plus a
contractive penalty added by the bottleneck (`ContractiveDense`): the published form
(``penalty="sigmoid_frozen"``) or the exact ``λ ||∂h/∂x||²_F`` of the ReLU bottleneck.
"""
from __future__ import annotations

import json
from pathlib import Path

import dask
import keras
import numpy as np
from keras import ops
from keras.regularizers import L1
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, train_test_split
from tqdm.auto import tqdm

from . import portable, scheduling
from .config import PUBLISHED_L1_LAYERS, AESettings, stage_seed
from .environment import tensorflow_hidden
from .layers import ContractiveDense, FloatL1
from .training import (callbacks, data_parallel, history, initializer_seeds, precision_policy, scope, set_random_seed,
                       validation_slice, whole_batches)

ENCODER_FRACTIONS = (1.0, 0.75, 0.5, 0.25, 0.125)


def layer_sizes(n_in: int) -> list[int]:
    """Widths of the five encoder layers for a first layer of `n_in` units."""
    return [int(n_in * f) for f in ENCODER_FRACTIONS]


def build_autoencoder(n_features: int = 3501, n_in: int = 2048, l1: float = 1e-7, latent: int = 32,
                      lam: float = 1e-4, penalty: str = "sigmoid_frozen", learning_rate: float = 1e-4,
                      l1_layers: tuple[str, ...] = PUBLISHED_L1_LAYERS, precision: str = "float32",
                      seed: int | None = None) -> keras.Model:
    """The paper's autoencoder, compiled (Adam, MSE + contractive penalty; ``lam=0``: plain MSE),
    computing in `precision` (`training.precision_policy`; the reconstruction stays float32);
    initial weights from `seed` (`training.initializer_seeds`)."""
    seeds = initializer_seeds(seed)

    def dense(width, name, layer=keras.layers.Dense, **kwargs):
        reg = (L1 if precision == "float32" else FloatL1)(l1) if name in l1_layers else None
        return layer(width, activation="relu", name=name, activity_regularizer=reg,
                     kernel_initializer=keras.initializers.GlorotUniform(next(seeds)), **kwargs)

    unknown = set(l1_layers) - {f"{h}_{i}" for h in ("enc", "dec") for i in range(1, 6)}
    if unknown:
        raise ValueError(f"l1_layers must name enc_1..enc_5 or dec_1..dec_5, got {sorted(unknown)}")
    with precision_policy(precision):
        x = inputs = keras.Input((n_features,), name="spectrum")
        for i, width in enumerate(layer_sizes(n_in), 1):
            x = dense(width, f"enc_{i}")(x)
        x = dense(latent, "bottleneck", ContractiveDense, lam=lam, penalty=penalty)(x)
        for i, width in enumerate(reversed(layer_sizes(n_in)), 1):
            x = dense(width, f"dec_{i}")(x)
        outputs = keras.layers.Dense(n_features, activation="sigmoid", name="reconstruction", dtype="float32",
                                     kernel_initializer=keras.initializers.GlorotUniform(next(seeds)))(x)
    model = keras.Model(inputs, outputs, name=f"cae_{n_in}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    return model


def parameter_count(n_features: int, n_in: int, latent: int = 32) -> int:
    """Weights + biases implied by the layer sizes (for checking a built model)."""
    widths = [n_features, *layer_sizes(n_in), latent, *reversed(layer_sizes(n_in)), n_features]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def encoder(model: keras.Model) -> keras.Model:
    """The encoder half: spectrum -> 32-dim latent vector."""
    return keras.Model(model.inputs, model.get_layer("bottleneck").output)


def encode(model: keras.Model, flux: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Latent vectors of `flux`, float32 (a bfloat16 model's too: NumPy files cannot hold bfloat16)."""
    return np.asarray(encoder(model).predict(flux, batch_size=batch_size, verbose=0), np.float32)


def reconstruction_mse(model: keras.Model, flux: np.ndarray) -> float:
    """Mean squared reconstruction error."""
    return float(np.mean((model.predict(flux, batch_size=512, verbose=0) - flux) ** 2))


def train(flux: np.ndarray, n_in: int, l1: float, s: AESettings, seed: int, progress: bool = False,
          search: bool = False, reuse: dict | None = None,
          parallel: bool = False) -> tuple[keras.Model, dict]:
    """Build and fit one autoencoder on `flux` (a training part); returns the model and its loss history.

    ``search=True`` is a grid-search fit: `s.search_epochs`, plain MSE unless
    ``s.search_loss == "contractive"``, no early stopping. Otherwise `s.epochs`, with early
    stopping on a `validation_slice` of `flux` when `s.patience` is set. `reuse` (a dict
    kept by the caller) holds the last model built; a fit with the same settings and seed
    resets it to its initial weights and optimizer state instead of building and compiling
    a new one (the folds of a grid point). `parallel`: built and fitted data-parallel over
    every device (`data_parallel`; the rows cut to a multiple of the device count, `whole_batches`).
    """
    set_random_seed(seed)
    lam = 0.0 if search and s.search_loss == "mse" else s.contractive_lambda
    args = (flux.shape[1], n_in, l1, s.latent_dim, lam, s.penalty, s.learning_rate, s.l1_layers, s.precision, seed)
    key = (args, parallel)
    reset = reuse is not None and reuse.get("key") == key
    patience = None if search else s.patience
    fit, val = validation_slice(flux, patience, seed)
    dist = data_parallel(s.batch_size) if parallel else None
    fit, val_x = whole_batches(dist, fit), whole_batches(dist, None if val is None else val[0])
    with scope(dist):
        model = build_autoencoder(*args) if reuse is None else _reset_or_build(reuse, args, key)
        if reset:  # Keras' first fit of a new model draws one shuffle to peek at a batch: same batch orders
            np.random.permutation(len(fit))
        hist = model.fit(fit, fit, validation_data=None if val is None else (val_x, val_x),
                         epochs=s.search_epochs if search else s.epochs, batch_size=s.batch_size, shuffle=True,
                         verbose=0, callbacks=callbacks(patience, progress, f"AE n_in={n_in}"))
    return model, history(hist)


def _reset_or_build(reuse: dict, args: tuple, key: tuple) -> keras.Model:
    """`build_autoencoder(*args)`: the model in `reuse` reset to its initial state when it was
    built with the same `key` (args, the seed among them, and parallel), else a new one."""
    if reuse.get("key") != key:
        reuse.clear()
        model = build_autoencoder(*args)
        model.optimizer.build(model.trainable_variables)
        state = [ops.convert_to_numpy(v) for v in model.variables + model.optimizer.variables]
        reuse.update(key=key, model=model, state=state)
    model = reuse["model"]
    for var, value in zip(model.variables + model.optimizer.variables, reuse["state"]):
        var.assign(value)
    return model


class AutoencoderEstimator(BaseEstimator):
    """scikit-learn wrapper so `GridSearchCV` runs the search; score = -reconstruction MSE."""

    def __init__(self, n_in: int = 2048, l1: float = 1e-7, settings: AESettings | None = None, seed: int = 0,
                 parallel: bool = False):
        self.n_in, self.l1, self.settings, self.seed, self.parallel = n_in, l1, settings, seed, parallel

    #: The last model fitted: GridSearchCV fits the folds of a grid point one after another,
    #: and they reuse its compiled train step (`train`'s `reuse`). Cleared by `grid_search`.
    reuse: dict = {}

    def fit(self, X, y=None):
        self.model_, self.history_ = train(X, self.n_in, self.l1, self.settings or AESettings(), self.seed,
                                           search=True, reuse=AutoencoderEstimator.reuse, parallel=self.parallel)
        return self

    def score(self, X, y=None):
        return -reconstruction_mse(self.model_, X)


def grid_search(flux: np.ndarray, s: AESettings, seed: int = 0, parallel: bool = False,
                scheduler: str | None = None, progress: bool = False) -> list[dict]:
    """Cross-validated search over n_in x L1 (`s.cv_folds` unshuffled folds, as GridSearchCV's
    ``cv=4``); rows sorted best first. `parallel`: fits data-parallel (`train`).

    `scheduler` (`scheduling.session`): on a ``dask.distributed`` cluster (an address or the
    active Client) or local ``processes``, one Dask task per configuration and fold; the
    spectra travel in the task graph (a cluster's worker receives them once; no shared disk).
    Otherwise (no active Client, ``threads``, ``synchronous``) the fits run one after another
    in this process: Keras seeds are per process, so threads would mix them. A failed fit
    stops the search with one line naming its configuration and fold."""
    with scheduling.session(scheduler) as where:
        if where in (None, "threads", "synchronous"):
            return _grid_search_here(flux, s, seed, parallel)
        points = list(ParameterGrid({"n_in": list(s.n_in_grid), "l1": list(s.l1_grid)}))  # GridSearchCV's order
        folds = list(KFold(s.cv_folds).split(flux))
        data = dask.delayed(flux)
        tasks = [dask.delayed(_fold_mse)(data, fold, p["n_in"], p["l1"], s, seed) for p in points for fold in folds]
        with tqdm(total=len(tasks), desc="grid search", unit="fit", disable=not progress) as bar:
            fits = scheduling.compute(tasks, where, bar)
    failed = [f"n_in={p['n_in']}, l1={p['l1']:g}, fold {k}: {fits[i * len(folds) + k][1]}"
              for i, p in enumerate(points) for k in range(len(folds)) if fits[i * len(folds) + k][1]]
    if failed:
        raise ValueError(f"grid search: {len(failed)} of {len(fits)} fits failed: {'; '.join(failed)}")
    mse = np.array([m for m, _ in fits]).reshape(len(points), len(folds))
    return _best_first([{"n_in": int(p["n_in"]), "l1": float(p["l1"]), "cv_mse": float(m.mean()),
                         "cv_mse_std": float(m.std())} for p, m in zip(points, mse)])


def _best_first(rows: list[dict]) -> list[dict]:
    """The search rows sorted by cv MSE; a ValueError naming the configurations whose fits diverged."""
    diverged = [f"n_in={r['n_in']}, l1={r['l1']:g}" for r in rows if not np.isfinite(r["cv_mse"])]
    if diverged:
        raise ValueError(f"grid search: the fits of {'; '.join(diverged)} diverged (cv MSE not finite)")
    return sorted(rows, key=lambda r: r["cv_mse"])


def _fold_mse(flux: np.ndarray, fold: tuple, n_in: int, l1: float, s: AESettings, seed: int) -> tuple:
    """One fit of the search (a Dask task): (test MSE, None), or (nan, the error) when it fails."""
    try:
        model, _ = train(flux[fold[0]], n_in, l1, s, seed, search=True)  # a fresh model: workers may run fits at once
        return reconstruction_mse(model, flux[fold[1]]), None
    except Exception as err:  # reported by configuration and fold by `grid_search`, never dropped
        return float("nan"), f"{type(err).__name__}: {err}"


def _grid_search_here(flux: np.ndarray, s: AESettings, seed: int, parallel: bool) -> list[dict]:
    """`grid_search` in this process: scikit-learn's GridSearchCV, folds reusing their grid point's model."""
    search = GridSearchCV(AutoencoderEstimator(settings=s, seed=seed, parallel=parallel),
                          {"n_in": list(s.n_in_grid), "l1": list(s.l1_grid)},
                          cv=KFold(s.cv_folds), refit=False, n_jobs=1, error_score="raise")
    try:
        search.fit(flux)
    except Exception as err:  # scikit-learn re-raises the fit's own error: say where it came from
        raise ValueError(f"grid search: a fit failed ({type(err).__name__}: {err}); the search on Dask "
                         "(--scheduler processes) names its configuration and fold") from err
    finally:
        AutoencoderEstimator.reuse.clear()
    res = search.cv_results_
    return _best_first([{"n_in": int(p["n_in"]), "l1": float(p["l1"]), "cv_mse": -float(m), "cv_mse_std": float(sd)}
                        for p, m, sd in zip(res["params"], res["mean_test_score"], res["std_test_score"])])


def search_and_train(flux: np.ndarray, s: AESettings, seed: int, progress: bool = False,
                     parallel: bool = False, scheduler: str | None = None) -> tuple[list, list]:
    """The published protocol: a seeded `s.test_size` split of the synthetic spectra; the grid
    search and the training of the `s.n_models` best points use the training part, the test
    part gives each model's test MSE. Returns the search rows and [(model, info)]. `parallel`:
    every fit data-parallel over all devices (`train`); `scheduler`: where the search's fits run
    (`grid_search`).
    """
    train_idx, test_idx = train_test_split(np.arange(len(flux)), test_size=s.test_size,
                                           random_state=stage_seed(seed, "split"))
    rows = grid_search(flux[train_idx], s, stage_seed(seed, "search"), parallel, scheduler, progress)
    models = []
    for i, best in enumerate(rows[:s.n_models]):
        model_seed = stage_seed(seed, "autoencoder", i)
        model, hist = train(flux[train_idx], best["n_in"], best["l1"], s, model_seed, progress, parallel=parallel)
        models.append((model, {**best, "seed": model_seed, "test_mse": reconstruction_mse(model, flux[test_idx]),
                               "n_train": len(train_idx), "n_test": len(test_idx), "history": hist}))
    return rows, models


def save(model: keras.Model, path: Path, info: dict | None = None) -> Path:
    """Native `.keras` file, with a JSON of its settings `info` beside it when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tensorflow_hidden():
        model.save(path)
    if info is not None:
        path.with_suffix(".json").write_text(json.dumps(info, indent=1, default=float))
    return path


def _load_newer(path: Path) -> keras.Model | None:
    """The model at `path` as `portable.newer_copy` cleans it, or None when there is nothing to clean
    or that fails too (the first error says more)."""
    try:
        with portable.newer_copy(path) as copy, tensorflow_hidden():
            return None if copy is None else keras.saving.load_model(copy)
    except Exception:  # a file that is no model, or a newer Keras's argument with a value
        return None


def load(path: Path, saved_with: str = "?") -> keras.Model:
    """The model saved at `path`, also by a newer Keras (`portable`); a one-line error naming it
    when it is missing or this Keras cannot open it (`saved_with`: the Keras that wrote it, when known)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: model not found")
    try:
        with tensorflow_hidden():
            return keras.saving.load_model(path)
    except Exception as err:  # Keras raises many types for files that are no model or of other versions
        model = _load_newer(path)
        if model is not None:
            return model
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]  # Keras's advice on formats runs long
        raise ValueError(f"{path}: Keras {keras.__version__} cannot open this model (saved with Keras "
                         f"{saved_with}): {type(err).__name__}: {first}") from None
