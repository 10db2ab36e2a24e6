"""Literature snapshot, cross-match and statistics, recomputed independently on the paper's estimates."""
import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import literature, validation
from carmenes_dtl.config import estimate_columns


#: Two VizieR CSV exports in their own layouts (padded ids, an alias, quantile columns, a blank).
MAR21_CSV = """Karmn,_RA,Teff1,e_Teff1,logg1,e_logg1,Corr1,e_Corr1,vsini,e_vsini
"J00051+457 ",1.29,3773,16,5.07,0.08,-0.04,0.05,2.0,
"J11110+304W",167.7,3300,40,4.9,0.1,0.10,0.08,,
"""
DL_CSV = """KARMN,TEFF_MODE,TEFF_Q16,TEFF_Q84,LOGG_MODE,LOGG_Q16,LOGG_Q84,ZETA_MODE,ZETA_Q16,ZETA_Q84,VSINI_MODE,VSINI_Q16,VSINI_Q84
J00051+457,3732.45,3702.9,3796.3,4.64,4.61643,4.71544,0.2,0.115944,0.263032,4.27,3.20153,5.95913
"""


@pytest.fixture
def exports(tmp_path):
    folder = tmp_path / "exports" / "literature"
    folder.mkdir(parents=True)
    (folder / "mar21.csv").write_text(MAR21_CSV)
    (folder / "dl.csv").write_text(DL_CSV)
    return folder.parent


def test_import_tidies_vizier_exports(exports, tmp_path):
    paths = literature.import_csv_folder(exports, tmp_path / "lit", keys=["mar21", "pass20"])
    assert sorted(p.name for p in paths) == ["mar21.ecsv", "pass20.ecsv"]
    mar = literature.load("mar21", tmp_path / "lit")
    assert list(mar["karmn"]) == ["J00051+457", "J11110+304"]
    assert mar["Teff"].tolist() == [3773, 3300] and mar["e_Teff"].tolist() == [16, 40] == mar["E_Teff"].tolist()
    assert mar["[M/H]"].tolist() == [-0.04, 0.10] and np.isnan(mar["vsini"][1])
    meta = literature.meta("mar21", tmp_path / "lit")
    assert meta["vizier"] == "J/A+A/656/A162" and meta["columns_used"]["[M/H]"] == "Corr1"
    assert meta["origin"] == "VizieR CSV export mar21.csv" and meta["rows"] == 2
    dl = literature.load("pass20", tmp_path / "lit").iloc[0]  # quantiles -> distances from the mode
    assert dl["Teff"] == 3732.45 and dl["e_Teff"] == pytest.approx(29.55) and dl["E_Teff"] == pytest.approx(63.85)
    assert dl["e_[M/H]"] == pytest.approx(0.084056) and dl["E_[M/H]"] == pytest.approx(0.063032)
    with pytest.raises(FileNotFoundError, match="pass19.csv: VizieR export for pass19"):
        literature.import_csv_folder(exports, tmp_path / "all")
    with pytest.raises(ValueError, match="unknown catalogue 'mar22'; choose from mar21, "):
        literature.import_csv_folder(exports, tmp_path / "lit", keys=["mar22"])


BENCHMARK_CSV = """karmn,parameter,value,kind
J00051+457,Teff,3700,interferometric
J11110+304W,[M/H],0.1,fgk_companion
"""


