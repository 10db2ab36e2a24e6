"""Resume: stage keys follow the inputs' contents and settings; a killed stage leaves nothing finished."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dataclasses

import numpy as np
import pandas as pd
import pytest

from carmenes_dtl import pipeline, prepare, store
from carmenes_dtl.config import PROFILES
from carmenes_dtl.demo_gap import GapMix

TINY = PROFILES["tiny"]
SMALL = dataclasses.replace(TINY, n_nodes=4, n_stars=3)  # whole runs of the preparation in seconds
SMALL_NODES = pd.DataFrame({"teff": [3300.0, 3350.0], "logg": [5.0, 5.0], "mh": [0.0, 0.0]})


def _copy_stage(r: pipeline.Runner, src: Path, scale: float = 1.0) -> bool:
    """A stage reading the numbers in `src` and writing them, times `scale`, as the run's latents."""
    return r.stages.run("copy", [r.folder.latents_file],
                        lambda staged: np.savez(staged(r.folder.latents_file), x=np.loadtxt(src) * scale),
                        extra=scale, inputs=[src])


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
    assert np.load(r.folder.latents_file)["x"].tolist() == [4, 5, 6]
    assert _copy_stage(r, link, scale=2.0)
    assert np.load(r.folder.latents_file)["x"].tolist() == [8, 10, 12]
    again = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)  # a later process
    assert not _copy_stage(again, link, scale=2.0)
    np.savez(again.folder.latents_file, x=np.zeros(3))  # an output replaced by hand: the stage makes it again
    assert _copy_stage(again, link, scale=2.0) and np.load(again.folder.latents_file)["x"].tolist() == [8, 10, 12]
    assert _copy_stage(pipeline.Runner(tmp_path / "run", TINY, seed=2, progress=False), link, scale=2.0)


def test_failed_stage_leaves_no_output_and_no_key(tmp_path):
    r = pipeline.Runner(tmp_path, TINY, progress=False)

    def half_then_fail(staged):
        staged(r.folder.latents_file).write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        r.stages.run("copy", [r.folder.latents_file], half_then_fail)
    assert not (tmp_path / "latents.npz").exists() and (tmp_path / "latents.partial.npz").exists()
    assert "copy" not in json.loads((tmp_path / "stages.json").read_text())
    src = tmp_path / "x.txt"
    src.write_text("7")
    assert _copy_stage(r, src)
    assert not (tmp_path / "latents.partial.npz").exists() and np.load(tmp_path / "latents.npz")["x"] == 7


def test_a_set_written_inside_a_stage_is_staged_once(tmp_path):
    r = pipeline.Runner(tmp_path, TINY, progress=False)

    def write(staged):
        writer = store.SpectrumWriter(staged(r.folder.synthetic), np.arange(3.0), {})
        assert sorted(f.name for f in tmp_path.iterdir()) == ["stages.json", "synthetic.partial.h5"]
        writer.append(np.ones((1, 3)), pd.DataFrame({"teff": [3000.0], "logg": 5.0, "mh": 0.0, "vsini": 2.0}))
        writer.close()

    assert r.stages.run("write", [r.folder.synthetic], write)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["stages.json", "synthetic.h5"]


def test_prepare_reruns_for_other_archives_in_the_same_folder(tmp_path, capsys):
    from carmenes_dtl.demo import write_demo

    first = write_demo(tmp_path / "d1", seed=5, n_stars=3, gap=GapMix.parse("none"), progress=False)
    second = write_demo(tmp_path / "d2", seed=6, n_stars=3, gap=GapMix.parse("strong"), progress=False, phoenix=False)
    r = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    r.prepare(first / "phoenix", first / "carmenes")
    before = store.read(r.folder.observed)
    capsys.readouterr()
    r.prepare(first / "phoenix", second / "carmenes")
    out = capsys.readouterr().out
    assert "prepare-synthetic: up to date" in out and "prepare-observed done" in out
    after = store.read(r.folder.observed)
    assert set(after.parameters["karmn"]).isdisjoint(before.parameters["karmn"])
    assert after.attrs["inputs"] == str((second / "carmenes").resolve())
    fresh = pipeline.Runner(tmp_path / "fresh", TINY, seed=1, progress=False)
    fresh.prepare(first / "phoenix", second / "carmenes")
    assert store.read(fresh.folder.observed).flux.tobytes() == after.flux.tobytes()


