"""The command line end to end on a tiny demo run (profile `tiny`)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import bundle, cnn
from carmenes_dtl.config import estimate_columns

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, env=None, check=True):
    exe = [sys.executable, "-m", "carmenes_dtl.cli", *map(str, args)]
    res = subprocess.run(exe, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(exe)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def cli_here(capfd, *args) -> tuple[int, str, str]:
    """`carmenes-dtl ARGS` in this process (`cli.main`, no new interpreter importing the libraries
    again), with the warnings Python's default filters show as errors (a process of its own prints
    them on stderr): its exit status, stdout and stderr."""
    from carmenes_dtl import cli as command_line

    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for shown_by_no_default in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", shown_by_no_default)
        try:
            status = command_line.main(list(map(str, args)))
        except SystemExit as stop:  # argparse's usage errors
            status = stop.code
    return status, *capfd.readouterr()


def test_help_and_version():
    out = cli("--help").stdout
    for sub in ("demo-data", "prepare-synthetic", "prepare-observed", "gap", "run", "fetch-literature", "validate"):
        assert sub in out
    assert cli("--version").stdout.startswith("carmenes-dtl 0.1.0")


def test_every_option_has_help_and_every_command_an_example():
    """Each subcommand's --help explains every argument (with its default where it has one) and ends
    with an example that parses as that subcommand."""
    import argparse

    from carmenes_dtl import cli as command_line

    p = command_line.parser()
    commands = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(command_line.EXAMPLES)
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.dest}: no help"
        text = sub.format_help()
        example = command_line.EXAMPLES[name]
        assert text.rstrip().endswith(f"example:\n  {example}"), name
        assert p.parse_args(example.split()[1:]).command == name
    run_help = commands["run"].format_help()
    assert "(default: quick)" in " ".join(run_help.split()) and "tiny" in run_help
    assert "(default: 42)" in " ".join(commands["demo-data"].format_help().split())


def test_demo_data_refuses_a_used_folder_unless_overwrite(tmp_path, capfd):
    """A demo survey written over another would leave the old stars' files beside the new truth.csv:
    refused; --overwrite replaces the demo's own files and folders, and leaves the others."""
    out = tmp_path / "demo"
    assert cli_here(capfd, "demo-data", out, "--n-stars", "3", "--quiet")[0] == 0
    (out / "notes.txt").write_text("mine\n")
    assert cli_here(capfd, "demo-data", out, "--n-stars", "2", "--quiet")[0] == 2
    assert len(pd.read_csv(out / "truth.csv")) == 3
    assert cli_here(capfd, "demo-data", out, "--n-stars", "2", "--seed", "7", "--quiet", "--overwrite")[0] == 0
    truth = pd.read_csv(out / "truth.csv")
    assert sorted(p.name for p in (out / "carmenes").rglob("*.fits*")) == sorted(Path(f).name for f in truth["file"])
    assert len(truth) == 2 and (out / "notes.txt").read_text() == "mine\n"


def test_prepare_commands_on_demo_layout(tmp_path, capfd):
    assert cli_here(capfd, "demo-data", tmp_path / "d", "--seed", "5", "--n-stars", "3", "--gap", "mild",
                    "--quiet")[0] == 0
    grid = tmp_path / "grid.csv"
    pd.DataFrame({"teff": [3300.0, 3525.0], "logg": [5.0, 4.9], "mh": [0.0, -0.2]}).to_csv(grid, index=False)
    assert cli_here(capfd, "prepare-synthetic", "--phoenix-dir", tmp_path / "d" / "phoenix", "--out",
                    tmp_path / "syn.h5", "--vsini", "2,10,30", "--grid", grid, "--quiet")[0] == 0
    status, stdout, _ = cli_here(capfd, "prepare-observed", "--carmenes-dir", tmp_path / "d" / "carmenes", "--out",
                                 tmp_path / "obs.h5", "--template", tmp_path / "syn.h5", "--quiet")
    assert status == 0 and stdout.splitlines() == [  # the templates used, and every file counted
        f"RV templates and normalisation references: {tmp_path / 'syn.h5'} (6 spectra)",
        f"wrote {tmp_path / 'obs.h5'}: 3 star(s) from 3 file(s); excluded 0 file(s)"]
    from carmenes_dtl import store

    syn, obs = store.read(tmp_path / "syn.h5"), store.read(tmp_path / "obs.h5")
    assert syn.flux.shape == (6, 3501) and obs.flux.shape == (3, 3501)
    assert syn.flux.dtype == np.float32 and 0 <= syn.flux.min() and syn.flux.max() <= 1
    assert sorted(syn.parameters["vsini"].unique()) == [2, 10, 30]
    assert set(obs.parameters["karmn"]) == set(pd.read_csv(tmp_path / "d" / "truth.csv")["karmn"])
    assert obs.attrs["window"]["start"] == 8800.0 and "package_version" in obs.attrs
    status, _, stderr = cli_here(capfd, "gap", tmp_path / "syn.h5", tmp_path / "obs.h5", "--out", tmp_path / "gap")
    assert status == 2 and stderr == ("carmenes-dtl gap: error: the domain AUC's 5-fold cross-validation "
                                      "needs at least 5 spectra per set, got 6 synthetic and 3 observed\n")


