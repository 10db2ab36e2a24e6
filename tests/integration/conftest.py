"""The tiny demo run the command-line, book and lowest-versions tests share; the wheel built from the
committed files, installed outside the checkout; and the built book both book tests read:
`$CARMENES_DTL_SITE` (e.g. `_build/html` after `make book`) or a fresh build on a copy of the tiny run
whose chapters import the package from that installed wheel (as on Colab after `pip install`)."""
import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The arguments of the shared tiny run.
TINY_RUN = ("run", "--demo", "--profile", "tiny", "--seed", "3", "--quiet")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, request) -> tuple[Path, str]:
    """`carmenes-dtl run --demo --profile tiny --seed 3`: (its folder, its stdout), made once per test
    session by whichever xdist worker asks first while the others wait. Tests only read it; a
    test that writes into a run works on a copy (`shutil.copytree` keeps the modification times
    by which stages are up to date)."""
    from test_cli import cli

    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker (the variable reaches nested sessions)
        root = root.parent  # this session's folder, above every worker's own
    out, stdout = root / "tiny-run", root / "tiny-run.stdout"
    with open(root / "tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stdout.exists():
            shutil.rmtree(out, ignore_errors=True)  # a failed attempt of another worker
            stdout.write_text(cli(*TINY_RUN, "--out", out, env={"KERAS_BACKEND": "jax"}).stdout)
    return out, stdout.read_text()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> tuple[list[str], list[str], Path]:
    """(tracked files, the wheel's file names, the folder it is installed in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    tracked = [f for f in tracked if f and (ROOT / f).is_file()]
    src = tmp / "src"
    for f in tracked:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", tmp / "wheel", src], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    (built,) = (tmp / "wheel").glob("*.whl")
    with zipfile.ZipFile(built) as z:
        names = z.namelist()
        z.extractall(tmp / "site")
    return tracked, names, tmp / "site"


@pytest.fixture(scope="session")
def html(request, tmp_path_factory, wheel) -> Path:
    if os.environ.get("CARMENES_DTL_SITE"):
        site = Path(os.environ["CARMENES_DTL_SITE"]).resolve()
        assert (site / "index.html").exists(), f"no built book at {site}: run `make book` first"
        return site
    run = tmp_path_factory.mktemp("bookrun") / "run"
    shutil.copytree(request.getfixturevalue("tiny_run")[0], run)  # the chapters add folders to their run
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend shows figures
    env |= {"CARMENES_DTL_RUN": str(run), "PYTHONPATH": str(wheel[2])}  # the chapters import the installed wheel
    where = subprocess.run([sys.executable, "-c", "import carmenes_dtl; print(carmenes_dtl.__file__)"], env=env,
                           capture_output=True, text=True, cwd=out).stdout
    assert where.startswith(str(wheel[2])), where
    res = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "--keep-going"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    return out / "_build" / "html"
