"""The synthetic gap as numbers: how distinguishable are two sets of vectors?

Each metric comes with the value that means "no gap":

- domain-classifier ROC AUC (cross-validated logistic regression): 0.5;
- maximum mean discrepancy (RBF kernel, median bandwidth) with a permutation p-value:
  MMD² ≈ 0, p > 0.05;
- nearest-neighbour distance ratio: median distance of each observed vector to its nearest
  synthetic one over the median synthetic-to-synthetic nearest distance: ≈ 1.

Inputs are spectra or latent vectors alike.
"""
from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

NO_GAP = {"domain_auc": 0.5, "mmd2": 0.0, "mmd_p_value": "> 0.05", "nn_distance_ratio": 1.0}
#: The 2-D projections `project` draws (UMAP: the first fit ever compiles umap-learn's kernels, ~20 s).
PROJECTIONS = ("pca", "tsne", "umap")


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size, seeded subsamples of both sets (at most `cap` each)."""
    n = min(len(a), len(b), cap)
    return a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]


def domain_auc(a: np.ndarray, b: np.ndarray, seed: int = 0, folds: int = 5, cap: int = 500) -> dict:
    """Cross-validated ROC AUC of a classifier telling `a` from `b` (0.5 = indistinguishable)."""
    if min(len(a), len(b)) < folds:
        raise ValueError(f"the domain AUC's {folds}-fold cross-validation needs at least {folds} spectra per set, "
                         f"got {len(a)} synthetic and {len(b)} observed")
    a, b = _balanced(a, b, np.random.default_rng(seed), cap)
    x = np.vstack([a, b])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    n_comp = min(20, x.shape[1], int(len(x) * (folds - 1) / folds) - 1)
    clf = make_pipeline(StandardScaler(), PCA(n_comp, random_state=seed), LogisticRegression(max_iter=2000))
    scores = cross_val_score(clf, x, y, scoring="roc_auc", cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"domain_auc": float(scores.mean()), "domain_auc_std": float(scores.std())}


def mmd(a: np.ndarray, b: np.ndarray, seed: int = 0, permutations: int = 500, cap: int = 300) -> dict:
    """Unbiased MMD² with an RBF kernel (median-distance bandwidth) and a permutation p-value."""
    rng = np.random.default_rng(seed)
    a, b = _balanced(a, b, rng, cap)
    x = np.vstack([a, b])
    d2 = euclidean_distances(x, squared=True)
    k = np.exp(-d2 / np.median(d2[np.triu_indices_from(d2, 1)]))
    n = len(a)

    def stat(idx):
        i, j = idx[:n], idx[n:]
        kaa, kbb, kab = k[np.ix_(i, i)], k[np.ix_(j, j)], k[np.ix_(i, j)]
        return ((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                - 2 * kab.mean())

    observed = stat(np.arange(2 * n))
    null = np.array([stat(rng.permutation(2 * n)) for _ in range(permutations)])
    return {"mmd2": float(observed), "mmd_p_value": float((1 + (null >= observed).sum()) / (1 + permutations))}


def nn_distances(synthetic: np.ndarray, observed: np.ndarray) -> dict:
    """Observed-to-nearest-synthetic distances against synthetic-to-nearest-other-synthetic ones."""
    nn = NearestNeighbors(n_neighbors=2).fit(synthetic)
    d_syn = nn.kneighbors(synthetic)[0][:, 1]
    d_obs = nn.kneighbors(observed, n_neighbors=1)[0][:, 0]
    return {"nn_distance_ratio": float(np.median(d_obs) / np.median(d_syn)),
            "nn_observed_median": float(np.median(d_obs)), "nn_synthetic_median": float(np.median(d_syn))}


def metrics(synthetic: np.ndarray, observed: np.ndarray, seed: int = 0) -> dict:
    """All gap metrics between two sets of vectors."""
    return {**domain_auc(synthetic, observed, seed), **mmd(synthetic, observed, seed),
            **nn_distances(synthetic, observed)}


def project(synthetic: np.ndarray, observed: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D embedding of both sets together (rows: synthetic first, then observed)."""
    x = StandardScaler().fit_transform(np.vstack([synthetic, observed]))
    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, random_state=seed, init="pca", perplexity=min(30, len(x) // 4)).fit_transform(x)
    if method == "umap":
        return cached_umap()(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
    raise ValueError(f"unknown projection {method!r}; choose from {', '.join(PROJECTIONS)}")


def compile_umap() -> None:
    """Compile UMAP's numba kernels into their cache on disk (`cached_umap`) with one small
    projection, as the test session does at its start: the processes that draw UMAP later load
    them instead of each compiling them (~20 s of CPU in a new environment)."""
    x = np.random.default_rng(0).random((40, 8))
    project(x[:20], x[20:], "umap")


def _parametric_umap(name: str) -> type:
    """`umap.ParametricUMAP`, imported (with TensorFlow) on first use."""
    if name != "ParametricUMAP":
        raise AttributeError(f"module 'umap' has no attribute {name!r}")
    from umap.parametric_umap import ParametricUMAP

    return ParametricUMAP


@functools.cache
def cached_umap() -> type:
    """umap-learn's UMAP, its numba kernels cached on disk as numba caches pynndescent's: they
    compile (~20 s) in the first process ever, not in each (every chapter, every `gap` command).
    Imported without its ParametricUMAP, unused here, which would import TensorFlow (~4 s); it
    stays importable (`from umap import ParametricUMAP` imports it then). The caching holds for
    the process's other UMAP use too; numba's cache is keyed by each kernel's own source."""
    from numba.core.registry import CPUDispatcher

    if "umap" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["umap.parametric_umap"] = None  # umap-learn catches the ImportError and goes on
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImportWarning)
                import umap
        finally:
            sys.modules.pop("umap.parametric_umap", None)
        del umap.ParametricUMAP  # umap-learn's stand-in; the real one imported when asked for
        umap.__getattr__ = _parametric_umap
    import umap

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "umap":
            for kernel in list(vars(module).values()):
                if isinstance(kernel, CPUDispatcher):
                    kernel.enable_caching()
    return umap.UMAP


def best_match_residual(synthetic: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per-pixel mean of (observed - its nearest synthetic spectrum): the lines that drive the gap."""
    idx = NearestNeighbors(n_neighbors=1).fit(synthetic).kneighbors(observed)[1][:, 0]
    return (observed - synthetic[idx]).mean(axis=0)


def report(synthetic_h5: Path, observed_h5: Path, out: Path, latent_model: Path | None = None, seed: int = 0,
           max_synthetic: int = 2000, projections: tuple[str, ...] = PROJECTIONS) -> dict:
    """`carmenes-dtl gap`: metrics in ``OUT/gap.json`` plus a figure per method of `projections`
    (``projection_<method>.png``) and the residual figure."""
    from . import autoencoder, plotting, store

    store.check_pair(synthetic_h5, observed_h5)
    syn, obs = store.read(synthetic_h5), store.read(observed_h5)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(syn), min(max_synthetic, len(syn)), replace=False))
    a, b, space = syn.flux[keep], obs.flux, "spectra"
    if latent_model is not None:
        model = _latent_model(latent_model, syn.wavelength.size)
        a, b, space = autoencoder.encode(model, a), autoencoder.encode(model, b), f"latents of {Path(latent_model).name}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"space": space, "n_synthetic": len(a), "n_observed": len(b), "seed": seed,
              "metrics": metrics(a, b, seed), "no_gap_reference": NO_GAP}
    (out / "gap.json").write_text(json.dumps(result, indent=1))
    params = syn.parameters.iloc[keep].reset_index(drop=True)
    for method in projections:
        fig = plotting.projection(project(a, b, method, seed), len(a), params, method.upper())
        fig.savefig(out / f"projection_{method}.png", dpi=110)
    if latent_model is None:
        plotting.residual(syn.wavelength, best_match_residual(a, b)).savefig(out / "residual.png", dpi=110)
    return result


def _latent_model(path: Path, n_pixels: int):
    """The autoencoder at `path`, checked to take `n_pixels`-pixel spectra and to have a bottleneck."""
    from . import autoencoder

    model = autoencoder.load(path)
    n_in = model.inputs[0].shape[-1]
    if n_in != n_pixels:
        raise ValueError(f"{path}: the model takes spectra of {n_in} pixels, the sets have {n_pixels}")
    if "bottleneck" not in [layer.name for layer in model.layers]:
        raise ValueError(f"{path}: not an autoencoder of this package (no 'bottleneck' layer)")
    return model


def regression_errors(synthetic, observed, truth, seed: int = 0) -> dict:
    """MAE of a simple regressor (PCA + ridge) trained on synthetic spectra, applied to observed ones.

    `synthetic`/`observed` are `store.SpectrumSet`s; `truth` has the observed stars'
    true `Teff, logg, [M/H], vsini` by `karmn`. The size of these errors is how much the
    gap hurts a method that ignores it.
    """
    from sklearn.linear_model import RidgeCV

    from .config import PARAMETERS, PUBLISHED_NAMES

    t = observed.parameters[["karmn"]].merge(truth, on="karmn", how="left")
    model = make_pipeline(PCA(30, random_state=seed), RidgeCV(alphas=np.logspace(-4, 2, 13)))
    out = {}
    for j, p in enumerate(PARAMETERS):
        pred = model.fit(synthetic.flux, synthetic.labels[:, j]).predict(observed.flux)
        out[PUBLISHED_NAMES[p]] = float(np.mean(np.abs(pred - t[PUBLISHED_NAMES[p]].to_numpy())))
    return out
