"""Figures the chapters share (matplotlib + seaborn). Each function returns a Figure at least 7 in
(about 650 px on the page) wide."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import PARAMETERS, PUBLISHED_NAMES, UNITS

DOMAIN_COLOURS = {"synthetic": "#4C72B0", "observed": "#DD8452"}
LABELS = {"teff": r"$T_\mathrm{eff}$ [K]", "logg": r"$\log g$ [dex]", "mh": "[M/H] [dex]",
          "vsini": r"$v\sin i$ [km/s]", "Teff": r"$T_\mathrm{eff}$ [K]", "[M/H]": "[M/H] [dex]"}
sns.set_theme(style="ticks", context="notebook")


def spectra(wave: np.ndarray, fluxes: dict, title: str = "", offset: float = 0.0):
    """Several spectra on one axis, labelled by the dict keys."""
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for i, (label, f) in enumerate(fluxes.items()):
        ax.plot(wave, np.asarray(f) + i * offset, lw=0.7, label=label)
    ax.set(xlabel="wavelength [Å, vacuum]", ylabel="flux", title=title)
    ax.legend(fontsize="small", ncol=min(len(fluxes), 4))
    fig.tight_layout()
    return fig


def grid(params: pd.DataFrame, title: str = "training grid"):
    """Pairwise view of a parameter table (teff, logg, mh, vsini)."""
    cols = [c for c in PARAMETERS if c in params]
    g = sns.pairplot(params[cols].rename(columns=LABELS), corner=True, plot_kws={"s": 6, "alpha": 0.5},
                     diag_kind="hist", height=1.8)
    g.figure.suptitle(title, y=1.02)
    return g.figure


def projection(xy: np.ndarray, n_synthetic: int, params: pd.DataFrame | None, method: str):
    """2-D embedding coloured by domain and, for synthetic points, by each parameter."""
    panels = 1 + (len(PARAMETERS) if params is not None else 0)
    ncols = min(panels, 3)
    fig, axes = plt.subplots(-(-panels // ncols), ncols, figsize=(max(7.0, 3.6 * ncols), 3.2 * -(-panels // ncols)),
                             squeeze=False)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    ax = axes[0, 0]
    ax.scatter(*xy[:n_synthetic].T, s=4, alpha=0.4, c=DOMAIN_COLOURS["synthetic"], label="synthetic")
    ax.scatter(*xy[n_synthetic:].T, s=14, c=DOMAIN_COLOURS["observed"], edgecolor="k", lw=0.3, label="observed")
    ax.set_title(f"{method}: domain")
    ax.legend(fontsize="x-small", markerscale=2)
    if params is not None:
        for ax, p in zip(axes.flat[1:], PARAMETERS):
            sc = ax.scatter(*xy[:n_synthetic].T, s=4, c=params[p], cmap="viridis")
            ax.scatter(*xy[n_synthetic:].T, s=10, facecolor="none", edgecolor="k", lw=0.4)
            fig.colorbar(sc, ax=ax, shrink=0.8).set_label(LABELS[p])
            ax.set_title(f"{method}: {p}")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    fig.tight_layout()
    return fig


def residual(wave: np.ndarray, mean_residual: np.ndarray, title: str = "observed - best-matching synthetic"):
    fig, ax = plt.subplots(figsize=(10, 2.8))
    ax.axhline(0, color="0.6", lw=0.8)
    ax.plot(wave, mean_residual, lw=0.8, color="C3")
    ax.set(xlabel="wavelength [Å, vacuum]", ylabel="mean residual", title=title)
    fig.tight_layout()
    return fig


def rv_residuals(table: pd.DataFrame, title: str = "measured - true RV"):
    """RV residuals (km/s) against vsini, coloured by S/N (a `twin.survey` table)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.axhline(0, color="0.6", lw=0.8)
    points = ax.scatter(table["vsini"], table["drv"], c=table["snr"], cmap="viridis", s=18)
    fig.colorbar(points, ax=ax, label="S/N")
    ax.set(xlabel=LABELS["vsini"], ylabel=r"$\Delta$RV [km/s]", title=title)
    fig.tight_layout()
    return fig


