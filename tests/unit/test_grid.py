"""Training grid snapshot and interpolation between archive nodes."""
import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import grid
from carmenes_dtl.config import Window


def test_snapshot_is_the_published_grid(reference, tmp_path):
    out = grid.import_paper_grid(reference / "phoenix_grid_parameters.npy", tmp_path / "g.ecsv")
    fresh, committed = grid.paper_grid(out), grid.paper_grid()
    pd.testing.assert_frame_equal(fresh, committed)
    arr = np.load(reference / "phoenix_grid_parameters.npy")
    np.testing.assert_allclose(committed.to_numpy(), arr, atol=1e-9)
    assert len(grid.paper_nodes()) == 1767


def test_paper_grid_steps():
    nodes = grid.paper_nodes()
    assert set(np.round(np.diff(np.unique(nodes.teff)), 6)) == {25.0}
    assert set(np.round(np.diff(np.unique(nodes.logg)), 6)) == {0.1}
    assert set(np.round(np.diff(np.unique(nodes.mh)), 6)) == {0.1}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from carmenes_dtl.demo import write_demo

    root = write_demo(tmp_path_factory.mktemp("g"), seed=1, n_stars=1, progress=False)
    return grid.Archive(root / "phoenix", 8795, 8840)


def test_interpolation_is_exact_at_archive_nodes(archive):
    np.testing.assert_allclose(archive.interpolate(3500.0, 5.0, 0.0), np.exp(archive.flux((3500.0, 5.0, 0.0))))


def test_interpolation_midpoint_is_geometric_mean(archive):
    mid = archive.interpolate(3550.0, 5.0, 0.0)
    expected = np.sqrt(np.exp(archive.flux((3500.0, 5.0, 0.0))) * np.exp(archive.flux((3600.0, 5.0, 0.0))))
    np.testing.assert_allclose(mid, expected, rtol=1e-10)


@pytest.mark.parametrize("node", [(3500.0, 5.0, 0.0), (3000.0, 5.0, 0.0), (4000.0, 5.0, -0.5)])
def test_leave_one_node_out_error(archive, node):
    """Rebuilding an archive node from neighbours a full archive step away: an upper bound."""
    assert 0 < grid.interpolation_error(archive, node, Window()) < 0.25


@pytest.mark.parametrize("node", [(3525.0, 4.8, 0.1), (3000.0, 5.1, -0.3), (4050.0, 4.9, 0.2)])
def test_interpolated_paper_nodes_against_the_exact_model(archive, node):
    """The demo's model is known everywhere, so interpolated nodes can be checked exactly."""
    from carmenes_dtl import demo, preprocess

    interp = preprocess.synthetic_to_window(archive.wave, archive.interpolate(*node), [2.0], Window())[0]
    exact = preprocess.synthetic_to_window(archive.wave, demo.LineModel().flux(archive.wave, *node), [2.0], Window())[0]
    diff = np.abs(interp - exact)
    assert diff.mean() < 0.005 and diff.max() < 0.08


def test_bracketing_nodes_are_the_archive_corners():
    nodes = pd.DataFrame({"teff": [3325.0, 3350.0], "logg": [4.7, 4.7], "mh": [-0.35, -0.35]})
    corners = grid.bracketing_nodes(nodes)
    assert corners == sorted({(t, g, m) for t in (3300.0, 3400.0) for g in (4.5, 5.0) for m in (-0.5, 0.0)})
    assert len(grid.bracketing_nodes(grid.paper_nodes())) == 241
