"""The lowest versions pyproject.toml allows, in Python 3.12 (Colab's), against the pinned ones:
`make compat`'s check (`scripts/compat.py`), run by `make test` in the environment it builds
(``CARMENES_DTL_LOWEST_PYTHON``, where python3.12 exists)."""
import os
import runpy
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
LOWEST = os.environ.get("CARMENES_DTL_LOWEST_PYTHON")


def test_lowest_versions_run_the_tiny_pipeline_and_each_opens_the_others_bundle(wheel, tiny_run, tmp_path, capsys):
    if not LOWEST:
        pytest.skip("no lowest-versions environment: `make test` builds it where python3.12 exists")
    (built,) = (wheel[2].parent / "wheel").glob("*.whl")
    subprocess.run([LOWEST, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(built)], check=True)
    compat = runpy.run_path(str(ROOT / "scripts" / "compat.py"))
    assert compat["main"](LOWEST, tmp_path, tiny_run[0]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "lowest: Python 3.12" in out and "Keras 3.10.0" in out and out.count("(ok)") == 2, out
    # jaxlib 0.6.0's cache changed results (`environment.CACHE_SAFE_JAXLIB`): off there, on with the pinned one
    assert "JAX 0.6.0, NumPy 1.26.4, compilation cache off" in out and "compilation cache on" in out, out
