"""The `paper` profile against the authors' settings, the seeds and the CNN-stage wiring."""
import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import cnn, config, stats, transfer
from carmenes_dtl.config import PROFILES, AESettings, CNNSettings
from carmenes_dtl.rundir import Latents
from carmenes_dtl.snapshots import snapshot
from carmenes_dtl.variants import VARIANTS


def test_paper_profile_equals_published_settings_field_by_field():
    """Equal to the published value, or to a `paper` value recorded beside it with its reason."""
    entries = config.published_settings()
    paper = PROFILES["paper"]
    for e in entries:
        ours = config.setting(paper, e["field"])
        expected = e.get("paper", e["value"])
        if isinstance(expected, list) and expected and isinstance(expected[0], float):
            np.testing.assert_allclose(ours, expected, rtol=1e-12, err_msg=e["field"])
        else:
            assert ours == expected, e["field"]
        assert e["source"], e["field"]
        assert "paper" not in e or e["why"], e["field"]
    named = {e["field"] for e in entries}
    for prefix, cls in (("ae", AESettings), ("cnn", CNNSettings)):
        for f in dataclasses.fields(cls):
            if f.name != "widths":
                assert f"{prefix}.{f.name}" in named, f"{prefix}.{f.name} has no published value"
    assert {f"cnn.widths.{p}" for p in config.PARAMETERS} <= named


def test_published_grid_is_the_authors_linspace():
    """autoencoder_grid_search.py:50."""
    ae = PROFILES["paper"].ae
    np.testing.assert_allclose(ae.n_in_grid, np.linspace(2**10, 2**11, 5))
    np.testing.assert_allclose(ae.l1_grid, np.linspace(8e-8, 1.2e-7, 5), rtol=1e-12)
    assert PROFILES["paper"].window.n == 3501


def test_unknown_widths_are_marked_not_published():
    by_field = {e["field"]: e for e in config.published_settings()}
    assert by_field["cnn.widths.teff"]["source"].startswith("cnn_training.py")
    for p in ("logg", "mh", "vsini"):
        e = by_field[f"cnn.widths.{p}"]
        assert e["published"] is False and "not published in the code" in e["note"]
        assert e["value"] == by_field["cnn.widths.teff"]["value"]


def test_deviations_table_explains_every_difference():
    rows = config.deviations()
    assert len(rows) == len(config.published_settings())
    differing = [r for r in rows if r["quick"] != r["published"]]
    assert {"ae.epochs", "cnn.epochs", "cnn.targets"} <= {r["setting"] for r in differing}
    assert all(r["why"] for r in differing), [r["setting"] for r in differing if not r["why"]]
    recorded = {e["field"] for e in config.published_settings() if "paper" in e}
    assert recorded == {"cnn.holdout_fraction"}
    assert all(r["paper"] == r["published"] or r["setting"] in recorded for r in rows)


def test_every_departure_of_quick_is_size_schedule_or_method_and_the_last_two_are_measured():
    rows = [r for r in config.deviations() if r["quick"] != r["paper"]]
    assert {r["kind"] for r in rows} <= set(config.DEPARTURE_KINDS), [(r["setting"], r["kind"]) for r in rows]
    assert all(r["kind"] for r in rows), [r["setting"] for r in rows if not r["kind"]]
    unmeasured = [r["setting"] for r in rows if r["kind"] != "size" and "data/results/" not in r["measured"]]
    assert not unmeasured, unmeasured
    for r in rows:  # every table a measurement names is shipped
        for name in re.findall(r"data/results/(\w+)", r["measured"]):
            assert any(snapshot("results").glob(f"{name}*.csv")), (r["setting"], name)
    assert {r["setting"] for r in rows if r["kind"] == "method"} == {"cnn.targets"}
    assert {"ae.epochs", "cnn.epochs", "ae.learning_rate"} <= {r["setting"] for r in rows if r["kind"] == "schedule"}


