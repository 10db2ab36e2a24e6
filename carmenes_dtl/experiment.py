"""Does fine-tuning close the gap? Gap settings x seeds x variants, as tidy tables with intervals.

Each (setting, seed) cell is a demo run (`pipeline.run`, as ``carmenes-dtl run --demo``) in
``DIR/<setting>/seed<S>/``. The first setting's cell of a seed runs in full; the other
settings of that seed adopt its gap-independent stages (`pipeline.SHARED_STAGES`: the
synthetic set, the autoencoders and the CNNs trained on synthetic data only). With
``--factorial`` every cell also exists per arm, a combination of the levels of `FACTORS`
(fine-tuning as published or as the quick profile once did; CNN inputs raw or standardised),
in ``DIR/<arm>/<setting>/seed<S>/``, and borrows from cells run before it every stage whose
`STAGE_FACTORS` agree: within a seed, all arms share the autoencoders, and arms differing in one
factor share what the other factor does not touch. Outputs in ``DIR``:

- ``experiment_stars.csv``: per star, variant and parameter: truth, estimate, error, region;
- ``experiment.csv``: per cell, variant, parameter and region (``all`` and, where the demo's
  ``truth.csv`` has a ``coverage`` column, each of its values): ``n``, ``mae``, ``bias``,
  ``mh_slope_per_kK`` (least-squares slope of the [M/H] error against Teff, dex per 1000 K,
  the same on every parameter's row), and on the ``all`` rows ``latent_auc`` and
  ``twin_distance`` (`twin_metrics`) or, with arms, ``holdout_mae``, ``holdout_bias``
  (`holdout_metrics`: the pairing cost) and the cell's ``drift_share_syn``/``_obs`` (`drift_metrics`);
- ``experiment_intervals.csv``: `intervals`; ``experiment_mae.png``; ``experiment.json``
  (profile, settings, arms, the cells run, strength); with arms also
  ``experiment_autoencoders.csv`` (`autoencoder_biases`) and ``experiment_verdict.csv`` (`verdict`).
"""
from __future__ import annotations

import json
import platform
import shlex
import subprocess
from dataclasses import asdict
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import __version__, autoencoder, gap, pipeline, store, twin
from .config import (GAP_LEVELS, PUBLISHED_NAMES, UNITS, FineTuneSettings, Profile, Window, overrides_of, profile,
                     with_overrides)
from .demo_gap import GapMix
from .rundir import RunFolder
from .snapshots import read_table, snapshot
from .stages import write_text
from .stats import holm, paired_bootstrap, sign_flip_interval, sign_flip_p, t_interval
from .variants import VARIANTS

#: Named settings: the (degenerate, shared) scales of each in units of the strength.
SETTINGS = {"none": (0, 0), "shared": (0, 1), "degenerate": (1, 0), "both": (1, 1)}
#: Pairs whose MAE difference gets a paired bootstrap interval: (variant, reference).
PAIRS = [("method", "no_finetune"), ("method", "direct")]
#: Latent-AUC changes from fine-tuning: (variant, reference).
AUC_PAIRS = [("method", "no_finetune"), ("finetuned_both", "no_finetune")]
PARAMS = list(PUBLISHED_NAMES.values())
#: The committed tables (data/results/ in the repository), each with ``<stem>_intervals.csv``,
#: ``<stem>_verdict.csv`` and ``<stem>_autoencoders.csv``: the factorial (`make experiment`), the
#: paper profile at 40 nodes (`make experiment-paper`), the tiny reproducibility cell that `make test` reruns.
RESULTS = snapshot("results/factorial_experiment.csv")
PAPER_RESULTS = RESULTS.with_name("paper_nodes_experiment.csv")
TINY_RESULTS = RESULTS.with_name("experiment_tiny.csv")


def gap_mix(setting: str, strength: float = 0.5) -> GapMix:
    """The demo gap of `setting`: a name of `SETTINGS` (at `strength`), a gap level or ``degenerate=X,shared=Y``."""
    try:
        if setting in SETTINGS:
            return GapMix(*(f * strength for f in SETTINGS[setting]))
        return GapMix.parse(setting)
    except ValueError as err:
        raise ValueError(f"unknown experiment setting {setting!r}: neither one of {list(SETTINGS)} nor a gap "
                         f"({err})") from None


def gap_label(setting: str, mix: GapMix) -> str:
    """How the tables name a setting's gap: a level by its name, any other mix by its scales (`GapMix.spec`)."""
    return setting if setting in GAP_LEVELS else mix.spec


