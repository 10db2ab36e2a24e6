"""The CNN stage of the quick profile: `training.fit` against today's Keras `fit` loop, one process.

Baseline (`keras_fit`): what `cnn.train_ensemble` ran before issue 16, `model.fit` with
`keras.callbacks.EarlyStopping(restore_best_weights=True)` on the held-out rows. Both
train the same ensembles (`cnn.train_variants`: 2 autoencoders x latents before/after
fine-tuning, plus the `direct` CNN on the spectra; 20 members each) on the same data,
with the same epochs, patience and members. Runs alternate baseline / new so that a
change in the machine's load hits both. The baseline also runs with other CNN seeds: the
spread between its two runs is the ensemble's run-to-run scatter, the yardstick for the
difference between the baseline and the new loop.

First, a profile of one latent and the direct ensemble: compilation, seconds per epoch
with and without the validation pass, per-batch overhead.

    KERAS_BACKEND=jax python benchmarks/cnn_stage.py [RUN_DIR]

RUN_DIR: a quick-profile demo run (default: the book's, ``$CARMENES_DTL_RUN`` or
``data/cache/demo-run``); its stages up to ``encode`` are run when missing.
"""
import os
import sys
import time
from pathlib import Path
from unittest import mock

from carmenes_dtl import cnn, pipeline, store, training  # first: it picks the default backend
from carmenes_dtl.autoencoder import callbacks, history
from carmenes_dtl.config import cache_dir, profile

import keras
import numpy as np
import pandas as pd


def keras_fit(model, x, y, validation, epochs, batch_size, patience, seed, shuffle=True, start=None,
              progress=False, desc="epochs"):
    """Today's loop (before issue 16): Keras `fit`, batches from Keras' shuffled global stream."""
    return history(model.fit(x, y, validation_data=validation, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                             verbose=0, callbacks=callbacks(patience, progress, desc)))


def prepared_run(out: Path) -> pipeline.RunPaths:
    """A quick demo run up to the latents (finished stages are reused)."""
    r = pipeline.Runner(out, profile("quick"), seed=42, progress=False)
    r.demo()
    r.prepare(r.paths.demo / "phoenix", r.paths.demo / "carmenes")
    r.autoencoders()
    r.finetune()
    r.encode()
    return r.paths


def stage(paths: pipeline.RunPaths, fit, seed_offset: int = 0) -> tuple[float, dict]:
    """Seconds and estimates of the CNN stage (`cnn.train_variants`) with `fit` as the training loop."""
    original = cnn.train_ensemble

    def reseeded(x, y, s, seed, **kw):
        return original(x, y, s, seed + seed_offset, **kw)

    prof = profile("quick")
    t = time.perf_counter()
    with mock.patch.object(training, "fit", fit), mock.patch.object(cnn, "train_ensemble", reseeded):
        res = cnn.train_variants(store.read(paths.synthetic), store.read(paths.observed), np.load(paths.latents),
                                 prof.ae.n_models, prof.cnn, 42)
    return time.perf_counter() - t, {v: est for v, (est, _) in res["estimates"].items()}


class Probe:
    """Stands in for `training.fit` on one ensemble and times its parts, then trains it one epoch."""

    def __init__(self, epochs: int = 4):
        self.epochs, self.rows = epochs, {}

    def __call__(self, model, x, y, validation, epochs, batch_size, patience, seed, shuffle=True, start=None,
                 progress=False, desc="epochs"):
        kind = "direct (spectra)" if start else "latent"
        if kind in self.rows:
            return keras_fit(model, x, y, validation, 1, batch_size, None, seed)
        weights = model.get_weights()
        row = self.rows[kind] = {"rows": len(x), "batches/epoch": -(-len(x) // batch_size),
                                 "members": model.output.shape[-1]}

        def timed(f):
            model.set_weights(weights)
            t = time.perf_counter()
            f()
            return time.perf_counter() - t

        def keras_epochs(n, val):
            return lambda: model.fit(x, y, validation_data=validation if val else None, epochs=n,
                                     batch_size=batch_size, verbose=0)

        def fast_epochs(n, val):
            return lambda: training.fit(model, x, y, validation if val else None, n, batch_size, None, 0, start=start)

        row["keras: first epoch (traces, compiles), s"] = timed(keras_epochs(1, True))
        row["keras: s/epoch"] = timed(keras_epochs(self.epochs, True)) / self.epochs
        row["keras: s/epoch without validation"] = timed(keras_epochs(self.epochs, False)) / self.epochs
        row["training.fit: compile + 1 epoch, s"] = timed(fast_epochs(1, True))
        row["training.fit: compile + all epochs, s"] = timed(fast_epochs(epochs, True))
        for val, name in ((True, ""), (False, " without validation")):  # (T(epochs) - T(1)) / (epochs - 1)
            timed(fast_epochs(epochs, val))  # compiles
            row[f"training.fit: s/epoch{name}"] = (timed(fast_epochs(epochs, val))
                                                   - timed(fast_epochs(1, val))) / (epochs - 1)
        model.set_weights(weights)
        return keras_fit(model, x, y, validation, 1, batch_size, None, seed)


def scatter(a: dict, b: dict) -> pd.Series:
    """Per parameter: median over stars and variants of |a - b| for the estimates."""
    names = [c for c in a["method"].columns if c != "karmn" and not c.startswith(("e_", "E_"))]
    return pd.Series({n: float(np.median(np.concatenate([np.abs(a[v][n] - b[v][n]) for v in a]))) for n in names})


def main(run_dir=None):
    out = Path(run_dir or os.environ.get("CARMENES_DTL_RUN") or cache_dir() / "demo-run")
    paths = prepared_run(out)
    print(f"backend {keras.backend.backend()}, run {out}")
    probe = Probe()
    stage(paths, probe)
    print(f"\nprofile (one ensemble of each kind; keras: {probe.epochs} epochs timed, training.fit: the stage's epochs):")
    print(pd.DataFrame(probe.rows).round(3).to_string())
    runs = [("keras", keras_fit, 0), ("training.fit", training.fit, 0), ("keras", keras_fit, 1),
            ("training.fit", training.fit, 1)]
    times, est = {}, {}
    for name, fit, offset in runs:
        training._COMPILED.clear()  # each run pays its own compilation
        seconds, est[name, offset] = stage(paths, fit, offset)
        times.setdefault(name, []).append(seconds)
        print(f"CNN stage, {name}, CNN seeds +{offset}: {seconds:.1f} s", flush=True)
    base, new = np.mean(times["keras"]), np.mean(times["training.fit"])
    print(f"\nCNN stage (4 latent ensembles + direct, 20 members each): keras {base:.1f} s, "
          f"training.fit {new:.1f} s: {base / new:.1f}x faster")
    table = pd.DataFrame({"keras seed vs seed+1 (scatter)": scatter(est["keras", 0], est["keras", 1]),
                          "training.fit vs keras, same seeds": scatter(est["training.fit", 0], est["keras", 0]),
                          "training.fit vs keras, seeds +1": scatter(est["training.fit", 1], est["keras", 1])})
    print("median |difference| of the estimates (all variants, all stars):")
    print(table.to_string(float_format="{:.4g}".format))


if __name__ == "__main__":
    main(*sys.argv[1:])
