"""The preparation on a real `dask.distributed` cluster gives the threaded run's bytes; the autoencoder
grid search there gives scikit-learn's in-process rows, one task per configuration and fold."""
import re
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from carmenes_dtl import archives, autoencoder, prepare, scheduling, store
from carmenes_dtl.config import AESettings

NODES = pd.DataFrame({"teff": [3300.0, 3350.0], "logg": [5.0, 5.0], "mh": [0.0, 0.0]})
NAN_NODE = (3300.0, 5.0, 0.0)  # used by both rows of NODES: its NaNs must be counted once
#: 64 spectra of 120 pixels with 6 Gaussian lines each, and a search small enough for a unit test
#: (folds of 32 in batches of 16: no partial batch, whose shape each fit would compile again).
_rng = np.random.default_rng(5)
SEARCH_FLUX = (1 - sum(_rng.uniform(0.1, 0.5, (64, 1)) * np.exp(-0.5 * ((np.arange(120) - c) / 3) ** 2)
                       for c in _rng.uniform(10, 110, 6))).astype("float32")
SEARCH = AESettings(latent_dim=4, search_epochs=3, batch_size=16, learning_rate=1e-2, n_in_grid=(16, 32),
                    l1_grid=(1e-7, 1e-5), cv_folds=2)


@pytest.fixture(scope="module")
def phoenix_with_nans(demo_survey, tmp_path_factory):
    """The demo PHOENIX tree with 7 NaN pixels inside the window in one node's file."""
    root = tmp_path_factory.mktemp("phx") / "phoenix"
    shutil.copytree(demo_survey / "phoenix", root)
    path = root / archives.phoenix_relpath(*NAN_NODE)
    wave = archives.read_phoenix_wavelength(root / archives.PHOENIX_WAVE_FILE)
    with fits.open(path) as hdul:
        data = hdul[0].data.copy()
        i = int(np.searchsorted(wave, 8815.0))
        data[i:i + 14:2] = np.nan
        fits.PrimaryHDU(data, hdul[0].header).writeto(path, overwrite=True)
    return root


