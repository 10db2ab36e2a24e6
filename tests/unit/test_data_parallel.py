"""Data-parallel autoencoder training (`keras.distribution.DataParallel`, JAX backend) on two
simulated XLA host devices gives the losses of one device."""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from carmenes_dtl import cli, pipeline, training
from carmenes_dtl.config import PROFILES

#: Runs in a fresh process: the XLA device count is fixed when JAX starts.
SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import jax
    import keras
    import numpy as np

    from carmenes_dtl import autoencoder, training, transfer
    from carmenes_dtl.config import AESettings, FineTuneSettings

    assert len(jax.devices()) == 2, jax.devices()
    out = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    # 40 rows: early stopping watches 4, the 36 others make batches of 8, 8, 8, 8 and 4 (split 2 + 2)
    flux = rng.random((40, 64)).astype("float32")
    observed = rng.random((30, 64)).astype("float32")  # fine-tuning fits 22 rows, watches 2
    s = AESettings(latent_dim=8, batch_size=8, epochs=3, learning_rate=1e-3, patience=10)
    ft = FineTuneSettings(learning_rate=1e-3, epochs=2, batch_size=8, split_seed=None, patience=10)
    res = {}
    for parallel in (False, True):
        model, hist = autoencoder.train(flux, 32, 1e-7, s, 5, parallel=parallel)
        assert keras.distribution.distribution() is None  # restored after the fit
        path = autoencoder.save(model, out / f"ae_{parallel}.keras", {})
        tuned, report = transfer.finetune(path, observed, flux[:8], ft, 3, parallel=parallel)
        assert keras.distribution.distribution() is None
        res[str(parallel)] = {
            "history": hist, "finetune": report["history"], "after": report["after"],
            "weights": [w.tolist() for w in model.get_layer("bottleneck").get_weights()],
            "devices": [len(v.value.sharding.device_set) for v in model.trainable_variables + tuned.trainable_variables],
            "sharding": type(model.get_layer("enc_1").kernel.value.sharding).__name__,
        }
    dist = training.data_parallel(8)
    res["mesh"] = list(dist.device_mesh.shape)
    res["cut"] = len(training.whole_batches(dist, np.zeros((41, 3))))
    try:
        training.data_parallel(7)
    except ValueError as err:
        res["odd_batch"] = str(err)
    print("RESULT " + json.dumps(res))
""")


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "KERAS_BACKEND": "jax",
           "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = tmp_path_factory.mktemp("dp")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_two_devices_give_the_losses_of_one(two_devices):
    one, two = two_devices["False"], two_devices["True"]
    for key in ("loss", "val_loss"):
        assert len(two["history"][key]) == 3
        np.testing.assert_allclose(two["history"][key], one["history"][key], rtol=1e-4, err_msg=key)
        np.testing.assert_allclose(two["finetune"][key], one["finetune"][key], rtol=1e-4, err_msg=key)
    for a, b in zip(two["weights"], one["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
    for key in ("mse_observed_test", "mse_synthetic"):
        assert two["after"][key] == pytest.approx(one["after"][key], rel=1e-4)


def test_the_distributed_run_really_uses_both_devices(two_devices):
    assert two_devices["mesh"] == [2]
    assert set(two_devices["True"]["devices"]) == {2}  # every variable, trained and fine-tuned, on both
    assert two_devices["True"]["sharding"] == "NamedSharding"
    assert set(two_devices["False"]["devices"]) == {1}


def test_batches_must_split_evenly(two_devices):
    assert two_devices["cut"] == 40  # the last, partial batch must split evenly too: one row dropped
    assert "batch size 7 is not a multiple of 2" in two_devices["odd_batch"]


def test_other_backends_are_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ValueError, match="JAX backend"):
        training.data_parallel(128)


def test_the_option_reaches_the_stages_and_leaves_one_device_keys_alone(tmp_path):
    args = cli.parser().parse_args(["run", "--demo", "--profile", "paper", "--out", str(tmp_path), "--data-parallel"])
    assert args.data_parallel
    assert cli.parser().parse_args(["train", "--out", str(tmp_path), "--data-parallel"]).data_parallel
    assert not cli.parser().parse_args(["run", "--out", str(tmp_path)]).data_parallel
    assert pipeline.Runner(tmp_path / "a", PROFILES["paper"])._parallel_key() == []
    if keras.backend.backend() == "jax":
        key = pipeline.Runner(tmp_path / "b", PROFILES["paper"], data_parallel=True)._parallel_key()
        assert key == [{"data_parallel": len(keras.distribution.list_devices())}]
