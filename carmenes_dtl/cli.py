"""`carmenes-dtl`: one subcommand per stage, plus `run` for the whole method."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .config import PROFILES, VSINI_GRID, Window


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _window(text: str) -> Window:
    try:
        return Window.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_demo_data(a):
    from .demo import write_demo

    out = write_demo(a.out, a.seed, a.n_stars, a.gap, a.size, progress=not a.quiet)
    print(f"demo survey written to {out} (phoenix/, carmenes/, truth.csv)")


def cmd_prepare_synthetic(a):
    import pandas as pd

    from . import grid, prepare

    nodes = None
    if a.grid == "paper":
        nodes = grid.paper_grid()
    elif a.grid:
        nodes = pd.read_csv(a.grid)
    path = prepare.prepare_synthetic(a.phoenix_dir, a.out, a.vsini, a.window, nodes, progress=not a.quiet)
    print(f"wrote {path}")


def cmd_prepare_observed(a):
    from . import prepare

    if a.template == "demo":
        from .demo import rv_templates

        template = rv_templates(a.window)
    else:
        template = prepare.template_from_set(Path(a.template)) if a.template else None
    path, excluded = prepare.prepare_observed(a.carmenes_dir, a.out, a.window, template, strict=a.strict,
                                              progress=not a.quiet)
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

    r = pipeline.Runner(a.out, PROFILES[a.profile], a.seed)
    r.autoencoders()
    r.finetune()
    print(f"models in {r.paths.models}")


def cmd_gap(a):
    from . import gap

    result = gap.report(a.synthetic, a.observed, a.out, latent_model=a.latent, seed=a.seed)
    print(json.dumps(result["metrics"], indent=1))


def cmd_run(a):
    from . import pipeline

    info = pipeline.run(a.out, demo=a.demo or not (a.synthetic or a.observed), synthetic=a.synthetic,
                        observed=a.observed, profile_name=a.profile, seed=a.seed, gap=a.gap, progress=not a.quiet)
    print(f"estimates: {Path(a.out) / 'estimates.csv'}")
    if "errors_vs_truth" in info:
        for variant, errs in info["errors_vs_truth"].items():
            print(f"  {variant:12s} " + "  ".join(f"{k} MAE={v['mae']:.3g}" for k, v in errs.items()))


def cmd_fetch_literature(a):
    from . import literature

    written = literature.import_csv_folder(a.from_csv, a.out) if a.from_csv else literature.fetch_vizier(a.out)
    for path in written:
        print(f"wrote {path}")


def cmd_validate(a):
    from . import validation

    stats = validation.validate(a.estimates, a.out, literature_dir=a.literature)
    print(stats.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="carmenes-dtl", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress bars")
    win = argparse.ArgumentParser(add_help=False)
    win.add_argument("--window", type=_window, default=Window(), help="start,stop in Å (default 8800,8835)")

    s = sub.add_parser("demo-data", parents=[quiet], help="write the demo survey (mock archives + truth.csv)")
    s.add_argument("out", type=Path)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--n-stars", type=int)
    s.add_argument("--gap", default="paper", choices=["none", "mild", "paper", "strong"])
    s.add_argument("--size", default="quick", choices=["quick", "full"])
    s.set_defaults(func=cmd_demo_data)

    s = sub.add_parser("prepare-synthetic", parents=[quiet, win], help="PHOENIX HiRes tree -> synthetic set (HDF5)")
    s.add_argument("--phoenix-dir", type=Path, required=True, help="folder holding PHOENIX-ACES-AGSS-COND-2011/")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--vsini", type=_floats, default=list(VSINI_GRID), help="km/s, comma-separated")
    s.add_argument("--grid", help="'paper' (interpolate to the paper's nodes) or a CSV with teff,logg,mh")
    s.set_defaults(func=cmd_prepare_synthetic)

    s = sub.add_parser("prepare-observed", parents=[quiet, win], help="CARMENES VIS files -> observed set (HDF5)")
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
    s.set_defaults(func=cmd_gap)

    s = sub.add_parser("train", help="autoencoder search, training and fine-tuning in a run folder")
    s.add_argument("--out", type=Path, required=True, help="run folder holding synthetic.h5 and observed.h5")
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    s.add_argument("--seed", type=int, default=42)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("run", parents=[quiet], help="the whole method, on the demo survey or your sets")
    s.add_argument("--demo", action="store_true", help="generate and use the demo survey (default)")
    s.add_argument("--synthetic", type=Path)
    s.add_argument("--observed", type=Path)
    s.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--gap", default="paper", choices=["none", "mild", "paper", "strong"])
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("fetch-literature", help="literature snapshot from VizieR or a folder of VizieR CSVs")
    s.add_argument("--from-csv", type=Path, help="folder of VizieR CSV exports (e.g. ../shared/reference)")
    s.add_argument("--out", type=Path, default=None)
    s.set_defaults(func=cmd_fetch_literature)

    s = sub.add_parser("validate", help="compare an estimates file with the literature")
    s.add_argument("estimates", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--literature", type=Path, default=None, help="snapshot folder (default data/literature)")
    s.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"carmenes-dtl {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
