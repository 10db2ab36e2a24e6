"""Literature snapshot, cross-match and statistics, recomputed independently on the paper's estimates."""
import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import literature, validation
from carmenes_dtl.config import estimate_columns


@pytest.fixture
def snapshot(reference, tmp_path):
    literature.import_csv_folder(reference, tmp_path / "lit")
    return tmp_path / "lit"


def test_import_writes_provenance(snapshot):
    meta = literature.meta("mar21", snapshot)
    assert meta["vizier"] == "J/A+A/656/A162" and meta["columns_used"]["[M/H]"] == "Corr1"
    assert "retrieved" in meta and meta["origin"].startswith("VizieR CSV export")
    mar = literature.load("mar21", snapshot)
    assert "J11110+304" in set(mar["karmn"]) and not any(k.endswith(" ") for k in mar["karmn"])


def test_committed_snapshot_matches_a_fresh_import(snapshot):
    for key in literature.COMPARISON_KEYS:
        committed = literature.load(key)
        fresh = literature.load(key, snapshot)
        pd.testing.assert_frame_equal(committed, fresh)


def test_statistics_recomputed_independently(reference, snapshot, tmp_path):
    stats = validation.validate(reference / "final_estimations.csv", tmp_path / "v", snapshot, figures=False)
    est = pd.read_csv(reference / "final_estimations.csv")
    raw = pd.read_csv(reference / "literature" / "mar21.csv")
    raw["karmn"] = raw["Karmn"].str.strip().replace({"J11110+304W": "J11110+304"})
    m = est.merge(raw, on="karmn").dropna(subset=["Teff1"])
    d = m["Teff"] - m["Teff1"]
    row = stats.set_index(["catalogue", "parameter"]).loc[("mar21", "Teff")]
    assert row["n"] == len(d)
    assert row["mean_diff"] == pytest.approx(d.mean()) and row["std_diff"] == pytest.approx(np.std(d, ddof=1))
    assert row["median_diff"] == pytest.approx(np.median(d))
    assert row["pearson_r"] == pytest.approx(np.corrcoef(m["Teff"], m["Teff1"])[0, 1])
    bench = pd.read_csv(reference / "benchmark_stars.csv").query("kind == 'interferometric'")
    mb = est.merge(bench, on="karmn")
    row = stats.set_index(["catalogue", "parameter"]).loc[("interferometric", "Teff")]
    assert row["n"] == len(mb) == 14
    assert row["mean_diff"] == pytest.approx((mb["Teff"] - mb["value"]).mean())
    dl = pd.read_csv(reference / "literature" / "dl.csv")
    md = est.merge(dl, left_on="karmn", right_on="KARMN")
    row = stats.set_index(["catalogue", "parameter"]).loc[("pass20", "[M/H]")]
    assert row["mad"] == pytest.approx(np.median(np.abs((md["[M/H]"] - md["ZETA_MODE"]) -
                                                        np.median(md["[M/H]"] - md["ZETA_MODE"]))))
    assert set(stats["catalogue"]) == set(literature.COMPARISON_KEYS)
    assert list(stats.columns) == validation.STAT_COLUMNS


def test_paper_findings_hold_on_published_estimates(reference, snapshot, tmp_path):
    validation.validate(reference / "final_estimations.csv", tmp_path / "v", snapshot, figures=False)
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


def test_empty_cross_match_is_an_error(tmp_path, snapshot):
    path = _estimates(tmp_path, [["J99999+999", 3700, 30, 40, 4.8, 0.05, 0.05, 0.0, 0.05, 0.05, 3, 0.5, 0.5]])
    with pytest.raises(ValueError, match="no star matches any catalogue.*J99999\\+999"):
        validation.validate(path, tmp_path / "v", snapshot, figures=False)


def test_fetch_vizier_with_a_stub_service(reference, tmp_path):
    """The VizieR path tidies astropy tables exactly as the CSV path does."""
    from astropy.table import Table

    class Stub:
        def get_catalogs(self, cat_id):
            key = next(c for c in [*literature.CATALOGUES.values(), literature.PAPER] if c.vizier == cat_id)
            folder = reference if key.key == "paper" else reference / "literature"
            return [Table.from_pandas(pd.read_csv(folder / key.csv))]

    literature.fetch_vizier(tmp_path / "viz", vizier=Stub())
    literature.import_csv_folder(reference, tmp_path / "csv")
    pd.testing.assert_frame_equal(literature.load("schw19", tmp_path / "viz"), literature.load("schw19", tmp_path / "csv"))


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