def _stars(path) -> list[str]:
    """The stars of an observed set (a path or a `rundir.GapFolder`)."""
    return sorted(store.read(getattr(path, "observed", path)).parameters["karmn"])


def _estimates_stage(self):
    """Stands in for the model stages: a keyed stage whose estimates name the observed stars."""
    f = self.folder
    self.stages.run("cnn", [f.estimates_file()], lambda staged: store.read(f.observed).parameters[["karmn"]].to_csv(
        staged(f.estimates_file()), index=False), inputs=[f.synthetic, f.observed])


def test_run_on_other_sets_into_the_same_folder_recomputes(tmp_path, monkeypatch):
    """`run --demo`, `run --synthetic A --observed B`, `... --observed C`, `run --demo`, all into R:
    each run's estimates are those of its own observed set, and the last one rebuilds the demo's sets."""
    from carmenes_dtl.demo import write_demo

    for name in ("autoencoders", "cnn_synthetic", "finetune", "encode"):
        monkeypatch.setattr(pipeline.Runner, name, lambda self: None)
    monkeypatch.setattr(pipeline.Runner, "cnns", _estimates_stage)
    monkeypatch.setattr(pipeline.Runner, "summary", lambda self, truth: sorted(self.folder.estimates()["karmn"]))
    out = tmp_path / "R"
    assert pipeline.run(out, prof=SMALL, seed=1, progress=False) == sorted(pd.read_csv(out / "demo" / "truth.csv")["karmn"])
    demo_bytes = {n: (out / n).read_bytes() for n in ("synthetic.h5", "observed.h5")}
    a = prepare.prepare_synthetic(out / "demo" / "phoenix", tmp_path / "A.h5", [3.0], nodes=SMALL_NODES, progress=False)
    sets = {}
    for name, seed in (("B", 6), ("C", 8)):
        write_demo(tmp_path / name, seed, 3, GapMix.parse("strong"), progress=False, phoenix=False)
        sets[name] = prepare.prepare_observed(tmp_path / name / "carmenes", tmp_path / f"{name}.h5",
                                              template=prepare.template_from_set(a), progress=False)[0]
    user_bytes = {p: p.read_bytes() for p in (a, *sets.values())}
    for name in ("B", "C"):
        assert pipeline.run(out, pipeline.SetsInput(a, sets[name]), prof=SMALL, seed=1,
                            progress=False) == _stars(sets[name]), name
    assert pipeline.run(out, prof=SMALL, seed=1, progress=False) == sorted(pd.read_csv(out / "demo" / "truth.csv")["karmn"])
    for name, data in demo_bytes.items():
        assert not (out / name).is_symlink() and (out / name).read_bytes() == data, name
    assert all(p.read_bytes() == data for p, data in user_bytes.items())  # the user's files are left alone