def test_implementation_deviations_are_recorded():
    """The fixed random_state 42 and the joint-graph training differ from the authors' code beyond any setting."""
    rows = {r["what"]: r for r in config.implementation_deviations()}
    assert {"random_state", "CNN training graph"} <= set(rows)
    assert all(r["published"] and r["here"] and r["source"] and r["why"] for r in rows.values())


def test_bad_option_values_are_named():
    with pytest.raises(ValueError, match="'gaussian'"):
        AESettings(penalty="gaussian")
    with pytest.raises(ValueError, match="uncertainty"):
        CNNSettings(uncertainty="bootstrap")
    with pytest.raises(ValueError, match="widths"):
        CNNSettings(widths=(("teff", 1, 1, 1),))
    with pytest.raises(ValueError, match="'cnnn'"):
        config.stage_seed(1, "cnnn")


def test_stage_seeds_are_spawned_from_one_seed_sequence():
    root = np.random.SeedSequence(42)
    stage = root.spawn(len(config.SEED_STAGES))[config.SEED_STAGES.index("cnn")]
    member = stage.spawn(3)[1].spawn(2)[1]
    assert config.stage_seed(42, "cnn", 1, 1) == int(member.generate_state(1)[0])
    seeds = {config.stage_seed(42, st, i) for st in config.SEED_STAGES for i in range(3)}
    assert len(seeds) == 3 * len(config.SEED_STAGES)


class _SpectrumSet:
    def __init__(self, flux, params):
        self.flux, self.parameters = flux, params

    @property
    def labels(self):
        return self.parameters[list(config.PARAMETERS)].to_numpy(float)


def test_each_variant_trains_and_predicts_on_its_pairing(monkeypatch):
    """The CNNs of `method` see syn_pre for training and obs_ft for prediction, and so on."""
    rng = np.random.default_rng(0)
    nodes = pd.DataFrame({"teff": np.repeat(np.arange(20) * 100.0 + 3000, 2), "logg": 5.0, "mh": 0.0,
                          "vsini": np.tile([2.0, 10.0], 20)})
    lat = Latents({(d, t, 0): np.full((40 if d == "syn" else 5, 4), code, np.float32)
                   for code, (d, t) in enumerate((("syn", "pre"), ("syn", "ft"), ("obs", "pre"), ("obs", "ft"),
                                                  ("obs", "aligned"), ("syn", "aligned")))})
    syn = _SpectrumSet(0.1 * rng.random((40, 16)) + 10, nodes)
    obs = _SpectrumSet(0.1 * rng.random((5, 16)) + 20, pd.DataFrame({"karmn": list("abcde")}))
    trained, applied, held, rows = [], {}, {}, []

    def fake_train(x, y, s, seed, pool=0, progress=False):
        trained.append((float(np.round(x.mean())), pool, seed))
        rows.append(len(x))
        return SimpleNamespace(name=f"ens{len(trained) - 1}", history={})

    def fake_estimate(ensembles, inputs, karmn, uncertainty):
        seen = applied if len(inputs[0]) == 5 else held
        name = ensembles[0].name
        seen[name] = seen.get(name, []) + [float(np.round(inputs[0].mean()))]
        est = pd.DataFrame({c: np.zeros(len(inputs[0])) for c in config.estimate_columns()})
        return est, est

    monkeypatch.setattr(cnn, "train_ensemble", fake_train)
    monkeypatch.setattr(cnn, "estimate", fake_estimate)
    monkeypatch.setattr(cnn, "autoencoder_report", lambda ens, inputs, truth=None: pd.DataFrame(columns=["autoencoder", "parameter"]))
    res = cnn.train_variants(syn, obs, lat, 1, CNNSettings(holdout_fraction=0.1), seed=42)
    assert [(m, p) for m, p, _ in trained] == [(0.0, 0), (1.0, 0), (10.0, 8)]  # syn_pre, syn_ft, spectra
    # method obs_ft, no_finetune obs_pre, method_aligned obs_aligned; finetuned_both obs_ft; direct the spectra
    assert applied == {"ens0": [3.0, 2.0, 4.0], "ens1": [3.0], "ens2": [20.0]}
    # held-out nodes go through the prediction space, once per pairing and uncertainty method:
    # method syn_ft, no_finetune syn_pre, method_aligned syn_aligned; finetuned_both syn_ft; direct the spectra
    assert held == {"ens0": [1.0, 1.0, 0.0, 0.0, 5.0, 5.0], "ens1": [1.0, 1.0], "ens2": [10.0, 10.0]}
    assert list(res["estimates"]) == list(VARIANTS)
    assert set(res["holdout"].groupby(["variant", "uncertainty"]).groups) == \
        {(v, u) for v in VARIANTS for u in ("members", "residuals")}
    assert len({seed for *_, seed in trained}) == 3
    assert rows == [36] * 3  # 2 of the 20 nodes (4 rows) held out
    trained.clear(), rows.clear()
    assert cnn.train_variants(syn, obs, lat, 1, CNNSettings(), seed=42)["holdout"].empty
    assert rows == [40] * 3  # published: the CNNs see every synthetic spectrum


