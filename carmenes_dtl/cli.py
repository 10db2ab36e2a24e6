"""`carmenes-dtl`: one subcommand per stage, plus `run` for the whole method."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .config import DEMO_SIZES, GAP_LEVELS, PROFILES, STAR_SOURCES, VSINI_GRID, Window
from .snapshots import snapshot


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit status 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


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

    out = write_demo(a.out, a.seed, a.n_stars, a.gap_mix or a.gap, a.size, progress=not a.quiet, stars=a.stars)
    print(f"demo survey written to {out} (phoenix/, carmenes/, truth.csv)")


def cmd_prepare_synthetic(a):
    import pandas as pd

    from . import grid, prepare

    nodes = None
    if a.grid == "paper":
        nodes = grid.paper_grid()
    elif a.grid:
        nodes = pd.read_csv(a.grid)
        missing = [c for c in grid.AXES if c not in nodes]
        if missing:
            raise ValueError(f"{a.grid}: grid CSV lacks column(s) {', '.join(missing)} (needs teff, logg, mh; "
                             f"vsini optional)")
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
    path, excluded = prepare.prepare_observed(a.carmenes_dir, a.out, a.window, template, strict=a.strict,
                                              progress=not a.quiet, scheduler=a.scheduler)
    print(f"wrote {path}; excluded {len(excluded)} file(s)")
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

    r = pipeline.Runner(a.out, PROFILES[a.profile], a.seed, data_parallel=a.data_parallel)
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
    info = pipeline.run(a.out, inputs, a.profile, a.seed, progress=not a.quiet, scheduler=a.scheduler,
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

    paths = experiment.experiment(a.out, a.settings, a.seeds, a.profile, a.strength, a.jobs, progress=not a.quiet)
    for path in paths.values():
        print(f"wrote {path}")
    if a.results:
        for path in experiment.publish(a.out, a.results, ["carmenes-dtl", *a.argv]):
            print(f"published {path}")


def cmd_predict(a):
    from . import bundle

    est, flags = bundle.predict(a.model, a.observed, a.variant)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    est.to_csv(a.out, index=False)
    flagged = a.out.with_name(f"{a.out.stem}_flags{a.out.suffix}")
    flags.to_csv(flagged, index=False)
    n_out = int(flags.drop(columns="karmn").any(axis=1).sum())
    print(f"estimates of {len(est)} star(s) ({a.variant}): {a.out}; {n_out} outside the training grid: {flagged}")


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


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="carmenes-dtl", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    win = argparse.ArgumentParser(add_help=False)
    win.add_argument("--window", type=_window, default=Window(), help="start,stop in Å (default 8800,8835)")
    dask = argparse.ArgumentParser(add_help=False)
    dask.add_argument("--scheduler", type=_scheduler, default=None,
                      help="threads, processes or a Dask scheduler address (tcp://host:8786); "
                           "default: an active distributed Client, else threads")

    s = sub.add_parser("demo-data", parents=[quiet], help="write the demo survey (mock archives + truth.csv)")
    s.add_argument("out", type=Path)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--n-stars", type=_positive)
    _demo_options(s, "paper", "published")
    s.add_argument("--size", default="quick", choices=list(DEMO_SIZES))
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("prepare-synthetic", parents=[quiet, win, dask], help="PHOENIX HiRes tree -> synthetic set (HDF5)")
    s.add_argument("--phoenix-dir", type=Path, required=True, help="folder holding PHOENIX-ACES-AGSS-COND-2011/")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--vsini", type=_vsini, default=list(VSINI_GRID), help="km/s, comma-separated")
    s.add_argument("--grid", help="'paper' (interpolate to the paper's nodes) or a CSV with teff,logg,mh")
    s.set_defaults(func=cmd_prepare_synthetic)

    s = sub.add_parser("prepare-observed", parents=[quiet, win, dask], help="CARMENES VIS files -> observed set (HDF5)")
    s.add_argument("--carmenes-dir", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--template", help="synthetic set (prepare-synthetic, same --window) giving the RV templates "
                                      "and normalisation references; 'demo' for the demo survey's model")
    s.add_argument("--strict", action="store_true", help="stop at the first bad file instead of excluding it")
    s.set_defaults(func=cmd_prepare_observed)

    s = sub.add_parser("fetch-phoenix", help="download the PHOENIX nodes around the paper grid (~6 MB each)")
    s.add_argument("--cache", type=Path)
    s.set_defaults(func=cmd_fetch_phoenix)

    s = sub.add_parser("import-grid", help="snapshot the paper's training grid from its published .npy")
    s.add_argument("npy", type=Path)
    s.add_argument("--out", type=Path, default=None)
    s.set_defaults(func=cmd_import_grid)

    s = sub.add_parser("gap", help="synthetic-gap metrics and figures for two sets")
    s.add_argument("synthetic", type=Path)
    s.add_argument("observed", type=Path)
    s.add_argument("--latent", type=Path, help="a .keras autoencoder: compare latents instead of spectra")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--projections", type=_projections, default="pca,tsne,umap", metavar="pca,tsne,umap",
                   help="2-D projection figures to draw, comma-separated (default all three; umap compiles for ~10 s)")
    s.set_defaults(func=cmd_gap)

    s = sub.add_parser("train", help="autoencoder search, training and fine-tuning in a run folder")
    s.add_argument("--out", type=Path, required=True, help="run folder holding synthetic.h5 and observed.h5")
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    s.add_argument("--seed", type=int, default=42)
    _parallel_option(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("run", parents=[quiet, dask], help="the whole method, on the demo survey or your sets")
    s.add_argument("--demo", action="store_true", help="generate and use the demo survey (default)")
    s.add_argument("--synthetic", type=Path)
    s.add_argument("--observed", type=Path)
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    s.add_argument("--seed", type=int, default=42)
    _demo_options(s, None, None)
    s.add_argument("--window", type=_window, help="start,stop in Å (default: the profile's, 8800,8835)")
    s.add_argument("--out", type=Path, required=True)
    _parallel_option(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("experiment", parents=[quiet], help="gap settings x seeds x variants: tidy tables, "
                                                         "bootstrap intervals, figure")
    s.add_argument("--out", type=Path, required=True, help="folder of the cells (<setting>/seed<S>/) and tables")
    s.add_argument("--settings", type=_keys, default=["none", "shared", "degenerate", "both"],
                   help="comma-separated: none, shared, degenerate, both (each family at --strength) or gap "
                        "levels (mild, paper, strong); default none,shared,degenerate,both")
    s.add_argument("--seeds", type=_seeds, default=[1, 2, 3, 4, 5], help="comma-separated (default 1,2,3,4,5)")
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    s.add_argument("--strength", type=float, default=0.5, help="S of the named settings (default 0.5, the paper level)")
    s.add_argument("--jobs", type=_positive, default=os.cpu_count() or 1,
                   help="cells run in parallel processes (default: the number of CPUs)")
    s.add_argument("--results", type=Path, help="also publish the table and its intervals to this .csv "
                                                "(and <stem>_intervals.csv) with a provenance header")
    s.set_defaults(func=cmd_experiment)

    s = sub.add_parser("predict", help="estimate the stars of an observed set with a finished run's model")
    s.add_argument("--model", type=Path, required=True, help="model bundle folder (RUN/model)")
    s.add_argument("--observed", type=Path, required=True, help="observed set (prepare-observed) on the model's window")
    s.add_argument("--out", type=Path, required=True, help="estimates CSV; flags go to <stem>_flags.csv beside it")
    s.add_argument("--variant", default="method", help="method (default, the paper's), finetuned_both, no_finetune "
                                                        "or direct: whose CNNs estimate")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("fetch-literature", help="literature snapshot from VizieR or a folder of VizieR CSVs")
    s.add_argument("--from-csv", type=Path, help="folder of VizieR CSV exports (offline)")
    s.add_argument("--catalogue", type=_keys, help="comma-separated catalogue keys (default all; mar21, pass20, ...); "
                   "the benchmarks (interferometric, fgk_companions) only with --from-csv")
    s.add_argument("--out", type=Path, default=None)
    s.set_defaults(func=cmd_fetch_literature)

    s = sub.add_parser("validate", help="compare an estimates file with the literature")
    s.add_argument("estimates", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--literature", type=Path, default=snapshot("literature"),
                   help="snapshot folder (default: the one shipped with the package)")
    s.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line a published table records
    try:
        args.func(args)
    except (OSError, ValueError) as err:  # ArchiveError and h5py's errors included
        message = " ".join(str(err).split())
        print(f"carmenes-dtl {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
