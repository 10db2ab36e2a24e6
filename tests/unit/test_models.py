"""Autoencoder, contractive penalty, fine-tuning and CNN ensembles (small, seeded)."""

import keras
import numpy as np
import pytest
from keras import ops

from carmenes_dtl import autoencoder as ae
from carmenes_dtl import cnn, transfer
from carmenes_dtl.config import AESettings, CNNSettings, FineTuneSettings

#: Small-test CNN settings: standardised inputs and targets train in a few epochs.
FAST = dict(inputs="standardised", targets="standardised", widths=tuple((p, 64, 32, 16) for p in cnn.PARAMETERS))


def autodiff_jacobian_norm(layer, x):
    """Per-sample ||dh/dx||_F^2 by the backend's own autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jac = jax.vmap(jax.jacrev(lambda v: layer(v[None])[0]))(x)
    elif backend == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            h = layer(xt)
        jac = tape.batch_jacobian(h, xt)
    else:
        pytest.skip(f"no Jacobian helper for backend {backend}")
    return np.sum(np.asarray(jac) ** 2, axis=(1, 2))


def weight_gradients(layer, loss):
    """Gradients of ``loss(apply)`` with respect to `layer`'s trainable variables, ``apply(x)``
    being the layer's output, by the backend's own autodiff (no backend drops out silently)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        weights = [v.value for v in layer.trainable_variables]
        return jax.grad(lambda w: loss(lambda x: layer.stateless_call(w, [], x)[0]))(weights)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(layer)
        return tape.gradient(value, layer.trainable_variables)
    raise NotImplementedError(f"no gradient helper for backend {backend}")


@pytest.mark.parametrize("penalty", ["relu"])
def test_penalty_equals_autodiff_jacobian_norm(penalty):
    keras.utils.set_random_seed(0)
    layer = ae.ContractiveDense(16, lam=1.0, penalty=penalty)
    x = np.random.default_rng(0).normal(size=(8, 24)).astype("float32")
    layer.build(x.shape)
    ours = np.asarray(ops.convert_to_numpy(layer.jacobian_norm(x)))
    ref = autodiff_jacobian_norm(layer, x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)
    layer(x)  # the penalty the model adds: lam x mean over the batch
    assert float(ops.convert_to_numpy(layer.losses[-1])) == pytest.approx(float(ref.mean()), rel=1e-4)


def test_sigmoid_frozen_variant_keeps_initial_weights():
    keras.utils.set_random_seed(1)
    model = ae.build_autoencoder(60, n_in=32, latent=4, penalty="sigmoid_frozen", learning_rate=1e-2)
    frozen0 = ops.convert_to_numpy(model.get_layer("bottleneck").frozen_kernel).copy()
    x = np.random.default_rng(1).random((64, 60)).astype("float32")
    model.fit(x, x, epochs=2, batch_size=16, verbose=0)
    b = model.get_layer("bottleneck")
    assert np.array_equal(ops.convert_to_numpy(b.frozen_kernel), frozen0)
    assert not np.array_equal(ops.convert_to_numpy(b.kernel), frozen0)


def test_finetune_takes_a_fresh_frozen_kernel_from_the_trained_weights(tmp_path):
    """As the authors' loss is rebuilt on the loaded model, the frozen W is the trained kernel."""
    keras.utils.set_random_seed(1)
    model = ae.build_autoencoder(60, n_in=32, latent=4, learning_rate=1e-2)
    x = np.random.default_rng(1).random((64, 60)).astype("float32")
    model.fit(x, x, epochs=2, batch_size=16, verbose=0)
    path = ae.save(model, tmp_path / "m.keras", {})
    b = ae.load(path).get_layer("bottleneck")
    assert np.array_equal(ops.convert_to_numpy(b.frozen_kernel),
                          ops.convert_to_numpy(model.get_layer("bottleneck").frozen_kernel))
    s = FineTuneSettings(learning_rate=1e-2, epochs=1, batch_size=16)
    tuned, _ = transfer.finetune(path, x[:40], x[:10], s, seed=0)
    trained = ops.convert_to_numpy(model.get_layer("bottleneck").kernel)
    frozen = ops.convert_to_numpy(tuned.get_layer("bottleneck").frozen_kernel)
    assert np.array_equal(frozen, trained)
    assert not np.array_equal(ops.convert_to_numpy(tuned.get_layer("bottleneck").kernel), trained)


