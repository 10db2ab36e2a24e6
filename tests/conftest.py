"""Shared fixtures (tiny files in the real archive layouts, written by the package's own demo
writers) and the CI rule: under ``CI=true`` a test may skip only for a missing optional extra."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# An xdist worker's share of the cores for OpenMP and OpenBLAS (scikit-learn's t-SNE, NumPy), set
# before this file or a test loads NumPy: threads spinning against the other workers' made a t-SNE
# test 25-40x slower (12.8-20 s in the suite, 0.5 s alone).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))
# JAX's compilation cache of the tests' processes (workers, CLI runs, notebook kernels): shared
# by them, kept out of the user's own cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                                f"carmenes-dtl-tests-xla-{os.getuid()}"))
ROOT = Path(__file__).resolve().parents[1]


def optional_modules() -> set[str]:
    """Import names of the packages in pyproject's optional extras other than ``test``, which the
    tests require (``tensorflow-cpu`` -> ``tensorflow``)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[\s;<>=!\[]", dep, maxsplit=1)[0].lower()
             for extra, deps in extras.items() if extra != "test" for dep in deps}
    return {n.replace("-", "_") for n in names} | {n.split("-")[0] for n in names}


def allowed_skip(reason: str) -> bool:
    """A skip is allowed under CI only when `pytest.importorskip` missed an optional extra."""
    missing = re.search(r"could not import '([\w.]+)'", reason)
    return bool(missing) and missing.group(1).split(".")[0] in optional_modules()


def _fail_disallowed_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("CI") == "true":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not allowed_skip(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, which allows only a missing optional extra: {reason}"


#: Test files that read the one built book (the session fixture `html`).
BOOK_FILES = {"test_book.py", "test_browser.py"}
#: The longest test files (or pairs, the book's), longest first: xdist hands them out before the
#: others, so that no worker starts a long file while the rest have finished (seconds each in the
#: run that set this order, 2 cores, before the TensorFlow subset left test_cli.py: 245 with its 58,
#: 156, 119, 52, 52, 52, 48, 28, 25).
LONGEST_FIRST = ("test_cli.py", "test_models.py", "test_book.py", "test_browser.py", "test_tensorflow.py",
                 "test_experiment_cell.py", "test_scheduling.py", "test_lowest.py", "test_pipeline.py",
                 "test_environment.py", "test_data_parallel.py")


def pytest_collection_modifyitems(items):
    """`LONGEST_FIRST`'s files first, in its order; the rest after them as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


if importlib.util.find_spec("xdist"):
    @pytest.hookimpl(optionalhook=True)  # `-p no:xdist` leaves the hook unknown
    def pytest_xdist_make_scheduler(config, log):
        """`make test` runs ``pytest -n auto --dist loadfile``: each test file on one worker, so its
        module and session fixtures are built once, and the book's two files on the same one; files
        handed out in the collection's order (`LONGEST_FIRST`), whatever ``--loadscope-reorder`` says."""
        from xdist.scheduler import LoadFileScheduling

        class BookTogether(LoadFileScheduling):
            def _split_scope(self, nodeid):
                scope = super()._split_scope(nodeid)
                return "book" if Path(scope).name in BOOK_FILES else scope

        if config.getvalue("dist") != "loadfile":
            return None
        config.option.loadscopereorder = False  # not xdist's default, the files with most tests first
        return BookTogether(config, log)


UMAP_WARMUP = pytest.StashKey[subprocess.Popen]()


def pytest_sessionstart(session):
    """The controller of an xdist run compiles UMAP's numba kernels into their cache on disk
    (`gap.compile_umap`) in the background while the workers start: in a new environment the first
    processes to draw UMAP (the `gap` command, the book's chapters 2 and 4) otherwise compiled
    them side by side, ~20 s of CPU each. Once they are cached it takes ~2 s."""
    if session.config.getoption("numprocesses", None) and not hasattr(session.config, "workerinput"):
        session.config.stash[UMAP_WARMUP] = subprocess.Popen(
            [sys.executable, "-c", "from carmenes_dtl.gap import compile_umap; compile_umap()"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pytest_sessionfinish(session):
    """The warm-up ended (a stuck one killed after 5 minutes, and said so): no process outlives the session."""
    warmup = session.config.stash.get(UMAP_WARMUP, None)
    if warmup is None:
        return
    try:
        code = warmup.wait(timeout=300)
    except subprocess.TimeoutExpired:
        warmup.kill()
        code = "killed after 300 s"
    if code != 0:
        print(f"\nconftest: UMAP's warm-up (gap.compile_umap) ended with {code}", file=sys.stderr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_disallowed_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Module-level skips (``pytest.importorskip`` at the top of a file) too."""
    outcome = yield
    _fail_disallowed_skip(outcome.get_result())


@pytest.fixture(scope="session")
def demo_survey(tmp_path_factory) -> Path:
    """A small demo survey (6 stars, gap 'paper', seed 7) in the real layouts."""
    from carmenes_dtl.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo"), seed=7, n_stars=6, progress=False)


@pytest.fixture
def rng():
    import numpy as np  # not at the top: the thread counts above are set before NumPy loads

    return np.random.default_rng(12345)
