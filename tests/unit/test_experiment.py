"""The experiment's statistics against separate computations: bootstrap widths, slopes, per-region tables."""
import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import experiment, stats
from carmenes_dtl.demo_gap import GapMix
from carmenes_dtl.snapshots import read_table


def _paired(n_seeds, n_stars, diff, sigma, seed=5):
    rng = np.random.default_rng(seed)
    b = [np.abs(rng.normal(2, 1, n_stars)) for _ in range(n_seeds)]
    return [x + diff + rng.normal(0, sigma, n_stars) for x in b], b


def test_paired_bootstrap_covers_the_difference_with_the_analytic_width():
    """Per-star differences diff + N(0, sigma) with no seed effect: the point estimate is the mean
    difference (SE sigma/sqrt(N)); resampling seeds and then stars counts the within-seed scatter
    twice (once through the spread of the seed means), so the 95 % interval is about sqrt(2) times
    the analytic 2 * 1.96 * sigma / sqrt(N).

    Exactly, for these data: one resample's mean over S seeds of N stars has the variance
    [var_k(m_k) + mean_k(v_k) / N] / S (m_k, v_k: seed k's mean and plug-in variance), and the
    mean of 20 draws is close to normal: width 2 x 1.959964 x its square root. Measured width
    ratio over bootstrap seeds 1-7: 0.98-1.04 (2000 resamples); a 90 % interval gives 0.82-0.87."""
    a, b = _paired(20, 100, 0.3, 0.5)
    est, lo, hi = stats.paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert est == pytest.approx(np.mean(np.concatenate(a)) - np.mean(np.concatenate(b)), abs=1e-12)
    assert lo < 0.3 < hi
    d = np.array(a) - np.array(b)
    variance = (d.mean(axis=1).var() + d.var(axis=1).mean() / d.shape[1]) / d.shape[0]
    assert (hi - lo) / (2 * 1.959964 * np.sqrt(variance)) == pytest.approx(1.0, abs=0.07)
    analytic = 2 * 1.96 * 0.5 / np.sqrt(2000)
    assert (hi - lo) / analytic == pytest.approx(np.sqrt(2), rel=0.15)


def test_pairing_removes_the_shared_star_to_star_scatter():
    """b's stars scatter by 1, a = b + 0.3 exactly: paired, the interval has no width."""
    a, b = _paired(5, 50, 0.3, 0.0)
    est, lo, hi = stats.paired_bootstrap(a, b)
    assert (est, lo, hi) == pytest.approx((0.3, 0.3, 0.3), abs=1e-9)


def test_t_interval_by_hand_and_its_coverage_with_five_seeds():
    """Values 1..5: mean 3, SE sqrt(2.5/5), t(0.975, 4) = 2.776445 (tables): half-width 1.9632.
    With 5 seeds it covers the true mean about 95 % of the time (400 simulated experiments),
    where a percentile bootstrap over the seeds covers far less."""
    est, lo, hi = stats.t_interval([1, 2, 3, 4, 5])
    assert (est, lo, hi) == pytest.approx((3.0, 3 - 2.776445 * np.sqrt(0.5), 3 + 2.776445 * np.sqrt(0.5)), abs=1e-5)
    assert np.isnan(stats.t_interval([0.2])[1])
    rng = np.random.default_rng(4)
    draws = rng.normal(0.1, 0.05, (400, 5))
    t_cover = np.mean([lo < 0.1 < hi for _, lo, hi in map(stats.t_interval, draws)])
    boot = [stats.paired_bootstrap([[x] for x in d], n_boot=300, seed=1) for d in draws[:100]]
    boot_cover = np.mean([lo < 0.1 < hi for _, lo, hi in boot])
    assert 0.92 < t_cover < 0.98 and boot_cover < 0.9


def test_mh_slope_is_the_least_squares_slope_per_1000_k():
    rng = np.random.default_rng(0)
    teff = rng.uniform(3000, 4200, 30)
    err = 0.2 - 0.15 * (teff - 3000) / 1000 + rng.normal(0, 0.05, 30)
    assert experiment.mh_slope(teff, err) == pytest.approx(np.polyfit(teff / 1000, err, 1)[0], rel=1e-10)
    assert np.isnan(experiment.mh_slope(teff[:1], err[:1]))