#: The factorial of issue 25: each factor's levels as `config.with_overrides` lines, the published
#: level first (`FineTuneSettings`' defaults are the published values). ``quick_v1``: how the quick
#: profile fine-tuned before it fine-tuned as published.
FACTORS = {
    "finetune": {"published": tuple(f"finetune.{k}={json.dumps(v)}" for k, v in asdict(FineTuneSettings()).items()),
                 "quick_v1": ("finetune.learning_rate=1e-3", "finetune.epochs=40", "finetune.patience=15",
                              "finetune.split_seed=None")},
    "inputs": {"raw": ("cnn.inputs=raw",), "standardised": ("cnn.inputs=standardised",)},
}
#: What each stage depends on besides the seed, the profile's autoencoder settings and the
#: synthetic set: a finished cell of the same seed that agrees on these lends it to another cell
#: (`stages.Stages.adopt`, which still checks the stage's key).
STAGE_FACTORS = {"demo": ("gap",), "prepare-synthetic": (), "autoencoders": (), "prepare-observed": ("gap",),
                 "fine-tune": ("gap", "finetune"),
                 "encode": ("gap", "finetune"), "cnn-synthetic": ("cnn",), "cnn": ("gap", "finetune", "cnn")}


def arms(factorial: bool) -> dict[str, tuple[str, ...]]:
    """{arm: overrides}: one arm per combination of `FACTORS`' levels (``<finetune>-<inputs>``,
    the published combination first), or the profile itself (arm ``""``)."""
    if not factorial:
        return {"": ()}
    return {f"{ft}-{inp}": FACTORS["finetune"][ft] + FACTORS["inputs"][inp]
            for ft in FACTORS["finetune"] for inp in FACTORS["inputs"]}


def cell_dir(out: Path, arm: str, setting: str, seed: int) -> Path:
    return Path(out) / arm / setting / f"seed{seed}"


def _cell(args: tuple) -> Path:
    out, mix, seed, prof, shared, lenders, progress = args
    pipeline.run(out, pipeline.DemoInput(mix, shared=shared, lenders=lenders), prof, seed, progress)
    return out


def run_cells(out: Path, settings: list[str], seeds: list[int], prof: Profile | str = "quick", strength: float = 0.5,
              jobs: int = 1, progress: bool = False, factorial: bool = False, only: list[str] | None = None) -> dict:
    """Run (or resume) every cell. Per seed, the base cell (one that ran in full before, else the
    first arm's first setting's) runs first; the others adopt its shared stages, and then, from
    cells run before them, every stage whose `STAGE_FACTORS` agree (the base setting's cells of
    the other arms take the base's demo with its mock PHOENIX tree). Cells run in layers: the
    first arm, then the arms one factor away, and so on. Reordering the settings of a finished
    experiment reruns nothing. `factorial`: every arm of `arms`; `only`: those arms alone (e.g.
    the published one first); experiment.json keeps every cell ever run in `out`."""
    if not settings or not seeds:
        raise ValueError(f"the experiment needs settings and seeds, got {settings} and {seeds}")
    for what, values in (("settings", settings), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"the experiment's {what} repeat a value: {values}")
    prof = profile(prof) if isinstance(prof, str) else prof
    all_arms = arms(factorial)
    unknown = sorted(set(only or []) - set(all_arms))
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(all_arms)}")
    chosen = [a for a in all_arms if not only or a in only]
    profs = {a: with_overrides(prof, list(all_arms[a])) for a in all_arms}
    mixes = {s: gap_mix(s, strength) for s in settings}
    first = next(iter(all_arms))
    out = Path(out)

    def full(s, seed):  # the cell has its own mock PHOENIX tree: it ran without a base
        return RunFolder(cell_dir(out, first, s, seed)).phoenix_dir.is_dir()

    base = {seed: next((s for s in settings if full(s, seed)), settings[0]) for seed in seeds}

    def distance(arm):
        return sum(getattr(profs[arm], f) != getattr(profs[first], f) for f in ("finetune", "cnn"))

    def agrees(a, b, factor):
        return mixes[a[1]] == mixes[b[1]] if factor == "gap" else getattr(profs[a[0]], factor) == getattr(profs[b[0]], factor)

    def own_phoenix(c):  # a base cell and its twins in the other arms keep the mock PHOENIX tree
        return c[1] == base[c[2]] or full(c[1], c[2])

    def layer(c):
        return distance(c[0]), not own_phoenix(c)

    def args(c, earlier):
        arm, s, seed = c
        shared = None if own_phoenix(c) else cell_dir(out, first, base[seed], seed)
        lent = {}
        for stage, factors in STAGE_FACTORS.items():
            lender = next((e for e in earlier if e[2] == seed and all(agrees(c, e, f) for f in factors)), None)
            if lender is not None:
                lent.setdefault(cell_dir(out, *lender), []).append(stage)
        return (cell_dir(out, *c), mixes[s], seed, profs[arm], shared, tuple((k, tuple(v)) for k, v in lent.items()),
                progress)

    missing = [seed for seed in seeds if first not in chosen and not RunFolder(cell_dir(out, first, base[seed], seed)).exists()]
    if missing:
        raise ValueError(f"arm {first!r} (the base of every other arm) has not run seeds {missing}: run it first")
    cells = sorted(((a, s, seed) for a in chosen for s in settings for seed in seeds), key=layer)
    done = [(a, s, seed) for a in all_arms for s in settings for seed in seeds
            if a not in chosen and RunFolder(cell_dir(out, a, s, seed)).exists()]
    for key in sorted({layer(c) for c in cells}):
        batch = [c for c in cells if layer(c) == key]
        work = [args(c, done) for c in batch]
        if jobs == 1:
            list(map(_cell, work))
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                list(pool.map(_cell, work))
        done += batch
    info = _merge_info(out, {"profile": prof.name, "overrides": overrides_of(prof), "strength": strength,
                             "settings": {s: gap_label(s, m) for s, m in mixes.items()},
                             "arms": {a: list(all_arms[a]) for a in chosen},
                             "cells": {a: {s: seeds for s in settings} for a in chosen}})
    write_text(out / "experiment.json", json.dumps(info, indent=1))
    return info


