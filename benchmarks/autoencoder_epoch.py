"""Seconds per epoch of the paper-size autoencoder (n_in = 2048, batch 128).

Baseline, in the same process and backend: a straightforward Keras 3 port of the
reference code, whose contractive loss is a closure over the bottleneck weights read once
at compile time (`K.variable(model.get_layer(...).get_weights()[0])`) and the sigmoid
derivative h(1 - h). Keras 3 cannot reference an intermediate tensor in a loss closure,
so the port exposes the code as a second output with a zero target.

Against the machine: the sustained rate of a large float32 matrix product on the same
backend (the practical peak) and the autoencoder's achieved rate, 6 x parameters x
spectra per epoch (forward 2, backward 4 floating-point operations per weight and
spectrum), as a fraction of it, for the quick (n_in = 256, 384) and paper (2048) sizes.

    KERAS_BACKEND=jax python benchmarks/autoencoder_epoch.py [N_SPECTRA]
"""
import sys
import time

from carmenes_dtl import autoencoder  # first: it picks the default backend

import keras
import numpy as np
from keras import ops


def reference_model(n_features=3501, n_in=2048, lam=1e-4, l1=1e-7):
    x = inputs = keras.Input((n_features,))
    for i, w in enumerate(autoencoder.layer_sizes(n_in), 1):
        x = keras.layers.Dense(w, activation="relu", activity_regularizer=keras.regularizers.L1(l1))(x)
    bottleneck = keras.layers.Dense(32, activation="relu", name="encoded")
    h = bottleneck(x)
    y = h
    for w in reversed(autoencoder.layer_sizes(n_in)):
        y = keras.layers.Dense(w, activation="relu")(y)
    out = keras.layers.Dense(n_features, activation="sigmoid")(y)
    model = keras.Model(inputs, [out, h])
    w2 = ops.sum(ops.convert_to_tensor(bottleneck.get_weights()[0]) ** 2, axis=0)  # read once, as in the reference

    def contractive(_, code):
        dh = code * (1 - code)
        return lam * ops.sum(dh ** 2 * w2, axis=1)

    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=["mse", contractive])
    return model


def seconds_per_epoch(model, x, epochs=2):
    y = x if len(model.outputs) == 1 else [x, np.zeros((len(x), 32), "float32")]
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)  # compile / warm-up
    t = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    return (time.perf_counter() - t) / epochs


def matmul_rate(n=2048, repeats=10, rounds=3):
    """Sustained GFLOP/s of (n x n) @ (n x n) float32 products, best of `rounds` runs of `repeats`."""
    rng = np.random.default_rng(0)
    a, b = (ops.convert_to_tensor(rng.random((n, n), dtype=np.float32)) for _ in range(2))
    ops.convert_to_numpy(ops.matmul(a, b)[0, 0])  # warm-up
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        c = a
        for _ in range(repeats):
            c = ops.matmul(c, b) * (1.0 / n)  # chained, so nothing can be skipped or overlapped away
        ops.convert_to_numpy(c[0, 0])
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * repeats / best / 1e9


def main(n=1024):
    n = int(n)
    x = np.random.default_rng(0).random((n, 3501)).astype("float32")
    print(f"backend {keras.backend.backend()}, {n} spectra x 3501, batch 128")
    for n_in in (256, 384, 2048):  # the peak measured just before and after each model: load changes hit both
        before = matmul_rate()
        ours = seconds_per_epoch(autoencoder.build_autoencoder(3501, n_in), x)
        peak = (before + matmul_rate()) / 2
        rate = 6 * autoencoder.parameter_count(3501, n_in) * n / ours / 1e9
        print(f"autoencoder n_in={n_in}: {ours:.3f} s/epoch, {rate:.0f} GFLOP/s = {rate / peak:.0%} of the "
              f"float32 matmul peak measured around it ({peak:.0f} GFLOP/s)")
    ref = seconds_per_epoch(reference_model(), x)
    print(f"reference port, n_in=2048: {ref:.2f} s/epoch; ratio to carmenes-dtl {ref / ours:.2f}")
    print(f"per 22,933 spectra (n_in=2048): {ours * 22933 / n:.0f} s/epoch")


if __name__ == "__main__":
    main(*sys.argv[1:])