def test_l1_on_encoder_2_to_5_and_decoder_1_to_5_only():
    """autoencoder_training.py:49-63: no L1 on encoder 1, the bottleneck or the output."""
    from carmenes_dtl.config import PROFILES

    model = ae.build_autoencoder(100, n_in=64, l1=1e-7, l1_layers=PROFILES["paper"].ae.l1_layers)
    with_l1 = {layer.name for layer in model.layers
               if getattr(layer, "activity_regularizer", None) is not None
               and float(layer.activity_regularizer.l1) == pytest.approx(1e-7)}
    assert with_l1 == {"enc_2", "enc_3", "enc_4", "enc_5", "dec_1", "dec_2", "dec_3", "dec_4", "dec_5"}
    assert model.get_layer("enc_1").activity_regularizer is None
    assert model.get_layer("bottleneck").activity_regularizer is None
    assert model.get_layer("reconstruction").activity_regularizer is None
    with pytest.raises(ValueError, match="enc_9"):
        ae.build_autoencoder(100, n_in=64, l1_layers=("enc_9",))


def test_paper_size_parameter_count():
    model = ae.build_autoencoder(3501, n_in=2048)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == ae.parameter_count(3501, 2048) == 25_118_669
    assert model.count_params() - trainable == 256 * 32  # the published penalty's frozen copy of W
    assert [model.get_layer(f"enc_{i}").units for i in range(1, 6)] == [2048, 1536, 1024, 512, 256]
    assert model.get_layer("bottleneck").units == 32
    assert model.get_layer("reconstruction").activation.__name__ == "sigmoid"


@pytest.fixture(scope="module")
def spectra():
    """Normalised demo-model spectra (synthetic and 'observed'), 300 pixels."""
    from carmenes_dtl import demo_lines, preprocess
    from carmenes_dtl.demo_gap import GapMix

    rng = np.random.default_rng(0)
    wave = preprocess.log_grid(8805, 8812, 0.5)[:300]
    syn_m, obs_m = demo_lines.LineModel(), demo_lines.LineModel(GapMix.parse("paper"))
    params = np.column_stack([rng.uniform(3000, 4200, 160), rng.uniform(4.7, 5.2, 160), rng.uniform(-0.5, 0.3, 160)])
    norm = lambda f: (f / f.max()).astype("float32")  # noqa: E731
    syn = np.array([norm(syn_m.flux(wave, *p)) for p in params])
    obs = np.array([norm(obs_m.flux(wave, *p)) for p in params[:40]])
    return syn, obs, params


def test_training_reduces_loss_and_save_load_round_trip(spectra, tmp_path):
    syn, _, _ = spectra
    s = AESettings(latent_dim=8, epochs=15, batch_size=32, learning_rate=1e-3, patience=20)
    model, hist = ae.train(syn, 64, 1e-7, s, seed=0)
    assert len(hist["val_loss"]) <= 15
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert np.isfinite(hist["val_loss"]).all()
    path = ae.save(model, tmp_path / "m.keras", {"n_in": 64})
    again = ae.load(path)
    np.testing.assert_array_equal(model.predict(syn[:10], verbose=0), again.predict(syn[:10], verbose=0))
    assert ae.encode(again, syn[:5]).shape == (5, 8)


def test_finetune_freezes_first_layers_bit_identical(spectra, tmp_path):
    syn, obs, _ = spectra
    s = AESettings(latent_dim=8, epochs=5, batch_size=32, learning_rate=1e-3)
    model, _ = ae.train(syn, 64, 1e-7, s, seed=0)
    path = ae.save(model, tmp_path / "m.keras", {})
    tuned, report = transfer.finetune(path, obs, syn[:50], FineTuneSettings(learning_rate=1e-3, epochs=5, batch_size=32),
                                      seed=0)
    for i in range(1, 5):
        for w0, w1 in zip(model.get_layer(f"enc_{i}").get_weights(), tuned.get_layer(f"enc_{i}").get_weights()):
            assert np.array_equal(w0, w1)
    changed = [not np.array_equal(a, b) for a, b in zip(model.get_layer("enc_5").get_weights(),
                                                           tuned.get_layer("enc_5").get_weights())]
    assert any(changed)
    assert report["after"]["mse_observed_test"] < report["before"]["mse_observed_test"]
    assert report["frozen_layers"] == ["enc_1", "enc_2", "enc_3", "enc_4"]
    assert len(report["history"]["loss"]) == 5 and "val_loss" not in report["history"]  # published: no early stopping
    assert report["split_seed"] == 42  # published: random_state 42 for every autoencoder


