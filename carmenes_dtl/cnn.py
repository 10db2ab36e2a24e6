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
from .autoencoder import validation_slice
from .config import OPTIONS, PAPER_RANGES, PARAMETERS, PUBLISHED_NAMES, CNNSettings, estimate_columns, stage_seed

def _glorot(fan_in: int, fan_out: int):
    limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MemberConv1D(keras.layers.Layer):
    """`members` independent Conv1D layers (stride 1), members first.

    Input (batch, length, channels) is shared by all members (a star seen by every CNN);
    (members, batch, length, channels) gives each member its own rows (training, `member_graph`).
    Output: (members, batch, length', filters), with length' = length - k + 1
    (``padding="valid"``) or length (``"same"``: zeros after the end, k - 1 - (k - 1) // 2 of
    them, and (k - 1) // 2 before, as Keras does); with `pool` > 0, max-pooled by `pool`
    (non-overlapping, a partial last bin dropped) after the activation.
    One input channel, unpooled: one product of the k shifted inputs (so is its weight
    gradient); pooled: each tap an outer product, the pooled output recomputed at each bin's
    maximum (ReLU is monotonic, so the same values), which makes the gradient a function of
    the pooled positions only instead of the whole unpooled tensor (the direct CNN: 20
    members x 64 filters x 437 pixels per row).
    More channels: all taps are one batched matrix product over the unshifted input, and the
    taps' outputs (the smaller tensor) are shifted and summed.
    """

    def __init__(self, members: int, filters: int, kernel_size: int = 2, activation="relu", padding: str = "same",
                 pool: int = 0, **kwargs):
        super().__init__(**kwargs)
        if padding not in OPTIONS["padding"]:
            raise ValueError(f"padding must be one of {OPTIONS['padding']}, got {padding!r}")
        self.members, self.filters, self.kernel_size, self.padding = members, filters, kernel_size, padding
        self.pool = int(pool)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        c = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.members, self.kernel_size, c, self.filters), name="kernel",
                                      initializer=_glorot(self.kernel_size * c, self.kernel_size * self.filters))
        self.bias = self.add_weight(shape=(self.members, self.filters), initializer="zeros", name="bias")

    def call(self, x):
        m, k, f = self.members, self.kernel_size, self.filters
        shared = len(x.shape) == 3
        length, c = x.shape[-2], x.shape[-1]
        before = (k - 1) // 2 if self.padding == "same" else 0
        n = length if self.padding == "same" else length - k + 1
        out = self.bias[:, None, None, :]
        if c == 1:  # out[l] = sum_j x[l + j - before] * w_j
            x = ops.pad(x[None] if shared else x, [(0, 0), (0, 0), (before, n + k - 1 - before - length), (0, 0)])
            if not self.pool:  # the k shifted inputs side by side: one product, whose weight gradient is one too
                shifted = ops.concatenate([x[:, :, j:j + n, :] for j in range(k)], axis=-1)
                return self.activation(ops.einsum("blj,mjf->mblf" if shared else "mblj,mjf->mblf",
                                                  shifted[0] if shared else shifted, self.kernel[:, :, 0, :]) + out)
            # outer products, not the product above: XLA fuses them into the search for each bin's
            # maximum (the direct CNN's train step: 180-190 ms, against 220-235 ms with the product)
            taps = [self.kernel[:, j, 0][:, None, None, :] for j in range(k)]
            full = sum((x[:, :, j:j + n, :] * taps[j] for j in range(k)), out)
            at = ops.argmax(self._bins(ops.stop_gradient(full)), axis=3)  # (m, batch, bins, f)
            at = at + ops.arange(at.shape[2])[:, None] * self.pool
            return self.activation(sum((ops.take_along_axis(x, at + j, axis=2) * taps[j] for j in range(k)), out))
        taps = ops.reshape(ops.transpose(self.kernel, (0, 2, 1, 3)), (m, c, k * f))  # [m, c, (tap, filter)]
        z = ops.einsum("blc,mcg->mblg" if shared else "mblc,mcg->mblg", x, taps)
        z = ops.reshape(z, (m, -1, length, k, f))
        for j in range(k):  # out[l] = sum_j z_j[l + j - before], zero outside the input
            start, stop = max(0, j - before), min(length, n + j - before)
            lo = max(0, before - j)
            part = z[:, :, start:stop, j, :]
            hi = n - lo - (stop - start)
            out = out + (ops.pad(part, [(0, 0), (0, 0), (lo, hi), (0, 0)]) if lo or hi else part)
        out = self.activation(out)
        return ops.max(self._bins(out), axis=3) if self.pool else out

    def _bins(self, t):
        """(members, batch, length, f) -> (members, batch, bins, pool, f), a partial last bin dropped."""
        bins = t.shape[2] // self.pool
        return ops.reshape(t[:, :, :bins * self.pool], (self.members, -1, bins, self.pool, t.shape[3]))

    def get_config(self):
        return {**super().get_config(), "members": self.members, "filters": self.filters,
                "kernel_size": self.kernel_size, "padding": self.padding, "pool": self.pool,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MemberDense(keras.layers.Layer):
    """`members` independent Dense layers, members first: (members, batch, ...) -> (members, batch,
    units); trailing axes are flattened (a member's Flatten), ``out=True`` returns (batch, members)
    from a one-unit layer."""

    def __init__(self, members: int, units: int, activation=None, out: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.members, self.units, self.out = members, units, out
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        n_in = int(np.prod(input_shape[2:]))
        self.kernel = self.add_weight(shape=(self.members, n_in, self.units), name="kernel",
                                      initializer=_glorot(n_in, self.units))
        self.bias = self.add_weight(shape=(self.members, self.units), initializer="zeros", name="bias")

    def call(self, x):
        if len(x.shape) > 3:
            x = ops.reshape(x, (self.members, -1, int(np.prod(x.shape[2:]))))
        y = self.activation(ops.einsum("mbi,mio->mbo", x, self.kernel) + self.bias[:, None])
        return ops.transpose(y[..., 0]) if self.out else y

    def get_config(self):
        return {**super().get_config(), "members": self.members, "units": self.units, "out": self.out,
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class BinPool(keras.layers.Layer):
    """Non-overlapping mean over bins of `size` along the length axis (-2); a partial last bin is dropped."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        n = x.shape[-2] // self.size
        return ops.mean(ops.reshape(x[..., :n * self.size, :], (-1, n, self.size, x.shape[-1])), axis=-2)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="carmenes_dtl")
class MembersFirst(keras.layers.Layer):
    """(batch, members, ...) -> (members, batch, ...): a training batch holding one row per member."""

    def call(self, x):
        return ops.swapaxes(x, 0, 1)


def build_cnn(n_inputs: int, widths: tuple[int, int, int] = (64, 32, 64), *, pool: int = 0, members: int = 1,
              padding: str = "same") -> keras.Model:
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
    28 M weights per member.
    """
    nf1, nf2, nu = widths
    inputs = keras.Input((n_inputs, 1))
    x = BinPool(8, name="bin8")(inputs) if pool else inputs
    for filters, name in ((nf1, "conv1"), (nf2, "conv2")):
        x = MemberConv1D(members, filters, padding=padding, pool=pool, name=name)(x)
    for width, name in ((256, "dense256"), (128, "dense128"), (nu, "tuned"), (1, "out")):
        x = MemberDense(members, width, activation=None if name == "out" else "relu", out=name == "out", name=name)(x)
    return keras.Model(inputs, x)


@keras.saving.register_keras_serializable(package="carmenes_dtl")
def members_mse(y_true, y_pred):
    """Per row, the sum over members of their squared errors: averaged over a batch, the sum of
    the members' own MSE, so each member's gradient is that of its own Keras fit."""
    return ops.sum(ops.square(y_true - y_pred), axis=-1)


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
    scaler, xs, mean, std, member_splits, groups = _setup(x, y, s, seed, parameters)
    models, hists = [], []
    keras.utils.set_random_seed(seed)
    for widths, params in groups.items():
        model = build_cnn(x.shape[1], widths, pool=pool, members=len(params) * s.n_per_model, padding=s.padding)
        binned = ops.convert_to_numpy(model.get_layer("bin8")(xs)) if pool else xs
        fit, val = [], []  # per member (column i * n_per_model + k): (rows, targets)
        for p in params:
            yp = ((y[:, parameters.index(p)] - mean[p]) / std[p]).astype(np.float32)
            for k, (tr, _) in enumerate(member_splits[p]):
                fit_rows, held = validation_slice(tr, s.patience, seed + k)
                fit.append((fit_rows, yp[fit_rows]))
                val += [(held[0], yp[held[0]])] if held else []
        hists.append(training.fit(member_graph(model, s.learning_rate), *_member_rows(binned, fit),
                                  _member_rows(binned, val) if val else None, s.epochs, s.batch_size, s.patience,
                                  (seed, len(models)), progress=progress, desc="CNN ensemble",
                                  members=len(fit)))
        models.append((tuple(params), model))
    return _assemble(Ensemble, x, y, scaler, mean, std, models, hists, member_splits, parameters)


def _setup(x: np.ndarray, y: np.ndarray, s: CNNSettings, seed: int, parameters: tuple[str, ...]):
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


def _assemble(kind: type, x: np.ndarray, y: np.ndarray, scaler, mean: dict, std: dict, models: list, hists: list,
             member_splits: dict, parameters: tuple[str, ...]) -> Ensemble:
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
    return pd.DataFrame(out)[estimate_columns()], pd.DataFrame(flags)


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


#: Synthetic input spaces the CNNs train on: latents before/after fine-tuning, or the spectra (None).
SPACES = ("pre", "ft", None)
#: The spaces that see only the synthetic set and the original encoders: their ensembles are
#: the same for every observed set (the pipeline's stage ``cnn-synthetic``).
SYNTHETIC_SPACES = ("pre", None)


def synthetic_inputs(syn, latents, space: str | None, n_models: int) -> list[np.ndarray]:
    """The synthetic inputs of `space`'s ensembles, one per autoencoder (the spectra: one)."""
    return [syn.flux] if space is None else [latents[f"syn_{space}_{i}"] for i in range(n_models)]


def train_space(syn, latents, space: str | None, n_models: int, s: CNNSettings, seed: int,
                progress: bool = False) -> list[Ensemble]:
    """The ensembles of one input space, trained on the synthetic rows outside `holdout_mask`,
    each seeded from the run's SeedSequence by space and autoencoder."""
    held = holdout_mask(syn.parameters, stage_seed(seed, "holdout"), s.holdout_fraction)
    return [train_ensemble(x[~held], syn.labels[~held], s, stage_seed(seed, "cnn", SPACES.index(space), a),
                           pool=0 if space else 8, progress=progress)
            for a, x in enumerate(synthetic_inputs(syn, latents, space, n_models))]


def train_variants(syn, obs, latents, n_models: int, s: CNNSettings, seed: int, progress: bool = False,
                   trained: dict | None = None) -> dict:
    """Every variant of `transfer.VARIANTS`: its estimates and flags, its held-out check and the training curves.

    A variant's CNNs train on the synthetic half of its `transfer.latent_pair` (outside
    `holdout_mask`) and predict the observed half. Variants that train on the same space
    (`SPACES`) share its ensembles (`train_space`); `trained` {space: [Ensemble]} holds
    spaces already trained by `train_space` with these inputs, settings and seed (e.g. the
    `SYNTHETIC_SPACES` of stage ``cnn-synthetic``). The held-out table has both uncertainty
    methods (column ``uncertainty``).
    Returns ``{"estimates": {variant: (est, flags)}, "holdout": DataFrame, "ensembles": {space: [Ensemble]},
    "histories": {space: [...]}}``.
    """
    from .transfer import VARIANTS

    held = holdout_mask(syn.parameters, stage_seed(seed, "holdout"), s.holdout_fraction)
    truth = pd.DataFrame(syn.labels[held], columns=[PUBLISHED_NAMES[k] for k in PARAMETERS]).add_prefix("true_")
    ensembles, out, holdout, held_est = dict(trained or {}), {}, [], {}
    for variant, (space, _) in tqdm(VARIANTS.items(), desc="CNN variants", disable=not progress):
        if space not in ensembles:
            ensembles[space] = train_space(syn, latents, space, n_models, s, seed, progress)
        ens = ensembles[space]
        out[variant] = estimate_variant(ensembles, latents, obs, variant, s.uncertainty)
        for unc in ("members", "residuals") if held.any() else ():
            if (space, unc) not in held_est:  # variants of one space share their CNNs and synthetic inputs
                inputs = [x[held] for x in synthetic_inputs(syn, latents, space, len(ens))]
                held_est[space, unc] = estimate(ens, inputs, np.flatnonzero(held), unc)[0]
            holdout.append(held_est[space, unc].assign(variant=variant, uncertainty=unc).join(truth))
    empty = pd.DataFrame(columns=[*estimate_columns(), "variant", "uncertainty", *truth.columns])
    return {"estimates": out, "holdout": pd.concat(holdout, ignore_index=True) if holdout else empty,
            "ensembles": ensembles,
            "histories": {space or "spectra": [e.history for e in ens] for space, ens in ensembles.items()}}


def estimate_variant(ensembles: dict, latents, obs, variant: str, uncertainty: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`variant`'s estimates and flags for the observed set `obs`: the ensembles of its synthetic
    space (`ensembles[space]`, one per autoencoder) applied to the observed latents of its
    encoder (``latents["obs_<tag>_<i>"]``) or, for ``direct``, to the spectra. `run` and
    `predict` both estimate through here."""
    from .transfer import VARIANTS

    space, tag = VARIANTS[variant]
    ens = ensembles[space]
    inputs = [obs.flux] if tag is None else [latents[f"obs_{tag}_{i}"] for i in range(len(ens))]
    return estimate(ens, inputs, obs.parameters["karmn"], uncertainty)
