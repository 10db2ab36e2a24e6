"""Environment defaults for JAX, Keras and TensorFlow, set by `import carmenes_dtl`.

They take effect only when the package is imported before those libraries; a variable
already set always wins.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import MutableMapping
from importlib.metadata import PackageNotFoundError, version

#: XLA's copy insertion by region analysis. Without it, XLA's CPU backend copies every weight
#: matrix but the first before each Keras train step of the autoencoder (72 MB at the paper size,
#: competing with the first layer's product for memory); with it the paper-size epoch is ~11 %
#: faster, with bitwise the same weights (benchmarks/autoencoder_epoch.py, README there).
XLA_COPY_FLAG = "--xla_cpu_copy_insertion_use_region_analysis"


#: The oldest jaxlib whose persistent compilation cache was checked to give what a fresh compilation
#: gives: the tiny demo run twice on one new cache, same estimates (0.6.2, 0.7.0; the pinned 0.10.2
#: by `test_same_seed_same_estimates`, a cold then a warm run; benchmarks/README.md). With jaxlib
#: 0.6.0 the second run trained other CNN weights (up to 0.012 apart) and gave other estimates
#: (no_finetune Teff MAE 199 K cold, 367 K warm); 0.6.1 was not checked. Below it the cache is off
#: unless ``JAX_ENABLE_COMPILATION_CACHE=true`` and ``JAX_COMPILATION_CACHE_DIR`` are both set.
CACHE_SAFE_JAXLIB = (0, 6, 2)


def jaxlib_version() -> tuple[int, int, int] | None:
    """The installed jaxlib's (major, minor, micro) ('0.6.2rc1' and '0.6.2.dev1' give (0, 6, 2)),
    or None without jaxlib or with a version that does not start so."""
    try:
        found = re.match(r"(\d+)\.(\d+)\.(\d+)", version("jaxlib"))
    except PackageNotFoundError:
        return None
    return tuple(int(part) for part in found.groups()) if found else None


def jax_cache_dir(environ: MutableMapping[str, str] = os.environ) -> str:
    """Where JAX's persistent compilation cache goes: per jaxlib version (installed: `apply_defaults`
    asks only then) under the user's cache."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "carmenes-dtl", "xla", f"jaxlib-{version('jaxlib')}")


def versions() -> dict:
    """A run's numerical libraries (run.json): NumPy's, JAX's and jaxlib's versions, and JAX's
    compilation cache folder where this process has JAX imported with the cache on (else None)."""
    import numpy

    jax = sys.modules.get("jax")
    cache = jax and jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir
    return {"numpy": numpy.__version__, "jax": version("jax"), "jaxlib": version("jaxlib"),
            "jax_compilation_cache": cache or None}


def apply_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set in `environ`, unless set there already:

    - ``KERAS_BACKEND=jax``: JAX is ~2x faster than TensorFlow on CPU for these models
      (benchmarks/backend.py); TensorFlow stays installed and tested.
    - ``JAX_COMPILATION_CACHE_DIR`` (`jax_cache_dir`) and a 0.1 s minimum compile time:
      a new process (a stage, a notebook, an experiment cell) loads the programs an earlier
      one compiled for the same shapes (a tiny run: 28 s -> 18 s), same numbers.
      ``JAX_ENABLE_COMPILATION_CACHE=false`` turns it off; below jaxlib `CACHE_SAFE_JAXLIB`
      it is set so, whatever cache directory is set.
    - JAX backend only, `XLA_COPY_FLAG` added to ``XLA_FLAGS`` unless they name it
      (TensorFlow's XLA reads XLA_FLAGS too and stops at a flag it does not know).
    - Backend other than TensorFlow: ``TF_CPP_MIN_LOG_LEVEL=2`` and ``TF_ENABLE_ONEDNN_OPTS=0``,
      so the TensorFlow that Keras imports to save a model prints no C++ log lines (the
      oneDNN notice needs both). TensorFlow computes nothing then.
    """
    environ.setdefault("KERAS_BACKEND", "jax")
    if (jaxlib_version() or (0,)) >= CACHE_SAFE_JAXLIB:
        environ.setdefault("JAX_COMPILATION_CACHE_DIR", jax_cache_dir(environ))
        environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    else:
        environ.setdefault("JAX_ENABLE_COMPILATION_CACHE", "false")
    backend = environ["KERAS_BACKEND"]
    if backend == "jax" and XLA_COPY_FLAG not in environ.get("XLA_FLAGS", ""):
        environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {XLA_COPY_FLAG}=true".strip()
    if backend != "tensorflow":
        environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@contextlib.contextmanager
def tensorflow_hidden():
    """Inside, under a backend other than TensorFlow (and unless TensorFlow is imported already),
    Keras takes TensorFlow as unavailable: its ``tf.available`` checks, made on every model save
    and load, would otherwise import an installed TensorFlow to compute nothing (+0.4 GB resident
    and seconds per process). Used around each such Keras call: saving, loading, seeding
    (`training.set_random_seed`) and the compiled-program keys of `training`."""
    import keras

    lazy = getattr(importlib.import_module("keras.src.utils.module_utils"), "tensorflow", None)
    hide = (keras.backend.backend() != "tensorflow" and "tensorflow" not in sys.modules
            and getattr(lazy, "_available", False) is None)
    if hide:
        lazy._available = False
    try:
        yield
    finally:
        if hide:
            lazy._available = None
