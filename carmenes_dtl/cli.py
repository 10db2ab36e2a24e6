"""`carmenes-dtl`: one subcommand per stage, plus `run` for the whole method."""
from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from pathlib import Path

from . import __version__
from .config import DEMO_SIZES, GAP_LEVELS, PROFILES, STAR_SOURCES, VSINI_GRID, Window
from .snapshots import snapshot
from .rundir import DEMO_OUTPUTS, DEMO_TRUTH
from .variants import VARIANTS


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit status 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that gives every option's default (unless its text already does) and keeps the
    examples' lines as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        if isinstance(default, (list, tuple)):
            default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        return f"{text} (default: {str(default).replace('%', '%%')})"


#: One example per subcommand, shown under its --help (tests parse each).
EXAMPLES = {
    "demo-data": "carmenes-dtl demo-data demo --n-stars 16 --gap mild",
    "prepare-synthetic": "carmenes-dtl prepare-synthetic --phoenix-dir demo/phoenix --out syn.h5 --vsini 2,10,30",
    "prepare-observed": "carmenes-dtl prepare-observed --carmenes-dir demo/carmenes --out obs.h5 --template syn.h5",
    "fetch-phoenix": "carmenes-dtl fetch-phoenix --cache data/cache",
    "import-grid": "carmenes-dtl import-grid phoenix_grid_parameters.npy",
    "gap": "carmenes-dtl gap syn.h5 obs.h5 --out gap --projections pca",
    "train": "carmenes-dtl train --out run --profile tiny",
    "run": "carmenes-dtl run --demo --profile tiny --out run",
    "experiment": "carmenes-dtl experiment --out exp --profile tiny --seeds 1 --settings strong",
    "predict": "carmenes-dtl predict --model run/model --observed obs.h5 --out estimates.csv",
    "fetch-literature": "carmenes-dtl fetch-literature --catalogue mar21,pass20",
    "validate": "carmenes-dtl validate run/estimates.csv --out validation",
}

#: What the demo survey writes in its folder: `demo-data --overwrite` removes these first.

#: `--profile`'s help: what each settings preset is for.
PROFILE_HELP = ("settings preset: tiny (a smoke test, about a minute on 2 CPUs; not science), quick (the book's "
                "demo run, minutes), paper (the authors' settings; hours)")


