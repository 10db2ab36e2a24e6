"""Does fine-tuning close the gap? Gap settings x seeds x variants, as tidy tables with intervals.

Each (setting, seed) cell is a demo run (`pipeline.run`, as ``carmenes-dtl run --demo``) in
``DIR/<setting>/seed<S>/``. The first setting's cell of a seed runs in full; the other
settings of that seed adopt its gap-independent stages (`pipeline.SHARED_STAGES`: the
synthetic set, the autoencoders and the CNNs trained on synthetic data only). Outputs in ``DIR``:

- ``experiment_stars.csv``: per star, variant and parameter: truth, estimate, error, region;
- ``experiment.csv``: per cell, variant, parameter and region (``all`` and, where the demo's
  ``truth.csv`` has a ``coverage`` column, each of its values): ``n``, ``mae``, ``bias``,
  ``mh_slope_per_kK`` (least-squares slope of the [M/H] error against Teff, dex per 1000 K,
  the same on every parameter's row), and on the ``all`` rows ``latent_auc`` and
  ``twin_distance`` (`twin_metrics`);
- ``experiment_intervals.csv``: `intervals`; ``experiment_mae.png``; ``experiment.json``
  (profile, settings, seeds, strength).
"""
from __future__ import annotations

import json
import platform
import shlex
import subprocess
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import __version__, autoencoder, gap, pipeline, store, twin
from .config import GAP_LEVELS, PUBLISHED_NAMES, Profile, Window, overrides_of, profile
from .demo_gap import GapMix
from .rundir import RunFolder
from .snapshots import snapshot
from .stages import write_text
from .stats import paired_bootstrap, t_interval
from .variants import VARIANTS

#: Named settings: the (degenerate, shared) scales of each in units of the strength.
SETTINGS = {"none": (0, 0), "shared": (0, 1), "degenerate": (1, 0), "both": (1, 1)}
#: Pairs whose MAE difference gets a paired bootstrap interval: (variant, reference).
PAIRS = [("method", "no_finetune"), ("method", "direct")]
#: Latent-AUC changes from fine-tuning: (variant, reference).
AUC_PAIRS = [("method", "no_finetune"), ("finetuned_both", "no_finetune")]
PARAMS = list(PUBLISHED_NAMES.values())
#: The committed tables (data/results/ in the repository): `make experiment` writes the first,
#: the tiny reproducibility cell that `make test` reruns the second; each has ``<stem>_intervals.csv``.
RESULTS = snapshot("results/transfer_experiment.csv")
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


def _cell(args: tuple) -> Path:
    out, mix, seed, prof, shared, progress = args
    pipeline.run(out, pipeline.DemoInput(mix, shared=shared), prof, seed, progress)
    return out


def run_cells(out: Path, settings: list[str], seeds: list[int], prof: Profile | str = "quick", strength: float = 0.5,
              jobs: int = 1, progress: bool = False) -> dict:
    """Run (or resume) every cell. Per seed, the base cell (one that ran in full before, else the
    first setting's) and any other cell that ran in full run first; the rest adopt the base's
    shared stages, so reordering the settings of a finished experiment reruns nothing."""
    if not settings or not seeds:
        raise ValueError(f"the experiment needs settings and seeds, got {settings} and {seeds}")
    for what, values in (("settings", settings), ("seeds", seeds)):
        if len(set(values)) != len(values):
            raise ValueError(f"the experiment's {what} repeat a value: {values}")
    prof = profile(prof) if isinstance(prof, str) else prof
    mixes = {s: gap_mix(s, strength) for s in settings}
    out = Path(out)

    def full(s, seed):  # the cell has its own mock PHOENIX tree: it ran without a base
        return RunFolder(out / s / f"seed{seed}").phoenix_dir.is_dir()

    base = {seed: next((s for s in settings if full(s, seed)), settings[0]) for seed in seeds}
    cells = [(s, seed) for s in settings for seed in seeds]
    first = [(out / s / f"seed{seed}", mixes[s], seed, prof, None, progress)
             for s, seed in cells if s == base[seed] or full(s, seed)]
    rest = [(out / s / f"seed{seed}", mixes[s], seed, prof, out / base[seed] / f"seed{seed}", progress)
            for s, seed in cells if not (s == base[seed] or full(s, seed))]
    for batch in (first, rest):
        if jobs == 1:
            list(map(_cell, batch))
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                list(pool.map(_cell, batch))
    info = {"profile": prof.name, "overrides": overrides_of(prof), "settings": {s: gap_label(s, m) for s, m in mixes.items()}, "seeds": seeds,
            "strength": strength}
    write_text(out / "experiment.json", json.dumps(info, indent=1))
    return info


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


