"""The whole method as resumable stages: demo -> prepare -> autoencoders -> transfer -> CNN -> estimates.

`Runner` orchestrates the method; `stages.Stages` decides what is up to date and writes
atomically; `rundir.RunFolder` names every file; `validation.evaluate` scores the estimates.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import keras

from . import (__version__, autoencoder, bundle, cnn, environment, grid, prepare, store, training, transfer, variants,
               validation)
from .config import Profile, Window, key_of, overrides_of, profile, stage_seed
from .demo import write_demo
from .demo_gap import GapMix
from .rundir import LATENT_SPACES, GapFolder, Latents, RunFolder
from .stages import Stages, remove, write_text


@dataclass(frozen=True)
class DemoInput:
    """A demo survey made by the run: its gap, its stars (`demo.draw_stars`) and the runs of the same seed
    whose stages it adopts (`stages.Stages.adopt`; a stage whose key differs still runs): `shared`, a
    demo run of the same profile (its `SHARED_STAGES`), then each (folder, stage names) of `lenders`."""

    gap: GapMix = GapMix.parse("paper")
    stars: str = "published"
    shared: Path | None = None
    lenders: tuple[tuple[Path, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class SetsInput:
    """The user's prepared sets (`prepare-synthetic`, `prepare-observed`)."""

    synthetic: Path
    observed: Path


#: Stages of a demo run that do not depend on its gap: a run of the same seed and profile can adopt them.
SHARED_STAGES = ["prepare-synthetic", "autoencoders", "cnn-synthetic"]