def test_finetune_early_stopping_never_selects_on_the_reported_split(spectra, tmp_path, monkeypatch):
    from sklearn.model_selection import train_test_split

    syn, obs, _ = spectra
    s = AESettings(latent_dim=8, epochs=3, batch_size=32, learning_rate=1e-3, patience=2)
    model, _ = ae.train(syn, 64, 1e-7, s, seed=0)
    path = ae.save(model, tmp_path / "m.keras", {})
    seen = {}
    fit = keras.Model.fit

    def spy(self, x, y=None, validation_data=None, **kw):
        seen["fit"], seen["val"] = x, validation_data[0]
        return fit(self, x, y, validation_data=validation_data, **kw)

    monkeypatch.setattr(keras.Model, "fit", spy)
    ft = FineTuneSettings(learning_rate=1e-3, epochs=4, batch_size=32, split_seed=None, patience=2)
    tuned, report = transfer.finetune(path, obs, syn[:50], ft, seed=3)
    _, reported = train_test_split(obs, test_size=0.2, random_state=3)  # the 80/20 split, seeded by the stage
    rows = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert rows(seen["val"]) and not rows(seen["val"]) & rows(reported)
    assert not rows(seen["fit"]) & (rows(reported) | rows(seen["val"]))
    assert report["after"]["mse_observed_test"] == pytest.approx(ae.reconstruction_mse(tuned, reported), rel=1e-6)


def test_grid_search_ranks_every_point(spectra):
    """An L1 of 10 on every activation silences the network: that point must rank last."""
    syn, _, _ = spectra
    s = AESettings(n_in_grid=(32, 64), l1_grid=(1e-7, 10.0), latent_dim=4, search_epochs=4, batch_size=32,
                   learning_rate=1e-2, cv_folds=2)
    rows = ae.grid_search(syn, s, seed=0)
    assert sorted((r["n_in"], r["l1"]) for r in rows) == [(32, 1e-7), (32, 10.0), (64, 1e-7), (64, 10.0)]
    assert [r["cv_mse"] for r in rows] == sorted(r["cv_mse"] for r in rows)
    assert [r["l1"] for r in rows] == [1e-7, 1e-7, 10.0, 10.0]
    assert rows[2]["cv_mse"] > 5 * rows[1]["cv_mse"]


def test_search_fit_reusing_the_last_model_equals_a_fresh_build(spectra):
    """A second fold of the same grid point reuses the model (reset, not rebuilt): its
    history and weights are those of a fresh `train` on that fold."""
    syn, _, _ = spectra
    s = AESettings(latent_dim=4, search_epochs=3, batch_size=32, learning_rate=1e-2)
    reuse = {}
    ae.train(syn[:80], 32, 1e-7, s, seed=2, search=True, reuse=reuse)
    model, hist = ae.train(syn[80:], 32, 1e-7, s, seed=2, search=True, reuse=reuse)
    assert model is reuse["model"]
    fresh, expected = ae.train(syn[80:], 32, 1e-7, s, seed=2, search=True)
    # float32 sums in another order on another CPU differ by ~1e-5; a model not reset starts from
    # its trained weights, and its first loss is several times lower
    np.testing.assert_allclose(hist["loss"], expected["loss"], rtol=1e-4)
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    other, _ = ae.train(syn[80:], 32, 1e-6, s, seed=2, search=True, reuse=reuse)
    assert other is not model and reuse["model"] is other


