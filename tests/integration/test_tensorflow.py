"""The models under the TensorFlow backend (a file of its own, so that xdist can run it beside the
command-line tests)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_models_under_tensorflow_backend():
    """The backend-dependent paths under TensorFlow: the penalty's and the member layers' ops, the
    compiled fit with early stopping, a reset model, freezing (the frozen kernel kept through fitting
    and a rebuild), shared graphs."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_models.py",
                          "-k", "penalty or parameter_count or member_layers or finetune_freezes or (compiled_fit and 2) "
                          "or widths_group_graphs or reusing or frozen"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert res.returncode == 0, res.stdout[-3000:]
    assert "9 passed" in res.stdout.splitlines()[-1], res.stdout[-500:]