#: The tiny profile learns [M/H] only (8 AE epochs, 4 CNN epochs): on held-out synthetic nodes its
#: MAE must beat a constant guess of the training mean by this factor (measured: ~0.5-0.6).
TINY_MH_VS_MEAN = 0.8


VARIANT_FILES = ("", "_finetuned_both", "_no_finetune", "_direct", "_method_aligned")


def test_demo_data_gap_mix_and_stars(tmp_path, capfd):
    """--gap-mix and --stars reach the survey: README, truth.csv's coverage, the spectra."""
    for folder, options in (("a", ("--gap-mix", "shared=0.5")),
                            ("b", ("--gap-mix", "degenerate=0,shared=0.5", "--stars", "uniform")),
                            ("c", ("--gap", "none", "--stars", "uniform"))):
        assert cli_here(capfd, "demo-data", tmp_path / folder, "--seed", "2", "--n-stars", "4", *options, "--quiet")[0] == 0
    readme = {k: (tmp_path / k / "README.txt").read_text().splitlines()[0] for k in "abc"}
    assert "gap=degenerate=0,shared=0.5 stars=published" in readme["a"]
    assert "gap=degenerate=0,shared=0.5 stars=uniform" in readme["b"] and "gap=none stars=uniform" in readme["c"]
    truth = {k: pd.read_csv(tmp_path / k / "truth.csv") for k in "abc"}
    assert set(truth["a"]["coverage"]) <= {"inside", "edge"} and len(truth["a"]) == 4
    assert set(truth["b"]["coverage"]) <= {"inside", "edge", "outside"}
    pd.testing.assert_frame_equal(truth["b"].drop(columns="file"), truth["c"].drop(columns="file"))
    assert not truth["a"]["Teff"].equals(truth["b"]["Teff"])
    name = truth["b"]["file"][0]
    assert (tmp_path / "b" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()  # the gap differs


def test_run_writes_estimates_and_report(tiny_run):
    out, stdout = tiny_run
    truth = pd.read_csv(out / "demo" / "truth.csv")
    info = json.loads((out / "run.json").read_text())
    assert set(info["errors_vs_truth"]) == {"method", "finetuned_both", "no_finetune", "direct", "method_aligned"}
    peaks = info["peak_rss_gib"]  # the run's high-water mark after each stage, in stage order
    assert list(peaks) == list(info["timings_s"])
    assert list(peaks.values()) == sorted(peaks.values()) and 0.2 < peaks["cnn"] < 8, peaks  # Keras + JAX alone: > 0.2
    import jax  # the libraries the run had: this environment's, and the tests' compilation cache (conftest.py)

    assert (info["jax"], info["jaxlib"], info["numpy"]) == (jax.__version__, jax.lib.__version__, np.__version__)
    assert info["jax_compilation_cache"] == os.environ["JAX_COMPILATION_CACHE_DIR"]
    for variant in VARIANT_FILES:
        est = pd.read_csv(out / f"estimates{variant}.csv")
        assert list(est.columns) == estimate_columns() and sorted(est["karmn"]) == sorted(truth["karmn"])
        errs = est[[c for c in est.columns if c.startswith(("e_", "E_"))]]
        assert np.isfinite(errs.to_numpy()).all()
        raw = pd.read_csv(out / f"estimates{variant}.csv", dtype=str)  # 0.1 K, 0.001 dex, 0.01 km/s
        for name, decimals in cnn.DECIMALS.items():
            for col in (name, f"e_{name}", f"E_{name}"):
                assert raw[col].str.partition(".")[2].str.len().max() <= decimals, (variant, col)
        m = est.merge(truth, on="karmn", suffixes=("", "_true"))
        reported = info["errors_vs_truth"][variant.strip("_") or "method"]
        for name in ("Teff", "logg", "[M/H]", "vsini"):  # run.json's errors, recomputed from the files
            d = m[name] - m[f"{name}_true"]
            assert reported[name]["n"] == 16 and reported[name]["mae"] == pytest.approx(d.abs().mean())
            assert reported[name]["bias"] == pytest.approx(d.mean())
    # error against truth on whole synthetic nodes held out of CNN training, against a trivial baseline
    from carmenes_dtl import store

    # each variant is checked as it is applied: the method's CNNs (original encoder) see the held-out
    # spectra through the fine-tuned encoder, so its error (the pairing cost) is not no_finetune's
    train_mean = store.read(out / "synthetic.h5").parameters["mh"].mean()
    held = pd.read_csv(out / "holdout.csv").query("uncertainty == 'members'")
    mae = {}
    for variant, g in held.groupby("variant"):
        baseline = (g["true_[M/H]"] - train_mean).abs().mean()
        mae[variant] = (g["[M/H]"] - g["true_[M/H]"]).abs().mean()
        assert baseline > 0.3 and (variant == "method" or mae[variant] < TINY_MH_VS_MEAN * baseline), variant
    assert abs(mae["method"] - mae["no_finetune"]) > 0.01
    for variant, by_coverage in info["errors_by_coverage"].items():  # the same per group of truth.coverage
        est = pd.read_csv(out / f"estimates{'' if variant == 'method' else '_' + variant}.csv")
        for cov, group in truth.groupby("coverage"):
            d = est.merge(group, on="karmn", suffixes=("", "_true"))
            assert by_coverage[cov]["Teff"]["n"] == len(group)
            assert by_coverage[cov]["Teff"]["mae"] == pytest.approx((d["Teff"] - d["Teff_true"]).abs().mean())
    assert info["seed"] == 3 and info["profile"]["name"] == "tiny"
    assert set(info["holdout_coverage"]) == {"members", "residuals"}
    assert all(0 <= v <= 1 for by_variant in info["holdout_coverage"].values() for cov in by_variant.values()
               for v in cov.values())
    assert (out / "models" / "ae_0.keras").exists() and (out / "models" / "ae_0_ft.keras").exists()
    assert "method" in stdout


def test_interrupted_run_resumes(tiny_run, tmp_path):
    """Ctrl-C (SIGINT) during a stage: one line on stderr, exit status 130, nothing of the stage
    under its final name; the same command again redoes that stage only, to the same estimates."""
    import signal

    out, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(out, run)  # modification times kept: every stage of the copy is up to date
    done = json.loads((run / "stages.json").read_text())
    for rel in done.pop("cnn")["outputs"]:  # as if the run had got as far as its last stage
        shutil.rmtree(run / rel) if (run / rel).is_dir() else (run / rel).unlink()
    (run / "stages.json").write_text(json.dumps(done))
    args = ["run", "--demo", "--profile", "tiny", "--seed", "3", "--out", str(run), "--quiet"]
    # the CNN training waits inside the stage until interrupted, so the signal always lands there
    # a terminal's Ctrl-C: the default handler, whatever an earlier test left this worker's children
    child = ("import signal, sys, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
             "from carmenes_dtl import cli, cnn\ntrain = cnn.train_variants\n"
             "def waiting(*a, **k):\n    print('training', flush=True)\n    time.sleep(120)\n    return train(*a, **k)\n"
             "cnn.train_variants = waiting\nsys.exit(cli.main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", child, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("training"):
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == ("carmenes-dtl run: interrupted; run the same command again to resume "
                                       "(finished stages are kept)")
    assert "cnn" not in json.loads((run / "stages.json").read_text()) and not (run / "estimates.csv").exists()
    res = cli(*args)
    assert res.stdout.count("up to date") == 7 and "] cnn done in" in res.stdout, res.stdout
    for variant in VARIANT_FILES:
        assert (run / f"estimates{variant}.csv").read_bytes() == (out / f"estimates{variant}.csv").read_bytes()
    assert not list(run.rglob("*.partial*"))


def test_latents_pair_the_saved_encoders(tiny_run):
    """`method` trains on the encoder saved before fine-tuning and predicts with the one after."""
    from carmenes_dtl import autoencoder, store
    from carmenes_dtl.rundir import Latents

    out, _ = tiny_run
    syn, obs = store.read(out / "synthetic.h5").flux, store.read(out / "observed.h5").flux
    pre, ft = autoencoder.load(out / "models" / "ae_0.keras"), autoencoder.load(out / "models" / "ae_0_ft.keras")
    lat = Latents.read(out / "latents.npz")
    for variant, (syn_model, obs_model) in {"method": (pre, ft), "finetuned_both": (ft, ft),
                                            "no_finetune": (pre, pre)}.items():
        a, b = lat.pair(variant, 0)
        np.testing.assert_allclose(a, autoencoder.encode(syn_model, syn), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, autoencoder.encode(obs_model, obs), rtol=1e-5, atol=1e-6)
    assert not np.allclose(autoencoder.encode(pre, obs), autoencoder.encode(ft, obs))


def test_run_resumes_finished_stages(tiny_run, tmp_path, capfd):
    out = tmp_path / "run"
    shutil.copytree(tiny_run[0], out)  # modification times kept: every stage of the copy is up to date
    before = (out / "estimates.csv").read_bytes()
    status, stdout, _ = cli_here(capfd, "run", "--demo", "--profile", "tiny", "--seed", "3", "--out", out, "--quiet")
    stages = ("demo", "prepare-synthetic", "prepare-observed", "autoencoders", "cnn-synthetic", "fine-tune", "encode",
              "cnn")
    assert status == 0 and stdout.count("up to date") == len(stages)
    assert all(f"] {name}: up to date" in stdout for name in stages), stdout
    assert (out / "estimates.csv").read_bytes() == before
    assert not list(out.rglob("*.partial*"))


def test_saved_models_open_after_only_importing_the_layers(tiny_run):
    """`keras.models.load_model` on every saved model (run and bundle), in a fresh interpreter,
    after `import carmenes_dtl.layers`: the autoencoders and the CNN ensembles of every input space."""
    out, _ = tiny_run
    models = sorted((out / "models").glob("*.keras")) + sorted((out / "model").glob("*.keras"))
    assert [m.name for m in models] == ["ae_0.keras", "ae_0_ft.keras", "ae_0.keras", "ae_0_ft.keras",
                                        "cnn_ft_0_0.keras", "cnn_pre_0_0.keras", "cnn_spectra_0_0.keras"]
    code = ("import sys, carmenes_dtl.layers, keras\n"
            "for path in sys.argv[1:]:\n"
            "    model = keras.models.load_model(path)\n"
            "    print(model.count_params(), sorted({type(l).__name__ for l in model.layers} - {'InputLayer'}))\n")
    res = subprocess.run([sys.executable, "-c", code, *map(str, models)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert all("'ContractiveDense'" in line for line in lines[:4])
    assert lines[0].split()[0] == lines[2].split()[0]  # the bundle's copy holds the same weights
    assert all("'MemberConv1D', 'MemberDense'" in line for line in lines[4:])
    assert "'BinPool'" in lines[6] and "'BinPool'" not in lines[4] + lines[5]  # the direct CNN bins the spectra


def test_predict_reproduces_the_run_estimates(tiny_run, tmp_path, capfd):
    """`predict` on the run's own observed set writes its estimates and flags byte for byte, every variant."""
    out, _ = tiny_run
    status, stdout, _ = cli_here(capfd, "predict", "--model", out / "model", "--observed", out / "observed.h5",
                                 "--out", tmp_path / "est.csv")
    assert status == 0 and stdout.startswith(f"estimates of 16 star(s) (method): {tmp_path / 'est.csv'}")
    assert (tmp_path / "est.csv").read_bytes() == (out / "estimates.csv").read_bytes()
    assert (tmp_path / "est_flags.csv").read_bytes() == (out / "flags.csv").read_bytes()
    for variant in ("finetuned_both", "no_finetune", "direct"):
        est, flags = bundle.predict(out / "model", out / "observed.h5", variant)
        cnn.write_estimates(est, tmp_path / f"{variant}.csv")
        assert (tmp_path / f"{variant}.csv").read_bytes() == (out / f"estimates_{variant}.csv").read_bytes(), variant
        assert flags.to_csv(index=False) == (out / f"flags_{variant}.csv").read_text(), variant
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    synthetic = hashlib.sha256((out / "synthetic.h5").read_bytes()).hexdigest()
    assert manifest["synthetic_sha256"] == synthetic and manifest["format"] == bundle.FORMAT
    assert manifest["window"] == {"start": 8800.0, "stop": 8835.0, "step": 0.01}
    assert manifest["profile"]["name"] == "tiny" and manifest["seed"] == 3 and manifest["backend"] == "jax"
    assert {"keras", "numpy", "package_version"} <= set(manifest)
    assert sorted(manifest["files"]) == sorted(f.name for f in (out / "model").iterdir() if f.name != "manifest.json")


def test_predict_with_a_truth_table_prints_the_errors_and_refuses_a_bad_table(tiny_run, tmp_path, capfd):
    """MAE, bias and scatter per parameter, as the run's own run.json has them for these stars; a file
    that is not a truth table fails before any work, in one line naming it."""
    out, _ = tiny_run
    info = json.loads((out / "run.json").read_text())
    args = ("predict", "--model", out / "model", "--observed", out / "observed.h5", "--out", tmp_path / "e.csv")
    status, stdout, _ = cli_here(capfd, *args, "--truth", out / "demo" / "truth.csv")
    assert status == 0 and "(16 of 16 stars have a true row)" in stdout
    for name, unit, d in (("Teff", "K", 1), ("logg", "dex", 3), ("[M/H]", "dex", 3), ("vsini", "km/s", 2)):
        e = info["errors_vs_truth"]["method"][name]
        assert (f"{name}: n 16, MAE {e['mae']:.{d}f}, bias {e['bias']:+.{d}f}, scatter {e['scatter']:.{d}f} {unit}"
                in stdout)
    partial = tmp_path / "teff_only.csv"
    partial.write_text("karmn,Teff\nJ00000+000,3200\n")
    for bad, why in ((out / "observed.h5", "not a CSV table"), (partial, "needs the columns ['logg', '[M/H]', 'vsini']")):
        status, _, stderr = cli_here(capfd, *args[:-1], tmp_path / "never.csv", "--truth", bad)
        lines = stderr.strip().splitlines()
        assert status == 2 and not (tmp_path / "never.csv").exists() and len(lines) == 1
        assert lines[0].startswith(f"carmenes-dtl predict: error: {bad}: ") and why in lines[0]


def test_custom_keras_objects_live_in_the_layers_module_which_every_loader_imports():
    import re

    import carmenes_dtl

    package = Path(carmenes_dtl.__file__).parent
    source = {p.stem: p.read_text() for p in package.glob("*.py")}
    assert {name for name, text in source.items() if "register_keras_serializable" in text} == {"layers"}
    loaders = {name for name, text in source.items()
               if name != "layers" and re.search(r"keras\.(saving|models)\.load_model", text)}
    assert loaders and all("from .layers import" in source[name] for name in loaders), loaders


def test_same_seed_same_estimates(tiny_run, tmp_path):
    out, _ = tiny_run
    cli("run", "--demo", "--profile", "tiny", "--seed", "3", "--out", tmp_path / "again", "--quiet")
    for variant in VARIANT_FILES:
        a = pd.read_csv(out / f"estimates{variant}.csv")
        b = pd.read_csv(tmp_path / "again" / f"estimates{variant}.csv")
        pd.testing.assert_frame_equal(a, b, rtol=1e-6)


#: `gap` on sets of the demo's model (gap "none") and of strongly gapped stars. Measured at seed 21,
#: 24 stars, with the twin-exact preprocessing of issue 15: domain AUC 0.76 ± 0.16 (none) vs 1.0
#: (strong); MMD² -0.03 (permutation p 0.98) vs 0.32 (p 0.002); nearest-neighbour ratio 1.16 vs 3.85.
#: With issue 17's demo (two gap families, stars resampled from the published estimates: 10 inside,
#: 14 at the edge of the grid's coverage): AUC 0.77 ± 0.15 vs 0.98 ± 0.05; MMD² -0.008 (p 0.56) vs
#: 0.44 (p 0.002); ratio 2.10 vs 5.87 (the clustered published stars bring their synthetic twins closer
#: together: median synthetic nearest-neighbour distance 0.31); two draws at "none": AUC 0.41.
#: (Before that preprocessing the pipeline itself made a gap: AUC 0.99, MMD² 0.157, ratio 2.68 at "none".)
GAP_STARS, GAP_SEED, GAP_FACTOR = 24, 21, 1.5


def test_gap_command_measures_the_gap(tmp_path):
    """Synthetic twins of the demo stars (their true parameters) against the stars observed with no
    gap and with a strong one: every metric separates the two levels, MMD finds no difference at no
    gap, and two draws of one observed population give an AUC near 0.5."""
    from carmenes_dtl import cli as command_line
    from carmenes_dtl import gap, prepare, store
    from carmenes_dtl.demo import write_demo
    from carmenes_dtl.demo_gap import GapMix

    none = write_demo(tmp_path / "none", GAP_SEED, GAP_STARS, GapMix.parse("none"), progress=False)
    write_demo(tmp_path / "strong", GAP_SEED, GAP_STARS, GapMix.parse("strong"), progress=False, phoenix=False)
    write_demo(tmp_path / "again", GAP_SEED + 1, GAP_STARS, GapMix.parse("none"), progress=False, phoenix=False)
    truth = pd.read_csv(none / "truth.csv").rename(columns={"Teff": "teff", "[M/H]": "mh"})
    syn = prepare.prepare_synthetic(none / "phoenix", tmp_path / "syn.h5", None, progress=False,
                                    nodes=truth[["teff", "logg", "mh", "vsini"]])
    metrics = {}
    for level in ("none", "strong", "again"):
        prepare.prepare_observed(tmp_path / level / "carmenes", tmp_path / f"{level}.h5", progress=False,
                                 template=prepare.template_from_set(syn))
    for level, options in (("none", ()), ("strong", ("--projections", "pca"))):  # the command, in this process
        args = ["gap", syn, tmp_path / f"{level}.h5", "--out", tmp_path / f"gap_{level}", *options]
        assert command_line.main(list(map(str, args))) == 0
        metrics[level] = json.loads((tmp_path / f"gap_{level}" / "gap.json").read_text())["metrics"]
    assert sorted(p.name for p in (tmp_path / "gap_none").glob("projection_*.png")) == [
        "projection_pca.png", "projection_tsne.png", "projection_umap.png"]
    assert [p.name for p in (tmp_path / "gap_strong").glob("projection_*.png")] == ["projection_pca.png"]
    assert metrics["strong"]["domain_auc"] > 0.95 and metrics["none"]["domain_auc"] < 0.9
    assert metrics["none"]["mmd_p_value"] > 0.05 and metrics["strong"]["mmd_p_value"] < 0.01
    for name in ("mmd2", "nn_distance_ratio"):
        assert GAP_FACTOR * metrics["none"][name] < metrics["strong"][name], name
    draws = [store.read(tmp_path / f"{level}.h5").flux for level in ("none", "again")]
    assert abs(gap.domain_auc(*draws)["domain_auc"] - 0.5) < 0.2


def test_validate_command(tiny_run, tmp_path, capfd):
    from carmenes_dtl import literature

    out, _ = tiny_run
    status, stdout, _ = cli_here(capfd, "validate", literature.published_estimates(tmp_path / "published.csv"),
                                 "--out", tmp_path / "val")
    assert status == 0 and "mar21" in stdout and (tmp_path / "val" / "comparison_stats.csv").exists()
    status, _, stderr = cli_here(capfd, "validate", out / "estimates.csv", "--out", tmp_path / "val2")
    assert status == 2 and "no star matches any catalogue" in stderr


@pytest.fixture(scope="module")
def bad_inputs(tiny_run, tmp_path_factory):
    """Paths the error cases name: a non-HDF5 file, 100-pixel sets, a grid node outside the archive."""
    from carmenes_dtl import store

    out, _ = tiny_run
    d = tmp_path_factory.mktemp("bad")
    (d / "bad.h5").write_text("not an HDF5 file\n")
    wave = np.linspace(8800, 8801, 100)
    flux = np.random.default_rng(0).uniform(0.5, 1, (6, 100))
    store.write(d / "syn100.h5", flux, wave, pd.DataFrame({"teff": [3000.0] * 6, "logg": 5.0, "mh": 0.0, "vsini": 2.0}))
    store.write(d / "obs100.h5", flux, wave, pd.DataFrame({"karmn": [f"J0000{i}+000" for i in range(6)]}))
    pd.DataFrame({"teff": [5200.0], "logg": [5.0], "mh": [0.0]}).to_csv(d / "far.csv", index=False)
    other = store.read(out / "observed.h5")  # the demo stars, as if prepared on the window 9700-9735 Å
    store.write(d / "obs9700.h5", other.flux, other.wavelength + 900, other.parameters,
                {"window": {"start": 9700.0, "stop": 9735.0, "step": 0.01}})
    for name in ("v2", "corrupt", "unreadable", "broken"):
        shutil.copytree(out / "model", d / name)
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    (d / "v2" / "manifest.json").write_text(json.dumps({**manifest, "format": bundle.FORMAT + 1, "package_version": "9.0"}))
    (d / "broken" / "manifest.json").write_text(json.dumps(manifest)[:-100])
    for name in ("corrupt", "unreadable"):
        with open(d / name / "cnn_pre_0_0.keras", "r+b") as f:
            f.truncate(1000)
    files = {**manifest["files"],  # an altered model whose digest was updated: it passes the check, Keras refuses it
             "cnn_pre_0_0.keras": hashlib.sha256((d / "unreadable" / "cnn_pre_0_0.keras").read_bytes()).hexdigest()}
    (d / "unreadable" / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    pd.DataFrame({"teff": [3300.0], "log_g": [5.0]}).to_csv(d / "nocols.csv", index=False)
    store.write(d / "nanpar.h5", flux, wave, pd.DataFrame({"teff": [np.nan] * 6, "logg": 5.0, "mh": 0.0, "vsini": 2.0}))
    return {"MODEL": out / "model", "OBS9700": d / "obs9700.h5", "V2": d / "v2", "CORRUPT": d / "corrupt",
            "UNREADABLE": d / "unreadable", "BROKEN": d / "broken", "NOMODEL": out / "models", "BAD": d / "bad.h5",
            "SYN": out / "synthetic.h5", "OBS": out / "observed.h5", "SYN100": d / "syn100.h5",
            "OBS100": d / "obs100.h5", "AE": out / "models" / "ae_0.keras", "PHX": out / "demo" / "phoenix",
            "CARM": out / "demo" / "carmenes", "FAR": d / "far.csv", "NOCOLS": d / "nocols.csv", "OUT": d / "out",
            "DIR": d, "NANSYN": d / "nanpar.h5", "MISSING": d / "missing.csv", "UNDERFILE": d / "bad.h5" / "sub"}


CLI_ERRORS = [
    (["gap", "BAD", "BAD", "--out", "OUT"], r"bad\.h5: not a spectrum set \(not an HDF5 file: .*signature"),
    (["run", "--synthetic", "BAD", "--observed", "OBS", "--out", "OUT"], r"bad\.h5: not a spectrum set"),
    (["run", "--synthetic", "SYN", "--observed", "SYN", "--out", "OUT"],
     r"synthetic\.h5: not an observed set \(no karmn column\)"),
    (["demo-data", "OUT", "--n-stars", "-3"], r"argument --n-stars: expected a positive whole number, got '-3'"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "OUT", "--grid", "FAR"],
     r"phoenix: node Teff=5200 logg=5 \[M/H\]=0 lies outside the archive \(its corner Teff=5200"),
    (["run", "--synthetic", "SYN", "--out", "OUT"], r"only --synthetic given: give both --synthetic SYN\.h5 and"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "OUT", "--vsini", "2,fast"],
     r"argument --vsini: expected comma-separated numbers in km/s, got '2,fast'"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "OUT", "--vsini", "0,10"],
     r"argument --vsini: vsini values must lie in \(0, 500\) km/s, got '0,10'"),
    (["run", "--window", "8835,8800", "--out", "OUT"], r"argument --window: window stop must exceed start, got '8835,8800'"),
    (["prepare-observed", "--carmenes-dir", "PHX", "--out", "OUT", "--window", "8800"],
     r"argument --window: window must be 'start,stop' in Å, got '8800'"),
    (["run", "--synthetic", "SYN", "--observed", "OBS", "--window", "8805,8830", "--out", "OUT"],
     r"--window 8805,8830 does not match .*synthetic\.h5's grid 8800\.00-8835\.00 Å"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "OUT", "--scheduler", "thread"],
     r"argument --scheduler: scheduler must be one of threads, processes, .*got 'thread'"),
    (["fetch-literature", "--catalogue", "mar22", "--out", "OUT"], r"unknown catalogue 'mar22'; choose from mar21, "),
    (["demo-data", "OUT", "--gap", "strong", "--gap-mix", "shared=1"],
     r"argument --gap-mix: not allowed with argument --gap"),
    (["demo-data", "OUT", "--gap-mix", "degenerate=1,noise=2"],
     r"argument --gap-mix: gap 'degenerate=1,noise=2': 'noise=2' is not degenerate=X or shared=Y"),
    (["prepare-observed", "--carmenes-dir", "CARM", "--out", "OUT", "--window", "9700,9735"],
     r"needs RV templates: give --template"),
    (["prepare-observed", "--carmenes-dir", "CARM", "--out", "OUT", "--window", "9700,9735", "--template", "demo"],
     r"demo line model: window 9700\.0-9735\.0 Å"),
    (["gap", "SYN", "OBS", "--out", "OUT", "--projections", "pca,isomap"],
     r"argument --projections: projections must be among pca, tsne, umap, got 'pca,isomap'"),
    (["gap", "SYN", "OBS", "--out", "OUT", "--projections", ","],
     r"argument --projections: projections must be among pca, tsne, umap, got ','"),
    (["run", "--synthetic", "SYN", "--observed", "OBS", "--gap", "none", "--out", "OUT"],
     r"--gap sets the demo survey: drop it with --synthetic and --observed"),
    (["run", "--synthetic", "SYN", "--observed", "OBS", "--stars", "uniform", "--out", "OUT"],
     r"--stars sets the demo survey: drop it with --synthetic and --observed"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "OUT", "--grid", "NOCOLS"],
     r"nocols\.csv: grid CSV lacks column\(s\) logg, mh \(needs teff, logg, mh; vsini optional\)"),
    (["fetch-literature", "--catalogue", "interferometric", "--out", "OUT"],
     r"interferometric: the paper's benchmark compilation is not on VizieR; use --from-csv FOLDER"),
    (["fetch-literature", "--from-csv", "DIR", "--catalogue", "paper", "--out", "OUT"],
     r"bad/?\d*/final_estimations\.csv: CSV for paper not found"),
    (["gap", "SYN100", "OBS100", "--latent", "AE", "--out", "OUT"],
     r"ae_0\.keras: the model takes spectra of 3501 pixels, the sets have 100"),
    (["predict", "--model", "MODEL", "--observed", "OBS9700", "--out", "OUT"],
     r"obs9700\.h5: wavelength grid 9700\.00-9735\.00 Å \(3501 pixels\) is not the window 8800-8835 Å "
     r"\(3501 pixels\) of the model .*model$"),
    (["predict", "--model", "V2", "--observed", "OBS", "--out", "OUT"],
     rf"v2/manifest\.json: bundle format {bundle.FORMAT + 1} \(written by carmenes-dtl 9\.0\); carmenes-dtl .* reads "
     rf"format {bundle.FORMAT}$"),
    (["predict", "--model", "CORRUPT", "--observed", "OBS", "--out", "OUT"],
     r"corrupt/cnn_pre_0_0\.keras: corrupt \(its SHA-256 differs from the manifest's\)"),
    (["predict", "--model", "UNREADABLE", "--observed", "OBS", "--out", "OUT"],
     r"unreadable/cnn_pre_0_0\.keras: Keras 3\.\S+ cannot open this model \(saved with Keras 3\.\S+\): \w+"),
    (["predict", "--model", "BROKEN", "--observed", "OBS", "--out", "OUT"],
     r"broken/manifest\.json: corrupt bundle manifest \(JSONDecodeError: "),
    (["predict", "--model", "NOMODEL", "--observed", "OBS", "--out", "OUT"],
     r"models: not a model bundle \(no manifest\.json\); `carmenes-dtl run` writes one in RUN/model"),
    (["predict", "--model", "MODEL", "--observed", "SYN", "--out", "OUT"],
     r"synthetic\.h5: not an observed set \(no karmn column\)"),
    (["predict", "--model", "MODEL", "--observed", "OBS", "--out", "OUT", "--variant", "best"],
     r"argument --variant: invalid choice: 'best' \(choose from 'method', 'finetuned_both', 'no_finetune', "
     r"'direct', 'method_aligned'\)"),
    # a file of the wrong kind, a folder, or nothing, where a file is expected (issue 26)
    (["validate", "OBS", "--out", "OUT"], r"observed\.h5: not an estimates CSV but an HDF5 file \(a spectrum set\?\)$"),
    (["validate", "AE", "--out", "OUT"], r"ae_0\.keras: not an estimates CSV but a zip archive \(a \.keras model\?\)$"),
    (["validate", "DIR", "--out", "OUT"], r"bad/?\d*: a folder, not an estimates CSV$"),
    (["validate", "MISSING", "--out", "OUT"], r"missing\.csv: not found \(expected an estimates CSV\)$"),
    (["validate", "MISSING", "--out", "OUT", "--literature", "OBS"], r"argument --literature: \S*observed\.h5: not a folder$"),
    (["prepare-observed", "--carmenes-dir", "CARM", "--out", "OUT", "--template", "OBS"],
     r"observed\.h5: not a synthetic set but an observed one \(it has a karmn column\); give a set made by "
     r"prepare-synthetic$"),
    (["prepare-observed", "--carmenes-dir", "CARM", "--out", "OUT", "--template", "NANSYN"],
     r"RV templates \S*nanpar\.h5: 6 of 6 spectra lack a finite teff, logg, mh or vsini"),
    (["prepare-observed", "--carmenes-dir", "CARM", "--out", "OUT", "--template", "AE"],
     r"ae_0\.keras: not a spectrum set \(not an HDF5 file"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "OUT", "--grid", "OBS"],
     r"observed\.h5: not a grid CSV but an HDF5 file \(a spectrum set\?\)$"),
    (["prepare-synthetic", "--phoenix-dir", "PHX", "--out", "DIR"], r"argument --out: \S*bad/?\d* is a folder; give a "
                                                                   r"file name$"),
    (["import-grid", "NOCOLS", "--out", "OUT"], r"nocols\.csv: not a NumPy \.npy array of numbers but a text file$"),
    (["run", "--synthetic", "OBS", "--observed", "OBS", "--out", "OUT"],
     r"observed\.h5: not a synthetic set but an observed one \(it has a karmn column\)"),
    (["gap", "OBS", "SYN", "--out", "OUT"], r"observed\.h5: not a synthetic set but an observed one"),
    (["run", "--demo", "--out", "BAD"], r"argument --out: \S*bad\.h5 is a file, not a folder$"),
    (["gap", "SYN", "OBS", "--latent", "NOCOLS", "--out", "OUT"], r"nocols\.csv: Keras 3\.\S+ cannot open this "
                                                                 r"model \(saved with Keras \?\): ValueError: File format "
                                                                 r"not supported: filepath=\S+$"),
    (["demo-data", "DIR", "--n-stars", "2"], r"bad/?\d*: folder not empty; give a new or empty folder, or --overwrite to "
                                             r"replace the demo survey's phoenix/, carmenes/, truth\.csv, README\.txt"),
    (["demo-data", "UNDERFILE", "--n-stars", "2"], r"bad\.h5: a file stands where a folder is needed$"),
]


