"""CNN regressors on latent vectors, their ensembles and the final estimates (paper Sect. 3.3).

Per parameter and per autoencoder, `n_per_model` CNNs are trained, each on its own
stratified shuffle split (30 % held out, strata = deciles of the target). The estimate of
a star is the median of all the ensemble's predictions. Its uncertainties come from the
predictive distribution formed by every member's prediction spread by that member's own
held-out residuals: ``e_X = median - P16`` and ``E_X = P84 - median`` (both >= 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
from keras import ops
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler

from .autoencoder import callbacks, history
from .config import PAPER_RANGES, PARAMETERS, PUBLISHED_NAMES, CNNSettings, estimate_columns


@keras.saving.register_keras_serializable(package="carmenes_dtl")
def masked_mse(y_true, y_pred):
    """MSE over the entries of `y_true` that are not NaN (a member's own split)."""
    mask = ops.logical_not(ops.isnan(y_true))
    diff = ops.where(mask, y_true - y_pred, ops.zeros_like(y_pred))
    return ops.sum(ops.square(diff)) / ops.maximum(ops.sum(ops.cast(mask, y_pred.dtype)), 1.0)


def _glorot(fan_in: int, fan_out: int):
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MemberConv1D(keras.layers.Layer):
    """`members` independent Conv1D layers (valid padding, stride 1) in one tensor op.

    Input (batch, length, channels) is shared by all members; (batch, members, length,
    channels) gives each member its own. Output: (batch, members, length - k + 1, filters).
    """

    def __init__(self, members: int, filters: int, kernel_size: int = 2, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.members, self.filters, self.kernel_size = members, filters, kernel_size
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.members, self.kernel_size, c, self.filters), name="kernel",
                                      initializer=_glorot(self.kernel_size * c, self.kernel_size * self.filters))
        self.bias = self.add_weight(shape=(self.members, self.filters), initializer="zeros", name="bias")

    def call(self, x):
        shared = len(x.shape) == 3
        n = x.shape[-2] - self.kernel_size + 1
        out = self.bias[None, :, None, :]
        for j in range(self.kernel_size):
            if shared:
                out = out + ops.einsum("blc,mcf->bmlf", x[:, j:j + n, :], self.kernel[:, j])
            else:
                out = out + ops.einsum("bmlc,mcf->bmlf", x[:, :, j:j + n, :], self.kernel[:, j])
        return self.activation(out)

    def get_config(self):
        return {**super().get_config(), "members": self.members, "filters": self.filters,
                "kernel_size": self.kernel_size, "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MemberDense(keras.layers.Layer):
    """`members` independent Dense layers: (batch, members, in) -> (batch, members, units)."""

    def __init__(self, members: int, units: int, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.members, self.units = members, units
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        n_in = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.members, n_in, self.units), name="kernel",
                                      initializer=_glorot(n_in, self.units))
        self.bias = self.add_weight(shape=(self.members, self.units), initializer="zeros", name="bias")

    def call(self, x):
        return self.activation(ops.einsum("bmi,mio->bmo", x, self.kernel) + self.bias[None])

    def get_config(self):
        return {**super().get_config(), "members": self.members, "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


def _pool(x, size: int, reduce):
    """Non-overlapping pooling along the length axis (-2) by reshaping: (..., L, C) -> (..., L // size, C)."""
    n = x.shape[-2] // size
    shape = (-1, *x.shape[1:-2], n, size, x.shape[-1])
    return reduce(ops.reshape(x[..., :n * size, :], shape), axis=-2)


def build_cnn(n_inputs: int, tuned_width: int = 64, learning_rate: float = 0.01, pool: int = 0,
              members: int = 1) -> keras.Model:
    """`members` independent CNNs, output (batch, members): one column per CNN.

    Each CNN: Conv1D(64, 2) -> Conv1D(32, 2) -> Flatten -> Dense 256 -> 128 -> tuned -> 1
    (ReLU). The members' weights are stacked along a `members` axis and applied with
    einsum (`MemberConv1D`, `MemberDense`), so an ensemble is one small graph: it
    compiles in a second and trains every member in the same step, instead of 20 Keras
    models or a 20-branch graph that takes ~20 s to trace (see benchmarks/).
    `pool` > 0 is for the `direct` baseline on 3501-pixel spectra: the input is averaged
    in bins of 8 pixels (0.08 Å, about one resolution element) and each
    convolution is followed by max-pooling by `pool`; without this the first dense
    layer alone would hold 28 M weights per member.
    """
    inputs = keras.Input((n_inputs, 1))
    x = keras.layers.Lambda(lambda t: _pool(t, 8, ops.mean), name="bin8")(inputs) if pool else inputs
    for filters in (64, 32):
        x = MemberConv1D(members, filters, name=f"conv{filters}")(x)
        if pool:
            x = keras.layers.Lambda(lambda t: _pool(t, pool, ops.max), name=f"pool{filters}")(x)
    x = keras.layers.Reshape((members, -1), name="flatten")(x)
    for width, name in ((256, "dense256"), (128, "dense128"), (tuned_width, "tuned"), (1, "out")):
        x = MemberDense(members, width, activation=None if name == "out" else "relu", name=name)(x)
    model = keras.Model(inputs, keras.layers.Reshape((members,), name="members")(x))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=masked_mse)
    return model