def test_cell_rows_per_region_match_a_direct_computation():
    """Four stars, two regions: n, MAE and bias written out by hand."""
    err = {"Teff": [100.0, -50.0, 20.0, -10.0], "[M/H]": [0.1, 0.3, -0.2, 0.0]}
    teff = [3000.0, 3500.0, 4000.0, 3200.0]
    stars = pd.concat([pd.DataFrame({"karmn": list("abcd"), "variant": "method", "parameter": p, "Teff_true": teff,
                                     "truth": 0.0, "estimate": e, "error": e,
                                     "region": ["inside", "inside", "edge", "edge"]}) for p, e in err.items()])
    twins = pd.DataFrame({"variant": ["method"], "latent_auc": [0.7], "twin_distance": [1.5]})
    rows = experiment.summarise_cell(stars, twins).set_index(["parameter", "region"])
    assert rows.loc[("Teff", "all"), ["n", "mae", "bias"]].tolist() == pytest.approx([4, 45.0, 15.0])
    assert rows.loc[("Teff", "inside"), ["n", "mae", "bias"]].tolist() == pytest.approx([2, 75.0, 25.0])
    assert rows.loc[("[M/H]", "edge"), ["n", "mae", "bias"]].tolist() == pytest.approx([2, 0.1, -0.1])
    # [M/H] error against Teff/1000 on the edge stars: (4.0, -0.2), (3.2, 0.0): slope -0.25 dex per 1000 K
    assert rows.loc[("Teff", "edge"), "mh_slope_per_kK"] == pytest.approx(-0.25)
    assert rows.loc[("Teff", "all"), "latent_auc"] == 0.7 and np.isnan(rows.loc[("Teff", "edge"), "latent_auc"])


def test_named_settings_and_bad_ones(tmp_path):
    assert experiment.gap_mix("none") == GapMix() and experiment.gap_mix("strong") == GapMix(1, 1)
    assert experiment.gap_mix("degenerate", 0.5) == GapMix(0.5, 0)
    # the tables name levels, and every other setting by its scales (as the published ones do)
    labels = {s: experiment.gap_label(s, experiment.gap_mix(s)) for s in ("none", "shared", "both", "strong")}
    assert labels == {"none": "none", "shared": "degenerate=0,shared=0.5", "both": "degenerate=0.5,shared=0.5",
                      "strong": "strong"}
    with pytest.raises(ValueError, match="bogus"):
        experiment.gap_mix("bogus")
    for settings, seeds, what in ((["none", "none"], [1], "settings"), (["none"], [1, 1], "seeds")):
        with pytest.raises(ValueError, match=f"{what} repeat a value"):
            experiment.run_cells(tmp_path, settings, seeds, "tiny")