def test_cnn_ensemble_learns_and_is_deterministic(spectra):
    syn, _, params = spectra
    x = syn[:, ::10]
    y = np.column_stack([params[:, 0], params[:, 2]])
    s = CNNSettings(n_per_model=3, epochs=30, learning_rate=3e-3, batch_size=32, split="per_member", **FAST)
    e1 = cnn.train_ensemble(x, y, s, seed=5, parameters=("teff", "mh"))
    e2 = cnn.train_ensemble(x, y, s, seed=5, parameters=("teff", "mh"))
    p1, p2 = e1.member_predictions(x), e2.member_predictions(x)
    np.testing.assert_allclose(p1["teff"], p2["teff"], rtol=1e-5)
    assert p1["teff"].shape == (3, len(x))
    assert np.mean(np.abs(np.median(p1["teff"], 0) - params[:, 0])) < 0.5 * np.std(params[:, 0])
    held_by_any = set().union(*(set(te) for _, te in cnn.splits(y[:, 1], s, 5)))
    assert e1.residuals["mh"].shape == (len(held_by_any),)  # one residual per row some member held out


def test_summarise_percentile_definition():
    """Worked by hand: percentiles of n = 11 sorted values sit at ranks 0.16 x 10 = 1.6 and 8.4.

    Residuals (one member predicting 10): -10 -6 -2 -1 0 0 1 1 2 3 4, draws 0 4 8 9 10 10 11
    11 12 13 14: P16 = 4 + 0.6 x 4 = 6.4, P84 = 12 + 0.4 x 1 = 12.4, so e = 3.6, E = 2.4.
    Members 0..8, 20, 40: median 5, P16 = 1.6, P84 = 8 + 0.4 x 12 = 12.8: e = 3.4, E = 7.8.
    Members 8, 10, 30 (median 10) with residuals -2 0 1 2 4 (median 1): draws 8 10 11 12 14,
    re-centred on 10: 7 9 10 11 13; ranks 0.64 and 3.36: P16 = 8.28, P84 = 11.72, e = E = 1.72
    (the members' spread, 8 to 30, is not added: the residuals already hold it).
    """
    resid = np.array([-10.0, -6, -2, -1, 0, 0, 1, 1, 2, 3, 4])
    med, lo, hi = cnn.summarise(np.array([[10.0]]), resid)[0]
    assert (med, lo, hi) == pytest.approx((10.0, 3.6, 2.4))
    members = np.array([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 20, 40])[:, None]
    assert tuple(cnn.summarise(members)[0]) == pytest.approx((5.0, 3.4, 7.8))
    spread = np.array([8.0, 10, 30])[:, None]
    assert tuple(cnn.summarise(spread, np.array([-2.0, 0, 1, 2, 4]))[0]) == pytest.approx((10.0, 1.72, 1.72))


def test_published_strata_are_the_grid_values():
    """cnn_training.py:55 stratifies on the target values; a value of one row joins its nearest class."""
    y = np.array([1.0, 1, 2.8, 3, 3, 5])
    labels = cnn.strata(y)
    assert labels[0] == labels[1] and len({*labels[2:]}) == 1 and labels[0] != labels[2]
    assert len(set(cnn.strata(np.arange(100.0), "deciles"))) == 10