#: Cases also run as `python -m carmenes_dtl.cli` in a process of their own, where anything a fresh
#: process prints (library logs, warnings) would reach stderr; the others call `cli.main` in the
#: test's process (the same code, without a 3-s interpreter start each). A usage error, an error
#: from a stage, and one raised after Keras opened a model.
ENTRY_POINT_CASES = [c for c in CLI_ERRORS if " ".join(c[0][:3]) in ("gap BAD BAD", "demo-data OUT --n-stars",
                                                                       "predict --model UNREADABLE")]
assert len(ENTRY_POINT_CASES) == 3


def _assert_one_line_error(status, stderr, command, message):
    import re

    assert status == 2, stderr[-2000:]
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"carmenes-dtl {command}: error: "), stderr[-2000:]
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("args,message", CLI_ERRORS, ids=[" ".join(a[:3]) for a, _ in CLI_ERRORS])
def test_cli_errors_are_one_line_with_status_2(bad_inputs, capfd, args, message):
    status, _, stderr = cli_here(capfd, *[bad_inputs.get(a, a) for a in args])
    _assert_one_line_error(status, stderr, args[0], message)


@pytest.mark.parametrize("args,message", ENTRY_POINT_CASES, ids=[" ".join(a[:3]) for a, _ in ENTRY_POINT_CASES])
def test_entry_point_errors_are_one_line_with_status_2(bad_inputs, args, message):
    res = cli(*[bad_inputs.get(a, a) for a in args], check=False)
    _assert_one_line_error(res.returncode, res.stderr, args[0], message)
