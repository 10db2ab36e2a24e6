"""The `direct` baseline trained with photon noise at the observed S/N against noise-free (issue 25.6).

    python benchmarks/direct_noise.py OUT SEED [SEED ...]

For each seed, in ``OUT/seed<S>``: the quick demo run (`carmenes-dtl run --demo --profile quick
--seed S`, paper gap), its results copied to ``results-none/``; then the same run with
``--set cnn.direct_noise=observed`` (only the CNN stages rerun: the direct CNN now trains on
synthetic spectra with photon noise at S/N drawn from the demo stars', `cnn.with_photon_noise`),
copied to ``results-observed/``. Finished steps are kept. Writes ``data/results/direct_noise.csv``
(seed, direct_noise, variant, parameter, MAE and bias on the demo stars, held-out MAE) under the
command, commit and versions. Expected before measuring: noise-free training spectra make the
direct CNN read noise as line structure on stars at S/N 30-300, so noise should lower its
errors, most in vsini and [M/H] (line depths and widths), and leave the latent variants alone.
"""
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from carmenes_dtl import __version__, pipeline
from carmenes_dtl.config import profile, with_overrides
from carmenes_dtl.rundir import RunFolder
from carmenes_dtl.snapshots import snapshot
from carmenes_dtl.validation import errors

OUT = snapshot("results/direct_noise.csv")
SETTINGS = {"none": [], "observed": ["cnn.direct_noise=observed"]}


def run(folder: Path, seed: int, noise: str) -> Path:
    """The run at `noise`, its estimates, holdout and run.json kept in ``results-<noise>/``."""
    kept = folder / f"results-{noise}"
    if not (kept / "run.json").exists():
        pipeline.run(folder, pipeline.DemoInput(), with_overrides(profile("quick"), SETTINGS[noise]), seed,
                     progress=False)
        kept.mkdir(parents=True, exist_ok=True)
        f = RunFolder(folder)
        for path in [*folder.glob("estimates*.csv"), f.holdout_file, f.summary_file]:
            shutil.copy2(path, kept / path.name)
    return kept


def rows(kept: Path, truth: pd.DataFrame, seed: int, noise: str) -> list[dict]:
    hold = pd.read_csv(kept / "holdout.csv")
    out = []
    for path in sorted(kept.glob("estimates*.csv")):
        variant = path.stem.removeprefix("estimates").strip("_") or "method"
        held = hold[(hold["variant"] == variant) & (hold["uncertainty"] == "members")]
        for name, e in errors(pd.read_csv(path), truth).items():
            out.append({"seed": seed, "direct_noise": noise, "variant": variant, "parameter": name,
                        "mae": e["mae"], "bias": e["bias"],
                        "holdout_mae": float((held[name] - held[f"true_{name}"]).abs().mean())})
    return out


def main(out: Path, seeds: list[int]) -> Path:
    table = []
    for seed in seeds:
        folder = out / f"seed{seed}"
        for noise in SETTINGS:
            kept = run(folder, seed, noise)
            table += rows(kept, pd.read_csv(RunFolder(folder).truth_file), seed, noise)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = {"command": shlex.join(["python", *sys.argv]), "commit": commit, "carmenes_dtl": __version__,
              "keras": keras.__version__, "backend": keras.backend.backend(), "numpy": np.__version__,
              "python": platform.python_version()}
    OUT.write_text("".join(f"# {k}: {v}\n" for k, v in header.items())
                   + pd.DataFrame(table).round(4).to_csv(index=False))
    return OUT


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), [int(s) for s in sys.argv[2:]]))