def test_member_layers_match_keras_conv_pool_and_dense():
    """Each member equals Keras' Conv1D (ReLU), then MaxPooling1D, and Dense with its own weights,
    for an input shared by the members and for one input per member (members first); the
    pooled convolution's weight gradient equals that of the unpooled layer followed by max-pooling
    (JAX and TensorFlow)."""
    keras.utils.set_random_seed(2)
    rng = np.random.default_rng(2)
    for channels, pool, padding, k in ((1, 0, "same", 2), (1, 0, "valid", 2), (1, 0, "same", 3), (1, 3, "same", 2),
                                       (1, 3, "valid", 2), (3, 0, "valid", 2), (3, 0, "same", 3), (3, 2, "same", 2)):
        x = rng.normal(size=(5, 13, channels)).astype("float32")
        own = rng.normal(size=(2, 5, 13, channels)).astype("float32")
        conv = cnn.MemberConv1D(2, 4, kernel_size=k, padding=padding, pool=pool)
        conv.build(x.shape)
        conv.bias.assign(rng.normal(0, 0.5, size=(2, 4)).astype("float32"))  # Keras' zeros would hide its place
        shared, apart = ops.convert_to_numpy(conv(x)), ops.convert_to_numpy(conv(own))
        length = (13 if padding == "same" else 14 - k) // max(pool, 1)
        assert shared.shape == apart.shape == (2, 5, length, 4)
        ref = keras.Sequential([keras.Input((13, channels)), keras.layers.Conv1D(4, k, padding=padding,
                                                                                 activation="relu")]
                               + ([keras.layers.MaxPooling1D(pool)] if pool else []))
        for m in range(2):
            ref.set_weights([ops.convert_to_numpy(conv.kernel)[m], ops.convert_to_numpy(conv.bias)[m]])
            np.testing.assert_allclose(shared[m], ref.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(apart[m], ref.predict(own[m], verbose=0), rtol=1e-5, atol=1e-6)
        if pool:
            plain = cnn.MemberConv1D(2, 4, kernel_size=k, padding=padding)
            plain.build(x.shape)
            plain.set_weights(conv.get_weights())

            def pooled_loss(layer):
                def loss(apply):
                    out = apply(own)
                    if layer is plain:
                        n = out.shape[2] // pool
                        out = ops.max(ops.reshape(out[:, :, :n * pool], (2, 5, n, pool, 4)), axis=3)
                    return ops.sum(out ** 2)
                return loss

            grads = [weight_gradients(layer, pooled_loss(layer)) for layer in (conv, plain)]
            assert np.abs(ops.convert_to_numpy(grads[0][0])).max() > 0
            for a, b in zip(*grads):
                np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-4, atol=1e-6)
    dense = cnn.MemberDense(3, 5, activation="relu")
    h = rng.normal(size=(3, 4, 7)).astype("float32")
    ref = keras.layers.Dense(5, activation="relu")
    ref.build((4, 7))
    out = ops.convert_to_numpy(dense(h))
    ref.set_weights([ops.convert_to_numpy(dense.kernel)[2], ops.convert_to_numpy(dense.bias)[2]])
    np.testing.assert_allclose(out[2], ops.convert_to_numpy(ref(h[2])), rtol=1e-5, atol=1e-6)


def test_cnn_has_published_layers_and_saves_as_keras(tmp_path):
    """cnn_training.py:16-35: Conv1D(64, 2, same) -> Conv1D(32, 2, same) -> 256 -> 128 -> 64 -> 1."""
    model = cnn.build_cnn(32, (64, 32, 64), members=1)
    assert model.get_layer("conv2").output.shape == (1, None, 32, 32)  # members first
    assert model.get_layer("dense256").kernel.shape == (1, 32 * 32, 256)  # after a member's Flatten
    assert [model.get_layer(n).units for n in ("dense256", "dense128", "tuned", "out")] == [256, 128, 64, 1]
    assert model.count_params() == (2 * 64 + 64) + (2 * 64 * 32 + 32) + (1024 * 256 + 256) + (256 * 128 + 128) \
        + (128 * 64 + 64) + (64 + 1)
    direct = cnn.build_cnn(3501, (8, 4, 8), pool=8, members=2)
    x = np.random.default_rng(0).random((3, 3501, 1)).astype("float32")
    direct.save(tmp_path / "d.keras")
    again = keras.saving.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), direct.predict(x, verbose=0), rtol=1e-6)


def test_one_shared_split_per_parameter_or_one_per_member():
    y = np.repeat(np.arange(10.0), 10)
    shared = cnn.splits(y, CNNSettings(), seed=42)
    assert len(shared) == 5 and all(np.array_equal(te, shared[0][1]) for _, te in shared)
    assert len(shared[0][1]) == 30 and np.array_equal(np.bincount(y[shared[0][1]].astype(int)), [3] * 10)
    per = cnn.splits(y, CNNSettings(split="per_member"), seed=42)
    assert len({tuple(sorted(te)) for _, te in per}) == 5


def test_ensemble_members_share_their_split_and_widths_group_graphs(spectra):
    syn, _, params = spectra
    x, y = syn[:, ::10], params[:, [0, 2]]
    widths = (("teff", 16, 8, 8), ("logg", 64, 32, 16), ("mh", 16, 8, 4), ("vsini", 64, 32, 16))
    s = CNNSettings(n_per_model=3, epochs=2, batch_size=32, **{**FAST, "widths": widths})
    e = cnn.train_ensemble(x, y, s, seed=5, parameters=("teff", "mh"))
    assert [p for p, _ in e.models] == [("teff",), ("mh",)]
    assert e.models[1][1].get_layer("tuned").units == 4
    pred = e.member_predictions(x)
    te = np.sort(cnn.splits(y[:, 1], s, 5)[0][1])  # residuals come in row order
    # residuals: the ensemble median on the one shared held-out split, minus the truth
    np.testing.assert_allclose(e.residuals["mh"], np.median(pred["mh"][:, te], axis=0) - y[te, 1], rtol=1e-5)


