"""Training shared by every model: early-stopping slices and callbacks, data-parallel helpers,
and `fit`, `model.fit` as one compiled call (JAX backend; `model.fit` itself on the others).

Keras' `fit` returns to Python after every batch (JAX: one dispatch, one host copy of the
batch, one metrics update) and runs its callbacks after every epoch. For the small CNN
ensembles of the method that overhead is most of the time (`benchmarks/cnn_stage.py`).
`fit` here traces the model's own stateless train step (`model.stateless_call`, the
optimizer's `stateless_apply`) into one XLA program: a `lax.while_loop` over epochs, a
`lax.scan` over each epoch's shuffled batches (the last, partial batch as in Keras), the
validation pass and the `keras.callbacks.EarlyStopping(restore_best_weights=True)`
decision, all on the device. The data are copied to the device once. The only differences
from `model.fit` are the shuffling stream (a seeded NumPy generator instead of Keras'
global one) and float round-off.
"""
from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator

import keras
import numpy as np

from .environment import tensorflow_hidden

#: Fraction of a training part that steers early stopping when it is on.
EARLY_STOPPING_FRACTION = 0.1
#: Compiled runs by model architecture, optimizer, loss and loop settings: ensembles of the
#: same shape (several autoencoders, input spaces) share one compilation.
_COMPILED: dict[str, object] = {}


def forget_compiled() -> None:
    """Drop this process's compiled programs (a benchmark's runs each pay their own compilation)."""
    _COMPILED.clear()


def deterministic() -> None:
    """Under TensorFlow: deterministic ops, and no retracing notices of the many small models."""
    if keras.backend.backend() == "tensorflow":
        import logging

        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


def callbacks(patience: int | None, progress: bool, desc: str = "epochs") -> list:
    """Early stopping on the validation loss (best weights kept) unless `patience` is None, plus a progress bar."""
    cbs = [] if patience is None else [keras.callbacks.EarlyStopping(patience=patience, restore_best_weights=True)]
    if progress:
        from tqdm.keras import TqdmCallback

        cbs.append(TqdmCallback(verbose=0, desc=desc, leave=False))
    return cbs


def history(fit) -> dict[str, list[float]]:
    """A Keras `History` as plain floats (for JSON)."""
    return {k: [float(v) for v in vals] for k, vals in fit.history.items()}


def validation_slice(x: np.ndarray, patience: int | None, seed: int) -> tuple[np.ndarray, tuple | None]:
    """(rows to fit, Keras validation data): a seeded `EARLY_STOPPING_FRACTION` of `x` when
    early stopping is on (`patience` not None), else all of `x` and None.

    Seeded rather than Keras' own split, which takes the last rows (in a sorted grid, the
    hottest stars).
    """
    if patience is None:
        return x, None
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(EARLY_STOPPING_FRACTION * len(x))))
    return x[order[n_val:]], (x[order[:n_val]],) * 2


def data_parallel(batch_size: int):
    """A `keras.distribution.DataParallel` over every accelerator (`keras.distribution.list_devices()`):
    the model is replicated and each batch of `batch_size` split evenly among the devices.

    JAX backend only; `batch_size` must be a multiple of the number of devices.
    """
    if keras.backend.backend() != "jax":
        raise ValueError(f"data-parallel training needs the JAX backend (KERAS_BACKEND=jax), "
                         f"not {keras.backend.backend()!r}")
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise ValueError(f"data-parallel training splits each batch over the {len(devices)} devices: the batch "
                         f"size {batch_size} is not a multiple of {len(devices)}")
    return keras.distribution.DataParallel(devices=devices)


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)`` (Python, NumPy and Keras seeds) without importing an
    installed TensorFlow to seed it under another backend (`environment.tensorflow_hidden`)."""
    with tensorflow_hidden():
        keras.utils.set_random_seed(seed)


def initializer_seeds(seed: int | None) -> Iterator[int | None]:
    """The seeds a model's initializers draw one by one after ``set_random_seed(seed)`` (Keras draws
    ``random.randint(1, 10**9)`` from Python's `random` for each), drawn from a generator of their
    own: another thread drawing from Python's `random` meanwhile (a Dask worker's event loop does)
    cannot change the model. None each when `seed` is None (Keras draws then)."""
    rng = random.Random(seed)
    while True:
        yield None if seed is None else rng.randint(1, int(1e9))


@contextlib.contextmanager
def precision_policy(name: str):
    """Layers built inside compute in `name`: ``float32``, or ``bfloat16`` (Keras' mixed_bfloat16
    policy: bfloat16 arithmetic, float32 weights). The policy before is restored after."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if name == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def scope(dist):
    """The scope of the distribution `dist`; None: no distribution."""
    return contextlib.nullcontext() if dist is None else dist.scope()


