"""Training grid snapshot, its coverage of a star, and interpolation between archive nodes."""
import os

import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import grid
from carmenes_dtl.config import Window


def test_snapshot_is_the_published_grid(tmp_path):
    """The shipped snapshot has the paper's counts and survives an export/import round trip."""
    committed = grid.paper_grid()
    assert len(committed) == 22933 and len(grid.paper_nodes()) == 1767  # paper Sect. 2.1
    assert list(committed.columns) == ["teff", "logg", "mh", "vsini"]
    npy = tmp_path / "phoenix_grid_parameters.npy"
    np.save(npy, committed.to_numpy())
    out = grid.import_paper_grid(npy, tmp_path / "g.ecsv")
    pd.testing.assert_frame_equal(grid.paper_grid(out), committed)
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"bad.npy: expected an \(N, 4\) array .* got \(3, 5\)"):
        grid.import_paper_grid(tmp_path / "bad.npy", tmp_path / "b.ecsv")


def test_paper_grid_read_once_and_each_caller_gets_its_own_copy(tmp_path):
    """Parsed once per file version; a caller's change reaches no other; a rewrite of the same
    file is read again even with its old size and modification time."""
    rows = np.array([[3000.0, 5.0, 0.0, 2.0], [3100.0, 5.0, 0.0, 2.0]])
    np.save(tmp_path / "a.npy", rows)
    path = grid.import_paper_grid(tmp_path / "a.npy", tmp_path / "g.ecsv")
    first = grid.paper_grid(path)
    first.loc[0, "teff"] = -1.0
    hits = grid._read_grid.cache_info().hits
    assert grid.paper_grid(path)["teff"].tolist() == [3000.0, 3100.0]
    assert grid._read_grid.cache_info().hits == hits + 1
    np.save(tmp_path / "b.npy", rows + [100.0, 0, 0, 0])
    before = path.stat()
    grid.import_paper_grid(tmp_path / "b.npy", path)
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as within the file system's clock tick
    assert grid.paper_grid(path)["teff"].tolist() == [3100.0, 3200.0]


def test_paper_grid_steps():
    nodes = grid.paper_nodes()
    assert set(np.round(np.diff(np.unique(nodes.teff)), 6)) == {25.0}
    assert set(np.round(np.diff(np.unique(nodes.logg)), 6)) == {0.1}
    assert set(np.round(np.diff(np.unique(nodes.mh)), 6)) == {0.1}


@pytest.mark.parametrize("teff,logg,mh,expected", [
    (3300.0, 4.9, -0.2, "inside"),  # nodes on both sides along every axis (read off the grid's node table)
    (4460.0, 4.75, -0.2, "edge"),  # logg 4.7 nodes reach 4475 K, but no logg >= 4.75 node within 100 K
    (4000.0, 5.2, 0.5, "outside"),  # metal-rich grid nodes stop near 3575 K
    (4000.0, 4.65, -0.1, "outside"),  # below the grid's logg floor (4.7), though nodes lie within 0.1
])
def test_grid_coverage_rule(teff, logg, mh, expected):
    point = pd.DataFrame({"Teff": [teff], "logg": [logg], "[M/H]": [mh]})
    assert grid.grid_coverage(point)[0] == expected


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from carmenes_dtl.demo import write_demo

    root = write_demo(tmp_path_factory.mktemp("g"), seed=1, n_stars=1, progress=False)
    return grid.Archive(root / "phoenix", 8795, 8840)


def test_interpolation_is_exact_at_archive_nodes(archive):
    """At a node, the interpolation is the file's flux (read with astropy, not the package's reader)."""
    from astropy.io import fits

    for node in [(3500.0, 5.0, 0.0), (2300.0, 4.5, -1.0), (4500.0, 5.5, 1.0)]:
        with fits.open(archive.files[node]) as hdul:
            header, flux = hdul[0].header, hdul[0].data.astype(np.float64)
        assert (header["PHXTEFF"], header["PHXLOGG"], header["PHXM_H"]) == node
        np.testing.assert_allclose(archive.interpolate(*node), flux[archive.sl], rtol=1e-6)


def test_interpolation_midpoint_is_geometric_mean(archive):
    mid = archive.interpolate(3550.0, 5.0, 0.0)
    expected = np.sqrt(np.exp(archive.flux((3500.0, 5.0, 0.0))) * np.exp(archive.flux((3600.0, 5.0, 0.0))))
    np.testing.assert_allclose(mid, expected, rtol=1e-10)


@pytest.mark.parametrize("node", [(3500.0, 5.0, 0.0), (3000.0, 5.0, 0.0), (4000.0, 5.0, -0.5)])
@pytest.mark.parametrize("axis", grid.AXES)
def test_leave_one_node_out_error(archive, node, axis):
    """A node left out and rebuilt from its two neighbours beats a copy of the nearer neighbour."""
    from carmenes_dtl.preprocess import synthetic_to_window

    def normalised(n):
        return synthetic_to_window(archive.wave, np.exp(archive.flux(n)), [2.0], Window())[0]

    truth = normalised(node)
    copy = min(np.abs(normalised(n) - truth).max() for n in grid.neighbours(node, axis))
    error = grid.interpolation_error(archive, node, Window(), axis)
    assert 0 < error < copy
    assert grid.interpolation_error(archive, node, Window()) >= error


@pytest.mark.parametrize("node", [(3525.0, 4.8, 0.1), (3000.0, 5.1, -0.3), (4050.0, 4.9, 0.2)])
def test_interpolated_paper_nodes_against_the_exact_model(archive, node):
    """The demo's model is known everywhere, so interpolated nodes can be checked exactly."""
    from carmenes_dtl import demo_lines, preprocess

    interp = preprocess.synthetic_to_window(archive.wave, archive.interpolate(*node), [2.0], Window())[0]
    exact = preprocess.synthetic_to_window(archive.wave, demo_lines.LineModel().flux(archive.wave, *node), [2.0], Window())[0]
    diff = np.abs(interp - exact)
    assert diff.mean() < 0.005 and diff.max() < 0.08


def test_bracketing_nodes_are_the_archive_corners():
    nodes = pd.DataFrame({"teff": [3325.0, 3350.0], "logg": [4.7, 4.7], "mh": [-0.35, -0.35]})
    corners = grid.bracketing_nodes(nodes)
    assert corners == sorted({(t, g, m) for t in (3300.0, 3400.0) for g in (4.5, 5.0) for m in (-0.5, 0.0)})
    assert len(grid.bracketing_nodes(grid.paper_nodes())) == 241
