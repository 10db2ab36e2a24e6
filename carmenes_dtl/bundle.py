"""The model bundle a run leaves in ``RUN/model/``: everything `predict` needs to estimate new stars.

Layout: ``manifest.json`` (format version, package and library versions, window, profile,
seed, SHA-256 of the training and fine-tuning sets and of every file of the bundle, and per
CNN input space its ensembles' scalers and target normalisation), the autoencoders before
and after fine-tuning (``ae_<i>.keras``, ``ae_<i>_ft.keras``), one ``.keras`` graph per
ensemble and CNN width (``cnn_<space>_<i>_<g>.keras``) and the members' held-out residuals
(``residuals_<space>_<i>.npz``, for ``uncertainty="residuals"``). No pickle.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from . import __version__, store
from .config import PARAMETERS, Window
from .rundir import Latents, ae_name
from .stages import sha256
from .variants import SPACES

#: Version of the layout above; `read_manifest` refuses any other. 2: members-first CNN layers
#: with pooling inside `MemberConv1D` (format 1's graphs had separate max-pooling layers).
FORMAT = 2
#: What `predict` reads from a manifest besides its format.
MANIFEST_KEYS = ("files", "window", "profile", "n_models", "ensembles")


def inference_copy(model):
    """`model` with its weights and no optimizer: a third of the size on disk (no Adam moments)."""
    import keras

    return keras.Model(model.inputs, model.outputs, name=model.name)  # same layers, not compiled


def save(folder: Path, ensembles: dict, autoencoders: list[tuple[Path, Path]], back_maps: list[np.ndarray],
         info: dict) -> Path:
    """Write the bundle into `folder`: `ensembles` {space: [cnn.Ensemble per autoencoder]},
    `autoencoders` [(before, after fine-tuning) .keras paths], `back_maps` (`transfer.back_map` of
    each autoencoder, ``aligned_<i>.npy``), `info` (window, profile, ...)."""
    import keras

    from .autoencoder import load, save

    folder = Path(folder)
    folder.mkdir(parents=True)
    for i, pair in enumerate(autoencoders):
        for src, name in zip(pair, (ae_name(i, "pre"), ae_name(i, "ft"))):
            save(inference_copy(load(src)), folder / name)
    for i, coef in enumerate(back_maps):
        np.save(folder / f"aligned_{i}.npy", coef, allow_pickle=False)
    spaces = write_ensembles(folder, ensembles)
    manifest = {"format": FORMAT, "package_version": __version__, "keras": keras.__version__,
                "backend": keras.backend.backend(), "numpy": np.__version__, "python": platform.python_version(),
                **info, "n_models": len(autoencoders), "ensembles": spaces,
                "files": {f.name: sha256(f) for f in sorted(folder.iterdir())}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def write_ensembles(folder: Path, ensembles: dict) -> dict:
    """Save `ensembles` {space: [cnn.Ensemble]} into `folder` (graphs, residuals); returns the
    manifest entries {space name: [per ensemble: files, scaler, target normalisation]}."""
    from .autoencoder import save

    spaces = {}
    for space, group in ensembles.items():
        tag, entries = space, []
        for i, ens in enumerate(group):
            models = []
            for g, (params, model) in enumerate(ens.models):
                save(inference_copy(model), folder / f"cnn_{tag}_{i}_{g}.keras")
                models.append({"parameters": list(params), "file": f"cnn_{tag}_{i}_{g}.keras"})
            np.savez(folder / f"residuals_{tag}_{i}.npz", **ens.residuals)
            scaler = None if ens.x_scaler is None else {"mean": ens.x_scaler.mean_.tolist(),
                                                        "scale": ens.x_scaler.scale_.tolist()}
            entries.append({"models": models, "x_scaler": scaler, "residuals": f"residuals_{tag}_{i}.npz",
                            "y_mean": {p: float(v) for p, v in ens.y_mean.items()},
                            "y_std": {p: float(v) for p, v in ens.y_std.items()}})
        spaces[tag] = entries
    return spaces


def save_trained(folder: Path, ensembles: dict) -> Path:
    """Trained ensembles {space: [cnn.Ensemble]} with their training curves, for a later stage
    (``ensembles.json`` + the files of `write_ensembles`); `load_trained` reads them back."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True)
    spaces = write_ensembles(folder, ensembles)
    histories = {space: [e.history for e in group] for space, group in ensembles.items()}
    (folder / "ensembles.json").write_text(json.dumps({"keras": keras.__version__, "ensembles": spaces,
                                                       "histories": histories}, indent=1))
    return folder


