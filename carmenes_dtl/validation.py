"""Estimates against the literature: cross-match, statistics, figures and the paper's findings.

Works on any file in the published format (the paper's table, a run's `estimates.csv`,
a user's). Differences are always estimate - literature.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import files, literature
from .config import PUBLISHED_NAMES, estimate_columns

STAT_COLUMNS = ["catalogue", "parameter", "n", "mean_diff", "std_diff", "median_diff", "mad", "pearson_r"]


def read_estimates(path: Path) -> pd.DataFrame:
    """Read and check an estimates file; errors name the column or row at fault."""
    path = Path(path)
    df = files.read_csv(path, "an estimates CSV", dtype={"karmn": str})
    missing = [c for c in estimate_columns() if c not in df]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    df["karmn"] = df["karmn"].map(literature.normalise_id)
    dup = df["karmn"][df["karmn"].duplicated()]
    if len(dup):
        rows = [int(i) + 2 for i in dup.index]  # +2: header line and 1-based lines
        raise ValueError(f"{path}: duplicated star(s) {', '.join(dup)} at line(s) {rows}")
    for col in estimate_columns()[1:]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: non-numeric value {df[col].iloc[i]!r} in column {col!r} at line {i + 2} "
                             f"(star {df['karmn'].iloc[i]})")
        df[col] = values
    return df


def compare(est: pd.DataFrame, lit: pd.DataFrame, parameter: str) -> pd.DataFrame:
    """Stars with both values: `est`, `lit`, their errors (`e_est`, `E_est`, `e_lit`) and `diff`."""
    ours = est[["karmn", parameter, f"e_{parameter}", f"E_{parameter}"]].set_axis(
        ["karmn", "est", "e_est", "E_est"], axis=1)
    theirs_cols = ["karmn", parameter] + ([f"e_{parameter}"] if f"e_{parameter}" in lit else [])
    theirs = lit[theirs_cols].set_axis(["karmn", "lit", "e_lit"][:len(theirs_cols)], axis=1)
    m = ours.merge(theirs, on="karmn").dropna(subset=["est", "lit"])
    return m.assign(diff=m["est"] - m["lit"])


def statistics(diff: pd.Series, est: pd.Series, lit: pd.Series) -> dict:
    """n, mean, sample std, median, MAD (median |d - median d|, unscaled) and Pearson r."""
    n = int(diff.size)
    return {"n": n, "mean_diff": float(diff.mean()) if n else np.nan,
            "std_diff": float(diff.std(ddof=1)) if n > 1 else np.nan,
            "median_diff": float(diff.median()) if n else np.nan,
            "mad": float((diff - diff.median()).abs().median()) if n else np.nan,
            "pearson_r": float(stats.pearsonr(est, lit)[0]) if n > 2 and est.std() > 0 and lit.std() > 0 else np.nan}


def load_all(snapshot: Path | None = None) -> dict[str, pd.DataFrame]:
    return {k: literature.load(k, snapshot) for k in literature.COMPARISON_KEYS}


def comparison_table(est: pd.DataFrame, catalogues: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`comparison_stats` rows and the unmatched stars (estimate stars absent from each catalogue)."""
    rows, unmatched = [], []
    for key, lit in catalogues.items():
        missing = sorted(set(est["karmn"]) - set(lit["karmn"]))
        unmatched += [{"catalogue": key, "karmn": k, "reason": "not in catalogue"} for k in missing]
        for p in literature.parameters_of(lit):
            m = compare(est, lit, p)
            no_value = sorted(set(est["karmn"]) & set(lit["karmn"]) - set(m["karmn"]))
            unmatched += [{"catalogue": key, "karmn": k, "reason": f"no {p} value"} for k in no_value]
            rows.append({"catalogue": key, "parameter": p, **statistics(m["diff"], m["est"], m["lit"])})
    return pd.DataFrame(rows, columns=STAT_COLUMNS), pd.DataFrame(unmatched, columns=["catalogue", "karmn", "reason"])


