"""Each improvement against the published choice, and the transfer variants, over CNN seeds on one quick demo run.

    python benchmarks/deviations.py RUN_DIR [--seeds 1 2 3 4 5] [--relu-run DIR]

CNN-stage options are measured on the run's fixed latents (the `method` pairing of its
first `--autoencoders`): the quick CNN settings with one option set to its published value
and to the improvement, each CNN seed spawned from ``SeedSequence(seed)``. `--relu-run` holds
the same demo's autoencoders trained with ``penalty="relu"`` (the exact Jacobian;
`--make-relu-run` makes them), compared with RUN_DIR's published penalty under the same
CNN settings and seeds. The latent variants (`method`, `no_finetune`, `finetuned_both`;
not `direct`, whose CNNs on spectra cost several times more) are scored with the quick
settings under the same seeds. Writes the tidy tables ``data/results/measured_deviations.csv``
(option, choice, value, seed, parameter, metric, number) and
``data/results/measured_variants.csv`` (variant, seed, parameter, metric, number) with the
command, commit and versions in their headers; `--partial` writes one process's rows
(seeds can run as parallel processes) and `--merge` joins such files into the two tables.
`config.measured_deviations` and `config.measured_variants` summarise them (means and
paired 95 % t-intervals).
"""
import argparse
import dataclasses
import platform
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from carmenes_dtl import __version__, cnn, pipeline, store
from carmenes_dtl.config import PROFILES, PUBLISHED_NAMES, stage_seed
from carmenes_dtl.rundir import RunFolder
from carmenes_dtl.validation import coverage, errors
from carmenes_dtl.variants import VARIANTS
from carmenes_dtl.snapshots import snapshot

OUT = snapshot("results/measured_deviations.csv")
OUT_VARIANTS = OUT.with_name("measured_variants.csv")
#: latent variants scored per seed (their CNNs train on syn_pre or syn_ft)
LATENT_VARIANTS = ("method", "no_finetune", "finetuned_both")
#: option -> (published value, improvement); "uncertainty" needs no retraining.
#: in the order they are measured (a --partial file holds every step finished so far)
CNN_OPTIONS = {"inputs": ("raw", "standardised"), "targets": ("raw", "standardised"), "patience": (None, 6),
               "split": ("shared", "per_member"), "strata": ("values", "deciles"),
               "uncertainty": ("members", "residuals")}


def scores(est: pd.DataFrame, hold: pd.DataFrame, truth: pd.DataFrame) -> list[dict]:
    """MAE and bias on the demo stars; MAE and coverage on the held-out synthetic nodes."""
    rows = []
    for name, e in errors(est, truth).items():
        rows += [{"parameter": name, "metric": "demo_mae", "number": e["mae"]},
                 {"parameter": name, "metric": "demo_bias", "number": e["bias"]}]
    for name, c in coverage(hold).items():
        mae = float((hold[name] - hold[f"true_{name}"]).abs().mean())
        rows += [{"parameter": name, "metric": "holdout_mae", "number": mae},
                 {"parameter": name, "metric": "holdout_coverage", "number": c}]
    return rows


def method_scores(run: Path, s, seed: int, uncertainties: tuple[str, ...], n_ae: int,
                  variants: tuple[str, ...] = ("method",)) -> dict:
    """Scores of `variants` of `run`'s first `n_ae` autoencoders with CNN settings `s`:
    ``{uncertainty: rows}`` for one variant, ``{variant: {uncertainty: rows}}`` for several
    (variants that train on the same latents share their CNNs)."""
    folder = RunFolder(run)
    info = folder.summary() if folder.exists() else {"seed": 42}
    syn, obs = store.read(folder.synthetic), store.read(folder.observed)
    lat, truth = folder.latents(), folder.truth()
    held = cnn.holdout_mask(syn.parameters, stage_seed(info["seed"], "holdout"), s.holdout_fraction)
    true = pd.DataFrame(syn.labels[held], columns=list(PUBLISHED_NAMES.values())).add_prefix("true_")
    trained, out = {}, {}
    for variant in variants:
        pairs = [lat.pair(variant, i) for i in range(n_ae)]
        space = VARIANTS[variant].train
        if space not in trained:
            trained[space] = [cnn.train_ensemble(x[~held], syn.labels[~held], s, stage_seed(seed, "cnn", 0, a))
                              for a, (x, _) in enumerate(pairs)]
        ens = trained[space]
        out[variant] = {}
        for unc in uncertainties:
            est, _ = cnn.estimate(ens, [o for _, o in pairs], obs.parameters["karmn"], unc)
            hold, _ = cnn.estimate(ens, [x[held] for x, _ in pairs], np.flatnonzero(held), unc)
            out[variant][unc] = scores(est, hold.join(true), truth)
    return out[variants[0]] if len(variants) == 1 else out


