"""The wheel built from the committed files (what `pip install git+...` builds, as on Colab)
holds all the committed data, and the package reads every file it needs from an installed
copy of it."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
#: Every reader of committed data, run in the installed copy.
READERS = """
import carmenes_dtl, sys
from carmenes_dtl import config, experiment, grid, literature, snapshots, validation

assert all(m.__file__.startswith(sys.argv[1]) for m in (carmenes_dtl, snapshots)), (carmenes_dtl, snapshots)
config.published_settings(), config.implementation_deviations(), config.measured_deviations()
config.measured_variants(), grid.paper_grid(), validation.load_all(), literature.load("paper")
for table in (experiment.RESULTS, experiment.TINY_RESULTS):
    snapshots.read_table(table), snapshots.read_table(table.with_name(f"{table.stem}_intervals.csv"))
"""


def test_the_wheel_ships_all_committed_data_and_the_package_reads_it_from_there(wheel):
    tracked, names, site = wheel
    code = {"carmenes_dtl/py.typed"} | {f for f in tracked if f.startswith("carmenes_dtl/") and f.endswith(".py")}
    assert {f for f in tracked if f.startswith("carmenes_dtl/")} == code, "committed data belongs in data/"
    package = "carmenes_dtl/snapshots/"
    assert {n.removeprefix(package) for n in names if n.startswith(package)} == \
        {f.removeprefix("data/") for f in tracked if f.startswith("data/")}
    assert {n for n in names if n.startswith("carmenes_dtl/") and not n.startswith(package)} == code

    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", READERS, str(site)], cwd=site.parent, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
