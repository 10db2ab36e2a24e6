"""Shared fixtures: tiny files in the real archive layouts, written by the package's own demo writers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
#: Published reference data: ../shared/reference beside the checkout (or $CARMENES_DTL_REFERENCE).
REFERENCE = Path(os.environ.get("CARMENES_DTL_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))


@pytest.fixture(scope="session")
def demo_survey(tmp_path_factory) -> Path:
    """A small demo survey (6 stars, gap 'paper', seed 7) in the real layouts."""
    from carmenes_dtl.demo import write_demo

    return write_demo(tmp_path_factory.mktemp("demo"), seed=7, n_stars=6, gap="paper", progress=False)


@pytest.fixture
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"published reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
