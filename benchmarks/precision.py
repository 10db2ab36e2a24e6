"""bfloat16 (`precision="bfloat16"`, Keras' mixed_bfloat16) against float32, one process.

Two workloads, each timed for float32 and bfloat16 in alternation (A B A B), the first fit of
each model (compilation) excluded:

* an autoencoder epoch at the paper's size (n_in 2048, 25.1 M parameters, batch 128) over
  2048 random spectra of 3501 pixels (`autoencoder.build_autoencoder`);
* the CNN stage's unit: one ensemble of the paper's CNNs (5 members x 4 parameters, widths
  64/32/64, batch 32) on 2000 random 32-d latents, 4 epochs (`cnn.train_ensemble`, with
  its predictions; seconds per epoch).

    KERAS_BACKEND=jax python benchmarks/precision.py
    KERAS_BACKEND=tensorflow python benchmarks/precision.py

Prints seconds per epoch and the ratio float32 / bfloat16 (> 1: bfloat16 faster).
"""
import time

from carmenes_dtl import autoencoder, cnn  # first: it picks the default backend
from carmenes_dtl.config import PARAMETERS, CNNSettings

import keras
import numpy as np

rng = np.random.default_rng(0)
spectra = rng.uniform(0, 1, (2048, 3501)).astype("float32")
latents = rng.normal(size=(2000, 32)).astype("float32")
labels = rng.uniform(0, 1, (2000, 4))


def autoencoder_epoch(precision: str) -> float:
    model = autoencoder.build_autoencoder(n_in=2048, precision=precision)
    model.fit(spectra, spectra, epochs=1, batch_size=128, verbose=0)  # compiles
    start = time.perf_counter()
    model.fit(spectra, spectra, epochs=2, batch_size=128, verbose=0)
    return (time.perf_counter() - start) / 2


def cnn_epoch(precision: str) -> float:
    s = CNNSettings(epochs=4, precision=precision)
    cnn.train_ensemble(latents, labels, s, seed=0, parameters=PARAMETERS)  # compiles
    start = time.perf_counter()
    cnn.train_ensemble(latents, labels, s, seed=0, parameters=PARAMETERS)
    return (time.perf_counter() - start) / s.epochs


print(f"backend {keras.backend.backend()}, Keras {keras.__version__}")
for name, workload in (("autoencoder epoch (paper size)", autoencoder_epoch), ("CNN ensemble epoch", cnn_epoch)):
    times = {"float32": [], "bfloat16": []}
    for precision in ("float32", "bfloat16", "float32", "bfloat16"):
        times[precision].append(workload(precision))
    f32, bf16 = np.mean(times["float32"]), np.mean(times["bfloat16"])
    print(f"{name}: float32 {f32:.2f} s, bfloat16 {bf16:.2f} s, float32/bfloat16 {f32 / bf16:.2f}x "
          f"(runs {', '.join(f'{t:.2f}' for t in times['float32'])} / {', '.join(f'{t:.2f}' for t in times['bfloat16'])})")