def strata(y: np.ndarray, bins: int = 10) -> np.ndarray:
    """Quantile bins of a target, for stratified splitting."""
    edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.digitize(y, edges)


@dataclass
class Ensemble:
    """The CNNs of every parameter for one input space (one autoencoder, or the spectra).

    Output column ``i * n_per_model + k`` is member k of parameter i.
    """

    parameters: tuple[str, ...]
    x_scaler: StandardScaler
    y_mean: np.ndarray
    y_std: np.ndarray
    model: keras.Model
    residuals: dict  # parameter -> per member: prediction - truth on its held-out split
    history: dict = field(default_factory=dict)

    def member_predictions(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """parameter -> (n_members, n_stars) predictions in physical units."""
        xs = self.x_scaler.transform(x)[..., None]
        pred = np.asarray(self.model.predict(xs, batch_size=256, verbose=0)).reshape(len(x), len(self.parameters), -1)
        return {p: pred[:, i, :].T * self.y_std[i] + self.y_mean[i] for i, p in enumerate(self.parameters)}


def train_ensemble(x: np.ndarray, y: np.ndarray, s: CNNSettings, seed: int, pool: int = 0,
                   parameters: tuple[str, ...] = PARAMETERS, progress: bool = False) -> Ensemble:
    """`n_per_model` CNNs per parameter (columns of `y`), each on its own stratified 70/30 split.

    The splits are stratified on deciles of that member's parameter. All members train
    together (`build_cnn(members=...)`): a member's loss sees only its training rows and
    its validation loss only its held-out rows; early stopping watches their sum.
    """
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)[..., None]
    mean, std = y.mean(axis=0), np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)
    ys = (y - mean) / std
    k_per = s.n_per_model
    y_train = np.full((len(y), len(parameters) * k_per), np.nan, np.float32)
    y_test = y_train.copy()
    splits = {}
    for i, p in enumerate(parameters):
        sss = StratifiedShuffleSplit(k_per, test_size=s.test_size, random_state=seed + i)
        splits[p] = list(sss.split(xs, strata(y[:, i])))
        for k, (tr, te) in enumerate(splits[p]):
            y_train[tr, i * k_per + k], y_test[te, i * k_per + k] = ys[tr, i], ys[te, i]
    keras.utils.set_random_seed(seed)
    model = build_cnn(x.shape[1], s.tuned_width, s.learning_rate, pool, members=y_train.shape[1])
    hist = model.fit(xs, y_train, validation_data=(xs, y_test), epochs=s.epochs, batch_size=s.batch_size,
                     verbose=0, callbacks=callbacks(s.patience, progress, "CNN ensemble"))
    ensemble = Ensemble(tuple(parameters), scaler, mean, std, model, {}, history(hist))
    pred = ensemble.member_predictions(x)
    ensemble.residuals = {p: [pred[p][k, te] - y[te, i] for k, (_, te) in enumerate(splits[p])]
                          for i, p in enumerate(parameters)}
    return ensemble


def summarise(predictions: np.ndarray, residuals: list[np.ndarray]) -> np.ndarray:
    """(n_stars, 3): median, lower and upper uncertainty from member predictions and residuals.

    The predictive distribution of a star is the union over members k of
    ``prediction_k + residuals_k``, re-centred on the median of the members'
    predictions; lower = median - P16, upper = P84 - median.
    """
    med = np.median(predictions, axis=0)
    draws = np.concatenate([p[:, None] + r[None, :] for p, r in zip(predictions, residuals)], axis=1)
    p16, p84 = np.percentile(draws - (np.median(draws, axis=1) - med)[:, None], [16, 84], axis=1)
    return np.column_stack([med, np.clip(med - p16, 0, None), np.clip(p84 - med, 0, None)])


def estimate(ensembles: list[Ensemble], inputs: list[np.ndarray], karmn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Estimates in the published format and a table of out-of-grid flags.

    `inputs[i]` are the stars' inputs for `ensembles[i]` (one per autoencoder). Values
    outside the training grid are kept and flagged, never clipped.
    """
    out = {"karmn": list(karmn)}
    flags = {"karmn": list(karmn)}
    member_preds = [e.member_predictions(x) for e, x in zip(ensembles, inputs)]
    for p in PARAMETERS:
        stats = summarise(np.concatenate([mp[p] for mp in member_preds]),
                          [r for e in ensembles for r in e.residuals[p]])
        name = PUBLISHED_NAMES[p]
        out[name], out[f"e_{name}"], out[f"E_{name}"] = stats.T
        lo, hi = PAPER_RANGES[p]
        flags[f"outside_{name}"] = (stats[:, 0] < lo) | (stats[:, 0] > hi)
    return pd.DataFrame(out)[estimate_columns()], pd.DataFrame(flags)