def _merge_info(out: Path, info: dict) -> dict:
    """`info` with the arms, settings and cells an earlier experiment.json of `out` holds (same
    profile and strength), so running arms or seeds in parts keeps every cell."""
    path = out / "experiment.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if old.get("profile") != info["profile"] or old.get("strength") != info["strength"] or "cells" not in old:
        return {**info, "seeds": sorted({k for by in info["cells"].values() for ks in by.values() for k in ks})}
    cells = {a: {s: list(v) for s, v in by.items()} for a, by in old["cells"].items()}
    for a, by in info["cells"].items():
        for s, seeds in by.items():
            cells.setdefault(a, {})[s] = sorted(set(cells.get(a, {}).get(s, [])) | set(seeds))
    merged = {**info, "settings": {**old["settings"], **info["settings"]}, "arms": {**old["arms"], **info["arms"]},
              "cells": cells}
    merged["seeds"] = sorted({k for by in cells.values() for ks in by.values() for k in ks})
    return merged


def star_table(cell: Path) -> pd.DataFrame:
    """Per star, variant and parameter of a finished cell: truth, estimate, error (estimate - truth), region."""
    run = RunFolder(cell)
    truth = run.truth()
    truth["region"] = truth["coverage"] if "coverage" in truth else "all"
    rows = []
    for variant in VARIANTS:
        m = run.estimates(variant).merge(truth, on="karmn", suffixes=("", "_true"), validate="1:1")
        for p in PARAMS:
            rows.append(pd.DataFrame({"karmn": m["karmn"], "variant": variant, "parameter": p,
                                      "Teff_true": m["Teff_true"], "truth": m[f"{p}_true"], "estimate": m[p],
                                      "error": m[p] - m[f"{p}_true"], "region": m["region"]}))
    return pd.concat(rows, ignore_index=True)


def mh_slope(teff: np.ndarray, mh_error: np.ndarray) -> float:
    """Least-squares slope of the [M/H] error against Teff, in dex per 1000 K (NaN under 2 stars)."""
    if len(teff) < 2:
        return float("nan")
    return float(stats.linregress(np.asarray(teff) / 1000, mh_error).slope)