def histories(histories: dict, title: str = "training curves"):
    """Loss curves: `histories` maps a label to a Keras history dict (loss, val_loss)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (label, h) in enumerate(histories.items()):
        ax.plot(h["loss"], color=f"C{i}", lw=1, label=f"{label} train")
        if "val_loss" in h:
            ax.plot(h["val_loss"], color=f"C{i}", lw=1, ls="--", label=f"{label} val")
    ax.set(yscale="log", xlabel="epoch", ylabel="loss", title=title)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig


def predicted_vs_true(table: pd.DataFrame, variants: list[str] | None = None, title: str = ""):
    """Estimates against truth (columns X and true_X) with asymmetric error bars, per parameter."""
    variants = variants or list(table.get("variant", pd.Series(["all"])).unique())
    names = list(PUBLISHED_NAMES.values())
    fig, axes = plt.subplots(len(variants), len(names), figsize=(3.2 * len(names), 3.0 * len(variants)), squeeze=False)
    for r, v in enumerate(variants):
        sub = table[table["variant"] == v] if "variant" in table else table
        for ax, n in zip(axes[r], names):
            t = sub[f"true_{n}"]
            ax.errorbar(t, sub[n], yerr=[sub[f"e_{n}"], sub[f"E_{n}"]], fmt="o", ms=2.5, lw=0.5, alpha=0.7)
            lims = [min(t.min(), sub[n].min()), max(t.max(), sub[n].max())]
            ax.plot(lims, lims, "k--", lw=0.8)
            mae = np.mean(np.abs(sub[n] - t))
            ax.set(xlabel=f"true {LABELS.get(n, n)}", ylabel=f"{v}", title=f"{n}: MAE {mae:.3g}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def comparison(merged: dict, parameter: str, title: str = "", per_row: int = 5):
    """One-to-one (top) and difference (bottom) panels per catalogue, with error bars,
    at most `per_row` catalogues side by side.

    `merged[key]` is a DataFrame with `est`, `lit`, `e_est`, `E_est` and optional `e_lit`.
    """
    keys = [k for k, m in merged.items() if len(m)]
    ncols, nrows = min(per_row, len(keys)), -(-len(keys) // per_row)
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(max(7.0, 3.0 * ncols), 5.6 * nrows), squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1] * nrows})
    for i in range(len(keys), nrows * ncols):  # empty cells of the last row
        axes[2 * (i // ncols), i % ncols].set_visible(False)
        axes[2 * (i // ncols) + 1, i % ncols].set_visible(False)
    for i, key in enumerate(keys):
        r, c = 2 * (i // ncols), i % ncols
        top, bottom = axes[r, c], axes[r + 1, c]
        bottom.sharex(top)
        m = merged[key]
        xerr = m["e_lit"] if "e_lit" in m else None
        yerr = [m["e_est"], m["E_est"]]
        top.errorbar(m["lit"], m["est"], xerr=xerr, yerr=yerr, fmt="o", ms=2.5, lw=0.4, alpha=0.7)
        lims = [np.nanmin([m["lit"].min(), m["est"].min()]), np.nanmax([m["lit"].max(), m["est"].max()])]
        top.plot(lims, lims, "k--", lw=0.8)
        top.set(title=f"{key} (n={len(m)})", ylabel=f"this work {parameter}" if c == 0 else "")
        bottom.errorbar(m["lit"], m["est"] - m["lit"], yerr=yerr, fmt="o", ms=2.5, lw=0.4, alpha=0.7)
        bottom.axhline(0, color="k", ls="--", lw=0.8)
        bottom.set(xlabel=f"literature {parameter}", ylabel="difference" if c == 0 else "")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def distributions(estimates: pd.DataFrame, others: dict | None = None):
    """Histograms of the four parameters, optionally with other tables overlaid."""
    names = list(PUBLISHED_NAMES.values())
    fig, axes = plt.subplots(1, 4, figsize=(13, 3))
    for ax, n in zip(axes, names):
        bins = np.histogram_bin_edges(estimates[n].dropna(), 20)
        ax.hist(estimates[n].dropna(), bins=bins, alpha=0.6, label="this work")
        for label, df in (others or {}).items():
            if n in df:
                ax.hist(df[n].dropna(), bins=bins, histtype="step", lw=1.2, label=label)
        ax.set(xlabel=LABELS.get(n, n))
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def hr_diagram(table: pd.DataFrame, y: str = "Lum", ylabel: str = r"$L/L_\odot$"):
    """Teff against luminosity, coloured by [M/H], sized by vsini."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    sizes = 8 + 4 * table["vsini"].clip(0, 30)
    sc = ax.scatter(table["Teff"], table[y], c=table["[M/H]"], s=sizes, cmap="coolwarm", edgecolor="k", lw=0.3)
    fig.colorbar(sc, ax=ax).set_label("[M/H] [dex]")
    ax.set(xlabel=LABELS["Teff"], ylabel=ylabel, yscale="log")
    ax.invert_xaxis()
    fig.tight_layout()
    return fig