def test_local_cluster_matches_threads(demo_survey, phoenix_with_nans, tmp_path):
    """prepare-synthetic through a scheduler address, prepare-observed through an active Client."""
    distributed = pytest.importorskip("distributed")  # the 'cluster' extra
    carmenes = tmp_path / "carmenes"
    shutil.copytree(demo_survey / "carmenes", carmenes)
    (carmenes / "broken-vis_A.fits").write_bytes(b"not a FITS file")  # an exclusion made inside a task

    def synthetic(name, scheduler):
        return store.read(prepare.prepare_synthetic(phoenix_with_nans, tmp_path / f"{name}_syn.h5", [2.0, 10.0],
                                                    nodes=NODES, progress=False, scheduler=scheduler))

    def observed(name, scheduler=None):
        path, excluded = prepare.prepare_observed(carmenes, tmp_path / f"{name}_obs.h5", progress=False,
                                                  template=prepare.template_from_set(tmp_path / "threads_syn.h5"),
                                                  scheduler=scheduler)
        return store.read(path), excluded

    syn, (obs, excluded) = synthetic("threads", "threads"), observed("threads", "threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        workers = set(client.scheduler_info()["workers"])
        with distributed.get_task_stream(client) as synthetic_tasks:
            syn_c = synthetic("cluster", cluster.scheduler_address)  # through the address
        with distributed.get_task_stream(client) as observed_tasks:  # through the active Client
            obs_c, excluded_c = observed("cluster")
        with distributed.get_task_stream(client) as search_tasks:
            rows_c = autoencoder.grid_search(SEARCH_FLUX, SEARCH, seed=2, scheduler=cluster.scheduler_address)
        with pytest.raises(ValueError, match=r"grid search: 2 of 6 fits failed: n_in=4, l1=1e-07, fold 0: "
                                             r"ValueError: .*; n_in=4, l1=1e-07, fold 1: ValueError"):
            autoencoder.grid_search(SEARCH_FLUX, replace(SEARCH, n_in_grid=(16, 32, 4), l1_grid=(1e-7,)), seed=2)
    # the work ran on the cluster's worker processes: one task per node, then one per file
    assert len(workers) == 2
    for tasks, n in ((synthetic_tasks.data, len(NODES)), (observed_tasks.data, 7)):
        assert len(tasks) == n and {t["worker"] for t in tasks} <= workers and all(t["status"] == "OK" for t in tasks)
    # the search: 4 configurations x 2 folds as tasks on both workers, rows best first
    fits = [t for t in search_tasks.data if str(t["key"]).startswith("_fold_mse")]
    assert len(fits) == 8 and {t["worker"] for t in fits} == workers
    # each row is GridSearchCV's in-process row, on the cluster's workers and on local processes. In a
    # script they are equal (11 of 11 cluster searches, 4 after prepare's tasks); in about one pytest run
    # in five one row is off by up to 0.6 % (cause not found; the bug fixed here, layer seeds drawn from
    # Python's `random` while the worker's event loop drew too, moved rows by 2-60 %); the in-process
    # search after test_models.py's tests gave the fresh process's rows in 9 of 10 runs, one row 3e-6
    # off in the tenth. So: the same best configuration, the n_in = 32 rows over 30 % below the
    # n_in = 16 ones, each row within 2 % (those observations on 48 spectra; on these 64, in-process and
    # processes rows equal: the best row 8 % below the second, the n_in = 32 rows 42 % below the others)
    rows = {(r["n_in"], r["l1"]): r for r in autoencoder.grid_search(SEARCH_FLUX, SEARCH, seed=2)}
    processes = autoencoder.grid_search(SEARCH_FLUX, SEARCH, seed=2, scheduler="processes")
    for where, distributed_rows in (("cluster", rows_c), ("processes", processes)):
        assert [r["cv_mse"] for r in distributed_rows] == sorted(r["cv_mse"] for r in distributed_rows)
        assert {(r["n_in"], r["l1"]) for r in distributed_rows} == set(rows)
        assert (distributed_rows[0]["n_in"], distributed_rows[0]["l1"]) == min(rows, key=lambda k: rows[k]["cv_mse"])
        assert [r["n_in"] for r in distributed_rows] == [32, 32, 16, 16]
        assert distributed_rows[1]["cv_mse"] < 0.7 * distributed_rows[2]["cv_mse"]
        for r in distributed_rows:
            expected = rows[r["n_in"], r["l1"]]
            assert r["cv_mse"] == pytest.approx(expected["cv_mse"], rel=2e-2), (where, r)
            assert r["cv_mse_std"] == pytest.approx(expected["cv_mse_std"], abs=2e-2 * expected["cv_mse"]), (where, r)
    assert len(syn) == 4 and syn.attrs["nan_pixels_filled"] == 7
    assert syn_c.flux.tobytes() == syn.flux.tobytes() and syn_c.attrs["nan_pixels_filled"] == 7
    assert len(obs) == 6 and list(excluded["file"]) == [str(carmenes / "broken-vis_A.fits")]
    assert obs_c.flux.tobytes() == obs.flux.tobytes()
    pd.testing.assert_frame_equal(excluded_c, excluded)
    assert obs_c.attrs["excluded"] == obs.attrs["excluded"]
    assert obs_c.attrs["nan_pixels_filled"] == obs.attrs["nan_pixels_filled"]


@pytest.mark.parametrize("bad", ["thread", "local", "", "tcp://host", "a:b", "host :8786", "tcp://host:8786/x"])
def test_unknown_scheduler_is_named(bad):
    with pytest.raises(ValueError, match=f"got {re.escape(repr(bad))}"):
        scheduling.check(bad)


@pytest.mark.parametrize("good", [None, "threads", "processes", "tcp://127.0.0.1:8786", "sched.example.org:8786",
                                  "tls://[::1]:8786"])
def test_schedulers_and_addresses_pass(good):
    assert scheduling.check(good) == good
