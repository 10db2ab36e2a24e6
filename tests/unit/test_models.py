"""Autoencoder, contractive penalty, fine-tuning and CNN ensembles (small, seeded)."""

import keras
import numpy as np
import pytest
from keras import ops

from carmenes_dtl import autoencoder as ae
from carmenes_dtl import cnn, transfer
from carmenes_dtl.config import AESettings, CNNSettings


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


def test_paper_size_parameter_count():
    model = ae.build_autoencoder(3501, n_in=2048)
    assert model.count_params() == ae.parameter_count(3501, 2048) == 25_118_669
    assert [model.get_layer(f"enc_{i}").units for i in range(1, 6)] == [2048, 1536, 1024, 512, 256]
    assert model.get_layer("bottleneck").units == 32
    assert model.get_layer("reconstruction").activation.__name__ == "sigmoid"


@pytest.fixture(scope="module")
def spectra():
    """Normalised demo-model spectra (synthetic and 'observed'), 300 pixels."""
    from carmenes_dtl import demo, preprocess

    rng = np.random.default_rng(0)
    wave = preprocess.log_grid(8805, 8812, 0.5)[:300]
    syn_m, obs_m = demo.LineModel(), demo.LineModel(demo.gap_effects("paper"))
    params = np.column_stack([rng.uniform(3000, 4200, 160), rng.uniform(4.7, 5.2, 160), rng.uniform(-0.5, 0.3, 160)])
    norm = lambda f: (f / f.max()).astype("float32")  # noqa: E731
    syn = np.array([norm(syn_m.flux(wave, *p)) for p in params])
    obs = np.array([norm(obs_m.flux(wave, *p)) for p in params[:40]])
    return syn, obs, params


def test_training_reduces_loss_and_save_load_round_trip(spectra, tmp_path):
    syn, _, _ = spectra
    s = AESettings(latent_dim=8, epochs=15, batch_size=32, learning_rate=1e-3, patience=20)
    model, hist = ae.train(syn, 64, 1e-7, s, seed=0)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert np.isfinite(hist["val_loss"]).all()
    path = ae.save(model, tmp_path / "m.keras", {"n_in": 64})
    again = ae.load(path)
    np.testing.assert_array_equal(model.predict(syn[:10], verbose=0), again.predict(syn[:10], verbose=0))
    assert ae.encode(again, syn[:5]).shape == (5, 8)


def test_finetune_freezes_first_layers_bit_identical(spectra, tmp_path):
    syn, obs, _ = spectra
    s = AESettings(latent_dim=8, epochs=5, batch_size=32, learning_rate=1e-3, finetune_epochs=5, patience=20)
    model, _ = ae.train(syn, 64, 1e-7, s, seed=0)
    path = ae.save(model, tmp_path / "m.keras", {})
    tuned, report = transfer.finetune(path, obs, syn[:50], s, seed=0)
    for i in range(1, 5):
        for w0, w1 in zip(model.get_layer(f"enc_{i}").get_weights(), tuned.get_layer(f"enc_{i}").get_weights()):
            assert np.array_equal(w0, w1)
    changed = [not np.array_equal(a, b) for a, b in zip(model.get_layer("enc_5").get_weights(),
                                                           tuned.get_layer("enc_5").get_weights())]
    assert any(changed)
    assert report["after"]["mse_observed_test"] < report["before"]["mse_observed_test"]
    assert report["frozen_layers"] == ["enc_1", "enc_2", "enc_3", "enc_4"]


def test_grid_search_ranks_every_point(spectra):
    syn, _, _ = spectra
    s = AESettings(n_in_grid=(32, 64), l1_grid=(1e-7,), latent_dim=4, epochs=2, batch_size=32, cv_folds=2)
    rows = ae.grid_search(syn, s, seed=0)
    assert sorted((r["n_in"], r["l1"]) for r in rows) == [(32, 1e-7), (64, 1e-7)]
    assert rows[0]["cv_mse"] <= rows[1]["cv_mse"]


def test_cnn_ensemble_learns_and_is_deterministic(spectra):
    syn, _, params = spectra
    x = syn[:, ::10]
    y = np.column_stack([params[:, 0], params[:, 2]])
    s = CNNSettings(n_per_model=3, epochs=30, learning_rate=3e-3, batch_size=32, tuned_width=16, patience=30)
    e1 = cnn.train_ensemble(x, y, s, seed=5, parameters=("teff", "mh"))
    e2 = cnn.train_ensemble(x, y, s, seed=5, parameters=("teff", "mh"))
    p1, p2 = e1.member_predictions(x), e2.member_predictions(x)
    np.testing.assert_allclose(p1["teff"], p2["teff"], rtol=1e-5)
    assert p1["teff"].shape == (3, len(x))
    assert np.mean(np.abs(np.median(p1["teff"], 0) - params[:, 0])) < 0.5 * np.std(params[:, 0])
    assert [len(r) for r in e1.residuals["mh"]] == [48, 48, 48]


def test_summarise_percentile_definition():
    preds = np.array([[10.0], [12.0], [14.0]])
    resid = [np.array([-1.0, 0.0, 1.0])] * 3
    med, lo, hi = cnn.summarise(preds, resid)[0]
    draws = np.sort(np.concatenate([p + resid[0] for p in preds[:, 0]]))
    assert med == 12.0
    assert lo == pytest.approx(12.0 - np.percentile(draws, 16))
    assert hi == pytest.approx(np.percentile(draws, 84) - 12.0)
    assert lo >= 0 and hi >= 0


def test_member_layers_match_keras_conv_and_dense():
    keras.utils.set_random_seed(2)
    x = np.random.default_rng(2).normal(size=(5, 12, 3)).astype("float32")
    conv = cnn.MemberConv1D(2, 4, activation=None)
    out = ops.convert_to_numpy(conv(x))
    ref = keras.layers.Conv1D(4, 2)
    ref.build(x.shape)
    ref.set_weights([ops.convert_to_numpy(conv.kernel)[1], ops.convert_to_numpy(conv.bias)[1]])
    np.testing.assert_allclose(out[:, 1], ops.convert_to_numpy(ref(x)), rtol=1e-5, atol=1e-6)


def test_uncertainties_cover_held_out_truth_at_about_the_nominal_rate():
    """[median - e, median + E] should contain ~68 % of truths the ensemble never saw."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(700, 8)).astype("float32")
    y = (x[:, :1] * 2 + np.sin(x[:, 1:2]) + rng.normal(0, 0.3, (700, 1))).astype("float32")
    s = CNNSettings(n_per_model=5, epochs=40, learning_rate=3e-3, batch_size=64, tuned_width=16, patience=8)
    ens = cnn.train_ensemble(x[:500], y[:500], s, seed=1, parameters=("teff",))
    stats = cnn.summarise(ens.member_predictions(x[500:])["teff"], ens.residuals["teff"])
    med, lo, hi = stats.T
    assert (lo >= 0).all() and (hi >= 0).all()
    inside = (y[500:, 0] >= med - lo) & (y[500:, 0] <= med + hi)
    assert 0.55 < inside.mean() < 0.85, inside.mean()
