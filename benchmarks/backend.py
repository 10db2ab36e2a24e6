"""Which Keras backend is faster here? Autoencoder and CNN-ensemble epochs, one subprocess per backend.

    python benchmarks/backend.py
"""
import json
import os
import subprocess
import sys

CODE = r"""
import json, time, numpy as np, keras
from carmenes_dtl import autoencoder, cnn
x = np.random.default_rng(0).random((960, 3501)).astype("float32")
out = {}
for n_in in (256, 2048):
    m = autoencoder.build_autoencoder(3501, n_in, learning_rate=1e-3)
    m.fit(x, x, epochs=1, batch_size=128, verbose=0)
    t = time.perf_counter(); m.fit(x, x, epochs=3, batch_size=128, verbose=0)
    out[f"AE n_in={n_in} s/epoch"] = (time.perf_counter() - t) / 3
lat = np.random.default_rng(1).random((960, 12, 32, 1)).astype("float32")  # one row per member
y = np.random.default_rng(2).random((960, 12)).astype("float32")
m = cnn.member_graph(cnn.build_cnn(32, (64, 32, 32), members=12), 3e-3)
m.fit(lat, y, epochs=1, batch_size=128, verbose=0)
t = time.perf_counter(); m.fit(lat, y, validation_data=(lat, y), epochs=3, batch_size=128, verbose=0)
out["CNN ensemble (12 members, latents) s/epoch"] = (time.perf_counter() - t) / 3
print(json.dumps(out))
"""


def main():
    results = {}
    for backend in ("tensorflow", "jax"):
        res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                             env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"})
        results[backend] = json.loads(res.stdout.strip().splitlines()[-1])
    for key in results["jax"]:
        tf, jx = results["tensorflow"][key], results["jax"][key]
        print(f"{key:45s} tensorflow {tf:7.3f}  jax {jx:7.3f}  tf/jax {tf / jx:5.2f}")


if __name__ == "__main__":
    main()