def findings(est: pd.DataFrame, catalogues: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper's stated findings, each as a check on these estimates."""
    rows = []
    hot = est[est["Teff"] > 3750]
    diffs = [compare(hot, catalogues[k], "Teff")["diff"] for k in ("mar21", "pass19", "schw19")]
    hot_diff = pd.concat(diffs)
    rows.append({"finding": "Teff scale hotter than the literature above 3750 K (Mar21, Pass19, Schw19)",
                 "value": f"mean diff {hot_diff.mean():+.0f} K (n={len(hot_diff)})",
                 "holds": bool(len(hot_diff) and hot_diff.mean() > 0)})
    for p, (lo, hi), tol in (("Teff", (3050, 4300), 100), ("logg", (4.7, 5.1), 0.1), ("[M/H]", (-0.53, 0.25), 0.1)):
        vmin, vmax = est[p].min(), est[p].max()
        rows.append({"finding": f"{p} spans about {lo}..{hi}", "value": f"{vmin:.4g}..{vmax:.4g}",
                     "holds": bool(abs(vmin - lo) <= tol and abs(vmax - hi) <= tol)})
    dl = catalogues["pass20"]
    better = []
    for key in ("mar21", "pass19", "schw19", "mann15", "fgk_companions"):
        ours = compare(est, catalogues[key], "[M/H]")
        theirs = compare(dl, catalogues[key], "[M/H]")
        common = set(ours["karmn"]) & set(theirs["karmn"])
        if len(common) > 2:
            a = ours[ours["karmn"].isin(common)]["diff"].std(ddof=1)
            b = theirs[theirs["karmn"].isin(common)]["diff"].std(ddof=1)
            better.append((key, a, b, len(common)))
    text = "; ".join(f"{k}: {a:.2f} vs {b:.2f} (n={n})" for k, a, b, n in better)
    rows.append({"finding": "[M/H] scatter against the literature smaller than Passegger 2020 (DL)",
                 "value": text, "holds": bool(better and sum(a < b for _, a, b, _ in better) > len(better) / 2)})
    return pd.DataFrame(rows)


def validate(estimates: Path, out: Path, literature_dir: Path | None = None, figures: bool = True) -> pd.DataFrame:
    """`carmenes-dtl validate`: statistics, unmatched stars, findings and figures in `out`."""
    est = read_estimates(estimates)
    cats = load_all(literature_dir)
    table, unmatched = comparison_table(est, cats)
    if table["n"].sum() == 0:
        raise ValueError(f"{estimates}: no star matches any catalogue (empty cross-match); "
                         f"first ids: {', '.join(est['karmn'].head(3))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison_stats.csv", index=False)
    unmatched.to_csv(out / "unmatched.csv", index=False)
    findings(est, cats).to_csv(out / "findings.csv", index=False)
    if figures:
        for name, fig in make_figures(est, cats).items():
            fig.savefig(out / f"{name}.png", dpi=100)
    return table


def make_figures(est: pd.DataFrame, cats: dict[str, pd.DataFrame]) -> dict:
    """One-to-one/difference plots per parameter, distributions and the HR-type diagram."""
    from . import plotting

    figs = {}
    for p in PUBLISHED_NAMES.values():
        merged = {k: compare(est, lit, p) for k, lit in cats.items() if p in literature.parameters_of(lit)}
        figs[f"comparison_{p.strip('[]').replace('/', '')}"] = plotting.comparison(merged, p)
    figs["distributions"] = plotting.distributions(est, {"Pass20 (DL)": cats["pass20"], "Mar21": cats["mar21"]})
    hr = est.merge(cats["schw19"][["karmn", "Lum"]], on="karmn").dropna(subset=["Lum"])
    if len(hr):
        figs["hr_diagram"] = plotting.hr_diagram(hr)
    return figs
