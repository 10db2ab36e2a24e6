"""The CNN ensembles as `cnn.train_ensemble` trained them before issue 16, kept here as the
baseline of `cnn_stage.py`: the stacked layers of commit 79912bf with the loop and predictions
of before commit c4b3853 (Keras `model.fit` and `model.predict`).

Members share every batch (the graph's input is shared; a member's rows outside its training
part have NaN targets, masked in the loss), the activations are (batch, members, ...) and the
direct CNN pools after full-size convolutions; Keras' `model.fit` with
`EarlyStopping(restore_best_weights=True)` trains each graph and `model.predict` predicts
(`KerasEnsemble`). Registered under the package
name ``baseline`` so that it never replaces the package's layers.
"""
import keras
import numpy as np
from keras import ops

from carmenes_dtl import cnn
from carmenes_dtl.cnn import Ensemble, assemble_ensemble, setup_ensemble
from carmenes_dtl.config import PARAMETERS, CNNSettings
from carmenes_dtl.training import callbacks, history, validation_slice


class KerasEnsemble(Ensemble):
    """`cnn.Ensemble` predicting with `model.predict`, as before issue 16."""

    def member_predictions(self, x: np.ndarray) -> dict[str, np.ndarray]:
        xs = (self.x_scaler.transform(x) if self.x_scaler else x)[..., None]
        out = {}
        for params, model in self.models:
            pred = model.predict(xs, batch_size=256, verbose=0).reshape(len(x), len(params), -1)
            out.update({p: pred[:, i, :].T * self.y_std[p] + self.y_mean[p] for i, p in enumerate(params)})
        return out


@keras.saving.register_keras_serializable(package="baseline")
def masked_mse(y_true, y_pred):
    """MSE over the entries of `y_true` that are not NaN (a member's own split)."""
    mask = ops.logical_not(ops.isnan(y_true))
    diff = ops.where(mask, y_true - y_pred, ops.zeros_like(y_pred))
    return ops.sum(ops.square(diff)) / ops.maximum(ops.sum(ops.cast(mask, y_pred.dtype)), 1.0)


@keras.saving.register_keras_serializable(package="baseline")
class MemberConv1D(cnn.MemberConv1D):
    """Today's weights and settings, applied as before issue 16: activations (batch, members, ...),
    the (padded) input shifted for every tap; pooling is a separate layer (`BinPool`)."""

    def call(self, x):
        shared = len(x.shape) == 3
        if self.padding == "same":
            before = (self.kernel_size - 1) // 2
            pad = [(0, 0)] * (len(x.shape) - 2) + [(before, self.kernel_size - 1 - before), (0, 0)]
            x = ops.pad(x, pad)
        n = x.shape[-2] - self.kernel_size + 1
        out = self.bias[None, :, None, :]
        for j in range(self.kernel_size):
            if shared:
                out = out + ops.einsum("blc,mcf->bmlf", x[:, j:j + n, :], self.kernel[:, j])
            else:
                out = out + ops.einsum("bmlc,mcf->bmlf", x[:, :, j:j + n, :], self.kernel[:, j])
        return self.activation(out)


@keras.saving.register_keras_serializable(package="baseline")
class MemberDense(cnn.MemberDense):
    """Today's weights, applied as before issue 16: (batch, members, in) -> (batch, members, units)."""

    def call(self, x):
        return self.activation(ops.einsum("bmi,mio->bmo", x, self.kernel) + self.bias[None])


@keras.saving.register_keras_serializable(package="baseline")
class BinPool(keras.layers.Layer):
    """Non-overlapping ``mean`` or ``max`` pooling by `size` along the length axis (-2)."""

    def __init__(self, size: int, reduce: str = "max", **kwargs):
        super().__init__(**kwargs)
        if reduce not in ("mean", "max"):
            raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
        self.size, self.reduce = int(size), reduce

    def call(self, x):
        n = x.shape[-2] // self.size
        shape = (-1, *x.shape[1:-2], n, self.size, x.shape[-1])
        return getattr(ops, self.reduce)(ops.reshape(x[..., :n * self.size, :], shape), axis=-2)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "reduce": self.reduce}


def build_cnn(n_inputs: int, widths: tuple[int, int, int] = (64, 32, 64), learning_rate: float = 0.01, pool: int = 0,
              members: int = 1, padding: str = "same") -> keras.Model:
    """`cnn.build_cnn` before issue 16: the same CNNs with separate max-pooling layers and a
    Flatten, activations (batch, members, ...), compiled with the NaN-masked loss."""
    nf1, nf2, nu = widths
    inputs = keras.Input((n_inputs, 1))
    x = BinPool(8, "mean", name="bin8")(inputs) if pool else inputs
    for filters, name in ((nf1, "conv1"), (nf2, "conv2")):
        x = MemberConv1D(members, filters, padding=padding, name=name)(x)
        if pool:
            x = BinPool(pool, "max", name=f"pool_{name}")(x)
    x = keras.layers.Reshape((members, -1), name="flatten")(x)
    for width, name in ((256, "dense256"), (128, "dense128"), (nu, "tuned"), (1, "out")):
        x = MemberDense(members, width, activation=None if name == "out" else "relu", name=name)(x)
    model = keras.Model(inputs, keras.layers.Reshape((members,), name="members")(x))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=masked_mse)
    return model


def train_ensemble(x: np.ndarray, y: np.ndarray, s: CNNSettings, seed: int, pool: int = 0,
                   parameters: tuple[str, ...] = PARAMETERS, progress: bool = False) -> Ensemble:
    """`cnn.train_ensemble` before issue 16: masked shared batches, Keras `fit` (the same
    scaling, splits and assembly as today's: `cnn.setup_ensemble`, `cnn.assemble_ensemble`)."""
    scaler, xs, mean, std, member_splits, groups = setup_ensemble(x, y, s, seed, parameters)
    models, hists = [], []
    keras.utils.set_random_seed(seed)
    for widths, params in groups.items():
        y_train = np.full((len(y), len(params) * s.n_per_model), np.nan, np.float32)
        y_val = y_train.copy()
        for i, p in enumerate(params):
            yp = (y[:, parameters.index(p)] - mean[p]) / std[p]
            for k, (tr, _) in enumerate(member_splits[p]):
                fit_rows, val = validation_slice(tr, s.patience, seed + k)
                y_train[fit_rows, i * s.n_per_model + k] = yp[fit_rows]
                if val:
                    y_val[val[0], i * s.n_per_model + k] = yp[val[0]]
        model = build_cnn(x.shape[1], widths, s.learning_rate, pool, y_train.shape[1], s.padding)
        hists.append(history(model.fit(xs, y_train, validation_data=(xs, y_val) if s.patience else None,
                                       epochs=s.epochs, batch_size=s.batch_size, shuffle=True, verbose=0,
                                       callbacks=callbacks(s.patience, progress, "CNN ensemble"))))
        models.append((tuple(params), model))
    return assemble_ensemble(KerasEnsemble, x, y, scaler, mean, std, models, hists, member_splits, parameters)
