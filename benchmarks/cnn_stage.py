"""The CNN stage of the quick profile against the implementation before issue 16, one process.

Baseline (`cnn_baseline.train_ensemble`): the stacked layers of commit 79912bf trained as before
issue 16, with Keras `model.fit` + `EarlyStopping(restore_best_weights=True)` and
`model.predict`; members share every batch (NaN-masked targets). New: `cnn.train_ensemble`
(each member on batches of its own rows in its own order, members-first layers, pooled
convolutions of the direct CNN recomputed at the maxima, `training.fit` as one XLA program).
JAX's persistent compilation cache is off here: every run compiles its own programs. Both train the same ensembles (`cnn.train_variants`: 2
autoencoders x latents before/after fine-tuning, plus the `direct` CNN on the spectra; 20
members each) on the same data, with the same epochs, patience and members. Runs alternate
baseline / new, with the CNN seeds +0 and +1: the baseline's seed-to-seed spread of the
estimates is the ensemble's run-to-run scatter, the yardstick for baseline against new.

First, the train step (forward + backward, 128 rows x 20 members) of both graphs, and a
profile of the new stage: time in the training loops, in the predictions, and the rest.

    KERAS_BACKEND=jax python benchmarks/cnn_stage.py [RUN_DIR]

RUN_DIR: a quick-profile demo run (default: the book's, ``$CARMENES_DTL_RUN`` or
``data/cache/demo-run``); its stages up to ``encode`` are run when missing.
"""
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # before JAX is imported

from carmenes_dtl import cnn, pipeline, store, training  # first: it picks the default backend
from carmenes_dtl.rundir import RunFolder
from carmenes_dtl.config import cache_dir, profile

import cnn_baseline
import keras
import numpy as np
import pandas as pd


def prepared_run(out: Path) -> RunFolder:
    """A quick demo run up to the latents (finished stages are reused)."""
    r = pipeline.Runner(out, profile("quick"), seed=42, progress=False)
    r.demo()
    r.prepare(r.folder.phoenix_dir, r.folder.carmenes_dir)
    r.autoencoders()
    r.finetune()
    r.encode()
    return r.folder


def stage(run: RunFolder, train_ensemble, seed_offset: int = 0) -> tuple[float, dict]:
    """Seconds and estimates of the CNN stage (`cnn.train_variants`) with `train_ensemble`."""
    def reseeded(x, y, s, seed, **kw):
        return train_ensemble(x, y, s, seed + seed_offset, **kw)

    prof = profile("quick")
    t = time.perf_counter()
    with mock.patch.object(cnn, "train_ensemble", reseeded):
        res = cnn.train_variants(store.read(run.synthetic), store.read(run.observed), run.latents(),
                                 prof.ae.n_models, prof.cnn, 42)
    return time.perf_counter() - t, {v: est for v, (est, _) in res["estimates"].items()}


def step_times() -> pd.DataFrame:
    """Milliseconds per jitted train step (forward + backward, no optimizer) of the latent and the
    direct graph after the 8-pixel binning: the baseline's (rows shared, NaN-masked loss) and
    today's (`cnn.member_graph`: each member its own rows)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    rows = {}
    for name, length, pool in (("latent", 32, 0), ("direct", 3501, 8)):
        base = cnn_baseline.build_cnn(length, (64, 32, 32), 3e-3, pool, 20)
        if pool:
            base = keras.Model(base.get_layer("bin8").output, base.outputs)
        new = cnn.member_graph(cnn.build_cnn(length, (64, 32, 32), pool=pool, members=20), 3e-3)
        n = base.inputs[0].shape[1]
        y = rng.normal(size=(128, 20)).astype("float32")
        shared = rng.normal(size=(128, n, 1)).astype("float32")
        own = rng.normal(size=(128, 20, n, 1)).astype("float32")
        masked = np.where(rng.random(y.shape) < 0.37, np.nan, y).astype("float32")
        row = {}
        for label, model, x, target, loss in (("baseline", base, shared, masked, cnn_baseline.masked_mse),
                                              ("new", new, own, y, cnn.members_mse)):
            tv, ntv = [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]
            step = jax.jit(jax.value_and_grad(lambda w: jnp.mean(loss(target, model.stateless_call(w, ntv, x)[0]))))
            jax.block_until_ready(step(tv))
            t = time.perf_counter()
            for _ in range(20):
                out = step(tv)
            jax.block_until_ready(out)
            row[f"{label}, ms"] = (time.perf_counter() - t) / 20 * 1e3
        rows[name] = row
    return pd.DataFrame(rows).T


def profiled(run: RunFolder) -> pd.Series:
    """Seconds of one new stage in `training.fit` (compilation included), in the ensembles'
    predictions, and elsewhere (splits, model construction, estimates)."""
    spent = defaultdict(float)

    def timer(name, f):
        def wrapped(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapped

    with mock.patch.object(training, "fit", timer("training loops (training.fit)", training.fit)), \
            mock.patch.object(cnn.Ensemble, "member_predictions",
                              timer("predictions", cnn.Ensemble.member_predictions)):
        total, _ = stage(run, cnn.train_ensemble)
    spent["other (splits, models, estimates)"] = total - sum(spent.values())
    spent["whole stage"] = total
    return pd.Series(spent)


def scatter(a: dict, b: dict) -> pd.Series:
    """Per parameter: median over stars and variants of |a - b| for the estimates."""
    names = [c for c in a["method"].columns if c != "karmn" and not c.startswith(("e_", "E_"))]
    return pd.Series({n: float(np.median(np.concatenate([np.abs(a[v][n] - b[v][n]) for v in a]))) for n in names})


def main(run_dir=None):
    out = Path(run_dir or os.environ.get("CARMENES_DTL_RUN") or cache_dir() / "demo-run")
    run = prepared_run(out)
    print(f"backend {keras.backend.backend()}, run {out}")
    print("train step, 128 rows x 20 members, forward + backward:")
    print(step_times().round(1).to_string(), flush=True)
    print("profile of the new stage, s:")
    print(profiled(run).round(1).to_string(), flush=True)
    runs = [("baseline", cnn_baseline.train_ensemble, 0), ("new", cnn.train_ensemble, 0),
            ("baseline", cnn_baseline.train_ensemble, 1), ("new", cnn.train_ensemble, 1)]
    times, est = {}, {}
    for name, train, offset in runs:
        training.forget_compiled()
        seconds, est[name, offset] = stage(run, train, offset)
        times.setdefault(name, []).append(seconds)
        print(f"CNN stage, {name}, CNN seeds +{offset}: {seconds:.1f} s", flush=True)
    base, new = np.mean(times["baseline"]), np.mean(times["new"])
    print(f"\nCNN stage (4 latent ensembles + direct, 20 members each): baseline {base:.1f} s, "
          f"new {new:.1f} s: {base / new:.1f}x faster")
    table = pd.DataFrame({"baseline seed vs seed+1 (scatter)": scatter(est["baseline", 0], est["baseline", 1]),
                          "new seed vs seed+1": scatter(est["new", 0], est["new", 1]),
                          "new vs baseline, same seeds": scatter(est["new", 0], est["baseline", 0]),
                          "new vs baseline, seeds +1": scatter(est["new", 1], est["baseline", 1])})
    print("median |difference| of the estimates (all variants, all stars):")
    print(table.to_string(float_format="{:.4g}".format))


if __name__ == "__main__":
    main(*sys.argv[1:])
