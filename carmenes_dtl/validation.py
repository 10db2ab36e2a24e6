"""Estimates against the truth and the literature.

`evaluate` scores a run against its demo truth and its held-out synthetic nodes (run.json).
The rest cross-matches any file in the published format (the paper's table, a run's
estimates, a user's) with the literature: statistics, figures and the paper's findings.
Differences are always estimate - literature (or truth).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from . import files, literature
from .variants import VARIANTS
from .config import PUBLISHED_NAMES, UNITS, estimate_columns

def errors(est: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per-parameter bias (mean of estimate - truth), scatter (std) and MAE."""
    m = est.merge(truth, on="karmn", suffixes=("", "_true"))
    out = {}
    for name in PUBLISHED_NAMES.values():
        d = m[name] - m[f"{name}_true"]
        out[name] = {"n": int(d.size), "bias": float(d.mean()), "scatter": float(d.std(ddof=1)),
                     "mae": float(d.abs().mean())}
    return out


def with_truth(est: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """`est` with each star's true values beside its estimates (columns ``true_<name>``), for figures."""
    names = list(PUBLISHED_NAMES.values())
    return est.merge(truth[["karmn", *names]].rename(columns={n: f"true_{n}" for n in names}), on="karmn")


def read_truth(path: Path) -> pd.DataFrame:
    """A table of true parameters (``karmn`` and the published names, e.g. a demo survey's truth.csv);
    a one-line ValueError naming the file and the columns it lacks."""
    truth = files.read_csv(path, "a CSV table of true parameters")
    missing = [c for c in ["karmn", *PUBLISHED_NAMES.values()] if c not in truth]
    if missing:
        raise ValueError(f"{path}: a truth table needs the columns {missing} (has {list(truth.columns)})")
    return truth


def error_lines(est: pd.DataFrame, truth: pd.DataFrame) -> list[str]:
    """`errors` as one line per parameter, with units and the estimates' precision (`cnn.DECIMALS`)."""
    from .cnn import DECIMALS

    return [f"{name}: n {e['n']}, MAE {e['mae']:.{DECIMALS[name]}f}, bias {e['bias']:+.{DECIMALS[name]}f}, "
            f"scatter {e['scatter']:.{DECIMALS[name]}f} {UNITS[name]}" for name, e in errors(est, truth).items()]


def coverage(table: pd.DataFrame) -> dict:
    """Fraction of held-out truths inside [estimate - e, estimate + E], per parameter."""
    out = {}
    for name in PUBLISHED_NAMES.values():
        t, v = table[f"true_{name}"], table[name]
        out[name] = float(((t >= v - table[f"e_{name}"]) & (t <= v + table[f"E_{name}"])).mean())
    return out


def evaluate(run, truth_csv: Path | None) -> dict:
    """What run.json reports of the run in `run` (a `rundir.RunFolder`): with a truth table, each
    variant's `errors` (and per grid-coverage class of the demo stars); the `coverage` of the
    held-out synthetic nodes per uncertainty method and variant."""
    info = {}
    if truth_csv is not None and Path(truth_csv).exists():
        truth = pd.read_csv(truth_csv)
        estimates = {v: run.estimates(v) for v in VARIANTS}
        info["errors_vs_truth"] = {v: errors(est, truth) for v, est in estimates.items()}
        if "coverage" in truth:  # demo stars inside / at the edge of the paper grid's coverage
            info["errors_by_coverage"] = {v: {c: errors(est, t) for c, t in truth.groupby("coverage")}
                                          for v, est in estimates.items()}
        names = list(PUBLISHED_NAMES.values())
        truths = truth[["karmn", *names]].rename(columns={n: f"true_{n}" for n in names})
        info["truth_coverage"] = {v: coverage(est.merge(truths, on="karmn")) for v, est in estimates.items()}
    holdout = run.holdout()
    info["holdout_coverage"] = {u: {v: coverage(g) for v, g in h.groupby("variant", sort=False)}
                                for u, h in holdout.groupby("uncertainty")}
    info["autoencoders"] = run.autoencoders().to_dict("records")
    info["disagreement"] = {v: {c.removeprefix("disagree_"): float(run.flags(v)[c].mean())
                                for c in run.flags(v) if c.startswith("disagree_")} for v in VARIANTS}
    return info


#: Where the headline's share of demo truths inside its 16/84 intervals should lie (68 % nominal).
TRUTH_COVERAGE_RANGE = (0.5, 0.9)


def warnings(info: dict, variant: str = "method") -> list[str]:
    """One line per way the headline `variant` of a run (run.json as `evaluate` makes it) cannot be
    trusted as it stands: its autoencoders disagree beyond their own spread, or its 16/84 intervals
    contain the demo truths too rarely or too often."""
    out = []
    split = {p: x for p, x in info.get("disagreement", {}).get(variant, {}).items() if x > 0.5}
    if split:
        out.append(f"{variant}: the autoencoders' ensembles disagree by more than their own spread for "
                   + ", ".join(f"{x:.0%} of the stars in {p}" for p, x in split.items())
                   + "; their estimates differ by autoencoder (autoencoders.csv), so the pooled value and its "
                     "interval stand between models rather than for one")
    lo, hi = TRUTH_COVERAGE_RANGE
    off = {p: x for p, x in info.get("truth_coverage", {}).get(variant, {}).items() if not lo <= x <= hi}
    if off:
        out.append(f"{variant}: the 16/84 intervals contain the demo truth for "
                   + ", ".join(f"{x:.0%} of the stars in {p}" for p, x in off.items())
                   + f" (expected {lo:.0%}-{hi:.0%} around the nominal 68 %)")
    return out


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


class Validation(NamedTuple):
    """What `validate` finds: per catalogue and parameter statistics, the stars left unmatched
    (with reasons) and the paper's findings, each also written as a CSV."""

    stats: pd.DataFrame
    unmatched: pd.DataFrame
    findings: pd.DataFrame


def validate(estimates: Path, out: Path, literature_dir: Path | None = None, figures: bool = True) -> Validation:
    """`carmenes-dtl validate`: statistics, unmatched stars, findings and figures in `out`."""
    est = read_estimates(estimates)
    cats = load_all(literature_dir)
    table, unmatched = comparison_table(est, cats)
    if table["n"].sum() == 0:
        raise ValueError(f"{estimates}: no star matches any catalogue (empty cross-match); "
                         f"first ids: {', '.join(est['karmn'].head(3))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = Validation(table, unmatched, findings(est, cats))
    for name, frame in zip(("comparison_stats", "unmatched", "findings"), result):
        frame.to_csv(out / f"{name}.csv", index=False)
    if figures:
        import matplotlib.pyplot as plt

        for name, fig in make_figures(est, cats).items():
            fig.savefig(out / f"{name}.png", dpi=100)
            plt.close(fig)  # saved, not shown: a notebook or a long process keeps none open
    return result


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
