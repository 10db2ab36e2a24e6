"""`carmenes-dtl experiment` on its one tiny cell: the command reproduces the committed table
(to round-off), its tables agree with the run's own error summary, and a cell that adopts the shared
stages gives the estimates of a plain run byte for byte."""
import json

import numpy as np
import pandas as pd
import pytest
from test_cli import cli, cli_here

from carmenes_dtl import experiment, pipeline
from carmenes_dtl.demo_gap import GapMix
from carmenes_dtl.rundir import RunFolder
from carmenes_dtl.snapshots import read_table
from carmenes_dtl.variants import VARIANTS

pytestmark = pytest.mark.integration
COMMITTED = experiment.TINY_RESULTS
#: The command that wrote `COMMITTED` (its header records it, with --out and --results).
COMMAND = ["experiment", "--profile", "tiny", "--seeds", "1", "--settings", "strong"]


@pytest.fixture(scope="module")
def tiny_cell(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    cli(*COMMAND, "--out", out / "exp", "--quiet", "--results", out / "experiment_tiny.csv")
    return out


#: Relative tolerance of the reproduced numbers. Float32 training rounds differently on other
#: CPUs (measured: up to 1.0e-5 relative between two x86-64 machines with the same locked
#: packages); a change of the method moves them by percents.
RTOL = 1e-3


def _same_table(got, expected):
    """Equal text columns and numbers within `RTOL` (NaN where NaN)."""
    a, b = (read_table(p)[0] for p in (got, expected))
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    numeric = [c for c in b.columns if pd.api.types.is_numeric_dtype(b[c])]
    pd.testing.assert_frame_equal(a.drop(columns=numeric), b.drop(columns=numeric))
    np.testing.assert_allclose(a[numeric].to_numpy(float), b[numeric].to_numpy(float), rtol=RTOL, atol=1e-9,
                               equal_nan=True)


def test_the_command_reproduces_the_committed_cell(tiny_cell):
    """Every number of both committed tables within `RTOL` (bytes differ between CPUs in the last digits)."""
    _same_table(tiny_cell / "experiment_tiny.csv", COMMITTED)
    intervals = COMMITTED.with_name("experiment_tiny_intervals.csv")
    _same_table(tiny_cell / intervals.name, intervals)
    table, meta = read_table(COMMITTED)
    assert meta["command"].startswith("carmenes-dtl " + " ".join(COMMAND))
    assert {"commit", "date", "keras", "backend", "numpy", "python"} <= set(meta) and meta["profile"] == "tiny"
    assert set(table["setting"]) == {"strong"} and set(table["seed"]) == {1}
    assert len(table[table["region"] == "all"]) == len(VARIANTS) * 4 and set(table["region"]) <= {"all", "inside", "edge"}
    # every star of the truth table is estimated or counted as excluded
    assert (table["n_estimated"] + table["n_excluded"] == table["n_truth"]).all() and (table["n_truth"] == 16).all()


def test_tables_agree_with_the_runs_error_summary(tiny_cell):
    """MAE and bias from `validation.errors` (run.json), n from the estimates files; the intervals'
    point differences from the table's MAEs."""
    exp = tiny_cell / "exp"
    table = pd.read_csv(exp / "experiment.csv").query("region == 'all'").set_index(["variant", "parameter"])
    info = json.loads((exp / "strong" / "seed1" / "run.json").read_text())
    for variant, errs in info["errors_vs_truth"].items():
        n = len(RunFolder(exp / "strong" / "seed1").estimates(variant))
        for p, e in errs.items():
            row = table.loc[(variant, p)]
            assert row["n"] == e["n"] == n and row["mae"] == pytest.approx(e["mae"], rel=1e-12)
            assert row["bias"] == pytest.approx(e["bias"], rel=1e-12, abs=1e-12)
    stars = pd.read_csv(exp / "experiment_stars.csv")
    assert np.allclose(stars["error"], stars["estimate"] - stars["truth"])
    iv = pd.read_csv(exp / "experiment_intervals.csv").query("quantity == 'mae_difference'")
    for r in iv.itertuples():
        expected = table.loc[(r.variant, r.parameter), "mae"] - table.loc[(r.reference, r.parameter), "mae"]
        assert r.estimate == pytest.approx(expected, rel=1e-9) and r.low <= r.estimate <= r.high
    assert table["latent_auc"].between(0, 1).all() and (table["twin_distance"] > 0).all()
    assert (exp / "experiment_mae.png").stat().st_size > 10_000


def test_twin_distances_pair_the_encoders_each_variant_uses(tiny_cell):
    """Recomputed here: the twins through the ORIGINAL encoder against the observed latents of the
    original (`no_finetune`) and of the FINE-TUNED encoder (`method`), through the fine-tuned one
    against its own (`finetuned_both`); the spectra themselves for `direct`."""
    from carmenes_dtl import autoencoder, store, twin

    cell = tiny_cell / "exp" / "strong" / "seed1"
    obs = store.read(cell / "observed.h5")
    truth = pd.read_csv(cell / "demo" / "truth.csv").set_index("karmn").loc[obs.parameters["karmn"]]
    twins = twin.exact_vectors(truth)
    enc = {ft: autoencoder.encode(autoencoder.load(cell / "models" / f"ae_0{'_ft' if ft else ''}.keras"), twins)
           for ft in (False, True)}
    lat = np.load(cell / "latents.npz")
    expected = {"no_finetune": (enc[False], lat["obs_pre_0"]), "method": (enc[False], lat["obs_ft_0"]),
                "finetuned_both": (enc[True], lat["obs_ft_0"]), "direct": (twins, obs.flux)}
    table = pd.read_csv(tiny_cell / "exp" / "experiment.csv").query("region == 'all' and parameter == 'Teff'")
    for variant, (a, b) in expected.items():
        got = table.set_index("variant").loc[variant, "twin_distance"]
        assert got == pytest.approx(np.linalg.norm(a - b, axis=1).mean(), rel=1e-6), variant


def test_adopted_stages_give_the_plain_runs_estimates(tiny_cell, tmp_path, capsys):
    base = tiny_cell / "exp" / "strong" / "seed1"
    pipeline.run(tmp_path, pipeline.DemoInput(GapMix.parse("strong"), shared=base), "tiny", seed=1, progress=False)
    log = capsys.readouterr().out
    assert all(f"{name}: up to date" in log for name in pipeline.SHARED_STAGES), log
    assert not (tmp_path / "demo" / "phoenix").exists()
    for variant in ("method", "finetuned_both", "no_finetune", "direct"):
        name = RunFolder(tmp_path).estimates_file(variant).name
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes(), name
    # another gap adopts the same shared stages and runs the rest: its own observed set, fine-tuning and CNNs
    pipeline.run(tmp_path / "none", pipeline.DemoInput(GapMix.parse("none"), shared=base), "tiny", seed=1,
                 progress=False)
    log = capsys.readouterr().out
    assert all(f"{name}: up to date" in log for name in pipeline.SHARED_STAGES), log
    assert all(f"{name} done in" in log for name in ("prepare-observed", "fine-tune", "encode", "cnn")), log


def test_bad_setting_is_one_line_with_status_2(tmp_path, capfd):
    status, _, stderr = cli_here(capfd, "experiment", "--out", tmp_path, "--settings", "none,bogus")
    assert status == 2 and "bogus" in stderr and len(stderr.strip().splitlines()) == 1