def test_measured_deviations_have_both_choices_paired_over_seeds():
    table = config.measured_deviations()
    measured = set(table.index.get_level_values("option"))
    assert "uncertainty" in measured
    assert measured <= {"penalty", "patience", "inputs", "targets", "split", "strata", "uncertainty"}
    assert table[["published mean", "improvement mean", "95% low", "95% high"]].notna().all().all()
    assert (table["seeds"] >= 3).all()
    assert (table["95% low"] <= table["loss difference"]).all() and (table["loss difference"] <= table["95% high"]).all()
    by_option = table.xs("holdout_coverage", level="metric")
    assert (by_option.loc["uncertainty", "published value"] == "members").all()


def test_measured_variants_have_intervals_and_pair_with_method():
    table = config.measured_variants()
    assert set(table.index.get_level_values("variant")) == {"method", "no_finetune", "finetuned_both"}
    assert (table["mean 95% low"] <= table["mean"]).all() and (table["mean"] <= table["mean 95% high"]).all()
    other = table.drop(index="method", level="variant")
    assert (other["vs method: seeds"] >= 3).all()
    # method and no_finetune are the same CNNs on the held-out nodes
    assert (other.sort_index().xs(("no_finetune", "holdout_mae"))["vs method: verdict"] == "identical").all()


def test_t_interval_by_hand():
    """Values 1, 2, 3: mean 2, s = 1, s/sqrt(3) = 0.57735, t(0.975, 2 dof) = 4.302653: 2 +- 2.484138."""
    mean, low, high = stats.t_interval([1.0, 2.0, 3.0])
    assert (mean, low, high) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138), abs=1e-6)


def test_affine_residual_is_zero_for_an_affine_map_and_near_one_without_relation():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(2000, 4))
    assert transfer.affine_residual(before, before @ rng.normal(size=(4, 3)) + 5.0) < 1e-12
    # independent: only (4 + 1) of 2000 degrees of freedom are fitted, 1 - 5/2000 = 0.9975 expected
    assert transfer.affine_residual(before, rng.normal(size=(2000, 3))) > 0.98


def test_stage_keys_hold_the_fields_runs_were_keyed_by_before_later_settings():
    """Settings added later (`config.ADDED_LATER`) enter a stage key only when changed, so a run made
    before them resumes: at their defaults the keys' fields are those of version 0.1.0."""
    ae_fields = {"n_in_grid", "l1_grid", "l1_layers", "latent_dim", "contractive_lambda", "penalty", "learning_rate",
                 "batch_size", "search_epochs", "search_loss", "cv_folds", "epochs", "test_size", "n_models", "patience"}
    cnn_fields = {"n_per_model", "epochs", "learning_rate", "batch_size", "widths", "padding", "inputs", "targets",
                  "split", "strata", "test_size", "holdout_fraction", "patience", "uncertainty"}
    assert set(config.key_of(AESettings())) == ae_fields
    assert set(config.key_of(CNNSettings())) == cnn_fields
    changed = config.key_of(CNNSettings(precision="bfloat16", direct_noise="observed"))
    assert (changed["precision"], changed["direct_noise"]) == ("bfloat16", "observed")