def test_every_requested_catalogue_is_written_or_named_in_an_error(exports, tmp_path):
    """No request is dropped: a missing CSV, a benchmark asked of VizieR, a kind absent from the CSV."""
    with pytest.raises(FileNotFoundError, match=r"final_estimations\.csv: CSV for paper not found"):
        literature.import_csv_folder(exports, tmp_path / "a", keys=["paper"])
    with pytest.raises(FileNotFoundError, match=r"benchmark_stars\.csv: CSV for fgk_companions not found"):
        literature.import_csv_folder(exports, tmp_path / "a", keys=["mar21", "fgk_companions"])
    with pytest.raises(ValueError, match="fgk_companions, interferometric: the paper's benchmark compilation is not "
                                         "on VizieR; use --from-csv FOLDER holding benchmark_stars.csv"):
        literature.fetch_vizier(tmp_path / "a", vizier=object(), keys=["interferometric", "fgk_companions", "mar21"])
    assert not (tmp_path / "a").exists()
    (exports / "benchmark_stars.csv").write_text(BENCHMARK_CSV)
    paths = literature.import_csv_folder(exports, tmp_path / "b", keys=["interferometric"])
    assert [p.name for p in paths] == ["interferometric.ecsv"] and sorted(f.name for f in (tmp_path / "b").iterdir()) \
        == ["interferometric.ecsv"]
    assert literature.load("interferometric", tmp_path / "b").to_dict("list") == {"karmn": ["J00051+457"], "Teff": [3700.0]}
    (exports / "benchmark_stars.csv").write_text(BENCHMARK_CSV.replace("fgk_companion", "interferometric"))
    with pytest.raises(ValueError, match="benchmark_stars.csv: no row of kind 'fgk_companion' for fgk_companions"):
        literature.import_csv_folder(exports, tmp_path / "c", keys=["fgk_companions"])


def test_committed_snapshots_carry_provenance():
    for key in literature.ALL_KEYS:
        meta, table = literature.meta(key), literature.load(key)
        assert meta["catalogue"] == key and meta["rows"] == len(table) > 0 and meta["retrieved"]
        assert table["karmn"].is_unique or key in ("fgk_companions",)
    assert len(literature.load("paper")) == 286 and len(literature.load("interferometric")) == 14


@pytest.fixture
def published(tmp_path):
    """The paper's 286 estimates, as an estimates file (from the shipped snapshot)."""
    return literature.published_estimates(tmp_path / "published.csv")


def test_statistics_recomputed_independently(published, tmp_path):
    stats = validation.validate(published, tmp_path / "v", figures=False).stats.set_index(["catalogue", "parameter"])
    est = pd.read_csv(published)
    for key, name in (("mar21", "Teff"), ("interferometric", "Teff"), ("pass20", "[M/H]")):
        m = est.merge(literature.load(key), on="karmn", suffixes=("", "_lit")).dropna(subset=[f"{name}_lit"])
        d = m[name] - m[f"{name}_lit"]
        row = stats.loc[(key, name)]
        assert row["n"] == len(d) > 10
        assert row["mean_diff"] == pytest.approx(d.mean()) and row["std_diff"] == pytest.approx(np.std(d, ddof=1))
        assert row["median_diff"] == pytest.approx(np.median(d))
        assert row["mad"] == pytest.approx(np.median(np.abs(d - np.median(d))))
        assert row["pearson_r"] == pytest.approx(np.corrcoef(m[name], m[f"{name}_lit"])[0, 1])
    assert stats.loc[("interferometric", "Teff"), "n"] == 14
    assert set(stats.index.get_level_values(0)) == set(literature.COMPARISON_KEYS)
    assert list(stats.reset_index().columns) == validation.STAT_COLUMNS


def test_paper_findings_hold_on_published_estimates(published, tmp_path):
    validation.validate(published, tmp_path / "v", figures=False)
    findings = pd.read_csv(tmp_path / "v" / "findings.csv")
    assert findings["holds"].all(), findings
    unmatched = pd.read_csv(tmp_path / "v" / "unmatched.csv")
    assert ((unmatched["catalogue"] == "interferometric").sum()) == 286 - 14


def _estimates(tmp_path, rows):
    df = pd.DataFrame(rows, columns=estimate_columns())
    path = tmp_path / "e.csv"
    df.to_csv(path, index=False)
    return path