def twin_metrics(cell: Path, seed: int = 0) -> pd.DataFrame:
    """Per variant: ``latent_auc`` and ``twin_distance`` of the observed stars against their twins.

    A star's twin is its exact noise-free synthetic vector (`twin.exact_vectors`). Latent
    variants: the twins through the encoder whose synthetic latents the variant's CNNs train
    on, against the observed latents they are applied to (`variants.VARIANTS`), per
    autoencoder; ``direct``: the vectors themselves. ``latent_auc``: `gap.domain_auc`
    (seeded) of twins against observed; ``twin_distance``: mean Euclidean distance of each
    star to its twin; both averaged over the autoencoders.
    """
    run = RunFolder(cell)
    obs = store.read(run.observed)
    window = Window(**store.describe(run.synthetic)["attrs"]["window"])
    truth = run.truth().set_index("karmn").loc[obs.parameters["karmn"]]
    twins = twin.exact_vectors(truth, window)
    latents = run.latents()
    n_models = latents.n_models
    encoded = {(encoder, i): autoencoder.encode(autoencoder.load(run.ae_file(i, encoder)), twins)
               for encoder in ("pre", "ft") for i in range(n_models)}
    rows = []
    for variant, v in VARIANTS.items():
        pairs = ([(twins, obs.flux)] if not v.latent else
                 [(encoded[v.train, i], latents.get("obs", v.apply, i)) for i in range(n_models)])
        rows.append({"variant": variant,
                     "latent_auc": float(np.mean([gap.domain_auc(a, b, seed)["domain_auc"] for a, b in pairs])),
                     "twin_distance": float(np.mean([np.linalg.norm(a - b, axis=1).mean() for a, b in pairs]))})
    return pd.DataFrame(rows)


def drift_metrics(cell: Path) -> dict:
    """How much of fine-tuning's change of the latents one affine map explains, over the autoencoders:
    ``drift_share_<syn|obs>`` = 1 - |aligned - pre|² / |ft - pre|², the map fitted on the synthetic
    latents (`transfer.back_map`; ``syn``: in sample, ``obs``: applied to the observed stars)."""
    lat = RunFolder(cell).latents()
    out = {}
    for domain in ("syn", "obs"):
        shares = []
        for i in range(lat.n_models):
            pre, ft, aligned = (lat.get(domain, space, i).astype(float) for space in ("pre", "ft", "aligned"))
            shares.append(1 - np.sum((aligned - pre) ** 2) / np.sum((ft - pre) ** 2))
        out[f"drift_share_{domain}"] = float(np.mean(shares))
    return out


def holdout_metrics(cell: Path) -> pd.DataFrame:
    """Per variant and parameter on the held-out synthetic nodes (member percentiles): ``holdout_mae``
    and ``holdout_bias``; `method`'s minus `no_finetune`'s is the pairing cost with no gap at all."""
    h = RunFolder(cell).holdout().query("uncertainty == 'members'")
    rows = [{"variant": v, "parameter": p, "holdout_mae": (g[p] - g[f"true_{p}"]).abs().mean(),
             "holdout_bias": (g[p] - g[f"true_{p}"]).mean()} for v, g in h.groupby("variant", sort=False) for p in PARAMS]
    return pd.DataFrame(rows, columns=["variant", "parameter", "holdout_mae", "holdout_bias"])


def autoencoder_biases(cell: Path, stars: pd.DataFrame) -> pd.DataFrame:
    """Per variant, autoencoder and parameter: the bias of that autoencoder's ensemble alone on the
    demo stars (its ``offset`` from the pooled median, `cnn.autoencoder_report`, plus the pooled
    estimate's bias) and on the held-out nodes (``holdout_bias``, ``holdout_scatter``)."""
    rep = RunFolder(cell).autoencoders()
    pooled = stars.groupby(["variant", "parameter"])["error"].mean().rename("pooled_bias").reset_index()
    obs = rep[rep["where"] == "observed"].merge(pooled, on=["variant", "parameter"])
    obs = obs.assign(bias=obs["offset"] + obs["pooled_bias"])[["variant", "autoencoder", "parameter", "bias"]]
    held = rep[rep["where"] == "holdout"].rename(columns={"bias": "holdout_bias", "scatter": "holdout_scatter"})
    return obs.merge(held[["variant", "autoencoder", "parameter", "holdout_bias", "holdout_scatter"]],
                     on=["variant", "autoencoder", "parameter"], how="left")


def cell_counts(cell: Path) -> dict:
    """Stars of a cell: in its truth table, estimated, and excluded by prepare-observed (with reasons in
    the cell's ``run.json``); none is dropped without being counted here."""
    run = RunFolder(cell)
    return {"n_truth": len(run.truth()), "n_estimated": len(run.estimates()), "n_excluded": len(run.excluded())}