class Runner:
    """Runs the stages of the method in order, skipping the finished ones."""

    def __init__(self, out: Path, prof: Profile | None, seed: int = 42, progress: bool = True,
                 scheduler: str | None = None, data_parallel: bool = False):
        """`prof`: the run's settings (None will do for `gap_variant`, which uses none); `scheduler`: where
        prepare's tasks and the search's fits run;
        `data_parallel`: training and fine-tuning data-parallel over the JAX devices (`training.data_parallel`)."""
        if data_parallel:
            training.data_parallel(prof.ae.batch_size)  # no JAX backend or an uneven split: say so before any stage
        self.folder, self.prof, self.seed, self.progress = RunFolder(out), prof, seed, progress
        self.scheduler, self.data_parallel = scheduler, data_parallel
        self.folder.out.mkdir(parents=True, exist_ok=True)
        self.stages = Stages(self.folder.stages_file, seed)

    def _parallel_key(self) -> list:
        """What a data-parallel run adds to the autoencoder stages' keys (the device count:
        each fit drops up to devices - 1 rows); nothing on one device, so those keys stay."""
        return [{"data_parallel": len(keras.distribution.list_devices())}] if self.data_parallel else []

    def demo(self, mix: GapMix = DemoInput.gap, stars: str = "published", phoenix: bool = True) -> None:
        """The demo survey; without `phoenix` its mock PHOENIX tree is left out (a run that takes its
        synthetic set from another run of the same seed, `DemoInput.shared`)."""
        f, prof = self.folder, self.prof
        if prof.window != Window():
            print(f"[carmenes-dtl] warning: the demo's line list is built for the default window "
                  f"{Window().start:g}-{Window().stop:g} Å; window {prof.window.start:g}-"
                  f"{prof.window.stop:g} Å sees fewer or no lines", file=sys.stderr)
        self.stages.run("demo", [f.demo_dir],
                        lambda staged: write_demo(staged(f.demo_dir), self.seed, prof.n_stars, mix,
                                                  prof.demo_size, progress=self.progress, phoenix=phoenix,
                                                  stars=stars),
                        extra=[mix.name, stars, prof.demo_size, prof.n_stars] + ([] if phoenix else ["no phoenix"]))

    def prepare(self, phoenix_dir: Path, carmenes_dir: Path) -> None:
        f, prof = self.folder, self.prof

        def synthetic(staged):
            nodes = grid.paper_grid() if prof.n_nodes is None else grid.select_nodes(grid.paper_nodes(), prof.n_nodes,
                                                                                     self.seed)
            prepare.prepare_synthetic(phoenix_dir, staged(f.synthetic), prof.vsini, prof.window, nodes,
                                      progress=self.progress, scheduler=self.scheduler)

        def observed(staged):
            prepare.prepare_observed(carmenes_dir, staged(f.observed), prof.window,
                                     prepare.template_from_set(f.synthetic), progress=self.progress,
                                     scheduler=self.scheduler)

        self.stages.run("prepare-synthetic", [f.synthetic], synthetic, inputs=[phoenix_dir, grid.PAPER_GRID_FILE],
                        extra=[prof.vsini, asdict(prof.window), prof.n_nodes])
        self.stages.run("prepare-observed", [f.observed], observed, inputs=[carmenes_dir, f.synthetic],
                        extra=asdict(prof.window))

    def use_sets(self, sets: SetsInput) -> None:
        """Link the user's sets as the run's; the stages that made the replaced files, seeing their
        outputs changed, run again when asked."""
        for src, dst in ((sets.synthetic, self.folder.synthetic), (sets.observed, self.folder.observed)):
            if Path(src).resolve() != dst.resolve():
                remove(dst)
                dst.symlink_to(Path(src).resolve())

    def gap_variant(self, mix: GapMix, n_stars: int = 30, stars: str = "published") -> GapFolder:
        """Another demo survey (`n_stars`, `mix`, `stars`, the run's seed) prepared like the run's own, by
        stages keyed on those and on the synthetic set (whose window and RV template it uses)."""
        f, name = self.folder, mix.name
        g = f.gap(name)
        window = Window(**store.describe(f.synthetic)["attrs"]["window"])
        self.stages.run(f"gap-{name}-demo", [g.demo_dir],
                        lambda staged: write_demo(staged(g.demo_dir), self.seed, n_stars, mix, progress=False,
                                                  phoenix=False, stars=stars),
                        extra=[name, n_stars, stars])
        self.stages.run(f"gap-{name}-observed", [g.observed],
                        lambda staged: prepare.prepare_observed(g.carmenes_dir, staged(g.observed),
                                                                window, prepare.template_from_set(f.synthetic),
                                                                progress=False),
                        extra=asdict(window), inputs=[g.demo_dir, f.synthetic])
        return g

    def autoencoders(self) -> None:
        f, s = self.folder, self.prof.ae

        def run(staged):
            rows, models = autoencoder.search_and_train(store.read(f.synthetic).flux, s, self.seed, self.progress,
                                                        self.data_parallel, self.scheduler)
            staged(f.search_file).write_text(json.dumps(rows, indent=1))
            for i, (model, info) in enumerate(models):
                autoencoder.save(model, staged(f.ae_file(i)), {**info, "settings": asdict(s)})

        f.models_dir.mkdir(parents=True, exist_ok=True)
        self.stages.run("autoencoders", [f.search_file] + [f.ae_file(i) for i in range(s.n_models)], run,
                        extra=[key_of(s), keras.backend.backend(), *self._parallel_key()], inputs=[f.synthetic])

    def finetune(self) -> None:
        """Its key holds the fine-tuning settings only: other ones reuse the trained autoencoders."""
        f, s, n = self.folder, self.prof.finetune, self.prof.ae.n_models

        def run(staged):
            obs, syn = store.read(f.observed).flux, store.read(f.synthetic).flux
            sample = transfer.synthetic_sample(syn, self.seed)
            for i in range(n):
                model, report = transfer.finetune(f.ae_file(i), obs, sample, s, stage_seed(self.seed, "fine-tune", i),
                                                  self.progress, self.data_parallel)
                autoencoder.save(model, staged(f.ae_file(i, "ft")), {**report, "settings": asdict(s)})

        self.stages.run("fine-tune", [f.ae_file(i, "ft") for i in range(n)], run,
                        extra=[asdict(s), keras.backend.backend(), *self._parallel_key()],
                        inputs=[f.synthetic, f.observed] + [f.ae_file(i) for i in range(n)])

    def _autoencoder_files(self) -> list[Path]:
        return [self.folder.ae_file(i, e) for i in range(self.prof.ae.n_models) for e in ("pre", "ft")]

    def encode(self) -> None:
        f, n = self.folder, self.prof.ae.n_models

        def run(staged):
            syn, obs = store.read(f.synthetic).flux, store.read(f.observed).flux
            arrays = {}
            for i in range(n):
                for encoder in ("pre", "ft"):
                    model = autoencoder.load(f.ae_file(i, encoder))
                    arrays["syn", encoder, i] = autoencoder.encode(model, syn)
                    arrays["obs", encoder, i] = autoencoder.encode(model, obs)
                back = transfer.back_map(arrays["syn", "pre", i], arrays["syn", "ft", i])
                for domain in ("syn", "obs"):
                    arrays[domain, "aligned", i] = transfer.apply_affine(back, arrays[domain, "ft", i])
            Latents(arrays).write(staged(f.latents_file))

        self.stages.run("encode", [f.latents_file], run, extra=[n, keras.backend.backend(), LATENT_SPACES],
                        inputs=[f.synthetic, f.observed] + self._autoencoder_files())

    def cnn_synthetic(self) -> None:
        """The ensembles of `variants.SYNTHETIC_SPACES`: they depend on the synthetic set and the original
        autoencoders only (and the observed S/N with ``direct_noise="observed"``), so runs on other
        observed sets with the same inputs can adopt them."""
        f, n, noisy = self.folder, self.prof.ae.n_models, self.prof.cnn.direct_noise == "observed"

        def run(staged):
            syn, snr = store.read(f.synthetic), store.describe(f.observed)["attrs"].get("snr") if noisy else None
            latents = Latents({("syn", "pre", i): autoencoder.encode(autoencoder.load(f.ae_file(i)), syn.flux)
                               for i in range(n)})
            bundle.save_trained(staged(f.cnn_synthetic_dir), {
                space: cnn.train_space(syn, latents, space, n, self.prof.cnn, self.seed, self.progress, snr)
                for space in variants.SYNTHETIC_SPACES})

        self.stages.run("cnn-synthetic", [f.cnn_synthetic_dir], run,
                        extra=[key_of(self.prof.cnn), n, bundle.FORMAT, keras.backend.backend()],
                        inputs=[f.synthetic] + [f.ae_file(i) for i in range(n)] + [f.observed] * noisy)

    def cnns(self) -> None:
        f, names = self.folder, list(variants.VARIANTS)

        def run(staged):
            lat = f.latents()
            res = cnn.train_variants(store.read(f.synthetic), store.read(f.observed), lat,
                                     self.prof.ae.n_models, self.prof.cnn, self.seed, self.progress,
                                     trained=bundle.load_trained(f.cnn_synthetic_dir))
            for variant, (est, flags) in res["estimates"].items():
                cnn.write_estimates(est, staged(f.estimates_file(variant)))
                flags.to_csv(staged(f.flags_file(variant)), index=False)
            res["holdout"].to_csv(staged(f.holdout_file), index=False)
            res["autoencoders"].to_csv(staged(f.autoencoders_file), index=False)
            staged(f.histories_file).write_text(json.dumps(res["histories"]))
            aes = [(f.ae_file(i), f.ae_file(i, "ft")) for i in range(self.prof.ae.n_models)]
            back = [transfer.back_map(lat.get("syn", "pre", i), lat.get("syn", "ft", i)) for i in range(len(aes))]
            bundle.save(staged(f.bundle_dir), res["ensembles"], aes, back, {
                "window": asdict(self.prof.window), "profile": self.prof.to_dict(), "seed": self.seed,
                "variants": variants.descriptions(), "synthetic_sha256": self.stages.identity(f.synthetic),
                "observed_sha256": self.stages.identity(f.observed)})

        self.stages.run("cnn", [f.estimates_file(v) for v in names] + [f.flags_file(v) for v in names]
                        + [f.holdout_file, f.autoencoders_file, f.histories_file, f.bundle_dir], run,
                        extra=[key_of(self.prof.cnn), self.prof.ae.n_models, bundle.FORMAT, keras.backend.backend(),
                               cnn.DECIMALS, "held-out nodes through the prediction space"],
                        inputs=[f.synthetic, f.observed, f.latents_file, f.cnn_synthetic_dir,
                                *self._autoencoder_files()])

    def summary(self, truth_csv: Path | None) -> dict:
        """run.json: settings, seeds, versions, timings and the evaluation (`validation.evaluate`)."""
        f = self.folder
        info = {
            "package_version": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "python": platform.python_version(), **environment.versions(), "profile": self.prof.to_dict(),
            "overrides": overrides_of(self.prof), "seed": self.seed, "n_nodes": self.prof.n_nodes,
            "variants": variants.descriptions(), "synthetic": str(f.synthetic), "observed": str(f.observed),
        }
        if self.data_parallel:
            info["data_parallel_devices"] = len(keras.distribution.list_devices())
        info["observed_excluded"] = store.describe(f.observed)["attrs"].get("excluded", [])
        info.update(validation.evaluate(f, truth_csv))
        info["warnings"] = validation.warnings(info)
        previous = f.summary() if f.exists() else {}
        info.update(self.stages.measurements(previous))
        write_text(f.summary_file, json.dumps(info, indent=1, default=str))
        for line in info["warnings"]:
            print(f"[carmenes-dtl] warning: {line}", file=sys.stderr)
        return info