def test_load_results_reads_header_and_table(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("# command: carmenes-dtl experiment --seeds 1\n# seeds: 1\nsetting,gap,mae,latent_auc\n"
                    "none,none,1.5,\nshared,\"degenerate=0,shared=0.5\",2.25,0.5\n")
    table, meta = read_table(path)
    assert meta == {"command": "carmenes-dtl experiment --seeds 1", "seeds": "1"}
    assert table["gap"].tolist() == ["none", "degenerate=0,shared=0.5"] and table["mae"].tolist() == [1.5, 2.25]
    assert np.isnan(table["latent_auc"][0])


def test_sign_flip_p_by_enumeration_and_against_scipy():
    """(1, 2, 3, -0.5), sum 5.5: of the 16 sign patterns, |sum| >= 5.5 for the observed one, the one
    flipping the -0.5 (6.5) and their negatives: 4 of 16. A second, independent implementation:
    scipy's permutation test (one sample, sign flips)."""
    from scipy.stats import permutation_test

    assert stats.sign_flip_p([1.0, 2.0, 3.0, -0.5]) == pytest.approx(4 / 16)
    rng = np.random.default_rng(3)
    for n in (5, 8, 10):
        d = rng.normal(0.4, 1.0, n)
        ref = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
        assert stats.sign_flip_p(d) == pytest.approx(ref)
    assert stats.sign_flip_p(np.arange(1.0, 9.0)) == pytest.approx(2 / 256)  # the smallest at n = 8


def test_sign_flip_interval_inverts_the_test_and_is_unbounded_at_small_n():
    d = np.array([3.0, -1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    low, high = stats.sign_flip_interval(d)
    assert low < d.mean() < high
    # just inside: not rejected at 5 %; just outside: rejected (a brute-force scan of the shift)
    assert stats.sign_flip_p(d, low + 1e-6) > 0.05 >= stats.sign_flip_p(d, low - 1e-3)
    assert stats.sign_flip_p(d, high - 1e-6) > 0.05 >= stats.sign_flip_p(d, high + 1e-3)
    assert stats.sign_flip_interval(d[:5]) == (-np.inf, np.inf)  # 2/32 = 0.0625 > 0.05: nothing rejected


def test_holm_by_hand():
    """p = (0.01, 0.04, 0.03, 0.005): sorted times (4, 3, 2, 1) = 0.02, 0.03, 0.06, 0.04, then the
    running maximum: 0.02, 0.03, 0.06, 0.06, put back in the original order."""
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])


def test_factorial_cells_borrow_only_stages_whose_factors_agree(tmp_path, monkeypatch):
    """The cell plan alone (no training): layers by distance from the published arm, and every stage a
    cell adopts comes from a cell of its seed run earlier that agrees on the stage's factors."""
    ran = []

    def fake_cell(args):
        out, mix, seed, prof, shared, lenders, _ = args
        ran.append((out, mix, seed, prof, shared, lenders))
        (out / "run.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text("{}")
        return out

    monkeypatch.setattr(experiment, "_cell", fake_cell)
    info = experiment.run_cells(tmp_path, ["none", "strong"], [1, 2], "tiny", factorial=True)
    assert list(info["arms"]) == ["published-raw", "published-standardised", "quick_v1-raw", "quick_v1-standardised"]
    assert len(ran) == 16
    where = {out: (out.parts[-3], out.parts[-2], seed, prof, mix) for out, mix, seed, prof, *_ in ran}
    order = [out for out, *_ in ran]
    arms = [where[o][0] for o in order]
    assert arms[:4] == ["published-raw"] * 4 and arms[-4:] == ["quick_v1-standardised"] * 4
    for out, mix, seed, prof, shared, lenders in ran:
        arm, setting, *_ = where[out]
        assert (shared is None) == (setting == "none")  # the base setting keeps its own PHOENIX tree
        lent = {stage: lender for lender, stages in lenders for stage in stages}
        for stage, lender in lent.items():
            assert order.index(lender) < order.index(out) and where[lender][2] == seed
            _, _, _, lprof, lmix = where[lender]
            factors = experiment.STAGE_FACTORS[stage]
            assert ("gap" not in factors or lmix == mix)
            assert ("finetune" not in factors or lprof.finetune == prof.finetune)
            assert ("cnn" not in factors or lprof.cnn == prof.cnn)
        if arm == "quick_v1-standardised":  # both of its factors are found in the arms one step away
            assert {"fine-tune", "encode", "cnn-synthetic", "demo", "prepare-observed"} <= set(lent)
    assert ran[-1][3].finetune.learning_rate == 1e-3 and ran[-1][3].cnn.inputs == "standardised"
    assert ran[0][3].finetune.learning_rate == 1e-4 and ran[0][3].cnn.inputs == "raw"


def test_verdict_on_a_hand_built_table():
    """Ten seeds: `method` errs 5 K more than `no_finetune` in every seed (exact sign-flip p = 2/2**10,
    and only the shift 5 survives any level), `method_aligned` alternates +-1 K (p = 1). Holm over
    the arm's 4 claims (2 pairs x Teff, [M/H]): the two smallest p become 4 x 2/1024."""
    rows = []
    for seed in range(10):
        for parameter, method, aligned in (("Teff", 5.0, (-1.0) ** seed), ("[M/H]", 0.01 * (seed + 1), 0.0)):
            base = 200.0 + seed if parameter == "Teff" else 0.2
            for variant, mae in (("no_finetune", base), ("method", base + method), ("method_aligned", base + aligned),
                                 ("direct", base - 50), ("finetuned_both", base)):
                rows.append({"arm": "published-raw", "setting": "paper", "gap": "paper", "seed": seed,
                             "variant": variant, "parameter": parameter, "region": "all", "mae": mae})
    v = experiment.verdict(pd.DataFrame(rows)).set_index(["parameter", "variant", "reference"])
    teff = v.loc[("Teff", "method", "no_finetune")]
    assert teff["n_positive"] == 10 and teff["p_sign_flip"] == pytest.approx(2 / 1024)
    assert teff["p_holm"] == pytest.approx(4 * 2 / 1024)
    assert teff["low_corrected"] == pytest.approx(5.0, abs=1e-3) and teff["high_corrected"] == pytest.approx(5.0, abs=1e-3)
    assert v.loc[("Teff", "method_aligned", "no_finetune"), "p_sign_flip"] == pytest.approx(1.0)
    assert v.loc[("Teff", "method_aligned", "no_finetune"), "p_holm"] == pytest.approx(1.0)
    assert v.loc[("[M/H]", "method", "no_finetune"), "p_holm"] == pytest.approx(4 * 2 / 1024)
    assert not v.loc[("Teff", "method", "direct"), "claim"] and np.isnan(v.loc[("Teff", "method", "direct"), "p_holm"])
    text = experiment.headline(v.reset_index())
    assert "**`method` − `no_finetune`, Teff MAE**: worse at `paper`. `paper` +5 K" in text
    assert "**`method_aligned` − `no_finetune`, Teff MAE**: no setting where" in text


def test_arm_contrast_is_the_per_seed_difference_of_differences():
    """Two arms, 6 seeds: `method` − `no_finetune` is 2 K in the reference arm and 2 + 10·(seed + 1) K
    in the other, so the contrast is 10·(seed + 1) K (mean 35), positive in every seed (exact
    sign-flip p = 2/2**6); a seed only one arm ran is left out."""
    rows = []
    for arm, extra in (("published-raw", lambda s: 0.0), ("quick_v1-standardised", lambda s: 10.0 * (s + 1))):
        for seed in range(6 if arm == "published-raw" else 7):
            for variant, mae in (("no_finetune", 100.0 + seed), ("method", 102.0 + seed + extra(seed))):
                rows.append({"arm": arm, "setting": "none", "seed": seed, "variant": variant, "parameter": "Teff",
                             "region": "all", "mae": mae})
    c = experiment.arm_contrast(pd.DataFrame(rows), "quick_v1-standardised", "published-raw").loc["none"]
    assert c["n_seeds"] == 6 and c["n_positive"] == 6 and c["mean"] == pytest.approx(35.0)
    assert c["p_sign_flip"] == pytest.approx(2 / 64) and c["low"] > 0
