"""Scale on one machine: `prepare-synthetic --grid paper` over the demo's PHOENIX tree (the
paper's 1767 nodes x 13 vsini = 22,933 spectra) and one paper-size autoencoder epoch over all
of them.

The demo's PHOENIX tree is the same for the quick and the full demo (346 nodes bracketing the
paper grid); `prepare-synthetic` runs as the CLI does, in a child process, whose wall time and
peak resident memory (`getrusage`) are reported. The epoch: `autoencoder.build_autoencoder`
with the paper's settings (n_in = 2048, 25.1 M parameters, batch 128), two epochs timed per
epoch (the first includes compilation), with the achieved rate, 6 x parameters x spectra.

    KERAS_BACKEND=jax python benchmarks/scale.py [WORKDIR]    (default: _build/scale)
"""
import resource
import subprocess
import sys
import time
from pathlib import Path

from carmenes_dtl import autoencoder, store  # first: it picks the default backend
from carmenes_dtl.config import AESettings
from carmenes_dtl.demo import write_demo

import keras


def prepare(work: Path) -> Path:
    """The paper-grid synthetic set; prints wall time and peak memory of the CLI command."""
    if not (work / "demo" / "phoenix").is_dir():
        write_demo(work / "demo", seed=42, size="full", progress=False)
    out = work / "synthetic_paper.h5"
    out.unlink(missing_ok=True)
    cmd = [Path(sys.executable).with_name("carmenes-dtl"), "prepare-synthetic", "--phoenix-dir", work / "demo" / "phoenix",
           "--out", out, "--grid", "paper", "--quiet"]
    t = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"prepare-synthetic --grid paper: {len(store.read(out).flux)} spectra in {wall:.1f} s, "
          f"peak RSS {peak:.2f} GiB", flush=True)
    return out


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(f"  epoch {epoch + 1}: {time.perf_counter() - self.t:.1f} s", flush=True)
        self.seconds = time.perf_counter() - self.t


def epoch(synthetic: Path) -> None:
    flux = store.read(synthetic).flux.astype("float32")
    s = AESettings()
    model = autoencoder.build_autoencoder(flux.shape[1], 2048, 1e-7, s.latent_dim, s.contractive_lambda, s.penalty,
                                          s.learning_rate, s.l1_layers)
    timer = EpochTimes()
    print(f"paper-size autoencoder ({model.count_params() / 1e6:.1f} M parameters), {len(flux)} spectra, "
          f"batch {s.batch_size}, backend {keras.backend.backend()}:", flush=True)
    model.fit(flux, flux, epochs=2, batch_size=s.batch_size, shuffle=True, verbose=0, callbacks=[timer])
    rate = 6 * model.count_params() * len(flux) / timer.seconds / 1e9
    print(f"one epoch (the second): {timer.seconds:.1f} s, {rate:.0f} GFLOP/s achieved")


if __name__ == "__main__":
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/scale")
    work.mkdir(parents=True, exist_ok=True)
    epoch(prepare(work))
