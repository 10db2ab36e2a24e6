"""carmenes-dtl: deep transfer learning with autoencoders for M-dwarf stellar parameters.

A reference implementation and executable book of Mas-Buitrago et al. (2024),
A&A 687, A205, doi:10.1051/0004-6361/202449865.
"""
import os
from importlib.metadata import PackageNotFoundError, version

# Default Keras backend, chosen by benchmarks/backend.py (JAX is ~2x faster on CPU for
# these models); TensorFlow stays installed and tested. An explicit KERAS_BACKEND wins.
os.environ.setdefault("KERAS_BACKEND", "jax")


def _jax_cache_dir() -> str:
    """Where JAX's persistent compilation cache goes: per jaxlib version under the user's cache."""
    try:
        tag = f"jaxlib-{version('jaxlib')}"
    except PackageNotFoundError:
        tag = "jaxlib"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "carmenes-dtl", "xla", tag)


# JAX's persistent compilation cache: a new process (a stage, a notebook, an experiment cell)
# loads the programs an earlier one compiled for the same shapes instead of compiling them
# again (a tiny run: 28 s -> 18 s). Same programs, same numbers. Takes effect only when this
# package is imported before JAX; JAX_COMPILATION_CACHE_DIR set elsewhere wins, and
# JAX_ENABLE_COMPILATION_CACHE=false turns it off.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _jax_cache_dir())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

#: XLA's copy insertion by region analysis. Without it, XLA's CPU backend copies every weight
#: matrix but the first before each Keras train step of the autoencoder (72 MB at the paper size,
#: competing with the first layer's product for memory); with it the paper-size epoch is ~11 %
#: faster, with bitwise the same weights (benchmarks/autoencoder_epoch.py, README there). Like
#: the cache, it takes effect when this package is imported before JAX computes anything; an
#: XLA_FLAGS that names the option already wins. Set for the JAX backend only (TensorFlow's XLA
#: reads XLA_FLAGS too, and an XLA that does not know a flag stops the process).
XLA_COPY_FLAG = "--xla_cpu_copy_insertion_use_region_analysis"
if os.environ["KERAS_BACKEND"] == "jax" and XLA_COPY_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_COPY_FLAG}=true".strip()

try:
    __version__ = version("carmenes-dtl")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__bibtex__ = r"""@article{MasBuitrago2024,
  author  = {{Mas-Buitrago}, P. and {Gonz{\'a}lez-Marcos}, A. and {Solano}, E. and others},
  title   = {Using autoencoders and deep transfer learning to determine the stellar
             parameters of 286 CARMENES M dwarfs},
  journal = {Astronomy \& Astrophysics},
  volume  = {687},
  pages   = {A205},
  year    = {2024},
  doi     = {10.1051/0004-6361/202449865}
}"""

__all__ = ["__version__", "__bibtex__"]
