"""The lowest allowed versions against the pinned ones (`make compat`).

Usage: ``python scripts/compat.py LOWEST_PYTHON OUT``, run by the pinned environment's Python.
Each environment runs the tiny pipeline (demo seed 3); each then opens the other's model bundle
and predicts the other's observed stars. A bundle must give, in the other environment, the
estimates its own run wrote (within 1e-2 relative: float32 kernels differ between versions).
Prints one line per check; exits 1 if any fails.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TOLERANCE = 1e-2


def cli(python: str, *args: str, cache: Path) -> str:
    """`carmenes-dtl ARGS` of `python`'s environment, its caches under `cache` (not the user's)."""
    bin_dir = Path(python).parent
    done = subprocess.run([str(bin_dir / "carmenes-dtl"), *args], capture_output=True, text=True,
                          env={"KERAS_BACKEND": "jax", "PATH": f"{bin_dir}:/usr/bin:/bin", "XDG_CACHE_HOME": str(cache)})
    if done.returncode:
        sys.exit(f"{bin_dir / 'carmenes-dtl'} {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def versions(run: Path) -> str:
    """The versions a run's environment recorded (run.json), and whether the run had JAX's compilation
    cache on (off below `environment.CACHE_SAFE_JAXLIB`)."""
    info = json.loads((run / "run.json").read_text())
    return (f"Python {info['python']}, Keras {info['keras']}, JAX {info['jax']}, NumPy {info['numpy']}, "
            f"compilation cache {'off' if info['jax_compilation_cache'] is None else 'on'}")


def largest_difference(a: Path, b: Path) -> float:
    x, y = (pd.read_csv(p, comment="#").set_index("karmn").sort_index() for p in (a, b))
    return float(np.nanmax(np.abs(x.to_numpy() - y.to_numpy()) / np.maximum(np.abs(y.to_numpy()), 1e-9)))


def main(lowest: str, out: Path, pinned_run: Path | None = None) -> int:
    """`pinned_run`: the pinned environment's tiny run (seed 3) when it exists already."""
    envs = {"pinned": sys.executable, "lowest": lowest}
    runs = {name: out / name for name in envs} | ({"pinned": pinned_run} if pinned_run else {})
    failed = 0
    for name, python in envs.items():
        if runs[name] != pinned_run:
            cli(python, "run", "--demo", "--profile", "tiny", "--seed", "3", "--out", str(runs[name]), "--quiet",
                cache=out / "cache")
        print(f"{name}: {versions(runs[name])}")
        print(f"  {name}: tiny pipeline ran ({runs[name] / 'estimates.csv'})")
    for reader, python in envs.items():
        for writer in envs:
            if writer == reader:
                continue
            run = runs[writer]
            estimates = out / f"{writer}-bundle-read-by-{reader}.csv"
            cli(python, "predict", "--model", str(run / "model"), "--observed", str(run / "observed.h5"),
                "--out", str(estimates), cache=out / "cache")
            diff = largest_difference(estimates, run / "estimates.csv")
            ok = diff <= TOLERANCE
            failed += not ok
            print(f"  {writer} bundle opened by {reader}: largest relative difference from its own run's "
                  f"estimates {diff:.1e} ({'ok' if ok else 'FAILED'})")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
