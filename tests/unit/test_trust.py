"""What a run says about its own headline: autoencoders that disagree, intervals that miss the truth,
and settings overridden one by one (issue 25)."""
import numpy as np
import pandas as pd
import pytest
from types import SimpleNamespace

from carmenes_dtl import cnn, validation
from carmenes_dtl.config import PARAMETERS, PROFILES, with_overrides


def _ensemble(predictions: np.ndarray):
    """A stand-in ensemble whose members predict `predictions` (members x stars) for every parameter."""
    return SimpleNamespace(member_predictions=lambda x: {p: predictions for p in PARAMETERS})


def test_disagreement_is_the_range_of_medians_against_the_members_own_spread():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 10, size=(5, 4))  # 5 members, 4 stars, spread ~10
    # star by star offsets of the second autoencoder: far beyond the spread for the first two stars only
    offsets = np.array([500.0, -300.0, 2.0, 0.0])
    got = cnn.disagree([3000 + base, 3000 + base[::-1] + offsets])
    # by hand: range of the two medians against the mean of the two half 16-84 widths
    med = [np.median(3000 + base, axis=0), np.median(3000 + base[::-1] + offsets, axis=0)]
    half = [np.subtract(*np.percentile(b, [84, 16], axis=0)) / 2 for b in (base, base[::-1] + offsets)]
    assert got.tolist() == (np.abs(med[0] - med[1]) > (half[0] + half[1]) / 2).tolist() == [True, True, False, False]


def test_estimate_flags_disagreement_only_with_several_autoencoders():
    a, b = np.full((3, 2), 3000.0) + [[0], [5], [-5]], np.full((3, 2), 3600.0) + [[0], [5], [-5]]
    _, flags = cnn.estimate([_ensemble(a), _ensemble(b)], [None, None], ["s1", "s2"])
    assert flags["disagree_Teff"].tolist() == [True, True]
    _, alone = cnn.estimate([_ensemble(a)], [None], ["s1", "s2"])
    assert not any(c.startswith("disagree_") for c in alone)


def test_autoencoder_report_offsets_bias_and_scatter_by_hand():
    a = np.array([[3000.0, 3100.0], [3010.0, 3110.0], [2990.0, 3090.0]])  # medians 3000, 3100
    b = a + 400.0  # medians 3400, 3500
    truth = np.column_stack([[3050.0, 3150.0]] + [[0.0, 0.0]] * 3)
    rep = cnn.autoencoder_report([_ensemble(a), _ensemble(b)], [None, None], truth).set_index(
        ["parameter", "autoencoder"]).loc["Teff"]
    pooled = np.median(np.vstack([a, b]), axis=0)  # 3205, 3305
    assert rep.loc[0, "offset"] == pytest.approx(np.mean([3000, 3100] - pooled))  # -205
    assert rep.loc[1, "offset"] == pytest.approx(np.mean([3400, 3500] - pooled))  # +195
    assert rep.loc[0, "bias"] == pytest.approx(-50.0) and rep.loc[1, "bias"] == pytest.approx(350.0)
    assert rep.loc[0, "scatter"] == pytest.approx(0.0, abs=1e-9)
    assert rep.loc[0, "half_width"] == pytest.approx((np.percentile([2990, 3000, 3010], 84)
                                                      - np.percentile([2990, 3000, 3010], 16)) / 2)


def test_warnings_name_the_split_headline_and_its_coverage():
    info = {"disagreement": {"method": {"Teff": 0.9, "logg": 0.1}, "no_finetune": {"Teff": 1.0}},
            "truth_coverage": {"method": {"Teff": 0.02, "logg": 0.7, "[M/H]": 0.95}}}
    lines = validation.warnings(info)
    assert len(lines) == 2
    assert "90% of the stars in Teff" in lines[0] and "logg" not in lines[0]
    assert "2% of the stars in Teff" in lines[1] and "95% of the stars in [M/H]" in lines[1] and "logg" not in lines[1]
    assert validation.warnings({"disagreement": {"method": {"Teff": 0.2}},
                                "truth_coverage": {"method": {"Teff": 0.68}}}) == []


def test_overrides_reach_each_section_and_name_a_bad_assignment():
    quick = PROFILES["quick"]
    p = with_overrides(quick, ["finetune.learning_rate=1e-3", "cnn.inputs=standardised", "n_nodes=40", "ae.patience=None",
                               "vsini=[2, 10]", "window.stop=8830"])
    assert (p.finetune.learning_rate, p.cnn.inputs, p.n_nodes, p.ae.patience, p.vsini) == \
        (1e-3, "standardised", 40, None, (2, 10))
    assert p.window.n == 3001 and p.ae.n_in_grid == quick.ae.n_in_grid and quick.cnn.inputs == "raw"
    for bad, message in (("cnn.bogus=1", "expected SECTION.FIELD=VALUE"), ("epochs", "expected SECTION.FIELD=VALUE"),
                         ("cnn.inputs=weird", "must be one of"), ("name=x", "expected SECTION.FIELD=VALUE")):
        with pytest.raises(ValueError, match=message):
            with_overrides(quick, [bad])


def test_truth_coverage_counts_stars_inside_their_intervals():
    est = pd.DataFrame({"karmn": ["a", "b", "c", "d"], "Teff": [3000.0] * 4, "e_Teff": [50.0] * 4,
                        "E_Teff": [100.0] * 4})
    table = est.assign(true_Teff=[2940.0, 2960.0, 3090.0, 3110.0])  # outside, inside, inside, outside
    for name in ("logg", "[M/H]", "vsini"):
        table[[name, f"e_{name}", f"E_{name}", f"true_{name}"]] = [0.0, 1.0, 1.0, 0.0]
    assert validation.coverage(table)["Teff"] == 0.5


def test_overrides_of_a_profile_give_it_back():
    from carmenes_dtl.config import overrides_of

    quick = PROFILES["quick"]
    changed = with_overrides(quick, ["cnn.inputs=standardised", "n_nodes=40", "finetune.split_seed=None"])
    assert sorted(overrides_of(changed)) == ['cnn.inputs="standardised"', "finetune.split_seed=null", "n_nodes=40"]
    assert with_overrides(quick, overrides_of(changed)) == changed and overrides_of(quick) == []


def test_back_map_recovers_an_affine_drift_fitted_on_synthetic_latents_only():
    """A drift z_ft = z_pre A + b (what fine-tuning does to the code, issue 25) is undone on new
    (observed) latents by the map fitted on synthetic pairs; the expected values are the drift's inverse."""
    from carmenes_dtl import transfer

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 4)) + 3 * np.eye(4), rng.normal(size=4)
    syn_pre = rng.normal(size=(200, 4))
    obs_pre = rng.normal(2.0, 1.0, size=(30, 4))  # another domain, never seen by the fit
    back = transfer.back_map(syn_pre, syn_pre @ a + b)
    np.testing.assert_allclose(transfer.apply_affine(back, obs_pre @ a + b), obs_pre, atol=1e-4)
    np.testing.assert_allclose(back[:-1], np.linalg.inv(a), atol=1e-8)
