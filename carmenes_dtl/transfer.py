"""Fine-tuning on observed spectra (paper Sect. 3.2): freeze the input side, retrain the rest.

The first `frozen` encoder layers keep their synthetic weights, so observed spectra pass
through the same low-level features; the last encoder layer, the bottleneck and the
decoder learn to reconstruct the observed domain. Both domains are then encoded into one
32-dim latent space.
"""
from __future__ import annotations

import keras
import numpy as np
from sklearn.model_selection import train_test_split

from .autoencoder import callbacks, history, load, reconstruction_mse
from .config import AESettings


def frozen_layers(n_frozen: int) -> list[str]:
    """Names of the first `n_frozen` encoder layers."""
    return [f"enc_{i}" for i in range(1, n_frozen + 1)]


def finetune(model_path, observed: np.ndarray, synthetic: np.ndarray, s: AESettings, seed: int = 0,
             progress: bool = False) -> tuple[keras.Model, dict]:
    """A fine-tuned copy of the saved autoencoder at `model_path`, and a before/after report.

    Observed spectra are split 80/20 (seeded); the 20 % steers early stopping and measures
    the observed reconstruction error. `synthetic` (a sample) measures what the synthetic
    domain loses.
    """
    keras.utils.set_random_seed(seed)
    model = load(model_path)
    train_obs, test_obs = train_test_split(observed, test_size=0.2, random_state=seed)

    def errors() -> dict:
        return {"mse_observed_test": reconstruction_mse(model, test_obs),
                "mse_synthetic": reconstruction_mse(model, synthetic)}

    before = errors()
    frozen = frozen_layers(s.finetune_frozen)
    for name in frozen:
        model.get_layer(name).trainable = False
    model.compile(optimizer=keras.optimizers.Adam(s.learning_rate), loss="mse")
    hist = model.fit(train_obs, train_obs, validation_data=(test_obs, test_obs), epochs=s.finetune_epochs,
                     batch_size=min(s.batch_size, len(train_obs)), shuffle=True, verbose=0,
                     callbacks=callbacks(s.patience, progress, "fine-tune"))
    return model, {"frozen_layers": frozen, "n_train": len(train_obs), "n_test": len(test_obs),
                   "before": before, "after": errors(), "history": history(hist)}
