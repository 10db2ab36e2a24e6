"""Binder's environment.yml mirrors the pinned lock the Makefile installs; the environment defaults
the package sets on import."""
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_environment_yml_mirrors_lock():
    sync = runpy.run_path(str(ROOT / "scripts" / "sync_environment.py"))
    assert (ROOT / "environment.yml").read_text() == sync["render"](ROOT / "requirements.lock")


def test_lock_pins_every_declared_dependency():
    import tomllib

    lock = {ln.split("==")[0].lower().replace("_", "-") for ln in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in ln}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + [d for deps in project["optional-dependencies"].values() for d in deps]
    for dep in names:
        if "platform_machine != 'x86_64'" in dep:
            continue
        name = dep.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
        assert name in lock, f"{name} is declared in pyproject.toml but not pinned in requirements.lock"


def test_lowest_pins_are_the_declared_lower_bounds():
    """requirements-lowest.txt (`make compat`) pins each runtime dependency at its `>=` bound."""
    import tomllib

    pins = dict(ln.split("==") for ln in (ROOT / "requirements-lowest.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    bounds = dict(dep.split(">=") for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert set(bounds) <= set(pins), f"no lowest pin for {sorted(set(bounds) - set(pins))}"
    for name, bound in bounds.items():
        assert pins[name].split(".")[:len(bound.split("."))] == bound.split("."), (name, bound, pins[name])


def test_notebooks_stored_without_outputs():
    import json

    notebooks = sorted(ROOT.glob("book/*.ipynb"))
    assert len(notebooks) >= 6
    for nb in notebooks:
        code = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        assert code, nb
        for c in code:
            assert c["outputs"] == [] and c["execution_count"] is None, (nb.name, "".join(c["source"])[:60])


def test_each_chapter_installs_itself_on_colab_first():
    import json

    for nb in sorted(ROOT.glob("book/*.ipynb")):
        first = "".join(next(c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")["source"])
        assert 'if "google.colab" in sys.modules:' in first, nb.name
        assert "pip install" in first and "git+https://github.com/carmenes-dtl/carmenes-dtl" in first, nb.name


def test_ci_fails_skips_other_than_a_missing_optional_extra(tmp_path):
    """tests/conftest.py under CI=true: a plain skip fails, in a test or for a whole module, and so does a
    missing package of the `test` extra; a missing optional extra (pyproject) may skip."""
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "tests" / "test_probe.py").write_text(
        "import pytest\n"
        "def test_plain():\n    pytest.skip('reference data not found')\n"
        "def test_extra():\n    pytest.skip(\"could not import 'distributed': No module named 'distributed'\")\n"
        "def test_undeclared():\n    pytest.importorskip('no_such_module_here')\n"
        "def test_test_extra():\n    pytest.skip(\"could not import 'playwright': No module named 'playwright'\")\n")
    (tmp_path / "tests" / "test_module.py").write_text(
        "import pytest\npytest.skip('reference data not found', allow_module_level=True)\n"
        "def test_never():\n    pass\n")
    for ci, expected in (("true", "3 failed, 1 skipped, 1 error"), ("", "5 skipped")):
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "--continue-on-collection-errors", "tests"], cwd=tmp_path,
                             capture_output=True, text=True, env={**os.environ, "CI": ci})
        assert expected in res.stdout.splitlines()[-1], res.stdout[-2000:]


def test_importing_the_package_leaves_keras_unimported():
    import subprocess
    import sys

    code = "import sys, carmenes_dtl; print(sorted(m for m in ('keras', 'jax', 'tensorflow') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr[-2000:]


def test_environment_defaults_unless_set():
    """`environment.apply_defaults` (run by `import carmenes_dtl`): the JAX backend, JAX's persistent
    cache under the user's cache per jaxlib version, the XLA flag for JAX only, TensorFlow's C++
    logs off unless it is the backend; a variable already set is kept."""
    from importlib.metadata import version

    from carmenes_dtl.environment import XLA_COPY_FLAG, apply_defaults

    env = {"XDG_CACHE_HOME": "/cache"}
    apply_defaults(env)
    assert env == {"XDG_CACHE_HOME": "/cache", "KERAS_BACKEND": "jax",
                   "JAX_COMPILATION_CACHE_DIR": f"/cache/carmenes-dtl/xla/jaxlib-{version('jaxlib')}",
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1", "XLA_FLAGS": f"{XLA_COPY_FLAG}=true",
                   "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
    mine = {"KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": "/mine", "XLA_FLAGS": "--xla_a=1",
            "TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "1"}
    apply_defaults(mine)
    assert mine["JAX_COMPILATION_CACHE_DIR"] == "/mine" and mine["XLA_FLAGS"] == f"--xla_a=1 {XLA_COPY_FLAG}=true"
    assert (mine["TF_CPP_MIN_LOG_LEVEL"], mine["TF_ENABLE_ONEDNN_OPTS"]) == ("0", "1")
    tf = {"KERAS_BACKEND": "tensorflow"}
    apply_defaults(tf)
    assert not {"XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"} & set(tf)


@pytest.mark.parametrize(("jaxlib", "cached"), [((0, 6, 0), False), ((0, 6, 2), True), ((0, 10, 2), True),
                                                (None, False)])
def test_no_compilation_cache_below_the_jaxlib_checked_safe(monkeypatch, jaxlib, cached):
    """jaxlib 0.6.0's cache changed the tiny run's estimates between a cold and a warm run; 0.6.2,
    0.7.0 and 0.10.2 gave the same (measured, benchmarks/README.md). Below, the cache is off even
    where a directory is set; a user's explicit choice stands."""
    from carmenes_dtl import environment

    monkeypatch.setattr(environment, "jaxlib_version", lambda: jaxlib)
    for given in ({}, {"JAX_COMPILATION_CACHE_DIR": "/mine"}):
        env = {"XDG_CACHE_HOME": "/cache", **given}
        environment.apply_defaults(env)
        assert ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" in env) == cached
        assert env.get("JAX_ENABLE_COMPILATION_CACHE") == (None if cached else "false")
        assert ("JAX_COMPILATION_CACHE_DIR" in env) == (cached or bool(given))
    chosen = {"JAX_ENABLE_COMPILATION_CACHE": "true"}
    environment.apply_defaults(chosen)
    assert chosen["JAX_ENABLE_COMPILATION_CACHE"] == "true"


@pytest.mark.parametrize(("installed", "parsed"), [("0.10.2", (0, 10, 2)), ("0.6.0", (0, 6, 0)),
                                                   ("0.6.2rc1", (0, 6, 2)), ("0.6.0.dev20250301", (0, 6, 0)),
                                                   ("nightly", None), (None, None)])
def test_jaxlib_version_read_as_numbers(monkeypatch, installed, parsed):
    """'0.10.2' above '0.6.2' (as text it would sort below)."""
    from importlib.metadata import PackageNotFoundError

    from carmenes_dtl import environment

    def version(name):
        assert name == "jaxlib"
        if installed is None:
            raise PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(environment, "version", version)
    assert environment.jaxlib_version() == parsed


def test_saving_and_loading_under_jax_prints_nothing_from_tensorflow(tmp_path):
    """Keras would import TensorFlow to save a model; the package's own saving and loading under
    JAX does not import it (`environment.tensorflow_hidden`), and plain Keras's, which does, prints
    none of its log lines. A saved model opens with plain Keras after `import carmenes_dtl.layers`."""
    import os
    import re
    import subprocess
    import sys

    code = ("import sys\n"
            "from carmenes_dtl import layers\n"
            "import keras, numpy as np\n"
            "x = inputs = keras.Input((16, 1))\n"
            "x = layers.MemberDense(2, 1, out=True)(layers.MemberConv1D(2, 3, pool=2)(layers.BinPool(2)(x)))\n"
            "model = keras.Model(inputs, x)\n"
            "from carmenes_dtl import autoencoder, training\n"
            "training.set_random_seed(1)\n"
            "training.predict(model, np.ones((3, 16, 1), 'float32'))\n"
            "again = autoencoder.load(autoencoder.save(model, sys.argv[1]))\n"
            "hidden = 'tensorflow' not in sys.modules\n"
            "plain = keras.saving.load_model(sys.argv[1])\n"
            "data = np.ones((1, 16, 1), 'float32')\n"
            "assert np.array_equal(again.predict(data, verbose=0), model.predict(data, verbose=0))\n"
            "assert np.array_equal(plain.predict(data, verbose=0), model.predict(data, verbose=0))\n"
            "print(keras.backend.backend(), hidden)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "KERAS_BACKEND"))}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.keras")], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0 and res.stdout.split() == ["jax", "True"], res.stderr[-2000:]
    assert not re.search(r"^[IWEF]\d{4} |oneDNN|absl", res.stderr, re.M), res.stderr[-2000:]


def test_xla_copy_insertion_flag_added_unless_named_and_changes_no_weight(tmp_path):
    """Importing the package adds XLA's region-analysis copy insertion to XLA_FLAGS (keeping the
    user's other flags), leaves an XLA_FLAGS that names it alone; with it, the autoencoder's
    compiled train step copies fewer buffers, and the weights after training are bitwise those
    trained with it off."""
    import os
    import subprocess
    import sys

    code = ("import os, sys, carmenes_dtl\n"
            "if len(sys.argv) == 1:\n"
            "    print(os.environ['XLA_FLAGS']); raise SystemExit\n"
            "import hashlib, keras, numpy as np\n"
            "from carmenes_dtl import autoencoder\n"
            "x = np.random.default_rng(0).random((96, 3501)).astype('float32')\n"
            "keras.utils.set_random_seed(1)\n"
            "m = autoencoder.build_autoencoder(3501, 128)\n"
            "m.fit(x, x, epochs=2, batch_size=32, verbose=0)\n"
            "print(hashlib.sha256(b''.join(np.asarray(w).tobytes() for w in m.get_weights())).hexdigest())\n")
    flag = "--xla_cpu_copy_insertion_use_region_analysis"

    def run(xla_flags, *args):
        # A warm compilation cache would load the step instead of compiling (and dumping) it.
        env = {**os.environ, "XLA_FLAGS": xla_flags, "KERAS_BACKEND": "jax", "JAX_ENABLE_COMPILATION_CACHE": "false"}
        res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.strip()

    assert run("--xla_cpu_enable_fast_math=false") == f"--xla_cpu_enable_fast_math=false {flag}=true"
    assert run(f"{flag}=false") == f"{flag}=false"
    digest, copies = {}, {}
    for name, flags in (("on", ""), ("off", f"{flag}=false")):
        dump = tmp_path / name
        digest[name] = run(f"{flags} --xla_dump_to={dump} --xla_dump_hlo_as_text", "train")
        # XLA names the optimised module `*.after_optimizations.txt` or, in newer jaxlibs,
        # `*.cpu_after_optimizations.txt`; either way one file per compiled train step.
        steps = [f for f in dump.glob("*jit_train_step*after_optimizations.txt")]
        assert len(steps) == 1, sorted(f.name for f in dump.iterdir())
        copies[name] = steps[0].read_text().count(" copy(")
    assert len(digest["on"]) == 64 and digest["on"] == digest["off"]
    assert copies["on"] < copies["off"] / 4, copies  # measured: 2 against 23 (n_in = 128)
