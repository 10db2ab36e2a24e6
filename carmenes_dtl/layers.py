"""The package's custom Keras objects, registered with Keras when this module is imported.

Every module that opens saved models imports this one (`autoencoder.load`), so
``keras.saving.load_model`` finds them; elsewhere, ``import carmenes_dtl.layers`` first.
Registered as ``carmenes_dtl>Name``, the names saved ``.keras`` files refer to.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .config import OPTIONS


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class ContractiveDense(keras.layers.Dense):
    """Bottleneck layer that adds the contractive penalty to the model's losses.

    ``penalty="relu"``: h = relu(xW + b), ∂h_j/∂x_i = 1[z_j > 0] W_ij, so
    ||J||²_F = Σ_j 1[z_j > 0] Σ_i W_ij², with the weights of the current step.
    ``penalty="sigmoid_frozen"`` reproduces the original Keras code: derivative h(1 - h)
    (a sigmoid's, although the layer is ReLU) and a copy of W frozen when the model is
    built, so the penalty does not follow W while it trains; `refreeze` copies the current
    W in again (fine-tuning does, so its penalty starts from the trained weights).
    """

    def __init__(self, units, lam: float = 1e-4, penalty: str = "sigmoid_frozen", **kwargs):
        kwargs.setdefault("activation", "relu")
        super().__init__(units, **kwargs)
        if penalty not in OPTIONS["penalty"]:
            raise ValueError(f"penalty must be one of {OPTIONS['penalty']}, got {penalty!r}")
        self.lam, self.penalty = float(lam), penalty

    def build(self, input_shape):
        super().build(input_shape)
        if self.penalty == "sigmoid_frozen":
            self.frozen_kernel = self.add_weight(shape=self.kernel.shape, initializer="zeros",
                                                 trainable=False, name="frozen_kernel")
            self.refreeze()

    def refreeze(self):
        """``sigmoid_frozen``: copy the current kernel into the frozen one (a copy, not a shared buffer)."""
        if self.penalty == "sigmoid_frozen":
            self.frozen_kernel.assign(ops.convert_to_numpy(self.kernel))

    def jacobian_norm(self, inputs):
        """Per-sample ||∂h/∂x||²_F."""
        z = ops.add(ops.matmul(inputs, self.kernel), self.bias)
        if self.penalty == "relu":
            d2 = ops.cast(ops.greater(z, 0), z.dtype)
            w2 = ops.sum(ops.square(self.kernel), axis=0)
        else:
            h = self.activation(z)
            d2 = ops.square(h * (1 - h))
            w2 = ops.sum(ops.square(self.frozen_kernel), axis=0)
        return ops.sum(d2 * w2, axis=1)

    def call(self, inputs):
        self.add_loss(self.lam * ops.mean(ops.cast(self.jacobian_norm(inputs), "float32")))
        return super().call(inputs)

    # Dense saves only kernel and bias; the generic Layer methods keep the frozen kernel too.
    save_own_variables = keras.layers.Layer.save_own_variables
    load_own_variables = keras.layers.Layer.load_own_variables

    def get_config(self):
        return {**super().get_config(), "lam": self.lam, "penalty": self.penalty}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class FloatL1(keras.regularizers.L1):
    """L1 activity penalty summed in float32: under mixed precision Keras' own L1 returns
    bfloat16, which TensorFlow refuses to add to the float32 loss."""

    def __call__(self, x):
        return super().__call__(ops.cast(x, "float32"))


def _glorot(fan_in: int, fan_out: int, seed: int | None):
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return keras.initializers.RandomUniform(-limit, limit, seed)


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MemberConv1D(keras.layers.Layer):
    """`members` independent Conv1D layers (stride 1), members first.

    Input (batch, length, channels) is shared by all members (a star seen by every CNN);
    (members, batch, length, channels) gives each member its own rows (training, `member_graph`).
    Output: (members, batch, length', filters), with length' = length - k + 1
    (``padding="valid"``) or length (``"same"``: zeros after the end, k - 1 - (k - 1) // 2 of
    them, and (k - 1) // 2 before, as Keras does); with `pool` > 0, max-pooled by `pool`
    (non-overlapping, a partial last bin dropped) after the activation.
    One input channel, unpooled: one product of the k shifted inputs (so is its weight
    gradient); pooled: each tap an outer product, the pooled output recomputed at each bin's
    maximum (ReLU is monotonic, so the same values), which makes the gradient a function of
    the pooled positions only instead of the whole unpooled tensor (the direct CNN: 20
    members x 64 filters x 437 pixels per row).
    More channels: all taps are one batched matrix product over the unshifted input, and the
    taps' outputs (the smaller tensor) are shifted and summed.
    """

    def __init__(self, members: int, filters: int, kernel_size: int = 2, activation="relu", padding: str = "same",
                 pool: int = 0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        if padding not in OPTIONS["padding"]:
            raise ValueError(f"padding must be one of {OPTIONS['padding']}, got {padding!r}")
        self.members, self.filters, self.kernel_size, self.padding = members, filters, kernel_size, padding
        self.pool = int(pool)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.members, self.kernel_size, c, self.filters), name="kernel",
                                      initializer=_glorot(self.kernel_size * c, self.kernel_size * self.filters, self.seed))
        self.bias = self.add_weight(shape=(self.members, self.filters), initializer="zeros", name="bias")

    def call(self, x):
        m, k, f = self.members, self.kernel_size, self.filters
        shared = len(x.shape) == 3
        length, c = x.shape[-2], x.shape[-1]
        before = (k - 1) // 2 if self.padding == "same" else 0
        n = length if self.padding == "same" else length - k + 1
        out = self.bias[:, None, None, :]
        if c == 1:  # out[l] = sum_j x[l + j - before] * w_j
            x = ops.pad(x[None] if shared else x, [(0, 0), (0, 0), (before, n + k - 1 - before - length), (0, 0)])
            if not self.pool:  # the k shifted inputs side by side: one product, whose weight gradient is one too
                shifted = ops.concatenate([x[:, :, j:j + n, :] for j in range(k)], axis=-1)
                return self.activation(ops.einsum("blj,mjf->mblf" if shared else "mblj,mjf->mblf",
                                                  shifted[0] if shared else shifted, self.kernel[:, :, 0, :]) + out)
            # outer products, not the product above: XLA fuses them into the search for each bin's
            # maximum (the direct CNN's train step: 180-190 ms, against 220-235 ms with the product)
            taps = [self.kernel[:, j, 0][:, None, None, :] for j in range(k)]
            full = sum((x[:, :, j:j + n, :] * taps[j] for j in range(k)), out)
            at = ops.argmax(self._bins(ops.stop_gradient(full)), axis=3)  # (m, batch, bins, f)
            at = at + ops.arange(at.shape[2])[:, None] * self.pool
            return self.activation(sum((ops.take_along_axis(x, at + j, axis=2) * taps[j] for j in range(k)), out))
        taps = ops.reshape(ops.transpose(self.kernel, (0, 2, 1, 3)), (m, c, k * f))  # [m, c, (tap, filter)]
        z = ops.einsum("blc,mcg->mblg" if shared else "mblc,mcg->mblg", x, taps)
        z = ops.reshape(z, (m, -1, length, k, f))
        for j in range(k):  # out[l] = sum_j z_j[l + j - before], zero outside the input
            start, stop = max(0, j - before), min(length, n + j - before)
            lo = max(0, before - j)
            part = z[:, :, start:stop, j, :]
            hi = n - lo - (stop - start)
            out = out + (ops.pad(part, [(0, 0), (0, 0), (lo, hi), (0, 0)]) if lo or hi else part)
        out = self.activation(out)
        return ops.max(self._bins(out), axis=3) if self.pool else out

    def _bins(self, t):
        """(members, batch, length, f) -> (members, batch, bins, pool, f), a partial last bin dropped."""
        bins = t.shape[2] // self.pool
        return ops.reshape(t[:, :, :bins * self.pool], (self.members, -1, bins, self.pool, t.shape[3]))

    def get_config(self):
        return {**super().get_config(), "members": self.members, "filters": self.filters,
                "kernel_size": self.kernel_size, "padding": self.padding, "pool": self.pool,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MemberDense(keras.layers.Layer):
    """`members` independent Dense layers, members first: (members, batch, ...) -> (members, batch,
    units); trailing axes are flattened (a member's Flatten), ``out=True`` returns (batch, members)
    from a one-unit layer."""

    def __init__(self, members: int, units: int, activation=None, out: bool = False, seed: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.members, self.units, self.out, self.seed = members, units, out, seed
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        n_in = int(np.prod(input_shape[2:]))
        self.kernel = self.add_weight(shape=(self.members, n_in, self.units), name="kernel",
                                      initializer=_glorot(n_in, self.units, self.seed))
        self.bias = self.add_weight(shape=(self.members, self.units), initializer="zeros", name="bias")

    def call(self, x):
        if len(x.shape) > 3:
            x = ops.reshape(x, (self.members, -1, int(np.prod(x.shape[2:]))))
        y = self.activation(ops.einsum("mbi,mio->mbo", x, self.kernel) + self.bias[:, None])
        return ops.transpose(y[..., 0]) if self.out else y

    def get_config(self):
        return {**super().get_config(), "members": self.members, "units": self.units, "out": self.out,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class BinPool(keras.layers.Layer):
    """Non-overlapping mean over bins of `size` along the length axis (-2); a partial last bin is dropped."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        n = x.shape[-2] // self.size
        return ops.mean(ops.reshape(x[..., :n * self.size, :], (-1, n, self.size, x.shape[-1])), axis=-2)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MembersFirst(keras.layers.Layer):
    """(batch, members, ...) -> (members, batch, ...): a training batch holding one row per member."""

    def call(self, x):
        return ops.swapaxes(x, 0, 1)


@keras.saving.register_keras_serializable(package="carmenes_dtl")
def members_mse(y_true, y_pred):
    """Per row, the sum over members of their squared errors: averaged over a batch, the sum of
    the members' own MSE, so each member's gradient is that of its own Keras fit."""
    return ops.sum(ops.square(y_true - y_pred), axis=-1)