def summarise_cell(stars: pd.DataFrame, twins: pd.DataFrame, held: pd.DataFrame | None = None) -> pd.DataFrame:
    """`experiment.csv` rows of one cell from its `star_table`, `twin_metrics` and, on the ``all``
    rows, `holdout_metrics`."""
    regions = [("all", stars)] + ([(r, g) for r, g in stars.groupby("region")] if
                                  set(stars["region"]) != {"all"} else [])
    rows = []
    for region, table in regions:
        for variant, v in table.groupby("variant", sort=False):
            mh = v[v["parameter"] == "[M/H]"]
            slope = mh_slope(mh["Teff_true"].to_numpy(), mh["error"].to_numpy())
            for p, g in v.groupby("parameter", sort=False):
                rows.append({"variant": variant, "parameter": p, "region": region, "n": len(g),
                             "mae": g["error"].abs().mean(), "bias": g["error"].mean(), "mh_slope_per_kK": slope})
    out = pd.DataFrame(rows).merge(twins.assign(region="all"), on=["variant", "region"], how="left")
    if held is not None:
        out = out.merge(held.assign(region="all"), on=["variant", "parameter", "region"], how="left")
    return out


def intervals(stars: pd.DataFrame, table: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per setting: MAE per variant and parameter and MAE differences of `PAIRS`, each with its 95 %
    hierarchical bootstrap interval (`paired_bootstrap`: ``low``, ``high``) and the Student-t
    interval of the per-seed values (`t_interval`: ``t_low``, ``t_high``, which carries the
    seed-to-seed scatter honestly with few seeds); and the changes of `AUC_PAIRS` in latent AUC
    and twin distance (one value per seed) with their t intervals (also as ``low``, ``high``)."""
    rows = []
    for (setting, spec), s in stars.groupby(["setting", "gap"], sort=False):
        err = s.assign(abs_error=s["error"].abs()).pivot_table(
            index=["parameter", "seed", "karmn"], columns="variant", values="abs_error")
        for p in PARAMS:
            per_seed = [g for _, g in err.loc[p].groupby(level="seed")]
            n = {"n_seeds": len(per_seed), "n_stars": sum(len(g) for g in per_seed)}
            for v, ref in [(v, None) for v in VARIANTS] + PAIRS:
                a, b = [g[v] for g in per_seed], None if ref is None else [g[ref] for g in per_seed]
                est = paired_bootstrap(a, b, n_boot, seed)
                t = t_interval([x.mean() - (0 if b is None else y.mean()) for x, y in zip(a, b or a)])
                rows.append({"setting": setting, "gap": spec, "quantity": "mae" if ref is None else "mae_difference",
                             "parameter": p, "variant": v, "reference": ref or "", **n,
                             **dict(zip(("estimate", "low", "high"), est)), "t_low": t[1], "t_high": t[2]})
        cells = table[(table["setting"] == setting) & (table["region"] == "all")].drop_duplicates(["seed", "variant"])
        for quantity in [q for q in ("latent_auc", "twin_distance") if q in table]:
            per = cells.pivot(index="seed", columns="variant", values=quantity)
            for v, ref in AUC_PAIRS:
                est = t_interval(per[v] - per[ref])
                rows.append({"setting": setting, "gap": spec, "quantity": f"{quantity}_change", "parameter": "",
                             "variant": v, "reference": ref, "n_seeds": len(per), "n_stars": 0,
                             **dict(zip(("estimate", "low", "high"), est)), "t_low": est[1], "t_high": est[2]})
    return pd.DataFrame(rows)


def _cells(info: dict) -> list[tuple[str, str, int]]:
    """(arm, setting, seed) of every cell experiment.json lists (arm ``""`` before arms existed)."""
    by_arm = info.get("cells") or {"": {s: info["seeds"] for s in info["settings"]}}
    return [(a, s, k) for a, by in by_arm.items() for s, seeds in by.items() for k in seeds]


def collect(out: Path, n_boot: int = 2000, seed: int = 0) -> dict[str, Path]:
    """Tables and figure of an experiment in `out` (see the module docstring). An unfinished cell is
    left out and named on one line; ``experiment_autoencoders.csv`` and ``experiment_verdict.csv``
    (`verdict`; the arm of a plain experiment is its profile's name) too; with arms, no twin
    metrics (the latent AUC is 1 everywhere)."""
    from . import plotting

    out = Path(out)
    info = json.loads((out / "experiment.json").read_text())
    factorial = "" not in info.get("cells", {"": 0})
    stars, tables, biases, unfinished = [], [], [], []
    for arm, setting, s in _cells(info):
        cell = cell_dir(out, arm, setting, s)
        if not RunFolder(cell).exists():
            unfinished.append(str(cell.relative_to(out)))
            continue
        key = {"arm": arm, "setting": setting, "gap": info["settings"][setting], "seed": s} if factorial else \
            {"setting": setting, "gap": info["settings"][setting], "seed": s}
        st = star_table(cell)
        twins = pd.DataFrame(columns=["variant"]) if factorial else twin_metrics(cell, seed)
        tables.append(summarise_cell(st, twins, holdout_metrics(cell))
                      .assign(**key, **drift_metrics(cell), **cell_counts(cell)))
        stars.append(st.assign(**key))
        biases.append(autoencoder_biases(cell, st).assign(**key))
    if unfinished:
        print(f"[carmenes-dtl] {len(unfinished)} unfinished cells left out: {', '.join(unfinished)}")
    if not tables:
        raise ValueError(f"{out}: no finished cell to collect")
    front = list(key)
    stars = pd.concat(stars, ignore_index=True)
    stars = stars[front + [c for c in stars if c not in front]]
    table = pd.concat(tables, ignore_index=True)
    table = table[front + [c for c in table if c not in front]]
    paths = {"stars": out / "experiment_stars.csv", "table": out / "experiment.csv",
             "intervals": out / "experiment_intervals.csv", "figure": out / "experiment_mae.png"}
    stars.to_csv(paths["stars"], index=False)
    table.to_csv(paths["table"], index=False)
    paths["autoencoders"], paths["verdict"] = out / "experiment_autoencoders.csv", out / "experiment_verdict.csv"
    ae = pd.concat(biases, ignore_index=True)
    ae[front + [c for c in ae if c not in front]].to_csv(paths["autoencoders"], index=False)
    verdict(table if factorial else table.assign(arm=info["profile"])).to_csv(paths["verdict"], index=False)
    if factorial:
        stars = stars.assign(setting=stars["arm"] + "/" + stars["setting"])
        table = table.assign(setting=table["arm"] + "/" + table["setting"])
    iv = intervals(stars, table, n_boot, seed)
    iv.to_csv(paths["intervals"], index=False)
    plotting.experiment_mae(iv).savefig(paths["figure"], dpi=110)
    return paths


#: The verdict's claims: MAE differences (variant - reference) per arm, gap setting and parameter.
CLAIMS = [("method", "no_finetune"), ("method_aligned", "no_finetune")]
CLAIM_PARAMS = ["Teff", "[M/H]"]
#: The other differences `verdict` shows, outside the corrected family.
CONTEXT = [("method", "direct"), ("finetuned_both", "no_finetune"), ("method_aligned", "method")]


def verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm, gap setting, parameter and pair of `CLAIMS` + `CONTEXT`: the MAE difference of every
    seed (the replication unit: each seed trains its own models), their mean and median, how many
    are positive, the exact sign-flip p (`stats.sign_flip_p`) with its inverted 95 % interval, and
    for `CLAIMS` x `CLAIM_PARAMS` within each arm (one family of claims per arm) Holm's adjusted p.
    A seed's MAE is over its stars (region ``all``)."""
    mae = table[table["region"] == "all"].pivot_table(index=["arm", "setting", "gap", "parameter", "seed"],
                                                      columns="variant", values="mae")
    rows, diffs = [], []
    for (arm, setting, spec, p), g in mae.groupby(level=["arm", "setting", "gap", "parameter"], sort=False):
        for v, ref in CLAIMS + CONTEXT:
            d = (g[v] - g[ref]).dropna().to_numpy()
            low, high = sign_flip_interval(d)
            diffs.append(d)
            rows.append({"arm": arm, "setting": setting, "gap": spec, "parameter": p, "variant": v, "reference": ref,
                         "n_seeds": len(d), "per_seed": " ".join(f"{x:.4g}" for x in d),
                         "mean": d.mean(), "median": np.median(d), "n_positive": int((d > 0).sum()),
                         "p_sign_flip": sign_flip_p(d), "low": low, "high": high,
                         "claim": (v, ref) in CLAIMS and p in CLAIM_PARAMS})
    out = pd.DataFrame(rows)
    out["p_holm"] = out["low_corrected"] = out["high_corrected"] = np.nan
    for arm, g in out[out["claim"]].groupby("arm"):
        out.loc[g.index, "p_holm"] = holm(g["p_sign_flip"].to_numpy())
        for i in g.index:  # simultaneous over the arm's family (Bonferroni): unbounded when too few seeds
            out.loc[i, ["low_corrected", "high_corrected"]] = sign_flip_interval(diffs[i], 1 - 0.05 / len(g))
    return out


def _commit() -> str:
    try:
        res = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=30)
    except OSError:
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def header(out: Path, command: list[str]) -> dict:
    """What a published table's header records: command line, commit, date, versions, design."""
    import keras

    info = json.loads((Path(out) / "experiment.json").read_text())
    return {"command": shlex.join(command), "commit": _commit(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "carmenes_dtl": __version__,
            "keras": keras.__version__, "backend": keras.backend.backend(), "numpy": np.__version__,
            "python": platform.python_version(), "profile": info["profile"],
            "overrides": json.dumps(info.get("overrides", [])), "settings": json.dumps(info["settings"]),
            "seeds": ",".join(map(str, info["seeds"])),
            **({"arms": json.dumps(info["arms"]), "cells": json.dumps(info["cells"])} if "" not in info.get("arms", {""}) else {})}


def publish(out: Path, results: Path, command: list[str]) -> list[Path]:
    """Copy ``experiment.csv`` to `results` and ``experiment_<name>.csv`` (intervals, and with arms
    verdict and autoencoders) to ``<stem>_<name>.csv`` beside it, each under ``# key: value``
    header lines (`header`)."""
    results = Path(results)
    if results.suffix != ".csv":
        raise ValueError(f"--results {results}: expected a .csv path")
    results.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {k}: {v}\n" for k, v in header(out, command).items())
    written = []
    sources = [("experiment.csv", results)] + [
        (f"experiment_{name}.csv", results.with_name(f"{results.stem}_{name}.csv"))
        for name in ("intervals", "verdict", "autoencoders") if (Path(out) / f"experiment_{name}.csv").exists()]
    for src, dst in sources:
        write_text(dst, text + (Path(out) / src).read_text())
        written.append(dst)
    return written


def experiment(out: Path, settings: list[str], seeds: list[int], prof: Profile | str = "quick", strength: float = 0.5,
               jobs: int = 1, progress: bool = False, n_boot: int = 2000, factorial: bool = False,
               only: list[str] | None = None) -> dict[str, Path]:
    """`carmenes-dtl experiment`: run or resume the cells, then write the tables and the figure."""
    run_cells(out, settings, seeds, prof, strength, jobs, progress, factorial, only)
    return collect(out, n_boot)



def _difference(r) -> str:
    unit, fmt = UNITS[r["parameter"]], "{:+.0f}" if r["parameter"] == "Teff" else "{:+.3f}"

    def bounds(low, high):
        return "unbounded" if not np.isfinite(low) else f"{fmt.format(low)} to {fmt.format(high)}"

    corrected = "" if pd.isna(r.get("p_holm")) else \
        f"; corrected {bounds(r['low_corrected'], r['high_corrected'])}, Holm p {r['p_holm']:.2g}"
    return (f"{fmt.format(r['mean'])} {unit} (95 % {bounds(r['low'], r['high'])}{corrected}; "
            f"{r['n_positive']}/{r['n_seeds']} seeds positive)")


def headline(verdict: pd.DataFrame, arm: str = "published-raw", level: float = 0.05) -> str:
    """Markdown bullets of `verdict`'s claims for `arm`: per pair and parameter, the gap settings where
    the Holm-adjusted p is below `level` (the variant better or worse than the reference) and the
    mean differences at every setting, each with its interval and sign count."""
    lines = []
    claims = verdict[(verdict["arm"] == arm) & verdict["claim"]]
    for (v, ref, p), g in claims.groupby(["variant", "reference", "parameter"], sort=False):
        found = [f"{'worse' if r['mean'] > 0 else 'better'} at `{r['setting']}`" for _, r in g.iterrows()
                 if r["p_holm"] < level]
        lead = "; ".join(found) if found else "no setting where the difference holds after Holm's correction"
        per = "; ".join(f"`{r['setting']}` {_difference(r)}" for _, r in g.iterrows())
        lines.append(f"- **`{v}` − `{ref}`, {p} MAE**: {lead}. {per}.")
    return "\n".join(lines)


def committed_headline() -> str:
    """`headline` of the committed verdict table (`RESULTS`), with the settings it holds for: what the
    intro and the summary boxes of chapters 4 and 5 show."""
    table, head = read_table(RESULTS.with_name(f"{RESULTS.stem}_verdict.csv"))
    published = table[(table["arm"] == "published-raw") & table["claim"]]
    return (f"Profile `{head.get('profile', '?')}`, fine-tuning and CNN inputs as published (`published-raw`), "
            f"demo gap settings {', '.join(f'`{s}`' for s in published['setting'].unique())}, "
            f"{published['n_seeds'].min()}-{published['n_seeds'].max()} seeds (each trains its own models; "
            f"`{head.get('command', '?')}`); MAE differences, negative where the first variant errs less, "
            f"with the 95 % sign-flip interval and the one corrected over the arm's claims:\n\n" + headline(table)
            + _paper_headline())


def _paper_headline() -> str:
    """The same for the `paper` profile's cells (`PAPER_RESULTS`), the published schedule."""
    table, head = read_table(PAPER_RESULTS.with_name(f"{PAPER_RESULTS.stem}_verdict.csv"))
    claims = table[table["claim"]]
    return (f"\n\nAt the published schedule (profile `paper`, {head.get('overrides', '?')}, settings "
            f"{', '.join(f'`{s}`' for s in claims['setting'].unique())}, {claims['n_seeds'].max()} seeds: no "
            f"interval can be bounded and no p is below {claims['p_sign_flip'].min():.2f}; read the sign counts):\n\n"
            + headline(table, arm=head.get("profile", "paper")))


def common_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the (setting, seed) cells that every arm ran, so that arms compare paired."""
    cells = table.groupby("arm")[["setting", "seed"]].apply(lambda g: set(map(tuple, g.to_numpy())))
    common = set.intersection(*cells)
    return table[[c in common for c in zip(table["setting"], table["seed"])]]


def arm_contrast(table: pd.DataFrame, arm: str, reference: str, variant: str = "method",
                 against: str = "no_finetune", parameter: str = "Teff") -> pd.DataFrame:
    """Does a factor change the verdict? Per gap setting, the seeds both arms ran: `arm`'s
    ``variant − against`` MAE difference minus `reference`'s (the interaction; one value per seed,
    paired because the arms share each seed's autoencoders), with its mean, positive seeds, the
    exact sign-flip p and 95 % interval (`stats.sign_flip_interval`)."""
    mae = table[(table["region"] == "all") & (table["parameter"] == parameter)].pivot_table(
        index=["arm", "setting", "seed"], columns="variant", values="mae")
    diff = (mae[variant] - mae[against]).unstack("arm")[[arm, reference]].dropna()
    rows = []
    for setting, g in (diff[arm] - diff[reference]).groupby(level="setting", sort=False):
        d = g.to_numpy()
        low, high = sign_flip_interval(d)
        rows.append({"setting": setting, "n_seeds": len(d), "mean": d.mean(), "n_positive": int((d > 0).sum()),
                     "p_sign_flip": sign_flip_p(d), "low": low, "high": high})
    return pd.DataFrame(rows).set_index("setting")


def mechanism(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm (means over the cells all arms ran, `common_cells`, rounded): the pairing cost on held-out synthetic nodes (``method``
    minus ``no_finetune`` held-out MAE, no gap involved) in Teff [K] and [M/H] [dex], and the share of
    fine-tuning's latent change that one affine map explains (`drift_metrics`)."""
    table = common_cells(table)
    held = table[table["region"] == "all"].pivot_table(index=["arm", "setting", "seed", "parameter"],
                                                       columns="variant", values="holdout_mae")
    cost = (held["method"] - held["no_finetune"]).unstack("parameter").groupby(level="arm", sort=False).mean()
    drift = table.drop_duplicates(["arm", "setting", "seed"]).groupby("arm", sort=False)[
        ["drift_share_syn", "drift_share_obs"]].mean()
    return pd.DataFrame({"pairing cost, Teff [K]": cost["Teff"].round(0), "pairing cost, [M/H] [dex]":
                         cost["[M/H]"].round(3), "affine share of the drift, synthetic": drift["drift_share_syn"].round(3),
                         "affine share, observed": drift["drift_share_obs"].round(3)})


def autoencoder_spread(biases: pd.DataFrame, parameter: str = "Teff",
                       variants: tuple[str, ...] = ("method", "method_aligned", "no_finetune")) -> pd.DataFrame:
    """Per arm and variant: the median over cells of the largest absolute bias of one autoencoder's ensemble
    on the demo stars, and of the difference between the autoencoders' biases (`autoencoder_biases`)."""
    biases = common_cells(biases)
    b = biases[(biases["parameter"] == parameter) & biases["variant"].isin(variants)]
    per = b.groupby(["arm", "variant", "setting", "seed"], sort=False)["bias"].agg(
        largest=lambda x: x.abs().max(), between=lambda x: x.max() - x.min())
    unit = UNITS[parameter]
    return per.groupby(level=["arm", "variant"], sort=False).median().round(0 if parameter == "Teff" else 3).rename(
        columns={"largest": f"largest |bias| of one autoencoder [{unit}]",
                 "between": f"spread between autoencoders [{unit}]"}).unstack("variant")