def measure(run: Path, seeds: list[int], n_ae: int, relu_run: Path | None, done=lambda rows, variant_rows: None
            ) -> tuple[list[dict], list[dict]]:
    """Every option of `CNN_OPTIONS` (and the penalty, with `relu_run`) at both values, and
    the `LATENT_VARIANTS`, per seed: (option rows, variant rows); `done` sees them after each step."""
    base = PROFILES["quick"].cnn
    rows, variant_rows = [], []

    def add(option, choice, value, seed, scored):
        rows.extend({"option": option, "choice": choice, "value": str(value), "seed": seed, **r} for r in scored)
        done(rows, variant_rows)

    for seed in seeds:
        by_variant = method_scores(run, base, seed, ("members", "residuals"), n_ae, LATENT_VARIANTS)
        for variant, scored in by_variant.items():
            variant_rows.extend({"variant": variant, "seed": seed, **r} for r in scored[base.uncertainty])
        both = by_variant["method"]
        add("uncertainty", "published", "members", seed, both["members"])
        add("uncertainty", "improvement", "residuals", seed, both["residuals"])
        for option, (published, improved) in CNN_OPTIONS.items():
            if option == "uncertainty":
                continue
            for choice, value in (("published", published), ("improvement", improved)):
                if value == getattr(base, option):
                    add(option, choice, value, seed, both[base.uncertainty])
                else:
                    s = dataclasses.replace(base, **{option: value})
                    add(option, choice, value, seed, method_scores(run, s, seed, (s.uncertainty,), n_ae)[s.uncertainty])
            print(option, seed, flush=True)
        if relu_run:
            add("penalty", "published", "sigmoid_frozen", seed, both[base.uncertainty])
            add("penalty", "improvement", "relu", seed,
                method_scores(relu_run, base, seed, (base.uncertainty,), n_ae)[base.uncertainty])
    return rows, variant_rows


def make_relu_run(run: Path, out: Path) -> None:
    """RUN's autoencoders again with the exact Jacobian (quick profile, same seed and data), up to the latents."""
    quick = PROFILES["quick"]
    prof = dataclasses.replace(quick, ae=dataclasses.replace(quick.ae, penalty="relu"))
    src = RunFolder(run)
    r = pipeline.Runner(out, prof, src.summary()["seed"], progress=False)
    for name in ("synthetic", "observed", "demo_dir"):
        dst = getattr(r.folder, name)
        if not dst.exists():
            dst.symlink_to(getattr(src, name).resolve())
    r.autoencoders()
    r.finetune()
    r.encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--autoencoders", type=int, default=1, help="how many of the run's autoencoders feed the CNNs")
    ap.add_argument("--relu-run", type=Path)
    ap.add_argument("--make-relu-run", action="store_true", help="first run the pipeline into --relu-run")
    ap.add_argument("--partial", type=Path, help="write this process's rows here (a pickle) instead of the tables")
    ap.add_argument("--merge", type=Path, nargs="+", help="join --partial files into the two tables")
    a = ap.parse_args()
    if a.merge:
        parts = [pd.read_pickle(f) for f in a.merge]
        rows, variant_rows = (pd.concat([p[i] for p in parts], ignore_index=True) for i in (0, 1))
        commands = [p[2] for p in parts]
    else:
        if a.make_relu_run:
            make_relu_run(a.run, a.relu_run)
        commands = [" ".join(sys.argv[1:])]

        def done(rows, variant_rows):
            if a.partial:
                pd.to_pickle((pd.DataFrame(rows), pd.DataFrame(variant_rows), commands[0]), a.partial)

        rows, variant_rows = (pd.DataFrame(r) for r in measure(a.run, a.seeds, a.autoencoders, a.relu_run, done))
        if a.partial:
            return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = ("".join(f"# command: python benchmarks/deviations.py {c}\n" for c in commands) +
              (f"# merged: python benchmarks/deviations.py {' '.join(sys.argv[1:])}\n" if a.merge else "") +
              f"# commit {commit}; carmenes-dtl {__version__}; keras {keras.__version__} ({keras.backend.backend()}); "
              f"python {platform.python_version()}\n")
    for path, table in ((OUT, rows), (OUT_VARIANTS, variant_rows)):
        path.write_text(header + table.sort_values("seed", kind="stable").to_csv(index=False))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