def cell_counts(cell: Path) -> dict:
    """Stars of a cell: in its truth table, estimated, and excluded by prepare-observed (with reasons in
    the cell's ``run.json``); none is dropped without being counted here."""
    run = RunFolder(cell)
    return {"n_truth": len(run.truth()), "n_estimated": len(run.estimates()), "n_excluded": len(run.excluded())}


def summarise_cell(stars: pd.DataFrame, twins: pd.DataFrame) -> pd.DataFrame:
    """`experiment.csv` rows of one cell from its `star_table` and `twin_metrics`."""
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
    out = pd.DataFrame(rows)
    return out.merge(twins.assign(region="all"), on=["variant", "region"], how="left")


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
        for quantity in ("latent_auc", "twin_distance"):
            per = cells.pivot(index="seed", columns="variant", values=quantity)
            for v, ref in AUC_PAIRS:
                est = t_interval(per[v] - per[ref])
                rows.append({"setting": setting, "gap": spec, "quantity": f"{quantity}_change", "parameter": "",
                             "variant": v, "reference": ref, "n_seeds": len(per), "n_stars": 0,
                             **dict(zip(("estimate", "low", "high"), est)), "t_low": est[1], "t_high": est[2]})
    return pd.DataFrame(rows)


def collect(out: Path, n_boot: int = 2000, seed: int = 0) -> dict[str, Path]:
    """Tables and figure of a finished experiment in `out` (see the module docstring)."""
    from . import plotting

    out = Path(out)
    info = json.loads((out / "experiment.json").read_text())
    stars, tables = [], []
    for setting, spec in info["settings"].items():
        for s in info["seeds"]:
            cell = out / setting / f"seed{s}"
            key = {"setting": setting, "gap": spec, "seed": s}
            st = star_table(cell)
            tables.append(summarise_cell(st, twin_metrics(cell, seed)).assign(**key, **cell_counts(cell)))
            stars.append(st.assign(**key))
    front = ["setting", "gap", "seed"]
    stars = pd.concat(stars, ignore_index=True)
    stars = stars[front + [c for c in stars if c not in front]]
    table = pd.concat(tables, ignore_index=True)
    table = table[front + [c for c in table if c not in front]]
    paths = {"stars": out / "experiment_stars.csv", "table": out / "experiment.csv",
             "intervals": out / "experiment_intervals.csv", "figure": out / "experiment_mae.png"}
    stars.to_csv(paths["stars"], index=False)
    table.to_csv(paths["table"], index=False)
    iv = intervals(stars, table, n_boot, seed)
    iv.to_csv(paths["intervals"], index=False)
    plotting.experiment_mae(iv).savefig(paths["figure"], dpi=110)
    return paths


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
            "overrides": json.dumps(info.get("overrides", [])), "settings": json.dumps(info["settings"]), "seeds": ",".join(map(str, info["seeds"]))}


def publish(out: Path, results: Path, command: list[str]) -> list[Path]:
    """Copy ``experiment.csv`` to `results` and ``experiment_intervals.csv`` to ``<stem>_intervals.csv``
    beside it, each under ``# key: value`` header lines (`header`)."""
    results = Path(results)
    if results.suffix != ".csv":
        raise ValueError(f"--results {results}: expected a .csv path")
    results.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {k}: {v}\n" for k, v in header(out, command).items())
    written = []
    for src, dst in (("experiment.csv", results), ("experiment_intervals.csv",
                                                   results.with_name(f"{results.stem}_intervals.csv"))):
        write_text(dst, text + (Path(out) / src).read_text())
        written.append(dst)
    return written


def experiment(out: Path, settings: list[str], seeds: list[int], prof: Profile | str = "quick", strength: float = 0.5,
               jobs: int = 1, progress: bool = False, n_boot: int = 2000) -> dict[str, Path]:
    """`carmenes-dtl experiment`: run or resume the cells, then write the tables and the figure."""
    run_cells(out, settings, seeds, prof, strength, jobs, progress)
    return collect(out, n_boot)
