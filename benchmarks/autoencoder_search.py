"""The autoencoder grid search of the quick profile, with and without reusing the model of a grid point across its folds.

Baseline (`fresh_fit`): every (grid point, fold) builds, traces and compiles a new model,
as before issue 16. Now (`autoencoder.AutoencoderEstimator.fit`): the folds of a grid
point reset the last model to its initial weights and optimizer state and reuse its
compiled train step; the search's rows must be equal. Runs alternate; same process.

    KERAS_BACKEND=jax python benchmarks/autoencoder_search.py [RUN_DIR]

RUN_DIR: a quick-profile demo run with ``synthetic.h5`` (default: the book's).
"""
import os
import sys
import time
from pathlib import Path
from unittest import mock

os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # before JAX is imported: every fit compiles what it builds

import numpy as np
from sklearn.model_selection import train_test_split

from carmenes_dtl import autoencoder, store
from carmenes_dtl.config import cache_dir, profile, stage_seed


def fresh_fit(self, X, y=None):
    """Before issue 16: a new model for every fit."""
    self.model_, self.history_ = autoencoder.train(X, self.n_in, self.l1, self.settings, self.seed, search=True)
    return self


def main(run_dir=None):
    out = Path(run_dir or os.environ.get("CARMENES_DTL_RUN") or cache_dir() / "demo-run")
    s = profile("quick").ae
    flux = store.read(out / "synthetic.h5").flux
    train_idx, _ = train_test_split(np.arange(len(flux)), test_size=s.test_size, random_state=stage_seed(42, "split"))
    n_fits = len(s.n_in_grid) * len(s.l1_grid) * s.cv_folds
    print(f"quick search: {len(train_idx)} spectra, {n_fits} fits of {s.search_epochs} epochs")
    times, rows = {}, {}
    for name in ("fresh", "reuse", "fresh", "reuse"):
        t = time.perf_counter()
        if name == "fresh":
            with mock.patch.object(autoencoder.AutoencoderEstimator, "fit", fresh_fit):
                rows[name] = autoencoder.grid_search(flux[train_idx], s, stage_seed(42, "search"))
        else:
            rows[name] = autoencoder.grid_search(flux[train_idx], s, stage_seed(42, "search"))
        times.setdefault(name, []).append(time.perf_counter() - t)
        print(f"{name}: {times[name][-1]:.1f} s", flush=True)
    same = all(a["n_in"] == b["n_in"] and a["l1"] == b["l1"] and np.isclose(a["cv_mse"], b["cv_mse"], rtol=1e-5)
               for a, b in zip(rows["fresh"], rows["reuse"]))
    fresh, reuse = np.mean(times["fresh"]), np.mean(times["reuse"])
    print(f"search: fresh models {fresh:.1f} s, reused per grid point {reuse:.1f} s: {fresh / reuse:.2f}x; "
          f"same rows: {same}")


if __name__ == "__main__":
    main(*sys.argv[1:])