def _vsini(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in km/s, got {text!r}") from None
    if not all(0 < v < 500 for v in values):
        raise argparse.ArgumentTypeError(f"vsini values must lie in (0, 500) km/s, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _file_out(text: str) -> Path:
    """A file to write: refused when it names a folder."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    return Path(text)


def _folder_out(text: str) -> Path:
    """A folder to write in (made if missing): refused when it names a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return Path(text)


def _folder_in(text: str) -> Path:
    """An existing folder to read."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'not a folder' if Path(text).exists() else 'folder not found'}")
    return Path(text)


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _projections(text: str) -> tuple[str, ...]:
    from .gap import PROJECTIONS

    methods = tuple(dict.fromkeys(_keys(text)))  # in order, each once
    if not methods or not set(methods) <= set(PROJECTIONS):
        raise argparse.ArgumentTypeError(f"projections must be among {', '.join(PROJECTIONS)}, got {text!r}")
    return methods


def _scheduler(text: str) -> str:
    from .scheduling import check

    try:
        return check(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _window(text: str) -> Window:
    try:
        return Window.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _gap_mix(text: str):
    from .demo_gap import GapMix

    try:
        return GapMix.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _gap_level(text: str):
    if text not in GAP_LEVELS:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, GAP_LEVELS))})")
    return _gap_mix(text)


def _demo_options(s: argparse.ArgumentParser, default_gap: str | None, default_stars: str | None) -> None:
    """--gap LEVEL or --gap-mix degenerate=X,shared=Y, and --stars: the demo survey's settings."""
    scales = [f"{g:g}" for g in GAP_LEVELS.values()]
    gap = s.add_mutually_exclusive_group()
    gap.add_argument("--gap", type=_gap_level, metavar="{" + ",".join(GAP_LEVELS) + "}", default=default_gap,
                     help=f"both gap families at {', '.join(scales[:-1])} or {scales[-1]} (default paper)")
    gap.add_argument("--gap-mix", type=_gap_mix, metavar="degenerate=X,shared=Y",
                     help="each gap family's scale (a family left out is 0)")
    s.add_argument("--stars", choices=STAR_SOURCES, default=default_stars,
                   help="demo truths: resampled published estimates inside the grid (default) or the old "
                        "uniform 3000-4200 K")


def _parallel_option(s: argparse.ArgumentParser) -> None:
    s.add_argument("--data-parallel", action="store_true",
                   help="train and fine-tune the autoencoders data-parallel over every device of the JAX backend "
                        "(keras.distribution.DataParallel; the batch size must be a multiple of the device count)")


def cmd_demo_data(a):
    from .demo import write_demo

    if a.out.is_dir() and any(a.out.iterdir()):
        if not a.overwrite:
            raise ValueError(f"{a.out}: folder not empty; give a new or empty folder, or --overwrite to replace the "
                             f"demo survey's {', '.join(DEMO_OUTPUTS)} there")
        for name in DEMO_OUTPUTS:
            path = a.out / name.rstrip("/")
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    out = write_demo(a.out, a.seed, a.n_stars, a.gap_mix or a.gap, a.size, progress=not a.quiet, stars=a.stars)
    print(f"demo survey written to {out} ({', '.join(DEMO_OUTPUTS)})")


def cmd_prepare_synthetic(a):
    from . import grid, prepare

    nodes = None
    if a.grid == "paper":
        nodes = grid.paper_grid()
    elif a.grid:
        nodes = grid.read_nodes(a.grid)
    path = prepare.prepare_synthetic(a.phoenix_dir, a.out, a.vsini, a.window, nodes, progress=not a.quiet,
                                     scheduler=a.scheduler)
    print(f"wrote {path}")


def cmd_prepare_observed(a):
    from . import prepare

    if a.template == "demo":
        from .demo_lines import rv_templates

        template = prepare.Templates(*rv_templates(a.window))
    else:
        template = prepare.template_from_set(Path(a.template)) if a.template else None
    if template is not None:
        print(f"RV templates and normalisation references: {template.source} ({len(template.flux)} spectra)")
    path, excluded = prepare.prepare_observed(a.carmenes_dir, a.out, a.window, template, strict=a.strict,
                                              progress=not a.quiet, scheduler=a.scheduler)
    from . import store

    attrs = store.describe(path)["attrs"]
    print(f"wrote {path}: {len(attrs['files'])} star(s) from {attrs['n_files']} file(s); "
          f"excluded {len(excluded)} file(s)")
    for row in excluded.itertuples():
        print(f"  excluded {row.file}: {row.reason}")


def cmd_fetch_phoenix(a):
    from . import archives, grid

    lattice = grid.bracketing_nodes(grid.paper_nodes())
    print(f"{len(lattice)} archive nodes bracket the paper grid")
    print(f"PHOENIX tree: {archives.fetch_phoenix(lattice, a.cache)}")


def cmd_import_grid(a):
    from . import grid

    print(f"wrote {grid.import_paper_grid(a.npy, a.out or grid.PAPER_GRID_FILE)}")


def cmd_train(a):
    from . import pipeline

    r = pipeline.Runner(a.out, _profile(a), a.seed, scheduler=a.scheduler, data_parallel=a.data_parallel)
    r.autoencoders()
    r.finetune()
    print(f"models in {r.folder.models_dir}")


def cmd_gap(a):
    from . import gap

    result = gap.report(a.synthetic, a.observed, a.out, latent_model=a.latent, seed=a.seed, projections=a.projections)
    print(json.dumps(result["metrics"], indent=1))


def cmd_run(a):
    from . import pipeline
    from .demo_gap import GapMix
    from .rundir import RunFolder

    given = [f"--{k}" for k in ("synthetic", "observed") if getattr(a, k)]
    if a.demo and given:
        raise ValueError(f"--demo makes its own sets: drop {' and '.join(given)}")
    if len(given) == 1:
        raise ValueError(f"only {given[0]} given: give both --synthetic SYN.h5 and --observed OBS.h5, or --demo")
    demo_options = [f"--{k.replace('_', '-')}" for k in ("gap", "gap_mix", "stars") if getattr(a, k)]
    if given and demo_options:
        raise ValueError(f"{demo_options[0]} sets the demo survey: drop it with --synthetic and --observed")
    inputs = (pipeline.SetsInput(a.synthetic, a.observed) if given else
              pipeline.DemoInput(a.gap_mix or a.gap or GapMix.parse("paper"), a.stars or "published"))
    info = pipeline.run(a.out, inputs, _profile(a), a.seed, progress=not a.quiet, scheduler=a.scheduler,
                        data_parallel=a.data_parallel, window=a.window)
    print(f"estimates: {RunFolder(a.out).estimates_file()}")
    if "errors_vs_truth" in info:
        for variant, errs in info["errors_vs_truth"].items():
            print(f"  {variant:14s} " + "  ".join(f"{k} MAE={v['mae']:.3g}" for k, v in errs.items()))


def _seeds(text: str) -> list[int]:
    try:
        return [int(k) for k in _keys(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def cmd_experiment(a):
    from . import experiment

    paths = experiment.experiment(a.out, a.settings, a.seeds, _profile(a), a.strength, a.jobs, progress=not a.quiet,
                                  factorial=a.factorial or bool(a.arms), only=a.arms)
    for path in paths.values():
        print(f"wrote {path}")
    if a.results:
        for path in experiment.publish(a.out, a.results, ["carmenes-dtl", *a.argv]):
            print(f"published {path}")


def cmd_predict(a):
    from . import bundle, cnn, validation

    truth = validation.read_truth(a.truth) if a.truth else None  # a bad table fails before the work
    est, flags = bundle.predict(a.model, a.observed, a.variant)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cnn.write_estimates(est, a.out)
    flagged = a.out.with_name(f"{a.out.stem}_flags{a.out.suffix}")
    flags.to_csv(flagged, index=False)
    n_out = int(flags.drop(columns="karmn").any(axis=1).sum())
    print(f"estimates of {len(est)} star(s) ({a.variant}): {a.out}; {n_out} outside the training grid: {flagged}")
    split = {c.removeprefix("disagree_"): flags[c].mean() for c in flags if c.startswith("disagree_")}
    for line in validation.warnings({"disagreement": {a.variant: split}}, a.variant):
        print(f"carmenes-dtl predict: warning: {line}", file=sys.stderr)
    if truth is not None:
        n_known = int(est["karmn"].isin(truth["karmn"]).sum())
        print(f"errors against {a.truth} ({n_known} of {len(est)} stars have a true row):")
        print("\n".join(validation.error_lines(est, truth)))


def cmd_fetch_literature(a):
    from . import literature

    written = (literature.import_csv_folder(a.from_csv, a.out, a.catalogue) if a.from_csv
               else literature.fetch_vizier(a.out, keys=a.catalogue))
    for path in written:
        print(f"wrote {path}")


def cmd_validate(a):
    from . import validation

    stats = validation.validate(a.estimates, a.out, literature_dir=a.literature).stats
    print(stats.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _profile_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES), help=PROFILE_HELP)
    s.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="overrides",
                   help="replace one setting of the profile, e.g. finetune.learning_rate=1e-3 or cnn.inputs=raw "
                        "(sections ae, cnn, finetune, window; repeatable; recorded in run.json)")
    s.add_argument("--nodes", type=_positive, help="a seeded subset of N (Teff, logg, [M/H]) nodes of the paper's "
                                                  "grid (default: the profile's; paper: all 1767)")


def _profile(a):
    """The profile `--profile`, `--set` and `--nodes` ask for."""
    from .config import with_overrides

    return with_overrides(PROFILES[a.profile], a.overrides + ([f"n_nodes={a.nodes}"] if a.nodes else []))


def _command(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help gives every option's default and, under them, its example."""
    return sub.add_parser(name, formatter_class=Formatter, epilog=f"example:\n  {EXAMPLES[name]}", **kwargs)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="carmenes-dtl", description=__doc__, formatter_class=Formatter,
               epilog="the demo end to end, then its estimates against the literature:\n"
                      f"  {EXAMPLES['run']}\n  {EXAMPLES['validate']}\n"
                      "`carmenes-dtl COMMAND --help` gives each command's options and an example.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    win = argparse.ArgumentParser(add_help=False)
    win.add_argument("--window", type=_window, default=Window(), help="start,stop in Å (default 8800,8835)")
    dask = argparse.ArgumentParser(add_help=False)
    dask.add_argument("--scheduler", type=_scheduler, default=None,
                      help="threads, processes or a Dask scheduler address (tcp://host:8786) for the "
                           "preparation's tasks and (run, train) the autoencoder grid search's fits, which a "
                           "cluster or processes run in parallel and threads one after another; "
                           "default: an active distributed Client, else threads")

    s = _command(sub, "demo-data", parents=[quiet], help=f"write the demo survey (mock archives + {DEMO_TRUTH})")
    s.add_argument("out", type=_folder_out, metavar="OUT",
                   help="new or empty folder for phoenix/, carmenes/, truth.csv and README.txt")
    s.add_argument("--seed", type=int, default=42, help="seed of every draw: same seed, same files")
    s.add_argument("--n-stars", type=_positive, help="demo stars (default: the --size's, quick 60, full 300)")
    _demo_options(s, "paper", "published")
    s.add_argument("--size", default="quick", choices=list(DEMO_SIZES),
                   help="mock PHOENIX tree and star count: " + ", ".join(f"{k} ({v.n_stars} stars)" for k, v in DEMO_SIZES.items()))
    s.add_argument("--overwrite", action="store_true",
                   help=f"in a folder not empty, first remove the demo's own {', '.join(DEMO_OUTPUTS)}")
    s.set_defaults(func=cmd_demo_data)

    s = _command(sub, "prepare-synthetic", parents=[quiet, win, dask], help="PHOENIX HiRes tree -> synthetic set (HDF5)")
    s.add_argument("--phoenix-dir", type=Path, required=True, help="folder holding PHOENIX-ACES-AGSS-COND-2011/")
    s.add_argument("--out", type=_file_out, required=True, help="synthetic set to write (HDF5, e.g. syn.h5)")
    s.add_argument("--vsini", type=_vsini, default=list(VSINI_GRID),
                   help="km/s, comma-separated; ignored for a --grid CSV with a vsini column")
    s.add_argument("--grid", help="'paper' (interpolate to the paper's nodes) or a CSV with teff,logg,mh "
                                  "(and optionally vsini) columns; default: every node of the archive")
    s.set_defaults(func=cmd_prepare_synthetic)

    s = _command(sub, "prepare-observed", parents=[quiet, win, dask], help="CARMENES VIS files -> observed set (HDF5)")
    s.add_argument("--carmenes-dir", type=Path, required=True,
                   help="folder searched (with its subfolders) for CARMENES VIS files (*.fits, *.fits.gz)")
    s.add_argument("--out", type=_file_out, required=True, help="observed set to write (HDF5, e.g. obs.h5)")
    s.add_argument("--template",
                   help="synthetic set (prepare-synthetic, same --window) whose spectra are the RV templates and "
                        "normalisation references. Give the set the model is trained on (for `run`, the run's "
                        "RUN/synthetic.h5; `run` itself does so): the observed spectra are then normalised against "
                        "the spectra the model saw. 'demo': the demo line model's own small grid, for a look at "
                        "the demo survey without a synthetic set; estimates from such a set differ (by up to ~90 K "
                        "in Teff on the demo)")
    s.add_argument("--strict", action="store_true", help="stop at the first bad file instead of excluding it")
    s.set_defaults(func=cmd_prepare_observed)

    s = _command(sub, "fetch-phoenix", help="download the PHOENIX nodes around the paper grid (~6 MB each)")
    s.add_argument("--cache", type=_folder_out,
                   help="download folder (default: $CARMENES_DTL_CACHE, else data/cache under the working folder)")
    s.set_defaults(func=cmd_fetch_phoenix)

    s = _command(sub, "import-grid", help="snapshot the paper's training grid from its published .npy")
    s.add_argument("npy", type=Path, metavar="NPY",
                   help="the paper's phoenix_grid_parameters.npy: an (N, 4) array of Teff, logg, [M/H], vsini")
    s.add_argument("--out", type=_file_out, default=None,
                   help="ECSV to write (default: the package's data/grid/paper_training_grid.ecsv)")
    s.set_defaults(func=cmd_import_grid)

    s = _command(sub, "gap", help="synthetic-gap metrics and figures for two sets")
    s.add_argument("synthetic", type=Path, metavar="SYNTHETIC", help="synthetic set (prepare-synthetic)")
    s.add_argument("observed", type=Path, metavar="OBSERVED", help="observed set (prepare-observed), same window")
    s.add_argument("--latent", type=Path, help="a .keras autoencoder: compare latents instead of spectra")
    s.add_argument("--out", type=_folder_out, required=True, help="folder for gap.json and the figures")
    s.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds and projections")
    s.add_argument("--projections", type=_projections, default="pca,tsne,umap", metavar="pca,tsne,umap",
                   help="2-D projection figures to draw, comma-separated (default all three; umap compiles ~20 s once)")
    s.set_defaults(func=cmd_gap)

    s = _command(sub, "train", parents=[dask], help="autoencoder search, training and fine-tuning in a run folder")
    s.add_argument("--out", type=_folder_out, required=True, help="run folder holding synthetic.h5 and observed.h5")
    _profile_options(s)
    s.add_argument("--seed", type=int, default=42, help="seed of every random draw: same seed, same models")
    _parallel_option(s)
    s.set_defaults(func=cmd_train)

    s = _command(sub, "run", parents=[quiet, dask], help="the whole method, on the demo survey or your sets")
    s.add_argument("--demo", action="store_true", help="generate and use the demo survey (default)")
    s.add_argument("--synthetic", type=Path, help="your synthetic set (prepare-synthetic), with --observed")
    s.add_argument("--observed", type=Path, help="your observed set (prepare-observed, with --template your "
                                                 "--synthetic), with --synthetic")
    _profile_options(s)
    s.add_argument("--seed", type=int, default=42, help="seed of every random draw: same seed, same estimates")
    _demo_options(s, None, None)
    s.add_argument("--window", type=_window, help="start,stop in Å (default: the profile's, 8800,8835)")
    s.add_argument("--out", type=_folder_out, required=True,
                   help="run folder; a run into a folder of an earlier one resumes it")
    _parallel_option(s)
    s.set_defaults(func=cmd_run)

    s = _command(sub, "experiment", parents=[quiet], help="gap settings x seeds x variants: tidy tables, "
                                                         "bootstrap intervals, figure")
    s.add_argument("--out", type=_folder_out, required=True, help="folder of the cells (<setting>/seed<S>/) and tables")
    s.add_argument("--settings", type=_keys, default=["none", "shared", "degenerate", "both"],
                   help="comma-separated: none, shared, degenerate, both (each family at --strength) or gap "
                        "levels (mild, paper, strong); default none,shared,degenerate,both")
    s.add_argument("--seeds", type=_seeds, default=[1, 2, 3, 4, 5], help="comma-separated (default 1,2,3,4,5)")
    _profile_options(s)
    s.add_argument("--strength", type=float, default=0.5, help="S of the named settings (default 0.5, the paper level)")
    s.add_argument("--factorial", action="store_true",
                   help="every arm: fine-tuning (published, quick_v1) x CNN inputs (raw, standardised), "
                        "cells in <arm>/<setting>/seed<S>/")
    s.add_argument("--arms", type=_keys, help="comma-separated arms of --factorial to run now (e.g. published-raw); "
                                              "the others can run later into the same --out")
    s.add_argument("--jobs", type=_positive, default=os.cpu_count() or 1,
                   help="cells run in parallel processes (default: the number of CPUs)")
    s.add_argument("--results", type=_file_out, help="also publish the table and its intervals to this .csv "
                                                "(and <stem>_intervals.csv) with a provenance header")
    s.set_defaults(func=cmd_experiment)

    s = _command(sub, "predict", help="estimate the stars of an observed set with a finished run's model")
    s.add_argument("--model", type=Path, required=True, help="model bundle folder (RUN/model)")
    s.add_argument("--observed", type=Path, required=True, help="observed set (prepare-observed) on the model's window")
    s.add_argument("--out", type=_file_out, required=True, help="estimates CSV; flags go to <stem>_flags.csv beside it")
    s.add_argument("--truth", type=Path, help="CSV of true parameters (karmn, Teff, logg, [M/H], vsini; e.g. a demo "
                                              "survey's truth.csv): print MAE, bias and scatter per parameter")
    s.add_argument("--variant", default="method", choices=list(VARIANTS),
                   help="whose CNNs estimate: method (the paper's pairing) or another variant (book, chapter 4)")
    s.set_defaults(func=cmd_predict)

    s = _command(sub, "fetch-literature", help="literature snapshot from VizieR or a folder of VizieR CSVs")
    s.add_argument("--from-csv", type=Path, help="folder of VizieR CSV exports (offline); default: query VizieR")
    s.add_argument("--catalogue", type=_keys, help="comma-separated catalogue keys (default all; mar21, pass20, ...); "
                   "the benchmarks (interferometric, fgk_companions) only with --from-csv")
    s.add_argument("--out", type=_folder_out, default=None,
                   help="snapshot folder to write (default: the package's data/literature)")
    s.set_defaults(func=cmd_fetch_literature)

    s = _command(sub, "validate", help="compare an estimates file with the literature")
    s.add_argument("estimates", type=Path, metavar="ESTIMATES",
                   help="estimates CSV in the published format (a run's estimates.csv, predict's --out)")
    s.add_argument("--out", type=_folder_out, required=True, help="folder for the statistics, findings and figures")
    s.add_argument("--literature", type=_folder_in, default=snapshot("literature"),
                   help="literature snapshot folder (default: the one shipped with the package)")
    s.set_defaults(func=cmd_validate)
    return p


def _message(err: Exception) -> str:
    """One line for an error: an operating-system error as ``PATH: what is wrong`` (for a file
    standing where a folder is needed, that file), any other as its text."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        path = Path(os.fsdecode(err.filename))
        if err.errno in (errno.EEXIST, errno.ENOTDIR):
            blocking = next((p for p in (path, *path.parents) if p.is_file()), None)
            if blocking is not None:
                return f"{blocking}: a file stands where a folder is needed"
        if err.errno == errno.EISDIR:
            return f"{path}: a folder, not a file"
        return f"{path}: {err.strerror}" + (f" (renaming to {os.fsdecode(err.filename2)})" if err.filename2 else "")
    return " ".join(str(err).split())


#: What an interrupted command says about starting again (others: the same command starts over).
RESUME = {
    "run": "run the same command again to resume (finished stages are kept)",
    "train": "run the same command again to resume (finished stages are kept)",
    "experiment": "run the same command again to resume (finished cells and stages are kept)",
    "demo-data": "the folder is incomplete: run the same command again with --overwrite",
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line a published table records
    try:
        args.func(args)
    except (OSError, ValueError) as err:  # ArchiveError and h5py's errors included
        print(f"carmenes-dtl {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: outputs are written under temporary names until complete
        hint = RESUME.get(args.command, "run the same command again")
        newline = "\n" if sys.stderr.isatty() else ""  # after the terminal's ^C or a progress bar
        print(f"{newline}carmenes-dtl {args.command}: interrupted; {hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
