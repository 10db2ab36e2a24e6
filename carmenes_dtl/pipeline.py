"""The whole method as resumable stages: demo -> prepare -> autoencoders -> transfer -> CNN -> estimates.

A stage is skipped when its outputs exist and were made with the same settings (a hash
chained through the stages before it is kept in ``stages.json``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__, autoencoder, cnn, grid, prepare, store, transfer
from .config import PUBLISHED_NAMES, Profile, profile, stage_seed
from .transfer import DESCRIPTIONS as VARIANTS


@dataclass
class RunPaths:
    out: Path

    def __post_init__(self):
        self.out = Path(self.out)

    demo = property(lambda self: self.out / "demo")
    synthetic = property(lambda self: self.out / "synthetic.h5")
    observed = property(lambda self: self.out / "observed.h5")
    models = property(lambda self: self.out / "models")
    search = property(lambda self: self.out / "models" / "search.json")
    latents = property(lambda self: self.out / "latents.npz")
    cnn = property(lambda self: self.out / "cnn.json")
    holdout = property(lambda self: self.out / "holdout.csv")
    run = property(lambda self: self.out / "run.json")
    stages = property(lambda self: self.out / "stages.json")

    def estimates(self, variant: str = "method") -> Path:
        """``estimates.csv`` for the method, ``estimates_<variant>.csv`` for the others."""
        return self.out / f"estimates{_suffix(variant)}.csv"

    def flags(self, variant: str = "method") -> Path:
        """Out-of-grid flags beside the estimates of `variant`."""
        return self.out / f"flags{_suffix(variant)}.csv"

    def ae(self, i: int, finetuned: bool = False) -> Path:
        return self.models / f"ae_{i}{'_ft' if finetuned else ''}.keras"


def _suffix(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    return "" if variant == "method" else f"_{variant}"


class Runner:
    """Runs the stages in order, skipping the finished ones."""

    def __init__(self, out: Path, prof: Profile, seed: int = 42, progress: bool = True):
        self.paths, self.prof, self.seed, self.progress = RunPaths(out), prof, seed, progress
        self.paths.out.mkdir(parents=True, exist_ok=True)
        self.done = json.loads(self.paths.stages.read_text()) if self.paths.stages.exists() else {}
        self.key = hashlib.sha1(json.dumps([seed, prof.n_nodes], default=str).encode()).hexdigest()
        self.timings: dict[str, float] = {}

    def stage(self, name: str, outputs: list[Path], func, extra=None) -> bool:
        """Run `func` unless `outputs` exist with this run's settings; returns True when it ran."""
        self.key = hashlib.sha1(f"{self.key}{name}{json.dumps(extra, default=str)}".encode()).hexdigest()
        if self.done.get(name) == self.key and all(Path(p).exists() for p in outputs):
            print(f"[carmenes-dtl] {name}: up to date")
            return False
        t = time.perf_counter()
        print(f"[carmenes-dtl] {name} ...", flush=True)
        func()
        self.timings[name] = round(time.perf_counter() - t, 2)
        print(f"[carmenes-dtl] {name} done in {self.timings[name]:.1f} s", flush=True)
        self.done[name] = self.key
        self.paths.stages.write_text(json.dumps(self.done, indent=1))
        return True

    # -- stages ---------------------------------------------------------------------------

    def demo(self, gap: str = "paper") -> None:
        from .demo import write_demo

        self.stage("demo", [self.paths.demo / "truth.csv"],
                   lambda: write_demo(self.paths.demo, self.seed, self.prof.n_stars, gap, self.prof.demo_size,
                                      progress=self.progress), extra=[gap, self.prof.demo_size, self.prof.n_stars])

    def prepare(self, phoenix_dir: Path, carmenes_dir: Path) -> None:
        p = self.paths

        def synthetic():
            n_nodes = self.prof.n_nodes
            nodes = grid.paper_grid() if n_nodes is None else grid.select_nodes(grid.paper_nodes(), n_nodes, self.seed)
            prepare.prepare_synthetic(phoenix_dir, p.synthetic, self.prof.vsini, self.prof.window, nodes,
                                      progress=self.progress)

        def observed():
            template = prepare.template_from_set(p.synthetic)
            prepare.prepare_observed(carmenes_dir, p.observed, self.prof.window, template, progress=self.progress)

        self.stage("prepare-synthetic", [p.synthetic], synthetic,
                   extra=[str(phoenix_dir), self.prof.vsini, asdict(self.prof.window)])
        self.stage("prepare-observed", [p.observed], observed, extra=str(carmenes_dir))

    def autoencoders(self) -> None:
        p, s = self.paths, self.prof.ae

        def run():
            rows, models = autoencoder.search_and_train(store.read(p.synthetic).flux, s, self.seed, self.progress)
            p.models.mkdir(parents=True, exist_ok=True)
            p.search.write_text(json.dumps(rows, indent=1))
            for i, (model, info) in enumerate(models):
                autoencoder.save(model, p.ae(i), {**info, "settings": asdict(s)})

        self.stage("autoencoders", [p.ae(i) for i in range(s.n_models)], run, extra=asdict(s))

    def finetune(self) -> None:
        p, s = self.paths, self.prof.ae

        def run():
            obs = store.read(p.observed).flux
            syn = store.read(p.synthetic).flux
            rng = np.random.default_rng(stage_seed(self.seed, "finetune"))
            sample = syn[rng.choice(len(syn), min(512, len(syn)), replace=False)]
            for i in range(s.n_models):
                model, report = transfer.finetune(p.ae(i), obs, sample, s, stage_seed(self.seed, "finetune", i),
                                                  self.progress)
                autoencoder.save(model, p.ae(i, True), report)

        self.stage("fine-tune", [p.ae(i, True) for i in range(s.n_models)], run)

    def encode(self) -> None:
        p = self.paths

        def run():
            syn, obs = store.read(p.synthetic).flux, store.read(p.observed).flux
            arrays = {}
            for i in range(self.prof.ae.n_models):
                for tag, ft in (("pre", False), ("ft", True)):
                    model = autoencoder.load(p.ae(i, ft))
                    arrays[f"syn_{tag}_{i}"] = autoencoder.encode(model, syn)
                    arrays[f"obs_{tag}_{i}"] = autoencoder.encode(model, obs)
            np.savez_compressed(p.latents, **arrays)

        self.stage("encode", [p.latents], run)

    def cnns(self) -> None:
        p = self.paths

        def run():
            res = cnn.train_variants(store.read(p.synthetic), store.read(p.observed), np.load(p.latents),
                                     self.prof.ae.n_models, self.prof.cnn, self.seed, self.progress)
            for variant, (est, flags) in res["estimates"].items():
                est.to_csv(p.estimates(variant), index=False)
                flags.to_csv(p.flags(variant), index=False)
            res["holdout"].to_csv(p.holdout, index=False)
            p.cnn.write_text(json.dumps(res["histories"]))

        self.stage("cnn", [p.estimates(v) for v in VARIANTS] + [p.holdout], run, extra=asdict(self.prof.cnn))

    def summary(self, truth_csv: Path | None) -> dict:
        """run.json: settings, seeds, versions, timings and, with a truth table, the errors."""
        info = {
            "package_version": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "python": platform.python_version(), "profile": self.prof.to_dict(), "seed": self.seed,
            "n_nodes": self.prof.n_nodes, "variants": VARIANTS,
            "synthetic": str(self.paths.synthetic), "observed": str(self.paths.observed),
        }
        obs = store.read(self.paths.observed)
        info["observed_excluded"] = obs.attrs.get("excluded", [])
        if truth_csv is not None and Path(truth_csv).exists():
            truth = pd.read_csv(truth_csv)
            info["errors_vs_truth"] = {v: errors(pd.read_csv(self.paths.estimates(v)), truth) for v in VARIANTS}
        holdout = pd.read_csv(self.paths.holdout)
        info["holdout_coverage"] = {u: {v: coverage(g) for v, g in h.groupby("variant", sort=False)}
                                    for u, h in holdout.groupby("uncertainty")}
        previous = json.loads(self.paths.run.read_text()) if self.paths.run.exists() else {}
        info["timings_s"] = {**previous.get("timings_s", {}), **self.timings}
        self.paths.run.write_text(json.dumps(info, indent=1, default=str))
        return info


