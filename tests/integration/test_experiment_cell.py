"""`carmenes-dtl experiment` on its one tiny cell: the command reproduces the committed table
exactly, its tables agree with the run's own error summary, and a cell that adopts the shared
stages gives the estimates of a plain run byte for byte."""
import json

import numpy as np
import pandas as pd
import pytest
from test_cli import ROOT, cli

from carmenes_dtl import experiment, pipeline

pytestmark = pytest.mark.integration
COMMITTED = ROOT / "data" / "results" / "experiment_tiny.csv"
#: The command that wrote `COMMITTED` (its header records it, with --out and --results).
COMMAND = ["experiment", "--profile", "tiny", "--seeds", "1", "--settings", "strong"]


@pytest.fixture(scope="module")
def tiny_cell(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    cli(*COMMAND, "--out", out / "exp", "--quiet", "--results", out / "experiment_tiny.csv")
    return out


def _body(path):
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def test_the_command_reproduces_the_committed_cell(tiny_cell):
    """Exact equality of every number (measured: the cell's bytes do not change between runs on
    this machine's CPU backend)."""
    assert _body(tiny_cell / "experiment_tiny.csv") == _body(COMMITTED)
    intervals = COMMITTED.with_name("experiment_tiny_intervals.csv")
    assert _body(tiny_cell / intervals.name) == _body(intervals)
    table, meta = experiment.load_results(COMMITTED)
    assert meta["command"].startswith("carmenes-dtl " + " ".join(COMMAND))
    assert {"commit", "date", "keras", "backend", "numpy", "python"} <= set(meta) and meta["profile"] == "tiny"
    assert set(table["setting"]) == {"strong"} and set(table["seed"]) == {1} and len(table) == 4 * 4


def test_tables_agree_with_the_runs_error_summary(tiny_cell):
    """MAE and bias from `pipeline.errors` (run.json), n from the estimates files; the intervals'
    point differences from the table's MAEs."""
    exp = tiny_cell / "exp"
    table = pd.read_csv(exp / "experiment.csv").query("region == 'all'").set_index(["variant", "parameter"])
    info = json.loads((exp / "strong" / "seed1" / "run.json").read_text())
    for variant, errs in info["errors_vs_truth"].items():
        n = len(pd.read_csv(pipeline.RunPaths(exp / "strong" / "seed1").estimates(variant)))
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


def test_adopted_stages_give_the_plain_runs_estimates(tiny_cell, tmp_path, capsys):
    base = tiny_cell / "exp" / "strong" / "seed1"
    pipeline.run(tmp_path, profile_name="tiny", seed=1, gap="strong", progress=False, shared=base)
    log = capsys.readouterr().out
    assert "prepare-synthetic: up to date" in log and "autoencoders: up to date" in log
    assert not (tmp_path / "demo" / "phoenix").exists()
    for variant in ("method", "finetuned_both", "no_finetune", "direct"):
        name = pipeline.RunPaths(tmp_path).estimates(variant).name
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes(), name


def test_bad_setting_is_one_line_with_status_2(tmp_path):
    res = cli("experiment", "--out", tmp_path, "--settings", "none,bogus", check=False)
    assert res.returncode == 2 and "bogus" in res.stderr and len(res.stderr.strip().splitlines()) == 1