def test_gap_variant_follows_gap_stars_seed_and_window(tmp_path, capsys):
    import dataclasses

    from carmenes_dtl.config import Window

    r = pipeline.Runner(tmp_path, SMALL, seed=1, progress=False)
    none, mild, strong = (GapMix.parse(level) for level in ("none", "mild", "strong"))
    r.demo(none)
    r.prepare(r.folder.phoenix_dir, r.folder.carmenes_dir)
    first = _stars(pipeline.gap_variant(r.folder, strong, n_stars=2, seed=1))
    capsys.readouterr()
    assert _stars(pipeline.gap_variant(r.folder, strong, n_stars=2, seed=1)) == first
    assert capsys.readouterr().out.count("up to date") == 2
    assert len(_stars(pipeline.gap_variant(r.folder, strong, n_stars=3, seed=1))) == 3
    other = _stars(pipeline.gap_variant(r.folder, strong, n_stars=2, seed=2))
    assert len(other) == 2 and set(other).isdisjoint(first)
    assert _stars(pipeline.gap_variant(r.folder, mild, n_stars=2, seed=2)) == other  # its own folder
    window = Window(8805.0, 8830.0)
    pipeline.Runner(tmp_path, dataclasses.replace(SMALL, window=window), seed=1, progress=False).prepare(
        r.folder.phoenix_dir, r.folder.carmenes_dir)  # `run --window` into the same folder
    for gap in (strong, mild):
        s = store.read(pipeline.gap_variant(r.folder, gap, n_stars=2, seed=2).observed)
        np.testing.assert_array_equal(s.wavelength, window.wavelength)
        assert sorted(s.parameters["karmn"]) == other


CHILD = """
import sys, time
from pathlib import Path
from carmenes_dtl import demo, pipeline
from carmenes_dtl.config import PROFILES

out, marker = map(Path, sys.argv[1:3])
write_carmenes = demo.write_carmenes
def slow(*args, **kwargs):  # stall once the CARMENES files are written, before truth.csv, so the kill lands mid-stage
    files = write_carmenes(*args, **kwargs)
    marker.touch()
    time.sleep(120)
    return files
demo.write_carmenes = slow
pipeline.Runner(out, PROFILES["tiny"], seed=1, progress=False).demo()
"""


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_killed_stage_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL inside the demo stage, a folder of many files only the stage's staging protects; the
    stage run again gives the bytes of an uninterrupted run (both in this process: bytes across
    interpreters are `test_same_seed_same_estimates`' part, for the estimates)."""
    marker = tmp_path / "writing"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "killed"), str(marker)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the stage never wrote its CARMENES files"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = tmp_path / "killed"
    assert not (killed / "demo").exists() and list((killed / "demo.partial" / "carmenes").glob("*.fits"))
    assert "demo" not in json.loads((killed / "stages.json").read_text())
    for out in (killed, tmp_path / "whole"):
        pipeline.Runner(out, TINY, seed=1, progress=False).demo()
    assert not list(killed.glob("*.partial*"))
    whole = _files(tmp_path / "whole" / "demo")
    assert "truth.csv" in whole and len(whole) > 100
    assert _files(killed / "demo") == whole


def test_window_reaches_every_prepared_set(tmp_path, capsys):
    """`run --window`: the profile's window is replaced before the stages (demo warns, sets follow it)."""
    from carmenes_dtl.config import Window

    window = Window(8805.0, 8830.0)
    r = pipeline.Runner(tmp_path, dataclasses.replace(TINY, window=window, n_stars=3, n_nodes=4), progress=False)
    r.demo(GapMix.parse("mild"))
    assert "the demo's line list is built for the default window 8800-8835 Å" in capsys.readouterr().err
    r.prepare(r.folder.phoenix_dir, r.folder.carmenes_dir)
    for path in (r.folder.synthetic, r.folder.observed,
                 pipeline.gap_variant(r.folder, GapMix.parse("none"), n_stars=2, seed=42).observed):
        s = store.read(path)
        np.testing.assert_array_equal(s.wavelength, window.wavelength)
        assert s.flux.shape[1] == 2501 and s.attrs["window"]["start"] == 8805.0
    with pytest.raises(ValueError, match="--window 8800,8835 does not match .*synthetic.h5's grid 8805.00-8830.00"):
        store.check_pair(r.folder.synthetic, r.folder.observed, Window())