def errors(est: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per-parameter bias (mean of estimate - truth), scatter (std) and MAE."""
    m = est.merge(truth, on="karmn", suffixes=("", "_true"))
    out = {}
    for name in PUBLISHED_NAMES.values():
        d = m[name] - m[f"{name}_true"]
        out[name] = {"n": int(d.size), "bias": float(d.mean()), "scatter": float(d.std(ddof=1)),
                     "mae": float(d.abs().mean())}
    return out


def coverage(table: pd.DataFrame) -> dict:
    """Fraction of held-out truths inside [estimate - e, estimate + E], per parameter."""
    out = {}
    for name in PUBLISHED_NAMES.values():
        t, v = table[f"true_{name}"], table[name]
        out[name] = float(((t >= v - table[f"e_{name}"]) & (t <= v + table[f"E_{name}"])).mean())
    return out


def run(out: Path, demo: bool = True, synthetic: Path | None = None, observed: Path | None = None,
        profile_name: str = "quick", seed: int = 42, gap: str = "paper", progress: bool = True,
        prof: Profile | None = None) -> dict:
    """The whole method; returns the run summary (also written to ``OUT/run.json``)."""
    prof = prof or profile(profile_name)
    if keras.backend.backend() == "tensorflow":
        import logging

        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices of the many small models
    r = Runner(out, prof, seed, progress)
    truth = None
    if demo:
        r.demo(gap)
        r.prepare(r.paths.demo / "phoenix", r.paths.demo / "carmenes")
        truth = r.paths.demo / "truth.csv"
    else:
        if synthetic is None or observed is None:
            raise ValueError("without --demo give both --synthetic SYN.h5 and --observed OBS.h5")
        for src, dst in ((synthetic, r.paths.synthetic), (observed, r.paths.observed)):
            if Path(src).resolve() != dst.resolve():
                dst.unlink(missing_ok=True)
                dst.symlink_to(Path(src).resolve())
    r.autoencoders()
    r.finetune()
    r.encode()
    r.cnns()
    return r.summary(truth)


def book_run(seed: int = 42) -> RunPaths:
    """The demo run the chapters read: ``$CARMENES_DTL_RUN`` (set by `make book`) or a
    folder in the cache; finished stages are reused, missing ones are run (quick profile)."""
    from .config import cache_dir

    out = Path(os.environ.get("CARMENES_DTL_RUN") or cache_dir() / "demo-run")
    paths = RunPaths(out)
    if not paths.run.exists():  # Binder, Colab, a plain Jupyter: run once, with progress bars
        print(f"No demo run in {out}: running it once (quick profile, about 8 min on 2 CPUs); "
              "the other chapters reuse it.")
        run(out, profile_name="quick", seed=seed, progress=True)
    return paths


def gap_variant(paths: RunPaths, gap: str, n_stars: int = 30, seed: int = 42) -> Path:
    """Observed set of another demo survey (same model, gap level `gap`), for comparisons."""
    from .demo import write_demo

    out = paths.out / f"gap_{gap}"
    h5 = out / "observed.h5"
    if not h5.exists():
        write_demo(out / "demo", seed, n_stars, gap, progress=False, phoenix=False)
        prepare.prepare_observed(out / "demo" / "carmenes", h5, template=prepare.template_from_set(paths.synthetic),
                                 progress=False)
    return h5