def experiment_mae(intervals: pd.DataFrame):
    """MAE per gap setting and variant with its 95 % bootstrap interval, one panel per parameter
    (the ``mae`` rows of `experiment.intervals`)."""
    mae = intervals[intervals["quantity"] == "mae"]
    params = list(dict.fromkeys(mae["parameter"]))
    settings = list(dict.fromkeys(mae["setting"]))
    variants = list(dict.fromkeys(mae["variant"]))
    fig, axes = plt.subplots(1, len(params), figsize=(3.4 * len(params), 3.4), squeeze=False)
    x = np.arange(len(settings))
    for ax, p in zip(axes.flat, params):
        for k, (v, colour) in enumerate(zip(variants, sns.color_palette(n_colors=len(variants)))):
            g = mae[(mae["parameter"] == p) & (mae["variant"] == v)].set_index("setting").loc[settings]
            ax.errorbar(x + (k - (len(variants) - 1) / 2) * 0.15, g["estimate"],
                        yerr=[g["estimate"] - g["low"], g["high"] - g["estimate"]], fmt="o", ms=4, capsize=2,
                        color=colour, label=v)
        ax.set(xticks=x, xlabel="gap setting", ylabel=f"MAE of {LABELS.get(p, p)}")
        ax.set_xticklabels(settings, rotation=30, ha="right")
    axes.flat[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def forest(verdict: pd.DataFrame, pairs: list[tuple[str, str]], parameters=("Teff", "[M/H]")):
    """Paired MAE differences (variant - reference), one row per arm and gap setting, one panel per
    parameter: every seed's difference as a small dot, the mean with its sign-flip 95 % interval
    (`experiment.verdict`), the count of positive seeds at the right; left of 0: the variant errs less."""
    rows = list(dict.fromkeys(zip(verdict["arm"], verdict["setting"])))
    colours = sns.color_palette(n_colors=len(pairs))
    fig, axes = plt.subplots(1, len(parameters), figsize=(11, 0.42 * len(rows) * len(pairs) + 1.6), sharey=True,
                             squeeze=False)
    step = 1.0 / (len(pairs) + 1)
    for ax, p in zip(axes.flat, parameters):
        for k, ((v, ref), colour) in enumerate(zip(pairs, colours)):
            g = verdict[(verdict["parameter"] == p) & (verdict["variant"] == v) & (verdict["reference"] == ref)]
            g = g.set_index(["arm", "setting"]).reindex(rows)
            y = np.arange(len(rows)) + (k + 1) * step - 0.5
            for yi, (_, r) in zip(y, g.iterrows()):
                if isinstance(r["per_seed"], str):
                    seeds = np.array(r["per_seed"].split(), float)
                    ax.plot(seeds, np.full(seeds.size, yi), "|", color=colour, alpha=0.6, ms=7)
                    ax.text(1.02, yi, f"{r['n_positive']}/{r['n_seeds']}", transform=ax.get_yaxis_transform(),
                            va="center", ha="left", fontsize=9, color=colour)
            bounded = np.isfinite(g["low"]) & np.isfinite(g["high"])
            ax.errorbar(g["mean"], y, xerr=np.where(bounded, [g["mean"] - g["low"], g["high"] - g["mean"]], 0),
                        fmt="o", ms=5, capsize=3, color=colour, label=f"{v} − {ref}")
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set(xlabel=f"MAE difference in {LABELS.get(p, p).split(' [')[0]} [{UNITS[p]}]")
        ax.grid(axis="x", alpha=0.3)
    axes.flat[0].set_yticks(np.arange(len(rows)), [f"{a}  {s}" for a, s in rows])
    axes.flat[0].invert_yaxis()
    axes.flat[0].legend(loc="lower left", fontsize=9)
    fig.tight_layout(w_pad=3)
    return fig


def latent_drift(lat, i: int = 0):
    """Autoencoder `i`'s latents in the plane of the first two principal components of its original
    synthetic latents: synthetic (grey) and observed (colour) through the original encoder, the
    fine-tuned one, and the fine-tuned one mapped back (`transfer.back_map`)."""
    from sklearn.decomposition import PCA

    pca = PCA(2).fit(lat.get("syn", "pre", i))
    titles = {"pre": "original encoder", "ft": "fine-tuned encoder", "aligned": "fine-tuned, mapped back"}
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharex=True, sharey=True)
    for ax, (space, title) in zip(axes, titles.items()):
        syn, obs = (pca.transform(lat.get(d, space, i)) for d in ("syn", "obs"))
        ax.scatter(*syn.T, s=4, color="0.7", label="synthetic")
        ax.scatter(*obs.T, s=12, color=DOMAIN_COLOURS["observed"], label="observed")
        ax.set(title=title, xlabel="PC 1 of original synthetic latents")
    axes[0].set_ylabel("PC 2")
    axes[0].legend(loc="best", fontsize=9)
    fig.tight_layout()
    return fig