def whole_batches(dist, x: np.ndarray | None) -> np.ndarray | None:
    """`x` cut to a multiple of `dist`'s device count, so that the last, partial batch of an
    epoch still splits evenly: at most ``devices - 1`` trailing rows dropped, none when `dist`
    (or `x`) is None."""
    if dist is None or x is None:
        return x
    n = int(np.prod(dist.device_mesh.shape))
    return x[:len(x) - len(x) % n]


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, validation: tuple | None, *, epochs: int, batch_size: int,
        patience: int | None, seed, shuffle: bool = True, progress: bool = False,
        desc: str = "epochs", members: int | None = None) -> dict[str, list[float]]:
    """Train the compiled `model` as ``model.fit(x, y, validation_data=validation, epochs=epochs,
    batch_size=batch_size, shuffle=True, callbacks=callbacks(patience))`` and return its history
    (``loss``, and ``val_loss`` with `validation`) as plain floats.

    `seed` (anything `numpy.random.default_rng` takes) draws the epochs' batch orders
    (`batch_orders`); ``shuffle=False`` keeps the rows in order, as Keras does. `members`:
    axis 1 of `x` and `y` holds that many independent models' own rows (`cnn.member_graph`),
    and each is shuffled with its own permutation per epoch (JAX; other backends shuffle
    the rows of all members alike).
    Early stopping watches ``val_loss`` with Keras' rules (the first epoch always
    improves; stop once `patience` epochs passed without a strictly lower value; restore
    the best epoch's weights at the end).
    """
    if keras.backend.backend() != "jax":
        fitted = model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                           verbose=0, callbacks=callbacks(patience, progress, desc))
        return history(fitted)
    order = (batch_orders(seed, len(x), epochs, members) if shuffle
             else np.tile(np.arange(len(x), dtype=np.int32), (epochs, 1)))
    return _fit_jax(model, x, y, validation, order, batch_size, patience, progress, desc)


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model.predict(x, batch_size=batch_size)``. On JAX, every batch is padded to `batch_size`
    rows and runs one jitted forward shared by all models of the same architecture: no new
    compilation for each model and each partial last batch, as `model.predict` does."""
    if keras.backend.backend() != "jax":
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    import jax

    key = json.dumps(["predict", _architecture(model), x.shape[1:], batch_size], default=str)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda tv, ntv, xb: model.stateless_call(tv, ntv, xb)[0])
    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    n = len(x)
    padded = np.concatenate([x, np.zeros((-n % batch_size, *x.shape[1:]), x.dtype)])
    out = [np.asarray(_COMPILED[key](*state, padded[i:i + batch_size])) for i in range(0, len(padded), batch_size)]
    return np.concatenate(out)[:n]


def _architecture(model: keras.Model) -> list:
    """Layer classes and configurations without names: equal for models built alike."""
    with tensorflow_hidden():  # a layer's config would import TensorFlow to check a type
        return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
                for layer in model.layers]


def batch_orders(seed, n: int, epochs: int, members: int | None = None) -> np.ndarray:
    """(epochs, n) row orders: one `permutation` of ``numpy.random.default_rng(seed)`` per epoch;
    with `members`, (epochs, n, members): one per epoch and member."""
    rng = np.random.default_rng(seed)
    orders = np.array([[rng.permutation(n) for _ in range(members or 1)] for _ in range(epochs)], np.int32)
    return orders[:, 0] if members is None else orders.transpose(0, 2, 1)


def _fit_jax(net, x, y, validation, order, batch_size, patience, progress, desc):
    import jax

    opt, loss = net.optimizer, net.loss
    if not opt.built:
        opt.build(net.trainable_variables)
    validate = validation is not None
    with tensorflow_hidden():  # serialising the optimizer would import TensorFlow to check a type
        key = json.dumps([_architecture(net), keras.optimizers.serialize(opt), str(loss), x.shape[1:], y.shape[1:],
                          batch_size, patience, validate, progress], default=str)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(_program(net, opt, loss, batch_size, patience, validate, progress))
    variables = (net.trainable_variables, net.non_trainable_variables, opt.variables)
    xv, yv = validation if validate else (x[:0], y[:0])
    if progress:
        from tqdm.auto import tqdm

        _BAR[0] = tqdm(total=len(order), desc=desc, leave=False)
    try:
        *values, losses, val_losses, n_run = _COMPILED[key](*([v.value for v in vs] for vs in variables),
                                                             x, y, xv, yv, order)
    finally:
        if _BAR[0] is not None:
            _BAR[0].close()
            _BAR[0] = None
    for vs, vals in zip(variables, values):
        for var, value in zip(vs, vals):
            var.assign(value)
    n_run = int(n_run)
    out = {"loss": [float(v) for v in np.asarray(losses)[:n_run]]}
    if validate:
        out["val_loss"] = [float(v) for v in np.asarray(val_losses)[:n_run]]
    return out


#: The open progress bar of the run in flight (updated from the device by `jax.debug.callback`).
_BAR: list = [None]


def _tick(_epoch) -> None:
    if _BAR[0] is not None:
        _BAR[0].update(1)


def _program(net, opt, loss, batch_size: int, patience: int | None, validate: bool, progress: bool):
    """The whole training run of `net` (optimizer `opt`, `loss`) as a pure function of its
    variables, data and batch orders."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    loss_fn = keras.losses.get(loss)
    stopping = validate and patience is not None

    def total_loss(tv, ntv, xb, yb, training):
        pred, ntv, extra = net.stateless_call(tv, ntv, xb, training=training, return_losses=True)
        value = jnp.mean(loss_fn(yb, pred))
        return (value + sum(extra) if extra else value), ntv

    grad = jax.value_and_grad(total_loss, has_aux=True)

    def mean_over_batches(f, carry, xs):
        """Keras' epoch mean: `f` on full batches of `xs` and on the partial rest, weighted by rows."""
        n = len(jax.tree.leaves(xs)[0])
        full = n // batch_size
        carry, losses = lax.scan(f, carry, jax.tree.map(
            lambda a: a[:full * batch_size].reshape(full, batch_size, *a.shape[1:]), xs))
        total = losses.sum() * batch_size
        if n > full * batch_size:
            carry, rest = f(carry, jax.tree.map(lambda a: a[full * batch_size:], xs))
            total = total + rest * (n - full * batch_size)
        return carry, total / n

    def run(tv, ntv, ov, x, y, xv, yv, order):
        def train_step(carry, idx):
            tv, ntv, ov = carry
            if idx.ndim == 2:  # (batch, members): each member's own rows
                xb = jnp.take_along_axis(x, idx.reshape(*idx.shape, *(1,) * (x.ndim - 2)), axis=0)
                yb = jnp.take_along_axis(y, idx, axis=0)
            else:
                xb, yb = x[idx], y[idx]
            (value, ntv), g = grad(tv, ntv, xb, yb, True)
            tv, ov = opt.stateless_apply(ov, g, tv)
            return (tv, ntv, ov), value

        def val_step(carry, batch):
            return carry, total_loss(*carry, *batch, False)[0]

        def epoch(state):
            e, tv, ntv, ov, best, best_val, wait, _, hist, val_hist = state
            (tv, ntv, ov), value = mean_over_batches(train_step, (tv, ntv, ov), order[e])
            hist = hist.at[e].set(value)
            stop = jnp.bool_(False)
            if validate:
                _, val = mean_over_batches(val_step, (tv, ntv), (xv, yv))
                val_hist = val_hist.at[e].set(val)
            if stopping:  # keras.callbacks.EarlyStopping.on_epoch_end, min_delta 0, no baseline
                better = (e == 0) | (val < best_val)
                best = jax.tree.map(lambda b, c: jnp.where(better, c, b), best, (tv, ntv))
                best_val = jnp.where(better, val, best_val)
                wait = jnp.where(better, 0, wait + 1)
                stop = ~better & (wait >= patience) & (e > 0)
            if progress:
                jax.debug.callback(_tick, e)
            return e + 1, tv, ntv, ov, best, best_val, wait, stop, hist, val_hist

        epochs = order.shape[0]
        nan = jnp.full((epochs,), jnp.nan, jnp.float32)
        state = (jnp.int32(0), tv, ntv, ov, (tv, ntv), jnp.float32(jnp.inf), jnp.int32(0), jnp.bool_(False), nan, nan)
        e, tv, ntv, ov, best, _, _, _, hist, val_hist = lax.while_loop(
            lambda s: (s[0] < epochs) & ~s[7], epoch, state)
        if stopping:  # on_train_end: the best epoch's weights
            tv, ntv = best
        return tv, ntv, ov, hist, val_hist, e

    return run
