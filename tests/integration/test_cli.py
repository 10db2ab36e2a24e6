"""The command line end to end on a tiny demo run (profile `tiny`), and the TensorFlow backend."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carmenes_dtl.config import estimate_columns

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, env=None, check=True):
    exe = [sys.executable, "-m", "carmenes_dtl.cli", *map(str, args)]
    res = subprocess.run(exe, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(exe)} failed:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    res = cli("run", "--demo", "--profile", "tiny", "--seed", "3", "--out", out, "--quiet")
    return out, res.stdout


def test_help_and_version():
    out = cli("--help").stdout
    for sub in ("demo-data", "prepare-synthetic", "prepare-observed", "gap", "run", "fetch-literature", "validate"):
        assert sub in out
    assert cli("--version").stdout.startswith("carmenes-dtl 0.1.0")


def test_prepare_commands_on_demo_layout(tmp_path):
    cli("demo-data", tmp_path / "d", "--seed", "5", "--n-stars", "3", "--gap", "mild", "--quiet")
    grid = tmp_path / "grid.csv"
    pd.DataFrame({"teff": [3300.0, 3525.0], "logg": [5.0, 4.9], "mh": [0.0, -0.2]}).to_csv(grid, index=False)
    cli("prepare-synthetic", "--phoenix-dir", tmp_path / "d" / "phoenix", "--out", tmp_path / "syn.h5",
        "--vsini", "2,10,30", "--grid", grid, "--quiet")
    res = cli("prepare-observed", "--carmenes-dir", tmp_path / "d" / "carmenes", "--out", tmp_path / "obs.h5",
              "--template", tmp_path / "syn.h5", "--quiet")
    assert "excluded 0 file(s)" in res.stdout
    from carmenes_dtl import store

    syn, obs = store.read(tmp_path / "syn.h5"), store.read(tmp_path / "obs.h5")
    assert syn.flux.shape == (6, 3501) and obs.flux.shape == (3, 3501)
    assert syn.flux.dtype == np.float32 and 0 <= syn.flux.min() and syn.flux.max() <= 1
    assert sorted(syn.parameters["vsini"].unique()) == [2, 10, 30]
    assert set(obs.parameters["karmn"]) == set(pd.read_csv(tmp_path / "d" / "truth.csv")["karmn"])
    assert obs.attrs["window"]["start"] == 8800.0 and "package_version" in obs.attrs
    res = cli("prepare-observed", "--carmenes-dir", tmp_path / "d" / "carmenes", "--out", tmp_path / "o.h5",
              "--window", "9700,9735", check=False)
    assert res.returncode == 2 and "no usable spectrum" in res.stderr
    res = cli("gap", tmp_path / "syn.h5", tmp_path / "obs.h5", "--out", tmp_path / "gap", check=False)
    # 6 synthetic vs 3 observed is too few for a 5-fold AUC: the error says so
    assert res.returncode != 0 or (tmp_path / "gap" / "gap.json").exists()


VARIANT_FILES = ("", "_finetuned_both", "_no_finetune", "_direct")


def test_run_writes_estimates_and_report(tiny_run):
    out, stdout = tiny_run
    for variant in VARIANT_FILES:
        est = pd.read_csv(out / f"estimates{variant}.csv")
        assert list(est.columns) == estimate_columns()
        assert len(est) == 16
        errs = est[[c for c in est.columns if c.startswith(("e_", "E_"))]]
        assert (errs >= 0).all().all() and np.isfinite(errs.to_numpy()).all()
    info = json.loads((out / "run.json").read_text())
    assert set(info["errors_vs_truth"]) == {"method", "finetuned_both", "no_finetune", "direct"}
    assert info["errors_vs_truth"]["method"]["Teff"]["n"] == 16
    assert info["seed"] == 3 and info["profile"]["name"] == "tiny"
    assert set(info["holdout_coverage"]) == {"members", "residuals"}
    assert all(0 <= v <= 1 for by_variant in info["holdout_coverage"].values() for cov in by_variant.values()
               for v in cov.values())
    assert (out / "models" / "ae_0.keras").exists() and (out / "models" / "ae_0_ft.keras").exists()
    assert "method" in stdout


def test_latents_pair_the_saved_encoders(tiny_run):
    """`method` trains on the encoder saved before fine-tuning and predicts with the one after."""
    from carmenes_dtl import autoencoder, store
    from carmenes_dtl.transfer import latent_pair

    out, _ = tiny_run
    syn, obs = store.read(out / "synthetic.h5").flux, store.read(out / "observed.h5").flux
    pre, ft = autoencoder.load(out / "models" / "ae_0.keras"), autoencoder.load(out / "models" / "ae_0_ft.keras")
    lat = np.load(out / "latents.npz")
    for variant, (syn_model, obs_model) in {"method": (pre, ft), "finetuned_both": (ft, ft),
                                            "no_finetune": (pre, pre)}.items():
        a, b = latent_pair(lat, variant, 0)
        np.testing.assert_allclose(a, autoencoder.encode(syn_model, syn), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, autoencoder.encode(obs_model, obs), rtol=1e-5, atol=1e-6)
    assert not np.allclose(autoencoder.encode(pre, obs), autoencoder.encode(ft, obs))


def test_run_resumes_finished_stages(tiny_run):
    out, _ = tiny_run
    before = (out / "estimates.csv").read_bytes()
    res = cli("run", "--demo", "--profile", "tiny", "--seed", "3", "--out", out, "--quiet")
    assert res.stdout.count("up to date") == 7
    assert (out / "estimates.csv").read_bytes() == before


def test_same_seed_same_estimates(tiny_run, tmp_path):
    out, _ = tiny_run
    cli("run", "--demo", "--profile", "tiny", "--seed", "3", "--out", tmp_path / "again", "--quiet")
    for variant in VARIANT_FILES:
        a = pd.read_csv(out / f"estimates{variant}.csv")
        b = pd.read_csv(tmp_path / "again" / f"estimates{variant}.csv")
        pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_gap_and_validate_commands(tiny_run, tmp_path, reference):
    out, _ = tiny_run
    res = cli("gap", out / "synthetic.h5", out / "observed.h5", "--out", tmp_path / "gap")
    metrics = json.loads((tmp_path / "gap" / "gap.json").read_text())["metrics"]
    assert 0 <= metrics["domain_auc"] <= 1 and (tmp_path / "gap" / "projection_umap.png").exists()
    res = cli("validate", reference / "final_estimations.csv", "--out", tmp_path / "val")
    assert "mar21" in res.stdout and (tmp_path / "val" / "comparison_stats.csv").exists()
    res = cli("validate", out / "estimates.csv", "--out", tmp_path / "val2", check=False)
    assert res.returncode == 2 and "no star matches any catalogue" in res.stderr


def test_models_under_tensorflow_backend():
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_models.py",
                          "-k", "penalty or frozen or parameter_count or member_layers or finetune or compiled_fit "
                          "or widths_group_graphs or reusing"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout.splitlines()[-1]
