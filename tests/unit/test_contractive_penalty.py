"""The published contractive loss, computed by hand in NumPy after training steps.

Expected value: the authors' formula (autoencoder_training.py:17-36, see the package's
``published_method.json``), loss = MSE + 1e-4 * mean over the batch of
sum_j [h_j (1 - h_j)]^2 * sum_i W_ij^2, with h the bottleneck's (ReLU) activations and W the
bottleneck kernel *as copied when the loss was built* (`ContractiveDense.refreeze`, called at
build time and by fine-tuning). After a few training steps the live kernel has moved away
from that copy, so the tests tell the two apart.
"""
import keras
import numpy as np
import pytest
from keras import ops

from carmenes_dtl import autoencoder as ae

LAM = 1e-4
#: float32 forward pass against float64 NumPy: measured 2e-8 (JAX and TensorFlow).
RTOL = 1e-6


def numpy_forward(model, x):
    """(bottleneck activations h, reconstruction) from the layers' weights, in float64."""
    a = x.astype(np.float64)
    for name in [f"enc_{i}" for i in range(1, 6)] + ["bottleneck"] + [f"dec_{i}" for i in range(1, 6)]:
        kernel, bias = model.get_layer(name).get_weights()[:2]
        a = np.maximum(a @ kernel + bias, 0.0)
        if name == "bottleneck":
            h = a
    kernel, bias = model.get_layer("reconstruction").get_weights()
    return h, 1 / (1 + np.exp(-(a @ kernel + bias)))


def published_penalty(h, w):
    """1e-4 x batch mean of sum_j [h_j (1 - h_j)]^2 sum_i W_ij^2."""
    return LAM * np.mean(np.sum((h * (1 - h)) ** 2 * np.sum(w.astype(np.float64) ** 2, axis=0), axis=1))


@pytest.fixture(scope="module")
def trained():
    """A small autoencoder (no L1, so the loss is MSE + penalty only) with seeded NumPy weights
    (the same start on every backend; biases 0.1 keep the ReLU units alive), its bottleneck
    kernel copied in as the loss's W (`refreeze`), then 8 Adam steps."""
    keras.utils.set_random_seed(2)
    model = ae.build_autoencoder(40, n_in=64, l1=0.0, latent=8, lam=LAM, penalty="sigmoid_frozen",
                                 learning_rate=0.01, l1_layers=())
    b = model.get_layer("bottleneck")
    assert np.array_equal(ops.convert_to_numpy(b.frozen_kernel), ops.convert_to_numpy(b.kernel))  # copied at build
    rng = np.random.default_rng(2)
    for layer in model.layers[1:]:
        fan_in, fan_out = layer.kernel.shape
        layer.kernel.assign(rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out)).astype("float32"))
        layer.bias.assign(np.full(fan_out, 0.1, "float32"))
    b.refreeze()
    copied = np.array(ops.convert_to_numpy(b.kernel))
    x = rng.random((64, 40)).astype("float32")
    model.fit(x, x, epochs=2, batch_size=16, shuffle=False, verbose=0)
    return model, copied, x


def test_published_penalty_uses_the_kernel_copied_at_build_time(trained):
    model, copied, x = trained
    live = np.array(ops.convert_to_numpy(model.get_layer("bottleneck").kernel))
    h, _ = numpy_forward(model, x)
    expected, with_live = published_penalty(h, copied), published_penalty(h, live)
    assert (h > 0).mean() > 0.1  # a living bottleneck: the penalty is not trivially 0
    assert abs(with_live / expected - 1) > 100 * RTOL  # the two kernels are far apart at this tolerance
    model(x)
    got = float(sum(ops.convert_to_numpy(v) for v in model.losses))
    assert got == pytest.approx(expected, rel=RTOL)


def test_published_loss_is_mse_plus_penalty(trained):
    """model.evaluate on one batch: the NumPy MSE plus the penalty with the copied kernel (measured
    agreement 5e-8; the penalty is 1.7e-4 of the loss, so leaving it out fails)."""
    model, copied, x = trained
    h, out = numpy_forward(model, x)
    mse, penalty = np.mean((out - x) ** 2), published_penalty(h, copied)
    assert penalty / mse > 100 * RTOL
    assert model.evaluate(x, x, batch_size=len(x), verbose=0) == pytest.approx(mse + penalty, rel=RTOL)


def test_refreeze_takes_the_current_kernel(trained):
    """`refreeze` (fine-tuning rebuilds the authors' loss) copies the live kernel in: the penalty
    then follows the trained W. Runs last on the module's model."""
    model, _, x = trained
    b = model.get_layer("bottleneck")
    b.refreeze()
    live = np.array(ops.convert_to_numpy(b.kernel))
    h, _ = numpy_forward(model, x)
    model(x)
    got = float(sum(ops.convert_to_numpy(v) for v in model.losses))
    assert got == pytest.approx(published_penalty(h, live), rel=RTOL)