def test_bad_estimates_files(tmp_path):
    good = ["J00051+457", 3700, 30, 40, 4.8, 0.05, 0.05, 0.0, 0.05, 0.05, 3, 0.5, 0.5]
    path = _estimates(tmp_path, [good, good])
    with pytest.raises(ValueError, match=r"duplicated star\(s\) J00051\+457 at line\(s\) \[3\]"):
        validation.read_estimates(path)
    bad = list(good)
    bad[1] = "hot"
    path = _estimates(tmp_path, [good, ["J00067-075"] + good[1:], ["J00183+440"] + bad[1:]])
    with pytest.raises(ValueError, match="non-numeric value 'hot' in column 'Teff' at line 4 \\(star J00183\\+440\\)"):
        validation.read_estimates(path)
    pd.DataFrame({"karmn": ["J1"], "Teff": [3000]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="missing column\\(s\\) e_Teff, E_Teff, logg"):
        validation.read_estimates(tmp_path / "m.csv")


def test_empty_cross_match_is_an_error(tmp_path):
    path = _estimates(tmp_path, [["J99999+999", 3700, 30, 40, 4.8, 0.05, 0.05, 0.0, 0.05, 0.05, 3, 0.5, 0.5]])
    with pytest.raises(ValueError, match="no star matches any catalogue.*J99999\\+999"):
        validation.validate(path, tmp_path / "v", figures=False)


def test_fetch_vizier_with_a_stub_service(exports, tmp_path):
    """The VizieR path tidies astropy tables exactly as the CSV path does."""
    import io

    from astropy.table import Table

    class Stub:
        def get_catalogs(self, cat_id):
            text = {"J/A+A/656/A162": MAR21_CSV, "J/A+A/642/A22": DL_CSV}[cat_id]
            return [Table.from_pandas(pd.read_csv(io.StringIO(text)))]

    literature.fetch_vizier(tmp_path / "viz", vizier=Stub(), keys=["mar21", "pass20"])
    literature.import_csv_folder(exports, tmp_path / "csv", keys=["mar21", "pass20"])
    for key in ("mar21", "pass20"):
        pd.testing.assert_frame_equal(literature.load(key, tmp_path / "viz"), literature.load(key, tmp_path / "csv"))


def test_comparison_figure_wraps_catalogues_into_rows():
    from carmenes_dtl import plotting

    rng = np.random.default_rng(0)
    merged = {f"cat{i}": pd.DataFrame({"lit": rng.normal(3500, 200, 20), "est": rng.normal(3500, 200, 20),
                                       "e_est": np.full(20, 30.0), "E_est": np.full(20, 40.0)}) for i in range(7)}
    merged["empty"] = merged["cat0"].iloc[:0]
    fig = plotting.comparison(merged, "Teff")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 4 * 5 and len(visible) == 2 * 7  # 2 rows of 5; the empty catalogue is skipped
    titles = [ax.get_title() for ax in visible if ax.get_title()]
    assert titles == [f"cat{i} (n=20)" for i in range(7)]
    upper, lower = visible[0], visible[5]  # first catalogue's one-to-one and difference panels
    np.testing.assert_allclose(lower.lines[-1].get_ydata(), [0, 0])
    assert upper.get_ylabel() == "this work Teff" and lower.get_xlabel() == "literature Teff"


def test_truth_beside_estimates_star_by_star_and_errors_with_units():
    """Rows matched by karmn whatever their order; stars without a true row leave; the error lines
    are the hand-computed MAE, bias and sample scatter in each parameter's unit and precision."""
    est = pd.DataFrame({"karmn": ["A", "B", "C"], "Teff": [3000.0, 3500.0, 3900.0], "logg": [5.0, 4.9, 4.8],
                        "[M/H]": [0.1, -0.2, 0.0], "vsini": [2.0, 3.0, 9.0]})
    truth = pd.DataFrame({"karmn": ["B", "A", "Z"], "Teff": [3400.0, 3100.0, 3000.0], "logg": [5.0, 5.0, 5.0],
                          "[M/H]": [0.0, 0.0, 0.0], "vsini": [3.0, 2.5, 1.0], "coverage": ["inside"] * 3})
    both = validation.with_truth(est, truth)
    assert list(both["karmn"]) == ["A", "B"] and list(both["true_Teff"]) == [3100.0, 3400.0]
    assert "true_coverage" not in both and "coverage" not in both
    lines = validation.error_lines(est, truth)  # Teff: -100, +100 K; [M/H]: +0.1, -0.2 dex
    assert lines[0] == f"Teff: n 2, MAE 100.0, bias +0.0, scatter {np.std([-100, 100], ddof=1):.1f} K"
    assert lines[2] == f"[M/H]: n 2, MAE 0.150, bias -0.050, scatter {np.std([0.1, -0.2], ddof=1):.3f} dex"
    assert lines[3].endswith("km/s") and "MAE 0.25," in lines[3]