def test_adopted_stage_is_skipped_only_where_its_key_matches(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("1 2 3")
    base = pipeline.Runner(tmp_path / "base", TINY, seed=1, progress=False)
    assert _copy_stage(base, src)
    same = pipeline.Runner(tmp_path / "same", TINY, seed=1, progress=False)
    assert same.stages.adopt(base.folder.out, ["copy", "absent"]) == ["copy"]
    assert (tmp_path / "same" / "latents.npz").samefile(tmp_path / "base" / "latents.npz")
    assert not _copy_stage(same, src)  # its own key equals the adopted record's
    other = pipeline.Runner(tmp_path / "other", TINY, seed=2, progress=False)
    assert other.stages.adopt(base.folder.out, ["copy"]) == ["copy"] and _copy_stage(other, src)  # other seed: runs
    assert np.load(tmp_path / "base" / "latents.npz")["x"].tolist() == [1, 2, 3]
    np.savez(tmp_path / "base" / "latents.npz", x=np.zeros(3))  # the base's output changed since its record
    assert pipeline.Runner(tmp_path / "late", TINY, seed=1, progress=False).stages.adopt(base.folder.out, ["copy"]) == []


def test_timings_of_an_interrupted_call_reach_run_json(tmp_path):
    """A stage's wall time and memory are kept with its record, so the call that resumes a run
    reports the stages an earlier, interrupted call finished; not those it did not ask for (the
    book's gap variants, recorded in the same folder by a notebook) nor adopted ones (they ran elsewhere)."""
    def slow(staged):  # a stage that takes at least 0.3 s
        time.sleep(0.3)
        staged(first.folder.holdout_file).write_bytes(b"x")

    first = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    assert first.stages.run("slow", [first.folder.holdout_file], slow)
    # the process ends here (Ctrl-C in the next stage); a notebook adds a stage of its own:
    notebook = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    assert notebook.stages.run("gap-x", [notebook.folder.autoencoders_file],
                               lambda staged: staged(notebook.folder.autoencoders_file).write_text("5"))
    # the same command again:
    again = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    src = tmp_path / "in.txt"
    src.write_text("1")
    assert not again.stages.run("slow", [again.folder.holdout_file], slow) and _copy_stage(again, src)
    measured = again.stages.measurements({})
    assert list(measured["timings_s"]) == list(measured["peak_rss_gib"]) == ["slow", "copy"]
    assert 0.3 <= measured["timings_s"]["slow"] < 10 and 0 <= measured["timings_s"]["copy"] < 10
    import resource  # the memory: at most this process's (or a waited child's) high-water mark, KiB on Linux
    high = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20
    assert 0.01 < measured["peak_rss_gib"]["slow"] <= high + 0.01
    assert again.stages.measurements({"timings_s": {"demo": 7.0, "slow": 99.0}})["timings_s"] == {
        "demo": 7.0, "slow": measured["timings_s"]["slow"], "copy": measured["timings_s"]["copy"]}
    borrower = pipeline.Runner(tmp_path / "borrower", TINY, seed=1, progress=False)
    assert borrower.stages.adopt(again.folder.out, ["slow", "copy"]) == ["slow", "copy"]
    assert not _copy_stage(borrower, src) and borrower.stages.measurements({}) == {"timings_s": {}, "peak_rss_gib": {}}


def test_stage_records_of_earlier_versions(tmp_path):
    """stages.json written before stages kept their time (key and outputs only): still up to date, no
    time reported; 0.1.0's records (a bare key): the stage runs again, without an error."""
    src = tmp_path / "in.txt"
    src.write_text("1 2")
    r = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    assert _copy_stage(r, src)
    done = json.loads(r.folder.stages_file.read_text())
    (tmp_path / "run" / "stages.json").write_text(json.dumps({"copy": {k: done["copy"][k] for k in ("key", "outputs")}}))
    later = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    assert not _copy_stage(later, src) and later.stages.measurements({}) == {"timings_s": {}, "peak_rss_gib": {}}
    (tmp_path / "run" / "stages.json").write_text(json.dumps({"copy": done["copy"]["key"]}))
    oldest = pipeline.Runner(tmp_path / "run", TINY, seed=1, progress=False)
    assert _copy_stage(oldest, src) and list(oldest.stages.measurements({})["timings_s"]) == ["copy"]