def test_raw_targets_keep_physical_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype("float32")
    y = 3000 + 100 * x[:, :1]
    e = cnn.train_ensemble(x, y, CNNSettings(n_per_model=2, epochs=1, batch_size=64), seed=0, parameters=("teff",))
    assert e.y_mean == {"teff": 0.0} and e.y_std == {"teff": 1.0} and e.x_scaler is None
    with pytest.raises(ValueError, match="'scaled'"):
        CNNSettings(targets="scaled")


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_uncertainties_cover_held_out_truth_at_about_the_nominal_rate(sigma):
    """[median - e, median + E] (residual spread) should contain 68 % of truths the ensemble never saw.

    With n = 400 held-out points the binomial standard error of a 0.68 rate is
    sqrt(0.68 x 0.32 / 400) = 0.023; the window is 0.68 +- 3 of them. At sigma 0.3 the
    members' own errors matter: adding the members' spread to residuals that already
    contain it (the old method) over-covered there (0.75).
    """
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1100, 8)).astype("float32")
    y = (x[:, :1] * 2 + np.sin(x[:, 1:2]) + rng.normal(0, sigma, (1100, 1))).astype("float32")
    s = CNNSettings(n_per_model=5, epochs=40, learning_rate=3e-3, batch_size=64, patience=8, **FAST)
    ens = cnn.train_ensemble(x[:700], y[:700], s, seed=1, parameters=("teff",))
    stats = cnn.summarise(ens.member_predictions(x[700:])["teff"], ens.residuals["teff"])
    med, lo, hi = stats.T
    assert (lo >= 0).all() and (hi >= 0).all()
    inside = (y[700:, 0] >= med - lo) & (y[700:, 0] <= med + hi)
    half = 3 * np.sqrt(0.68 * 0.32 / 400)
    assert 0.68 - half < inside.mean() < 0.68 + half, inside.mean()


def _small_cnn_problem():
    """300 rows of 6 members (each its own inputs); targets of the validation rows unrelated to
    x: the validation loss rises after two epochs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6, 32, 1)).astype("float32")
    y = x[:, :, :6, 0].sum(axis=2) + 1
    x_val = rng.normal(size=(60, 6, 32, 1)).astype("float32")
    return x, y, (x_val, rng.normal(size=(60, 6)).astype("float32"))


def _fresh_cnn():
    keras.utils.set_random_seed(3)
    return cnn.member_graph(cnn.build_cnn(32, (16, 8, 8), members=6), 3e-3)


@pytest.mark.parametrize("patience", [None, 2])
def test_compiled_fit_equals_keras_fit_and_its_early_stopping(patience):
    """Same batches (unshuffled, 300 rows in batches of 64: the last one partial): the losses,
    the early-stopping epoch and the restored weights of `keras.Model.fit` with
    `EarlyStopping(restore_best_weights=True)` (patience 2: it stops early and restores the best epoch)."""
    from carmenes_dtl import training

    x, y, val = _small_cnn_problem()
    ref = _fresh_cnn()
    expected = ref.fit(x, y, validation_data=val, epochs=12, batch_size=64, shuffle=False, verbose=0,
                       callbacks=training.callbacks(patience, False)).history
    model = _fresh_cnn()
    got = training.fit(model, x, y, val, epochs=12, batch_size=64, patience=patience, seed=0, shuffle=False)
    assert len(got["loss"]) == len(expected["loss"])
    assert (len(got["loss"]) < 12) == (patience is not None)
    for k in ("loss", "val_loss"):
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="other backends run model.fit, shuffled by Keras")
def test_each_member_trains_as_its_own_keras_fit():
    """Member m of a stacked graph trained by `training.fit(members=2)` ends with the weights of a
    one-member CNN fitted by Keras alone on member m's rows, epoch e in member m's own order
    (`batch_orders(seed, n, epochs, members)[e, :, m]`); the graph's loss is the sum of theirs.
    The direct CNN's graph: pooled convolutions."""
    from carmenes_dtl import training

    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 2, 8, 1)).astype("float32")  # 64 pixels after the 8-pixel binning
    y = x[:, :, :4, 0].mean(axis=2) + np.array([0.0, 1.0], "float32")
    keras.utils.set_random_seed(4)
    model = cnn.member_graph(cnn.build_cnn(64, (8, 4, 4), pool=2, members=2), 3e-3)
    initial = model.get_weights()
    got = training.fit(model, x, y, None, epochs=3, batch_size=32, patience=None, seed=7, members=2)
    orders = training.batch_orders(7, len(x), 3, members=2)
    assert not np.array_equal(orders[:, :, 0], orders[:, :, 1])
    total = np.zeros(3)
    for m in range(2):
        ref = cnn.member_graph(cnn.build_cnn(64, (8, 4, 4), pool=2, members=1), 3e-3)
        ref.set_weights([w[m:m + 1] for w in initial])
        for e in range(3):
            order = orders[e, :, m]
            total[e] += ref.fit(x[order, m:m + 1], y[order, m:m + 1], epochs=1, batch_size=32, shuffle=False,
                                verbose=0).history["loss"][0]
        for a, b in zip(model.get_weights(), ref.get_weights()):
            np.testing.assert_allclose(a[m:m + 1], b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["loss"], total, rtol=1e-5)
    assert "val_loss" not in got


