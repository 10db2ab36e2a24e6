"""The package's shape (issue 24): one module owns the run folder's names, no import hook, a short
pipeline, no private helper imported across modules."""
import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "carmenes_dtl"
BOOK = PACKAGE.parent / "book"
#: Names inside a run folder and the latents' key format; only `rundir` may spell them in code.
RUN_NAMES = re.compile(r"""["'](latents\.npz|run\.json|stages\.json|truth\.csv|search\.json|cnn\.json|holdout\.csv|"""
                       r"""autoencoders\.csv|estimates(_[a-z_]+)?\.csv|flags(_[a-z_]+)?\.csv|cnn_synthetic|synthetic\.h5|"""
                       r"""observed\.h5|gap_\{)|/ ["']models["']""")
LATENT_KEY = re.compile(r"""(syn|obs)_(pre|ft)_|\{domain\}_\{encoder\}""")


def _code(path: Path) -> str:
    """The module without its docstrings and comments (they may name files to explain them)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body[0] = ast.Pass()
    return ast.unparse(tree)


def test_only_rundir_spells_run_folder_names_and_latent_keys():
    offenders = {p.name: sorted(set(RUN_NAMES.findall(_code(p))) | set(LATENT_KEY.findall(_code(p))))
                 for p in PACKAGE.glob("*.py") if p.name not in ("rundir.py", "twin.py")}
    # twin.py prepares its own scratch sets outside any run folder
    assert {k: v for k, v in offenders.items() if v} == {}
    chapters = [p.name for p in BOOK.glob("*.ipynb")
                if re.search(r"truth\.csv|latents\.npz|run\.json|(syn|obs)_(pre|ft)_", p.read_text())]
    assert chapters == []


def test_no_import_hook_a_short_pipeline_and_no_private_imports():
    sources = {p.name: p.read_text() for p in PACKAGE.glob("*.py")}
    assert not [n for n, s in sources.items() if "meta_path" in s]
    assert len(sources["pipeline.py"].splitlines()) <= 300
    private = [f"{n}: {m.group(0)}" for n, s in sources.items()
               for m in re.finditer(r"from \.\w+ import [^\n]*\b_[a-z]\w*", s)]
    assert private == []