def load_trained(folder: Path) -> dict:
    """{space: [cnn.Ensemble]} saved by `save_trained`, training curves included."""
    info = json.loads((Path(folder) / "ensembles.json").read_text())
    out = {}
    for space in SPACES:
        if space in info["ensembles"]:
            out[space] = load_ensembles(Path(folder), info, space)
            for ens, hist in zip(out[space], info["histories"][space]):
                ens.history = hist
    return out


def read_manifest(folder: Path) -> dict:
    """The manifest of the bundle in `folder`; a one-line error naming the file when it is
    missing, unreadable, of another format, or when a file it lists is missing or changed."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a model bundle (no manifest.json); `carmenes-dtl run` "
                                f"writes one in RUN/model")
    try:
        manifest = json.loads(path.read_text())
        fmt = manifest["format"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: corrupt bundle manifest ({type(err).__name__}: {err})") from None
    if fmt != FORMAT:
        raise ValueError(f"{path}: bundle format {fmt!r} (written by carmenes-dtl "
                         f"{manifest.get('package_version', '?')}); carmenes-dtl {__version__} reads format {FORMAT}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: corrupt bundle manifest (no {', '.join(missing)})")
    for name, digest in manifest["files"].items():
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing from the model bundle")
        if sha256(folder / name) != digest:
            raise ValueError(f"{folder / name}: corrupt (its SHA-256 differs from the manifest's)")
    return manifest


def load_model(path: Path, manifest: dict):
    """A model of the bundle (`autoencoder.load`, naming the Keras that saved it)."""
    from .autoencoder import load

    return load(path, manifest.get("keras", "?"))


def window(manifest: dict) -> Window:
    return Window(**manifest["window"])


def load_ensembles(folder: Path, manifest: dict, space: str) -> list:
    """The `cnn.Ensemble`s of input space `space` (`variants.SPACES`)."""
    from sklearn.preprocessing import StandardScaler

    from .cnn import Ensemble

    out = []
    for entry in manifest["ensembles"][space]:
        scaler = None
        if entry["x_scaler"] is not None:
            scaler = StandardScaler()
            scaler.mean_, scaler.scale_ = (np.asarray(entry["x_scaler"][k]) for k in ("mean", "scale"))
            scaler.n_features_in_ = scaler.mean_.size
        with np.load(folder / entry["residuals"]) as npz:
            residuals = {p: npz[p] for p in PARAMETERS}
        models = [(tuple(m["parameters"]), load_model(folder / m["file"], manifest)) for m in entry["models"]]
        # float64 as trained (numpy 2 would compute float32 predictions * a Python float in float32)
        y_mean, y_std = ({p: np.float64(v) for p, v in entry[k].items()} for k in ("y_mean", "y_std"))
        out.append(Ensemble(scaler, y_mean, y_std, models, residuals))
    return out


def check_observed(observed: Path, manifest: dict, folder: Path) -> None:
    """A one-line ValueError naming `observed` unless it is an observed set on the bundle's window."""
    wave, win = store.check_observed(observed)["wavelength"], window(manifest)
    if not store.on_window(wave, win):
        raise ValueError(f"{observed}: wavelength grid {wave[0]:.2f}-{wave[-1]:.2f} Å ({wave.size} pixels) is not "
                         f"the window {win.start:g}-{win.stop:g} Å ({win.n} pixels) of the model {folder}")


def predict(folder: Path, observed: Path, variant: str = "method"):
    """(estimates, flags) of the stars in `observed` with the bundle in `folder`, as `run` makes them."""
    from .cnn import estimate_variant
    from .variants import get

    v = get(variant)
    folder = Path(folder)
    manifest = read_manifest(folder)
    check_observed(observed, manifest, folder)
    obs = store.read(observed)
    latents = Latents({} if not v.latent else {
        ("obs", v.apply, i): observed_latents(folder, manifest, v.apply, i, obs.flux) for i in range(manifest["n_models"])})
    return estimate_variant({v.train: load_ensembles(folder, manifest, v.train)}, latents, obs, variant,
                            manifest["profile"]["cnn"]["uncertainty"])


def observed_latents(folder: Path, manifest: dict, space: str, i: int, flux: np.ndarray) -> np.ndarray:
    """Latents of `flux` in `space` through autoencoder `i` of the bundle (``aligned``: the fine-tuned
    encoder's, mapped back with the bundle's ``aligned_<i>.npy``)."""
    from . import autoencoder, transfer

    z = autoencoder.encode(load_model(folder / ae_name(i, "ft" if space == "aligned" else space), manifest), flux)
    if space != "aligned":
        return z
    if not (folder / f"aligned_{i}.npy").is_file():
        raise FileNotFoundError(f"{folder}: this bundle has no back-map (aligned_{i}.npy); rerun `carmenes-dtl run`")
    return transfer.apply_affine(np.load(folder / f"aligned_{i}.npy", allow_pickle=False), z)