def run(out: Path, inputs: DemoInput | SetsInput = DemoInput(), prof: Profile | str = "quick", seed: int = 42,
        progress: bool = True, scheduler: str | None = None, data_parallel: bool = False,
        window: Window | None = None) -> dict:
    """The whole method; returns the run summary (also written to ``OUT/run.json``).

    `inputs`: a demo survey the run makes, or the user's prepared sets (whose window the run
    takes); `prof`: the settings or a profile's name; `window` replaces the profile's (checked
    against the sets' grid); `scheduler`: where preparation and grid-search tasks run; `data_parallel`:
    the autoencoders train and fine-tune data-parallel over every device of the JAX backend."""
    prof = profile(prof) if isinstance(prof, str) else prof
    if isinstance(inputs, SetsInput):
        store.check_pair(inputs.synthetic, inputs.observed, window)
        window = Window(**store.describe(inputs.synthetic)["attrs"].get("window", asdict(window or prof.window)))
    if window is not None:
        prof = replace(prof, window=window)
    training.deterministic()
    r = Runner(out, prof, seed, progress, scheduler, data_parallel)
    truth = None
    if isinstance(inputs, DemoInput):
        for lender, names in ([(inputs.shared, SHARED_STAGES)] if inputs.shared else []) + list(inputs.lenders):
            r.stages.adopt(lender, list(names))
        r.demo(inputs.gap, inputs.stars, phoenix=inputs.shared is None)
        r.prepare(RunFolder(inputs.shared or out).phoenix_dir, r.folder.carmenes_dir)
        truth = r.folder.truth_file
    else:
        r.use_sets(inputs)
    r.autoencoders()
    r.cnn_synthetic()
    r.finetune()
    r.encode()
    r.cnns()
    return r.summary(truth)


def book_run(seed: int = 42) -> RunFolder:
    """The demo run the chapters read: ``$CARMENES_DTL_RUN`` (set by `make book`) or a
    folder in the cache; finished stages are reused, missing ones are run (quick profile)."""
    from .config import cache_dir

    folder = RunFolder(os.environ.get("CARMENES_DTL_RUN") or cache_dir() / "demo-run")
    if not folder.exists():  # Binder, Colab, a plain Jupyter: run once, with progress bars
        print(f"No demo run in {folder.out}: running it once (quick profile, about 2 min on 2 CPUs); "
              "the other chapters reuse it.")
        run(folder.out, DemoInput(), "quick", seed=seed, progress=True)
    return folder


def gap_variant(folder: RunFolder, gap: GapMix, n_stars: int = 30, seed: int | None = None,
                stars: str = "published") -> GapFolder:
    """Another demo survey through the same model (gap `gap`; `seed`: the run's when None), for comparisons
    (`Runner.gap_variant`: remade when the run's synthetic set, `n_stars`, `seed` or `stars` change)."""
    seed = folder.summary()["seed"] if seed is None else seed
    return Runner(folder.out, None, seed, progress=False).gap_variant(gap, n_stars, stars)
