"""A model file written by a newer Keras: an argument this Keras does not know opens when it is
None (a feature left off) and is refused, in one line, when it carries a value."""

import json
import zipfile

import keras
import numpy as np
import pytest

from carmenes_dtl import autoencoder as ae
from carmenes_dtl.config import AESettings
from carmenes_dtl.portable import without_unknown_nones


def _with_future_argument(path, out, value):
    """A copy of the `.keras` file at `path` whose first Dense layer and its kernel initialiser
    carry an argument no Keras has, ``future_option``, set to `value`."""
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(out, "w") as copy:
        config = json.loads(archive.read("config.json"))
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["future_option"] = value
        dense["config"]["kernel_initializer"]["config"]["future_option"] = value
        for name in archive.namelist():
            copy.writestr(name, json.dumps(config) if name == "config.json" else archive.read(name))
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(3)
    flux = rng.uniform(0, 1, (64, 96)).astype("float32")
    s = AESettings(latent_dim=4, epochs=2, batch_size=32, learning_rate=1e-3)
    model, _ = ae.train(flux, 32, 1e-7, s, seed=0)
    path = ae.save(model, tmp_path_factory.mktemp("m") / "m.keras", {})
    return path, flux[:8], model.predict(flux[:8], verbose=0)


def test_an_unknown_argument_left_off_is_dropped_and_the_model_predicts_the_same(saved, tmp_path, capsys):
    path, flux, expected = saved
    newer = _with_future_argument(path, tmp_path / "newer.keras", None)
    with pytest.raises(Exception):  # Keras alone refuses the file
        keras.saving.load_model(newer)
    np.testing.assert_array_equal(ae.load(newer).predict(flux, verbose=0), expected)
    assert capsys.readouterr().err.strip().endswith("ignores its arguments left unset: "
                                                    "Dense.future_option, GlorotUniform.future_option")


def test_an_unknown_argument_with_a_value_is_refused_in_one_line(saved, tmp_path):
    path, _, _ = saved
    newer = _with_future_argument(path, tmp_path / "newer.keras", 2)
    with pytest.raises(ValueError) as err:
        ae.load(newer, saved_with="9.0")
    assert str(err.value).startswith(f"{newer}: Keras {keras.__version__} cannot open this model (saved with Keras 9.0)")
    assert "\n" not in str(err.value)


def test_only_unknown_none_arguments_are_dropped():
    config = {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
              "config": {"units": 3, "kernel_regularizer": None, "future_option": None, "later": 1}}
    cleaned, dropped = without_unknown_nones({"layers": [config]})
    assert dropped == ["Dense.future_option"]
    assert cleaned["layers"][0]["config"] == {"units": 3, "kernel_regularizer": None, "later": 1}
