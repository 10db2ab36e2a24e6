"""The built book both book tests read: `$CARMENES_DTL_SITE` (e.g. `_build/html` after `make book`)
or a fresh build on a tiny demo run."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def html(tmp_path_factory) -> Path:
    if os.environ.get("CARMENES_DTL_SITE"):
        site = Path(os.environ["CARMENES_DTL_SITE"]).resolve()
        assert (site / "index.html").exists(), f"no built book at {site}: run `make book` first"
        return site
    from test_cli import cli

    run = tmp_path_factory.mktemp("bookrun")
    cli("run", "--demo", "--profile", "tiny", "--seed", "1", "--out", run, "--quiet")
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend shows figures
    res = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "--keep-going"],
                         capture_output=True, text=True, env={**env, "CARMENES_DTL_RUN": str(run)})
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-3000:]
    return out / "_build" / "html"
