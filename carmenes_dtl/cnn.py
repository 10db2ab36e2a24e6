"""CNN regressors on latent vectors, their ensembles and the final estimates (paper Sect. 3.3).

Per parameter and per autoencoder, `n_per_model` CNNs are trained on stratified 70/30
splits: one split shared by the ensemble (published) or one per member. A star's value is
the median of all the members' predictions (all autoencoders). Its uncertainties are, with
``uncertainty="members"`` (published default), the 16th/84th percentiles of those
predictions: ``e_X = median - P16``, ``E_X = P84 - median``; with ``"residuals"``, those of
the star's median plus the residuals of the ensemble median on the held-out rows (with
several autoencoders, their ensembles' residuals pooled).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
from keras import ops
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from . import training
from .training import validation_slice
from .config import OPTIONS, PAPER_RANGES, PARAMETERS, PUBLISHED_NAMES, CNNSettings, estimate_columns, stage_seed
from .layers import BinPool, MemberConv1D, MemberDense, MembersFirst, members_mse
from .variants import SPACES, VARIANTS
from .variants import get as get_variant

def build_cnn(n_inputs: int, widths: tuple[int, int, int] = (64, 32, 64), *, pool: int = 0, members: int = 1,
              padding: str = "same", precision: str = "float32", seed: int | None = None) -> keras.Model:
    """`members` independent CNNs, input (batch, n_inputs, 1), output (batch, members): one column per CNN.

    Each CNN: Conv1D(nf1, 2) -> Conv1D(nf2, 2) -> Flatten -> Dense 256 -> 128 -> nu -> 1
    (ReLU, linear output), ``widths = (nf1, nf2, nu)``. The members' weights are stacked
    along a `members` axis and applied with einsum (`MemberConv1D`, `MemberDense`), so an
    ensemble is one small graph: it compiles in a second and trains every member in the
    same step, instead of 20 Keras models or a 20-branch graph (see benchmarks/). It is
    trained through `member_graph`, which gives each member its own rows.
    `pool` > 0 is for the `direct` baseline on 3501-pixel spectra: the input is averaged
    in bins of 8 pixels (0.08 Å, about one resolution element) and each convolution is
    followed by max-pooling by `pool`; without this the first dense layer alone would hold
    28 M weights per member. `precision`: `training.precision_policy` (the output stays float32).
    Initial weights from `seed` (`training.initializer_seeds`).
    """
    nf1, nf2, nu = widths
    seeds = training.initializer_seeds(seed)
    inputs = keras.Input((n_inputs, 1))
    with training.precision_policy(precision):
        x = BinPool(8, name="bin8", dtype="float32")(inputs) if pool else inputs
        for filters, name in ((nf1, "conv1"), (nf2, "conv2")):
            x = MemberConv1D(members, filters, padding=padding, pool=pool, seed=next(seeds), name=name)(x)
        for width, name in ((256, "dense256"), (128, "dense128"), (nu, "tuned")):
            x = MemberDense(members, width, activation="relu", seed=next(seeds), name=name)(x)
        x = MemberDense(members, 1, out=True, seed=next(seeds), name="out", dtype="float32")(x)
    return keras.Model(inputs, x)


def member_graph(model: keras.Model, learning_rate: float) -> keras.Model:
    """The layers of `model` from its first convolution on, fed (batch, members, length, 1):
    row b of member m is that member's b-th row of the batch, so every member fits on batches
    of its own training rows (`training.fit(members=...)` shuffles each member's rows on its
    own), as each published CNN does: Adam on the sum of the members' MSE (`members_mse`).
    The weightless binning of the direct CNN (``bin8``) is left to the caller, once per data set."""
    layers = [layer for layer in model.layers[1:] if layer.name != "bin8"]
    start = model.get_layer("bin8").output if isinstance(model.layers[1], BinPool) else model.inputs[0]
    inputs = keras.Input((layers[0].members, *start.shape[1:]))
    x = MembersFirst(name="members_first")(inputs)
    for layer in layers:
        x = layer(x)
    graph = keras.Model(inputs, x)
    graph.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=members_mse)
    return graph


def strata(y: np.ndarray, how: str = "values", bins: int = 10) -> np.ndarray:
    """Class labels of a target for stratified splitting.

    ``"values"`` (the authors' code, `cnn_training.py:55`): each distinct grid value is a
    class; StratifiedShuffleSplit needs at least 2 rows per class, so a value held by a
    single row joins the class of the nearest value with more. ``"deciles"``: quantile bins.
    """
    if how == "deciles":
        edges = np.unique(np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1]))
        return np.digitize(y, edges)
    values, labels, counts = np.unique(y, return_inverse=True, return_counts=True)
    ok = np.flatnonzero(counts >= 2)
    if len(ok) == 0:
        return np.zeros(len(y), int)
    nearest = ok[np.abs(values[:, None] - values[ok][None, :]).argmin(axis=1)]
    return nearest[labels.ravel()]


def splits(y: np.ndarray, s: CNNSettings, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) indices for each of the `n_per_model` members, stratified on `strata(y, s.strata)`.

    ``split="shared"``: one StratifiedShuffleSplit used by every member (the authors'
    code); ``"per_member"``: `n_per_model` different ones. Where a set has more classes than
    rows on one side of the split, the classes become that many quantile groups.
    """
    n = 1 if s.split == "shared" else s.n_per_model
    classes = strata(y, s.strata)
    n_test = int(np.ceil(s.test_size * len(y)))
    limit = min(n_test, len(y) - n_test)
    if len(np.unique(classes)) > limit:  # small sets (tiny profile): fewer rows than classes, so quantile groups
        classes = strata(y, "deciles", bins=limit)
    drawn = list(StratifiedShuffleSplit(n, test_size=s.test_size, random_state=seed).split(y, classes))
    return drawn * s.n_per_model if s.split == "shared" else drawn


def median_residuals(pred: np.ndarray, y: np.ndarray, member_splits) -> np.ndarray:
    """Ensemble median minus truth on every row held out by at least one member, in row order.

    A row's median is over the members that held it out (all of them with a shared split).
    These residuals already contain the members' spread, so `summarise` adds them to the
    star's median, not to each member's prediction.
    """
    held = np.zeros(pred.shape, bool)
    for k, (_, te) in enumerate(member_splits):
        held[k, te] = True
    rows = np.flatnonzero(held.any(axis=0))
    med = np.nanmedian(np.where(held[:, rows], pred[:, rows], np.nan), axis=0)
    return med - y[rows]


@dataclass
class Ensemble:
    """The CNNs of every parameter for one input space (one autoencoder, or the spectra).

    `models` holds one graph per distinct CNN width: (its parameters, the model); output
    column ``i * n_per_model + k`` of a graph is member k of its i-th parameter.
    """

    x_scaler: StandardScaler | None
    y_mean: dict
    y_std: dict
    models: list  # [(parameters, keras.Model)]
    residuals: dict  # parameter -> ensemble median - truth on the held-out rows (`median_residuals`)
    history: dict = field(default_factory=dict)

    def member_predictions(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """parameter -> (n_members, n_stars) predictions in physical units."""
        xs = (self.x_scaler.transform(x) if self.x_scaler else x)[..., None]
        out = {}
        for params, model in self.models:
            pred = training.predict(model, xs, batch_size=256).reshape(len(x), len(params), -1)
            out.update({p: pred[:, i, :].T * self.y_std[p] + self.y_mean[p] for i, p in enumerate(params)})
        return out


def train_ensemble(x: np.ndarray, y: np.ndarray, s: CNNSettings, seed: int, pool: int = 0,
                   parameters: tuple[str, ...] = PARAMETERS, progress: bool = False) -> Ensemble:
    """`n_per_model` CNNs per parameter (columns of `y`) on stratified 70/30 splits (`splits`).

    Parameters with the same widths train together in one graph (`build_cnn(members=...)`),
    each member on batches of its own training rows in its own order (`member_graph`). With
    ``s.patience`` (not in the authors' code), early stopping watches the members' summed loss
    on a `validation_slice` of each member's training rows, never on its held-out rows, which
    give the ``residuals`` uncertainties: one stopping epoch for the whole graph.
    """
    scaler, xs, mean, std, member_splits, groups = setup_ensemble(x, y, s, seed, parameters)
    models, hists = [], []
    training.set_random_seed(seed)
    for widths, params in groups.items():
        model = build_cnn(x.shape[1], widths, pool=pool, members=len(params) * s.n_per_model, padding=s.padding,
                          precision=s.precision, seed=seed + len(models))
        binned = ops.convert_to_numpy(model.get_layer("bin8")(xs)) if pool else xs
        fit, val = [], []  # per member (column i * n_per_model + k): (rows, targets)
        for p in params:
            yp = ((y[:, parameters.index(p)] - mean[p]) / std[p]).astype(np.float32)
            for k, (tr, _) in enumerate(member_splits[p]):
                fit_rows, held = validation_slice(tr, s.patience, seed + k)
                fit.append((fit_rows, yp[fit_rows]))
                val += [(held[0], yp[held[0]])] if held else []
        hists.append(training.fit(member_graph(model, s.learning_rate), *_member_rows(binned, fit),
                                  _member_rows(binned, val) if val else None, epochs=s.epochs,
                                  batch_size=s.batch_size, patience=s.patience, seed=(seed, len(models)),
                                  progress=progress, desc="CNN ensemble", members=len(fit)))
        models.append((tuple(params), model))
    return assemble_ensemble(Ensemble, x, y, scaler, mean, std, models, hists, member_splits, parameters)


def setup_ensemble(x: np.ndarray, y: np.ndarray, s: CNNSettings, seed: int, parameters: tuple[str, ...]):
    """What `train_ensemble` starts from: the input scaler (None for raw inputs) and the scaled
    inputs (rows, length, 1), the targets' mean and std per parameter (0 and 1 for raw targets),
    each parameter's member splits (`splits`) and the parameters grouped by CNN width."""
    scaler = StandardScaler().fit(x) if s.inputs == "standardised" else None
    xs = (scaler.transform(x) if scaler else x)[..., None].astype(np.float32)
    std_ok = np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)
    scaled = s.targets == "standardised"
    mean = dict(zip(parameters, y.mean(axis=0) if scaled else np.zeros(len(parameters))))
    std = dict(zip(parameters, std_ok if scaled else np.ones(len(parameters))))
    member_splits = {p: splits(y[:, i], s, seed) for i, p in enumerate(parameters)}
    groups: dict[tuple, list[str]] = {}
    for p in parameters:
        groups.setdefault(s.width(p), []).append(p)
    return scaler, xs, mean, std, member_splits, groups


def assemble_ensemble(kind: type, x: np.ndarray, y: np.ndarray, scaler, mean: dict, std: dict, models: list,
                      hists: list, member_splits: dict, parameters: tuple[str, ...]) -> Ensemble:
    """The trained graphs as an ensemble of class `kind`: the training curves summed over graphs
    (as long as the shortest) and each parameter's held-out residuals (`median_residuals`)."""
    n = min(len(h["loss"]) for h in hists)  # graphs stopped early may differ in length
    hist = {k: [float(sum(h[k][e] for h in hists)) for e in range(n)] for k in hists[0]}
    ensemble = kind(scaler, mean, std, models, {}, hist)
    pred = ensemble.member_predictions(x)
    ensemble.residuals = {p: median_residuals(pred[p], y[:, parameters.index(p)], member_splits[p])
                          for p in parameters}
    return ensemble


def _member_rows(x: np.ndarray, members: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, members, ...) inputs and (rows, members) targets from each member's (rows, targets);
    every member has as many rows (splits of one size)."""
    rows = np.stack([r for r, _ in members], axis=1)
    return x[rows], np.stack([t for _, t in members], axis=1)


def summarise(predictions: np.ndarray, residuals: np.ndarray | None = None) -> np.ndarray:
    """(n_stars, 3): median, lower and upper uncertainty of the members' predictions (n_members, n_stars).

    Without `residuals` (``uncertainty="members"``): lower = median - P16 and upper =
    P84 - median of the predictions. With them (``"residuals"``): the predictive
    distribution of a star is its median plus the ensemble's held-out residuals
    (`median_residuals`), re-centred on the median.
    """
    med = np.median(predictions, axis=0)
    if residuals is None:
        draws = predictions.T
    else:
        draws = med[:, None] + np.asarray(residuals)[None, :]
        draws = draws - (np.median(draws, axis=1) - med)[:, None]
    p16, p84 = np.percentile(draws, [16, 84], axis=1)
    return np.column_stack([med, np.clip(med - p16, 0, None), np.clip(p84 - med, 0, None)])


def estimate(ensembles: list[Ensemble], inputs: list[np.ndarray], karmn,
             uncertainty: str = "members") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Estimates in the published format and a table of out-of-grid flags.

    `inputs[i]` are the stars' inputs for `ensembles[i]` (one per autoencoder). Values
    outside the training grid are kept and flagged, never clipped.
    """
    if uncertainty not in OPTIONS["uncertainty"]:
        raise ValueError(f"uncertainty must be one of {OPTIONS['uncertainty']}, got {uncertainty!r}")
    out = {"karmn": list(karmn)}
    flags = {"karmn": list(karmn)}
    member_preds = [e.member_predictions(x) for e, x in zip(ensembles, inputs)]
    for p in PARAMETERS:
        resid = np.concatenate([e.residuals[p] for e in ensembles]) if uncertainty == "residuals" else None
        stats = summarise(np.concatenate([mp[p] for mp in member_preds]), resid)
        name = PUBLISHED_NAMES[p]
        out[name], out[f"e_{name}"], out[f"E_{name}"] = stats.T
        lo, hi = PAPER_RANGES[p]
        flags[f"outside_{name}"] = (stats[:, 0] < lo) | (stats[:, 0] > hi)
        if len(ensembles) > 1:
            flags[f"disagree_{name}"] = disagree([mp[p] for mp in member_preds])
    return pd.DataFrame(out)[estimate_columns()], pd.DataFrame(flags)


def own_spread(predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per star: the median of one ensemble's members (n_members, n_stars) and half their 16-84 width."""
    p16, p50, p84 = np.percentile(predictions, [16, 50, 84], axis=0)
    return p50, (p84 - p16) / 2


def disagree(per_autoencoder: list[np.ndarray]) -> np.ndarray:
    """Per star: True when the autoencoders' ensembles (members x stars each) disagree by more than
    their own spread: the range of their medians exceeds the mean of their half 16-84 widths."""
    medians, halves = zip(*(own_spread(p) for p in per_autoencoder))
    return np.ptp(medians, axis=0) > np.mean(halves, axis=0)


def autoencoder_report(ensembles: list[Ensemble], inputs: list[np.ndarray], truth: np.ndarray | None = None
                       ) -> pd.DataFrame:
    """Each autoencoder's ensemble on its own, per parameter: ``offset`` (mean of its medians minus the
    pooled median), ``half_width`` (median half 16-84 width of its members) and, with `truth`
    (n_stars, 4), ``bias`` and ``scatter`` of its medians against it."""
    member_preds = [e.member_predictions(x) for e, x in zip(ensembles, inputs)]
    rows = []
    for j, p in enumerate(PARAMETERS):
        pooled = np.median(np.concatenate([mp[p] for mp in member_preds]), axis=0)
        for i, mp in enumerate(member_preds):
            med, half = own_spread(mp[p])
            row = {"autoencoder": i, "parameter": PUBLISHED_NAMES[p], "offset": float(np.mean(med - pooled)),
                   "half_width": float(np.median(half))}
            if truth is not None:
                err = med - truth[:, j]
                row.update(bias=float(err.mean()), scatter=float(err.std(ddof=1)) if len(err) > 1 else np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


#: Decimals an estimates file keeps of each parameter, its value and both errors: 0.1 K, 0.001 dex
#: and 0.01 km/s, well below any estimate's uncertainty (the float64 digits beyond are noise).
DECIMALS = {"Teff": 1, "logg": 3, "[M/H]": 3, "vsini": 2}


def write_estimates(est: pd.DataFrame, path) -> None:
    """Write `estimate`'s table to the CSV `path`, values and errors rounded to `DECIMALS`; `run` and
    `predict` both write through here."""
    est.round({c: d for name, d in DECIMALS.items() for c in (name, f"e_{name}", f"E_{name}")}).to_csv(
        path, index=False)


def holdout_mask(params: pd.DataFrame, seed: int, fraction: float) -> np.ndarray:
    """A `fraction` of the (Teff, logg, [M/H]) nodes, all their vsini, kept out of CNN training
    for honest checks (``CNNSettings.holdout_fraction``; 0 in the authors' code)."""
    nodes = params[["teff", "logg", "mh"]].drop_duplicates()
    held = nodes.sample(frac=fraction, random_state=seed)
    return params.merge(held.assign(_h=True), how="left", on=["teff", "logg", "mh"])["_h"].eq(True).to_numpy()


def synthetic_inputs(syn, latents, space: str, n_models: int) -> list[np.ndarray]:
    """The synthetic inputs of `space`'s ensembles (`variants.SPACES`), one per autoencoder (the spectra: one)."""
    return [syn.flux] if space == "spectra" else [latents.get("syn", space, i) for i in range(n_models)]


def with_photon_noise(flux: np.ndarray, snr, seed: int) -> np.ndarray:
    """`flux` (normalised spectra, one per row) with photon noise: σ = √(f · f_median) / (S/N), so
    that each spectrum's S/N at its median flux is one drawn (with replacement, seeded) from `snr`,
    and the variance grows as f; clipped to [0, 1] as observed spectra are (`prepare.NORMALISATION`).
    One realisation per spectrum, drawn once (not anew each epoch); float32."""
    snr = np.asarray([] if snr is None else snr, np.float32)
    if snr.size == 0 or not np.all(np.isfinite(snr) & (snr > 0)):
        raise ValueError(f"direct_noise='observed' needs the observed stars' S/N (positive numbers, the observed "
                         f"set's attribute snr written by prepare-observed), got {snr.tolist()[:5]}")
    rng = np.random.default_rng(seed)
    drawn = rng.choice(snr, size=len(flux))[:, None]
    flux = np.asarray(flux, np.float32)
    sigma = np.sqrt(np.clip(flux, 0, None) * np.median(flux, axis=1, keepdims=True)) / drawn
    return np.clip(flux + sigma * rng.standard_normal(flux.shape, np.float32), 0, 1)


def train_space(syn, latents, space: str, n_models: int, s: CNNSettings, seed: int,
                progress: bool = False, snr: np.ndarray | None = None) -> list[Ensemble]:
    """The ensembles of one input space, trained on the synthetic rows outside `holdout_mask`,
    each seeded from the run's SeedSequence by space and autoencoder. ``direct_noise="observed"``:
    the spectra space trains on `with_photon_noise` at the observed stars' S/N `snr`."""
    held = holdout_mask(syn.parameters, stage_seed(seed, "holdout"), s.holdout_fraction)
    inputs = synthetic_inputs(syn, latents, space, n_models)
    if space == "spectra" and s.direct_noise == "observed":
        inputs = [with_photon_noise(inputs[0], snr, stage_seed(seed, "cnn", len(SPACES)))]  # a branch no space uses
    return [train_ensemble(x[~held], syn.labels[~held], s, stage_seed(seed, "cnn", SPACES.index(space), a),
                           pool=8 if space == "spectra" else 0, progress=progress)
            for a, x in enumerate(inputs)]


def train_variants(syn, obs, latents, n_models: int, s: CNNSettings, seed: int, progress: bool = False,
                   trained: dict | None = None) -> dict:
    """Every variant of `variants.VARIANTS`: its estimates and flags, its held-out check and the training curves.

    A variant's CNNs train on the synthetic inputs of its training space (outside
    `holdout_mask`) and predict the observed inputs of its prediction space (`latents`: a
    `rundir.Latents`). Variants that train on the same space share its ensembles
    (`train_space`); `trained` {space: [Ensemble]} holds spaces already trained by
    `train_space` with these inputs, settings and seed (e.g. the `variants.SYNTHETIC_SPACES`
    of stage ``cnn-synthetic``). The held-out check applies each variant as it is applied to the
    stars: its CNNs see the held-out synthetic spectra through its prediction space, so
    ``method``'s shows what the pairing costs with no gap at all (fine-tuned latents into CNNs
    trained on the original ones); it has both uncertainty methods (column ``uncertainty``).
    ``autoencoders`` holds `autoencoder_report` per variant on the observed stars and the held-out nodes.
    Returns ``{"estimates": {variant: (est, flags)}, "holdout": DataFrame, "autoencoders": DataFrame,
    "ensembles": {space: [Ensemble]}, "histories": {space: [...]}}``.
    """
    held = holdout_mask(syn.parameters, stage_seed(seed, "holdout"), s.holdout_fraction)
    truth = pd.DataFrame(syn.labels[held], columns=[PUBLISHED_NAMES[k] for k in PARAMETERS]).add_prefix("true_")
    ensembles, out, holdout, held_est, reports = dict(trained or {}), {}, [], {}, []
    for variant, v in tqdm(VARIANTS.items(), desc="CNN variants", disable=not progress):
        space = v.train
        if space not in ensembles:
            snr = obs.attrs.get("snr") if s.direct_noise == "observed" else None
            ensembles[space] = train_space(syn, latents, space, n_models, s, seed, progress, snr)
        ens = ensembles[space]
        out[variant] = estimate_variant(ensembles, latents, obs, variant, s.uncertainty)
        held_inputs = [x[held] for x in synthetic_inputs(syn, latents, v.apply, len(ens))] if held.any() else []
        for unc in ("members", "residuals") if held.any() else ():
            if (space, v.apply, unc) not in held_est:  # variants of one pairing share their CNNs and inputs
                held_est[space, v.apply, unc] = estimate(ens, held_inputs, np.flatnonzero(held), unc)[0]
            holdout.append(held_est[space, v.apply, unc].assign(variant=variant, uncertainty=unc).join(truth))
        reports.append(autoencoder_report(ens, observed_inputs(v, latents, obs, len(ens)))
                       .assign(variant=variant, where="observed"))
        if held.any():
            reports.append(autoencoder_report(ens, held_inputs, syn.labels[held]).assign(variant=variant,
                                                                                        where="holdout"))
    empty = pd.DataFrame(columns=[*estimate_columns(), "variant", "uncertainty", *truth.columns])
    front = ["variant", "where", "autoencoder", "parameter"]
    report = pd.concat(reports, ignore_index=True)
    return {"estimates": out, "holdout": pd.concat(holdout, ignore_index=True) if holdout else empty,
            "autoencoders": report[front + [c for c in report if c not in front]], "ensembles": ensembles,
            "histories": {space: [e.history for e in ens] for space, ens in ensembles.items()}}


def estimate_variant(ensembles: dict, latents, obs, variant: str, uncertainty: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`variant`'s estimates and flags for the observed set `obs`: the ensembles of its training
    space (`ensembles[space]`, one per autoencoder) applied to the observed inputs of its
    prediction space (`latents`: a `rundir.Latents`; the spectra for ``direct``). `run` and
    `predict` both estimate through here."""
    v = get_variant(variant)
    ens = ensembles[v.train]
    return estimate(ens, observed_inputs(v, latents, obs, len(ens)), obs.parameters["karmn"], uncertainty)


def observed_inputs(v, latents, obs, n_models: int) -> list[np.ndarray]:
    """The observed inputs variant `v`'s ensembles predict from: latents of its prediction space, or the spectra."""
    return [obs.flux] if v.apply == "spectra" else [latents.get("obs", v.apply, i) for i in range(n_models)]
