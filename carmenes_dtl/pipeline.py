"""The whole method as resumable stages: demo -> prepare -> autoencoders -> transfer -> CNN -> estimates.

A stage is skipped only when ``stages.json`` records, from the run that finished it, both
its key and the identity of each output, and both still match: the key hashes the stage's
settings, the seed, the package version and the identity of its inputs; an identity is a
file's content hash or, for a folder, its listing with sizes and modification times. So
outputs replaced since (another set linked in, a file edited by hand) make the stage run
again. Outputs are written under temporary names and renamed when the stage completes, so
a stage killed midway leaves nothing that looks finished.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from . import __version__, autoencoder, bundle, cnn, grid, prepare, store, transfer
from .config import PUBLISHED_NAMES, Profile, Window, profile, stage_seed
from .store import partial
from .transfer import DESCRIPTIONS


@dataclass
class RunPaths:
    """Where a run keeps its files; while a stage runs, its outputs map to temporary names."""

    out: Path
    staged: dict = field(default_factory=dict, repr=False)  # final path -> temporary path

    def __post_init__(self):
        self.out = Path(self.out)

    def _at(self, name: str) -> Path:
        path = self.out / name
        return self.staged.get(path, path)

    demo = property(lambda self: self._at("demo"))
    synthetic = property(lambda self: self._at("synthetic.h5"))
    observed = property(lambda self: self._at("observed.h5"))
    models = property(lambda self: self.out / "models")
    search = property(lambda self: self._at("models/search.json"))
    latents = property(lambda self: self._at("latents.npz"))
    cnn = property(lambda self: self._at("cnn.json"))
    cnn_synthetic = property(lambda self: self._at("cnn_synthetic"))
    holdout = property(lambda self: self._at("holdout.csv"))
    bundle = property(lambda self: self._at("model"))
    run = property(lambda self: self.out / "run.json")
    stages = property(lambda self: self.out / "stages.json")

    def estimates(self, variant: str = "method") -> Path:
        """``estimates.csv`` for the method, ``estimates_<variant>.csv`` for the others."""
        return self._at(f"estimates{_suffix(variant)}.csv")

    def flags(self, variant: str = "method") -> Path:
        """Out-of-grid flags beside the estimates of `variant`."""
        return self._at(f"flags{_suffix(variant)}.csv")

    def ae(self, i: int, finetuned: bool = False) -> Path:
        return self._at(f"models/ae_{i}{'_ft' if finetuned else ''}.keras")


def _partials(final: Path) -> dict[Path, Path]:
    """Temporary files of `final` and of its sidecars (``x.partial.json`` -> ``x.json``)."""
    prefix = f"{final.stem}.partial"
    return {f: f.with_name(final.stem + f.name[len(prefix):])
            for f in final.parent.glob(f"{glob.escape(prefix)}*")} if final.parent.is_dir() else {}


def write_text(path: Path, text: str) -> None:
    """Write `text` to a temporary name, then rename: readers never see half a file."""
    tmp = partial(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _suffix(variant: str) -> str:
    if variant not in DESCRIPTIONS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(DESCRIPTIONS)}")
    return "" if variant == "method" else f"_{variant}"


class Runner:
    """Runs the stages in order, skipping the finished ones."""

    def __init__(self, out: Path, prof: Profile | None, seed: int = 42, progress: bool = True,
                 scheduler: str | None = None, data_parallel: bool = False):
        """`prof`: the run's settings (None will do for `gap_variant`, which uses none);
        `data_parallel`: autoencoder training and fine-tuning data-parallel over every
        device of the JAX backend (`autoencoder.data_parallel`)."""
        if data_parallel:
            autoencoder.data_parallel(prof.ae.batch_size)  # no JAX backend or an uneven split: say so before any stage
        self.paths, self.prof, self.seed, self.progress = RunPaths(out), prof, seed, progress
        self.scheduler = scheduler  # where prepare's tasks run; does not change any output
        self.data_parallel = data_parallel
        self.paths.out.mkdir(parents=True, exist_ok=True)
        self.done = json.loads(self.paths.stages.read_text()) if self.paths.stages.exists() else {}
        self.timings: dict[str, float] = {}
        self._digests: dict = {}

    def identity(self, path: Path) -> str:
        """Content hash of a file; for a folder, a hash of its listing (names, sizes, mtimes)."""
        path = Path(path)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file())
            listing = [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
            return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
        if not path.is_file():
            return "missing"
        st = path.stat()
        memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if memo not in self._digests:
            with open(path, "rb") as f:
                self._digests[memo] = hashlib.file_digest(f, "sha256").hexdigest()
        return self._digests[memo]

    def key(self, name: str, inputs=(), extra=None) -> str:
        """A stage's key: its name, settings (`extra`), seed, package version and inputs' identities."""
        parts = [name, __version__, self.seed, extra, [self.identity(p) for p in inputs]]
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()

    def record(self, key: str, outputs: list[Path]) -> dict:
        """What ``stages.json`` keeps of a finished stage: its key and its outputs' identities."""
        return {"key": key, "outputs": {os.path.relpath(p, self.paths.out): self.identity(p) for p in outputs}}

    def stage(self, name: str, outputs: list[Path], func, extra=None, inputs=()) -> bool:
        """Run `func` unless `outputs` are, unchanged, those of a run with this key; returns True when it ran.

        `inputs`: every file or folder `func` reads (their identities enter the key);
        `extra`: the settings that matter. `func` writes `outputs` through `self.paths`,
        which maps them to temporary names until it has returned.
        """
        key = self.key(name, inputs, extra)
        if self.done.get(name) == self.record(key, outputs):
            print(f"[carmenes-dtl] {name}: up to date")
            return False
        self.done.pop(name, None)
        write_text(self.paths.stages, json.dumps(self.done, indent=1))
        t = time.perf_counter()
        print(f"[carmenes-dtl] {name} ...", flush=True)
        self.paths.staged = {Path(p): partial(Path(p)) for p in outputs}
        try:
            for final in self.paths.staged:
                for tmp in _partials(final):
                    _remove(tmp)
            func()
            missing = [str(final) for final, tmp in self.paths.staged.items() if not tmp.exists()]
            if missing:
                raise RuntimeError(f"stage {name} did not write {', '.join(missing)}")
            for final in self.paths.staged:
                for tmp, done in _partials(final).items():
                    _remove(done)
                    os.replace(tmp, done)
        finally:
            self.paths.staged = {}
        self.timings[name] = round(time.perf_counter() - t, 2)
        print(f"[carmenes-dtl] {name} done in {self.timings[name]:.1f} s", flush=True)
        self.done[name] = self.record(key, outputs)
        write_text(self.paths.stages, json.dumps(self.done, indent=1))
        return True

    def _parallel_key(self) -> list:
        """What a data-parallel run adds to the autoencoder stages' keys (the device count:
        each fit drops up to devices - 1 rows); nothing on one device, so those keys stay."""
        return [{"data_parallel": len(keras.distribution.list_devices())}] if self.data_parallel else []

    # -- stages ---------------------------------------------------------------------------

    def demo(self, gap: str = "paper", stars: str = "published", phoenix: bool = True) -> None:
        """The demo survey in ``demo/`` (`gap`: a level or ``degenerate=X,shared=Y``; `stars`:
        published or uniform); without `phoenix` its mock PHOENIX tree is left out (a run that
        takes its synthetic set from another run of the same seed, see `run`'s `shared`)."""
        from .demo import parse_gap, write_demo

        name = parse_gap(gap).name
        if self.prof.window != Window():
            print(f"[carmenes-dtl] warning: the demo's line list is built for the default window "
                  f"{Window().start:g}-{Window().stop:g} Å; window {self.prof.window.start:g}-"
                  f"{self.prof.window.stop:g} Å sees fewer or no lines", file=sys.stderr)
        self.stage("demo", [self.paths.demo],
                   lambda: write_demo(self.paths.demo, self.seed, self.prof.n_stars, name, self.prof.demo_size,
                                      progress=self.progress, phoenix=phoenix, stars=stars),
                   extra=[name, stars, self.prof.demo_size, self.prof.n_stars] + ([] if phoenix else ["no phoenix"]))

    def prepare(self, phoenix_dir: Path, carmenes_dir: Path) -> None:
        p = self.paths

        def synthetic():
            n_nodes = self.prof.n_nodes
            nodes = grid.paper_grid() if n_nodes is None else grid.select_nodes(grid.paper_nodes(), n_nodes, self.seed)
            prepare.prepare_synthetic(phoenix_dir, p.synthetic, self.prof.vsini, self.prof.window, nodes,
                                      progress=self.progress, scheduler=self.scheduler)

        def observed():
            template = prepare.template_from_set(p.synthetic)
            prepare.prepare_observed(carmenes_dir, p.observed, self.prof.window, template, progress=self.progress,
                                     scheduler=self.scheduler)

        self.stage("prepare-synthetic", [p.synthetic], synthetic, inputs=[phoenix_dir, grid.PAPER_GRID_FILE],
                   extra=[self.prof.vsini, asdict(self.prof.window), self.prof.n_nodes])
        self.stage("prepare-observed", [p.observed], observed, inputs=[carmenes_dir, p.synthetic],
                   extra=asdict(self.prof.window))

    def use_sets(self, synthetic: Path, observed: Path) -> None:
        """Link the user's sets as the run's; the stages that made the replaced files, seeing their
        outputs changed, run again when asked."""
        for src, dst in ((synthetic, self.paths.synthetic), (observed, self.paths.observed)):
            if Path(src).resolve() != dst.resolve():
                _remove(dst)
                dst.symlink_to(Path(src).resolve())

    def adopt(self, base: Path, names: list[str]) -> list[str]:
        """Take over the finished stages `names` of the run in `base`: hard-link their outputs into
        this run and copy their ``stages.json`` records; returns the names adopted.

        This proves nothing by itself: a stage still runs when called unless the key it computes
        here, from this run's seed, settings and inputs, equals the adopted record's, so
        adopting saves work exactly where `base` did what this run would do. A stage whose
        outputs in `base` no longer match its record is not adopted.
        """
        base = Path(base)
        done = json.loads((base / "stages.json").read_text()) if (base / "stages.json").exists() else {}
        adopted = []
        for name in names:
            rec = done.get(name)
            if rec is None or self.done.get(name) == rec or any(
                    self.identity(base / rel) != ident for rel, ident in rec["outputs"].items()):
                continue
            for rel in rec["outputs"]:
                dst = self.paths.out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if dst.exists() or dst.is_symlink():
                    _remove(dst)
                if (base / rel).is_dir():
                    shutil.copytree(base / rel, dst, copy_function=os.link)
                else:
                    os.link(base / rel, dst)
            self.done[name] = rec
            adopted.append(name)
        write_text(self.paths.stages, json.dumps(self.done, indent=1))
        return adopted

    def gap_variant(self, gap: str, n_stars: int = 30, stars: str = "published") -> Path:
        """Observed set of another demo survey (`n_stars`, gap `gap`, `stars`, the run's seed) prepared
        like the run's own: ``gap_{name}/observed.h5`` (name: the level or ``degenerate=X,shared=Y``),
        made by stages keyed on those and on the synthetic set (whose window and RV template it uses)."""
        from .demo import parse_gap, write_demo

        p, name = self.paths, parse_gap(gap).name
        demo, h5 = f"gap_{name}/demo", f"gap_{name}/observed.h5"
        window = Window(**store.describe(p.synthetic)["attrs"]["window"])
        self.stage(f"gap-{name}-demo", [p.out / demo],
                   lambda: write_demo(p._at(demo), self.seed, n_stars, name, progress=False, phoenix=False,
                                      stars=stars),
                   extra=[name, n_stars, stars])
        self.stage(f"gap-{name}-observed", [p.out / h5],
                   lambda: prepare.prepare_observed(p.out / demo / "carmenes", p._at(h5), window,
                                                    prepare.template_from_set(p.synthetic), progress=False),
                   extra=asdict(window), inputs=[p.out / demo, p.synthetic])
        return p.out / h5

    def autoencoders(self) -> None:
        p, s = self.paths, self.prof.ae

        def run():
            rows, models = autoencoder.search_and_train(store.read(p.synthetic).flux, s, self.seed, self.progress,
                                                        self.data_parallel)
            p.models.mkdir(parents=True, exist_ok=True)
            p.search.write_text(json.dumps(rows, indent=1))
            for i, (model, info) in enumerate(models):
                autoencoder.save(model, p.ae(i), {**info, "settings": asdict(s)})

        self.stage("autoencoders", [p.search] + [p.ae(i) for i in range(s.n_models)], run,
                   extra=[asdict(s), keras.backend.backend(), *self._parallel_key()], inputs=[p.synthetic])

    def finetune(self) -> None:
        p, s = self.paths, self.prof.ae

        def run():
            obs = store.read(p.observed).flux
            syn = store.read(p.synthetic).flux
            rng = np.random.default_rng(stage_seed(self.seed, "finetune"))
            sample = syn[rng.choice(len(syn), min(512, len(syn)), replace=False)]
            for i in range(s.n_models):
                model, report = transfer.finetune(p.ae(i), obs, sample, s, stage_seed(self.seed, "finetune", i),
                                                  self.progress, self.data_parallel)
                autoencoder.save(model, p.ae(i, True), report)

        self.stage("fine-tune", [p.ae(i, True) for i in range(s.n_models)], run,
                   extra=[asdict(s), keras.backend.backend(), *self._parallel_key()],
                   inputs=[p.synthetic, p.observed] + [p.ae(i) for i in range(s.n_models)])

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

        n = self.prof.ae.n_models
        self.stage("encode", [p.latents], run, extra=[n, keras.backend.backend()],
                   inputs=[p.synthetic, p.observed] + [p.ae(i, ft) for i in range(n) for ft in (False, True)])

    def cnn_synthetic(self) -> None:
        """The ensembles of `cnn.SYNTHETIC_SPACES` (original encoders' synthetic latents, spectra):
        they depend on the synthetic set and the original autoencoders only, so runs on other
        observed sets with the same inputs can adopt them (`adopt`)."""
        p, n = self.paths, self.prof.ae.n_models

        def run():
            syn = store.read(p.synthetic)
            latents = {f"syn_pre_{i}": autoencoder.encode(autoencoder.load(p.ae(i)), syn.flux) for i in range(n)}
            bundle.save_trained(p.cnn_synthetic, {space: cnn.train_space(syn, latents, space, n, self.prof.cnn,
                                                                         self.seed, self.progress)
                                                  for space in cnn.SYNTHETIC_SPACES})

        self.stage("cnn-synthetic", [p.cnn_synthetic], run,
                   extra=[asdict(self.prof.cnn), n, bundle.FORMAT, keras.backend.backend()],
                   inputs=[p.synthetic] + [p.ae(i) for i in range(n)])

    def cnns(self) -> None:
        p = self.paths

        def run():
            res = cnn.train_variants(store.read(p.synthetic), store.read(p.observed), np.load(p.latents),
                                     self.prof.ae.n_models, self.prof.cnn, self.seed, self.progress,
                                     trained=bundle.load_trained(p.cnn_synthetic))
            for variant, (est, flags) in res["estimates"].items():
                cnn.write_estimates(est, p.estimates(variant))
                flags.to_csv(p.flags(variant), index=False)
            res["holdout"].to_csv(p.holdout, index=False)
            p.cnn.write_text(json.dumps(res["histories"]))
            bundle.save(p.bundle, res["ensembles"], aes, {
                "window": asdict(self.prof.window), "profile": self.prof.to_dict(), "seed": self.seed,
                "variants": DESCRIPTIONS, "synthetic_sha256": self.identity(p.synthetic),
                "observed_sha256": self.identity(p.observed)})

        aes = [(p.ae(i), p.ae(i, True)) for i in range(self.prof.ae.n_models)]
        self.stage("cnn", [p.estimates(v) for v in DESCRIPTIONS] + [p.flags(v) for v in DESCRIPTIONS]
                   + [p.holdout, p.cnn, p.bundle], run,
                   extra=[asdict(self.prof.cnn), self.prof.ae.n_models, bundle.FORMAT,
                          keras.backend.backend(), cnn.DECIMALS],
                   inputs=[p.synthetic, p.observed, p.latents, p.cnn_synthetic, *(f for pair in aes for f in pair)])

    def summary(self, truth_csv: Path | None) -> dict:
        """run.json: settings, seeds, versions, timings and, with a truth table, the errors."""
        info = {
            "package_version": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "python": platform.python_version(), "profile": self.prof.to_dict(), "seed": self.seed,
            "n_nodes": self.prof.n_nodes, "variants": DESCRIPTIONS,
            "synthetic": str(self.paths.synthetic), "observed": str(self.paths.observed),
        }
        if self.data_parallel:
            info["data_parallel_devices"] = len(keras.distribution.list_devices())
        obs = store.read(self.paths.observed)
        info["observed_excluded"] = obs.attrs.get("excluded", [])
        if truth_csv is not None and Path(truth_csv).exists():
            truth = pd.read_csv(truth_csv)
            estimates = {v: pd.read_csv(self.paths.estimates(v)) for v in DESCRIPTIONS}
            info["errors_vs_truth"] = {v: errors(est, truth) for v, est in estimates.items()}
            if "coverage" in truth:  # demo stars inside / at the edge of the paper grid's coverage
                info["errors_by_coverage"] = {v: {c: errors(est, t) for c, t in truth.groupby("coverage")}
                                              for v, est in estimates.items()}
        holdout = pd.read_csv(self.paths.holdout)
        info["holdout_coverage"] = {u: {v: coverage(g) for v, g in h.groupby("variant", sort=False)}
                                    for u, h in holdout.groupby("uncertainty")}
        previous = json.loads(self.paths.run.read_text()) if self.paths.run.exists() else {}
        info["timings_s"] = {**previous.get("timings_s", {}), **self.timings}
        write_text(self.paths.run, json.dumps(info, indent=1, default=str))
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


