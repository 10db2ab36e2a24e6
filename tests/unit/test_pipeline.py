"""Resume: stage keys follow the inputs' contents and settings; a killed stage leaves nothing finished."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from carmenes_dtl import pipeline, store
from carmenes_dtl.config import PROFILES

TINY = PROFILES["tiny"]


def _copy_stage(r: pipeline.Runner, src: Path, scale: float = 1.0) -> bool:
    """A stage reading the numbers in `src` and writing them, times `scale`, as the run's latents."""
    return r.stage("copy", [r.paths.latents],
                   lambda: np.savez(r.paths.latents, x=np.loadtxt(src) * scale), extra=scale, inputs=[src])


def test_stage_reruns_when_an_input_or_a_setting_changes(tmp_path):
    a, b, link = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "in.txt"
    a.write_text("1 2 3")
    b.write_text("4 5 6")
    link.symlink_to(a)
    r = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    assert _copy_stage(r, link) and not _copy_stage(r, link)
    link.unlink()
    link.symlink_to(b)  # same name, other file: as `run --observed OTHER.h5` into the same folder
    assert _copy_stage(r, link)
    assert np.load(r.paths.latents)["x"].tolist() == [4, 5, 6]
    assert _copy_stage(r, link, scale=2.0)
    assert np.load(r.paths.latents)["x"].tolist() == [8, 10, 12]
    again = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)  # a later process
    assert not _copy_stage(again, link, scale=2.0)
    assert _copy_stage(pipeline.Runner(tmp_path / "run", TINY, seed=2, progress=False), link, scale=2.0)


def test_failed_stage_leaves_no_output_and_no_key(tmp_path):
    r = pipeline.Runner(tmp_path, TINY, progress=False)

    def half_then_fail():
        r.paths.latents.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        r.stage("copy", [r.paths.latents], half_then_fail)
    assert not (tmp_path / "latents.npz").exists() and (tmp_path / "latents.partial.npz").exists()
    assert "copy" not in json.loads((tmp_path / "stages.json").read_text())
    src = tmp_path / "x.txt"
    src.write_text("7")
    assert _copy_stage(r, src)
    assert not (tmp_path / "latents.partial.npz").exists() and np.load(tmp_path / "latents.npz")["x"] == 7


def test_prepare_reruns_for_other_archives_in_the_same_folder(tmp_path, capsys):
    from carmenes_dtl.demo import write_demo

    first = write_demo(tmp_path / "d1", seed=5, n_stars=3, gap="none", progress=False)
    second = write_demo(tmp_path / "d2", seed=6, n_stars=3, gap="strong", progress=False, phoenix=False)
    r = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    r.prepare(first / "phoenix", first / "carmenes")
    before = store.read(r.paths.observed)
    capsys.readouterr()
    r.prepare(first / "phoenix", second / "carmenes")
    out = capsys.readouterr().out
    assert "prepare-synthetic: up to date" in out and "prepare-observed done" in out
    after = store.read(r.paths.observed)
    assert set(after.parameters["karmn"]).isdisjoint(before.parameters["karmn"])
    assert after.attrs["inputs"] == str((second / "carmenes").resolve())
    fresh = pipeline.Runner(tmp_path / "fresh", TINY, seed=1, progress=False)
    fresh.prepare(first / "phoenix", second / "carmenes")
    assert store.read(fresh.paths.observed).flux.tobytes() == after.flux.tobytes()


CHILD = """
import sys, time
from pathlib import Path
from carmenes_dtl import pipeline, store
from carmenes_dtl.config import PROFILES

out, demo, marker = map(Path, sys.argv[1:4])
if marker.name != "none":  # stall after the first spectra are written, so the kill lands mid-stage
    append = store.SpectrumWriter.append
    def slow(self, *args):
        append(self, *args)
        marker.touch()
        time.sleep(120)
    store.SpectrumWriter.append = slow
pipeline.Runner(out, PROFILES["tiny"], seed=1, progress=False).prepare(demo / "phoenix", demo / "carmenes")
"""


def _child(out, demo, marker="none"):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(demo), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_stage_resumes_to_the_same_bytes(tmp_path, demo_survey):
    marker = tmp_path / "writing"
    child = _child(tmp_path / "killed", demo_survey, marker)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the stage never started writing"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = tmp_path / "killed"
    assert not (killed / "synthetic.h5").exists() and list(killed.glob("synthetic.partial*"))
    assert "prepare-synthetic" not in json.loads((killed / "stages.json").read_text())
    for out in (killed, tmp_path / "whole"):
        res = _child(out, demo_survey)
        assert res.wait() == 0, res.communicate()
    assert not list(killed.glob("*.partial*"))
    for name in ("synthetic.h5", "observed.h5"):
        assert (killed / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_window_reaches_every_prepared_set(tmp_path, capsys):
    """`run --window`: the profile's window is replaced before the stages (demo warns, sets follow it)."""
    import dataclasses

    from carmenes_dtl.config import Window

    window = Window(8805.0, 8830.0)
    r = pipeline.Runner(tmp_path, dataclasses.replace(TINY, window=window, n_stars=3, n_nodes=4), progress=False)
    r.demo("mild")
    assert "the demo's line list is built for the default window 8800-8835 Å" in capsys.readouterr().err
    r.prepare(r.paths.demo / "phoenix", r.paths.demo / "carmenes")
    for path in (r.paths.synthetic, r.paths.observed, pipeline.gap_variant(r.paths, "none", n_stars=2)):
        s = store.read(path)
        np.testing.assert_array_equal(s.wavelength, window.wavelength)
        assert s.flux.shape[1] == 2501 and s.attrs["window"]["start"] == 8805.0
    with pytest.raises(ValueError, match="--window 8800,8835 does not match .*synthetic.h5's grid 8805.00-8830.00"):
        pipeline.check_sets(r.paths.synthetic, r.paths.observed, Window())