def test_predict_equals_keras_predict_for_models_of_one_architecture():
    """Two models built alike from other seeds share one compiled forward; each gives its own `model.predict`."""
    from carmenes_dtl import training

    x = np.random.default_rng(5).normal(size=(300, 40, 1)).astype("float32")
    compiled = len(training._COMPILED)
    for seed in (1, 2):
        model = cnn.build_cnn(40, (8, 4, 4), pool=2, members=3, seed=seed)
        np.testing.assert_allclose(training.predict(model, x, batch_size=128), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-6)
    assert len(training._COMPILED) == compiled + (keras.backend.backend() == "jax")  # other backends: model.predict


def test_splits_of_a_set_with_more_values_than_test_rows():
    """40 distinct Teff values x 2 rows, 30 % test: 24 test rows cannot hold 40 classes, so the
    split stratifies on 24 quantile groups; every row lands on exactly one side."""
    from carmenes_dtl.cnn import splits

    y = np.repeat(np.arange(3000.0, 4000.0, 25.0), 2)
    (train, test), = splits(y, CNNSettings(n_per_model=1), seed=0)
    assert len(test) == 24 and len(train) == 56 and len(np.intersect1d(train, test)) == 0
    assert np.all(np.histogram(y[test], bins=4)[0] >= 4)  # spread over the range, not one corner


def test_trained_ensembles_saved_for_a_later_stage_predict_the_same(spectra, tmp_path):
    """`bundle.save_trained` -> `load_trained` (stage cnn-synthetic -> cnn) keeps predictions
    bit for bit, the scalers, target normalisation, residuals and training curves."""
    from carmenes_dtl import bundle

    syn, _, params = spectra
    x = syn[:, ::10]
    s = CNNSettings(n_per_model=2, epochs=3, batch_size=32, patience=2, **FAST)
    y = np.column_stack([params, params[:, 0] / 200])  # a fourth target standing in for vsini
    ens = cnn.train_ensemble(x, y, s, seed=7)
    back = bundle.load_trained(bundle.save_trained(tmp_path / "trained", {"pre": [ens]}))["pre"][0]
    before, after = ens.member_predictions(x), back.member_predictions(x)
    for p in cnn.PARAMETERS:
        np.testing.assert_array_equal(before[p], after[p])
        np.testing.assert_array_equal(ens.residuals[p], back.residuals[p])
    assert back.history == ens.history and len(back.history["val_loss"]) >= 1