def check_sets(synthetic: Path, observed: Path, window: Window | None = None) -> None:
    """A one-line ValueError naming the file when two sets cannot be used together (or with `window`)."""
    syn, obs = store.require(synthetic, "synthetic"), store.require(observed, "observed")
    if syn["n"] == 0 or obs["n"] == 0:
        raise ValueError(f"{synthetic if syn['n'] == 0 else observed}: the set holds no spectrum")
    wave = syn["wavelength"]
    if not np.array_equal(wave, obs["wavelength"]):
        raise ValueError(f"{observed}: wavelength grid {obs['wavelength'][0]:.2f}-{obs['wavelength'][-1]:.2f} Å "
                         f"differs from {synthetic}'s {wave[0]:.2f}-{wave[-1]:.2f} Å")
    if window is not None and not (wave.size == window.n and np.allclose(wave, window.wavelength)):
        raise ValueError(f"--window {window.start:g},{window.stop:g} does not match {synthetic}'s grid "
                         f"{wave[0]:.2f}-{wave[-1]:.2f} Å")


#: Stages of a demo run that do not depend on its gap: a run of the same seed and profile can adopt them.
SHARED_STAGES = ["prepare-synthetic", "autoencoders", "cnn-synthetic"]


def run(out: Path, demo: bool = True, synthetic: Path | None = None, observed: Path | None = None,
        profile_name: str = "quick", seed: int = 42, gap: str = "paper", progress: bool = True,
        prof: Profile | None = None, window: Window | None = None, scheduler: str | None = None,
        shared: Path | None = None, stars: str = "published", data_parallel: bool = False) -> dict:
    """The whole method; returns the run summary (also written to ``OUT/run.json``).

    `gap` and `stars` make the demo survey (`demo.write_demo`); `window` replaces the profile's;
    `scheduler` is where the preparation's tasks run. `shared`: a finished demo run of the same
    seed and profile (any gap) whose gap-independent stages (`SHARED_STAGES`) this one adopts
    (`Runner.adopt`), with its mock PHOENIX tree. `data_parallel`: the autoencoders train and
    fine-tune data-parallel over every device of the JAX backend (`autoencoder.data_parallel`).
    """
    prof = prof or profile(profile_name)
    if not demo:
        if synthetic is None or observed is None:
            raise ValueError("without --demo give both --synthetic SYN.h5 and --observed OBS.h5")
        check_sets(synthetic, observed, window)
        window = Window(**store.describe(synthetic)["attrs"].get("window", asdict(window or prof.window)))
    if window is not None:
        prof = dataclasses.replace(prof, window=window)
    if keras.backend.backend() == "tensorflow":
        import logging

        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices of the many small models
    r = Runner(out, prof, seed, progress, scheduler, data_parallel)
    truth = None
    if shared is not None and not demo:
        raise ValueError("shared stages are those of a demo run: drop shared, or use the demo")
    if demo:
        r.demo(gap, stars, phoenix=shared is None)
        if shared is not None:
            r.adopt(shared, SHARED_STAGES)
        r.prepare(Path(shared or r.paths.out) / "demo" / "phoenix", r.paths.demo / "carmenes")
        truth = r.paths.demo / "truth.csv"
    else:
        r.use_sets(synthetic, observed)
    r.autoencoders()
    r.cnn_synthetic()
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


def gap_variant(paths: RunPaths, gap: str, n_stars: int = 30, seed: int = 42, stars: str = "published") -> Path:
    """Observed set of another demo survey (same model, gap `gap`), for comparisons (`Runner.gap_variant`:
    remade when the run's synthetic set, `n_stars`, `seed` or `stars` change)."""
    return Runner(paths.out, None, seed, progress=False).gap_variant(gap, n_stars, stars)