def test_search_in_process_names_a_failed_fit_in_one_line():
    """A configuration that cannot be built (n_in=4 gives a layer of 0 units) stops the in-process
    search with a ValueError saying it is the grid search, not a bare Keras traceback."""
    flux = np.random.default_rng(0).uniform(0.5, 1.0, (24, 40)).astype("float32")
    s = AESettings(latent_dim=4, search_epochs=1, batch_size=8, n_in_grid=(16, 4), l1_grid=(1e-7,), cv_folds=2)
    with pytest.raises(ValueError, match=r"^grid search: a fit failed \(ValueError: .*units"):
        ae.grid_search(flux, s, seed=1)


def test_bfloat16_option_computes_in_bfloat16_with_float32_weights_and_outputs(spectra, tmp_path):
    """`precision="bfloat16"`: products rounded as bfloat16 (8 significant bits) would round
    them, weights, outputs and the losses in float32; the policy is left as it was."""
    syn, _, params = spectra
    s = AESettings(latent_dim=8, epochs=15, batch_size=32, learning_rate=1e-3, precision="bfloat16")
    model, hist = ae.train(syn, 64, 1e-7, s, seed=0)
    assert keras.config.dtype_policy().name == "float32"
    enc = model.get_layer("enc_1")
    assert (enc.compute_dtype, enc.kernel.dtype) == ("bfloat16", "float32")
    assert np.isfinite(hist["loss"]).all() and hist["loss"][-1] < 0.5 * hist["loss"][0]
    out = model.predict(syn[:10], verbose=0)
    assert out.dtype == np.float32
    # enc_1 against a float32 NumPy product: bfloat16's rounding (relative 2^-9 per operand), not float32's
    w, b = (np.asarray(v) for v in enc.get_weights())
    exact = np.maximum(syn[:10] @ w + b, 0)
    got = np.asarray(keras.Model(model.inputs, enc.output).predict(syn[:10], verbose=0), float)
    rel = np.abs(got - exact).max() / np.abs(exact).max()
    assert 1e-4 < rel < 3e-2
    assert ae.encode(model, syn[:10]).dtype == np.float32  # latents are stored as .npy/.npz
    again = ae.load(ae.save(model, tmp_path / "bf16.keras", {}))
    assert again.get_layer("enc_1").compute_dtype == "bfloat16"
    np.testing.assert_array_equal(again.predict(syn[:10], verbose=0), out)

    x, y = syn[:, ::10], params[:, :1]
    cs = CNNSettings(n_per_model=2, epochs=30, learning_rate=3e-3, batch_size=32, precision="bfloat16", **FAST)
    ens = cnn.train_ensemble(x, y, cs, seed=5, parameters=("teff",))
    graph = ens.models[0][1]
    assert (graph.get_layer("conv1").compute_dtype, graph.get_layer("out").compute_dtype) == ("bfloat16", "float32")
    pred = ens.member_predictions(x)["teff"]
    assert np.mean(np.abs(np.median(pred, 0) - params[:, 0])) < 0.5 * np.std(params[:, 0])


@pytest.mark.parametrize("build", [lambda seed: ae.build_autoencoder(60, n_in=32, latent=4, seed=seed),
                                   lambda seed: cnn.build_cnn(16, (8, 4, 4), members=2, seed=seed)],
                         ids=["autoencoder", "cnn"])
def test_seeded_model_ignores_other_threads_drawing_from_random(build):
    """A model built with a seed has the weights Keras draws from Python's `random` after
    ``set_random_seed(seed)``, also while another thread draws from it (a Dask worker's event loop)."""
    import random
    import threading

    from carmenes_dtl.training import set_random_seed

    set_random_seed(11)
    keras_own = [ops.convert_to_numpy(w) for w in build(None).weights]
    stop = threading.Event()
    drawer = threading.Thread(target=lambda: [random.random() for _ in iter(stop.is_set, True)])
    drawer.start()
    try:
        random.seed(11)
        seeded = [[ops.convert_to_numpy(w) for w in build(11).weights] for _ in range(3)]
    finally:
        stop.set()
        drawer.join()
    assert sum(w.size for w in keras_own) > 100
    for weights in seeded:
        assert all(np.array_equal(a, b) for a, b in zip(weights, keras_own, strict=True))
    unseeded_again = [ops.convert_to_numpy(w) for w in build(None).weights]  # the drawer moved `random` on
    assert not all(np.array_equal(a, b) for a, b in zip(unseeded_again, keras_own, strict=True))
